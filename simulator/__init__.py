"""The lifelong-learning simulator: runner, evaluator, metrics, experiment files, run directories, CLI.

The main entry points are imported lazily so that ``simulator.metrics`` stays a light,
numpy-only import.

Example:
    >>> import scenarios, strategies, simulator
    >>> stream = scenarios.build("split-digits", {"num_tasks": 3}, seed=0)
    >>> strategy = strategies.build("finetune", {"epochs": 2})
    >>> model = strategies.build_model("mlp", {}, stream.spec)
    >>> result = simulator.run(stream, strategy, model, seed=0,
    ...                        settings=simulator.EvalSettings(episodes=10, adapt_steps=3))
    >>> summary = simulator.metrics.summarize(result.score, k=0)
    >>> sorted(summary)[:3]
    ['adaptation_auc', 'average_incremental_accuracy', 'avalanche_forgetting']
"""

from __future__ import annotations

import importlib

_LAZY = {
    "run": "simulator.runner", "run_experiment": "simulator.experiment", "RunResult": "simulator.results",
    "run_online": "simulator.online", "OnlineSettings": "simulator.online",
    "Evaluator": "simulator.evaluator", "EvalSettings": "simulator.evaluator",
    "load_experiment": "simulator.config", "ConfigError": "simulator.config",
    "metrics": "simulator.metrics",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'simulator' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if name == "metrics" else getattr(module, name)


__all__ = sorted(_LAZY)
