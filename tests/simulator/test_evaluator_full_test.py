"""``full_test`` evaluation: k = 0 on the whole test pool, k > 0 adapted on training supports."""

import copy

import numpy as np
import pytest
import torch

import scenarios
import strategies
from simulator.config import ConfigError, validate_experiment
from simulator.evaluator import EvalSettings, Evaluator
from strategies.base import task_loss


def trained(protocol):
    stream = scenarios.build("split-digits", {"num_tasks": 2, "protocol": protocol}, seed=0)
    torch.manual_seed(0)
    strategy = strategies.build("finetune", {"epochs": 1, "lr": 0.01, "adapt_lr": 0.05})
    strategy.setup(strategies.build_model("mlp", {"hidden": [16]}, stream.spec), stream.spec, "cpu")
    strategy.learn(stream[0].training_view())
    return stream, strategy


def reference_row(stream, strategy, evaluator, K, lr):
    """Per task and support set, in Python: score the whole pool, step on the support, repeat."""
    acc, loss = np.zeros((2, K + 1)), np.zeros((2, K + 1))
    for j, (task, column) in enumerate(zip(stream, evaluator.columns)):
        x, y = task.test.examples()
        E = len(column.support)
        for e in range(E):
            model = copy.deepcopy(strategy.model)
            for k in range(K + 1):
                with torch.no_grad():
                    out = model(x)
                    logits = out if task.mask is None else out.masked_fill(~task.mask, float("-inf"))
                    # k = 0 is one score of the pool, the same for every support set
                    weight = 1 / E if k > 0 else float(e == 0)
                    loss[j, k] += weight * float(task_loss(out, y, "classification", task.mask))
                    acc[j, k] += weight * float((logits.argmax(-1) == y).double().mean())
                if k < K:
                    sx, sy = column.support.x[e], column.support.y[e]
                    grads = torch.autograd.grad(task_loss(model(sx), sy, "classification", task.mask),
                                                list(model.parameters()))
                    with torch.no_grad():
                        for p, g in zip(model.parameters(), grads):
                            p -= lr * g
    return acc, loss


@pytest.mark.parametrize("protocol", ["class-incremental", "task-incremental"])
def test_full_test_scores_the_whole_pool_and_adapts_on_training_supports(protocol):
    stream, strategy = trained(protocol)
    K = 2
    evaluator = Evaluator(stream, EvalSettings(episodes=4, adapt_steps=K, full_test=True, chunk=3), seed=0)
    acc, loss = evaluator.evaluate(strategy)
    ref_acc, ref_loss = reference_row(stream, strategy, evaluator, K, 0.05)
    np.testing.assert_allclose(acc, ref_acc, atol=1e-9)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for task, column in zip(stream, evaluator.columns):
        test_x, train_x = task.test.examples()[0].flatten(1), task.train.examples()[0].flatten(1)
        assert torch.equal(column.x.flatten(1), test_x)                  # every test item is scored
        support = column.support.x.flatten(0, 1).flatten(1)
        assert (torch.cdist(support, train_x).min(1).values == 0).all()   # supports from the training pool
        assert (torch.cdist(support, test_x).min(1).values > 0).all()     # none of them is scored


def test_full_test_is_refused_for_few_shot_streams():
    raw = {"scenario": {"name": "split-mnist", "protocol": "few-shot"}, "evaluation": {"full_test": True},
           "strategies": {"finetune": {}}}
    with pytest.raises(ConfigError, match="evaluation.full_test: needs a class-, task- or domain-incremental"):
        validate_experiment(raw, "exp.toml")
    stream = scenarios.build("sinusoid", {"num_tasks": 1, "train_functions": 4, "test_functions": 4}, seed=0)
    with pytest.raises(ValueError, match="few-shot"):
        Evaluator(stream, EvalSettings(full_test=True), seed=0)
