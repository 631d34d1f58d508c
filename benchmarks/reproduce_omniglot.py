"""Reproduce the few-shot Omniglot table (../shared/REFERENCE.md) with the library's strategies.

Protocol (Vinyals et al. 2016, as used by MAML, Prototypical and Matching Networks): the
``omniglot-fewshot`` scenario meta-trains on the 1200 characters of the Vinyals ``trainval``
split, each rotation by 0/90/180/270 degrees a class of its own (4800 classes), images resized
to 28x28, and tests on N-way K-shot episodes of the 423 held-out ``test`` characters (with
rotations: 1692 classes). The network is ``conv4`` with 64 filters (4 x conv3x3-BN-maxpool-ReLU,
then a linear layer: the classifier of MAML and Reptile, a 64-wide embedding for Prototypical
and Matching Networks). BatchNorm uses the statistics of the batch it is given, in training and
at test (transductive, as in MAML's and Reptile's reference code; strategies/backbones.py).

Rows: ``maml`` (second order), ``fomaml`` (first order), ``protonet`` (the ``protomemory``
strategy: under the few-shot protocol it is exactly Prototypical Networks, its memory unused),
``matching`` (Matching Networks without full-context embeddings), ``reptile``, ``snail``
(SNAIL: temporal convolutions and causal attention over the support sequence, on the conv4
embedding) and ``leo`` (LEO: classifiers generated from latent codes of the conv4 embeddings,
adapted in the latent space); each for 5/20-way and 1/5-shot.

Each row goes through the library's public API, the code path of ``lifelong run``:
``scenarios.build("omniglot-fewshot", ...)``, ``strategies.build(...)``,
``strategies.build_model("conv4", ...)`` (initial weights seeded as the runner seeds them),
``strategy.setup`` and ``strategy.learn`` for meta-training (one call, printing its progress
every ``--log-every`` iterations: ``benchmarks/metatrain.py``; before 2026-12-02 it called
``learn`` once per block of them, which restarted schedules with every block), and the
:class:`~simulator.evaluator.Evaluator`'s held-out episodes, scored by
``Evaluator.episode_scores`` (per episode, for the confidence interval; their mean is what
``lifelong run`` records).

Test: ``--episodes`` (default 1000) episodes with ``--query`` (default 5) query images per
class; the accuracy after the row's adaptation steps, with a 95% confidence interval (1.96
standard errors over episodes).

Budgets (``--budget paper``, the default, or ``cpu``; any field can be overridden with the
options below). The paper budgets, and where they differ from the papers:

- MAML, FOMAML (Finn et al. 2017, appendix A.1 and the reference code): Adam 0.001, 60,000
  meta-iterations; 5-way: meta-batch 32, 1 inner step of 0.4, 3 steps at test; 20-way:
  meta-batch 16, 5 inner steps of 0.1, 5 at test; K query images per class in training. The
  paper's Omniglot network uses strided convolutions and no max-pooling; ours max-pools.
- Prototypical Networks (Snell et al. 2017): one 60-way episode per step (the strategy learns
  from a 60-way ``omniglot-fewshot`` stream of the same training characters; the test stream
  is N-way), 5 query images per class, training shots = test shots, Adam 0.001 (the paper
  halves it every 2000 episodes; ours stays constant). The paper stops on validation loss;
  20,000 steps stand in for that. The embedding ends with conv4's linear layer (64 to 64),
  which the paper does not have.
- Matching Networks (Vinyals et al. 2016): N-way training episodes, 60 / N of them per step
  (60 classes), 5 query images per class, Adam 0.001, 20,000 steps (the paper gives no
  training length); cosine attention with scale 10 (the library's default), no FCE.
- Reptile (Nichol et al. 2018): the commands of the authors' README, :data:`REPTILE_COMMANDS`
  (5-way 1-shot: their transductive command): Adam with beta1 = 0 on mini-batches
  (``inner_optimizer = "adam"``, ``inner_batch_size``), the moments carried over, the outer
  step annealed linearly to 0 (``epsilon_final``), training episodes of ``--train-shots``
  images per class (shots plus query here), 100,000 or 200,000 meta-iterations. At test their
  Adam steps take mini-batches (``--eval-batch``) of the support set; ours take all of it, from
  the moments training left (strategies/reptile.py says where else ours differs). BatchNorm
  uses batch statistics at test, as their transductive runs, and the published figures are
  those of their transductive table.
- SNAIL (Mishra et al. 2018): the paper's Omniglot network after the embedding (attention
  (64, 32), TC(128), attention(256, 128), TC(128), attention(512, 256), a linear layer: the
  ``snail`` defaults) and N-way K-shot training episodes. Training settings as the independent
  PyTorch reproduction of REFERENCE.md (eambutu/snail-pytorch) has them: Adam 0.0001, 32
  episodes per step; 50,000 steps stand in for a training length (our choice). A paper
  sequence holds one query image; ours put one query image per class after the same support
  set, each as its own sequence (N sequences per episode, scored in one pass). The state is
  conditioned on the support set from k = 0, so the test takes 0 steps.
- LEO (Rusu et al. 2019; no Omniglot figures: the paper reports miniImageNet and
  tieredImageNet): the authors' ``config.py`` (5 latent steps, 5 fine-tuning steps, 64 latent
  dimensions, dropout 0.5, their regularisation weights and gradient clipping: the ``leo``
  defaults), 12 episodes per step with 15 query images per class, Adam 0.0001, 100,000 steps,
  5 latent steps at test. The paper trains LEO on fixed features of a pre-trained WRN-28-10;
  here the conv4 embedding is trained jointly, end to end (strategies/leo.py).

The ``cpu`` budget: reduced budgets meant to train in under 30 minutes on two CPU cores; what
each row reached, in how long, is in benchmarks/RESULTS.md. Prototypical Networks: 1,600 steps
(98.4% on 5-way 1-shot); MAML 5-way 1-shot: 2,400 x 16 episodes (95.6%); SNAIL 5-way 1-shot:
4,000 steps of 8 episodes with 5 query images per class and Adam 0.001 (95.8%: the loss leaves
the chance plateau, ln 5, after about 100 steps); LEO: 3,000 steps (5-way 1-shot, 96.0%) or
1,800 (5-way 5-shot, 98.3%) of 8 episodes with 5 query images per class and Adam 0.001 (5-way
1-shot with ``--meta-iterations 6000 --lr-schedule cosine --dropout 0.1``: 97.7%);
Reptile: the paper's settings with 500 meta-iterations for 1-shot (90.4% on 5-way, 17 minutes
on one thread) and 1,500 for 5-shot, 10 test steps at most;
for the other rows, smaller budgets of the same kind for trying the pipeline on a CPU, not
tuned for accuracy.

The process keeps freed memory (:func:`keep_freed_memory`): on the 2-core CPU machine of
benchmarks/RESULTS.md that took about 40% off the CPU time of a test forward pass and a few
percent off a MAML meta-iteration (``conv4_speed.py`` with and without it). It changes no result.

Output: per row a progress log, a Markdown row (also at the end, as a table) and, with
``--json``, one JSON line per row appended to the file (seed, budget, wall and CPU time of
training and test, device, threads, load average).

    python benchmarks/reproduce_omniglot.py [--methods maml protonet ...] [--ways 5 20] [--shots 1 5]
        [--budget paper|cpu] [--meta-iterations N] [--meta-batch-size N] [--episodes 1000]
        [--lr-schedule constant|cosine] [--meta-lr-schedule constant|cosine] [--dropout P]
        [--device cpu|cuda|auto] [--threads 1] [--seed 0] [--data-root DIR] [--json rows.jsonl]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ValidationError

import scenarios
import strategies
from metatrain import meta_train
from simulator.evaluator import EvalSettings, Evaluator
from scenarios.data import load_omniglot
from simulator.runner import resolve_device

METHODS = ("maml", "fomaml", "protonet", "matching", "reptile", "snail", "leo")
STRATEGY = {"maml": "maml", "fomaml": "maml", "protonet": "protomemory", "matching": "matching",
            "reptile": "reptile", "snail": "snail", "leo": "leo"}
TITLE = {"maml": "MAML", "fomaml": "first-order MAML", "protonet": "Prototypical Networks (protomemory)",
         "matching": "Matching Networks", "reptile": "Reptile", "snail": "SNAIL", "leo": "LEO"}

# ../shared/REFERENCE.md, few-shot Omniglot, keyed by (ways, shots). REFERENCE.md has no
# first-order MAML figures.
PUBLISHED = {
    "maml": ({(5, 1): 98.7, (5, 5): 99.9, (20, 1): 95.8, (20, 5): 98.9}, "Finn et al. 2017, Table 1"),
    "protonet": ({(5, 1): 98.8, (5, 5): 99.7, (20, 1): 96.0, (20, 5): 98.9}, "Snell et al. 2017, Table 1"),
    "matching": ({(5, 1): 98.1, (5, 5): 98.9, (20, 1): 93.8, (20, 5): 98.5}, "Vinyals et al. 2016, Table 1"),
    "reptile": ({(5, 1): 97.68, (5, 5): 99.48, (20, 1): 89.43, (20, 5): 97.12},
                "Nichol et al. 2018, Table 1 (transductive)"),
    "snail": ({(5, 1): 99.07, (5, 5): 99.78, (20, 1): 97.64, (20, 5): 99.36}, "Mishra et al. 2018, Table 1"),
}


@dataclass
class Budget:
    """A row's meta-training settings: the strategy's parameters and the test-time steps."""

    name: str
    params: dict[str, Any]
    adapt_steps: int
    train_ways: int | None = None  # classes of a training episode when not the test's N


REPTILE_COMMANDS = {  # (ways, shots) -> their --train-shots, --inner-batch, --inner-iters, --learning-rate,
    # --meta-step (annealed to --meta-step-final 0), --meta-batch, --meta-iters, --eval-iters
    (5, 1): (15, 25, 3, 0.001, 1.0, 10, 100_000, 5),      # the transductive 1-shot 5-way command
    (5, 5): (10, 10, 5, 0.0015, 0.7, 5, 100_000, 100),
    (20, 1): (9, 15, 12, 0.00046, 1.0, 3, 200_000, 97),
    (20, 5): (12, 20, 12, 0.00046, 1.0, 3, 200_000, 97),
}


def paper_budget(method: str, ways: int, shots: int) -> Budget:
    """The training budget of the paper that introduced ``method`` (see the module docstring)."""
    if method in ("maml", "fomaml"):
        five = ways <= 5
        params = {"meta_lr": 0.001, "meta_iterations": 60_000, "meta_batch_size": 32 if five else 16,
                  "inner_steps": 1 if five else 5, "inner_lr": 0.4 if five else 0.1, "query": shots,
                  "first_order": method == "fomaml"}
        return Budget("paper", params, adapt_steps=3 if five else 5)
    if method == "protonet":
        params = {"lr": 0.001, "meta_iterations": 20_000, "meta_batch_size": 1, "shots": shots, "query": 5,
                  "embedding_dim": 64}
        return Budget("paper", params, adapt_steps=1, train_ways=60)
    if method == "matching":
        params = {"lr": 0.001, "meta_iterations": 20_000, "meta_batch_size": max(1, 60 // ways), "shots": shots,
                  "query": 5, "embedding_dim": 64}
        return Budget("paper", params, adapt_steps=1)
    if method == "reptile":  # the authors' README commands (github.com/openai/supervised-reptile)
        # (train shots, inner batch, inner steps, Adam rate, epsilon, meta-batch, iterations, test steps)
        train_shots, batch, steps, lr, epsilon, meta_batch, iterations, test_steps = REPTILE_COMMANDS[
            (5 if ways <= 5 else 20, 1 if shots == 1 else 5)]
        params = {"inner_optimizer": "adam", "inner_lr": lr, "inner_batch_size": batch, "inner_steps": steps,
                  "epsilon": epsilon, "epsilon_final": 0.0, "meta_batch_size": meta_batch,
                  "meta_iterations": iterations, "shots": shots, "query": train_shots - shots}
        return Budget("paper", params, adapt_steps=test_steps)
    if method == "snail":
        params = {"lr": 0.0001, "meta_iterations": 50_000, "meta_batch_size": 32, "shots": shots, "query": 1,
                  "embedding_dim": 64}
        return Budget("paper", params, adapt_steps=0)
    if method == "leo":  # the authors' config.py; LEO's other options default to it (strategies/leo.py)
        params = {"lr": 0.0001, "meta_iterations": 100_000, "meta_batch_size": 12, "shots": shots, "query": 15,
                  "embedding_dim": 64, "latent_dim": 64, "inner_steps": 5, "finetune_steps": 5, "dropout": 0.5}
        return Budget("paper", params, adapt_steps=5)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def cpu_budget(method: str, ways: int, shots: int) -> Budget:
    """The reduced budget for a CPU (see benchmarks/RESULTS.md for what it reaches)."""
    budget = paper_budget(method, ways, shots)
    budget.name = "cpu"
    if method in ("maml", "fomaml"):
        budget.params.update(meta_iterations=2_400 if ways <= 5 else 1_000, meta_batch_size=16 if ways <= 5 else 8)
    elif method == "protonet":
        budget.params.update(meta_iterations=1_600)
    elif method == "matching":
        budget.params.update(meta_iterations=2_000)
    elif method == "reptile":  # the paper's settings, fewer iterations (annealed over those): 5-way 1-shot
        # 2.2 s of CPU an iteration on one thread; 5-shot about a third of that, and 10 test steps, not 100
        budget.params.update(meta_iterations=500 if shots == 1 else 1_500)
        budget.adapt_steps = min(budget.adapt_steps, 10)
    elif method == "snail":  # 8 episodes x 30 images: 0.45 s of CPU an iteration (2 cores, load 5)
        budget.params.update(lr=0.001, meta_iterations=4_000 if ways <= 5 else 1_000, meta_batch_size=8, query=5)
    elif method == "leo":  # 8 episodes x 30 images (5-way 1-shot): 0.4 s of CPU an iteration (2 cores, load 6)
        iterations = (3_000 if shots == 1 else 1_800) if ways <= 5 else 1_000  # 5-shot: 0.68 s an iteration
        budget.params.update(lr=0.001, meta_iterations=iterations, meta_batch_size=8, query=5)
    return budget


OVERRIDES = {  # command-line option -> strategy parameter, and which strategies have it
    "meta_iterations": ("meta_iterations", METHODS),
    "meta_batch_size": ("meta_batch_size", METHODS),
    "inner_steps": ("inner_steps", ("maml", "fomaml", "reptile", "leo")),
    "inner_lr": ("inner_lr", ("maml", "fomaml", "reptile")),
    "meta_lr": ("meta_lr", ("maml", "fomaml")),
    "lr": ("lr", ("protonet", "matching", "snail", "leo")),
    "epsilon": ("epsilon", ("reptile",)),
    "lr_schedule": ("lr_schedule", ("protonet", "matching", "snail", "leo")),
    "meta_lr_schedule": ("meta_lr_schedule", ("maml", "fomaml")),
    "dropout": ("dropout", ("leo",)),
    "train_query": ("query", METHODS),
}


def row_budget(method: str, ways: int, shots: int, args) -> Budget:
    """The preset budget of ``--budget`` with the options given on the command line applied."""
    budget = (cpu_budget if args.budget == "cpu" else paper_budget)(method, ways, shots)
    changed = []
    for option, (param, methods) in OVERRIDES.items():
        value = getattr(args, option)
        if value is not None and method in methods:
            budget.params[param] = value
            changed.append(f"{param}={value}")
    if args.adapt_steps is not None:
        budget.adapt_steps = args.adapt_steps
        changed.append(f"adapt_steps={args.adapt_steps}")
    if changed:
        budget.name += " + " + ", ".join(changed)
    return budget


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory instead of returning it to the system.

    A conv4 activation of a meta-batch is tens of MB; glibc serves blocks that large with a
    fresh ``mmap`` and unmaps them on free, so every such tensor page-faults its memory in again.
    With mmap off and trimming deferred, the process reuses its heap (what that saves: the
    module docstring). Returns whether it applied (glibc only).
    """
    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    return all([libc.mallopt(m_mmap_max, 0), libc.mallopt(m_trim_threshold, 2**31 - 1),
                libc.mallopt(m_top_pad, 2**28)])


def check_rows(args) -> None:
    """Check every row's test and training episodes, its strategy options and the data files
    before any row trains (the last row may start hours after the first). Raises ValueError
    naming the row and the option, or :class:`~scenarios.ScenarioError` for the data files."""
    fewshot = scenarios.family("omniglot-fewshot").params
    for ways in args.ways:
        for shots in args.shots:
            for method in args.methods:
                budget = row_budget(method, ways, shots, args)
                try:
                    fewshot(ways=ways, shots=shots, query=args.query, data_root=args.data_root)
                    strategies.build(STRATEGY[method], budget.params)
                    fewshot(ways=budget.train_ways or ways, shots=budget.params.get("shots") or shots,
                            query=budget.params["query"], data_root=args.data_root)
                except ValidationError as err:
                    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                                         if e["loc"] else e["msg"].removeprefix("Value error, ") for e in err.errors())
                    raise ValueError(f"row {method} {ways}-way {shots}-shot ({budget.name} budget): "
                                     f"{problems}") from None
    load_omniglot(args.data_root)  # checks the files against their checksums and fills the cache


def at_least(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def reproduce(method: str, ways: int, shots: int, args, device: torch.device) -> dict[str, Any]:
    budget = row_budget(method, ways, shots, args)
    stream = scenarios.build("omniglot-fewshot", {"ways": ways, "shots": shots, "query": args.query,
                                                  "data_root": args.data_root}, seed=args.seed)
    # The stream the strategy learns from: the same training characters, with the training
    # episodes' number of classes where the paper's differs from the test's.
    train_stream = stream if budget.train_ways in (None, ways) else scenarios.build(
        "omniglot-fewshot", {"ways": budget.train_ways, "shots": shots, "query": args.query,
                             "data_root": args.data_root}, seed=args.seed)
    strategy = strategies.build(STRATEGY[method], budget.params, label=method)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)  # the initial weights come from the seed, as in the runner
        model = strategies.build_model("conv4", {"filters": 64}, strategy.model_spec(train_stream.spec))
    strategy.setup(model, train_stream.spec, device, seed=args.seed)
    print(f"\n{TITLE[method]}, {ways}-way {shots}-shot, budget {budget.name}: {budget.params}, "
          f"{train_stream.spec.ways}-way training episodes, {budget.adapt_steps} step(s) at test", flush=True)
    load_before = os.getloadavg()
    train_wall, train_cpu = meta_train(strategy, train_stream[0].training_view(),
                                       budget.params["meta_iterations"], args.log_every)

    settings = EvalSettings(episodes=args.episodes, adapt_steps=budget.adapt_steps, query=args.query,
                            chunk=args.chunk)
    wall, cpu = time.perf_counter(), time.process_time()
    evaluator = Evaluator(stream, settings, seed=args.seed, device=device)
    accuracies, _ = evaluator.episode_scores(strategy, 0)          # (adapt_steps + 1, episodes)
    test_wall, test_cpu = time.perf_counter() - wall, time.process_time() - cpu
    final = accuracies[-1]
    published, source = PUBLISHED.get(method, ({}, None))
    return {
        "method": method, "strategy": STRATEGY[method], "ways": ways, "shots": shots, "seed": args.seed,
        "budget": budget.name, "params": budget.params, "train_ways": train_stream.spec.ways,
        "adapt_steps": budget.adapt_steps,
        "test_episodes": len(final), "test_query_per_class": args.query,
        "accuracy": 100 * float(final.mean()),
        "ci95": 100 * 1.96 * float(final.std(ddof=1)) / math.sqrt(len(final)),
        "accuracy_by_step": [100 * float(a) for a in accuracies.mean(axis=1)],
        "published": published.get((ways, shots)), "published_source": source,
        "train_wall_s": train_wall, "train_cpu_s": train_cpu, "test_wall_s": test_wall, "test_cpu_s": test_cpu,
        "device": str(device), "device_name": device_name(device), "threads": torch.get_num_threads(),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s)"


def markdown_row(r: dict[str, Any]) -> str:
    published = "-" if r["published"] is None else f"{r['published']:.2f}".rstrip("0").rstrip(".")
    return (f"| {TITLE[r['method']]} | {r['ways']}-way {r['shots']}-shot | {r['accuracy']:.2f} +- {r['ci95']:.2f} | "
            f"{published} | {r['budget']} | {r['params']['meta_iterations']} x {r['params']['meta_batch_size']} "
            f"({r['train_ways']}-way) | "
            f"{r['adapt_steps']} | {r['seed']} | {r['device']} ({r['threads']} thr) | "
            f"{r['train_wall_s'] / 60:.1f} / {r['train_cpu_s'] / 60:.1f} | {r['test_wall_s'] / 60:.1f} / "
            f"{r['test_cpu_s'] / 60:.1f} | {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |")


HEADER = ("| method | task | accuracy % (95% CI) | published | budget | iterations x episodes | test steps | seed | "
          "device | train min (wall / CPU) | test min (wall / CPU) | load (start / end) |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--ways", nargs="+", type=at_least(2), default=[5, 20])
    p.add_argument("--shots", nargs="+", type=at_least(1), default=[1, 5])
    p.add_argument("--budget", choices=["paper", "cpu"], default="paper",
                   help="preset training budget: the papers' (default) or the reduced CPU one")
    p.add_argument("--meta-iterations", type=at_least(1), help="override: meta-iterations (training steps)")
    p.add_argument("--meta-batch-size", type=at_least(1), help="override: episodes per meta-iteration")
    p.add_argument("--inner-steps", type=at_least(0),
                   help="override (MAML, FOMAML, Reptile, LEO): inner steps in training")
    p.add_argument("--inner-lr", type=float, help="override (MAML, FOMAML, Reptile): inner step size, also at test")
    p.add_argument("--meta-lr", type=float, help="override (MAML, FOMAML): Adam learning rate")
    p.add_argument("--lr", type=float, help="override (Prototypical, Matching, SNAIL, LEO): Adam learning rate")
    p.add_argument("--epsilon", type=float, help="override (Reptile): outer step size")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"],
                   help="override (Prototypical, Matching, SNAIL, LEO): how the Adam rate moves over training")
    p.add_argument("--meta-lr-schedule", choices=["constant", "cosine"],
                   help="override (MAML, FOMAML): how the Adam rate moves over training")
    p.add_argument("--dropout", type=float, help="override (LEO): dropout rate on the embeddings in training")
    p.add_argument("--train-query", type=at_least(1), help="override: query images per class of a training episode")
    p.add_argument("--adapt-steps", type=at_least(0), help="override: adaptation steps at test")
    p.add_argument("--episodes", type=at_least(1), default=1000, help="test episodes (default 1000)")
    p.add_argument("--query", type=at_least(1), default=5, help="query images per class of a test episode")
    p.add_argument("--chunk", type=at_least(1), default=25, help="test episodes adapted and scored at once")
    p.add_argument("--log-every", type=at_least(1), default=250, help="iterations between progress lines")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--threads", type=at_least(1), default=1,
                   help="torch CPU threads (default 1: on a small machine shared with other jobs, more "
                        "threads only wait for each other)")
    p.add_argument("--data-root", default=os.environ.get("LIFELONG_DATA"),
                   help="folder holding omniglot/ (default: $LIFELONG_DATA)")
    p.add_argument("--json", help="append one JSON line per row to this file")
    args = p.parse_args()
    try:
        device = resolve_device(args.device)
        check_rows(args)
    except ValueError as err:
        p.exit(2, f"{p.prog}: error: {err}\n")
    torch.set_num_threads(args.threads)
    tuned = keep_freed_memory()
    print(f"torch {torch.__version__}, device {device} ({device_name(device)}), {args.threads} thread(s), "
          f"malloc keeps freed memory: {tuned}, load average {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for method in args.methods:
        for ways in args.ways:
            for shots in args.shots:
                r = reproduce(method, ways, shots, args, device)
                r["malloc_keeps_freed_memory"] = tuned
                rows.append(r)
                print(HEADER.splitlines()[0] + "\n" + markdown_row(r), flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(r) + "\n")
    print("\n" + HEADER)
    for r in rows:
        print(markdown_row(r))


if __name__ == "__main__":
    main()
