"""Training-loop overhead: a bare PyTorch loop, our runner with ``finetune``, Avalanche's Naive.

The same training work three ways, in one process: split-digits (5 class-incremental tasks),
the MLP 64-100-100-10 from the same initial weights, plain SGD, the same epochs and
minibatch size over each task's training examples.

(a) bare: a hand-written loop (``randperm`` per epoch, forward, cross-entropy, backward, step).
(b) ours: ``finetune`` through ``simulator.runner.run(..., evaluate=False)``: the runner's
    loop, training views, ``training_examples`` and ``train_minibatches`` with its loss
    tracking and divergence check. It draws the same permutations as (a), so the script
    checks that (a) and (b) end with bit-identical weights.
(c) Avalanche: ``avalanche.training.supervised.Naive`` on ``to_avalanche(stream)``, one
    ``train`` call per experience, with an EvaluationPlugin without metrics or loggers (its
    loop, not its logging). It shuffles with its own data loader, so its minibatches hold
    other examples, but as many and of the same sizes.

Each repetition runs (a), (b), (c) in turn. Both the process's CPU time and the wall time
are recorded, best and median over the repetitions: on a machine shared with other jobs the
wall time also measures them, while the CPU time (one torch thread) measures this work alone,
so the ratios of CPU times are the figures to quote.

    python benchmarks/loop_overhead.py [--epochs 20] [--batch-size 32] [--repeats 9] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

import scenarios
import strategies
from simulator.evaluator import EvalSettings
from simulator.runner import run


def bare_loop(stream, model, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    """(a): the minimum a training loop does, drawing the permutations ``finetune`` draws."""
    generator = torch.Generator().manual_seed(seed)  # finetune's own generator, seeded by setup
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for task in stream:
        x, y = task.train.examples()
        n = len(x)
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()


def ours(stream, model, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    """(b): ``finetune`` in the runner, evaluation off."""
    strategy = strategies.build("finetune", {"lr": lr, "epochs": epochs, "batch_size": batch_size})
    run(stream, strategy, model, seed, EvalSettings(adapt_steps=0), evaluate=False)


def avalanche_naive(benchmark, model, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    """(c): Avalanche's Naive, one ``train`` call per experience, no metrics."""
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import Naive

    from strategies.avalanche_runtime import quiet

    torch.manual_seed(seed)
    with quiet():
        naive = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                      criterion=torch.nn.CrossEntropyLoss(), train_mb_size=batch_size, train_epochs=epochs,
                      evaluator=EvaluationPlugin(loggers=[]))
        for experience in benchmark.train_stream:
            naive.train(experience, eval_streams=[])


def timed(fn, *args) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) that ``fn(*args)`` took."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn(*args)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20, help="passes over each task's training data")
    p.add_argument("--batch-size", type=int, default=32, help="examples per minibatch")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    p.add_argument("--repeats", type=int, default=9, help="timed repetitions of (a), (b), (c)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from scenarios.avalanche_adapter import to_avalanche

    seed = 0
    stream = scenarios.build("split-digits", {"num_tasks": 5, "protocol": "class-incremental"}, seed=seed)
    benchmark = to_avalanche(stream)
    torch.manual_seed(seed)
    initial = strategies.build_model("mlp", {"hidden": [100, 100]}, stream.spec)
    work = (args.epochs, args.batch_size, args.lr, seed)

    # The same work: (a) and (b) must end with the same weights.
    a, b = copy.deepcopy(initial), copy.deepcopy(initial)
    bare_loop(stream, a, *work)
    ours(stream, b, *work)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters())), "(a) and (b) differ"
    avalanche_naive(benchmark, copy.deepcopy(initial), *work)  # warm-up: Avalanche's import and caches

    times: dict[str, list[tuple[float, float]]] = {"bare": [], "ours": [], "avalanche": []}
    for _ in range(args.repeats):
        times["bare"].append(timed(bare_loop, stream, copy.deepcopy(initial), *work))
        times["ours"].append(timed(ours, stream, copy.deepcopy(initial), *work))
        times["avalanche"].append(timed(avalanche_naive, benchmark, copy.deepcopy(initial), *work))

    steps = sum(-(-len(task.train) // args.batch_size) for task in stream) * args.epochs
    print(f"torch {torch.__version__}, {args.threads} thread(s); split-digits 5 tasks, MLP 64-100-100-10, "
          f"{args.epochs} epochs x batch {args.batch_size} = {steps} SGD steps; (a) and (b) end bit-identical")
    print(f"{'':<10} {'CPU time (this process)':^40}   {'wall time':^40}")
    head = f"{'best s':>8} {'median s':>9} {'us/step':>7} {'best':>6} {'median':>6}"
    print(f"{'loop':<10} {head}   {head}")
    for k, pairs in times.items():
        cells = []
        for i in (0, 1):  # CPU, wall
            best = min(p[i] for p in pairs)
            median = statistics.median(p[i] for p in pairs)
            base_best = min(p[i] for p in times["bare"])
            base_median = statistics.median(p[i] for p in times["bare"])
            cells.append(f"{best:>8.3f} {median:>9.3f} {1e6 * best / steps:>7.0f} {best / base_best:>5.2f}x "
                         f"{median / base_median:>5.2f}x")
        print(f"{k:<10} {cells[0]}   {cells[1]}")


if __name__ == "__main__":
    main()
