"""The outer learning-rate schedule (``lr_schedule`` of the embedding strategies, ``meta_lr_schedule``
of MAML and its relatives): the rate each optimiser step takes, and bit-identical resume."""

import hashlib
import math

import pytest
import torch

import scenarios
import strategies
from simulator.evaluator import EvalSettings
from simulator.runner import Interrupted, StopRequest, run
from strategies.training import scheduled_lr

# strategy, its options for a small run, the name of its rate and of its schedule option
CASES = {
    "maml": ({"meta_iterations": 6, "meta_batch_size": 2, "inner_steps": 1}, "meta_lr", "meta_lr_schedule"),
    "metasgd": ({"meta_iterations": 6, "meta_batch_size": 2, "inner_steps": 1}, "meta_lr", "meta_lr_schedule"),
    "protomemory": ({"meta_iterations": 6, "meta_batch_size": 2, "embedding_dim": 8}, "lr", "lr_schedule"),
    "matching": ({"meta_iterations": 6, "meta_batch_size": 2, "embedding_dim": 8}, "lr", "lr_schedule"),
    "snail": ({"meta_iterations": 6, "meta_batch_size": 2, "embedding_dim": 8, "key_sizes": [8, 8],
               "value_sizes": [4, 4], "tc_filters": [6]}, "lr", "lr_schedule"),
    "leo": ({"meta_iterations": 6, "meta_batch_size": 2, "embedding_dim": 8, "latent_dim": 4, "inner_steps": 1,
             "finetune_steps": 1}, "lr", "lr_schedule"),
}


def test_cosine_rates_by_hand():
    # (1 + cos(pi * i / 4)) / 2 for i = 0..3: 1, 0.8536, 0.5, 0.1464
    expected = [0.01, 0.01 * (2 + math.sqrt(2)) / 4, 0.005, 0.01 * (2 - math.sqrt(2)) / 4]
    assert [scheduled_lr(0.01, "cosine", i, 4) for i in range(4)] == pytest.approx(expected, rel=1e-12)
    assert {scheduled_lr(0.01, "constant", i, 4) for i in range(4)} == {0.01}


def build(name: str, schedule: str, stream):
    params, rate, option = CASES[name]
    s = strategies.build(name, {**params, option: schedule, rate: 0.01})
    torch.manual_seed(0)
    model = strategies.build_model("mlp", {"hidden": [16]}, s.model_spec(stream.spec))
    return s, model


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_each_optimiser_step_takes_the_scheduled_rate(name, schedule):
    stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    s, model = build(name, schedule, stream)
    s.setup(model, stream.spec, "cpu", seed=0)
    rates, step = [], s.optimizer.step

    def recording_step(*args, **kwargs):
        rates.append([group["lr"] for group in s.optimizer.param_groups])
        return step(*args, **kwargs)

    s.optimizer.step = recording_step
    s.learn(stream[0].training_view())
    s.learn(stream[1].training_view())
    per_task = [scheduled_lr(0.01, schedule, i, 6) for i in range(6)]
    groups = len(s.optimizer.param_groups)
    assert rates == [[rate] * groups for rate in per_task * 2]    # every group; again from the top on task 2


def digest(result, strategy) -> str:
    h = hashlib.sha256(result.acc.tobytes() + result.loss.tobytes())
    for name, t in sorted(strategy.model.state_dict().items()):
        h.update(name.encode() + t.contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", ["maml", "snail", "leo"])
def test_a_cosine_run_stopped_mid_task_resumes_bit_identically(tmp_path, name, stop_inside_task, one_thread):
    stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    settings = EvalSettings(episodes=3, adapt_steps=1)
    clean_strategy, model = build(name, "cosine", stream)
    clean = digest(run(stream, clean_strategy, model, 0, settings), clean_strategy)
    checkpoint, stop = tmp_path / "ckpt.pt", StopRequest()
    with pytest.raises(Interrupted, match="inside task 1"):
        run(stream, *build(name, "cosine", stream), 0, settings, checkpoint=checkpoint, identity={"test": 1},
            stop=stop, progress=stop_inside_task(stop, task=1, position=3))
    resumed_strategy, model = build(name, "cosine", stream)
    resumed = run(stream, resumed_strategy, model, 0, settings, checkpoint=checkpoint, identity={"test": 1},
                  resume=True)
    assert digest(resumed, resumed_strategy) == clean
    constant_strategy, model = build(name, "constant", stream)
    assert digest(run(stream, constant_strategy, model, 0, settings), constant_strategy) != clean


def test_continual_maml_online_updates_take_meta_lr_after_a_cosine_pre_training():
    stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    s = strategies.build("continual_maml", {"meta_iterations": 4, "meta_batch_size": 2, "inner_steps": 1,
                                            "meta_lr": 0.01, "meta_lr_schedule": "cosine"})
    torch.manual_seed(0)
    s.setup(strategies.build_model("mlp", {"hidden": [16]}, stream.spec), stream.spec, "cpu", seed=0)
    s.learn(stream[0].training_view())
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(scheduled_lr(0.01, "cosine", 3, 4))
    episode = stream[1].episodes("train", 1, 2, 2, torch.Generator().manual_seed(0))
    s.buffer = [(episode.support_x[0], episode.support_y[0])]
    s.outer_update()
    assert [group["lr"] for group in s.optimizer.param_groups] == [0.01]
