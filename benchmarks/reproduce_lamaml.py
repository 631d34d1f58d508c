"""Reproduce La-MAML's MNIST table (Gupta et al. 2020, Table 1) with the library's ``lamaml`` strategy,
beside avalanche-lib's ``LaMAML`` on the same stream and seeds.

Protocol (MER's MNIST Rotations and Permutations, as La-MAML uses them): the ``online`` scenario
with ``source = "rotated-mnist"`` or ``"permuted-mnist"``, 20 tasks of 1000 training examples,
each played once in batches of 10, task boundaries hidden from the learner; 200 memories; the
MLP 784-100-100-10 (``mlp`` with ``hidden = [100, 100]``), its initial weights seeded as
``lifelong run`` seeds them and drawn as the authors' ``Learner`` draws them (Kaiming-normal
weights, zero biases: ``init = "kaiming_normal"``; ``--init pytorch`` for PyTorch's default).
MER rows use MER's own (GEM's) Xavier-uniform initialisation, as ``reproduce_mer.py``. After the untrained start and after each task's last batch every
task's test set is scored, giving ``R`` of shape (21, 20); the columns of the table are
retained accuracy RA = ``final_accuracy(R)`` (the papers' RA / ACC), learning accuracy LA =
``learning_accuracy(R)`` and backward transfer BTI = ``backward_transfer(R)`` (GEM's, divided by
T - 1; La-MAML's BTI is the same difference, reported as a positive "interference" in its
table), all in percent (simulator/metrics.py). REFERENCE.md's RA figures are printed beside.

Rows (``--methods``):

- ``lamaml``: La-MAML (asynchronous; learned rates, clipped at zero in the weight update);
- ``cmaml``: the paper's C-MAML (``fixed_lr``: one fixed inner rate; not OSAKA's Continual-MAML);
- ``sync``: Sync-La-MAML (``sync``: learned rates, weights by SGD with ``weight_lr``);
- ``mer``: MER (Riemer et al. 2019) through the ``mer`` strategy when it is registered
  (:data:`MER_PARAMS`); the row is skipped with a message otherwise.

Settings: the authors' MNIST commands (``run_experiments.sh`` of montrealrobotics/La-MAML):
5 glances, replay batch 10, gradient clipping at 2.0, and per method and dataset the rates in
:data:`SETTINGS`. Their MNIST runs are first order (``--second_order`` not passed); the
default here is the paper's exact second order, ``--first-order`` gives theirs.

avalanche-lib: ``--avalanche`` also runs avalanche-lib's ``LaMAML`` (``lamaml_v2``, through the
``avalanche.LaMAML`` adapter: each task an experience of Avalanche's own training loop) on the
same tasks (the stream's columns: the same 1000 training examples, in Avalanche's shuffled
order) with the same seed and the same rates; ``n_inner_updates = 10`` (one item per inner
step). Avalanche has no glances: one meta-update per minibatch (its ``train_epochs = 1``); it
fills its reservoir at the end of each experience and replays from the second one on. The
time per batch of each is measured around the update calls only (no evaluation).

Budgets: ``paper`` scores each task on the full MNIST test set (10,000 images); ``cpu`` on a
seeded subset of 1000 per task (``test_per_task``); the training stream is the same.

Run (from the repository root):
    python benchmarks/reproduce_lamaml.py --methods lamaml --datasets rotated-mnist --seeds 0 \\
        --budget cpu --avalanche --data-root ../shared/data --json rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scenarios  # noqa: E402
import strategies  # noqa: E402
from reproduce_mer import SETTINGS as MER_SETTINGS  # noqa: E402
from simulator.metrics import aggregate, backward_transfer, final_accuracy, learning_accuracy  # noqa: E402

METHODS = ("lamaml", "cmaml", "sync", "mer")
DATASETS = ("rotated-mnist", "permuted-mnist")
TITLE = {"lamaml": "La-MAML", "cmaml": "C-MAML", "sync": "Sync-La-MAML", "mer": "MER"}
COMMON = {"glances": 5, "batch_size": 10, "memory_size": 200, "replay_batch_size": 10, "grad_clip_norm": 2.0}
SETTINGS = {  # the authors' run_experiments.sh, MNIST section
    ("lamaml", "rotated-mnist"): {"alpha_init": 0.15, "alpha_lr": 0.3},
    ("lamaml", "permuted-mnist"): {"alpha_init": 0.15, "alpha_lr": 0.3},
    ("sync", "rotated-mnist"): {"sync": True, "alpha_init": 0.15, "alpha_lr": 0.1, "weight_lr": 0.3},
    ("sync", "permuted-mnist"): {"sync": True, "alpha_init": 0.15, "alpha_lr": 0.1, "weight_lr": 0.1},
    ("cmaml", "rotated-mnist"): {"fixed_lr": True, "alpha_init": 0.1, "weight_lr": 0.1},
    ("cmaml", "permuted-mnist"): {"fixed_lr": True, "alpha_init": 0.03, "weight_lr": 0.1},
}
# MER (strategies/mer.py): the authors' mer_examples.sh settings with 200 memories, as
# reproduce_mer.py runs them (replay_batch_size 11: ours counts the example); the row runs iff
# `mer` is registered.
MER_PARAMS: dict[str, dict[str, Any]] = {"rotated-mnist": dict(MER_SETTINGS["rotations"]),
                                         "permuted-mnist": dict(MER_SETTINGS["permutations"])}
# REFERENCE.md (La-MAML Table 1, retained accuracy): check the paper's table before using as a bar
PUBLISHED_RA = {("lamaml", "rotated-mnist"): 77.4, ("lamaml", "permuted-mnist"): 74.3,
                ("cmaml", "rotated-mnist"): 77.3, ("cmaml", "permuted-mnist"): 74.5}


def stream_params(dataset: str, args) -> dict[str, Any]:
    source = {"num_tasks": args.tasks}
    if args.data_root:
        source["data_root"] = args.data_root
    if args.budget == "cpu":
        source["test_per_task"] = 1000
    return {"source": dataset, "source_params": source, "examples_per_task": 1000, "batch_size": 10,
            "boundaries": "hidden"}


def build_model(spec, seed: int, init: str) -> torch.nn.Module:
    """The seeded MLP 784-100-100-10 with initial weights ``init``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # as the runner: the initial weights come from the seed
        return strategies.build_model("mlp", {"hidden": [100, 100], "init": init}, spec)


@torch.no_grad()
def score_row(model: torch.nn.Module, tests: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    model.eval()
    row = np.array([(model(x).argmax(1) == y).double().mean().item() for x, y in tests])
    model.train()
    return row


def initial_weights(method: str, args) -> str:
    """The ``mlp`` init of a row: MER's authors' (Xavier uniform) for MER, ``--init`` otherwise."""
    return "xavier_uniform" if method == "mer" else args.init


def strategy_params(method: str, dataset: str, args) -> dict[str, Any]:
    if method == "mer":
        return dict(MER_PARAMS[dataset])
    return {**COMMON, **SETTINGS[(method, dataset)], "first_order": args.first_order, "glances": args.glances}


def run_native(method: str, dataset: str, seed: int, args) -> dict[str, Any]:
    stream = scenarios.build("online", stream_params(dataset, args), seed=seed)
    tests = [c.test.examples() for c in stream.columns]
    params = strategy_params(method, dataset, args)
    strategy = strategies.build("mer" if method == "mer" else "lamaml", params)
    strategy.setup(build_model(stream.spec, seed, initial_weights(method, args)), stream.spec, "cpu", seed=seed)
    tasks = stream.meta()["task"]
    R = [score_row(strategy.model, tests)]
    start, update = time.perf_counter(), 0.0
    for t in range(len(stream)):
        batch = stream.batch(t)
        u = time.perf_counter()
        strategy.observe(batch.x, batch.y)
        update += time.perf_counter() - u
        if t + 1 == len(stream) or tasks[t + 1] != tasks[t]:
            R.append(score_row(strategy.model, tests))
            print(f"  {method} {dataset} seed {seed}: task {len(R) - 1} done, mean acc so far "
                  f"{100 * R[-1][:len(R) - 1].mean():.1f}, {time.perf_counter() - start:.0f} s", flush=True)
    return summary("native", method, dataset, seed, args, np.array(R), time.perf_counter() - start,
                   update / len(stream), len(stream), params)


def avalanche_params(method: str, dataset: str, args) -> dict[str, Any]:
    s = SETTINGS[(method, dataset)]
    return {"batch_size": 10, "epochs": 1, "optimizer": "sgd", "lr": s.get("weight_lr", 0.1),
            "n_inner_updates": 10, "second_order": not args.first_order, "grad_clip_norm": 2.0,
            "learn_lr": method != "cmaml", "lr_alpha": s.get("alpha_lr", 0.1), "sync_update": method != "lamaml",
            "alpha_init": s["alpha_init"], "max_buffer_size": 200, "buffer_mb_size": 10}


def run_avalanche(method: str, dataset: str, seed: int, args) -> dict[str, Any]:
    stream = scenarios.build("online", stream_params(dataset, args), seed=seed)
    tests = [c.test.examples() for c in stream.columns]
    name, params = ("avalanche.MER", {}) if method == "mer" else \
        ("avalanche.LaMAML", avalanche_params(method, dataset, args))
    strategy = strategies.build(name, params)
    strategy.setup(build_model(stream.spec, seed, initial_weights(method, args)), stream.spec, "cpu", seed=seed)
    R = [score_row(strategy.model, tests)]
    start, update, batches = time.perf_counter(), 0.0, 0
    for task in stream.columns:
        u = time.perf_counter()
        strategy.learn(task)
        update += time.perf_counter() - u
        batches += -(-len(task.train) // 10)
        R.append(score_row(strategy.model, tests))
        print(f"  avalanche {method} {dataset} seed {seed}: task {len(R) - 1} done, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    return summary("avalanche", method, dataset, seed, args, np.array(R), time.perf_counter() - start,
                   update / batches, batches, params)


def summary(impl, method, dataset, seed, args, R, wall, per_batch, batches, params) -> dict[str, Any]:
    return {"impl": impl, "method": method, "dataset": dataset, "seed": seed, "budget": args.budget,
            "RA": 100 * final_accuracy(R), "LA": 100 * learning_accuracy(R), "BTI": 100 * backward_transfer(R),
            "published_RA": PUBLISHED_RA.get((method, dataset)) if impl == "native" else None,
            "init": initial_weights(method, args), "wall_s": round(wall, 1), "s_per_batch": per_batch,
            "batches": batches, "params": params,
            "device": "cpu", "device_name": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s)",
            "threads": torch.get_num_threads(), "load": [round(x, 2) for x in os.getloadavg()],
            "torch": torch.__version__, "R": R.tolist()}


def markdown_row(r: dict[str, Any]) -> str:
    pub = "-" if r["published_RA"] is None else f"{r['published_RA']:.1f}"
    who = TITLE[r["method"]] + (" (avalanche-lib)" if r["impl"] == "avalanche" else "")
    return (f"| {who} | {r['dataset']} | {r['RA']:.2f} | {pub} | {r['LA']:.2f} | {r['BTI']:.2f} | "
            f"{1000 * r['s_per_batch']:.1f} | {r['seed']} | {r['budget']} | {r['wall_s']:.0f} s | "
            f"{r['device_name']}, {r['threads']} thread(s) |")


def seed_summary(rows: list[dict[str, Any]]) -> str:
    """A markdown table: per stream, method, implementation and meta-gradient order, RA, LA and
    BTI as mean ± 95% interval over seeds (Student t, as ``lifelong report``) and ms per batch."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        order = "first" if r["params"].get("first_order") or r["params"].get("second_order") is False else "second"
        order = "-" if r["method"] == "mer" else order
        glances = r["params"].get("glances", 1 if r["impl"] == "avalanche" else "-")
        groups.setdefault((r["dataset"], r["method"], r["impl"], order, glances), []).append(r)
    lines = ["| stream | method | implementation | order | glances | RA | paper RA | LA | BTI | ms / batch | seeds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (dataset, method, impl, order, glances), rs in groups.items():
        stats = aggregate([{k: r[k] for k in ("RA", "LA", "BTI", "s_per_batch")} for r in rs])
        cell = lambda k: f"{stats[k]['mean']:.2f} ± {stats[k]['ci95']:.2f}"  # noqa: E731
        pub = PUBLISHED_RA.get((method, dataset)) if impl == "native" else None
        lines.append(f"| {dataset} | {TITLE[method]} | {impl} | {order} | {glances} | {cell('RA')} | "
                     f"{'-' if pub is None else pub} | {cell('LA')} | {cell('BTI')} | "
                     f"{1000 * stats['s_per_batch']['mean']:.1f} | {', '.join(str(r['seed']) for r in rs)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budget", choices=["paper", "cpu"], default="paper")
    p.add_argument("--tasks", type=int, default=20, help="tasks of the stream (20 in the papers)")
    p.add_argument("--first-order", action="store_true", help="first-order meta-gradients (the authors' MNIST runs)")
    p.add_argument("--glances", type=int, default=COMMON["glances"],
                   help="meta-updates per batch (the authors': 5; 1 is avalanche-lib's protocol, which has none)")
    p.add_argument("--init", choices=["kaiming_normal", "pytorch"], default="kaiming_normal",
                   help="the MLP's initial weights (the authors' code: Kaiming normal, zero biases)")
    p.add_argument("--avalanche", action="store_true", help="also run avalanche-lib's LaMAML (and MER) on each row")
    p.add_argument("--no-native", action="store_true", help="run only avalanche-lib's rows")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=os.environ.get("LIFELONG_DATA"))
    p.add_argument("--json", help="append one JSON line per row to this file")
    p.add_argument("--summarize", metavar="JSONL", help="only print the mean ± 95%% interval over seeds of the "
                                                        "rows in this file (written by --json), then exit")
    args = p.parse_args()
    if args.summarize:
        with open(args.summarize) as f:
            print(seed_summary([json.loads(line) for line in f if line.strip()]))
        return
    torch.set_num_threads(args.threads)
    print("| method | stream | RA | paper RA | LA | BTI | ms / batch | seed | budget | wall | device |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for dataset in args.datasets:
        for method in args.methods:
            if method == "mer" and "mer" not in strategies.available():
                print("  skipping mer: the `mer` strategy is not registered", flush=True)
                continue
            for seed in args.seeds:
                runs = ([] if args.no_native else [run_native]) + ([run_avalanche] if args.avalanche else [])
                for run in runs:
                    row = run(method, dataset, seed, args)
                    rows.append(row)
                    print(markdown_row(row), flush=True)
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps(row) + "\n")
    if len(args.seeds) > 1:
        print("\n" + seed_summary(rows))


if __name__ == "__main__":
    main()
