"""The HTML and Markdown reports: self-contained, complete, escaped, reproducible, linked."""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simulator.cli import main
from simulator.report import ReportError, default_out_dir, write_report
from simulator.report.content import MATRIX_COLUMNS, best_flags, format_stat
from simulator.report.data import adaptation_curves, load_run, mean_ci
from report_runs import SCRIPT_LABEL

RUN_SECTIONS = ("summary", "matrix", "stream", "adaptation", "transfer", "configuration", "environment")


def report_files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and (p.name in ("index.html", "report.md") or p.parent.name == "figures")}


def outside_references(page: str) -> list[str]:
    """Every src/href (quoted or not) and CSS url() that is neither an anchor nor a data: URI."""
    refs = re.findall(r"""\b(?:src|href)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", page, flags=re.I)
    values = [double or single or bare for double, single, bare in refs]
    values += re.findall(r"url\(([^)]*)\)", page)
    return [v for v in values if not (v.startswith("#") or v.startswith("data:"))]


def test_html_is_self_contained(digits_run):
    page = (digits_run / "index.html").read_text()
    assert outside_references(page) == []
    assert re.search(r"<link|@import|<iframe|<object|<embed", page, flags=re.I) is None
    assert page.count("data:image/png;base64,") == 6  # 2 heatmaps, stream, adaptation, transfer, training curves
    ids = set(re.findall(r'\bid="([^"]+)"', page))
    assert {href[1:] for href in re.findall(r'href="(#[^"]*)"', page)} <= ids  # anchors resolve


def test_html_contains_every_section_and_the_data(digits_run):
    page = (digits_run / "index.html").read_text()
    for section in RUN_SECTIONS:
        assert f'<section id="{section}">' in page
    for header in ("Final acc. ↑", "Avg. incremental acc. ↑", "Learning acc. ↑", "BWT ↑", "FWT ↑",
                   "Forgetting ↓", "New-task adapt. ↑", "Recovery adapt. ↑", "Learn s / task ↓",
                   "Peak memory MB ↓"):
        assert f"<th>{header}</th>" in page
    assert "± " in page and 'class="num best"' in page
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>',
                                page, flags=re.S).group(1))
    (run,) = data["runs"]
    assert run["kind"] == "classification" and run["num_tasks"] == 3 and run["adapt_steps"] == 2
    assert [s["label"] for s in run["strategies"]] == ["finetune", SCRIPT_LABEL, "joint $x$"]
    assert np.asarray(run["strategies"][0]["matrix"]["k0"]).shape == (4, 3)
    assert set(run["strategies"][0]["adaptation"]) == {"new", "just_learned", "old"}
    assert run["environment"]["device"] == "cpu" and run["config"]["seeds"] == [0, 1]


def test_a_script_label_is_escaped_everywhere(digits_run):
    page = (digits_run / "index.html").read_text()
    assert SCRIPT_LABEL not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert len(re.findall(r"<script", page, flags=re.I)) == 1  # only the JSON data block
    markdown = (digits_run / "report.md").read_text()
    # code blocks and code spans show text literally in every Markdown renderer; elsewhere the
    # label must be entities
    prose = re.sub(r"`+[^`]*`+", "", re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M))
    assert "<script" not in prose and "&lt;script&gt;alert(1)&lt;/script&gt;" in prose


def test_the_same_run_directory_gives_a_byte_identical_report(digits_run, tmp_path):
    # the run wrote its report once; writing it again from the files gives the same bytes
    write_report([digits_run], tmp_path)
    again = report_files(tmp_path)
    assert len(again) == 8 and report_files(digits_run) == again


def test_markdown_links_figures_that_exist(digits_run):
    markdown = (digits_run / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == 6  # with the training curves of the run's logs
    for link in links:
        assert (digits_run / link).is_file() and (digits_run / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (digits_run / "figures").iterdir()) == sorted(Path(l).name for l in links)
    assert "| finetune |" in markdown and "## Adaptation curves" in markdown


def test_regression_reports_show_the_mse_and_which_way_is_better(sine_run):
    page = (sine_run / "index.html").read_text()
    assert "<th>Final MSE ↓</th>" in page and "<th>Final acc. ↑</th>" not in page
    assert "MSE matrix R" in page and "lower is better" in page
    run = load_run(sine_run)
    final = run.strategies[0].score[:, -1, :, 0].mean()  # score = -MSE inside
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', page, flags=re.S).group(1))
    shown = data["runs"][0]["strategies"][0]["summary"]["final_accuracy"]["k0"]["mean"]
    assert shown == pytest.approx(-final) and shown > 0


def test_several_run_directories_give_one_comparison_from_the_cli(digits_run, sine_run, tmp_path, capsys):
    assert main(["report", str(digits_run), str(sine_run), "--out", str(tmp_path)]) == 0
    assert str(tmp_path / "index.html") in capsys.readouterr().out
    page = (tmp_path / "index.html").read_text()
    assert '<section id="comparison">' in page and "Final score: strategies x scenarios" in page
    for n in (1, 2):
        for section in RUN_SECTIONS:
            assert f'<section id="run{n}-{section}">' in page
    assert "tiny-digits (split-digits)" in page and "tiny-sine (sinusoid)" in page
    assert outside_references(page) == []
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (tmp_path / "report.md").read_text())
    assert len(links) == 13 and all((tmp_path / link).is_file() for link in links)


def test_a_report_without_figures_leaves_notes_and_no_stale_files(digits_run, tmp_path):
    shutil.copytree(digits_run / "figures", tmp_path / "figures")
    write_report([digits_run], tmp_path, draw=False)
    page = (tmp_path / "index.html").read_text()
    assert "data:image/png" not in page and "Not drawn yet" in page and "lifelong report RUN_DIR" in page
    assert list((tmp_path / "figures").iterdir()) == []


def test_cli_report_names_a_missing_or_foreign_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path / 'config.json'}: missing" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "results.json").write_text('{"runs": []}')
    assert main(["report", str(tmp_path)]) == 2
    assert "results.json: no adapt_steps, summary" in capsys.readouterr().err


def test_default_output_directories(tmp_path):
    assert default_out_dir([tmp_path / "one"]) == tmp_path / "one"
    assert default_out_dir(["a/x y", "b/z"]) == Path("reports") / "comparison-x_y-z"
    with pytest.raises(ReportError):
        write_report([], tmp_path)


def test_importing_the_simulator_leaves_matplotlib_alone():
    code = ("import sys, simulator, simulator.cli, simulator.report, simulator.report.content; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_best_marks_follow_each_column_direction():
    forgetting, bwt, final = MATRIX_COLUMNS[5], MATRIX_COLUMNS[3], MATRIX_COLUMNS[0]
    values = [(0.2, 0.1), (0.1, 0.1), (math.nan, math.nan)]
    assert best_flags(values, forgetting, regression=False) == [False, True, False]
    assert best_flags(values, bwt, regression=False) == [True, False, False]
    assert best_flags(values, final, regression=False) == [True, False, False]
    assert best_flags(values, final, regression=True) == [False, True, False]  # the MSE: lower is better
    assert best_flags([(0.5, 0.0)], final, regression=False) == [False]  # nothing to compare with
    assert best_flags([(0.5001, 0), (0.5004, 0)], final, regression=False) == [True, True]  # equal as shown


def test_format_and_intervals():
    assert format_stat(0.12345, 0.0456) == "0.123 ± 0.046"
    assert format_stat(0.5, math.nan) == "0.500" and format_stat(math.inf, 0.1) == "n/a"
    assert format_stat(-0.0001, 0.1) == "0.000 ± 0.100"
    mean, ci = mean_ci(np.array([[1.0, np.inf], [3.0, 2.0]]))
    assert mean[0] == 2.0 and math.isnan(mean[1]) and ci[0] == pytest.approx(12.7062, rel=1e-4)


def test_adaptation_curves_pick_the_right_cells():
    score = np.zeros((1, 4, 3, 2))  # one seed, T = 3, K = 1
    for i in range(4):
        for j in range(3):
            score[0, i, j] = 10 * i + j
    curves = adaptation_curves(score)
    assert curves["new"][0, 0] == np.mean([0, 11, 22])           # R[j, j]
    assert curves["just_learned"][0, 0] == np.mean([10, 21, 32])  # R[j+1, j]
    assert curves["old"][0, 0] == np.mean([30, 31])               # R[T, j < T-1]


def test_a_stream_with_recurring_tasks_reports_what_it_can(digits_run, tmp_path):
    # a recurring task adds rows, not columns: (N+1, T, K+1) with N > T; without the runs'
    # task_ids the report cannot tell which row is which task's first encounter
    run_dir = tmp_path / "recurring"
    run_dir.mkdir()
    shutil.copy(digits_run / "config.json", run_dir)
    document = json.loads((digits_run / "results.json").read_text())
    document["runs"] = [r for r in document["runs"] if r["strategy"] == "finetune"]
    for run in document["runs"]:
        del run["task_ids"]  # as in a results.json written before runs recorded their task ids
    document["summary"] = {"finetune": document["summary"]["finetune"]}
    (run_dir / "results.json").write_text(json.dumps(document))
    with np.load(digits_run / "tensors.npz") as tensors:
        arrays = {k: np.concatenate([v, v[-1:]]) for k, v in tensors.items() if k.startswith("finetune/")}
    np.savez(run_dir / "tensors.npz", **arrays)
    write_report([run_dir], run_dir)
    page = (run_dir / "index.html").read_text()
    assert page.count("data:image/png") == 3 and page.count("Needs each task&#x27;s first position") == 2
    for run in document["runs"]:
        run["task_ids"] = [0, 1, 2, 2]  # the last task recurs once
    (run_dir / "results.json").write_text(json.dumps(document))
    assert load_run(run_dir).square


def test_markdown_text_is_literal():
    from simulator.report.markdown import escape

    assert escape("a|b <i>x</i> [l](u) *e* $m$") == "a\\|b &lt;i&gt;x&lt;/i&gt; \\[l\\](u) \\*e\\* \\$m\\$"
