"""Our runner and metrics against Avalanche's own loop and EvaluationPlugin, on the same run.

(a) Avalanche alone: the stream converted by ``to_avalanche``, the strategy trained with
    ``train(experience)``, ``eval(test_stream)`` before training and after every experience,
    metrics from Avalanche's EvaluationPlugin.
(b) Ours: ``simulator.runner.run`` with the ``avalanche.*`` strategy and ``full_test``
    evaluation (k = 0 on each task's whole test pool).

Both start from the same weights and seed Avalanche's global RNG draws the same way
(``isolated_rng`` from a generator seeded with the run seed: one draw to build the strategy,
one per experience), so they train identically.
"""

import copy

import numpy as np
import pytest
import torch

import scenarios
import strategies
from simulator import metrics
from simulator.evaluator import EvalSettings
from simulator.runner import run

pytest.importorskip("avalanche")
pytestmark = pytest.mark.usefixtures("one_thread")

SEED, LR, EPOCHS, BATCH = 0, 0.05, 2, 16
CASES = {"avalanche.Naive": {}, "avalanche.Replay": {"mem_size": 50}}


def avalanche_loop(stream, model, name, options):
    """Avalanche's own loop and metrics: (accuracy matrix (T+1, T), last stream metrics)."""
    from avalanche.evaluation.metrics import (accuracy_metrics, bwt_metrics, forgetting_metrics,
                                              forward_transfer_metrics)
    from avalanche.training.plugins import EvaluationPlugin

    from scenarios.avalanche_adapter import to_avalanche
    from strategies import avalanche_runtime as rt
    from scenarios.rng import isolated_rng
    from strategies.avalanche import generator_seed

    benchmark = to_avalanche(stream)
    generator = torch.Generator().manual_seed(SEED)
    with rt.quiet():
        evaluator = EvaluationPlugin(
            accuracy_metrics(experience=True, stream=True), forgetting_metrics(experience=True, stream=True),
            bwt_metrics(experience=True, stream=True), forward_transfer_metrics(experience=True, stream=True),
            loggers=[])
        with isolated_rng(generator_seed(generator)):
            cl = rt.avalanche_class(strategies.strategy_class(name).target)(
                model=model, optimizer=torch.optim.SGD(model.parameters(), lr=LR),
                criterion=torch.nn.CrossEntropyLoss(), train_mb_size=BATCH, train_epochs=EPOCHS,
                eval_mb_size=256, evaluator=evaluator, eval_every=0, **options)
        cl.eval(benchmark.test_stream)                       # before training: forward transfer's baseline
        for experience in benchmark.train_stream:
            with isolated_rng(generator_seed(generator)):
                cl.train(experience, eval_streams=[])
            cl.eval(benchmark.test_stream)
    values = {k: v[1] for k, v in evaluator.get_all_metrics().items()}
    T = len(stream)
    matrix = np.array([values[f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"] for j in range(T)]).T
    last = {k.split("/")[0]: v[-1] for k, v in values.items() if "_stream" in k and "Exp" not in k}
    return matrix, last


@pytest.mark.parametrize("name", sorted(CASES))
def test_accuracy_matrix_and_avalanche_metrics_agree(name):
    stream = scenarios.build("split-digits", {"num_tasks": 5, "protocol": "class-incremental"}, seed=SEED)
    torch.manual_seed(SEED)
    model = strategies.build_model("mlp", {"hidden": [32]}, stream.spec)
    initial = copy.deepcopy(model)

    theirs, stream_metrics = avalanche_loop(stream, initial, name, CASES[name])
    strategy = strategies.build(name, {"lr": LR, "epochs": EPOCHS, "batch_size": BATCH, **CASES[name]})
    ours = run(stream, strategy, model, SEED, EvalSettings(episodes=1, adapt_steps=0, full_test=True, columns="all"))
    R = ours.acc[:, :, 0]

    assert theirs.shape == R.shape == (6, 5)
    # Both are hit counts over the whole test pool divided by its size.
    np.testing.assert_allclose(R, theirs, rtol=0, atol=1e-12)
    assert metrics.learning_accuracy(R) > 0.8                 # it learned: not a vacuous agreement
    # Avalanche's forgetting is the drop from right after learning (positive = forgotten), its
    # BWT the negative of that; both average the T-1 tasks learned before the last.
    assert metrics.avalanche_forgetting(R) == pytest.approx(stream_metrics["StreamForgetting"], abs=1e-6)
    assert metrics.backward_transfer(R) == pytest.approx(stream_metrics["StreamBWT"], abs=1e-6)
    assert metrics.avalanche_forward_transfer(R) == pytest.approx(stream_metrics["StreamForwardTransfer"], abs=1e-6)
    # Stream accuracy: Avalanche pools the samples of every experience; ours averages tasks.
    sizes = np.array([len(task.test) for task in stream])
    assert (R[-1] * sizes).sum() / sizes.sum() == pytest.approx(stream_metrics["Top1_Acc_Stream"], abs=1e-12)
    assert abs(metrics.final_accuracy(R) - stream_metrics["Top1_Acc_Stream"]) > 1e-4   # unequal pools differ
