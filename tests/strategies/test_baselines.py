"""The protocol's default adaptation and the finetune/joint baselines."""

import copy

import pytest
import torch

import scenarios
import strategies
from strategies.base import DivergenceError, task_loss


def setup(name, params=None, stream=None, seed=0):
    stream = stream or scenarios.build("split-digits", {"num_tasks": 3}, seed=0)
    torch.manual_seed(seed)
    strategy = strategies.build(name, params or {"epochs": 1})
    strategy.setup(strategies.build_model("mlp", {"hidden": [16]}, stream.spec), stream.spec, "cpu", seed=seed)
    return strategy, stream


def test_adapt_yields_steps_plus_one_states_and_leaves_the_model_alone():
    strategy, stream = setup("finetune")
    before = copy.deepcopy(strategy.model.state_dict())
    eps = stream[0].episodes("test", 3, 2, 2, torch.Generator().manual_seed(0))
    states = list(strategy.adapt(eps.support, steps=4))
    assert len(states) == 5 and not states[0].batched and states[1].batched
    assert states[0].params["1.weight"].shape == (16, 64)
    assert states[1].params["1.weight"].shape == (3, 16, 64)       # one copy per episode
    for k, v in strategy.model.state_dict().items():
        assert torch.equal(v, before[k])
    # state 0 predicts exactly what the model does
    out0 = strategy.predict(states[0], eps.query_x)
    assert torch.equal(out0, strategy.model(eps.query_x.flatten(0, 1)).reshape(3, -1, 10))


def test_one_adapt_step_equals_a_manual_gradient_step():
    strategy, stream = setup("finetune", {"adapt_lr": 0.3})
    eps = stream[1].episodes("test", 2, 2, 2, torch.Generator().manual_seed(0))
    _, step1 = list(strategy.adapt(eps.support, steps=1))
    for e in range(2):
        loss = task_loss(strategy.model(eps.support_x[e]), eps.support_y[e], "classification")
        grads = torch.autograd.grad(loss, list(strategy.model.parameters()))
        for (name, p), g in zip(strategy.model.named_parameters(), grads):
            torch.testing.assert_close(step1.params[name][e], p.detach() - 0.3 * g, rtol=1e-5, atol=1e-6)


def test_task_incremental_training_only_touches_the_task_outputs():
    stream = scenarios.build("split-digits", {"num_tasks": 2, "protocol": "task-incremental"}, seed=0)
    strategy, _ = setup("finetune", {"epochs": 1}, stream)
    head = strategy.model[-1]
    before = head.weight.detach().clone()
    strategy.learn(stream[0].training_view())
    changed = (head.weight.detach() != before).any(dim=1)
    assert changed.tolist() == [True, True] + [False] * 8     # digits 0 and 1 only


def test_joint_trains_on_everything_seen_and_restores_its_memory():
    j, stream = setup("joint")
    j.learn(stream[0].training_view())
    logs = j.learn(stream[1].training_view())
    assert logs["memory_size"] == len(stream[0].train) + len(stream[1].train)
    saved = copy.deepcopy(j.state_dict())
    k, _ = setup("joint", stream=stream, seed=3)
    k.load_state_dict(saved)
    assert [len(x) for x in k.memory["x"]] == [len(stream[0].train), len(stream[1].train)]
    j.learn(stream[2].training_view())
    k.learn(stream[2].training_view())
    for name, v in j.model.state_dict().items():
        assert torch.equal(v, k.model.state_dict()[name])


def test_divergence_names_strategy_task_and_step():
    strategy, stream = setup("finetune", {"epochs": 1, "lr": 1e30})
    with pytest.raises(DivergenceError, match=r"strategy 'finetune' diverged on task 'digits 0-1' by step \d+"):
        strategy.learn(stream[0].training_view())


def test_bad_parameters_are_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        strategies.build("finetune", {"lr": -1})
    with pytest.raises(ValidationError):
        strategies.build("joint", {"optimizer": "rmsprop"})
    with pytest.raises(KeyError, match="unknown strategy 'nope'"):
        strategies.build("nope")


@pytest.mark.parametrize("name", ["finetune", "joint"])
def test_baselines_train_on_relabelled_episodes_under_few_shot(name):
    from scenarios.custom import from_tensors

    g = torch.Generator().manual_seed(0)
    y = torch.arange(6).repeat(20)                               # 6 classes, global labels 0..5
    x = torch.randn(len(y), 4, generator=g) + y[:, None].float()
    stream = from_tensors([(x, y, x, y)], protocol="few-shot", ways=3, shots=2, query=3)
    assert stream.spec.output_size == 3
    strategy, _ = setup(name, {"epochs": 2}, stream)
    logs = strategy.learn(stream[0].training_view())            # labels 3..5 would be out of range
    assert logs["steps"] > 0
    xs, ys, mask = strategies.base.training_examples(strategy, stream[0].training_view())
    assert set(ys.unique().tolist()) == {0, 1, 2} and mask is None
    assert len(ys) >= len(stream[0].train)


def test_the_base_state_dict_carries_the_training_optimiser_and_leaves_other_attributes_alone():
    """``Strategy.state_dict`` saves ``self.optimizer`` when it is a torch optimiser (its Adam
    moments come back on load), and ignores an attribute of that name that is something else."""
    from strategies.base import Strategy

    stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    trained = strategies.build("finetune", {"epochs": 1, "optimizer": "adam"})
    trained.setup(strategies.build_model("mlp", {}, stream.spec), stream.spec, "cpu", seed=0)
    trained.learn(stream[0].training_view())
    state = trained.state_dict()
    assert state["optimizer"]["state"], "the Adam moments are in the state_dict"
    fresh = strategies.build("finetune", {"epochs": 1, "optimizer": "adam"})
    fresh.setup(strategies.build_model("mlp", {}, stream.spec), stream.spec, "cpu", seed=1)
    fresh.load_state_dict(copy.deepcopy(state))
    moments = [s["exp_avg"] for s in fresh.optimizer.state_dict()["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(moments, [s["exp_avg"] for s in state["optimizer"]["state"].values()]))

    class Custom(Strategy):
        name = "custom"

        def setup(self, model, spec, device, seed=0):
            super().setup(model, spec, device, seed)
            self.optimizer = {"kind": "not a torch optimiser"}

    custom = Custom()
    custom.setup(strategies.build_model("mlp", {}, stream.spec), stream.spec, "cpu")
    assert "optimizer" not in custom.state_dict()
    custom.load_state_dict(custom.state_dict())
    assert custom.optimizer == {"kind": "not a torch optimiser"}
