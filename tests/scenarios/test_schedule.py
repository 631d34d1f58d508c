"""Schedules: seeded task order, recurring tasks (one column each), concatenated families."""

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import scenarios
import simulator
import strategies
from scenarios.base import ScenarioError
from scenarios.custom import from_tensors
from scenarios.schedule import concatenate, recurring, shuffled
from simulator import metrics
from simulator.config import load_experiment
from simulator.recurring import reduce_recurring
from simulator.experiment import run_experiment


def blobs(c, seed, n=40):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(2 * c, 2 * c + 2).repeat(n // 2)
    return torch.randn(n, 3, generator=g) + 3 * y[:, None], y


def tiny(num_tasks=3, **options):
    """Tasks of two well-separated Gaussian blobs each: classes 2c and 2c+1 in task c."""
    return from_tensors([(*blobs(c, c), *blobs(c, 100 + c)) for c in range(num_tasks)], **options)


# -- the pure reduction ----------------------------------------------------------------------------

def test_reduce_recurring_keeps_first_learning_rows_and_the_final_row():
    # Stream ids 0, 1, 0, 2: N = 4 positions, T = 3 tasks; rows are 0..4.
    R = np.arange(15, dtype=float).reshape(5, 3)
    assert reduce_recurring(R, [0, 1, 0, 2]).tolist() == [R[0].tolist(), R[1].tolist(), R[2].tolist(), R[4].tolist()]
    # The last new task recurring later: R[T] is the final row.
    assert reduce_recurring(np.arange(8).reshape(4, 2), [0, 1, 1]).tolist() == [[0, 1], [2, 3], [6, 7]]


def test_reduce_recurring_orders_columns_by_first_appearance_and_keeps_trailing_axes():
    score = np.random.default_rng(0).random((4, 3, 2))
    out = reduce_recurring(score, [2, 0, 1])  # columns are sorted ids 0, 1, 2
    assert out.shape == (4, 3, 2)
    assert np.array_equal(out[:, 0], score[:, 2]) and np.array_equal(out[:, 2], score[:, 1])


def test_reduce_recurring_is_the_identity_without_recurrence_and_checks_shapes():
    R = np.random.default_rng(1).random((4, 3))
    assert np.array_equal(reduce_recurring(R, [0, 1, 2]), R)
    with pytest.raises(ValueError, match=r"needs a tensor of shape \(4, 2, ...\)"):
        reduce_recurring(R, [0, 1, 0])


# -- schedules over streams -------------------------------------------------------------------------

def test_recurring_tasks_keep_their_id():
    stream = recurring(tiny(), [0, 1, 0, 2, 1])
    assert [t.id for t in stream] == [0, 1, 0, 2, 1]
    assert stream.num_columns == 3 and stream.spec.num_tasks == 3 and len(stream) == 5
    assert stream[2].train is stream[0].train
    with pytest.raises(ScenarioError, match="sequence index 3 is out of range"):
        recurring(tiny(), [0, 3])


def test_task_order_follows_the_seed():
    names = lambda s: [t.name for t in s]  # noqa: E731
    assert names(shuffled(tiny(6), 0)) == names(shuffled(tiny(6), 0))
    assert names(shuffled(tiny(6), 0)) != names(shuffled(tiny(6), 1))
    assert [t.id for t in shuffled(tiny(6), 1)] == list(range(6))  # ids by first appearance


def test_concatenation_shifts_labels_and_checks_compatibility():
    both = concatenate([tiny(2), tiny(1)])
    assert [t.classes for t in both] == [(0, 1), (2, 3), (4, 5)]
    assert both.spec.output_size == 6 and [t.id for t in both] == [0, 1, 2]
    assert set(both[2].train.examples()[1].tolist()) == {4, 5}
    domain = concatenate([tiny(1, protocol="domain-incremental"), tiny(1, protocol="domain-incremental")])
    assert [t.classes for t in domain] == [(0, 1), (0, 1)]
    with pytest.raises(ScenarioError, match="part 1 .* has protocol 'task-incremental'"):
        concatenate([tiny(1), tiny(1, protocol="task-incremental")])


def test_schedule_family_from_parameters():
    params = {"parts": [{"name": "split-digits", "num_tasks": 2}, {"name": "split-digits", "num_tasks": 3}],
              "sequence": [0, 1, 0, 4], "cycles": 2}
    stream = scenarios.build("schedule", params, seed=0)
    assert [t.id for t in stream] == [0, 1, 0, 2] * 2 and stream.spec.output_size == 20
    assert [t.classes for t in stream][:4] == [(0, 1), (2, 3), (0, 1), (14, 15)]
    seeded = {"parts": [{"name": "split-digits"}], "order": "seeded"}
    assert ([t.name for t in scenarios.build("schedule", seeded, 0)]
            != [t.name for t in scenarios.build("schedule", seeded, 1)])
    with pytest.raises(ValidationError, match=r"parts\[1\]: num_tasks \* classes_per_task = 18 exceeds the 10 digit classes"):
        scenarios.family("schedule").params(parts=[{"name": "split-digits"}, {"name": "split-digits", "num_tasks": 9}])
    with pytest.raises(ValidationError, match=r"parts\[0\].name: unknown scenario 'nope'"):
        scenarios.family("schedule").params(parts=[{"name": "nope"}])


def test_omniglot_alphabets_then_mnist_as_a_shift(data_root):
    params = {"data_root": str(data_root),
              "parts": [{"name": "omniglot-alphabets", "num_tasks": 2},
                        {"name": "split-mnist", "protocol": "few-shot", "num_tasks": 2, "classes_per_task": 5,
                         "train_per_class": 30, "test_per_class": 30}]}
    stream = scenarios.build("schedule", params, seed=0)
    assert [t.name for t in stream][2:] == ["mnist 0-1-2-3-4", "mnist 5-6-7-8-9"]
    assert stream.spec.protocol == "few-shot" and stream.spec.input_shape == (1, 28, 28) and stream.spec.ways == 5
    eps = stream[3].episodes("test", 2, 1, 3, torch.Generator().manual_seed(0))
    assert eps.support_y.tolist() == [[0, 1, 2, 3, 4]] * 2
    with pytest.raises(ScenarioError, match="has protocol 'class-incremental' but part 0"):
        scenarios.build("schedule", {**params, "parts": [params["parts"][0], {"name": "split-mnist"}]}, seed=0)


# -- a recurring task through the runner ------------------------------------------------------------

def test_a_recurring_task_is_evaluated_as_one_column():
    stream = recurring(tiny(2), [0, 1, 0])
    strategy = strategies.build("finetune", {"epochs": 2, "lr": 0.05})
    model = strategies.build_model("mlp", {"hidden": [16]}, stream.spec)
    result = simulator.run(stream, strategy, model, seed=0,
                           settings=simulator.EvalSettings(episodes=3, adapt_steps=1, shots=2, query=3))
    assert result.acc.shape == (4, 2, 2) and not np.isnan(result.acc).any()
    assert result.task_ids == (0, 1, 0)
    summary = result.summary(0)
    R = reduce_recurring(result.acc[:, :, 0], [0, 1, 0])
    assert summary["final_accuracy"] == pytest.approx(result.acc[3, :, 0].mean())
    assert summary["forgetting"] == pytest.approx(metrics.forgetting(R))
    assert summary["learning_accuracy"] == pytest.approx((result.acc[1, 0, 0] + result.acc[3, 1, 0]) / 2)


def test_a_recurring_schedule_runs_from_an_experiment_file(tmp_path):
    exp = tmp_path / "recurring.toml"
    exp.write_text('[scenario]\nname = "schedule"\nsequence = [0, 1, 0]\n'
                   '[[scenario.parts]]\nname = "split-digits"\nnum_tasks = 2\n'
                   '[evaluation]\nepisodes = 2\nadapt_steps = 1\n[strategies.finetune]\nepochs = 1\n')
    outcome = run_experiment(load_experiment(exp), tmp_path / "out", quiet=True, report=False)
    assert not outcome.failures
    with np.load(tmp_path / "out" / "tensors.npz") as tensors:
        assert tensors["finetune/seed0/acc"].shape == (4, 2, 2)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["runs"][0]["metrics"]["k0"]["final_accuracy"] is not None
