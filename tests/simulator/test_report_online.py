"""Reports of online runs, from a run directory written by hand to the file contract, with
every number in the tables worked out by hand."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from simulator.cli import main
from simulator import metrics
from simulator.files import to_json
from simulator.online_metrics import flat_summary, summarize_online
from simulator.report import write_report
from simulator.report.data import load_run, moving_average

POOLS = ("omniglot", "mnist", "fashion-mnist")
# Every task lasts 3 batches (switches at 0, 3, 6, 9); a seed's stream is the same for every strategy.
STREAMS = {0: [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0], 1: [1, 1, 1, 0, 0, 0, 2, 2, 2, 0, 0, 0]}
SWITCH = np.array([True, False, False] * 4)


def scores(strategy: str, seed: int) -> np.ndarray:
    """finetune: a flat 0.5 (seed 0) or 0.7 (seed 1). protomemory: 1 on omniglot; out of
    distribution it recovers within a task, as [0.5, 1, 1] (seed 0) or [0.5, 0.5, 1] (seed 1)."""
    if strategy == "finetune":
        return np.full(12, 0.5 if seed == 0 else 0.7)
    ood = [0.5, 1.0, 1.0] if seed == 0 else [0.5, 0.5, 1.0]
    return np.concatenate([[1.0] * 3 if STREAMS[seed][t] == 0 else ood for t in range(0, 12, 3)])


def anytime(strategy: str) -> np.ndarray:
    """(H, J, K+1) = (3, 3, 2): finetune flat at 0.5; protomemory peaks at 0.9 and ends at 0.6."""
    rows = [0.5, 0.5, 0.5] if strategy == "finetune" else [0.2, 0.9, 0.6]
    return np.repeat(np.array(rows)[:, None, None], 3, axis=1).repeat(2, axis=2)


def write_online_run(directory: Path, kind: str = "classification") -> Path:
    """2 strategies x 2 seeds over 3 pools, K = 1, recovery curves of n = 3 batches."""
    directory.mkdir(parents=True)
    labels = ("finetune", "protomemory")
    config = {"name": "tiny-osaka", "seeds": [0, 1], "device": "cpu", "threads": 1,
              "scenario": {"name": "osaka", "pools": list(POOLS), "switch_prob": 0.3},
              "evaluation": {"episodes": 2, "adapt_steps": 1},
              "strategies": {label: {"strategy": label} for label in labels}}
    sign = -1.0 if kind == "regression" else 1.0  # regression stores minus the MSE as the score
    runs, arrays, summary = [], {}, {}
    for label in labels:
        for seed in (0, 1):
            score, A = sign * scores(label, seed), sign * anytime(label)
            pools = np.array(STREAMS[seed], dtype=np.int64)
            # what the online loop records (simulator.online), as the runner summarises it
            record = {"correct": score, "pool": pools, "switch": SWITCH, "eval_batches": [0, 5, 12],
                      "pools": list(POOLS), "columns": list(POOLS), "recovery_window": 3}
            at = {"k0": flat_summary(record, A, 0), "k1": flat_summary(record, A, 1)}
            runs.append({"strategy": label, "seed": seed, "loop": "online", "online": summarize_online(record, A),
                         "metrics": at, "learn_seconds": [1.0, 2.0], "eval_seconds": [0.5],
                         "peak_memory_mb": [100.0], "logs": [], "task_ids": []})
            summary.setdefault(label, []).append(at)
            key = f"{label}/seed{seed}"
            arrays |= {f"{key}/online_correct": score, f"{key}/online_pool": pools, f"{key}/online_switch": SWITCH,
                       f"{key}/anytime_acc": A if kind == "classification" else np.full_like(A, np.nan),
                       f"{key}/anytime_loss": -A if kind == "regression" else 1.0 - A}
            arrays[f"{key}/acc"], arrays[f"{key}/loss"] = arrays[f"{key}/anytime_acc"], arrays[f"{key}/anytime_loss"]
    document = {"experiment": "tiny-osaka", "complete": True, "adapt_steps": 1, "kind": kind,
                "environment": {"device": "cpu", "threads": 1}, "runs": runs,
                "summary": {label: {k: metrics.aggregate([at[k] for at in seeds]) for k in ("k0", "k1")}
                            for label, seeds in summary.items()}, "failures": []}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "results.json").write_text(json.dumps(to_json(document)))
    np.savez(directory / "tensors.npz", **arrays)
    return directory


@pytest.fixture(scope="module")
def online_run(tmp_path_factory):
    """The hand-written run directory with its report (figures drawn) written by the CLI."""
    directory = write_online_run(tmp_path_factory.mktemp("online") / "osaka")
    assert main(["report", str(directory)]) == 0
    return directory


def report_data(page: str) -> dict:
    return json.loads(re.search(r'id="report-data">(.*?)</script>', page, flags=re.S).group(1))


def test_the_per_pool_table_holds_the_hand_computed_means(online_run):
    markdown = (online_run / "report.md").read_text()
    assert "| Strategy | omniglot ↑ | mnist ↑ | fashion-mnist ↑ | all batches ↑ |" in markdown
    # finetune: 0.5 and 0.7 in every pool -> 0.6 ± t(0.975, 1) * |0.7 - 0.5| / 2 = 12.706 * 0.1
    assert "| finetune | 0.600 ± 1.271 | 0.600 ± 1.271 | 0.600 ± 1.271 | 0.600 ± 1.271 |" in markdown
    # protomemory: omniglot 1 in both seeds; mnist and fashion-mnist 2.5/3 and 2/3 -> 0.75 ± 12.706 / 12;
    # all batches 11/12 and 10/12 -> 0.875 ± 12.706 / 24; every cell the best of its column
    assert ("| protomemory | **1.000 ± 0.000** | **0.750 ± 1.059** | **0.750 ± 1.059** | **0.875 ± 0.529** |"
            in markdown)


def test_the_one_line_answers_name_the_right_strategies(online_run):
    markdown = (online_run / "report.md").read_text()
    # recovery AUC: protomemory (0.75 + 1 + 1) / 3 and (0.75 + 0.75 + 1) / 3 -> 0.875 ± 12.706 / 24; finetune 0.6
    assert "**Adapts fastest after a switch (recovery AUC):** `protomemory` 0.875 ± 0.529; next `finetune`" in markdown
    # anytime forgetting: finetune 0.5 - 0.5 = 0; protomemory 0.9 - 0.6 = 0.3
    assert ("**Forgets least (anytime forgetting):** `finetune` 0.000 ± 0.000; next `protomemory` 0.300 ± 0.000 "
            "(the 95% intervals do not overlap).") in markdown
    # omniglot minus the mean of the others: finetune 0; protomemory 1 - 5/6 and 1 - 2/3 -> 0.25
    assert ("**Suffers least out of distribution (drop from omniglot to the other pools):** `finetune` 0.000 ± 0.000; "
            "next `protomemory` 0.250 ± 1.059") in markdown
    assert "**Highest online accuracy:** `protomemory` 0.875 ± 0.529" in markdown


def test_the_online_figures_exist_and_the_task_boundary_sections_do_not(online_run):
    markdown = (online_run / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert links == ["figures/online-accuracy.png", "figures/recovery.png", "figures/anytime.png"]
    for link in links:
        assert (online_run / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (online_run / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    for section in ("summary", "online-accuracy", "recovery", "anytime", "configuration", "environment"):
        assert f'<section id="{section}">' in page
    for task_only in ('<section id="matrix">', '<section id="transfer">', "<th>BWT", "<th>Final acc."):
        assert task_only not in page


def test_the_report_data_holds_the_recovery_curves_and_the_anytime_means(online_run):
    data = report_data((online_run / "index.html").read_text())
    (run,) = data["runs"]
    assert run["loop"] == "online" and run["pools"] == list(POOLS) and run["eval_batches"] == [0, 5, 12]
    finetune, protomemory = run["strategies"]
    assert finetune["recovery_curve"]["mean"] == pytest.approx([0.6, 0.6, 0.6])
    # distance 0: seed 0 (1 + 0.5 + 0.5 + 1) / 4, seed 1 the same; distance 1: 1 and 0.75
    assert protomemory["recovery_curve"]["mean"] == pytest.approx([0.75, 0.875, 1.0])
    assert np.asarray(protomemory["anytime"]["k1"]) == pytest.approx(np.array([[0.2] * 3, [0.9] * 3, [0.6] * 3]))
    assert protomemory["summary"]["forgetting_kK"]["mean"] == pytest.approx(0.3)


def test_a_regression_run_shows_the_mse(tmp_path):
    directory = write_online_run(tmp_path / "sine", kind="regression")
    write_report([directory], directory, draw=False)
    markdown = (directory / "report.md").read_text()
    assert "| Strategy | omniglot ↓ | mnist ↓ | fashion-mnist ↓ | all batches ↓ |" in markdown
    assert "| finetune | **0.600 ± 1.271** |" in markdown  # the MSE itself, not minus it: the lower, the best
    assert "**Lowest online MSE:** `finetune` 0.600 ± 1.271" in markdown
    assert "Not drawn yet" in markdown and not list((directory / "figures").iterdir())


def test_a_comparison_keeps_task_and_online_runs_apart(online_run, digits_run, tmp_path):
    write_report([digits_run, online_run], tmp_path, draw=False)
    page = (tmp_path / "index.html").read_text()
    assert "Final score: strategies x scenarios" in page and "Online runs: key metrics per strategy" in page
    final = re.search(r"Final score: strategies x scenarios.*?</table>", page, flags=re.S).group(0)
    assert "tiny-osaka" not in final and "protomemory" not in final
    assert '<section id="run2-recovery">' in page and '<section id="run1-matrix">' in page


def test_a_missing_online_array_is_a_clean_exit_naming_the_file(tmp_path, capsys):
    directory = write_online_run(tmp_path / "damaged")
    with np.load(directory / "tensors.npz") as tensors:
        arrays = {k: v for k, v in tensors.items() if k != "protomemory/seed1/online_correct"}
    np.savez(directory / "tensors.npz", **arrays)
    assert main(["report", str(directory)]) == 2
    err = capsys.readouterr().err
    assert f"{directory / 'tensors.npz'}: no array 'protomemory/seed1/online_correct'" in err
    assert "Traceback" not in err and not (directory / "index.html").exists()


@pytest.mark.parametrize("online, message", [
    (None, "results.json: damaged (run 1 has no online object)"),
    ({"pools": "omniglot", "columns": ["a"], "eval_batches": [0], "recovery_curve": [1.0]},
     "run 1 has online pools or columns that are not lists of names"),
    ({"pools": list(POOLS), "columns": list(POOLS), "eval_batches": [0, 5, 12], "recovery_curve": []},
     "run 1 has an online recovery_curve that is not a list of numbers"),
])
def test_a_damaged_online_object_is_a_clean_exit_naming_the_file(tmp_path, capsys, online, message):
    directory = write_online_run(tmp_path / "damaged")
    document = json.loads((directory / "results.json").read_text())
    if online is None:
        del document["runs"][1]["online"]
    else:
        document["runs"][1]["online"] = online
    (directory / "results.json").write_text(json.dumps(document))
    assert main(["report", str(directory)]) == 2
    assert message in capsys.readouterr().err


def test_online_arrays_that_break_the_contract_are_named(tmp_path):
    directory = write_online_run(tmp_path / "damaged")
    with np.load(directory / "tensors.npz") as tensors:
        arrays = dict(tensors.items())
    arrays["finetune/seed0/online_pool"] = np.full(12, 3)  # only 3 pools: 0..2
    np.savez(directory / "tensors.npz", **arrays)
    with pytest.raises(ValueError, match=r"online_pool' holds pool indices outside 0\.\.2"):
        load_run(directory)
    arrays["finetune/seed0/online_pool"] = np.zeros(12, dtype=np.int64)
    arrays["finetune/seed0/anytime_acc"] = arrays["finetune/seed0/anytime_acc"][:2]
    np.savez(directory / "tensors.npz", **arrays)
    with pytest.raises(ValueError, match=r"has shape \(2, 3, 2\); expected \(3, 3, 2\)"):
        load_run(directory)


def test_moving_average_is_trailing_and_marks_a_diverged_window_as_missing():
    assert moving_average([1.0, 0.0, 1.0, 1.0], 2).tolist() == [1.0, 0.5, 0.5, 1.0]
    assert moving_average([[1.0, 0.0, 0.5]], 5).tolist() == [[1.0, 0.5, 0.5]]
    smoothed = moving_average([1.0, np.nan, 1.0, 0.0, 0.0], 2)
    assert np.isnan(smoothed[1:3]).all() and smoothed[[0, 3, 4]].tolist() == [1.0, 0.5, 0.0]
