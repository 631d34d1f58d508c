"""Avalanche strategies as strategies of ours: options, learning, masks, determinism, resume."""

import inspect
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import scenarios
import strategies
from simulator.config import ConfigError, validate_experiment
from simulator.evaluator import EvalSettings
from simulator.runner import run

pytest.importorskip("avalanche")
pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = sorted(n for n in strategies.available() if n.startswith("avalanche."))
TINY = {"epochs": 1, "batch_size": 16}
# Small memories so that a tiny task fills them; MAS's penalty diverges at lr 0.1 on this model.
OPTIONS = {
    "avalanche.AGEM": {"patterns_per_exp": 20, "sample_size": 10},
    "avalanche.ERACE": {"mem_size": 30},
    "avalanche.GDumb": {"mem_size": 30},
    "avalanche.GEM": {"patterns_per_exp": 20},
    "avalanche.LaMAML": {"max_buffer_size": 30},
    "avalanche.MAS": {"lr": 0.01},
    "avalanche.MER": {"mem_size": 30, "n_inner_steps": 2},
    "avalanche.Naive": {"momentum": 0.9},  # optimiser state that must survive a checkpoint
    "avalanche.Replay": {"mem_size": 30},
}


def stream_of(protocol="class-incremental", num_tasks=3):
    return scenarios.build("split-digits", {"num_tasks": num_tasks, "protocol": protocol}, seed=0)


def set_up(name, stream, seed=0, **options):
    strategy = strategies.build(name, {**TINY, **OPTIONS.get(name, {}), **options})
    torch.manual_seed(seed)
    strategy.setup(strategies.build_model("mlp", {"hidden": [16]}, stream.spec), stream.spec, "cpu", seed=seed)
    return strategy


def weights(strategy):
    return {k: v.clone() for k, v in strategy.model.state_dict().items()}


def test_every_required_name_is_registered():
    expected = {"Naive", "Replay", "EWC", "LwF", "SI", "MAS", "GEM", "AGEM", "GDumb", "ERACE", "MER", "LaMAML"}
    assert {n.removeprefix("avalanche.") for n in NAMES} == expected


def test_listing_and_building_do_not_import_avalanche():
    code = textwrap.dedent(f"""
        import sys, strategies
        from simulator.cli import list_command
        text = list_command()
        assert all(f"  {{n}}: " in text for n in {NAMES!r}), text
        for n in {NAMES!r}:
            strategies.build(n)
        assert "avalanche" not in sys.modules
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", NAMES)
def test_declared_options_follow_the_avalanche_signature(name):
    from strategies import avalanche_runtime as rt
    from strategies.avalanche import AvalancheConfig

    cls = strategies.strategy_class(name)
    signature = inspect.signature(rt.avalanche_class(cls.target).__init__).parameters
    assert {"train_mb_size", "train_epochs", "model", "optimizer", "criterion"} <= set(signature)
    for field, info in cls.Config.model_fields.items():
        if field in AvalancheConfig.model_fields:
            continue
        assert field in signature, f"{name}.{field} is not an argument of {cls.target}"
        default = signature[field].default
        if default is inspect.Parameter.empty:
            assert "ours" in info.description, f"{name}.{field}: say that the default is ours"
        else:
            assert info.default == default, f"{name}.{field}: {info.default!r} != Avalanche's {default!r}"


@pytest.mark.parametrize("name,protocol", [(n, "class-incremental") for n in NAMES] + [
    (n, "task-incremental") for n in ("avalanche.GDumb", "avalanche.LwF", "avalanche.GEM")])
def test_learns_and_resumes_bit_identically_from_its_state_dict(name, protocol):
    """Learn task 0, save; a fresh strategy loads the state; both learn tasks 1 and 2."""
    stream = stream_of(protocol)
    a = set_up(name, stream)
    before = weights(a)
    logs = a.learn(stream[0].training_view())
    assert logs["steps"] > 0 and np.isfinite(logs["train_loss"])
    assert any(not torch.equal(before[k], v) for k, v in a.model.state_dict().items())
    b = set_up(name, stream, seed=1)        # another seed: everything must come from the state
    b.load_state_dict(a.state_dict())
    for task in (stream[1], stream[2]):
        assert a.learn(task.training_view()) == b.learn(task.training_view())
        wa, wb = weights(a), weights(b)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f"{name} diverged after resuming"


@pytest.mark.parametrize("name", ["avalanche.Replay", "avalanche.LwF", "avalanche.GDumb"])
@pytest.mark.parametrize("protocol", ["task-incremental", "class-incremental"])
def test_task_incremental_training_touches_only_the_tasks_classes(name, protocol):
    """Under task-incremental, logits outside an example's task are masked, so the output rows
    of classes not learned yet never move, even with replayed examples of an earlier task;
    under class-incremental (the control) they do."""
    stream = stream_of(protocol)
    strategy = set_up(name, stream)

    def head():  # the last Linear's weight and bias
        return list(strategy.model.parameters())[-2:]

    start = [p.detach().clone() for p in head()]
    for task in (stream[0], stream[1]):
        strategy.learn(task.training_view())
    seen = sorted(stream[0].classes + stream[1].classes)
    unseen = [c for c in range(stream.spec.output_size) if c not in seen]
    for p0, p in zip(start, head()):
        assert torch.equal(p0[unseen], p.detach()[unseen]) == (protocol == "task-incremental")
        assert not torch.equal(p0[seen], p.detach()[seen])


def test_learning_leaves_the_global_random_state_alone():
    stream = stream_of(num_tasks=1)
    strategy = set_up("avalanche.Replay", stream)
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    strategy.learn(stream[0].training_view())
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])


def test_the_runner_resumes_from_a_checkpoint_file(tmp_path):
    stream = stream_of()
    settings = EvalSettings(episodes=3, adapt_steps=1)

    def fresh():
        strategy = strategies.build("avalanche.EWC", {**TINY, "momentum": 0.9})
        torch.manual_seed(0)
        return strategy, strategies.build_model("mlp", {"hidden": [16]}, stream.spec)

    clean = run(stream, *fresh(), 0, settings)
    strategy, model = fresh()
    learn = strategy.learn

    def fail_on_the_third(task):
        if task.id == 2:
            raise KeyboardInterrupt
        return learn(task)

    strategy.learn = fail_on_the_third
    with pytest.raises(KeyboardInterrupt):
        run(stream, strategy, model, 0, settings, checkpoint=tmp_path / "ckpt.pt")
    resumed = run(stream, *fresh(), 0, settings, checkpoint=tmp_path / "ckpt.pt", resume=True)
    assert clean.acc.tobytes() == resumed.acc.tobytes() and clean.loss.tobytes() == resumed.loss.tobytes()


def test_option_errors_name_the_field():
    raw = {"scenario": {"name": "split-digits"},
           "strategies": {"ewc": {"strategy": "avalanche.EWC", "ewc_lamda": 1.0},
                          "replay": {"strategy": "avalanche.Replay", "mem_size": "big"},
                          "lwf": {"strategy": "avalanche.LwF", "temperature": 0}}}
    with pytest.raises(ConfigError) as err:
        validate_experiment(raw, "exp.toml")
    text = str(err.value)
    assert "strategies.ewc.ewc_lamda: unknown key (valid keys: " in text and "ewc_lambda" in text
    assert "strategies.replay.mem_size: must be an integer, got 'big'" in text
    assert "strategies.lwf.temperature: must be > 0" in text


def test_a_regression_stream_is_refused():
    stream = scenarios.build("sinusoid", {"num_tasks": 1, "train_functions": 4, "test_functions": 4}, seed=0)
    strategy = strategies.build("avalanche.Naive")
    with pytest.raises(ValueError, match="classification"):
        strategy.setup(strategies.build_model("mlp", {}, stream.spec), stream.spec, "cpu")
