"""Reptile: the outer update against a plain per-task loop, chunking, learning."""

import pytest
import torch
from torch.func import functional_call

import scenarios
import strategies
from simulator.evaluator import EvalSettings, Evaluator
from strategies.base import task_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def make_reptile(stream, **params):
    s = strategies.build("reptile", params)
    torch.manual_seed(0)
    s.setup(strategies.build_model("mlp", {"hidden": [16]}, stream.spec), stream.spec, "cpu", seed=0)
    return s


def reference_update(model, theta, x, y, *, steps, lr, epsilon, kind):
    """theta + epsilon * (mean over tasks of the SGD-adapted theta - theta), by a plain loop."""
    adapted = []
    for e in range(x.shape[0]):
        fast = {n: t.clone().requires_grad_() for n, t in theta.items()}
        for _ in range(steps):
            loss = task_loss(functional_call(model, fast, (x[e],)), y[e], kind)
            grads = torch.autograd.grad(loss, list(fast.values()))
            fast = {n: (t - lr * g).detach().requires_grad_() for (n, t), g in zip(fast.items(), grads)}
        adapted.append(fast)
    return {n: theta[n] + epsilon * (torch.stack([a[n] for a in adapted]).mean(0) - theta[n]) for n in theta}


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_update_is_theta_plus_epsilon_times_mean_adapted_minus_theta(chunk_size):
    stream = scenarios.build("split-digits", {"num_tasks": 1}, seed=0)
    s = make_reptile(stream, inner_steps=3, inner_lr=0.2, epsilon=0.3, meta_batch_size=5, meta_iterations=1,
                     shots=2, query=1, chunk_size=chunk_size)
    theta = {n: p.detach().clone() for n, p in s.model.named_parameters()}
    # Replay the strategy's own draw of the meta-batch.
    replay = torch.Generator()
    replay.set_state(s.generator.get_state())
    eps = stream[0].episodes("train", 5, 2, 1, replay)
    x, y = torch.cat([eps.support_x, eps.query_x], 1), torch.cat([eps.support_y, eps.query_y], 1)
    s.learn(stream[0].training_view())
    expected = reference_update(s.model, theta, x, y, steps=3, lr=0.2, epsilon=0.3, kind="classification")
    for n, p in s.model.named_parameters():
        assert torch.allclose(p, expected[n], atol=1e-6), n
        assert not torch.allclose(p, theta[n], atol=1e-4), n   # the update did move every tensor


def test_reptile_learns_sinusoids():
    stream = scenarios.build("sinusoid", {"num_tasks": 1, "shots": 10, "train_functions": 200}, seed=0)
    evaluator = Evaluator(stream, EvalSettings(episodes=50, adapt_steps=5), seed=0)
    s = strategies.build("reptile", {"inner_lr": 0.02, "inner_steps": 5, "epsilon": 0.5, "meta_batch_size": 10,
                                     "meta_iterations": 100})
    torch.manual_seed(0)
    s.setup(strategies.build_model("mlp", {"hidden": [40, 40]}, stream.spec), stream.spec, "cpu")
    untrained = evaluator.evaluate(s)[1][0, -1]
    s.learn(stream[0].training_view())
    trained = evaluator.evaluate(s)[1][0]
    assert trained[-1] < 0.7 * untrained
    assert trained[-1] < trained[0]
