"""``lifelong report SWEEP_DIR`` and the sweep's summary.md at k = 0 and k = K, from a sweep
directory written by hand (sweep.json, results.db) so that every number is worked out by hand.

Grid: strategies.finetune.lr in {0.01, 0.1} x scenario.num_tasks in {2, 3}; seeds 0 and 1;
K = 2. Final accuracy at k = 0: finetune 0.5, + 0.2 with lr 0.1, - 0.1 with 3 tasks, + 0.02 per
seed; maml (no lr key) 0.3 with 2 tasks, 0.2 with 3, + 0.01 per seed. At k = K: finetune + 0.1;
maml 0.9 with 2 tasks, 0.8 with 3, + 0.01 per seed. maml's trial with 3 tasks and seed 1 failed.
"""

import json
import math

import pytest

from simulator.cli import main
from simulator.report import write_report
from simulator.report.sweeps import is_sweep_dir
from simulator.store import ResultsDB
from simulator.sweep import Sweep, Trial, _write_summary

CI2 = 12.706204736174698 / math.sqrt(2)  # the 95% half-width per unit of standard deviation, 2 seeds
SD = math.sqrt(2) / 2  # the sample standard deviation of two values one unit apart
GRID = {"strategies.finetune.lr": [0.01, 0.1], "scenario.num_tasks": [2, 3]}


def finals(strategy: str, point: dict, seed: int) -> tuple[float, float]:
    three = point["scenario.num_tasks"] == 3
    if strategy == "finetune":
        k0 = 0.5 + (0.2 if point["strategies.finetune.lr"] == 0.1 else 0.0) - (0.1 if three else 0.0) + 0.02 * seed
        return k0, k0 + 0.1
    return 0.3 - (0.1 if three else 0.0) + 0.01 * seed, 0.9 - (0.1 if three else 0.0) + 0.01 * seed


def trials() -> list[Trial]:
    out = []
    for seed in (0, 1):
        for tasks in (2, 3):
            for lr in (0.01, 0.1):
                out.append(Trial(f"ft-{lr}-{tasks}-{seed}", "h", {"strategies.finetune.lr": lr,
                                                                  "scenario.num_tasks": tasks}, "finetune", seed, {}))
            out.append(Trial(f"maml-{tasks}-{seed}", "h", {"scenario.num_tasks": tasks}, "maml", seed, {}))
    return out


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sweeps") / "grid"
    directory.mkdir()
    listed = trials()
    (directory / "sweep.json").write_text(json.dumps({
        "name": "grid", "source": "grid.toml", "grid": GRID,
        "trials": [{"id": t.id, "point": t.point, "strategy": t.strategy, "seed": t.seed} for t in listed]}))
    db = ResultsDB(directory / "results.db")
    for t in listed:
        db.mark(t.id, config_hash="h", point=t.point, strategy=t.strategy, seed=t.seed, status="pending")
        if t.id == "maml-3-1":
            db.finish(t.id, status="failed", error="boom", failure="trial", seconds=1.0, versions={}, metrics={})
            continue
        k0, kK = finals(t.strategy, t.point, t.seed)
        db.finish(t.id, status="done", error=None, seconds=1.0, versions={},
                  metrics={0: {"final_accuracy": k0, "forgetting": 0.1 * t.seed}, 2: {"final_accuracy": kK,
                                                                                    "forgetting": 0.0}})
    db.close()
    return directory


def table(markdown: str, title: str) -> list[str]:
    lines = markdown.splitlines()
    start = lines.index(f"**{title}**") + 4
    return lines[start:lines.index("", start)]


def test_best_point_per_strategy_at_k0_and_kK(sweep_dir, tmp_path):
    assert is_sweep_dir(sweep_dir)
    write_report([sweep_dir], tmp_path, draw=False)
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.startswith("# Sweep report: grid\n")
    assert "12 trials (11 done, 1 failed, 0 not finished)" in markdown
    best = table(markdown, "As learned (k = 0): best grid point per strategy")
    # finetune: lr 0.1, 2 tasks: 0.7 and 0.72; maml: 2 tasks: 0.3 and 0.31
    assert best == [
        f"| finetune | strategies.finetune.lr=0.1, scenario.num\\_tasks=2 | 2 | **0.710 ± {0.02 * SD * CI2:.3f}** "
        f"| n/a | 0.050 ± {0.1 * SD * CI2:.3f} | n/a | n/a | n/a |",
        f"| maml | scenario.num\\_tasks=2 | 2 | **0.305 ± {0.01 * SD * CI2:.3f}** | n/a | 0.050 ± "
        f"{0.1 * SD * CI2:.3f} | n/a | n/a | n/a |"]
    best = table(markdown, "After adaptation (k = K, each trial's own K): best grid point per strategy")
    assert [row.split(" | ")[3] for row in best] == [f"**0.810 ± {0.02 * SD * CI2:.3f}**",
                                                     f"**0.905 ± {0.01 * SD * CI2:.3f}**"]


def test_metrics_against_each_grid_key(sweep_dir, tmp_path):
    write_report([sweep_dir], tmp_path, draw=False)
    markdown = (tmp_path / "report.md").read_text()
    ci = f"{0.02 * SD * CI2:.3f}"
    # per seed, the mean over the number of tasks: lr 0.01: 0.45, 0.47; lr 0.1: 0.65, 0.67
    lr = table(markdown, "As learned (k = 0): against strategies.finetune.lr")
    assert [row.split(" | ")[:4] for row in lr] == [["| finetune", "0.01", "2", f"0.460 ± {ci}"],
                                                     ["| finetune", "0.1", "2", f"0.660 ± {ci}"]]
    # per seed, the mean over lr: 2 tasks: 0.6, 0.62; 3 tasks: 0.5, 0.52; maml with 3 tasks: seed 0 only
    tasks = table(markdown, "As learned (k = 0): against scenario.num\\_tasks")
    assert [row.split(" | ")[:4] for row in tasks] == [
        ["| finetune", "2", "2", f"0.610 ± {ci}"], ["| finetune", "3", "2", f"0.510 ± {ci}"],
        ["| maml", "2", "2", f"0.305 ± {0.01 * SD * CI2:.3f}"], ["| maml", "3", "1", "0.200"]]
    tasks = table(markdown, "After adaptation (k = K, each trial's own K): against scenario.num\\_tasks")
    assert [row.split(" | ")[3] for row in tasks] == [f"0.710 ± {ci}", f"0.610 ± {ci}",
                                                      f"0.905 ± {0.01 * SD * CI2:.3f}", "0.800"]
    points = table(markdown, "Every grid point")
    assert any(row.startswith("| scenario.num\\_tasks=3 | maml | 1/2 | 1 | 0.200 | 0.800 | n/a | n/a |")
               for row in points)


def test_the_cli_writes_the_sweep_report_with_a_figure_per_key(sweep_dir, capsys):
    assert main(["report", str(sweep_dir)]) == 0
    assert str(sweep_dir / "index.html") in capsys.readouterr().out
    page = (sweep_dir / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and '<section id="key2">' in page
    assert sorted(p.name for p in (sweep_dir / "figures").iterdir()) == [
        "sweep-scenario-num-tasks.png", "sweep-strategies-finetune-lr.png"]


def test_bad_sweep_directories_are_one_clear_error(sweep_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sweep.json").write_text("{not json")
    assert main(["report", str(broken)]) == 2
    assert "sweep.json: damaged, not written by `lifelong sweep`" in capsys.readouterr().err
    (broken / "sweep.json").write_text(json.dumps({"name": "x", "grid": {}, "trials": []}))
    assert main(["report", str(broken)]) == 2
    assert "results.db: missing; no trial of this sweep has been recorded yet" in capsys.readouterr().err
    (broken / "results.db").write_text("garbage " * 100)
    assert main(["report", str(broken)]) == 2
    assert "results.db: damaged or not a results database" in capsys.readouterr().err
    assert main(["report", str(sweep_dir), str(broken), "--out", str(tmp_path / "o")]) == 2
    assert "a sweep directory is reported on its own" in capsys.readouterr().err
    assert main(["report", str(sweep_dir), "--out", str(tmp_path / "o"), "--compare", "a,b"]) == 2
    assert "--compare applies to run directories, not to a sweep" in capsys.readouterr().err


def test_summary_md_gives_k0_and_kK_side_by_side(sweep_dir, tmp_path):
    db = ResultsDB(sweep_dir / "results.db", create=False)
    try:
        _write_summary(tmp_path, Sweep("grid", "grid.toml", GRID, tuple(trials())), db)
    finally:
        db.close()
    lines = (tmp_path / "summary.md").read_text().splitlines()
    assert lines[4].startswith("| grid point | strategy | seeds done | failed | final_accuracy (k = 0) | "
                               "final_accuracy (k = K) | learning_accuracy (k = 0) |")
    ci = f"{0.02 * SD * CI2:.3f}"
    assert (f"| scenario.num_tasks=2, strategies.finetune.lr=0.1 | finetune | 2 | 0 | 0.710 ± {ci} | 0.810 ± {ci} | "
            in "\n".join(lines))
    assert any(line.startswith("| scenario.num_tasks=3 | maml | 1 | 1 | 0.200 | 0.800 | nan | nan |")
               for line in lines)
