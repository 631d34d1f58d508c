"""Conformance: every registered strategy and every registered scenario against the protocol's contract.

The contract of a strategy (``strategies/base.py``) and of a stream (``scenarios/base.py``) is
written here once, as plain check functions that each assert one rule and say, when it is
broken, which strategy or scenario broke which rule:

============================  ============================================================
check                         rule
============================  ============================================================
check_setup                   ``setup`` takes a backbone sized by ``model_spec``, on a stream
                              the strategy declares (``incompatibility`` is None)
check_state_dict_after_setup  a strategy just set up has a ``state_dict`` that a fresh one
                              loads and then predicts bit-identically
check_learn                   ``learn(task)`` on a training view runs and returns plain
                              finite ints and floats
check_adapt                   ``adapt(support, K)`` yields exactly K + 1 states (k = 0..K);
                              once it has learned, adapting leaves its state_dict unchanged
check_predict                 ``predict(state, x)`` is (episodes, items, outputs), finite,
                              for every k; predicting leaves the state_dict unchanged
check_round_trip              a ``state_dict`` written and read as the runner's checkpoints
                              are (``weights_only``), loaded into a fresh strategy of another
                              seed, predicts bit-identically, and both still agree (outputs
                              and state_dicts) after learning the next task
check_determinism             two fresh runs with one seed: bit-identical predictions and
                              state (hashes); setup's seed alone changed: other predictions
check_online                  ``predict_online`` is (batch, outputs) and finite, ``observe``
                              returns numbers, a checkpoint taken online resumes
                              bit-identically; without ``observe``: a NotImplementedError
                              naming the strategy
check_online_refusal          without ``observe``, the checks before a run
                              (``simulator.preflight``) refuse an online stream, saying so
check_refusal                 a stream of a kind (or protocol) the strategy does not declare
                              is refused by ``incompatibility`` with a sentence naming the
                              strategy and the kind, and reported by the checks before a run
                              under the field ``strategies.<label>.strategy``
check_scenario_stream         a built stream's spec, tasks, pools, episodes (ways, shots,
                              query), labels, masks and online batches keep their promises
check_scenario_seed           a seed gives a bit-identical stream; another seed another
                              stream, unless the family is declared seed-independent
============================  ============================================================

Every registered strategy (``strategies.available()``) is checked on each conformance stream
(:data:`STREAMS`) whose kind and protocol it declares: two tasks of 4-d Gaussian blobs under the
class-, task- and domain-incremental and few-shot protocols, and two tasks of a few
low-amplitude sinusoids, with an MLP of one hidden layer of 8 units; every registered scenario
family (``scenarios.available()``) is built with small parameters. The ``avalanche.*`` baselines
are included, on the class- and task-incremental streams (:data:`AVALANCHE_STREAMS`; importing
avalanche-lib costs ~5 s once, each check then well under a second); ``-k "not avalanche"`` leaves
them out. A contract violation found and not yet fixed is listed in
:data:`KNOWN_VIOLATIONS` (empty today) and runs as a strict xfail naming the rule.

Adding a strategy needs nothing here: it is picked up from the registry and runs with its
default options, or with the tiny options given in :data:`TINY` when its defaults are slow.
Adding a scenario family needs nothing either when its defaults are small; otherwise give it
small parameters in :data:`SMALL` (``DATA`` stands for the test data root), and list it in
:data:`SEED_INDEPENDENT` if its streams do not depend on the seed.

The last part defines strategies that each break one rule on purpose and asserts that the
checks fail on them with the expected message: the conformance test cannot pass vacuously.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from dataclasses import dataclass, replace
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

import scenarios
import strategies

MODEL = ("mlp", {"hidden": [8]})
EPISODES, K = 3, 2           # evaluation-like episodes per check, adaptation steps scored

_EPISODIC = {"meta_iterations": 2, "meta_batch_size": 2, "inner_steps": 1}
_EMBEDDING = {"meta_iterations": 2, "meta_batch_size": 2, "embedding_dim": 8}
_TRAJECTORY = {"meta_iterations": 2, "trajectory_classes": 2, "trajectory_shots": 2, "random_samples": 3,
               "meta_head_size": 6}
_AVALANCHE = {"epochs": 1, "batch_size": 8}

# Tiny options per registered strategy (a strategy not listed runs with its defaults).
TINY: dict[str, dict[str, Any]] = {
    "finetune": {"epochs": 1, "batch_size": 8, "optimizer": "adam", "lr": 0.01},   # optimiser state to carry
    "joint": {"epochs": 1, "batch_size": 8, "momentum": 0.9, "lr": 0.01},
    "maml": _EPISODIC,
    "metasgd": _EPISODIC,
    "reptile": _EPISODIC,
    "continual_maml": _EPISODIC,
    "protomemory": _EMBEDDING,
    "matching": _EMBEDDING,
    "leo": {**_EMBEDDING, "latent_dim": 4, "inner_steps": 1, "finetune_steps": 1},
    "snail": {**_EMBEDDING, "key_sizes": [8, 8], "value_sizes": [4, 4], "tc_filters": [6]},
    "oml": _TRAJECTORY,
    "anml": _TRAJECTORY,
    "mer": {"batches_per_example": 1, "replay_batch_size": 3, "memory_size": 20},
    "lamaml": {"glances": 1, "memory_size": 20, "alpha_init": 0.03, "alpha_lr": 0.01},  # defaults diverge on sines
    "avalanche.AGEM": {**_AVALANCHE, "patterns_per_exp": 10, "sample_size": 5},
    "avalanche.ERACE": {**_AVALANCHE, "mem_size": 20},
    "avalanche.EWC": _AVALANCHE,
    "avalanche.GDumb": {**_AVALANCHE, "mem_size": 20},
    "avalanche.GEM": {**_AVALANCHE, "patterns_per_exp": 10},
    "avalanche.LaMAML": {**_AVALANCHE, "max_buffer_size": 20},
    "avalanche.LwF": _AVALANCHE,
    "avalanche.MAS": {**_AVALANCHE, "lr": 0.01},
    "avalanche.MER": {**_AVALANCHE, "mem_size": 20, "n_inner_steps": 2},
    "avalanche.Naive": _AVALANCHE,
    "avalanche.Replay": {**_AVALANCHE, "mem_size": 20},
    "avalanche.SI": _AVALANCHE,
}

# Contract violations known today, by (strategy, check): marked xfail (strict) with the rule broken.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


@pytest.fixture(autouse=True)
def one_thread_and_global_rngs_restored():
    """One torch thread (bit-identity holds for one thread count; the models are tiny); the global RNGs,
    which the checks seed as the runner does, are given back as they were."""
    threads, states = torch.get_num_threads(), (random.getstate(), np.random.get_state(), torch.get_rng_state())
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


# -- tiny streams -----------------------------------------------------------------------------------

def blob_stream(protocol: str = "class-incremental") -> scenarios.Stream:
    """Two tasks of 4-d Gaussian blobs (12 training and 6 test items per class), episodes of 2 shots
    and 2 queries. Class-/task-incremental: classes 0, 1 then 2, 3 of one 4-way head, so that task 1's
    episodes lack half the head's classes (the global-label trap: log-probabilities of absent classes
    must stay finite); domain-incremental: classes 0, 1 twice, moved; few-shot: three classes per task,
    2-way episodes."""
    g = torch.Generator().manual_seed(0)
    per_task = 3 if protocol == "few-shot" else 2
    centres = 3 * torch.randn(2 * per_task, 4, generator=g)
    tasks = []
    for t in range(2):
        first = 0 if protocol == "domain-incremental" else per_task * t
        y_train, y_test = (torch.arange(first, first + per_task).repeat(n) for n in (12, 6))
        shift = per_task * t if protocol == "domain-incremental" else 0
        tasks.append((centres[y_train + shift] + torch.randn(len(y_train), 4, generator=g), y_train,
                      centres[y_test + shift] + torch.randn(len(y_test), 4, generator=g), y_test))
    return scenarios.from_tensors(tasks, protocol=protocol, name=f"blobs-{protocol}", shots=2, query=2,
                                  ways=2 if protocol == "few-shot" else None)


def sine_stream() -> scenarios.Stream:
    """Two tasks of a few low-amplitude sinusoids, episodes of 2 support and 3 query points."""
    return scenarios.build("sinusoid", {"num_tasks": 2, "train_functions": 6, "test_functions": 4, "points": 12,
                                        "shots": 2, "query": 3, "amplitude": [0.5, 1.0]}, seed=0)


# The conformance streams, by their label in test ids: a strategy is checked on each whose kind and
# protocol it declares (``kinds``, ``protocols``), and must refuse the others.
STREAMS: dict[str, scenarios.Stream] = {
    **{protocol: blob_stream(protocol) for protocol in ("class-incremental", "task-incremental",
                                                        "domain-incremental", "few-shot")},
    "regression": sine_stream(),
}


# -- helpers ----------------------------------------------------------------------------------------

def digest(value: Any) -> str:
    """SHA-256 of tensors (bytes, shape, dtype), arrays, bytes and plain data, nested in dicts and lists."""
    h = hashlib.sha256()

    def feed(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().contiguous()
            h.update(f"tensor{tuple(v.shape)}{v.dtype}".encode())
            h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
        elif isinstance(v, np.ndarray):
            h.update(f"array{v.shape}{v.dtype}".encode() + np.ascontiguousarray(v).tobytes())
        elif isinstance(v, (bytes, bytearray)):
            h.update(b"bytes" + bytes(v))
        elif isinstance(v, dict):
            for k in sorted(v, key=str):
                h.update(repr(k).encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            h.update(f"seq{len(v)}".encode())
            for item in v:
                feed(item)
        else:
            h.update(repr(v).encode())

    feed(value)
    return h.hexdigest()


def state_digest(state: dict[str, Any]) -> str:
    """:func:`digest` of a ``state_dict`` without its pickled blobs (``bytes``) and their signatures
    (``<key>_mac``): pickling equal objects need not give equal bytes (avalanche's serialised plugin
    state does not), so those are compared through what the strategy predicts instead."""
    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            blobs = {k for k, x in v.items() if isinstance(x, (bytes, bytearray))}
            return {k: strip(x) for k, x in v.items() if k not in blobs and not (
                isinstance(k, str) and k.endswith("_mac") and k[:-4] in blobs)}
        if isinstance(v, (list, tuple)):
            return [strip(x) for x in v]
        return v
    return digest(strip(state))


def seed_globals(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs, as the runner does for a run (and as a
    checkpoint restores them)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


Maker = Callable[..., Any]   # make(seed, globals_seed=None) -> a fresh strategy, set up


def registered_maker(name: str, stream: scenarios.Stream, params: dict[str, Any] | None = None) -> Maker:
    """``make(seed, globals_seed=None)``: a fresh registered strategy ``name`` set up on ``stream`` as
    the runner sets it up: global RNGs seeded (from ``globals_seed``, default ``seed``), the backbone
    (sized by ``model_spec``) built, then ``setup(seed=seed)``."""
    def make(seed: int, globals_seed: int | None = None):
        strategy = strategies.build(name, TINY.get(name, {}) if params is None else params)
        seed_globals(seed if globals_seed is None else globals_seed)
        model = strategies.build_model(MODEL[0], MODEL[1], strategy.model_spec(stream.spec))
        strategy.setup(model, stream.spec, "cpu", seed=seed)
        return strategy
    return make


def eval_episodes(stream: scenarios.Stream, task: int = 0, n: int = EPISODES) -> scenarios.Episodes:
    """``n`` fixed held-out episodes of task ``task`` with the stream's shots and query, as evaluation draws them."""
    return stream[task].episodes("test", n, stream.spec.shots, stream.spec.query, torch.Generator().manual_seed(7))


def predictions(strategy, eps: scenarios.Episodes, steps: int = K) -> list[torch.Tensor]:
    """The outputs on the query sets after 0..steps adaptation steps on the support sets."""
    return [strategy.predict(state, eps.query_x) for state in strategy.adapt(eps.support, steps)]


def online_batch(stream: scenarios.Stream, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Online batch ``index``: one training episode of task 0, support and query together, labelled as
    the protocol labels them (0..ways-1 under few-shot), as an online stream presents a task's data."""
    spec = stream.spec
    eps = stream[0].episodes("train", 1, spec.shots, spec.query, torch.Generator().manual_seed(100 + index))
    return torch.cat([eps.support_x, eps.query_x], dim=1)[0], torch.cat([eps.support_y, eps.query_y], dim=1)[0]


def number_logs(name: str, what: str, logs: Any, rule: str, tensors: bool) -> None:
    """``logs`` is a dict of finite numbers by name: plain ints and floats (``learn``'s logs go into
    results.json), or also one-element tensors with ``tensors`` (``observe``'s, read by the loggers
    only at their interval, so that logging costs no synchronisation)."""
    assert isinstance(logs, dict), f"{name} breaks the {rule} rule: {what} returned {type(logs).__name__}, not a dict"
    kinds = (int, float, torch.Tensor) if tensors else (int, float)
    for key, value in logs.items():
        assert isinstance(key, str), f"{name} breaks the {rule} rule: {what} returned the non-string key {key!r}"
        number = isinstance(value, kinds) and (not isinstance(value, torch.Tensor) or value.numel() == 1)
        assert number and math.isfinite(float(value)), (
            f"{name} breaks the {rule} rule: {what} returned {key} = {value!r}, not a "
            f"{'number' if tensors else 'plain int or float'} (finite)")


def short(values: Any, n: int = 8) -> str:
    """``values`` for a message, cut after ``n`` items."""
    values = list(values)
    return repr(values) if len(values) <= n else f"[{', '.join(map(repr, values[:n]))}, ... ({len(values)} items)]"


def checkpoint_round_trip(state: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``state`` written and read back as the runner's checkpoints are (``torch.load(weights_only=True)``)."""
    from simulator.checkpoint import load_checkpoint, save_checkpoint

    path = folder / "conformance.ckpt"
    save_checkpoint(path, {"strategy": state}, {"test": "conformance"})
    return load_checkpoint(path, {"test": "conformance"})["strategy"]


def expected_shape(stream: scenarios.Stream, eps: scenarios.Episodes) -> tuple[int, ...]:
    return (*eps.query_y.shape[:2], stream.spec.output_size)


# -- the strategy checks -----------------------------------------------------------------------------

def check_setup(name: str, make: Maker, stream: scenarios.Stream):
    """``setup`` works on a stream the strategy accepts; returns the strategy."""
    strategy = make(0)
    why = strategy.incompatibility(stream.spec)
    assert why is None, f"{name} breaks the setup rule: it refuses the {stream.spec.kind} stream it declares: {why}"
    assert strategy.model is not None, f"{name} breaks the setup rule: no model after setup"
    return strategy


def check_state_dict_after_setup(name: str, make: Maker, stream: scenarios.Stream, folder: Path) -> None:
    """A strategy just set up has a ``state_dict`` (a checkpoint may be taken before it learned
    anything), and a fresh strategy of another seed loaded from it predicts bit-identically."""
    strategy = make(0)
    try:
        state = strategy.state_dict()
    except Exception as err:  # noqa: BLE001 - any error breaks the rule; say which
        raise AssertionError(f"{name} breaks the state_dict rule: state_dict() fails right after setup "
                             f"({type(err).__name__}: {err})") from err
    fresh = make(1)
    fresh.load_state_dict(checkpoint_round_trip(state, folder))
    eps = eval_episodes(stream)
    assert digest(predictions(strategy, eps)) == digest(predictions(fresh, eps)), (
        f"{name} breaks the state_dict rule: a fresh strategy loaded from the state_dict of one just set up "
        f"predicts differently")


def check_learn(name: str, strategy, stream: scenarios.Stream) -> None:
    """``learn`` on each task's training view runs and returns plain finite numbers."""
    for task in stream:
        number_logs(name, f"learn({task.name!r})", strategy.learn(task.training_view()), "learn", tensors=False)


def check_adapt(name: str, strategy, support: scenarios.Support, steps: tuple[int, ...] = (0, 1, 3),
                unchanged: bool = True) -> None:
    """``adapt(support, K)`` yields exactly K + 1 states; with ``unchanged``, adapting changes nothing
    of the strategy's state_dict (an evaluation must not alter what the strategy learns next)."""
    before = state_digest(strategy.state_dict()) if unchanged else None
    for k in steps:
        states = list(strategy.adapt(support, k))
        assert len(states) == k + 1, (
            f"{name} breaks the adapt rule: adapt(support, steps={k}) yielded {len(states)} states; the protocol "
            f"promises steps + 1 = {k + 1} (the states after 0..{k} steps)")
    assert not unchanged or state_digest(strategy.state_dict()) == before, (
        f"{name} breaks the adapt rule: adapting changed the strategy's state_dict (evaluation must leave it alone)")


def check_predict(name: str, strategy, stream: scenarios.Stream, eps: scenarios.Episodes,
                  unchanged: bool = True) -> None:
    """``predict`` gives (episodes, items, outputs), finite, for the state after every step; with
    ``unchanged``, predicting changes nothing of the strategy's state_dict."""
    want = expected_shape(stream, eps)
    before = state_digest(strategy.state_dict()) if unchanged else None
    for k, out in enumerate(predictions(strategy, eps)):
        assert isinstance(out, torch.Tensor) and tuple(out.shape) == want, (
            f"{name} breaks the predict rule: after {k} steps predict gave shape "
            f"{tuple(getattr(out, 'shape', ()))}, expected (episodes, items, outputs) = {want}")
        assert torch.isfinite(out).all(), f"{name} breaks the predict rule: non-finite outputs after {k} steps"
    assert not unchanged or state_digest(strategy.state_dict()) == before, (
        f"{name} breaks the predict rule: predicting changed the strategy's state_dict (evaluation must leave it "
        f"alone)")


def check_round_trip(name: str, make: Maker, stream: scenarios.Stream, folder: Path) -> None:
    """A ``state_dict`` through a checkpoint file into a fresh strategy of another seed predicts
    bit-identically, and both still agree bit for bit after learning the next task, state_dicts included."""
    eps = [eval_episodes(stream, t) for t in range(len(stream))]
    original = make(0)
    original.learn(stream[0].training_view())
    saved = checkpoint_round_trip(original.state_dict(), folder)
    fresh = make(1)   # another seed and other initial weights: all must come from the state
    fresh.load_state_dict(saved)
    for when in ("after loading", "after both learned the next task"):
        ours, theirs = ([predictions(s, e) for e in eps] for s in (original, fresh))
        assert digest(ours) == digest(theirs), (
            f"{name} breaks the state_dict rule: a fresh strategy loaded from its state_dict predicts differently "
            f"{when} (state_dict must hold everything needed to resume)")
        if when == "after loading":
            for s in (original, fresh):
                seed_globals(5)   # a checkpoint restores the global RNGs too
                s.learn(stream[1].training_view())
    assert state_digest(original.state_dict()) == state_digest(fresh.state_dict()), (
        f"{name} breaks the state_dict rule: after both learned the next task, the strategy loaded from the "
        f"state_dict has another state_dict than the one that never stopped")


def run_digest(make: Maker, stream: scenarios.Stream, seed: int, globals_seed: int | None = None) -> str:
    """Hash of the predictions (every task, every step, online too) and the final state_dict of a fresh
    run of ``seed`` (global RNGs and initial weights from ``globals_seed``, default ``seed``)."""
    strategy = make(seed, globals_seed)
    outputs = []
    for task in stream:
        strategy.learn(task.training_view())
        outputs.append([predictions(strategy, eval_episodes(stream, t)) for t in range(len(stream))])
    if type(strategy).learns_online():
        x, y = online_batch(stream, 0)
        strategy.observe(x, y)
        outputs.append(strategy.predict_online(online_batch(stream, 1)[0]))
    return digest([outputs, state_digest(strategy.state_dict())])


def check_determinism(name: str, make: Maker, stream: scenarios.Stream) -> None:
    """Same seed: bit-identical predictions and state; another seed given to ``setup`` alone (same initial
    weights, same global RNGs): other predictions, since the strategy's own RNG is seeded from it."""
    first = run_digest(make, stream, 0)
    assert run_digest(make, stream, 0) == first, (
        f"{name} breaks the determinism rule: two fresh runs with seed 0 predict differently (hash mismatch)")
    assert run_digest(make, stream, 1, globals_seed=0) != first, (
        f"{name} breaks the determinism rule: setup seeds 0 and 1 give identical runs from the same initial weights "
        f"(is the strategy's own RNG seeded from setup's seed?)")


def check_online(name: str, make: Maker, stream: scenarios.Stream, folder: Path) -> None:
    """Online methods, where the strategy has them: shapes, logs, a bit-identical online resume.
    Without ``observe``: a NotImplementedError that names the strategy."""
    strategy = make(0)
    x, y = online_batch(stream, 0)
    if not type(strategy).learns_online():
        try:
            strategy.observe(x, y)
        except NotImplementedError as err:
            assert name in str(err) and "online" in str(err), (
                f"{name} breaks the online rule: observe's error does not say which strategy lacks it: {err}")
        else:
            raise AssertionError(f"{name} breaks the online rule: learns_online() is False but observe runs")
        return
    want = (len(x), stream.spec.output_size)
    for t in range(3):
        x, y = online_batch(stream, t)
        out = strategy.predict_online(x)
        assert tuple(out.shape) == want, (
            f"{name} breaks the online rule: predict_online gave shape {tuple(out.shape)} for batch {t}, "
            f"expected (batch, outputs) = {want}")
        assert torch.isfinite(out).all(), f"{name} breaks the online rule: non-finite predict_online outputs"
        number_logs(name, "observe", strategy.observe(x, y, task=0 if t == 2 else None), "online", tensors=True)
    fresh = make(1)
    fresh.load_state_dict(checkpoint_round_trip(strategy.state_dict(), folder))
    for t in (3, 4):
        x, y = online_batch(stream, t)
        assert digest(strategy.predict_online(x)) == digest(fresh.predict_online(x)), (
            f"{name} breaks the online rule: a strategy resumed from a checkpoint taken online predicts "
            f"differently on batch {t}")
        seed_globals(5)
        strategy.observe(x, y)
        seed_globals(5)
        fresh.observe(x, y)


def check_refusal(name: str, stream: scenarios.Stream, params: dict[str, Any]) -> None:
    """A stream of a kind or protocol the strategy does not declare is refused, by ``incompatibility``
    with a sentence naming the strategy and what it lacks, and by the checks before a run."""
    from simulator import preflight
    from simulator.config import ConfigError, validate_experiment

    cls = strategies.strategy_class(name)
    lacking = stream.spec.kind if stream.spec.kind not in cls.kinds else stream.spec.protocol
    why = strategies.build(name, params).incompatibility(stream.spec)
    assert isinstance(why, str) and why, (
        f"{name} breaks the refusal rule: it declares kinds {sorted(cls.kinds)} and protocols {sorted(cls.protocols)} "
        f"but incompatibility() accepts a {stream.spec.protocol} {stream.spec.kind} stream")
    assert name in why and lacking in why, (
        f"{name} breaks the refusal rule: the refusal must name the strategy and what the stream is ({lacking}): "
        f"{why!r}")
    experiment = validate_experiment({"name": "conformance", "scenario": {"name": "sinusoid"},
                                      "strategies": {"under-test": {"strategy": name, **params}}}, "conformance.toml")
    try:
        preflight.check(experiment, {0: stream})
    except ConfigError as err:
        assert "strategies.under-test.strategy" in str(err) and why in str(err), (
            f"{name} breaks the refusal rule: the checks before a run do not report the refusal under its field: {err}")
    else:
        raise AssertionError(f"{name} breaks the refusal rule: the checks before a run accept a {lacking} stream")


def check_online_refusal(name: str, params: dict[str, Any]) -> None:
    """A strategy without ``observe`` is refused on an online stream by the checks before a run, under
    its field, with a sentence naming it."""
    from simulator import preflight
    from simulator.config import ConfigError, validate_experiment

    stream = scenarios.build("online", {"source": "split-digits", "source_params": {"num_tasks": 2},
                                        "examples_per_task": 20}, seed=0)
    experiment = validate_experiment({"name": "conformance", "scenario": {"name": "sinusoid"},
                                      "strategies": {"under-test": {"strategy": name, **params}}}, "conformance.toml")
    try:
        preflight.check(experiment, {0: stream})
    except ConfigError as err:
        assert f"strategies.under-test.strategy: {name} does not learn online" in str(err), (
            f"{name} breaks the online rule: the checks before a run refuse an online stream without saying "
            f"that {name} does not learn online: {err}")
    else:
        raise AssertionError(f"{name} breaks the online rule: the checks before a run accept an online stream "
                             f"for a strategy without observe")


# -- parametrisation over the registry ----------------------------------------------------------------

def _case(name: str, label: str, check: str):
    marks = []
    if name.startswith("avalanche."):
        marks.append(pytest.mark.skipif(find_spec("avalanche") is None, reason="avalanche-lib is not installed"))
    if (name, check) in KNOWN_VIOLATIONS:
        marks.append(pytest.mark.xfail(reason=KNOWN_VIOLATIONS[name, check], strict=True, raises=AssertionError))
    return pytest.param(name, label, id=f"{name}-{label}", marks=marks)


def declares(name: str, stream: scenarios.Stream) -> bool:
    cls = strategies.strategy_class(name)
    return stream.spec.kind in cls.kinds and stream.spec.protocol in cls.protocols


# The avalanche.* baselines (one wrapper class) on the streams that take its two paths, a plain and a
# task-masked model: the other protocols add seconds and no path of theirs.
AVALANCHE_STREAMS = ("class-incremental", "task-incremental")


def supported(check: str) -> list:
    return [_case(n, label, check) for n in strategies.available() for label, s in STREAMS.items()
            if declares(n, s) and (not n.startswith("avalanche.") or label in AVALANCHE_STREAMS)]


def unsupported(check: str) -> list:
    return [_case(n, label, check) for n in strategies.available() for label, s in STREAMS.items()
            if not declares(n, s)]


@pytest.fixture(scope="module")
def streams() -> dict[str, scenarios.Stream]:
    return STREAMS


def test_every_registered_strategy_is_checked_on_some_stream():
    for name in strategies.available():
        assert any(declares(name, s) for s in STREAMS.values()), f"{name} declares no conformance stream's kind"


@pytest.mark.parametrize("name,label", supported("setup-learn-adapt-predict"))
def test_strategy_setup_learn_adapt_predict(name, label, streams):
    stream = streams[label]
    strategy = check_setup(name, registered_maker(name, stream), stream)
    eps = eval_episodes(stream)
    check_adapt(name, strategy, eps.support, unchanged=False)     # evaluation row 0: before any learning
    check_predict(name, strategy, stream, eps, unchanged=False)
    check_learn(name, strategy, stream)
    check_adapt(name, strategy, eps.support)
    check_predict(name, strategy, stream, eps)


@pytest.mark.parametrize("name,label", supported("state_dict after setup"))
def test_strategy_state_dict_right_after_setup(name, label, streams, tmp_path):
    check_state_dict_after_setup(name, registered_maker(name, streams[label]), streams[label], tmp_path)


@pytest.mark.parametrize("name,label", supported("state_dict"))
def test_strategy_state_dict_round_trip(name, label, streams, tmp_path):
    check_round_trip(name, registered_maker(name, streams[label]), streams[label], tmp_path)


@pytest.mark.parametrize("name,label", supported("determinism"))
def test_strategy_determinism(name, label, streams):
    check_determinism(name, registered_maker(name, streams[label]), streams[label])


@pytest.mark.parametrize("name,label", supported("online"))
def test_strategy_online_methods(name, label, streams, tmp_path):
    check_online(name, registered_maker(name, streams[label]), streams[label], tmp_path)


@pytest.mark.parametrize("name", [n for n in strategies.available()
                                  if not strategies.strategy_class(n).learns_online()])
def test_strategy_without_observe_is_refused_on_an_online_stream(name):
    check_online_refusal(name, TINY.get(name, {}))


@pytest.mark.parametrize("name,label", unsupported("refusal"))
def test_strategy_refuses_a_stream_it_does_not_declare(name, label, streams):
    check_refusal(name, streams[label], TINY.get(name, {}))


# -- the scenario checks ---------------------------------------------------------------------------------

DATA = object()   # stands for the test data root (tests/conftest.py) in SMALL

# Small parameters per registered family (a family not listed is built with its defaults).
SMALL: dict[str, dict[str, Any]] = {
    "sinusoid": {"num_tasks": 2, "train_functions": 4, "test_functions": 4, "points": 20},
    "split-digits": {"num_tasks": 2},
    "permuted-digits": {"num_tasks": 2},
    "rotated-digits": {"num_tasks": 2},
    "split-mnist": {"num_tasks": 2, "train_per_class": 20, "test_per_class": 20, "data_root": DATA},
    "split-fashion-mnist": {"num_tasks": 2, "train_per_class": 20, "test_per_class": 20, "data_root": DATA},
    "permuted-mnist": {"num_tasks": 2, "train_per_task": 100, "test_per_task": 100, "shots": 1, "query": 2,
                       "data_root": DATA},
    "rotated-mnist": {"num_tasks": 2, "train_per_task": 100, "test_per_task": 100, "shots": 1, "query": 2,
                      "random_angles": True, "data_root": DATA},
    "omniglot-fewshot": {"ways": 3, "shots": 1, "query": 2, "data_root": DATA},
    "omniglot-alphabets": {"num_tasks": 2, "ways": 3, "shots": 1, "query": 2, "data_root": DATA},
    "schedule": {"parts": [{"name": "split-digits", "num_tasks": 2}, {"name": "split-digits", "num_tasks": 2}],
                 "order": "seeded", "sequence": [0, 1, 2, 3, 1], "cycles": 2},
    "osaka": {"ways": 3, "shots": 1, "query": 2, "length": 12, "switch_prob": 0.3, "recur_prob": 0.5,
              "data_root": DATA},
    "switching-sinusoid": {"length": 12, "hazard": 0.3, "train_functions": 4, "test_functions": 4},
    "online": {"source": "split-digits", "source_params": {"num_tasks": 2}, "examples_per_task": 20,
               "batch_size": 6},
}

# Families whose streams do not depend on the seed (fixed splits; only the episodes drawn are random).
SEED_INDEPENDENT: dict[str, str] = {
    "omniglot-fewshot": "Vinyals' fixed character split: the seed only draws episodes, with the caller's generator",
}


def scenario_params(name: str, request) -> dict[str, Any]:
    params = dict(SMALL.get(name, {}))
    if name not in SMALL and "data_root" in scenarios.family(name).params.model_fields:
        params["data_root"] = DATA
    if any(v is DATA for v in params.values()):
        root = str(request.getfixturevalue("data_root"))
        params = {k: root if v is DATA else v for k, v in params.items()}
    return params


def _task_ways(spec: scenarios.StreamSpec, task: scenarios.Task) -> int:
    if spec.kind == "regression":
        return 1
    return spec.ways if spec.protocol == "few-shot" else len(task.classes)


def check_scenario_task(name: str, spec: scenarios.StreamSpec, task: scenarios.Task, shots: int, query: int) -> None:
    """One task's fields, pools and episodes against its stream's spec."""
    where = f"scenario {name} breaks the stream rule: task {task.name!r}"
    assert (task.protocol, task.output_size) == (spec.protocol, spec.output_size), (
        f"{where} has protocol {task.protocol} and {task.output_size} outputs; the spec says {spec.protocol} and "
        f"{spec.output_size}")
    assert len(task.train) > 0 and task.test is not None and len(task.test) > 0, f"{where} has an empty pool"
    if spec.kind == "classification" and spec.protocol != "few-shot":   # few-shot classes: pool identities
        assert task.classes and all(0 <= c < spec.output_size for c in task.classes), (
            f"{where} has classes {short(task.classes)} outside 0..{spec.output_size - 1}")
    if spec.protocol == "few-shot":
        assert task.ways == spec.ways, f"{where} has {task.ways}-way episodes; the spec says {spec.ways}"
    ways = _task_ways(spec, task)
    for split in ("train", "test"):
        pool = getattr(task, split)
        if len(pool) <= 5000:   # whole pools only when small (Omniglot's meta-training pool is 96000 images)
            x, y = pool.examples()
            assert tuple(x.shape) == (len(pool), *spec.input_shape) and len(y) == len(pool), (
                f"{where}: its {split} pool's examples have shapes {tuple(x.shape)} and {tuple(y.shape)} for "
                f"{len(pool)} items of shape {spec.input_shape}")
        eps = task.episodes(split, 2, shots, query, torch.Generator().manual_seed(0))
        target = (spec.output_size,) if spec.kind == "regression" else ()
        for part, items in (("support", ways * shots), ("query", ways * query)):
            ex, ey = getattr(eps, f"{part}_x"), getattr(eps, f"{part}_y")
            assert tuple(ex.shape) == (2, items, *spec.input_shape) and tuple(ey.shape) == (2, items, *target), (
                f"{where}: 2 {split} episodes of {ways} ways, {shots} shots and {query} queries have {part} shapes "
                f"{tuple(ex.shape)} and {tuple(ey.shape)}, expected {(2, items, *spec.input_shape)} and "
                f"{(2, items, *target)}")
            assert ex.is_floating_point() and torch.isfinite(ex).all(), f"{where}: {part} inputs not finite floats"
            if spec.kind == "classification":
                per = shots if part == "support" else query
                labels = tuple(range(ways)) if spec.protocol == "few-shot" else tuple(sorted(task.classes))
                for e in range(2):
                    found, counts = torch.unique(ey[e], return_counts=True)
                    assert tuple(found.tolist()) == labels and (counts == per).all(), (
                        f"{where}: a {split} episode's {part} labels are {short(ey[e].tolist(), 20)}; expected "
                        f"{per} of each of {short(labels)}")
        if spec.protocol == "task-incremental":
            assert eps.mask is not None and eps.mask.nonzero().flatten().tolist() == sorted(task.classes), (
                f"{where}: the task-incremental mask does not select the task's classes")
        else:
            assert eps.mask is None, f"{where}: a {spec.protocol} episode carries a mask"


def check_scenario_stream(name: str, stream) -> None:
    """A built stream: its spec, tasks and episodes; an online stream's batches, columns and pre-training."""
    spec = stream.spec
    where = f"scenario {name} breaks the stream rule:"
    assert spec.kind in ("classification", "regression") and spec.protocol in scenarios.PROTOCOLS, (
        f"{where} kind {spec.kind!r}, protocol {spec.protocol!r}")
    assert spec.output_size > 0 and spec.shots > 0 and spec.query > 0, f"{where} spec {spec}"
    few_shot = spec.protocol == "few-shot" and spec.kind == "classification"
    assert (spec.ways is not None) == few_shot and (not few_shot or 1 < spec.ways <= spec.output_size), (
        f"{where} ways = {spec.ways} for a {spec.protocol} {spec.kind} stream of {spec.output_size} outputs")
    online = isinstance(scenarios.family(name), scenarios.OnlineFamily)
    assert isinstance(stream, scenarios.OnlineStream if online else scenarios.Stream), (
        f"{where} the family is {'an online' if online else 'a task'} family but built a {type(stream).__name__}")
    if not online:
        assert len(stream) >= 1 and sorted({t.id for t in stream}) == list(range(stream.num_columns)), (
            f"{where} task ids {[t.id for t in stream]} are not 0..{stream.num_columns - 1}")
        for task in {t.id: t for t in stream}.values():
            check_scenario_task(name, spec, task, spec.shots, spec.query)
            check_scenario_task(name, spec, task, 1, 1)
        return
    meta = stream.meta()
    assert all(len(meta[k]) == len(stream) for k in ("task", "pool", "switch")), f"{where} metadata lengths differ"
    for t in sorted({0, 1, len(stream) - 1}):
        batch = stream.batch(t)
        size = len(batch.x)
        target = (size, spec.output_size) if spec.kind == "regression" else (size,)
        assert size > 0 and tuple(batch.x.shape[1:]) == spec.input_shape and tuple(batch.y.shape) == target, (
            f"{where} batch {t} has shapes {tuple(batch.x.shape)} and {tuple(batch.y.shape)}")
        assert torch.isfinite(batch.x).all(), f"{where} batch {t} has non-finite inputs"
        if spec.kind == "classification":
            assert batch.y.dtype == torch.int64 and 0 <= int(batch.y.min()) and int(batch.y.max()) < spec.output_size, (
                f"{where} batch {t} has labels outside 0..{spec.output_size - 1}")
        assert (batch.task, batch.pool, bool(batch.switch)) == (int(meta["task"][t]), int(meta["pool"][t]),
                                                                  bool(meta["switch"][t])), (
            f"{where} batch {t} disagrees with the stream's metadata")
        assert digest([batch.x, batch.y]) == digest([stream.batch(t).x, stream.batch(t).y]), (
            f"{where} batch {t} differs when drawn again (batches must be a pure function of the seed and t)")
    assert [c.id for c in stream.columns] == list(range(len(stream.columns))), f"{where} column ids"
    for column in stream.columns:
        check_scenario_task(name, spec, column, spec.shots, spec.query)
    if stream.pretrain is not None:
        pretrain = stream.pretrain.spec
        for task in {t.id: t for t in stream.pretrain}.values():
            check_scenario_task(name, pretrain, task, pretrain.shots, pretrain.query)


def stream_digest(stream) -> str:
    """Hash of a stream's content: every task's (or column's) identity, pool sizes and episodes drawn
    with a fixed generator from both pools; an online stream's metadata and every batch too."""
    def tasks_part(tasks, spec):
        part = [repr(spec)]
        for task in tasks:
            part.append([task.id, task.name, task.classes, len(task.train), len(task.test)])
            for split in ("train", "test"):
                eps = task.episodes(split, 2, spec.shots, spec.query, torch.Generator().manual_seed(0))
                part.append([eps.support_x, eps.support_y, eps.query_x, eps.query_y])
        return part

    if isinstance(stream, scenarios.Stream):
        return digest(tasks_part(stream, stream.spec))
    batches = [[b.x, b.y, b.task, b.pool, b.switch] for b in stream.batches()]
    pretrain = None if stream.pretrain is None else tasks_part(stream.pretrain, stream.pretrain.spec)
    return digest([tasks_part(stream.columns, stream.spec), stream.meta(), batches, pretrain])


def check_scenario_seed(name: str, build: Callable[[int], Any], random_family: bool) -> None:
    """One seed: a bit-identical stream; another seed: another stream (for a random family)."""
    first = stream_digest(build(0))
    assert stream_digest(build(0)) == first, f"scenario {name} breaks the seed rule: two builds with seed 0 differ"
    other = stream_digest(build(1)) != first
    if random_family:
        assert other, f"scenario {name} breaks the seed rule: seeds 0 and 1 give the same stream"
    else:
        assert not other, f"scenario {name} is declared seed-independent but seeds 0 and 1 give different streams"


@pytest.mark.parametrize("name", scenarios.available())
def test_scenario_builds_with_consistent_shapes(name, request):
    check_scenario_stream(name, scenarios.build(name, scenario_params(name, request), seed=0))


@pytest.mark.parametrize("name", scenarios.available())
def test_scenario_seed_determines_the_stream(name, request):
    params = scenario_params(name, request)
    check_scenario_seed(name, lambda seed: scenarios.build(name, params, seed=seed), name not in SEED_INDEPENDENT)


# -- strategies that break one rule each: the checks must catch them --------------------------------------

Finetune = strategies.strategy_class("finetune")
BROKEN_PARAMS = {"epochs": 1, "batch_size": 8}


class ShortAdapt(Finetune):
    """Yields K states for K steps: the state after the last step is missing."""

    name = "broken-short-adapt"

    def adapt(self, support, steps):
        return itertools.islice(super().adapt(support, steps), steps)


class FlatPredict(Finetune):
    """Returns (episodes * items, outputs): the episode dimension is flattened away."""

    name = "broken-flat-predict"

    def predict(self, state, x):
        return super().predict(state, x).flatten(0, 1)


class ForgetfulStateDict(Finetune):
    """Keeps a learned output offset that its state_dict forgets."""

    name = "broken-forgetful-state-dict"

    def setup(self, model, spec, device, seed=0):
        super().setup(model, spec, device, seed)
        self.offset = torch.randn(spec.output_size, generator=self.generator)

    def learn(self, task):
        self.offset = self.offset + 0.1   # learned state, outside the model and missing from state_dict
        return super().learn(task)

    def predict(self, state, x):
        return super().predict(state, x) + self.offset


_instances = itertools.count()


class Nondeterministic(Finetune):
    """Adds noise from a generator seeded per instance, not from the seed: two runs differ."""

    name = "broken-nondeterministic"

    def setup(self, model, spec, device, seed=0):
        super().setup(model, spec, device, seed)
        self.noise = torch.Generator().manual_seed(1000 + next(_instances))

    def predict(self, state, x):
        out = super().predict(state, x)
        return out + 1e-3 * torch.randn(out.shape, generator=self.noise)


class IgnoresSeed(Finetune):
    """Seeds its own generator with 0 whatever seed it is given: runs of different seeds coincide."""

    name = "broken-ignores-seed"

    def setup(self, model, spec, device, seed=0):
        super().setup(model, spec, device, 0)


class WideOnline(Finetune):
    """``predict_online`` returns one output too many."""

    name = "broken-wide-online"

    def predict_online(self, x):
        out = super().predict_online(x)
        return torch.cat([out, out[:, :1]], dim=1)


def broken_maker(cls, stream: scenarios.Stream) -> Maker:
    def make(seed: int, globals_seed: int | None = None):
        strategy = cls(cls.Config(**BROKEN_PARAMS))
        seed_globals(seed if globals_seed is None else globals_seed)
        strategy.setup(strategies.build_model(MODEL[0], MODEL[1], stream.spec), stream.spec, "cpu", seed=seed)
        return strategy
    return make


@dataclass(frozen=True)
class Broken:
    cls: type
    check: Callable[[str, Maker, scenarios.Stream, Path], None]
    message: str


def _adapt(name, make, stream, folder):
    check_adapt(name, make(0), eval_episodes(stream).support)


def _predict(name, make, stream, folder):
    check_predict(name, make(0), stream, eval_episodes(stream))


BROKEN = {
    "adapt yields K states": Broken(
        ShortAdapt, _adapt,
        r"broken-short-adapt breaks the adapt rule: adapt\(support, steps=0\) yielded 0 states; the protocol "
        r"promises steps \+ 1 = 1"),
    "predict's shape": Broken(FlatPredict, _predict, r"broken-flat-predict breaks the predict rule: after 0 steps "
                              r"predict gave shape \(12, 4\), expected \(episodes, items, outputs\) = \(3, 4, 4\)"),
    "state_dict forgets a tensor": Broken(
        ForgetfulStateDict, check_round_trip,
        r"broken-forgetful-state-dict breaks the state_dict rule: a fresh strategy loaded from its state_dict "
        r"predicts differently after loading"),
    "nondeterministic predictions": Broken(
        Nondeterministic, lambda n, m, s, f: check_determinism(n, m, s),
        r"broken-nondeterministic breaks the determinism rule: two fresh runs with seed 0 predict differently"),
    "the seed is ignored": Broken(
        IgnoresSeed, lambda n, m, s, f: check_determinism(n, m, s),
        r"broken-ignores-seed breaks the determinism rule: setup seeds 0 and 1 give identical runs from the same "
        r"initial weights"),
    "predict_online's shape": Broken(
        WideOnline, check_online, r"broken-wide-online breaks the online rule: predict_online gave shape \(8, 5\) "
                                  r"for batch 0, expected \(batch, outputs\) = \(8, 4\)"),
}


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_the_checks_catch_a_strategy_that_breaks_the_rule(rule, streams, tmp_path):
    broken = BROKEN[rule]
    stream = streams["class-incremental"]
    with pytest.raises(AssertionError, match=broken.message) as caught:
        broken.check(broken.cls.name, broken_maker(broken.cls, stream), stream, tmp_path)
    print(f"\n{rule}: {str(caught.value).splitlines()[0]}")


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_the_unbroken_parent_passes_the_same_check(rule, streams, tmp_path):
    """The control: the registered strategy the broken ones derive from passes each check."""
    stream = streams["class-incremental"]
    BROKEN[rule].check("finetune", broken_maker(Finetune, stream), stream, tmp_path)


def test_a_refusal_that_does_not_name_the_strategy_is_caught(streams, monkeypatch):
    cls = strategies.strategy_class("protomemory")
    monkeypatch.setattr(cls, "incompatibility", lambda self, spec: "this stream cannot be used")
    with pytest.raises(AssertionError, match="protomemory breaks the refusal rule: the refusal must name the "
                                             "strategy") as caught:
        check_refusal("protomemory", streams["regression"], TINY["protomemory"])
    print("\n" + str(caught.value).splitlines()[0])


class ShortQuery:
    """A test pool whose episodes hold one query item too few."""

    def __init__(self, pool):
        self.pool = pool

    def __len__(self):
        return len(self.pool)

    def examples(self):
        return self.pool.examples()

    def sample(self, *args, **kwargs):
        eps = self.pool.sample(*args, **kwargs)
        return replace(eps, query_x=eps.query_x[:, :-1], query_y=eps.query_y[:, :-1])


def test_a_scenario_whose_episodes_break_the_promise_is_caught():
    stream = blob_stream()
    bad = replace(stream[0], test=ShortQuery(stream[0].test))
    expected = (r"scenario blobs-class-incremental breaks the stream rule: task 'task 0': 2 test episodes of 2 ways, "
                r"2 shots and 2 queries have query shapes \(2, 3, 4\)")
    with pytest.raises(AssertionError, match=expected) as caught:
        check_scenario_task("blobs-class-incremental", stream.spec, bad, 2, 2)
    print("\n" + str(caught.value).splitlines()[0])
