"""Long streams: wall, learn and evaluation seconds against the number of tasks, per schedule.

The setting of issue 16's measurement: ``permuted-digits`` with T tasks, ``finetune`` with one
epoch, the MLP 64-100-100-10, 20 held-out episodes per task, K = 5 adaptation steps. For each T
the same run (same seed, same initial weights) goes through :func:`simulator.run` under each
evaluation schedule, in one process:

* ``default``: the default schedule (``EvalSettings()``: every row, the tasks learned so far
  and the next, adaptation steps where a metric reads them);
* ``full``: every row scores every task after 0..K steps (``columns = "all"``,
  ``adapt_cells = "all"``), the whole tensor;
* ``per-task`` (``--per-task T,...``): the full schedule with one evaluation pass per task, as
  before evaluation was batched across tasks (``batch_across_tasks = False``);
* ``sparse`` (``--sparse T,...``): the default with ``adapt_cells = "metrics"``, k > 0 only
  where an adaptation metric reads it (the schedule for very long streams).

Where two schedules both compute a cell they must agree: the script checks that accuracies
are equal and losses within 1e-5 relative (and says whether they are bit-identical), and that
every metric the default schedule keeps exact equals the full one's. It exits 1 if not.

    python benchmarks/stream_scaling.py [--tasks 10,20,40,100] [--full 10,20,40,100]
                                        [--per-task 40] [--sparse 100] [--threads 1]
                                        [--device cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch

import scenarios
import strategies
from simulator import metrics
from simulator.evaluator import EvalSettings
from simulator.runner import resolve_device, run

SCHEDULES = {
    "default": {},
    "full": {"eval_every": 1, "columns": "all", "adapt_cells": "all"},
    "per-task": {"eval_every": 1, "columns": "all", "adapt_cells": "all"},
    "sparse": {"adapt_cells": "metrics"},
}


def one_run(tasks: int, schedule: str, threads: int, device: torch.device):
    """One finetune run over ``tasks`` permuted-digits tasks; (result, wall seconds)."""
    stream = scenarios.build("permuted-digits", {"num_tasks": tasks}, seed=0)
    torch.manual_seed(0)
    model = strategies.build_model("mlp", {"hidden": [100, 100]}, stream.spec)
    strategy = strategies.build("finetune", {"epochs": 1})
    if schedule == "per-task":
        strategy.batch_across_tasks = False
    settings = EvalSettings(episodes=20, adapt_steps=5, **SCHEDULES[schedule])
    start = time.perf_counter()
    result = run(stream, strategy, model, seed=0, settings=settings, device=device, threads=threads)
    return result, time.perf_counter() - start


def compare(reference, other) -> tuple[bool, str]:
    """Whether ``other`` agrees with ``reference`` on every cell ``other`` computed."""
    cells = ~np.isnan(other.loss)
    if not np.array_equal(np.isnan(other.acc), ~cells) or np.isnan(reference.loss[cells]).any():
        return False, "computes cells the reference does not"
    same_acc = np.array_equal(other.acc[cells], reference.acc[cells])
    gap = float(np.max(np.abs(other.loss[cells] - reference.loss[cells]) / np.abs(reference.loss[cells])))
    exact = ("final_accuracy", "learning_accuracy", "backward_transfer", "forward_transfer",
             "new_task_adaptation", "recovery_adaptation")
    K = reference.acc.shape[2] - 1
    for k in (0, K):
        want, got = metrics.summarize(reference.acc, k), metrics.summarize(other.acc, k)
        for name in exact:
            if not math.isclose(want[name], got[name], abs_tol=1e-12):
                return False, f"{name} at k = {k} differs: {got[name]} against {want[name]}"
    agree = same_acc and gap <= 1e-5
    kind = "bit-identical" if gap == 0 and same_acc else f"loss within {gap:.1e} relative" if agree else \
        f"differ (accuracies equal: {same_acc}, loss gap {gap:.1e})"
    return agree, f"{cells.mean():.0%} of the cells, {kind}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    numbers = lambda text: [int(t) for t in text.split(",") if t]  # noqa: E731
    parser.add_argument("--tasks", type=numbers, default=[10, 20, 40, 100], help="stream lengths (default 10,20,40,100)")
    parser.add_argument("--full", type=numbers, default=None,
                        help="lengths also run with the full schedule (default: every --tasks)")
    parser.add_argument("--per-task", type=numbers, default=[], help="lengths also run with one pass per task")
    parser.add_argument("--sparse", type=numbers, default=[], help="lengths also run with adapt_cells = metrics")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    full = args.tasks if args.full is None else args.full
    print(f"permuted-digits, finetune (1 epoch), 20 episodes, K = 5; device {device}, {args.threads} thread(s)")
    one_run(2, "full", args.threads, device)  # warm-up: first calls of torch's kernels are not timed
    print(f"{'T':>4} {'schedule':>9} {'wall s':>8} {'learn s':>8} {'eval s':>8}  check")
    ok = True
    for T in args.tasks:
        runs = {}
        for schedule in ("default", "full", "per-task", "sparse"):
            if (schedule == "full" and T not in full or schedule == "per-task" and T not in args.per_task
                    or schedule == "sparse" and T not in args.sparse):
                continue
            result, wall = one_run(T, schedule, args.threads, device)
            runs[schedule] = result
            check = ""
            if schedule in ("per-task", "sparse"):
                reference = "full" if "full" in runs else "default"
                agree, check = compare(runs[reference], result)
                check = f"against {reference}: {check}"
                ok &= agree
            if schedule == "full" and "default" in runs:
                agree, check = compare(result, runs["default"])
                check = "default: " + check
                ok &= agree
            print(f"{T:>4} {schedule:>9} {wall:>8.1f} {sum(result.learn_seconds):>8.1f} "
                  f"{sum(result.eval_seconds):>8.1f}  {check}", flush=True)
    if not ok:
        print("stream_scaling: schedules disagree on cells they both compute", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
