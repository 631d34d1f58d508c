"""Run directories written by hand to the file contract, from tiny score tensors, so that every
number a report shows can be worked out by hand (shared by the report tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from simulator import metrics
from simulator.files import to_json

SCENARIO = {"name": "split-digits", "num_tasks": 2, "protocol": "class-incremental"}


def score_tensor(*per_k) -> np.ndarray:
    """(T+1, T, K+1) from one (T+1, T) matrix per k."""
    return np.stack([np.asarray(m, dtype=float) for m in per_k], axis=-1)


def write_run(directory: Path, scores: dict[str, list[np.ndarray]], names: dict[str, str] | None = None,
              scenario: dict | None = None, kind: str = "classification", learn_seconds: float = 1.0) -> Path:
    """A run directory with ``scores[label]`` = one (T+1, T, K+1) score tensor per seed
    (seeds 0, 1, ...); ``names`` gives a label's registered strategy (default: the label).
    For regression the scores are minus the MSE, as the runner stores them."""
    directory.mkdir(parents=True)
    names = names or {}
    K = next(iter(scores.values()))[0].shape[2] - 1
    seeds = list(range(max(len(v) for v in scores.values())))
    config = {"name": directory.name, "seeds": seeds, "device": "cpu", "threads": 1,
              "scenario": scenario or SCENARIO, "evaluation": {"episodes": 2, "adapt_steps": K},
              "strategies": {label: {"strategy": names.get(label, label)} for label in scores}}
    runs, arrays, summary = [], {}, {}
    for label, per_seed in scores.items():
        at_k = []
        for seed, score in enumerate(per_seed):
            at = {f"k{k}": metrics.summarize(score, k) for k in sorted({0, K})}
            at_k.append(at)
            runs.append({"strategy": label, "seed": seed, "metrics": at, "task_ids": [],
                         "learn_seconds": [learn_seconds * (seed + 1)] * score.shape[1],
                         "eval_seconds": [0.1] * score.shape[0], "peak_memory_mb": [100.0]})
            stored = -score if kind == "regression" else score
            arrays[f"{label}/seed{seed}/acc"] = np.full_like(score, np.nan) if kind == "regression" else stored
            arrays[f"{label}/seed{seed}/loss"] = stored if kind == "regression" else 1 - score
        summary[label] = {key: metrics.aggregate([a[key] for a in at_k]) for key in at_k[0]}
    document = {"experiment": directory.name, "kind": kind, "adapt_steps": K, "complete": True, "runs": runs,
                "summary": summary, "environment": {"device": "cpu"}}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "results.json").write_text(json.dumps(to_json(document)))
    np.savez(directory / "tensors.npz", **arrays)
    return directory


def report_data(directory: Path) -> dict:
    """The JSON data block of a written ``index.html``."""
    import re

    page = (directory / "index.html").read_text()
    return json.loads(re.search(r'id="report-data">(.*?)</script>', page, flags=re.S).group(1))
