"""The runner and the run directory: determinism, files, rows, and the baselines' behaviour."""

import hashlib
import json

import numpy as np
import pytest
import torch

from experiments import ONE_EPOCH, experiment_raw, split_digits  # tests/simulator/experiments.py

import scenarios
import strategies
from simulator.config import validate_experiment
from simulator.evaluator import EvalSettings
from simulator.rundir import load_tensors
from simulator.experiment import run_experiment
from simulator.runner import run


def tiny_experiment(**overrides):
    """The experiment "tiny" (split-digits in 3 tasks, finetune and joint, seeds 0 and 1), validated;
    ``overrides`` replace its top-level keys."""
    raw = experiment_raw("tiny", seeds=[0, 1], scenario=split_digits(3), model={"name": "mlp", "hidden": [32]},
                         evaluation={"episodes": 4, "adapt_steps": 2},
                         strategies={"finetune": ONE_EPOCH, "joint": ONE_EPOCH})
    return validate_experiment({**raw, **overrides}, "test")


def digest(arrays):
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def test_same_seed_gives_bit_identical_tensors(tmp_path):
    exp = tiny_experiment()
    run_experiment(exp, tmp_path / "a", quiet=True)
    run_experiment(exp, tmp_path / "b", quiet=True)
    a, b = load_tensors(tmp_path / "a"), load_tensors(tmp_path / "b")
    assert sorted(a) == ["finetune/seed0/acc", "finetune/seed0/loss", "finetune/seed1/acc",
                         "finetune/seed1/loss", "joint/seed0/acc", "joint/seed0/loss",
                         "joint/seed1/acc", "joint/seed1/loss"]
    assert digest(a) == digest(b)
    # and the seed matters
    assert a["finetune/seed0/acc"].tobytes() != a["finetune/seed1/acc"].tobytes()


def test_run_directory_files(tmp_path):
    exp = tiny_experiment()
    run_experiment(exp, tmp_path, quiet=True)
    config = json.loads((tmp_path / "config.json").read_text())
    results = json.loads((tmp_path / "results.json").read_text())
    assert config["scenario"] == {"name": "split-digits", "num_tasks": 3, "test_fraction": 0.3, "shots": 5,
                                  "query": 10, "classes_per_task": 2, "protocol": "class-incremental",
                                  "shuffle_classes": False}
    assert results["complete"] is True and results["adapt_steps"] == 2
    env = results["environment"]
    assert env["device"] == "cpu" and env["threads"] == 1 and env["torch"] == torch.__version__
    assert {(r["strategy"], r["seed"]) for r in results["runs"]} == {
        ("finetune", 0), ("finetune", 1), ("joint", 0), ("joint", 1)}
    run0 = results["runs"][0]
    assert set(run0["metrics"]) == {"k0", "k2"}
    assert len(run0["learn_seconds"]) == 3 and len(run0["eval_seconds"]) == 4
    assert len(run0["peak_memory_mb"]) == 3 and all(m > 0 for m in run0["peak_memory_mb"])
    assert results["summary"]["finetune"]["k0"]["final_accuracy"]["n"] == 2
    tensors = load_tensors(tmp_path)
    acc = tensors["finetune/seed0/acc"]
    assert acc.shape == (4, 3, 3)
    assert run0["metrics"]["k0"]["final_accuracy"] == pytest.approx(acc[3, :, 0].mean())
    report = (tmp_path / "report.md").read_text()
    assert "| finetune |" in report and "| joint |" in report


def test_row_zero_is_the_untrained_model():
    stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    settings = EvalSettings(episodes=4, adapt_steps=1)

    class Frozen(strategies.Strategy):
        def learn(self, task):
            return {}

    torch.manual_seed(0)
    model = strategies.build_model("mlp", {}, stream.spec)
    result = run(stream, Frozen(), model, seed=0, settings=settings)
    # a strategy that learns nothing leaves every row equal to row 0
    for i in range(1, 3):
        np.testing.assert_array_equal(result.acc[i], result.acc[0])


def test_run_leaves_global_rng_untouched():
    stream = scenarios.build("split-digits", {"num_tasks": 1}, seed=0)
    model = strategies.build_model("mlp", {}, stream.spec)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    run(stream, strategies.build("finetune", {"epochs": 1}), model, seed=5,
        settings=EvalSettings(episodes=2, adapt_steps=0))
    assert torch.equal(torch.get_rng_state(), before)


def test_finetune_forgets_and_joint_does_not():
    stream = scenarios.build("split-digits", {"num_tasks": 5}, seed=0)
    settings = EvalSettings(episodes=10, adapt_steps=0)
    out = {}
    for name in ("finetune", "joint"):
        torch.manual_seed(0)
        model = strategies.build_model("mlp", {}, stream.spec)
        result = run(stream, strategies.build(name, {"epochs": 5}), model, seed=0, settings=settings)
        out[name] = result.summary(0)
    assert out["finetune"]["learning_accuracy"] > 0.9
    assert out["finetune"]["forgetting"] > 0.8
    assert out["joint"]["forgetting"] < 0.15
    assert out["joint"]["final_accuracy"] > out["finetune"]["final_accuracy"] + 0.5


def test_a_diverging_strategy_is_recorded_and_the_others_complete(tmp_path):
    exp = tiny_experiment(strategies={"boom": {"strategy": "finetune", "lr": 1e30}, "finetune": {"epochs": 1}})
    outcome = run_experiment(exp, tmp_path, quiet=True)
    assert [(f.strategy, f.seed) for f in outcome.failures] == [("boom", 0), ("boom", 1)]
    assert "strategy 'boom' diverged on task 'digits 0-1' by step" in outcome.failures[0].error
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["complete"] is True
    assert {r["strategy"] for r in results["runs"]} == {"finetune"}
    assert [f["strategy"] for f in results["failures"]] == ["boom", "boom"]
    assert set(load_tensors(tmp_path)) == {"finetune/seed0/acc", "finetune/seed0/loss",
                                           "finetune/seed1/acc", "finetune/seed1/loss"}


def test_regression_stream_scores_minus_loss(tmp_path):
    exp = tiny_experiment(scenario={"name": "sinusoid", "num_tasks": 2, "train_functions": 50,
                                    "test_functions": 20}, seeds=[0],
                          strategies={"finetune": {"epochs": 1, "lr": 0.01, "adapt_lr": 0.01}})
    (result,) = run_experiment(exp, tmp_path, quiet=True).results
    assert np.isnan(result.acc).all() and np.isfinite(result.loss).all()
    np.testing.assert_array_equal(result.score, -result.loss)
    assert json.loads((tmp_path / "results.json").read_text())["kind"] == "regression"


def test_recurring_stream_is_summarised_on_its_reduced_view(tmp_path):
    from simulator.recurring import reduce_recurring

    exp = tiny_experiment(scenario={"name": "schedule", "sequence": [0, 1, 0],
                                    "parts": [{"name": "split-digits", "num_tasks": 2}]},
                          seeds=[0], strategies={"finetune": {"epochs": 1}})
    (result,) = run_experiment(exp, tmp_path).results
    assert result.acc.shape == (4, 2, 3) and result.task_ids == (0, 1, 0)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["runs"][0]["task_ids"] == [0, 1, 0]
    reduced = reduce_recurring(result.acc, [0, 1, 0])[:, :, 0]
    assert results["runs"][0]["metrics"]["k0"]["final_accuracy"] == pytest.approx(reduced[2].mean())
    assert (tmp_path / "index.html").exists() and (tmp_path / "figures" / "stream.png").exists()
