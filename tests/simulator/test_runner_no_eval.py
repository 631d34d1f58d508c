"""``run(..., evaluate=False)``: the training path alone, for timing it."""

import numpy as np
import torch

import scenarios
import strategies
from simulator.evaluator import EvalSettings
from simulator.runner import run


def test_without_evaluation_the_training_is_the_same_and_nothing_is_scored():
    stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    models = []
    for evaluate in (True, False):
        torch.manual_seed(0)
        model = strategies.build_model("mlp", {"hidden": [16]}, stream.spec)
        result = run(stream, strategies.build("finetune", {"epochs": 1}), model, 0,
                     EvalSettings(episodes=2, adapt_steps=1), evaluate=evaluate)
        models.append(model)
    assert result.acc.shape == (3, 2, 2) and np.isnan(result.acc).all() and np.isnan(result.loss).all()
    assert result.eval_seconds == [] and len(result.learn_seconds) == 2
    assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters()))
