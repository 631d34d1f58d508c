"""Reproduce MER (Riemer et al. 2019) on MNIST Rotations and Permutations, beside avalanche-lib's MER.

Protocol (MER, GEM and La-MAML): the ``online`` scenario over ``rotated-mnist`` or
``permuted-mnist``, 20 tasks of 1000 training examples each, played once in batches of 10
(2000 batches), boundaries hidden; the MLP 784-100-100-10 (ReLU) with the authors' initial
weights (GEM's ``common.py``: Xavier-uniform weights, zero biases; ``mlp`` with ``init =
"xavier_uniform"``), drawn from the seed. Every task is scored on its
whole held-out test pool (10,000 MNIST test images under the task's rotation or permutation)
before the stream and after each task's last batch (``eval_every = 100``), so the anytime
tensor's rows are GEM's R[i, j]:

- retained accuracy RA = mean_j R[T, j] (accuracy on every task at the end);
- learning accuracy LA = mean_j R[j, j] (accuracy on each task just after learning it);
- backward transfer and interference BTI = RA - LA = mean_j (R[T, j] - R[j, j]).

All three in percent. ``../shared/REFERENCE.md`` gives one MER figure for these streams:
about 73 RA on Permutations ("avalanche's port about 0.76 against the paper's about 0.73"),
which ``PAPER`` holds; for Rotations it gives none (MER "beats GEM, EWC, ER on RA"), so that
entry stays empty (printed "n/a") until someone fills it from the paper's table.

Rows (``--variants``):

- ``mer``: the ``mer`` strategy, Algorithm 1 per example (``unit = "example"``), through
  ``simulator.online.run_online`` (the code path of ``lifelong run``), with the settings of
  the authors' ``mer_examples.sh`` for 200 memories: Rotations lr 0.1, beta 0.01, gamma 1.0,
  5 batches per example; Permutations lr 0.03, beta 0.03, gamma 1.0, 10 batches per example;
  each batch the example and 10 memories (the authors' ``--replay_batch_size 10`` draws 10
  memories *plus* the example: our ``replay_batch_size = 11``).
- ``mer-batch``: the same strategy with ``unit = "batch"``: avalanche-lib's variant of the
  algorithm (the incoming batch of 10 as the unit, each inner batch the 10 examples and 10
  memories), same hyperparameters: the like-for-like speed comparison with avalanche.
- ``avalanche.MER``: avalanche-lib's own ``MER`` in its own loop, on the same batches in the
  same order: each batch of the stream is one experience (as avalanche's online streams
  split experiences), ``train(experience, shuffle=False)`` with ``train_mb_size = 10``,
  ``mem_size = 200``, ``batch_size_mem = 10``, ``n_inner_steps`` = batches per example, the
  same lr, beta and gamma, SGD; the same initial weights; its global RNG seeded from the run
  seed (``isolated_rng``). Scored by the same evaluator on the same test pools at the same
  points (its model wrapped in a ``finetune`` strategy that is never trained).

Time per batch: wall time of the training calls only (``observe`` / ``train``), divided by
the 2000 batches; the whole row's wall time (with evaluation) is recorded too.

Budgets: ``paper`` is the above. ``cpu`` is the same training (it fits: one MER row takes
minutes on two CPU cores, thanks to the hand-written single-example steps of
strategies/mer.py) with each task's test pool subsampled to ``--test-per-task`` (default 2000
of the 10,000 images) to save evaluation time.

A function for other scripts (``benchmarks/reproduce_lamaml.py``)::

    from reproduce_mer import mer_rows
    rows = mer_rows("rotations", seed=0, budget="cpu", data_root=..., variants=("mer", "avalanche.MER"))

Each row: benchmark, variant, budget, seed, RA, LA, BTI, online cumulative accuracy, seconds
per batch, training and total wall time, device, threads, load average, settings.

    python benchmarks/reproduce_mer.py [--benchmarks rotations permutations] [--variants mer mer-batch
        avalanche.MER] [--budget cpu|paper] [--seeds 0] [--test-per-task N] [--data-root DIR]
        [--device cpu] [--threads 1] [--json rows.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scenarios  # noqa: E402
import strategies  # noqa: E402
from simulator.evaluator import EvalSettings, Evaluator  # noqa: E402
from simulator.metrics import aggregate  # noqa: E402
from simulator.online import OnlineSettings, run_online  # noqa: E402

BENCHMARKS = {"rotations": "rotated-mnist", "permutations": "permuted-mnist"}
VARIANTS = ("mer", "mer-batch", "avalanche.MER")
TASKS, PER_TASK, BATCH = 20, 1000, 10

# The authors' mer_examples.sh, 200 memories (replay_batch_size: ours counts the example).
SETTINGS = {
    "rotations": dict(lr=0.1, beta=0.01, gamma=1.0, batches_per_example=5, replay_batch_size=11, memory_size=200),
    "permutations": dict(lr=0.03, beta=0.03, gamma=1.0, batches_per_example=10, replay_batch_size=11,
                         memory_size=200),
}
# Published RA / LA / BTI (percent): REFERENCE.md's "about 0.73" on Permutations (see the docstring).
PAPER: dict[str, dict[str, float | None]] = {"rotations": {"RA": None, "LA": None, "BTI": None},
                                             "permutations": {"RA": 73.0, "LA": None, "BTI": None}}


def build_stream(benchmark: str, seed: int, data_root: str | None, test_per_task: int | None):
    source_params: dict[str, Any] = {"num_tasks": TASKS}
    if test_per_task is not None:
        source_params["test_per_task"] = test_per_task
    return scenarios.build("online", {"source": BENCHMARKS[benchmark], "source_params": source_params,
                                      "examples_per_task": PER_TASK, "batch_size": BATCH, "boundaries": "hidden",
                                      "data_root": data_root}, seed=seed)


def initial_model(stream, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)   # as the runner seeds the initial weights
        return strategies.build_model("mlp", {"hidden": [100, 100], "init": "xavier_uniform"}, stream.spec)


def transfer_metrics(acc: np.ndarray) -> dict[str, float]:
    """RA, LA, BTI in percent from R (T+1, T): row 0 before the stream, row i after task i."""
    T = acc.shape[1]
    final, learned = acc[T], acc[np.arange(1, T + 1), np.arange(T)]
    return {"RA": 100 * float(final.mean()), "LA": 100 * float(learned.mean()),
            "BTI": 100 * float((final - learned).mean())}


class _Timer:
    """Times the strategy's observe calls."""

    def __init__(self, strategy):
        self.seconds, observe = 0.0, strategy.observe

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = observe(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            return out
        strategy.observe = timed


def run_ours(stream, benchmark: str, variant: str, seed: int, device: str, log: Callable) -> dict[str, Any]:
    params = dict(SETTINGS[benchmark], unit="batch" if variant == "mer-batch" else "example")
    strategy = strategies.build("mer", params, label=variant)
    timer = _Timer(strategy)
    batches = len(stream)
    result = run_online(stream, strategy, initial_model(stream, seed), seed,
                        EvalSettings(episodes=1, adapt_steps=0, full_test=True),
                        OnlineSettings(eval_every=batches // TASKS), device=device)
    return {"settings": params, "acc": result.acc[:, :, 0], "train_seconds": timer.seconds,
            "online_accuracy": 100 * float(np.mean(result.online["correct"]))}


def run_avalanche(stream, benchmark: str, seed: int, device: str, log: Callable) -> dict[str, Any]:
    from strategies import avalanche_runtime as rt
    from scenarios.rng import isolated_rng
    from strategies.avalanche import generator_seed

    s = SETTINGS[benchmark]
    settings = dict(mem_size=s["memory_size"], batch_size_mem=s["replay_batch_size"] - 1,
                    n_inner_steps=s["batches_per_example"], beta=s["beta"], gamma=s["gamma"], lr=s["lr"],
                    train_mb_size=BATCH)
    model = initial_model(stream, seed).to(device)
    generator = torch.Generator().manual_seed(seed)
    columns = scenarios.base.Stream(stream.spec, tuple(stream.columns))
    evaluator = Evaluator(columns, EvalSettings(episodes=1, adapt_steps=0, full_test=True), seed, device)
    scorer = strategies.build("finetune", label="avalanche.MER")
    scorer.setup(model, stream.spec, device, seed=seed)   # only to score the model avalanche trains
    with rt.quiet(), isolated_rng(generator_seed(generator), device):
        cl = rt.avalanche_class("avalanche.training.supervised:MER")(
            model=model, optimizer=torch.optim.SGD(model.parameters(), lr=s["lr"]),
            criterion=torch.nn.CrossEntropyLoss(), mem_size=settings["mem_size"],
            batch_size_mem=settings["batch_size_mem"], n_inner_steps=settings["n_inner_steps"], beta=s["beta"],
            gamma=s["gamma"], train_mb_size=BATCH, train_epochs=1, eval_mb_size=256, device=device,
            evaluator=rt.silent_evaluator())
    batches, per_task = len(stream), len(stream) // TASKS
    rows, correct, seconds = [evaluator.evaluate(scorer, 0)[0][:, 0]], [], 0.0
    with rt.quiet():
        for t in range(batches):
            batch = stream.batch(t)
            x, y = batch.x.to(device), batch.y.to(device)
            with torch.no_grad():
                correct.append(float((model(x).argmax(1) == y).float().mean()))
            experience = rt.make_experience(x, y, 0, t)
            start = time.perf_counter()
            with isolated_rng(generator_seed(generator), device):
                cl.train(experience, eval_streams=[], shuffle=False)
            seconds += time.perf_counter() - start
            if (t + 1) % per_task == 0:
                rows.append(evaluator.evaluate(scorer, len(rows))[0][:, 0])
                log(f"  avalanche.MER: task {(t + 1) // per_task}/{TASKS}, {seconds / (t + 1) * 1e3:.1f} ms per batch")
    return {"settings": settings, "acc": np.stack(rows), "train_seconds": seconds,
            "online_accuracy": 100 * float(np.mean(correct))}


def mer_rows(benchmark: str, seed: int = 0, budget: str = "cpu", data_root: str | None = None,
             variants=VARIANTS, device: str = "cpu", threads: int | None = 1, test_per_task: int | None = 2000,
             log: Callable = print) -> list[dict[str, Any]]:
    """The rows of ``variants`` on ``benchmark`` ("rotations" or "permutations") for one seed."""
    if threads:
        torch.set_num_threads(threads)
    test = test_per_task if budget == "cpu" else None
    rows = []
    for variant in variants:
        stream = build_stream(benchmark, seed, data_root, test)
        log(f"{benchmark}, {variant}, seed {seed}, budget {budget} ...")
        start = time.perf_counter()
        out = run_avalanche(stream, benchmark, seed, device, log) if variant == "avalanche.MER" else \
            run_ours(stream, benchmark, variant, seed, device, log)
        wall = time.perf_counter() - start
        row = {"benchmark": benchmark, "variant": variant, "budget": budget, "seed": seed,
               **{k: round(v, 2) for k, v in transfer_metrics(out["acc"]).items()},
               "online_accuracy": round(out["online_accuracy"], 2),
               "ms_per_batch": round(1e3 * out["train_seconds"] / len(stream), 2),
               "train_seconds": round(out["train_seconds"], 1), "wall_seconds": round(wall, 1),
               "test_per_task": test or 10000, "device": device,
               "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "load_average": round(os.getloadavg()[0], 2), "settings": out["settings"],
               "paper": PAPER[benchmark], "torch": torch.__version__}
        log(markdown(row))
        rows.append(row)
    return rows


HEADER = ("| benchmark | variant | budget | seed | RA | LA | BTI | online acc | ms/batch | train s | wall s | "
          "device, threads | paper RA / LA / BTI |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | "
          "--- | --- | --- |")


def markdown(row: dict[str, Any]) -> str:
    p = {k: "n/a" if v is None else v for k, v in row["paper"].items()}
    return (f"| {row['benchmark']} | {row['variant']} | {row['budget']} | {row['seed']} | {row['RA']:.2f} | "
            f"{row['LA']:.2f} | {row['BTI']:.2f} | {row['online_accuracy']:.2f} | {row['ms_per_batch']:.1f} | "
            f"{row['train_seconds']:.0f} | {row['wall_seconds']:.0f} | {row['device']}, {row['threads']} | "
            f"{p['RA']} / {p['LA']} / {p['BTI']} |")


def seed_summary(rows: list[dict[str, Any]]) -> str:
    """A markdown table per benchmark and variant: RA, LA, BTI and online accuracy as mean ± 95%
    interval over seeds (Student t, as ``lifelong report``), and ms per batch."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r["variant"]), []).append(r)
    lines = ["| benchmark | variant | RA | paper RA | LA | BTI | online acc | ms / batch | seeds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (benchmark, variant), rs in groups.items():
        keys = ("RA", "LA", "BTI", "online_accuracy", "ms_per_batch")
        stats = aggregate([{k: r[k] for k in keys} for r in rs])
        cell = lambda k: f"{stats[k]['mean']:.2f} ± {stats[k]['ci95']:.2f}"  # noqa: E731
        paper = PAPER[benchmark]["RA"] if variant == "mer" else None
        lines.append(f"| {benchmark} | {variant} | {cell('RA')} | {'-' if paper is None else paper} | {cell('LA')} | "
                     f"{cell('BTI')} | {cell('online_accuracy')} | {stats['ms_per_batch']['mean']:.1f} | "
                     f"{', '.join(str(r['seed']) for r in rs)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--benchmarks", nargs="+", choices=sorted(BENCHMARKS), default=["rotations", "permutations"])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--budget", choices=["cpu", "paper"], default="cpu")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--test-per-task", type=int, default=2000, help="cpu budget: test images per task")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="append one JSON line per row to this file")
    parser.add_argument("--summarize", metavar="JSONL", help="only print the mean ± 95%% interval over seeds of "
                                                             "the rows in this file (written by --json), then exit")
    args = parser.parse_args(argv)
    if args.summarize:
        with open(args.summarize) as f:
            print(seed_summary([json.loads(line) for line in f if line.strip()]))
        return 0
    rows = []
    for benchmark in args.benchmarks:
        for seed in args.seeds:
            for row in mer_rows(benchmark, seed, args.budget, args.data_root, args.variants, args.device,
                                args.threads, args.test_per_task, log=lambda m: print(m, flush=True)):
                rows.append(row)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")
    print("\n" + HEADER)
    for row in rows:
        print(markdown(row))
    if len(args.seeds) > 1:
        print("\n" + seed_summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
