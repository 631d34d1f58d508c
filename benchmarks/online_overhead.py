"""Online-loop overhead: a bare PyTorch predict-then-SGD loop against ``simulator.run_online``.

The same work two ways, in one process: every batch of a stream presented online
(``online`` over ``permuted-digits``, 20 tasks, batches of 10 by default), the MLP
64-100-100-10 from the same initial weights, one plain SGD step per batch after its prediction
is scored.

(a) bare: ``for t``: draw ``stream.batch(t)``, predict under ``no_grad``, count the correct
    predictions, then forward, cross-entropy, backward, step.
(b) ours: ``finetune`` (``online_steps = 1``) through ``simulator.online.run_online``: the
    runner's loop with its scoring on the device, the checkpoint rule, progress hooks and the
    strategy protocol (``predict_online``, ``observe``). Its evaluation rows (before the first
    batch and after the last) are excluded: ``online_seconds`` times the loop alone.

The script checks that (a) and (b) end with bit-identical weights and per-batch scores, then
prints the wall times (best and median over the repetitions, (a) and (b) alternating so that
a busy machine slows both) and their ratio.

    python benchmarks/online_overhead.py [--tasks 20] [--batch-size 10] [--repeats 5] [--threads 1]
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
from simulator.online import OnlineSettings, run_online


def bare_loop(stream, model, lr: float) -> tuple[torch.nn.Module, torch.Tensor]:
    """(a): predict, score, then one SGD step, batch after batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scores = torch.empty(len(stream), dtype=torch.float64)
    model.train()
    for t in range(len(stream)):
        batch = stream.batch(t)
        with torch.no_grad():
            scores[t] = (model(batch.x).argmax(-1) == batch.y).double().mean()
        loss = F.cross_entropy(model(batch.x), batch.y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model, scores


def ours(stream, model, lr: float):
    """(b): ``finetune`` in ``run_online``, evaluation rows excluded from the time."""
    strategy = strategies.build("finetune", {"lr": lr, "online_steps": 1})
    result = run_online(stream, strategy, model, seed=0, settings=EvalSettings(episodes=1, adapt_steps=0),
                        online=OnlineSettings(eval_every=len(stream), pretrain=False))
    return strategy.model, result


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    stream = scenarios.build("online", {"source": "permuted-digits", "source_params": {"num_tasks": args.tasks},
                                        "batch_size": args.batch_size}, seed=0)
    torch.manual_seed(0)
    initial = strategies.build_model("mlp", {}, stream.spec)
    bare_times, our_times = [], []
    for _ in range(args.repeats):
        (bare_model, bare_scores), seconds = timed(lambda: bare_loop(stream, copy.deepcopy(initial), args.lr))
        bare_times.append(seconds)
        our_model, result = ours(stream, copy.deepcopy(initial), args.lr)
        our_times.append(result.online["online_seconds"])
        same = all(torch.equal(a, b) for a, b in zip(bare_model.state_dict().values(),
                                                     our_model.state_dict().values()))
        if not same or not torch.equal(bare_scores, torch.from_numpy(result.online["correct"])):
            raise SystemExit("the bare loop and run_online disagree: the comparison would be meaningless")
    print(f"stream: online permuted-digits, {args.tasks} tasks, {len(stream)} batches of {args.batch_size}; "
          f"MLP 64-100-100-10; {args.threads} thread(s); {args.repeats} repetitions; weights and scores identical")
    print(f"bare best {min(bare_times):.3f} s median {statistics.median(bare_times):.3f} s | run_online best "
          f"{min(our_times):.3f} s median {statistics.median(our_times):.3f} s | ratio best "
          f"{min(our_times) / min(bare_times):.2f}x median {statistics.median(our_times) / statistics.median(bare_times):.2f}x")


if __name__ == "__main__":
    main()
