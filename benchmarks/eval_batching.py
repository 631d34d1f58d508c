"""Batched episode evaluation against a per-episode Python loop, in one process.

Both sides score the same fixed episodes with the same trained model and the same
adaptation (``Strategy.adapt`` + ``Strategy.predict``): the baseline calls them once per
episode (a support batch of one), the evaluator once per task for all episodes. The script
checks that both give the same accuracy and loss, then prints the times and the ratio.

    python benchmarks/eval_batching.py [--episodes 100] [--steps 5] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import scenarios
import strategies
from scenarios.base import Episodes
from simulator.evaluator import EvalSettings, Evaluator


def per_episode_row(evaluator: Evaluator, strategy, K: int) -> tuple[np.ndarray, np.ndarray]:
    """The row as a plain loop: each episode adapted and scored on its own."""
    kind = evaluator.stream.spec.kind
    acc = np.zeros((evaluator.num_columns, K + 1))
    loss = np.zeros((evaluator.num_columns, K + 1))
    strategy.model.eval()
    with torch.no_grad():
        for j, eps in enumerate(evaluator.columns):
            for e in range(len(eps)):
                one: Episodes = eps.slice(e, e + 1)
                for k, state in enumerate(strategy.adapt(one.support, K)):
                    out = strategy.predict(state, one.query_x)
                    loss[j, k] += float(strategies.task_loss(out[0], one.query_y[0], kind, one.mask)) / len(eps)
                    if kind == "classification":
                        logits = out if one.mask is None else out.masked_fill(~one.mask, float("-inf"))
                        acc[j, k] += float((logits.argmax(-1) == one.query_y).double().mean()) / len(eps)
    if kind != "classification":
        acc[:] = np.nan
    return acc, loss


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench(name: str, params: dict, model: dict, episodes: int, K: int, repeats: int, adapt_lr: float) -> dict:
    stream = scenarios.build(name, params, seed=0)
    torch.manual_seed(0)
    strategy = strategies.build("finetune", {"epochs": 2, "lr": 0.01, "adapt_lr": adapt_lr})
    strategy.setup(strategies.build_model("mlp", model, stream.spec), stream.spec, "cpu", seed=0)
    strategy.learn(stream[0].training_view())
    evaluator = Evaluator(stream, EvalSettings(episodes=episodes, adapt_steps=K), seed=0)
    batched_s, (acc_b, loss_b) = best_time(lambda: evaluator.evaluate(strategy), repeats)
    loop_s, (acc_l, loss_l) = best_time(lambda: per_episode_row(evaluator, strategy, K), repeats)
    np.testing.assert_allclose(loss_b, loss_l, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(acc_b, acc_l, atol=1e-9)
    return {"scenario": name, "tasks": len(stream), "episodes": episodes, "K": K,
            "loop_s": loop_s, "batched_s": batched_s, "ratio": loop_s / batched_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=100, help="episodes per task")
    p.add_argument("--steps", type=int, default=5, help="adaptation steps K")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (best is kept)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cases = [
        ("split-digits", {"num_tasks": 5}, {"hidden": [100, 100]}, 0.1),
        ("sinusoid", {"num_tasks": 5}, {"hidden": [40, 40]}, 0.01),
    ]
    print(f"torch {torch.__version__}, {args.threads} thread(s), one evaluation row, results checked equal")
    print(f"{'scenario':<14} {'tasks':>5} {'episodes':>8} {'K':>2} {'loop s':>8} {'batched s':>9} {'ratio':>6}")
    for name, params, model, lr in cases:
        r = bench(name, params, model, args.episodes, args.steps, args.repeats, lr)
        print(f"{r['scenario']:<14} {r['tasks']:>5} {r['episodes']:>8} {r['K']:>2} "
              f"{r['loop_s']:>8.3f} {r['batched_s']:>9.3f} {r['ratio']:>5.1f}x")


if __name__ == "__main__":
    main()
