"""La-MAML (strategies/lamaml.py): one step against the paper's Algorithm 1 and avalanche-lib, the
online plumbing, mid-stream resume and a CLI run. (Generic determinism and state_dict round trips through
weights_only checkpoints: tests/test_conformance.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import strategies
from scenarios.base import StreamSpec
from strategies.backbones import MLP

SPEC = StreamSpec("toy", "classification", "domain-incremental", (4,), 3, num_tasks=1, shots=1, query=1)


def _data(seed=0, k=5, m=4):
    g = torch.Generator().manual_seed(seed)
    x, mx = torch.rand(k, 4, generator=g, dtype=torch.float64), torch.rand(m, 4, generator=g, dtype=torch.float64)
    y, my = torch.randint(3, (k,), generator=g), torch.randint(3, (m,), generator=g)
    return x, y, torch.cat([mx, x]), torch.cat([my, y])


def _strategy(**params):
    s = strategies.build("lamaml", params)
    torch.manual_seed(0)
    s.setup(MLP((4,), 3, hidden=[6]).double(), SPEC, "cpu", seed=0)
    return s


def reference_step(weights, alpha, x, y, meta_x, meta_y, *, variant, alpha_lr, weight_lr, meta_loss, clip,
                   first_order=False):
    """Algorithm 1 of Gupta et al. (2020) written out for a 1-hidden-layer ReLU MLP:
    theta_{n+1} = theta_n - alpha * grad l(theta_n, b[n]) for each item; then
    alpha <- alpha - eta dL/dalpha and theta_0 <- theta_0 - max(0, alpha) dL/dtheta_0 (async),
    or theta_0 <- theta_0 - weight_lr dL/dtheta_0 (sync: rates too; fixed: rates constant)."""
    theta0 = [w.clone().requires_grad_() for w in weights]
    rates = [a.clone().requires_grad_(variant != "fixed") for a in alpha]

    def net(w, inputs):
        return torch.relu(inputs @ w[0].T + w[1]) @ w[2].T + w[3]

    def ce(logits, targets):
        return -logits.log_softmax(1)[torch.arange(len(targets)), targets].mean()

    theta, losses = theta0, []
    for n in range(len(x)):
        g = torch.autograd.grad(ce(net(theta, x[n:n + 1]), y[n:n + 1]), theta, create_graph=not first_order)
        theta = [t - a * gi for t, a, gi in zip(theta, rates, g)]
        losses.append(ce(net(theta, meta_x), meta_y))
    L = losses[-1] if meta_loss == "final" else sum(losses) / len(losses)

    def clipped(grads):
        if clip is None:
            return grads
        norm = torch.sqrt(sum((gi ** 2).sum() for gi in grads))
        return [gi * min(1.0, clip / (norm.item() + 1e-6)) for gi in grads]

    g_theta = clipped(torch.autograd.grad(L, theta0, retain_graph=True))
    new_alpha = alpha
    if variant != "fixed":
        new_alpha = [a - alpha_lr * gi for a, gi in zip(alpha, clipped(torch.autograd.grad(L, rates)))]
    if variant == "async":
        new_theta = [w - torch.clamp(a, min=0) * gi for w, a, gi in zip(weights, new_alpha, g_theta)]
    else:
        new_theta = [w - weight_lr * gi for w, gi in zip(weights, g_theta)]
    return [t.detach() for t in new_theta], [a.detach() for a in new_alpha], L.detach()


VARIANTS = {"async": {}, "sync": {"sync": True}, "fixed": {"fixed_lr": True}}


@pytest.mark.parametrize("variant", ["async", "sync", "fixed"])
@pytest.mark.parametrize("meta_loss, clip, first_order", [("final", None, False), ("trajectory", 0.05, False),
                                                          ("trajectory", None, True)])
def test_one_step_matches_algorithm_1(variant, meta_loss, clip, first_order):
    s = _strategy(alpha_init=0.2, alpha_lr=0.3, weight_lr=0.1, meta_loss=meta_loss, grad_clip_norm=clip,
                  first_order=first_order, **VARIANTS[variant])
    weights = [p.detach().clone() for p in s.model.parameters()]
    alpha = [a.clone() for a in s.alpha.values()]
    x, y, mx, my = _data()
    new_theta, new_alpha, L = reference_step(weights, alpha, x, y, mx, my, variant=variant, alpha_lr=0.3,
                                             weight_lr=0.1, meta_loss=meta_loss, clip=clip, first_order=first_order)
    meta = s.meta_step(x, y, mx, my)
    assert abs(meta.item() - L.item()) < 1e-12
    for p, w, w0 in zip(s.model.parameters(), new_theta, weights):
        assert not torch.equal(w, w0)  # the step moved every weight
        torch.testing.assert_close(p.detach(), w, atol=1e-10, rtol=0)
    for a, r, a0 in zip(s.alpha.values(), new_alpha, alpha):
        torch.testing.assert_close(a, r, atol=1e-10, rtol=0)
        assert torch.equal(a, a0) == (variant == "fixed")


def test_observe_samples_memory_before_adding_the_batch_and_glances_reshuffle():
    s, manual = _strategy(glances=3, replay_batch_size=3, memory_size=4), _strategy(glances=3, replay_batch_size=3,
                                                                                   memory_size=4)
    x, y, _, _ = _data(k=5)
    s.observe(x, y)
    gen, memory = manual.generator, manual.memory
    for glance in range(3):
        order = torch.randperm(5, generator=gen)
        if glance == 0:  # an empty memory: the meta-batch is the batch
            meta_x, meta_y = x[order], y[order]
            memory.add(x[order], y[order])
        else:
            mx, my = memory.sample(3)
            assert len(mx) == 3
            meta_x, meta_y = torch.cat([mx, x[order]]), torch.cat([my, y[order]])
        manual.meta_step(x[order], y[order], meta_x, meta_y)
    for p, q in zip(s.model.parameters(), manual.model.parameters()):
        assert torch.equal(p, q)
    assert s.memory.seen == 5 and len(s.memory) == 4


@pytest.mark.parametrize("sync", [False, True])
def test_one_step_matches_avalanche_lamaml_v2(sync):
    """avalanche-lib's step with n_inner_updates = batch size (one item per inner step), no glance,
    its replay sample fixed; its inner gradient clamp is checked to be inactive on this data."""
    from avalanche.training.supervised.lamaml_v2 import LaMAML as AvalancheLaMAML

    from strategies.avalanche_runtime import TaskMaskedModel, quiet, silent_evaluator

    s = _strategy(glances=1, alpha_init=0.15, alpha_lr=0.3, weight_lr=0.1, grad_clip_norm=2.0, sync=sync)
    x, y, mx, my = _data(k=6, m=4)
    bx = mx[:4]
    # our glance shuffles the batch: hand avalanche the same order
    order = torch.randperm(6, generator=torch.Generator().manual_seed(0).set_state(s.generator.get_state()))
    net = MLP((4,), 3, hidden=[6]).double()
    wrapped = TaskMaskedModel(net, 3, masked=False)
    with quiet():
        av = AvalancheLaMAML(model=wrapped, optimizer=torch.optim.SGD(wrapped.parameters(), lr=0.1),
                             n_inner_updates=6, second_order=True, grad_clip_norm=2.0, learn_lr=True, lr_alpha=0.3,
                             sync_update=sync, alpha_init=0.15, max_buffer_size=200, buffer_mb_size=4,
                             train_mb_size=6, device="cpu", evaluator=silent_evaluator())
    net.load_state_dict(s.model.state_dict())  # avalanche re-initialised its model when built
    for n, p in av.model.named_parameters():
        av.alpha_params[n.replace(".", "_")] = torch.nn.Parameter(torch.full_like(p, 0.15))
    av.optimizer_alpha = torch.optim.SGD(av.alpha_params.parameters(), lr=0.3)
    av.clock.train_exp_counter = 1  # replay on
    av.buffer.get_buffer_batch = lambda: (bx, my[:4], torch.zeros(4, dtype=torch.long))
    av.mbatch = [x[order], y[order], torch.zeros(6, dtype=torch.long)]
    # ours: the memory holds exactly the 4 replayed items and replays all of them
    s.memory.add(bx, my[:4])
    s.config = s.config.model_copy(update={"replay_batch_size": 4})
    for i in range(6):  # avalanche clamps inner gradient elements at 2.0: make sure that is a no-op here
        loss = F.cross_entropy(net(x[order][i:i + 1]), y[order][i:i + 1])
        assert max(g.abs().max() for g in torch.autograd.grad(loss, list(net.parameters()))) < 2.0
    av._inner_updates()
    av._outer_update()
    s.observe(x, y)
    for p, q in zip(s.model.parameters(), net.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), atol=1e-10, rtol=0)
    for a, b in zip(s.alpha.values(), av.alpha_params.parameters()):
        torch.testing.assert_close(a, b.detach(), atol=1e-10, rtol=0)


def _online_run(tmp_path=None, stop=None, progress=None, resume=False):
    import scenarios
    from simulator.evaluator import EvalSettings
    from simulator.online import OnlineSettings, run_online

    stream = scenarios.build("online", {"source": "split-digits", "source_params": {"num_tasks": 2},
                                        "examples_per_task": 100}, seed=0)
    strategy = strategies.build("lamaml", {"glances": 2, "memory_size": 20})
    torch.manual_seed(0)
    model = strategies.build_model("mlp", {"hidden": [8]}, stream.spec)
    kwargs = {}
    if tmp_path is not None:
        kwargs = {"checkpoint": tmp_path / "ckpt.pt", "identity": {"test": 1}, "resume": resume}
    if stop is not None:
        kwargs.update(stop=stop, progress=progress)
    return run_online(stream, strategy, model, seed=0, settings=EvalSettings(episodes=3, adapt_steps=1),
                      online=OnlineSettings(eval_every=8), **kwargs)


def test_resumes_mid_stream_bit_identical(tmp_path, stop_after_batches):
    from simulator.runner import Interrupted, StopRequest

    clean = _online_run()
    stop = StopRequest()
    with pytest.raises(Interrupted, match="stopped after batch 11"):
        _online_run(tmp_path, stop=stop, progress=stop_after_batches(stop, 11))
    resumed = _online_run(tmp_path, resume=True)
    assert resumed.online["correct"].tobytes() == clean.online["correct"].tobytes()
    assert resumed.acc.tobytes() == clean.acc.tobytes() and resumed.loss.tobytes() == clean.loss.tobytes()


def test_sync_and_fixed_lr_are_exclusive():
    with pytest.raises(ValueError, match="exclusive"):
        strategies.build("lamaml", {"sync": True, "fixed_lr": True})


def test_cli_runs_lamaml_and_its_variants_online(tmp_path):
    from simulator import cli
    from simulator.rundir import load_tensors

    exp = tmp_path / "lamaml.toml"
    exp.write_text("""
name = "digits-lamaml"
seeds = [0]

[scenario]
name = "online"
source = "split-digits"
source_params = { num_tasks = 2 }
batch_size = 10
boundaries = "hidden"

[model]
hidden = [16]

[evaluation]
episodes = 3
adapt_steps = 1

[online]
eval_every = 20

[strategies.lamaml]
glances = 2

[strategies.cmaml]
strategy = "lamaml"
glances = 2
fixed_lr = true
alpha_init = 0.03
""")
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "out")]) == 0
    tensors = load_tensors(tmp_path / "out")
    for label in ("lamaml", "cmaml"):
        correct = tensors[f"{label}/seed0/online_correct"]
        assert np.isfinite(correct).all() and correct.mean() > 0.3
