"""Reproduce OML's and ANML's Omniglot continual-learning curve (Javed & White 2019, figure 3;
Beaulieu et al. 2020, figure 3) with the library's ``oml`` and ``anml`` strategies.

Protocol. Meta-training: the Omniglot *background* characters, as the ``osaka`` family's
``pretrain`` stream holds them (864 characters; its 100 held-out background characters serve
here as a validation set for the online learning rate, never as test data). Meta-test: for
each number of classes N (10, 50, 100, 200) and each seed, N characters of the *evaluation*
alphabets (never met in meta-training), drawn from the seed; of each character's 20 images,
15 (drawn from the seed) form the online pass and the other 5 are held out. The online pass
is one pass in class order (the 15 images of class 1, then of class 2, ...: the papers'
class-incremental meta-test trajectory), one SGD step per image; the score is the accuracy on
the N x 5 held-out images after the pass (the papers' "test accuracy").

Rows (method x N x seed):

- ``oml``, ``anml``: ``strategies.build(...)``, ``strategy.setup`` on ``conv4`` (its BatchNorm
  removed by the strategy), ``strategy.learn(pretrain task)`` (meta-training); then the online
  head (zeros, N outputs) learned with ``strategy.observe`` and scored with
  ``strategy.predict_online``; the representation stays frozen.
- ``pretrain``: the same network trained by plain classification (Adam, minibatches of 64,
  cross-entropy over the 864 background classes) for as many minibatches as OML's
  meta-updates; then frozen, head learned online exactly as above (it runs through the same
  ``oml`` strategy with ``meta_iterations = 0``).
- ``scratch``: the whole network from a random initialisation, trained online on the pass
  (one SGD step per image, every layer).

The online learning rate of every method is picked from ``--lr-grid`` on the validation
characters (N classes of the 100 held-out background characters, same 15/5 protocol), as the
papers pick theirs from a grid (they do not say on which data).

Budgets. ``paper``: the papers' meta-training lengths (OML 20,000 steps of meta-lr 1e-4,
ANML 30,000 of 1e-3, trajectories of 1 class x 20 images for ANML; OML's network has 6 conv
layers of 256 channels), for the GPU machine. ``cpu``: conv4 with 3 blocks of 64 filters (576
features) and ``--meta-iterations`` (default 500) meta-updates of trajectories of 5 classes x
4 images plus 20 random samples, meta-lr 1e-3 for both: a reduced budget that fits a 2-core CPU.

Each (method, N, seed) is scored on ``--draws`` (default 5) independent draws of N classes and
their images from the seed, each with its own learning-rate pick and online pass (one
meta-trained representation per seed): the seed's figure is their mean, which steadies it (at
N = 10 one draw holds only 50 held-out images). Each row records the draws, budget, seed, wall
time (meta-training or pre-training, then the online passes), device and thread count; ``--json
FILE`` appends one JSON line per row and ``--summarize FILE`` prints the summary of such a file.
The summary gives the mean over seeds and its 95% interval (Student t, as ``lifelong report``).

Usage::

    python benchmarks/reproduce_oml.py --budget cpu --classes 10 50 --seeds 0 1 2 \\
        --data-root ../shared/data --json oml.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scenarios  # noqa: E402
import strategies  # noqa: E402
from scenarios.base import StreamSpec  # noqa: E402
from scenarios.data import load_omniglot  # noqa: E402
from scenarios.omniglot import labelled_pool  # noqa: E402
from simulator.metrics import aggregate  # noqa: E402
from strategies.oml import _strip_norms  # noqa: E402

METHODS = ("oml", "anml", "pretrain", "scratch")
ONLINE, HELD = 15, 5


def budget(name: str, args) -> dict:
    if name == "paper":
        return {"model": {"filters": 256, "blocks": 4},
                "oml": {"meta_iterations": 20000, "meta_lr": 1e-4, "inner_lr": 0.03, "trajectory_classes": 1,
                        "trajectory_shots": 15, "random_samples": 15},
                "anml": {"meta_iterations": 30000, "meta_lr": 1e-3, "inner_lr": 0.1, "trajectory_classes": 1,
                         "trajectory_shots": 20, "random_samples": 64}}
    it = args.meta_iterations or 500
    common = {"meta_iterations": it, "meta_lr": 1e-3, "inner_lr": 0.1, "trajectory_classes": 5,
              "trajectory_shots": 4, "random_samples": 20}
    return {"model": {"filters": 64, "blocks": 3}, "oml": dict(common), "anml": dict(common)}


def split_classes(pool, chars: np.ndarray, gen: torch.Generator):
    """(online x, online y, held x, held y) of the chosen classes (labels 0..N-1, class order)."""
    x, y = pool.examples()
    xs, ys, hx, hy = [], [], [], []
    for label, c in enumerate(chars.tolist()):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        xs.append(x[idx[:ONLINE]]), hx.append(x[idx[ONLINE:ONLINE + HELD]])
        ys.append(torch.full((ONLINE,), label)), hy.append(torch.full((HELD,), label))
    return torch.cat(xs), torch.cat(ys), torch.cat(hx), torch.cat(hy)


def frozen_head_accuracy(strategy, data, n: int, lr: float) -> float:
    """Zero an N-output online head, learn it online (observe, one class at a time), score."""
    ox, oy, hx, hy = (t.to(strategy.device) for t in data)
    strategy.model.head = nn.Linear(strategy.model.head.in_features, n).to(strategy.device)
    nn.init.zeros_(strategy.model.head.weight), nn.init.zeros_(strategy.model.head.bias)
    strategy.config = strategy.config.model_copy(update={"online_lr": lr})
    for start in range(0, len(ox), ONLINE):
        strategy.observe(ox[start:start + ONLINE], oy[start:start + ONLINE])
    return (strategy.predict_online(hx).argmax(1) == hy).float().mean().item()


def scratch_accuracy(model_params, spec, data, n: int, lr: float, seed: int, device) -> float:
    ox, oy, hx, hy = (t.to(device) for t in data)
    torch.manual_seed(seed)
    model = _strip_norms(strategies.build_model("conv4", model_params, dataclasses.replace(spec, output_size=n)))
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for i in range(len(ox)):
        opt.zero_grad()
        F.cross_entropy(model(ox[i:i + 1]), oy[i:i + 1]).backward()
        opt.step()
    with torch.no_grad():
        return (model(hx).argmax(1) == hy).float().mean().item()


def pretrain_classification(strategy, task, iterations: int, seed: int) -> None:
    """Plain classification of the background classes through the representation and the
    (otherwise meta-training) head: Adam 1e-3, minibatches of 64."""
    x, y = (t.to(strategy.device) for t in task.train.examples())
    net = strategy.model
    params = [p for n, p in net.named_parameters() if not n.startswith("head.")]
    opt = torch.optim.Adam(params, lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(iterations):
        idx = torch.randint(len(x), (64,), generator=gen).to(x.device)
        opt.zero_grad()
        F.cross_entropy(net.meta_head(net.features(x[idx])), y[idx]).backward()
        opt.step()


def summary_table(rows: list[dict]) -> str:
    """Accuracy per method and number of classes: mean over seeds ± the 95% interval (Student t,
    as ``lifelong report``; each seed's figure is already the mean of its draws)."""
    lines = ["\nmethod     classes  accuracy, % (mean ± 95% interval over seeds)"]
    for method in dict.fromkeys(r["method"] for r in rows):
        for n in dict.fromkeys(r["classes"] for r in rows if r["method"] == method):
            accs = [{"accuracy": 100 * r["accuracy"]} for r in rows if r["method"] == method and r["classes"] == n]
            stats = aggregate(accs)["accuracy"]
            lines.append(f"{method:10s} {n:7d}  {stats['mean']:5.1f} ± {stats['ci95']:4.1f}  ({stats['n']} seeds)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", choices=["cpu", "paper"], default="cpu")
    p.add_argument("--classes", type=int, nargs="+", default=[10, 50, 100, 200])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--meta-iterations", type=int, default=None)
    p.add_argument("--lr-grid", type=float, nargs="+", default=[0.0003, 0.001, 0.003, 0.01, 0.03, 0.1])
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--draws", type=int, default=5, help="class draws (each with its own online pass) per seed "
                                                           "and number of classes; the seed's figure is their mean")
    p.add_argument("--json", default=None)
    p.add_argument("--summarize", metavar="JSONL", help="only print the summary of the rows in this file, then exit")
    args = p.parse_args(argv)
    if args.summarize:
        with open(args.summarize) as f:
            print(summary_table([json.loads(line) for line in f if line.strip()]))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    b = budget(args.budget, args)
    om = load_omniglot(args.data_root)
    table = om.image_table()
    eval_chars = np.flatnonzero(~om.background)
    test_pool = labelled_pool(om, table[eval_chars], np.zeros(len(eval_chars), dtype=np.int64), 0)
    rows = []
    for seed in args.seeds:
        stream = scenarios.build("osaka", {"data_root": args.data_root}, seed=seed)
        task = stream.pretrain[0]
        val_labels = np.unique(task.test.examples()[1].numpy())
        spec = StreamSpec(name="oml-omniglot", kind="classification", protocol="class-incremental",
                          input_shape=(1, 28, 28), output_size=max(args.classes), num_tasks=1, shots=1, query=1)
        for method in args.methods:
            started = time.perf_counter()
            strategy = None
            if method != "scratch":
                name = "oml" if method == "pretrain" else method
                params = {**b[name if name in b else "oml"], "meta_head_size": 1000}
                if method == "pretrain":
                    params["meta_iterations"] = 0
                strategy = strategies.build(name, params, label=method)
                torch.manual_seed(seed)
                model = strategies.build_model("conv4", b["model"], spec)
                strategy.setup(model, spec, device, seed=seed)
                if method == "pretrain":
                    pretrain_classification(strategy, task, b["oml"]["meta_iterations"], seed)
                else:
                    strategy.learn(task)
            train_seconds = time.perf_counter() - started
            for n in args.classes:
                t0 = time.perf_counter()
                score = (lambda d, k, lr: frozen_head_accuracy(strategy, d, k, lr)) if strategy is not None else \
                    (lambda d, k, lr: scratch_accuracy(b["model"], spec, d, k, lr, seed, device))
                accs, lrs = [], []
                for draw in range(args.draws):
                    gen = torch.Generator().manual_seed(1000 * seed + n + 100_000 * draw)
                    nv = min(n, len(val_labels))
                    val_chars = val_labels[torch.randperm(len(val_labels), generator=gen)[:nv].numpy()]
                    val = split_classes(task.test, val_chars, gen)
                    test = split_classes(test_pool, torch.randperm(len(eval_chars), generator=gen)[:n].numpy(), gen)
                    best = max(args.lr_grid, key=lambda lr: score(val, nv, lr))
                    accs.append(score(test, n, best))
                    lrs.append(best)
                row = {"method": method, "classes": n, "seed": seed, "accuracy": float(np.mean(accs)),
                       "draws": accs, "online_lr": lrs,
                       "budget": args.budget, "meta_iterations": None if method == "scratch" else b["oml"]["meta_iterations"],
                       "train_seconds": round(train_seconds, 1), "eval_seconds": round(time.perf_counter() - t0, 1),
                       "device": str(device), "threads": torch.get_num_threads()}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")
    print(summary_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
