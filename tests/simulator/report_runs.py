"""Tiny run directories shared by the report tests (built once per test session)."""

from __future__ import annotations

from pathlib import Path

from simulator.config import validate_experiment
from simulator.experiment import run_experiment

SCRIPT_LABEL = "<script>alert(1)</script>"


def classification_run(out: Path) -> Path:
    """split-digits, 3 tasks, two strategies (one labelled with a script tag, one with a $), 2 seeds."""
    raw = {
        "name": "tiny-digits", "seeds": [0, 1],
        "scenario": {"name": "split-digits", "num_tasks": 3},
        "model": {"name": "mlp", "hidden": [32]},
        "evaluation": {"episodes": 4, "adapt_steps": 2},
        "strategies": {"finetune": {"epochs": 1},
                       SCRIPT_LABEL: {"strategy": "finetune", "epochs": 1, "lr": 0.05},
                       "joint $x$": {"strategy": "joint", "epochs": 1}},
    }
    run_experiment(validate_experiment(raw, "test"), out, quiet=True)
    return out


def regression_run(out: Path) -> Path:
    """sinusoid, 2 tasks, finetune and joint, 2 seeds."""
    raw = {
        "name": "tiny-sine", "seeds": [0, 1],
        "scenario": {"name": "sinusoid", "num_tasks": 2, "train_functions": 20, "test_functions": 8},
        "model": {"name": "mlp", "hidden": [16]},
        "evaluation": {"episodes": 4, "adapt_steps": 2},
        "strategies": {"finetune": {"epochs": 1, "adapt_lr": 0.01}, "joint": {"epochs": 1, "adapt_lr": 0.01}},
    }
    run_experiment(validate_experiment(raw, "test"), out, quiet=True)
    return out
