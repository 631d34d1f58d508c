"""``continual_maml`` (OSAKA's Continual-MAML): one online step against a reference written from
the paper's algorithm 1 as OSAKA's code runs it, switch detection on hand-built losses, mid-stream
resume and a CLI run. (Generic determinism: tests/test_conformance.py.)"""

import json
import math
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import strategies
from scenarios.base import StreamSpec
from simulator import cli
from simulator.evaluator import EvalSettings
from simulator.online import OnlineSettings, run_online
from strategies.continual_maml import switch_detected

SPEC = StreamSpec(name="hand", kind="classification", protocol="class-incremental", input_shape=(4,),
                  output_size=3, num_tasks=1, shots=2, query=2)


def _forward(p, x):
    """The mlp backbone with hidden [5], written out: Linear-ReLU-Linear."""
    return F.linear(torch.relu(F.linear(x, p["1.weight"], p["1.bias"])), p["3.weight"], p["3.bias"])


def _inner(p, x, y, lr, steps, create_graph):
    for _ in range(steps):
        grads = torch.autograd.grad(F.cross_entropy(_forward(p, x), y), list(p.values()), create_graph=create_graph)
        p = {n: w - lr * g for (n, w), g in zip(p.items(), grads)}
    return p


def _batch(g, n=6):
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("reset", ["next", "immediate"])
def test_one_online_step_matches_a_reference_from_algorithm_1(reset, one_thread):
    c = dict(inner_lr=0.3, inner_steps=2, meta_lr=0.01, modulation=0.7, reset=reset)
    g = torch.Generator().manual_seed(3)
    batches = [_batch(g) for _ in range(4)]   # three buffered batches of the current task, then the new one
    torch.manual_seed(0)
    model = strategies.build_model("mlp", {"hidden": [5]}, SPEC).double()
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    phi = {n: (p + 0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64)) for n, p in theta.items()}
    x, y = batches[3]

    # Reference. Step 1: the loss of the prediction; 2: adapt the fast weights from themselves.
    before = F.cross_entropy(_forward(phi, x), y).item()
    phi_new = _inner({n: w.clone().requires_grad_() for n, w in phi.items()}, x, y, c["inner_lr"], 2, False)
    phi_new = {n: w.detach() for n, w in phi_new.items()}
    after = F.cross_entropy(_forward(phi_new, x), y).item()
    gamma = (before - after) / 2   # 3: a switch, by OSAKA's rule (loss fell by >= gamma)
    assert before - after >= gamma > 0
    # 4: outer update on the buffer: support = batches 0, 1 (ceil(3/2)), query = batch 2, second order.
    sx, sy = torch.cat([batches[0][0], batches[1][0]]), torch.cat([batches[0][1], batches[1][1]])
    qx, qy = batches[2]
    leaf = {n: w.clone().requires_grad_() for n, w in theta.items()}
    meta = F.cross_entropy(_forward(_inner(leaf, sx, sy, c["inner_lr"], 2, True), qx), qy)
    weight = 1 - math.exp(-c["modulation"] * meta.item())
    grads = torch.autograd.grad(weight * meta, list(leaf.values()))
    # Adam's first step (bias-corrected moments are g and g^2).
    theta_new = {n: w - c["meta_lr"] * gr / (gr.abs() + 1e-8) for (n, w), gr in zip(theta.items(), grads)}
    if reset == "immediate":  # 5: the fast weights restart from the updated slow weights, on this batch
        phi_new = {n: w.detach() for n, w in _inner({n: w.clone().requires_grad_() for n, w in theta_new.items()},
                                                      x, y, c["inner_lr"], 2, False).items()}

    strategy = strategies.build("continual_maml", {**c, "gamma": gamma})
    strategy.setup(model, SPEC, "cpu", seed=0)
    strategy.online_fast = {n: w.clone() for n, w in phi.items()}
    strategy.buffer = [batches[0], batches[1], batches[2]]
    strategy.previous_before = 0.0
    logs = strategy.observe(x, y)

    assert logs["switch"] == 1 and logs["outer_update"] == 1 and strategy.buffer == [] and strategy.last_switch
    assert logs["loss_before"] == pytest.approx(before, abs=1e-12)
    assert logs["loss_after"] == pytest.approx(after, abs=1e-12)
    for n, p in strategy.model.named_parameters():
        torch.testing.assert_close(p.detach(), theta_new[n], rtol=0, atol=1e-10)
        torch.testing.assert_close(strategy.online_fast[n], phi_new[n], rtol=0, atol=1e-10)
    # predict_online uses the fast weights
    torch.testing.assert_close(strategy.predict_online(x), _forward(phi_new, x), rtol=0, atol=1e-10)


def test_switch_rules_on_a_hand_built_loss_sequence():
    # (loss before adapting, loss after adapting) per batch; gamma = 1
    seq = [(2.3, 0.5), (0.6, 0.4), (2.5, 0.9), (1.2, 0.3), (0.4, 0.3), (1.6, 0.6), (2.0, 1.5)]
    gain, rise, previous = [], [], None
    for before, after in seq:
        gain.append(switch_detected(before, after, previous, 1.0, "adaptation_gain"))
        rise.append(switch_detected(before, after, previous, 1.0, "loss_rise"))
        previous = before
    assert gain == [True, False, True, False, False, True, False]   # 1.6 - 0.6 = 1.0 counts (>=)
    assert rise == [False, False, True, False, False, True, False]  # 1.6 - 0.4 > 1; 2.0 - 1.6 is not


def test_detected_switch_flushes_the_buffer_and_resets_fast_weights_on_the_next_batch(one_thread):
    """The strategy's control flow on scripted losses: which batches are buffered, when the outer
    update runs, where the fast weights start."""
    torch.manual_seed(0)
    model = strategies.build_model("mlp", {"hidden": [5]}, SPEC)
    strategy = strategies.build("continual_maml", {"gamma": 1.0, "max_buffer": 3})
    strategy.setup(model, SPEC, "cpu", seed=0)
    # per observe: loss before, then loss after (the first batch: before, after as well)
    script = iter([2.3, 0.5, 0.6, 0.4, 0.5, 0.4, 2.5, 0.9, 1.0, 0.3, 0.5, 0.4, 0.5, 0.4, 0.5, 0.4, 0.5, 0.4])
    strategy._loss = lambda params, x, y: torch.tensor(next(script))
    starts, adapt = [], strategy._adapt

    def recording_adapt(params, x, y):
        slow = {n: p.detach() for n, p in strategy.model.named_parameters()}
        starts.append("slow" if all(torch.equal(params[n], slow[n]) for n in slow) else "fast")
        return adapt(params, x, y)

    strategy._adapt = recording_adapt
    updates, switches, sizes = [], [], []
    g = torch.Generator().manual_seed(0)
    for _ in range(9):
        x, y = torch.randn(2, 4, generator=g), torch.randint(0, 3, (2,), generator=g)
        logs = strategy.observe(x, y)
        updates.append(logs["outer_update"]), switches.append(logs["switch"]), sizes.append(len(strategy.buffer))
    # batch 3 (2.5 -> 0.9) is a switch: the buffer (batches 0-2) is used and emptied, batch 3 is not
    # buffered, and batch 4 is adapted from the slow weights (1.0 -> 0.3: a gain under gamma)
    assert switches == [0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert updates == [0, 0, 0, 1, 0, 0, 0, 0, 1]        # the switch; then more than max_buffer = 3 batches
    assert sizes == [1, 2, 3, 0, 1, 2, 3, 4, 0]
    assert starts == ["slow", "fast", "fast", "fast", "slow", "fast", "fast", "fast", "fast"]


def _online_run(stream, params):
    strategy = strategies.build("continual_maml", params)
    torch.manual_seed(0)
    model = strategies.build_model("mlp", {"hidden": [8]}, stream.spec)
    return run_online(stream, strategy, model, seed=0, settings=EvalSettings(episodes=3, adapt_steps=1),
                      online=OnlineSettings(eval_every=15))


PARAMS = {"meta_iterations": 2, "inner_lr": 0.01, "gamma": 0.5}


@pytest.mark.parametrize("stop_after", [11, 13])   # 11: just after a detected switch; 13: two batches buffered
def test_resumes_mid_stream_bit_identical(one_thread, stop_after, interrupted_online_run):
    import scenarios

    stream = scenarios.build("switching-sinusoid", {"length": 40, "hazard": 0.2}, seed=0)
    params = {**PARAMS, "max_buffer": 4}   # several outer updates and a non-empty buffer at the stop

    def fresh():
        strategy = strategies.build("continual_maml", params)
        torch.manual_seed(0)
        return strategy, strategies.build_model("mlp", {"hidden": [8]}, stream.spec)

    settings, online = EvalSettings(episodes=3, adapt_steps=1), OnlineSettings(eval_every=15)
    clean, resumed = interrupted_online_run(stream, fresh, settings, online, batches=stop_after)
    assert resumed.online["correct"].tobytes() == clean.online["correct"].tobytes()
    assert resumed.acc.tobytes() == clean.acc.tobytes() and resumed.loss.tobytes() == clean.loss.tobytes()


EXPERIMENT = textwrap.dedent("""
    name = "cmaml-tiny"
    seeds = [0]
    threads = 1

    [scenario]
    name = "switching-sinusoid"
    length = 30
    hazard = 0.2
    train_functions = 20

    [model]
    hidden = [8]

    [evaluation]
    episodes = 3
    adapt_steps = 1

    [online]
    eval_every = 15

    [strategies.continual_maml]
    meta_iterations = 3
    inner_lr = 0.01
    gamma = 0.5
""")


def test_cli_runs_a_tiny_online_experiment(tmp_path, one_thread):
    exp = tmp_path / "cmaml.toml"
    exp.write_text(EXPERIMENT)
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    text = json.dumps(results)
    assert "continual_maml" in text and "cumulative_accuracy" in text
    tensors = np.load(tmp_path / "out" / "tensors.npz")
    correct = tensors["continual_maml/seed0/online_correct"]
    assert correct.shape == (30,) and np.isfinite(correct).all()
