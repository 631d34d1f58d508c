"""OML and ANML (strategies/oml.py): one meta-update against a reference written from the
papers' algorithm, the online head, determinism, mid-stream and mid-task resume, the CLI."""

import hashlib
import json
import math
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import strategies
from scenarios.base import StreamSpec, Support

SPEC = StreamSpec(name="tiny", kind="classification", protocol="class-incremental", input_shape=(1, 8, 8),
                  output_size=4, num_tasks=1, shots=2, query=2)


def tiny(name: str, **params):
    """A float64 strategy on conv4 with 2 blocks of 3 filters (8x8 -> 2x2x3 = 12 features)."""
    strategy = strategies.build(name, {"meta_head_size": 6, "inner_lr": 0.3, "meta_lr": 0.01, **params})
    torch.manual_seed(0)
    model = strategies.build_model("conv4", {"filters": 3, "blocks": 2}, SPEC).double()
    strategy.setup(model, SPEC, "cpu", seed=0)
    if strategy.model.gate is not None:
        strategy.model.gate.double()
    return strategy


def reference_features(p, x, gate: bool):
    """The network written out by hand: 2 x (conv3x3 pad 1, maxpool 2, relu), flatten; ANML
    multiplies by sigmoid(NM conv stack, then linear)."""
    def stack(prefix, h):
        for i in (0, 4):
            h = F.relu(F.max_pool2d(F.conv2d(h, p[f"{prefix}.{i}.weight"], p[f"{prefix}.{i}.bias"], padding=1), 2))
        return h.flatten(1)

    z = stack("representation", x)
    if gate:
        g = stack("gate", x) @ p["gate.9.weight"].T + p["gate.9.bias"]
        z = z * torch.sigmoid(g)
    return z


def cross_entropy(logits, y):
    return (torch.logsumexp(logits, dim=-1) - logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)).mean()


def reference_meta_gradient(p, traj_x, traj_y, rand_x, rand_y, alpha, gate):
    """OML's meta-objective (Javed & White 2019, algorithm 1): W_0 = the head; for each
    trajectory example in order, W_j = W_{j-1} - alpha grad_W l(x_j, y_j); meta-loss on the
    trajectory and the random samples with W_k; gradient with respect to every meta-parameter."""
    names = [n for n in p if not n.startswith("head.")]
    leaves = {n: p[n].clone().requires_grad_(True) for n in names}
    W, b = leaves["meta_head.weight"], leaves["meta_head.bias"]
    for j in range(len(traj_x)):
        f = reference_features(leaves, traj_x[j:j + 1], gate)
        loss = cross_entropy(f @ W.T + b, traj_y[j:j + 1])
        gW, gb = torch.autograd.grad(loss, (W, b), create_graph=True)
        W, b = W - alpha * gW, b - alpha * gb
    x, y = torch.cat([traj_x, rand_x]), torch.cat([traj_y, rand_y])
    meta = cross_entropy(reference_features(leaves, x, gate) @ W.T + b, y)
    grads = torch.autograd.grad(meta, [leaves[n] for n in names])
    return meta.detach(), dict(zip(names, grads))


@pytest.mark.parametrize("name", ["oml", "anml"])
def test_one_meta_update_matches_the_papers_algorithm(name, one_thread):
    strategy = tiny(name)
    g = torch.Generator().manual_seed(3)
    traj_x = torch.rand(5, 1, 8, 8, generator=g, dtype=torch.float64)
    traj_y = torch.tensor([2, 2, 2, 5, 5])
    rand_x = torch.rand(4, 1, 8, 8, generator=g, dtype=torch.float64)
    rand_y = torch.tensor([0, 1, 2, 4])
    strategy.reset_rows(torch.tensor([2, 5]))
    before = {n: p.detach().clone() for n, p in strategy.model.named_parameters()}
    loss = strategy.meta_update(traj_x, traj_y, rand_x, rand_y)
    ref_loss, ref_grads = reference_meta_gradient(before, traj_x, traj_y, rand_x, rand_y, 0.3, name == "anml")
    assert abs(float(loss) - float(ref_loss)) < 1e-10
    params = dict(strategy.model.named_parameters())
    assert set(ref_grads) == {n for n in params if not n.startswith("head.")}
    for n, g_ref in ref_grads.items():
        assert g_ref.abs().max() > 0, n  # every meta-parameter is reached (second order for the representation)
        torch.testing.assert_close(params[n].grad, g_ref, rtol=0, atol=1e-10)
        # Adam's first step: p - lr * g / (|g| + eps)
        torch.testing.assert_close(params[n].detach(), before[n] - 0.01 * g_ref / (g_ref.abs() + 1e-8),
                                   rtol=0, atol=1e-10)
    assert params["head.weight"].grad is None  # the online head is not meta-trained
    torch.testing.assert_close(params["head.weight"].detach(), before["head.weight"], rtol=0, atol=0)


def test_second_order_terms_matter(one_thread):
    """Detaching the features inside the inner loop changes the representation's gradient: the
    reference (and so the strategy) differentiates through the inner SGD steps."""
    strategy = tiny("oml")
    p = {n: q.detach().clone() for n, q in strategy.model.named_parameters()}
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(6, 1, 8, 8, generator=g, dtype=torch.float64), torch.tensor([1, 1, 1, 3, 3, 3])
    _, full = reference_meta_gradient(p, x[:4], y[:4], x[4:], y[4:], 0.3, False)
    _, none = reference_meta_gradient(p, x[:4], y[:4], x[4:], y[4:], 1e-30, False)
    assert (full["representation.0.weight"] - none["representation.0.weight"]).abs().max() > 1e-6


def test_reset_rows_redraws_only_the_trajectory_classes():
    strategy = tiny("oml")
    head = strategy.model.meta_head
    before_w = head.weight.detach().clone()
    with torch.no_grad():
        head.bias.fill_(1.0)
    strategy.reset_rows(torch.tensor([1, 4]))
    keep = [0, 2, 3, 5]
    assert torch.equal(head.weight[keep], before_w[keep]) and (head.bias[keep] == 1).all()
    assert (head.bias[[1, 4]] == 0).all() and not torch.equal(head.weight[[1, 4]], before_w[[1, 4]])
    assert abs(head.weight[[1, 4]].std().item() - math.sqrt(2 / 12)) < 0.3


def test_observe_is_sgd_on_the_head_one_example_at_a_time(one_thread):
    strategy = tiny("anml", online_lr=0.5)
    rep = {n: p.detach().clone() for n, p in strategy.model.named_parameters() if not n.startswith("head.")}
    W, b = strategy.model.head.weight.detach().clone(), strategy.model.head.bias.detach().clone()
    x, y = torch.rand(3, 1, 8, 8, dtype=torch.float64), torch.tensor([3, 0, 3])
    p = {n: q.detach() for n, q in strategy.model.named_parameters()}
    for j in range(3):
        f = reference_features(p, x[j:j + 1], True)
        probs = torch.softmax(f @ W.T + b, -1)[0]
        err = probs - F.one_hot(y[j], 4).double()
        W, b = W - 0.5 * torch.outer(err, f[0]), b - 0.5 * err
    strategy.observe(x, y)
    torch.testing.assert_close(strategy.model.head.weight.detach(), W, rtol=0, atol=1e-12)
    torch.testing.assert_close(strategy.model.head.bias.detach(), b, rtol=0, atol=1e-12)
    for n, q in strategy.model.named_parameters():
        if not n.startswith("head."):
            assert torch.equal(q.detach(), rep[n]), n
    # adapt: one pass of the same SGD over each support set, every episode at once
    support = Support(x.unsqueeze(0).repeat(2, 1, 1, 1, 1), y.unsqueeze(0).repeat(2, 1))
    start = strategy.model.head.weight.detach().clone()
    states = list(strategy.adapt(support, 1))
    out = strategy.predict(states[1], x.unsqueeze(0).repeat(2, 1, 1, 1, 1))
    assert out.shape == (2, 3, 4) and torch.equal(out[0], out[1])
    strategy.observe(x, y)
    torch.testing.assert_close(states[1].params["head.weight"][0], strategy.model.head.weight.detach(),
                               rtol=0, atol=1e-12)
    assert not torch.equal(start, strategy.model.head.weight.detach())


def _osaka(data_root):
    import scenarios
    return scenarios.build("osaka", {"ways": 3, "shots": 1, "query": 2, "length": 14, "switch_prob": 0.3,
                                     "data_root": str(data_root)}, seed=0)


class _Stop:
    """Requests a stop after online batch ``batch``, or at the first meta-training iteration."""

    def __init__(self, stop, batch=None, in_task=False):
        self.stop, self.batch, self.in_task = stop, batch, in_task

    def online_start(self, done, length):
        pass

    def online_step(self, done, correct):
        if done == self.batch:
            self.stop.requested = True

    def task_loop(self, loop, task, name):
        if self.in_task:
            self.stop.requested = True

    def step(self, loop):
        pass


@pytest.mark.parametrize("where", ["mid-stream", "mid-meta-training"])
def test_resume_is_bit_identical_and_runs_are_deterministic(tmp_path, data_root, where, one_thread):
    from simulator.evaluator import EvalSettings
    from simulator.online import OnlineSettings, run_online
    from simulator.runner import Interrupted, StopRequest

    stream = _osaka(data_root)
    params = {"meta_iterations": 4, "trajectory_classes": 2, "trajectory_shots": 2, "random_samples": 3}

    def fresh():
        strategy = strategies.build("anml", params)
        torch.manual_seed(0)
        return strategy, strategies.build_model("conv4", {"filters": 4}, strategy.model_spec(stream.spec))

    settings, online = EvalSettings(episodes=2, adapt_steps=1), OnlineSettings(eval_every=5)
    clean = run_online(stream, *fresh(), seed=0, settings=settings, online=online)
    again = run_online(stream, *fresh(), seed=0, settings=settings, online=online)
    digest = lambda r: hashlib.sha256(r.online["correct"].tobytes() + r.acc.tobytes() + r.loss.tobytes()).hexdigest()
    assert digest(clean) == digest(again) and np.isfinite(clean.online["correct"]).all()
    checkpoint, stop = tmp_path / "ckpt.pt", StopRequest()
    hook = _Stop(stop, batch=6) if where == "mid-stream" else _Stop(stop, in_task=True)
    with pytest.raises(Interrupted):
        run_online(stream, *fresh(), seed=0, settings=settings, online=online, checkpoint=checkpoint,
                   identity={"test": 1}, stop=stop, progress=hook)
    resumed = run_online(stream, *fresh(), seed=0, settings=settings, online=online, checkpoint=checkpoint,
                         identity={"test": 1}, resume=True)
    assert digest(resumed) == digest(clean)


def test_cli_run_on_a_tiny_experiment(tmp_path, data_root, one_thread):
    from simulator import cli
    exp = tmp_path / "oml.toml"
    exp.write_text(textwrap.dedent(f"""
        name = "oml-tiny"
        seeds = [0]

        [scenario]
        name = "osaka"
        ways = 3
        shots = 1
        query = 2
        length = 8
        data_root = "{data_root}"

        [model]
        name = "conv4"
        filters = 4

        [evaluation]
        episodes = 2
        adapt_steps = 1

        [online]
        eval_every = 4

        [strategies.oml]
        meta_iterations = 3
        trajectory_classes = 2
        trajectory_shots = 2
        random_samples = 3

        [strategies.anml]
        meta_iterations = 3
        trajectory_classes = 2
        trajectory_shots = 2
        random_samples = 3
    """))
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    runs = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert sorted(r["strategy"] for r in runs) == ["anml", "oml"]
    for run in runs:
        assert run["loop"] == "online" and 0 <= run["online"]["cumulative_accuracy"]["total"] <= 1
