"""Reptile: the outer update against a plain per-task loop, chunking, learning; the paper's Adam inner loop."""

import dataclasses

import pytest
import torch
from torch.func import functional_call

import scenarios
import strategies
from simulator.evaluator import EvalSettings, Evaluator
from strategies.base import task_loss
from strategies.reptile import inner_batches

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


# -- the paper's inner loop: Adam (beta1 = 0) on mini-batches, moments carried over -------------

def reference_adam_update(model, theta, moments, count, x, y, batches, *, lr, betas, eps, epsilon, kind):
    """The Reptile-Adam meta-update by a plain loop, from the paper's formula (TensorFlow's Adam):
    every episode starts from ``moments``; returns the new theta and the mean final moments."""
    b1, b2 = betas
    adapted, finals = [], []
    for e in range(x.shape[0]):
        fast = {n: t.clone() for n, t in theta.items()}
        m, v = ({n: t.clone() for n, t in moments[0].items()}, {n: t.clone() for n, t in moments[1].items()})
        for s in range(batches.shape[1]):
            rows = batches[e, s]
            leaves = {n: t.clone().requires_grad_() for n, t in fast.items()}
            loss = task_loss(functional_call(model, leaves, (x[e][rows],)), y[e][rows], kind)
            grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
            t = count + s + 1
            for n in fast:
                m[n] = b1 * m[n] + (1 - b1) * grads[n]
                v[n] = b2 * v[n] + (1 - b2) * grads[n] ** 2
                fast[n] = fast[n] - lr * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t) * m[n] / (v[n].sqrt() + eps)
        adapted.append(fast)
        finals.append((m, v))
    new = {n: theta[n] + epsilon * (torch.stack([a[n] for a in adapted]).mean(0) - theta[n]) for n in theta}
    mean = tuple({n: torch.stack([f[i][n] for f in finals]).mean(0) for n in theta} for i in range(2))
    return new, mean


ADAM = {"inner_optimizer": "adam", "inner_lr": 0.01, "inner_steps": 3, "inner_batch_size": 4, "epsilon": 0.7,
        "meta_batch_size": 3, "meta_iterations": 1, "shots": 2, "query": 1}


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_adam_update_matches_the_papers_formula_and_carries_the_moments(chunk_size):
    stream = scenarios.build("split-digits", {"num_tasks": 1}, seed=0)
    s = make_reptile(stream, **ADAM, chunk_size=chunk_size)
    s.model.double()
    s.moments = tuple({n: torch.zeros_like(p) for n, p in s.model.named_parameters()} for _ in range(2))
    for step in range(2):  # the second meta-update starts from the first one's moments and count
        theta = {n: p.detach().clone() for n, p in s.model.named_parameters()}
        moments, count = tuple({n: t.clone() for n, t in m.items()} for m in s.moments), s.adam_count
        replay = torch.Generator()
        replay.set_state(s.generator.get_state())
        eps = stream[0].episodes("train", 3, 2, 1, replay)
        x = torch.cat([eps.support_x, eps.query_x], 1).double()
        y = torch.cat([eps.support_y, eps.query_y], 1)
        batches = inner_batches(3, x.shape[1], 3, 4, replay)
        drawn = s.episodes

        def in_float64(task):
            e = drawn(task)
            return dataclasses.replace(e, support_x=e.support_x.double(), query_x=e.query_x.double())
        s.episodes = in_float64
        s.learn(stream[0].training_view())
        s.episodes = drawn
        expected, mean = reference_adam_update(s.model, theta, moments, count, x, y, batches, lr=0.01,
                                               betas=(0.0, 0.999), eps=1e-8, epsilon=0.7, kind="classification")
        for n, p in s.model.named_parameters():
            assert torch.allclose(p, expected[n], rtol=0, atol=1e-10), n
            assert torch.allclose(s.moments[1][n], mean[1][n], rtol=0, atol=1e-12), n
        assert s.adam_count == count + 3 * 3


def test_inner_batches_are_whole_passes_in_random_orders():
    batches = inner_batches(4, 6, steps=5, batch_size=4, generator=torch.Generator().manual_seed(1))
    flat = batches.reshape(4, -1)  # 20 indices: passes 1-3 of 6 items, then two of the fourth
    for e in range(4):
        for p in range(3):
            assert sorted(flat[e, 6 * p:6 * p + 6].tolist()) == list(range(6))
    assert len({tuple(f[:6].tolist()) for f in flat}) > 1          # each episode its own order


def test_adam_evaluation_and_online_steps_leave_the_moments_alone():
    stream = scenarios.build("split-digits", {"num_tasks": 1}, seed=0)
    s = make_reptile(stream, **{**ADAM, "meta_iterations": 3})
    s.learn(stream[0].training_view())
    before = [{n: t.clone() for n, t in m.items()} for m in s.moments]
    count = s.adam_count
    evaluator = Evaluator(stream, EvalSettings(episodes=4, adapt_steps=3), seed=0)
    acc, _ = evaluator.episode_scores(s, 0)
    assert acc.shape == (4, 4)
    s.observe(*(lambda b: (b.support_x[0], b.support_y[0]))(stream[0].episodes("train", 1, 2, 1, torch.Generator())))
    assert s.online_fast is not None and s.adam_count == count
    for m, b in zip(s.moments, before):
        assert all(torch.equal(m[n], b[n]) for n in b)


def test_adam_state_survives_a_checkpoint():
    stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    a = make_reptile(stream, **{**ADAM, "meta_iterations": 2})
    a.learn(stream[0].training_view())
    b = make_reptile(stream, **{**ADAM, "meta_iterations": 2})
    b.load_state_dict(a.state_dict())
    a.learn(stream[1].training_view())
    b.learn(stream[1].training_view())
    assert a.adam_count == b.adam_count == 2 * 2 * 3 * 3
    for (n, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(p, q), n


def test_epsilon_anneals_linearly_within_a_task_and_never_upwards():
    s = strategies.build("reptile", {"epsilon": 1.0, "epsilon_final": 0.0, "meta_iterations": 4})
    assert [s.epsilon(i) for i in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert strategies.build("reptile", {"epsilon": 0.3}).epsilon(7) == 0.3
    with pytest.raises(ValueError, match="epsilon_final = 0.5 exceeds epsilon = 0.1"):
        strategies.build("reptile", {"epsilon": 0.1, "epsilon_final": 0.5})
