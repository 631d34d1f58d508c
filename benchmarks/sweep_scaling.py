"""Sweep throughput with 1 and with 2 local workers, in one process.

Sixteen trials (split-digits, finetune with 8 learning rates x 2 seeds) run once with
``--workers 1`` (in this process) and once with ``--workers 2`` (a spawned process pool, one
torch thread each); the script checks both give the same tensors and prints the speed-up.

    python benchmarks/sweep_scaling.py [--workers 2] [--tasks 5] [--epochs 150]
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from simulator.sweep import load_sweep, run_sweep

EXPERIMENT = textwrap.dedent("""
    name = "scaling"
    seeds = [0, 1]

    [scenario]
    name = "split-digits"
    num_tasks = {tasks}

    [evaluation]
    episodes = 20
    adapt_steps = 5

    [strategies.finetune]
    epochs = {epochs}

    [sweep]
    "strategies.finetune.lr" = [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2]
""")


def tensors(out: Path) -> dict[str, bytes]:
    found = {}
    for path in sorted(out.glob("trials/*/tensors.npz")):
        with np.load(path) as data:
            found.update({f"{path.parent.name}/{k}": data[k].tobytes() for k in data.files})
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="workers of the parallel run")
    p.add_argument("--tasks", type=int, default=5, help="tasks per trial")
    p.add_argument("--epochs", type=int, default=150,
                   help="epochs per task (default 150: trials of a few seconds, so that the workers' start-up "
                        "does not dominate)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "sweep.toml").write_text(EXPERIMENT.format(tasks=args.tasks, epochs=args.epochs))
        sweep = load_sweep(tmp / "sweep.toml")
        times = {}
        for workers in (1, args.workers):
            start = time.perf_counter()
            outcome = run_sweep(sweep, tmp / f"w{workers}", workers=workers, quiet=True)
            times[workers] = time.perf_counter() - start
            assert outcome.ran == len(sweep.trials) and not outcome.failed
        same = tensors(tmp / "w1") == tensors(tmp / f"w{args.workers}")
    print(f"{len(sweep.trials)} trials, {args.tasks} tasks x {args.epochs} epochs each; tensors identical: {same}")
    print(f"1 worker: {times[1]:.1f} s; {args.workers} workers: {times[args.workers]:.1f} s; "
          f"speed-up {times[1] / times[args.workers]:.2f}x")


if __name__ == "__main__":
    main()
