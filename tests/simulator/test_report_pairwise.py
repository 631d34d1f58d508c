"""The pairwise table (A minus B, paired by seed, Student's t) in one run and across run
directories, and ``lifelong report --compare``; every number worked out by hand.

T = 2, K = 1, three seeds; R at k = 0 (k = 1 adds 0.1 to each cell, at most 1):
a: [[.1, .1], [.9, .1], [x, .8]], x = .5, .6, .7 by seed (final .65, .7, .75; forgetting .4, .3, .2);
b: [[.1, .1], [.8, .1], [.6, .7]] every seed (final .65; forgetting .2);
c: [[.1, .1], [.95, .1], [.95, .95]] every seed (final .95; forgetting 0).
"""

import math

import numpy as np
import pytest

from simulator.cli import main
from simulator.report import write_report
from handmade_runs import SCENARIO, report_data, score_tensor, write_run

CI = 4.302652729911275 / math.sqrt(3)  # the 95% half-width per unit of standard deviation, 3 seeds


def tensor(k0) -> np.ndarray:
    k0 = np.asarray(k0, dtype=float)
    return score_tensor(k0, np.minimum(k0 + 0.1, 1.0))


def a(x):
    return tensor([[0.1, 0.1], [0.9, 0.1], [x, 0.8]])


B = tensor([[0.1, 0.1], [0.8, 0.1], [0.6, 0.7]])
C = tensor([[0.1, 0.1], [0.95, 0.1], [0.95, 0.95]])
SCORES = {"a": [a(x) for x in (0.5, 0.6, 0.7)], "b": [B] * 3, "c": [C] * 3}


def rows(markdown: str, title: str) -> list[str]:
    """The body rows of the table titled ``title``."""
    lines = markdown.splitlines()
    start = lines.index(f"**{title}**") + 4
    return lines[start:lines.index("", start)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("pairwise") / "abc", SCORES)


def test_every_pair_with_its_paired_interval(run, tmp_path):
    write_report([run], tmp_path, draw=False)
    markdown = (tmp_path / "report.md").read_text()
    assert "## A versus B: paired differences over seeds" in markdown
    k0 = rows(markdown, "As learned (k = 0): A minus B")
    assert [r.split(" | ")[0] for r in k0] == ["| a − b", "| a − c", "| b − c"]
    # a - b: final 0, .05, .1 (mean .05, sd .05); forgetting .2, .1, 0 (mean .1, sd .1); BWT the opposite
    assert k0[0].startswith(f"| a − b | 3 | +0.050 ± {0.05 * CI:.3f} | +0.100 ± {0.1 * CI:.3f} | "
                            f"-0.100 ± {0.1 * CI:.3f} | 0.000 ± 0.000 |")
    # a - c: final -.3, -.25, -.2: the interval excludes 0, so the cell is bold
    assert k0[1].startswith(f"| a − c | 3 | **-0.250 ± {0.05 * CI:.3f}** | **+0.300 ± {0.1 * CI:.3f}** |")
    kK = rows(markdown, "After 1 adaptation steps (k = 1): A minus B")
    # at k = 1: a's final .75, .8, .85 against b's (.7 + .8) / 2 = .75
    assert kK[0].startswith(f"| a − b | 3 | +0.050 ± {0.05 * CI:.3f} |")
    (pair, *_) = report_data(tmp_path)["runs"][0]["pairwise"]
    assert pair["a"] == "a" and pair["b"] == "b" and pair["k0"]["final_accuracy"]["seeds"] == 3
    assert pair["k0"]["final_accuracy"]["mean"] == pytest.approx(0.05)
    assert pair["k0"]["final_accuracy"]["ci95"] == pytest.approx(0.05 * CI)
    assert set(pair["k1"]) == {"final_accuracy", "forgetting", "backward_transfer", "forward_transfer"}


def test_compare_chooses_the_pairs_and_their_order(run, tmp_path, capsys):
    assert main(["report", str(run), "--out", str(tmp_path), "--compare", "c,a"]) == 0
    markdown = (tmp_path / "report.md").read_text()
    k0 = rows(markdown, "As learned (k = 0): A minus B")
    assert k0 == [k0[0]] and k0[0].startswith(f"| c − a | 3 | **+0.250 ± {0.05 * CI:.3f}** |")
    assert "Every pair of strategies" not in markdown


@pytest.mark.parametrize("option, message", [
    ("a,zzz", "--compare a,zzz: no strategy 'zzz' in these run directories; valid names: a, b, c"),
    ("a", "--compare 'a': give two different strategy names separated by a comma, e.g. --compare maml,finetune"),
    ("a,a", "give two different strategy names"),
])
def test_a_bad_compare_option_is_one_clear_error(run, tmp_path, capsys, option, message):
    assert main(["report", str(run), "--out", str(tmp_path), "--compare", option]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "index.html").exists()


def test_strategies_of_different_run_directories_pair_by_seed(tmp_path, capsys):
    one = write_run(tmp_path / "one", {"finetune": SCORES["a"], "maml": SCORES["b"]})
    # where the data files live does not change the stream: these still pair
    two = write_run(tmp_path / "two", {"finetune": SCORES["b"], "reptile": SCORES["c"]},
                    scenario={**SCENARIO, "data_root": "/elsewhere"})
    other = write_run(tmp_path / "other", {"joint": SCORES["c"]},
                      scenario={**SCENARIO, "protocol": "task-incremental"})
    out = tmp_path / "report"
    write_report([one, two, other], out, draw=False)
    markdown = (out / "report.md").read_text()
    assert "### A versus B across runs: split-digits" in markdown
    assert "Runs 1 (one (split-digits)), 2 (two (split-digits)) have the same scenario" in markdown
    across = rows(markdown, "As learned (k = 0): A minus B")  # the first such table: the comparison's
    assert [r.split(" | ")[0] for r in across] == [
        "| finetune \\[one\\] − finetune \\[two\\]", "| finetune \\[one\\] − reptile",
        "| maml − finetune \\[two\\]", "| maml − reptile"]
    assert across[0].startswith(f"| finetune \\[one\\] − finetune \\[two\\] | 3 | +0.050 ± {0.05 * CI:.3f} |")
    # the answers rank the strategies of both runs together (joint, on another protocol, is not among them)
    line = next(line for line in markdown.splitlines() if line.startswith("- **Highest final accuracy (k = 0):**"))
    assert line.startswith("- **Highest final accuracy (k = 0):** `reptile` 0.950 ± 0.000; next `finetune [one]` "
                           f"0.700 ± {0.05 * CI:.3f}")
    data = report_data(out)
    assert [g["runs"] for g in data["across"]] == [["one", "two"]] and len(data["across"][0]["pairwise"]) == 4

    write_report([one, two], tmp_path / "chosen", draw=False, pairs=[("maml", "reptile")])
    markdown = (tmp_path / "chosen" / "report.md").read_text()
    assert [r.split(" | ")[0] for r in rows(markdown, "As learned (k = 0): A minus B")] == ["| maml − reptile"]
    assert markdown.count("No pair named by --compare is in this run.") == 2

    capsys.readouterr()
    assert main(["report", str(one), str(other), "--out", str(tmp_path / "bad"), "--compare", "maml,joint"]) == 2
    assert ("--compare maml,joint: these two come from runs with different scenarios or evaluation settings"
            in capsys.readouterr().err)
