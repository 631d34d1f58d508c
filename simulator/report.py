"""The plain Markdown report of a run directory: one summary table per adaptation setting."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    ("final_accuracy", "ACC"),
    ("average_incremental_accuracy", "AIA"),
    ("learning_accuracy", "LA"),
    ("backward_transfer", "BWT"),
    ("forward_transfer", "FWT"),
    ("forgetting", "Forgetting"),
    ("new_task_adaptation", "New-task adapt."),
    ("recovery_adaptation", "Recovery adapt."),
)


def _cell(stat: dict[str, Any] | None) -> str:
    if stat is None or stat["mean"] is None:
        return "n/a"
    if stat["ci95"] is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} ± {stat['ci95']:.3f}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def markdown_report(document: dict[str, Any], config: dict[str, Any]) -> str:
    """Markdown for a ``results.json`` document and its resolved config."""
    K = document["adapt_steps"]
    regression = document["kind"] == "regression"
    score = "minus the MSE (higher is better)" if regression else "accuracy"
    lines = [
        f"# {_escape(document['experiment'])}",
        "",
        f"Scenario `{config['scenario']['name']}`, seeds {config['seeds']}, device "
        f"`{document['environment']['device']}`, {document['environment']['threads']} thread(s)."
        + ("" if document["complete"] else " **Incomplete: the run stopped early.**"),
        "",
        f"Scores are {score}; cells are the mean ± 95% confidence half-width over seeds "
        "(Student's t). BWT and FWT divide by T-1; forgetting is max-based (Chaudhry et al. 2018).",
    ]
    runs_by_strategy: dict[str, list[dict]] = {}
    for run in document["runs"]:
        runs_by_strategy.setdefault(run["strategy"], []).append(run)
    for key, title in (("k0", "As learned (k = 0)"), (f"k{K}", f"After {K} adaptation steps (k = {K})")):
        header = ["Strategy"] + [name for _, name in COLUMNS] + ["Learn s/task", "Peak MB"]
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for label, stats in document["summary"].items():
            runs = runs_by_strategy[label]
            per_task = [sum(r["learn_seconds"]) / max(len(r["learn_seconds"]), 1) for r in runs]
            peak = max((max(r["peak_memory_mb"]) for r in runs if r["peak_memory_mb"]), default=0.0)
            row = ([_escape(label)] + [_cell(stats[key].get(metric)) for metric, _ in COLUMNS]
                   + [f"{sum(per_task) / len(per_task):.2f}", f"{peak:.0f}"])
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Files: `results.json` (all metrics per seed), `tensors.npz` (acc and loss tensors "
              "of shape (T+1, T, K+1) per strategy and seed), `config.json` (the resolved experiment).", ""]
    return "\n".join(lines)
