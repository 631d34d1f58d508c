"""The batched evaluator against a plain per-episode loop with torch.autograd."""

import copy
import json

import numpy as np
import pytest
import torch

from experiments import ONE_EPOCH, experiment_toml, write_experiment  # tests/simulator/experiments.py

import scenarios
import strategies
from simulator.cli import main
from simulator.evaluator import EvalSettings, Evaluator
from strategies.base import DivergenceError, task_loss


def reference_scores(strategy, evaluator, K, lr, kind):
    """Per episode, in Python: copy the model, score the query, take an SGD step on the support.
    Returns accuracy and loss of shape (T, K+1, episodes)."""
    E = len(evaluator.columns[0])
    acc = np.full((evaluator.num_columns, K + 1, E), np.nan)
    loss = np.zeros((evaluator.num_columns, K + 1, E))
    for j, eps in enumerate(evaluator.columns):
        for e in range(len(eps)):
            model = copy.deepcopy(strategy.model)
            for k in range(K + 1):
                with torch.no_grad():
                    out = model(eps.query_x[e])
                    loss[j, k, e] = float(task_loss(out, eps.query_y[e], kind, eps.mask))
                    if kind == "classification":
                        logits = out if eps.mask is None else out.masked_fill(~eps.mask, float("-inf"))
                        acc[j, k, e] = float((logits.argmax(-1) == eps.query_y[e]).double().mean())
                if k < K:
                    step_loss = task_loss(model(eps.support_x[e]), eps.support_y[e], kind, eps.mask)
                    grads = torch.autograd.grad(step_loss, list(model.parameters()))
                    with torch.no_grad():
                        for p, g in zip(model.parameters(), grads):
                            p -= lr * g
    return acc, loss


@pytest.mark.parametrize("name,params", [
    ("split-digits", {"num_tasks": 2, "protocol": "class-incremental"}),
    ("split-digits", {"num_tasks": 2, "protocol": "task-incremental"}),
    ("rotated-digits", {"num_tasks": 2}),
    ("sinusoid", {"num_tasks": 2, "train_functions": 10, "test_functions": 10}),
])
def test_batched_evaluation_equals_per_episode_loop(name, params):
    stream = scenarios.build(name, params, seed=0)
    torch.manual_seed(0)
    strategy = strategies.build("finetune", {"epochs": 1, "lr": 0.01, "adapt_lr": 0.05})
    strategy.setup(strategies.build_model("mlp", {"hidden": [16]}, stream.spec), stream.spec, "cpu")
    strategy.learn(stream[0].training_view())     # evaluate a trained, non-trivial model
    K = 3
    evaluator = Evaluator(stream, EvalSettings(episodes=5, adapt_steps=K), seed=0)
    acc, loss = evaluator.evaluate(strategy)
    ref_acc, ref_loss = reference_scores(strategy, evaluator, K, 0.05, stream.spec.kind)
    np.testing.assert_allclose(loss, ref_loss.mean(-1), rtol=1e-5, atol=1e-6)
    # The scores behind each cell, episode by episode (what confidence intervals are made of).
    for j in range(evaluator.num_columns):
        episode_acc, episode_loss = evaluator.episode_scores(strategy, j)
        assert episode_acc.shape == episode_loss.shape == (K + 1, 5)
        np.testing.assert_allclose(episode_loss, ref_loss[j], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(episode_acc, ref_acc[j])     # NaN for regression, as in the reference
    if stream.spec.kind == "classification":
        np.testing.assert_allclose(acc, ref_acc.mean(-1), atol=1e-9)
    else:
        assert np.isnan(acc).all()


def test_chunked_equals_unchunked():
    stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    torch.manual_seed(0)
    strategy = strategies.build("finetune")
    strategy.setup(strategies.build_model("mlp", {}, stream.spec), stream.spec, "cpu")
    whole = Evaluator(stream, EvalSettings(episodes=6, adapt_steps=2), seed=1).evaluate(strategy)
    chunked = Evaluator(stream, EvalSettings(episodes=6, adapt_steps=2, chunk=4), seed=1).evaluate(strategy)
    np.testing.assert_allclose(whole[0], chunked[0], atol=1e-12)
    np.testing.assert_allclose(whole[1], chunked[1], rtol=1e-6)


def test_episodes_are_fixed_by_the_seed_and_held_out():
    stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    a = Evaluator(stream, EvalSettings(episodes=3), seed=4).columns
    b = Evaluator(stream, EvalSettings(episodes=3), seed=4).columns
    c = Evaluator(stream, EvalSettings(episodes=3), seed=5).columns
    assert torch.equal(a[0].query_x, b[0].query_x) and torch.equal(a[1].support_y, b[1].support_y)
    assert not torch.equal(a[0].query_x, c[0].query_x)
    # every evaluation image comes from the task's test pool, none from its training pool
    train_x = stream[0].train.examples()[0].flatten(1)
    test_x = stream[0].test.examples()[0].flatten(1)
    used = torch.cat([a[0].support_x, a[0].query_x], dim=1).flatten(2).flatten(0, 1)
    assert (torch.cdist(used, test_x).min(dim=1).values == 0).all()
    assert (torch.cdist(used, train_x).min(dim=1).values > 0).all()


def test_zero_adaptation_steps_scores_the_model_as_is():
    stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    torch.manual_seed(0)
    strategy = strategies.build("finetune")
    strategy.setup(strategies.build_model("mlp", {}, stream.spec), stream.spec, "cpu")
    acc0, loss0 = Evaluator(stream, EvalSettings(episodes=3, adapt_steps=0), seed=0).evaluate(strategy)
    acc3, loss3 = Evaluator(stream, EvalSettings(episodes=3, adapt_steps=3), seed=0).evaluate(strategy)
    assert acc0.shape == (2, 1)
    np.testing.assert_array_equal(acc0[:, 0], acc3[:, 0])
    np.testing.assert_array_equal(loss0[:, 0], loss3[:, 0])


def test_episode_scores_refuse_full_test_and_unknown_columns():
    stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    strategy = strategies.build("finetune")
    strategy.setup(strategies.build_model("mlp", {}, stream.spec), stream.spec, "cpu")
    with pytest.raises(ValueError, match="full_test scores each task's whole test pool, not episodes"):
        Evaluator(stream, EvalSettings(episodes=2, full_test=True), seed=0).episode_scores(strategy, 0)
    with pytest.raises(IndexError, match="task column 2 out of range: the stream has 2"):
        Evaluator(stream, EvalSettings(episodes=2), seed=0).episode_scores(strategy, 2)


DIVERGING = [("split-digits", {"num_tasks": 2}),
             ("sinusoid", {"num_tasks": 2, "train_functions": 10, "test_functions": 10})]


def diverging_finetune(stream):
    """finetune whose evaluation steps of size 1e30 overflow the weights at the first step."""
    torch.manual_seed(0)
    strategy = strategies.build("finetune", {"adapt_lr": 1e30})
    strategy.setup(strategies.build_model("mlp", {"hidden": [16]}, stream.spec), stream.spec, "cpu")
    return strategy


# full_test needs common labels: not for the few-shot sinusoid
@pytest.mark.parametrize("name,params,full_test", [(*DIVERGING[0], False), (*DIVERGING[0], True), (*DIVERGING[1], False)])
def test_non_finite_adaptation_is_a_divergence_naming_strategy_task_row_and_step(name, params, full_test):
    stream = scenarios.build(name, params, seed=0)
    evaluator = Evaluator(stream, EvalSettings(episodes=4, adapt_steps=3, full_test=full_test), seed=0)
    task = stream[0].name
    with pytest.raises(DivergenceError, match=rf"^strategy 'finetune' diverged while adapting to task '{task}' "
                                              rf"\(after 2 tasks learned\) at adaptation step 1: outputs are "):
        evaluator.evaluate(diverging_finetune(stream), row=2)
    with pytest.raises(DivergenceError, match=rf"task '{task}' \(before any task was learned\) at adaptation step 1"):
        evaluator.evaluate(diverging_finetune(stream), row=0)
    if not full_test:
        with pytest.raises(DivergenceError, match=rf"task '{stream[1].name}' at adaptation step 1"):
            evaluator.episode_scores(diverging_finetune(stream), 1)


def test_finite_outputs_with_an_overflowing_loss_are_a_divergence_too():
    """Outputs of 1e20 are finite; their squared error is not (float32)."""
    stream = scenarios.build("sinusoid", {"num_tasks": 1, "train_functions": 10, "test_functions": 10}, seed=0)
    strategy = diverging_finetune(stream)
    with torch.no_grad():
        strategy.model[-1].bias.fill_(1e20)
    with pytest.raises(DivergenceError, match=r"on task 'regime 0' \(after 1 task learned\) at adaptation step 0 "
                                              r"\(no adaptation yet\): the query loss is inf"):
        Evaluator(stream, EvalSettings(episodes=2, adapt_steps=1), seed=0).evaluate(strategy, row=1)


def test_a_run_diverging_in_evaluation_fails_with_exit_1_and_reports_no_score(tmp_path, capsys):
    """``lifelong run``: the diverging strategy is a failed run (message on stderr, listed in
    results.json's failures, no tensors); the other strategy's run is kept."""
    experiment = write_experiment(tmp_path, experiment_toml(
        "nan", threads=1, model={"name": "mlp", "hidden": [16]}, evaluation={"episodes": 4, "adapt_steps": 2},
        strategies={"finetune": {"epochs": 1, "adapt_lr": 1e30}, "joint": ONE_EPOCH}), "nan.toml")
    out = tmp_path / "out"
    assert main(["run", str(experiment), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "strategy 'finetune' diverged while adapting to task 'digits 0-1'" in err
    assert "at adaptation step 1: outputs are" in err
    results = json.loads((out / "results.json").read_text())
    assert [f["strategy"] for f in results["failures"]] == ["finetune"]
    assert [r["strategy"] for r in results["runs"]] == ["joint"] and list(results["summary"]) == ["joint"]
    tensors = np.load(out / "tensors.npz").files
    assert tensors and all(key.startswith("joint/") for key in tensors)
