"""Reproduce OSAKA's comparison (Caccia et al. 2020, ../shared/REFERENCE.md): Continual-MAML against
online fine-tuning, frozen MAML, MAML adapting online, ANIL and prototype memory on the ``osaka``
stream, switch probabilities 0.1 and 0.02.

Protocol (the ``osaka`` scenario, scenarios/osaka.py): pre-training on the Omniglot background
characters, then ``length`` (10,000) batches of 10-way 5-shot tasks switching with probability
``switch_prob`` per batch, the new task's pool drawn from Omniglot (evaluation alphabets, 0.5),
MNIST (0.25) and Fashion-MNIST (0.25: out of distribution). Metric: the online cumulative
accuracy (each batch predicted before its labels are seen, then observed), in total and per pool,
mean and 95% interval (Student t over seeds) of the per-seed values.

Rows (labels of the generated experiment file):

- ``continual_maml``: OSAKA's Continual-MAML (strategies/continual_maml.py), MAML pre-training with
  the MAML row's options, then its online phase with OSAKA's defaults (``gamma`` 2.0 at switch 0.1,
  2.5 at 0.02, as the authors' best configurations; update modulation 0.25);
- ``finetune``: online fine-tuning (pre-trained by one pass of minibatch SGD over the pre-training
  episodes, then one SGD step per batch);
- ``maml_frozen``: MAML's meta-learned weights, never adapted online (``online_adaptation = frozen``);
- ``maml_online``: MAML adapting from its meta-learned weights on each observed batch (``reset``:
  OSAKA's MAML baseline);
- ``anil``: the same with ANIL (head-only inner loop, ``anil = true``, ``reset``);
- ``protomemory``: prototypes updated online.

Every row runs through the public API, the code path of ``lifelong run``: an experiment (one per
switch probability, every row and seed) is validated by
:func:`simulator.config.validate_experiment` and run by :func:`simulator.experiment.run_experiment`
into ``--out``/switch<p> (a complete run directory: ``lifelong report`` works on it, and
rerunning this script resumes it). The rows are read back from its ``results.json``.

Budgets (``--budget``):

- ``cpu`` (default): configs/osaka.toml's: MLP 256-256, 300 meta-iterations of meta-batch 4 for
  MAML, ANIL, Continual-MAML and prototype memory, inner rate 0.4, Adam 0.001; 10,000 batches;
  evaluation columns of 20 episodes. OSAKA used a conv4 (64 filters) and early-stopped
  pre-training (up to 1000 epochs of 100 meta-batches).
- ``paper``: conv4 with 64 filters and 10,000 meta-iterations (for a GPU).

Each row's budget, seed, wall time (pre-training, online phase), device, threads and the machine
are written with ``--json`` (one JSON line per row and seed) and printed.

Usage:
    python benchmarks/reproduce_osaka.py --data-root ../shared/data [--switch 0.1 0.02]
        [--seeds 0 1 2] [--budget cpu|paper] [--length N] [--meta-iterations N] [--rows continual_maml finetune ...]
        [--out runs/osaka-repro] [--json rows.jsonl] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator.config import validate_experiment  # noqa: E402
from simulator.experiment import run_experiment  # noqa: E402

POOLS = ("omniglot", "mnist", "fashion-mnist")
# OSAKA's best Continual-MAML thresholds (Config/Best_params/omniglot_p0.9{,8}.json, cl_tbd_thres)
GAMMA = {0.1: 2.0, 0.02: 2.5}
T95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


def budget(name: str) -> dict:
    """Model, meta-training and evaluation settings of a budget."""
    if name == "paper":
        return {"model": {"name": "conv4", "filters": 64}, "meta_iterations": 10000, "episodes": 20}
    return {"model": {"name": "mlp", "hidden": [256, 256]}, "meta_iterations": 300, "episodes": 20}


def rows(switch: float, b: dict) -> dict[str, dict]:
    maml = {"inner_lr": 0.4, "meta_lr": 0.001, "meta_batch_size": 4, "meta_iterations": b["meta_iterations"]}
    return {
        "continual_maml": {"strategy": "continual_maml", **maml, "gamma": GAMMA.get(switch, 2.0)},
        "finetune": {"strategy": "finetune", "lr": 0.01, "epochs": 1, "online_steps": 1},
        "maml_frozen": {"strategy": "maml", **maml, "online_adaptation": "frozen"},
        "maml_online": {"strategy": "maml", **maml, "online_adaptation": "reset"},
        "anil": {"strategy": "maml", **maml, "anil": True, "online_adaptation": "reset"},
        "protomemory": {"strategy": "protomemory", "embedding_dim": 128, "lr": 0.001,
                        "meta_iterations": b["meta_iterations"]},
    }


def experiment(switch: float, args) -> dict:
    b = budget(args.budget)
    if args.meta_iterations is not None:
        b["meta_iterations"] = args.meta_iterations
    table = rows(switch, b)
    return {
        "name": f"osaka-switch{switch}", "seeds": list(args.seeds), "device": args.device, "threads": args.threads,
        "data_root": args.data_root,
        "scenario": {"name": "osaka", "ways": 10, "shots": 5, "length": args.length, "switch_prob": switch,
                     "pools": list(POOLS), "pool_probs": [0.5, 0.25, 0.25]},
        "model": b["model"],
        "evaluation": {"episodes": b["episodes"], "adapt_steps": 5},
        "online": {"eval_every": 1000, "pretrain": True, "recovery_window": 20},
        "strategies": {label: table[label] for label in args.rows},
    }


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% interval (Student t; 0 for one value), over the values
    that are not None (a pool the stream never visited has none)."""
    values = [v for v in values if v is not None]
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, T95.get(n, 1.96) * sd / math.sqrt(n)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--switch", type=float, nargs="+", default=[0.1, 0.02])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", choices=["cpu", "paper"], default="cpu")
    p.add_argument("--length", type=int, default=10000)
    p.add_argument("--meta-iterations", type=int, help="override the budget's meta-iterations (smoke tests)")
    p.add_argument("--rows", nargs="+", default=list(rows(0.1, budget("cpu"))),
                   choices=list(rows(0.1, budget("cpu"))))
    p.add_argument("--data-root", default=os.environ.get("LIFELONG_DATA", "data"))
    p.add_argument("--out", default="runs/osaka-repro")
    p.add_argument("--json", help="append one JSON line per row and seed to this file")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    for switch in args.switch:
        per_label: dict[str, list[dict]] = {}
        start = time.perf_counter()
        for seed in args.seeds:  # seed-major: every row of a seed before the next seed
            raw = {**experiment(switch, args), "seeds": [seed], "name": f"osaka-switch{switch}-seed{seed}"}
            exp = validate_experiment(raw, f"reproduce_osaka switch {switch} seed {seed}")
            out = Path(args.out) / f"switch{switch}" / f"seed{seed}"
            run_experiment(exp, out, resume=out.exists(), report=True)
            results = json.loads((out / "results.json").read_text())
            collect(results, switch, exp, args, per_label)
            for failure in results.get("failures", []):
                print(f"FAILED: {failure}", file=sys.stderr)
            print_table(switch, args, per_label, time.perf_counter() - start)
    return 0


def collect(results: dict, switch: float, exp, args, per_label: dict[str, list[dict]]) -> None:
    """One row per finished run of ``results`` into ``per_label`` (and ``--json``)."""
    env = results.get("environment", {})
    for run in results["runs"]:
        if "online" not in run:
            continue
        acc = run["online"]["cumulative_accuracy"]
        row = {"benchmark": "reproduce_osaka", "switch_prob": switch, "row": run["strategy"],
               "seed": run["seed"], "budget": args.budget, "length": args.length,
               "total": acc["total"], **{f"pool/{k}": v for k, v in acc["by_pool"].items()},
               "switches": run["online"]["switches"],
               "pretrain_seconds": run["learn_seconds"][0] if len(run["learn_seconds"]) > 1 else 0.0,
               "online_seconds": run["learn_seconds"][-1], "eval_seconds": sum(run["eval_seconds"]),
               "device": exp.device, "threads": exp.threads, "machine": platform.node(),
               "cpu": platform.processor() or platform.machine(), "load_average": os.getloadavg()[0],
               "torch": env.get("torch")}
        per_label.setdefault(run["strategy"], []).append(row)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


def print_table(switch: float, args, per_label: dict[str, list[dict]], seconds: float) -> None:
    """Print the table of the rows collected so far (mean ± 95% interval over seeds, in %)."""
    print(f"\n## osaka, switch probability {switch}, budget {args.budget}, {args.length} batches, "
          f"seeds {sorted({r['seed'] for rs in per_label.values() for r in rs})} ({seconds:.0f} s so far)\n")
    print("| row | total | omniglot | mnist | fashion-mnist | seeds | wall s / seed (pre-train + online) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label in args.rows:
        runs = per_label.get(label, [])
        if not runs:
            print(f"| {label} | (no finished run) | | | | 0 | |")
            continue
        cells = []
        for key in ["total"] + [f"pool/{k}" for k in POOLS]:
            m, h = interval([r[key] for r in runs])
            cells.append(f"{100 * m:.1f} ± {100 * h:.1f}")
        wall = sum(r["pretrain_seconds"] + r["online_seconds"] for r in runs) / len(runs)
        print(f"| {label} | {' | '.join(cells)} | {len(runs)} | {wall:.0f} |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
