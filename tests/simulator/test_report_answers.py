"""The report's one-line answers at k = 0 and k = K, with the metrics that mean nothing for a
strategy named instead of ranked; every number worked out by hand from tiny tensors.

Four strategies, T = 2 tasks, K = 1, three seeds (R[i, j] at k = 0 | k = 1):

- finetune: [[.1, .1], [.9, .1], [x, .8]] | each cell + 0.1 (at most 1), x = .5, .6, .7 by seed;
- maml, at chance (0.1) right after learning at k = 0: [[.1, .1], [.1, .2], [.1, .1]] |
  [[.5, .5], [.9, .6], [.7, .9]];
- protomemory (memory only at k = 0: nothing for an unlearned task): [[0, 0], [.9, 0], [.8, .9]] |
  [[.5, .5], [.95, .6], [.9, .95]];
- matching (no prediction at k = 0: every row the same): [[.5, .5]] * 3 | [[.5, .5], [.9, .5], [.8, .9]].
"""

import math

import numpy as np
import pytest

from simulator.report import write_report
from simulator.report.compare import paired_difference, skipped, step_summaries, strategy_kind
from simulator.report.data import load_run
from handmade_runs import report_data, score_tensor, write_run

T975_2 = 4.302652729911275  # Student's t, 0.975 quantile, 2 degrees of freedom
NO_PREDICTION = ("no prediction at k = 0: its scores are the same before and after learning every task, in every "
                 "seed (it predicts only from a support set)")


def finetune(x):
    k0 = np.array([[0.1, 0.1], [0.9, 0.1], [x, 0.8]])
    return score_tensor(k0, np.minimum(k0 + 0.1, 1.0))


SCORES = {
    "finetune": [finetune(x) for x in (0.5, 0.6, 0.7)],
    "maml": [score_tensor([[0.1, 0.1], [0.1, 0.2], [0.1, 0.1]], [[0.5, 0.5], [0.9, 0.6], [0.7, 0.9]])] * 3,
    "protomemory": [score_tensor([[0, 0], [0.9, 0], [0.8, 0.9]], [[0.5, 0.5], [0.95, 0.6], [0.9, 0.95]])] * 3,
    "matching": [score_tensor([[0.5, 0.5]] * 3, [[0.5, 0.5], [0.9, 0.5], [0.8, 0.9]])] * 3,
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = write_run(tmp_path_factory.mktemp("answers") / "four", SCORES)
    write_report([run], run, draw=False)
    return run


def answer(markdown: str, title: str) -> str:
    (line,) = [line for line in markdown.splitlines() if line.startswith(f"- **{title}:**")]
    return line


def test_answers_at_k0_rank_only_what_means_something(report):
    markdown = (report / "report.md").read_text()
    assert "**As learned (k = 0):**" in markdown and "**After adaptation (k = 1:" in markdown
    # final accuracy: finetune (x + .8) / 2 = .65, .7, .75; protomemory .85; matching has no prediction
    assert answer(markdown, "Highest final accuracy (k = 0)") == (
        "- **Highest final accuracy (k = 0):** `protomemory` 0.850 ± 0.000; next `finetune` 0.700 ± 0.124 (paired "
        "difference +0.150 ± 0.124 over 3 seeds: a clear difference). Not ranked: `matching`, " + NO_PREDICTION + ".")
    # forgetting: finetune .9 - x = .4, .3, .2; protomemory .1; maml learned nothing (0.1, its untrained score)
    assert answer(markdown, "Least forgetting (k = 0)") == (
        "- **Least forgetting (k = 0):** `protomemory` 0.100 ± 0.000; next `finetune` 0.300 ± 0.248 (paired "
        "difference -0.200 ± 0.248 over 3 seeds, whose interval includes 0: not a clear difference). Not ranked: "
        "`maml`, nothing to forget at k = 0: right after learning each task its accuracy (0.100) is no better than "
        "the untrained model's at k = 0 (0.100, chance) within the 95% interval over seeds and tasks; `matching`, "
        + NO_PREDICTION + ".")
    # FWT = R[1, 1] - R[0, 1]: maml .1, finetune 0; protomemory's is zero by construction
    line = answer(markdown, "Most forward transfer (k = 0)")
    assert line.startswith("- **Most forward transfer (k = 0):** `maml` 0.100 ± 0.000; next `finetune` 0.000 ± "
                           "0.000 (paired difference +0.100 ± 0.000 over 3 seeds: a clear difference). Not ranked: "
                           "`protomemory`, zero by construction at k = 0: without a support set it predicts only "
                           "the classes in its memory of learned tasks")


def test_answers_after_adaptation_rank_every_strategy(report):
    markdown = (report / "report.md").read_text()
    # final at k = 1: finetune .75/.8/.85, maml .8, protomemory .925, matching .85
    assert answer(markdown, "Highest final accuracy (k = 1)") == (
        "- **Highest final accuracy (k = 1):** `protomemory` 0.925 ± 0.000; next `matching` 0.850 ± 0.000 (paired "
        "difference +0.075 ± 0.000 over 3 seeds: a clear difference).")
    # forgetting at k = 1: protomemory .05, matching .1, maml .2 (learned .9 now), finetune .3
    line = answer(markdown, "Least forgetting (k = 1)")
    assert line.startswith("- **Least forgetting (k = 1):** `protomemory` 0.050 ± 0.000; next `matching` 0.100")
    assert "Not ranked" not in line
    # steps to 90% of the k = 1 score on R[j, j]: matching is there at k = 0, the others need one step
    assert answer(markdown, "Fastest adaptation to new tasks (steps to 90% of the k = 1 score)") == (
        "- **Fastest adaptation to new tasks (steps to 90% of the k = 1 score):** `matching` 0.000 ± 0.000; next "
        "`finetune` 1.000 ± 0.000 (paired difference -1.000 ± 0.000 over 3 seeds: a clear difference).")


def test_skipped_values_are_marked_in_the_tables_and_never_bold(report):
    markdown = (report / "report.md").read_text()
    (matching,) = [line for line in markdown.splitlines() if line.startswith("| matching | 0.500")]
    cells = matching.split(" | ")
    assert cells[1:7] == ["0.500 ± 0.000 †", "0.500 ± 0.000 †", "0.500 ± 0.000 †", "0.000 ± 0.000 †",
                          "0.000 ± 0.000 †", "0.000 ± 0.000 †"]
    # matching's 0 forgetting would be the column's best; skipped, protomemory's 0.1 is
    (protomemory,) = [line for line in markdown.splitlines() if line.startswith("| protomemory | **0.850")]
    assert "**0.100 ± 0.000**" in protomemory and "0.000 ± 0.000 †" in protomemory  # its FWT at k = 0
    assert "†: not ranked, as the metric means nothing for that strategy at this k" in markdown
    data = report_data(report)["runs"][0]
    assert set(data["skipped"]["matching"]["k0"]) == {"final_accuracy", "average_incremental_accuracy",
                                                      "learning_accuracy", "backward_transfer", "forgetting",
                                                      "forward_transfer"}
    assert "k1" not in data["skipped"]["matching"] and set(data["skipped"]["maml"]["k0"]) == {
        "forgetting", "backward_transfer"}
    assert data["strategies"][0]["summary"]["steps_new"]["k0"] == {"mean": 1.0, "ci95": 0.0}


def test_paired_difference_uses_the_common_seeds_only():
    mean, ci, n = paired_difference({0: 0.9, 1: 0.8, 2: 0.7, 5: 0.0}, {0: 0.5, 1: 0.5, 2: 0.5, 3: 0.1})
    assert n == 3 and mean == pytest.approx(0.3) and ci == pytest.approx(T975_2 * 0.1 / math.sqrt(3))
    mean, ci, n = paired_difference({0: 0.9}, {0: 0.5, 1: 0.4})
    assert (n, round(mean, 12)) == (1, 0.4) and math.isnan(ci)
    assert paired_difference({0: 1.0}, {1: 1.0})[2] == 0
    mean, ci, n = paired_difference({0: math.nan, 1: 1.0}, {0: 0.0, 1: 0.0})  # a diverged seed: nothing hidden
    assert n == 2 and math.isnan(mean) and math.isnan(ci)


def test_step_summaries_on_hand_made_cells():
    score = np.zeros((3, 2, 3))  # T = 2, K = 2
    score[0, 0] = [0.0, 0.5, 1.0]   # reaches 0.9 at k = 2
    score[1, 1] = [0.95, 1.0, 1.0]  # already at k = 0
    score[2, 0] = [0.2, 0.9, 1.0]   # k = 1
    assert step_summaries(score) == {"steps_new": 1.0, "steps_old": 1.0}
    score[2, 0] = [-0.5, -0.4, -0.3]  # minus a loss: the threshold 0.9 * -0.3 lies above every value
    assert math.isnan(step_summaries(score)["steps_old"])


def test_the_rules_on_single_tensors():
    learned = score_tensor([[0.1, 0.1], [0.9, 0.1], [0.5, 0.8]], [[0.1, 0.1], [0.9, 0.1], [0.5, 0.8]])[None]
    assert skipped(learned, 0, None, False) == {}
    assert set(skipped(learned, 0, "memory", False)) == {"forward_transfer"}
    assert skipped(learned, 1, "memory", False) == {}  # with a support set, the memory rule does not apply
    same = score_tensor([[0.5, 0.5], [0.5, np.nan], [0.5, 0.5]], [[0.5, 0.5], [0.9, 0.5], [0.8, 0.9]])[None]
    assert "final_accuracy" in skipped(same, 0, None, False)  # equal wherever scored: no prediction at k = 0
    assert "final_accuracy" not in skipped(same, 1, None, False)
    regression = skipped(-learned, 0, None, True)
    assert set(regression) == {"steps_new", "steps_old", "forgetting", "backward_transfer"}
    assert regression["steps_new"].startswith("steps to threshold assume non-negative scores")
    assert regression["forgetting"].startswith("nothing to forget at k = 0: right after learning each task its "
                                               "MSE (0.850) is no better than the untrained model's at k = 0 "
                                               "(0.100, chance)")


def test_which_strategies_predict_from_memory_only_at_k0(report):
    run = load_run(report)
    assert [strategy_kind(run, label) for label in SCORES] == [None, None, "memory", "memory"]
    # SNAIL and LEO condition every state, k = 0 included, on the episode's support set
    run.config["strategies"]["maml"]["strategy"] = "snail"
    run.config["strategies"]["finetune"]["strategy"] = "leo"
    assert strategy_kind(run, "maml") is None and strategy_kind(run, "finetune") is None
    run.config["strategies"]["maml"]["strategy"] = "mypackage.mine:Strategy"  # never imported by a report
    assert strategy_kind(run, "maml") is None


def test_a_regression_run_ranks_the_mse_and_skips_steps(tmp_path):
    mse = lambda *rows: -np.array(rows)  # noqa: E731 - scores are minus the MSE
    scores = {"a": [score_tensor(mse([1, 1], [0.2, 1], [0.5, 0.3]), mse([1, 1], [0.1, 0.9], [0.4, 0.2]))] * 2,
              "b": [score_tensor(mse([1, 1], [0.2, 0.8], [0.3, 0.2]), mse([1, 1], [0.1, 0.7], [0.2, 0.1]))] * 2}
    run = write_run(tmp_path / "sine", scores, kind="regression")
    write_report([run], run, draw=False)
    markdown = (run / "report.md").read_text()
    assert answer(markdown, "Lowest final MSE (k = 0)").startswith(
        "- **Lowest final MSE (k = 0):** `b` 0.250 ± 0.000; next `a` 0.400 ± 0.000 (paired difference -0.150 ± "
        "0.000 over 2 seeds: a clear difference)")
    line = answer(markdown, "Fastest adaptation to new tasks (steps to 90% of the k = 1 score)")
    assert "no strategy to rank. Not ranked: `a`, steps to threshold assume non-negative scores" in line


def test_a_real_run_answers_at_k0_and_kK_and_pairs_its_strategies(digits_run):
    """End to end: the report `lifelong run` wrote for a tiny split-digits run (K = 2, 2 seeds)."""
    import json

    from report_runs import SCRIPT_LABEL

    markdown = (digits_run / "report.md").read_text()
    assert "**As learned (k = 0):**" in markdown and "**After adaptation (k = 2:" in markdown
    assert "- **Highest final accuracy (k = 2):**" in markdown
    assert "## A versus B: paired differences over seeds" in markdown
    pairs = report_data(digits_run)["runs"][0]["pairwise"]
    assert [(p["a"], p["b"]) for p in pairs] == [("finetune", SCRIPT_LABEL), ("finetune", "joint $x$"),
                                                 (SCRIPT_LABEL, "joint $x$")]
    # the paired difference is that of the per-seed metrics results.json holds
    runs = json.loads((digits_run / "results.json").read_text())["runs"]
    final = {(r["strategy"], r["seed"]): r["metrics"]["k0"]["final_accuracy"] for r in runs}
    diffs = [final["finetune", seed] - final["joint $x$", seed] for seed in (0, 1)]
    cell = pairs[1]["k0"]["final_accuracy"]
    assert cell["seeds"] == 2 and cell["mean"] == pytest.approx(np.mean(diffs))
    assert cell["ci95"] == pytest.approx(12.706204736174698 * np.std(diffs, ddof=1) / math.sqrt(2))


def test_a_missing_value_is_said_and_one_task_has_no_transfer_answers(tmp_path):
    # T = 1: forgetting, BWT, FWT and recovery need two tasks; b's k = 1 cell was not scored (NaN)
    scores = {"a": [score_tensor([[0.1], [0.9]], [[0.5], [0.95]])] * 2,
              "b": [score_tensor([[0.1], [0.8]], [[0.5], [np.nan]])] * 2}
    run = write_run(tmp_path / "one-task", scores)
    write_report([run], run, draw=False)
    markdown = (run / "report.md").read_text()
    assert answer(markdown, "Highest final accuracy (k = 1)") == (
        "- **Highest final accuracy (k = 1):** only `a` has a meaningful value: 0.950 ± 0.000. No value (a score it "
        "needs was not evaluated at this k, or is not finite): `b`.")
    assert "Least forgetting" not in markdown and "Most forward transfer" not in markdown
    assert "Best recovery of old tasks" not in markdown and "- **Best few-shot adaptation" in markdown


def test_cells_left_out_by_the_evaluation_are_not_called_a_divergence(tmp_path):
    import json

    nan = score_tensor([[0.1, 0.1], [0.9, np.nan], [0.5, 0.8]], [[0.1, 0.1], [0.9, 0.1], [0.5, 0.8]])
    run = write_run(tmp_path / "sparse", {"a": [nan], "b": [finetune(0.5)]})
    write_report([run], run, draw=False)
    markdown = (run / "report.md").read_text()
    assert "> **Warning:** Some scores are not finite (an adaptation or a training step diverged), over all seeds: " \
           "a: 1 of 12 cells of R\\[i, j, k\\]" in markdown
    config = json.loads((run / "config.json").read_text())
    config["evaluation"].update(columns="seen+next", adapt_cells="metrics", eval_every=1)
    (run / "config.json").write_text(json.dumps(config))
    write_report([run], run, draw=False)
    markdown = (run / "report.md").read_text()
    assert "Some scores are not finite" not in markdown
    assert ("Cells of R\\[i, j, k\\] not evaluated (evaluation.eval\\_every = 1, columns = seen+next, adapt\\_cells = "
            "metrics), over all seeds: a: 1 of 12. A metric that reads one of them shows as n/a.") in markdown


def test_a_memory_strategy_keeps_its_forward_transfer_on_a_domain_incremental_stream(tmp_path):
    # rotated or permuted tasks share their classes: the memory of task 0 predicts task 1 at k = 0
    memory = score_tensor([[0, 0], [0.9, 0.6], [0.8, 0.9]], [[0.5, 0.5], [0.95, 0.6], [0.9, 0.95]])
    scores = {"protomemory": [memory] * 3, "finetune": SCORES["finetune"]}
    run = write_run(tmp_path / "rotated", scores, scenario={"name": "rotated-digits", "num_tasks": 2})
    write_report([run], run, draw=False)
    assert answer((run / "report.md").read_text(), "Most forward transfer (k = 0)") == (
        "- **Most forward transfer (k = 0):** `protomemory` 0.600 ± 0.000; next `finetune` 0.000 ± 0.000 (paired "
        "difference +0.600 ± 0.000 over 3 seeds: a clear difference).")
