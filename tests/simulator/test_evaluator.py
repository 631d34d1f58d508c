"""The batched evaluator against a plain per-episode loop with torch.autograd."""

import copy

import numpy as np
import pytest
import torch

import scenarios
import strategies
from simulator.evaluator import EvalSettings, Evaluator
from strategies.base import task_loss


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
