"""La-MAML per batch: ours (``lamaml``) against avalanche-lib's ``LaMAML``, same work, same process.

Both make **one meta-update per incoming batch of 10** (ours with ``glances = 1``: avalanche-lib
has no glances), 10 inner steps of one example each (avalanche's ``n_inner_updates = 10``), a
meta-loss on the batch plus 10 memories at every inner step's fast weights, learned rates updated
asynchronously, gradient clipping at 2.0, a 200-slot memory; exact second order by default
(``--first-order``: both first order). Stream: ``online`` MNIST Rotations, ``--tasks`` tasks of
``--examples`` examples in batches of 10; model the MLP 784-100-100-10. Ours runs ``observe`` on
every batch of the stream; avalanche-lib's runs each task as one experience of its own training
loop (``learn``), which includes its data loader and plugin calls: "per batch in its own loop".
Only tasks after the first are timed, where both replay (avalanche fills its memory at the end of
an experience). Times are the process's CPU time (one torch thread, avalanche's loader in the same
process: this work alone, whatever else runs on the machine) and wall time. Repetitions alternate
the two; the table gives the best and the median per batch and the ratios avalanche / ours.

The reproductions (accuracy with 5 glances) are ``reproduce_lamaml.py``; this script only times.

Run (from the repository root):
    python benchmarks/lamaml_speed.py --data-root ../shared/data [--first-order] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scenarios  # noqa: E402
import strategies  # noqa: E402


def build_stream(args):
    source = {"num_tasks": args.tasks, "test_per_task": 10}
    if args.data_root:
        source["data_root"] = args.data_root
    return scenarios.build("online", {"source": "rotated-mnist", "source_params": source,
                                      "examples_per_task": args.examples, "batch_size": 10}, seed=0)


def fresh(name: str, params: dict, stream, seed: int):
    strategy = strategies.build(name, params)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = strategies.build_model("mlp", {"hidden": [100, 100], "init": "kaiming_normal"}, stream.spec)
    strategy.setup(model, stream.spec, "cpu", seed=seed)
    return strategy


def clocks() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def time_ours(stream, args, seed: int) -> tuple[float, float]:
    """CPU and wall seconds per batch of ``lamaml`` (one glance) over the batches of tasks 2..T."""
    strategy = fresh("lamaml", {"glances": 1, "first_order": args.first_order}, stream, seed)
    tasks = stream.meta()["task"]
    cpu = wall = 0.0
    timed = 0
    for i in range(len(stream)):
        batch = stream.batch(i)
        c0, w0 = clocks()
        strategy.observe(batch.x, batch.y)
        c1, w1 = clocks()
        if tasks[i] > 0:
            cpu, wall, timed = cpu + c1 - c0, wall + w1 - w0, timed + 1
    return cpu / timed, wall / timed


def time_avalanche(stream, args, seed: int) -> tuple[float, float]:
    """CPU and wall seconds per batch of avalanche-lib's LaMAML over tasks 2..T, each one experience
    of its own loop."""
    params = {"batch_size": 10, "epochs": 1, "optimizer": "sgd", "lr": 0.1, "n_inner_updates": 10,
              "second_order": not args.first_order, "grad_clip_norm": 2.0, "learn_lr": True, "lr_alpha": 0.3,
              "sync_update": False, "alpha_init": 0.15, "max_buffer_size": 200, "buffer_mb_size": 10}
    strategy = fresh("avalanche.LaMAML", params, stream, seed)
    cpu = wall = 0.0
    timed = 0
    for t, task in enumerate(stream.columns):
        c0, w0 = clocks()
        strategy.learn(task)
        c1, w1 = clocks()
        if t > 0:
            cpu, wall, timed = cpu + c1 - c0, wall + w1 - w0, timed + -(-len(task.train) // 10)
    return cpu / timed, wall / timed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--examples", type=int, default=500, help="training examples per task")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=os.environ.get("LIFELONG_DATA"))
    args = p.parse_args()
    if args.tasks < 2:
        p.error("--tasks must be at least 2: the first task is not timed")
    torch.set_num_threads(args.threads)
    stream = build_stream(args)
    time_avalanche(stream, args, 0)  # warm-up: the import of avalanche and first-call costs
    ours, theirs = [], []
    for r in range(args.repeats):
        pair = [(ours, time_ours), (theirs, time_avalanche)]
        for times, run in (pair if r % 2 == 0 else pair[::-1]):
            times.append(run(stream, args, r))
        print(f"  repeat {r + 1}/{args.repeats}: CPU ms per batch ours {1e3 * ours[-1][0]:.2f}, avalanche "
              f"{1e3 * theirs[-1][0]:.2f}; wall ours {1e3 * ours[-1][1]:.2f}, avalanche {1e3 * theirs[-1][1]:.2f}",
              flush=True)
    order = "first" if args.first_order else "second"
    print(f"\nLa-MAML, {order} order, 1 meta-update per batch of 10, {args.tasks} tasks x {args.examples}, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, load {os.getloadavg()[0]:.2f}")
    print("| implementation | CPU best | CPU median | wall best | wall median | avalanche / ours: CPU best "
          "| CPU median | wall best | wall median |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, times in (("ours: `lamaml`, glances 1", ours), ("avalanche-lib `LaMAML`", theirs)):
        cells, ratios = [], []
        for clock in (0, 1):
            mine, base = [t[clock] for t in times], [t[clock] for t in theirs]
            cells += [f"{1e3 * min(mine):.2f} ms", f"{1e3 * statistics.median(mine):.2f} ms"]
            ratios += [f"{min(base) / min(mine):.2f}x", f"{statistics.median(base) / statistics.median(mine):.2f}x"]
        print(f"| {name} | {' | '.join(cells)} | {' | '.join(ratios)} |")


if __name__ == "__main__":
    main()
