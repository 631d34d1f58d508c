"""Reproduce MAML's sinusoid regression (Finn et al. 2017, section 5.1, Figure 3) with the library.

The setting of ../shared/REFERENCE.md: amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5] (the
``sinusoid`` scenario's regime 0, one task, no drift); MLP 1-40-40-1 with ReLU; K support and
K query points per function in meta-training (as in Finn et al.'s code); one inner step with
alpha = 0.01; meta-batch 25; Adam with learning rate 0.001; 70,000 meta-iterations.

Everything goes through the public API: ``scenarios.build("sinusoid", ...)`` for the
functions, ``strategies.build("maml", ...)`` and its ``learn`` for meta-training (one call,
printing its progress every ``--log-every`` meta-iterations; ``benchmarks/metatrain.py``), and the
:class:`~simulator.evaluator.Evaluator`'s held-out episodes, scored per episode by
``Evaluator.episode_scores`` (whose mean is the row ``lifelong run`` records) for the test curve.

Training functions: the scenario holds a finite pool of them (``train_functions``). The
default, 200,000 functions, is about a ninth of the 1.75 million that 70,000 meta-batches of
25 draw, so each function comes back about 9 times, each time with a fresh random choice of
its K + K points among ``K + 100``. A family with two parameters (amplitude and phase)
covered by 200,000 draws leaves a 1,761-parameter network nothing to memorise; the pool
costs about 170 MB.

Test: 1000 new functions (the scenario's held-out ones), each with K support points and 100
query points (Finn et al. score K query points; more points give the same expected MSE with
less noise per task), after 0 to 10 gradient steps with alpha = 0.01 as in the paper. The
figures are the mean MSE over the 1000 tasks with a 95% confidence interval (1.96 standard
errors over tasks).

    python benchmarks/reproduce_sinusoid.py [--shots 5 10] [--iterations 70000] [--log-every 5000]
                                            [--train-functions 200000] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np
import torch

import scenarios
import strategies
from metatrain import meta_train
from simulator.evaluator import EvalSettings, Evaluator

REPORTED_STEPS = (0, 1, 2, 5, 10)
TARGET_K5 = {1: 0.75, 10: 0.40}  # the bar for K = 5: at most this MSE after 1 and 10 steps


def build_stream(shots: int, train_functions: int, test_functions: int, eval_query: int, seed: int):
    """One regime of the ``sinusoid`` scenario: the MAML paper's distribution, no drift."""
    return scenarios.build("sinusoid", {
        "num_tasks": 1, "shots": shots, "query": shots, "amplitude": [0.1, 5.0], "phase": [0.0, math.pi],
        "frequency": [1.0, 1.0], "x_range": [-5.0, 5.0], "amplitude_drift": 0.0, "phase_drift": 0.0,
        "frequency_drift": 0.0, "train_functions": train_functions, "test_functions": test_functions,
        "points": shots + max(shots, eval_query)}, seed=seed)


def test_curve(strategy, evaluator: Evaluator, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean MSE over the evaluator's held-out tasks after 0..``steps`` steps, and its 95% half-width."""
    _, losses = evaluator.episode_scores(strategy, 0)                                # (steps + 1, tasks)
    mean = losses.mean(axis=1)
    half_width = 1.96 * losses.std(axis=1, ddof=1) / math.sqrt(losses.shape[1])
    return mean, half_width


def reproduce(shots: int, args) -> dict:
    stream = build_stream(shots, args.train_functions, args.test_tasks, args.eval_query, args.seed)
    maml = strategies.build("maml", {"inner_lr": 0.01, "inner_steps": 1, "meta_batch_size": 25, "meta_lr": 0.001,
                                     "meta_iterations": args.iterations})
    torch.manual_seed(args.seed)  # the initial weights, as the runner seeds them
    maml.setup(strategies.build_model("mlp", {"hidden": [40, 40]}, stream.spec), stream.spec, "cpu", seed=args.seed)
    print(f"K = {shots}: {args.iterations} meta-iterations on {args.train_functions} training functions", flush=True)
    seconds, _ = meta_train(maml, stream[0].training_view(), args.iterations, args.log_every)
    evaluator = Evaluator(stream, EvalSettings(episodes=args.test_tasks, adapt_steps=max(REPORTED_STEPS),
                                               query=args.eval_query), seed=args.seed)
    mean, half_width = test_curve(maml, evaluator, max(REPORTED_STEPS))
    return {"shots": shots, "iterations": args.iterations, "train_seconds": seconds,
            "mse": mean.tolist(), "ci95": half_width.tolist()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shots", type=int, nargs="+", default=[5, 10], help="values of K, run one after the other")
    p.add_argument("--iterations", type=int, default=70_000, help="meta-iterations (the paper: 70,000)")
    p.add_argument("--log-every", type=int, default=5_000, help="meta-iterations between progress lines")
    p.add_argument("--train-functions", type=int, default=200_000, help="size of the training pool of functions")
    p.add_argument("--test-tasks", type=int, default=1000, help="new functions in the test")
    p.add_argument("--eval-query", type=int, default=100, help="query points per test function")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    results = [reproduce(k, args) for k in args.shots]

    print(f"\nMSE on {args.test_tasks} new tasks after n gradient steps (alpha 0.01), mean +- 95% CI")
    print(f"{'K':>3} {'train s':>8} " + " ".join(f"{f'{n} step(s)':>15}" for n in REPORTED_STEPS))
    for r in results:
        print(f"{r['shots']:>3} {r['train_seconds']:>8.0f} "
              + " ".join(f"{r['mse'][n]:>7.3f} +- {r['ci95'][n]:.3f}" for n in REPORTED_STEPS))
        if r["shots"] == 5:
            met = all(r["mse"][n] <= bar for n, bar in TARGET_K5.items())
            print(f"    K = 5 target (MSE <= 0.75 after 1 step, <= 0.40 after 10): {'met' if met else 'NOT met'}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads, "train_functions": args.train_functions,
                       "eval_query": args.eval_query, "seed": args.seed, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
