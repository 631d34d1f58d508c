"""Evaluation batched across tasks, and the evaluation schedules of long streams."""

import hashlib

import numpy as np
import pytest
import torch

import scenarios
import strategies
from simulator import metrics
from simulator.config import ConfigError, validate_experiment
from simulator.evaluator import EvalSettings, Evaluator, RowPlan
from simulator.runner import run


def trained(strategy_name, options, stream):
    torch.manual_seed(0)
    strategy = strategies.build(strategy_name, options)
    model_spec = strategy.model_spec(stream.spec)
    strategy.setup(strategies.build_model("mlp", {"hidden": [16]}, model_spec), stream.spec, "cpu")
    strategy.learn(stream[0].training_view())   # score a trained, non-trivial model
    return strategy


def digest(*arrays) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()


@pytest.mark.parametrize("name,params", [
    ("permuted-digits", {"num_tasks": 3}),
    ("split-digits", {"num_tasks": 3, "protocol": "class-incremental"}),
    ("sinusoid", {"num_tasks": 3, "train_functions": 10, "test_functions": 10}),
])
@pytest.mark.parametrize("strategy_name,options", [
    ("finetune", {"epochs": 1, "adapt_lr": 0.05}),
    ("maml", {"meta_iterations": 2, "meta_batch_size": 2}),
    ("protomemory", {"meta_iterations": 2}),
])
def test_tasks_scored_together_equal_tasks_scored_one_by_one(name, params, strategy_name, options):
    """The same cells, one pass over all tasks against one pass per task (today's path before
    batching). The answer to "bit-identical or within tolerance": within float32 rounding in
    general (a pass over more episodes may run other matrix kernels); accuracies equal."""
    stream = scenarios.build(name, params, seed=0)
    if strategy_name == "protomemory" and stream.spec.kind == "regression":
        pytest.skip(f"{strategy_name} does not run on {name}")
    strategy = trained(strategy_name, options, stream)
    evaluator = Evaluator(stream, EvalSettings(episodes=4, adapt_steps=2), seed=0)
    assert len(evaluator.groups) == 1 and evaluator.groups[0].columns == (0, 1, 2)
    together = evaluator.evaluate(strategy)
    strategy.batch_across_tasks = False
    one_by_one = evaluator.evaluate(strategy)
    np.testing.assert_array_equal(together[0], one_by_one[0])
    np.testing.assert_allclose(together[1], one_by_one[1], rtol=1e-5, atol=1e-6)


def test_task_incremental_tasks_keep_their_own_mask():
    """Each task-incremental task masks other outputs: its episodes form a group of their own,
    and the scores equal the per-task ones exactly (the same passes)."""
    stream = scenarios.build("split-digits", {"num_tasks": 3, "protocol": "task-incremental"}, seed=0)
    strategy = trained("finetune", {"epochs": 1}, stream)
    evaluator = Evaluator(stream, EvalSettings(episodes=4, adapt_steps=2), seed=0)
    assert [g.columns for g in evaluator.groups] == [(0,), (1,), (2,)]
    together = evaluator.evaluate(strategy)
    strategy.batch_across_tasks = False
    assert digest(*together) == digest(*evaluator.evaluate(strategy))


def test_passes_of_any_size_give_the_same_scores():
    stream = scenarios.build("permuted-digits", {"num_tasks": 3}, seed=0)
    strategy = trained("finetune", {"epochs": 1}, stream)
    rows = [Evaluator(stream, EvalSettings(episodes=4, adapt_steps=2, chunk=c), seed=0).evaluate(strategy)
            for c in (None, 3, 5, 12)]
    for acc, loss in rows[1:]:
        np.testing.assert_array_equal(acc, rows[0][0])
        np.testing.assert_allclose(loss, rows[0][1], rtol=1e-5, atol=1e-6)


def test_a_column_view_is_the_slice_of_its_group():
    stream = scenarios.build("permuted-digits", {"num_tasks": 3}, seed=0)
    evaluator = Evaluator(stream, EvalSettings(episodes=4), seed=0)
    group = evaluator.groups[0]
    assert torch.equal(evaluator.columns[1].query_x, group.episodes.query_x[4:8])
    picked = group.select([0, 2])    # not consecutive: a copy of columns 0 and 2
    assert torch.equal(picked.support_y, torch.cat([evaluator.columns[0].support_y, evaluator.columns[2].support_y]))


# --- schedules -------------------------------------------------------------------------------
def plans(settings, T=6):
    stream = scenarios.build("permuted-digits", {"num_tasks": T}, seed=0)
    evaluator = Evaluator(stream, EvalSettings(episodes=1, **settings), seed=0)
    return [evaluator.row_plan(i) for i in range(T + 1)]


FULL = {"eval_every": 1, "columns": "all", "adapt_cells": "all"}


def test_the_full_schedule_scores_every_cell():
    every = tuple(range(6))
    assert plans(FULL) == [RowPlan(every, every)] * 7


def test_the_default_schedule_scores_the_tasks_seen_and_the_next_after_every_k():
    assert plans({}) == plans({"columns": "seen+next", "adapt_cells": "all", "eval_every": 1})


def test_rows_every_few_tasks_score_the_tasks_around_the_others():
    got = plans({**FULL, "eval_every": 3})
    every = tuple(range(6))
    assert got[0] == got[3] == got[6] == RowPlan(every, every)
    assert got[1] == RowPlan((0, 1), (0, 1))      # row 1: task 0 just learned, task 1 next
    assert got[5] == RowPlan((4, 5), (4, 5))      # row 5: task 4 learned, task 5 next


def test_seen_and_next_columns():
    got = plans({**FULL, "columns": "seen+next"})
    assert got[0].scored == tuple(range(6))       # the untrained row: forward transfer's reference
    assert got[2] == RowPlan((0, 1, 2), (0, 1, 2))
    assert got[6].scored == tuple(range(6))


def test_adaptation_only_where_a_metric_reads_it():
    got = plans({"columns": "seen+next", "adapt_cells": "metrics"})
    assert got[0] == RowPlan(tuple(range(6)), tuple(range(6)))
    assert got[3] == RowPlan((0, 1, 2, 3), (2, 3))
    assert got[6] == RowPlan(tuple(range(6)), tuple(range(6)))
    with pytest.raises(IndexError, match="row 7 out of range: the stream has 6 tasks"):
        Evaluator(scenarios.build("permuted-digits", {"num_tasks": 6}, seed=0),
                  EvalSettings(episodes=1), seed=0).row_plan(7)


EXACT_UNDER_EVERY_SCHEDULE = ("final_accuracy", "learning_accuracy", "backward_transfer", "forward_transfer",
                              "avalanche_forgetting", "avalanche_forward_transfer", "new_task_adaptation",
                              "recovery_adaptation")


@pytest.fixture(scope="module")
def full_and_scheduled_runs():
    stream = scenarios.build("permuted-digits", {"num_tasks": 5}, seed=0)
    schedules = {"full": FULL, "every 2": {**FULL, "eval_every": 2}, "seen+next": {**FULL, "columns": "seen+next"},
                 "sparse": {"eval_every": 2, "columns": "seen+next", "adapt_cells": "metrics"}}
    out = {}
    for name, schedule in schedules.items():
        torch.manual_seed(0)
        model = strategies.build_model("mlp", {"hidden": [16]}, stream.spec)
        out[name] = run(stream, strategies.build("finetune", {"epochs": 1}), model, seed=0,
                        settings=EvalSettings(episodes=3, adapt_steps=2, **schedule))
    return out


@pytest.mark.parametrize("schedule", ["every 2", "seen+next", "sparse"])
def test_a_schedule_computes_its_cells_as_the_full_one_and_leaves_the_rest_nan(full_and_scheduled_runs, schedule):
    full, part = full_and_scheduled_runs["full"], full_and_scheduled_runs[schedule]
    computed = ~np.isnan(part.loss)
    assert computed.any() and not computed.all()
    np.testing.assert_allclose(part.loss[computed], full.loss[computed], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(part.acc[computed], full.acc[computed])


@pytest.mark.parametrize("schedule", ["every 2", "seen+next", "sparse"])
@pytest.mark.parametrize("k", [0, 2])
def test_metrics_under_a_schedule_are_exact_or_nan(full_and_scheduled_runs, schedule, k):
    full = metrics.summarize(full_and_scheduled_runs["full"].acc, k)
    part = metrics.summarize(full_and_scheduled_runs[schedule].acc, k)
    for name in EXACT_UNDER_EVERY_SCHEDULE:
        assert part[name] == pytest.approx(full[name], abs=1e-9), name
    # the metrics that read every row (forgetting, average incremental accuracy) are exact
    # when every row is scored, NaN otherwise; seen+next loses no cell that a metric reads
    for name in ("forgetting", "average_incremental_accuracy"):
        if schedule == "seen+next":
            assert part[name] == pytest.approx(full[name], abs=1e-9), name
        else:
            assert np.isnan(part[name]), name


def test_a_bad_schedule_is_refused_with_the_field_path():
    raw = {"scenario": {"name": "permuted-digits", "num_tasks": 2}, "strategies": {"finetune": {}},
           "evaluation": {"columns": "upper", "adapt_cells": "some", "eval_every": 0}}
    with pytest.raises(ConfigError) as caught:
        validate_experiment(raw, "x.toml")
    message = str(caught.value)
    for field in ("evaluation.columns", "evaluation.adapt_cells", "evaluation.eval_every"):
        assert field in message
