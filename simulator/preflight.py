"""Checks of an experiment against its built streams, before anything is written.

Validating the experiment file (:mod:`simulator.config`) sees each table on its own; what only
shows with the streams in hand is checked here. The runner calls :func:`check` after building
every seed's stream and before it writes anything, so that a run which cannot work stops with
a message rather than a traceback halfway. Checked on every seed's stream:

- each strategy runs on the stream's kind and protocol (its ``kinds`` and ``protocols``, see
  :meth:`strategies.base.Strategy.incompatibility`), and its backbone takes the stream's inputs
  (the model class's ``input_problem``: ``conv4`` needs images at least ``2**blocks`` wide);
- every task has training and test examples, and ``evaluation.full_test`` has a pool whose
  labels mean the same in every item to score (a class-, task- or domain-incremental
  classification stream);
- every task can supply the episodes drawn from it: the evaluation's (``evaluation.shots`` and
  ``query``, else the stream's) from its test pool (its training pool under ``full_test``), and
  each strategy's training episodes (:meth:`~strategies.base.Strategy.training_episodes`) from
  its training pool. One episode is drawn from each pool, which raises the pool's own error
  when it is too small: in a labelled pool every class (any class may be drawn) needs shots +
  query examples, and a few-shot pool at least ``ways`` classes; in a regression pool every
  function needs shots + query points;
- what a run certainly holds in memory (the model's weights, the evaluation episodes, one
  training step's episodes, the evaluation tensors) fits in this machine's memory, so that an
  absurd size (``hidden = [10**12]``, ``episodes = 10**9``) is a message rather than a crash.
  These are lower bounds: gradients, optimiser state and activations come on top.

Every problem found is reported together in one :class:`~simulator.config.ConfigError`.
"""

from __future__ import annotations

import os

import torch

import strategies
from scenarios.base import Stream, Task
from simulator.config import ConfigError, StrategySpec
from strategies.base import Strategy

Problems = list[tuple[str, str]]   # (field path, message)
Needs = list[tuple[str, str, int]]  # (field path, what is held, bytes)


def check(experiment, streams: dict[int, Stream]) -> None:
    """Raise :class:`~simulator.config.ConfigError` for every incompatibility between the
    experiment's strategies, models and evaluation settings and its streams (one per seed)."""
    problems, needs = [], [_evaluation_tensors(experiment, streams)]
    for seed, stream in streams.items():
        if not isinstance(stream, Stream):  # an online stream: its columns are what is evaluated
            problems += _online(experiment, stream)
            stream = Stream(stream.spec, tuple(stream.columns))
        empty = _empty_pools(stream, seed)
        if empty:  # nothing else about this stream is worth saying
            problems += empty
            continue
        found, held = _evaluation(experiment.evaluation, stream, seed)
        problems, needs = problems + found, needs + held
        for spec in experiment.strategies:
            strategy = strategies.strategy_class(spec.name)(spec.config, label=spec.label)
            if experiment.evaluation.full_test and strategy.needs_support:
                problems.append((f"strategies.{spec.label}.strategy",
                                 f"{spec.name} predicts only from a support set, so it cannot score "
                                 "evaluation.full_test's support-free k = 0 (set evaluation.full_test = false)"))
            found, held = _strategy(spec, strategy, stream, seed)
            problems, needs = problems + found, needs + held
    available = _host_memory()
    problems += [(path, f"{what} would take {_size(nbytes)}, more than this machine's memory ({_size(available)})")
                 for path, what, nbytes in needs if nbytes > available]
    first: dict[str, str] = {}
    for path, message in problems:  # a field wrong on several seeds' streams: its first problem says enough
        first.setdefault(path, message)
    if first:
        raise ConfigError(experiment.source, list(first.items()))


def _online(experiment, stream) -> Problems:
    """Strategies that cannot take part in the online loop (no ``observe``)."""
    return [(f"strategies.{spec.label}.strategy",
             f"{spec.name} does not learn online (it has no observe), and stream {stream.spec.name!r} is an online "
             "stream; use it on a task stream, or present that stream online with the `online` scenario")
            for spec in experiment.strategies if not strategies.strategy_class(spec.name).learns_online()]


def _empty_pools(stream: Stream, seed: int) -> Problems:
    """A task without training or test examples: nothing to learn, or a score of nothing."""
    for task in _distinct(stream):
        for split in ("train", "test"):
            if len(getattr(task, split)) == 0:
                return [("scenario", f"task {task.name!r} of seed {seed}'s stream has no examples in its {split} "
                                     "pool with these parameters")]
    return []


def _evaluation(settings, stream: Stream, seed: int) -> tuple[Problems, Needs]:
    """``full_test`` on a stream without common labels, or evaluation episodes that a task
    cannot supply; else the memory of the evaluation episodes."""
    spec = stream.spec
    if settings.full_test and (spec.kind != "classification" or spec.protocol == "few-shot"):
        return [("evaluation.full_test", "needs a class-, task- or domain-incremental classification stream (it "
                                         "scores each task's whole test pool, whose labels must mean the same in "
                                         f"every item), and stream {spec.name!r} is {spec.protocol} {spec.kind}")], []
    shots, query = settings.shots or spec.shots, settings.query or spec.query
    split, query = ("train", 0) if settings.full_test else ("test", query)
    try:
        per_task = [_episode_bytes(task, split, shots, query) for task in _distinct(stream)]
    except _Unsupplied as short:
        fields = " and ".join(f"evaluation.{f}" for f in ("shots", "query") if getattr(settings, f) is not None)
        what = f"{shots} support" + (f" + {query} query" if query else "")
        return [(fields or "scenario.shots and scenario.query",
                 f"the evaluation draws episodes of {what} items per class from each task's {split} pool, and "
                 f"{short.where(seed)}")], []
    return [], [("evaluation.episodes", f"{settings.episodes} evaluation episodes per task (seed {seed})",
                 settings.episodes * sum(per_task))]


def _strategy(spec: StrategySpec, strategy: Strategy, stream: Stream, seed: int) -> tuple[Problems, Needs]:
    """The strategy's and its backbone's objections to the stream, training episodes that a
    task cannot supply, a model that cannot be built; else the memory of its weights and of
    one training step's episodes."""
    problems = []
    why = strategy.incompatibility(stream.spec)
    if why is not None:
        problems.append((f"strategies.{spec.label}.strategy", why))
    model_cls = strategies.MODELS.get(spec.model_name)
    input_problem = getattr(model_cls, "input_problem", None)  # a user's registered model may not say
    why = input_problem(spec.model_params, stream.spec.input_shape) if input_problem else None
    if why is not None:
        problems.append((f"{spec.model_path}.name", f"{why} (stream {stream.spec.name!r})"))
    if problems:
        return problems, []
    try:
        parameters, weights = _parameters(spec, strategy, stream)
    except (ValueError, RuntimeError) as err:  # e.g. sizes whose product overflows torch's int64
        return [(spec.model_path, f"{spec.model_name} cannot be built for stream {stream.spec.name!r}: {err}")], []
    needs = [(spec.model_path, f"the weights of strategies.{spec.label}'s {spec.model_name} ({parameters} "
                               "parameters)", weights)]
    draw = strategy.training_episodes(stream.spec)
    if draw is None:
        return [], needs
    episodes, shots, query = draw
    try:
        largest = max(_episode_bytes(task, "train", shots, query) for task in _distinct(stream))
    except _Unsupplied as short:
        return [(f"strategies.{spec.label}",
                 f"{spec.name} draws training episodes of {shots} support + {query} query items per class (its "
                 f"shots and query, else the stream's), and {short.where(seed)}")], []
    return [], needs + [(f"strategies.{spec.label}", f"{episodes} training episodes per step", episodes * largest)]


def _evaluation_tensors(experiment, streams: dict[int, Stream]) -> tuple[str, str, int]:
    """The ``acc`` and ``loss`` tensors (float64) that a run keeps of every finished run."""
    stream = next(iter(streams.values()))
    runs = len(experiment.strategies) * len(experiment.seeds)
    steps = experiment.evaluation.adapt_steps + 1
    if isinstance(stream, Stream):
        rows, columns = len(stream) + 1, stream.num_columns
    else:  # an online stream: the anytime tensor's rows, and one score per batch
        from simulator.online import evaluation_points

        rows, columns = len(evaluation_points(len(stream), experiment.online.eval_every)), len(stream.columns)
    return ("evaluation.adapt_steps", f"the evaluation tensors of {runs} run(s) scoring {steps} adaptation steps",
            runs * 2 * rows * columns * steps * 8)


def _parameters(spec: StrategySpec, strategy: Strategy, stream: Stream) -> tuple[int, int]:
    """The number of the model's parameters and their bytes, from a build on the meta device
    (shapes only: nothing is allocated, no random number drawn)."""
    with torch.device("meta"):
        model = strategies.MODELS.get(spec.model_name).from_params(spec.model_params, strategy.model_spec(stream.spec))
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


class _Unsupplied(Exception):
    """A task's pool cannot supply an episode; :meth:`where` says which and why."""

    def __init__(self, task: Task, reason: str):
        super().__init__(reason)
        self.task, self.reason = task, reason

    def where(self, seed: int) -> str:
        return f"task {self.task.name!r} of seed {seed}'s stream cannot supply them: {self.reason}"


def _episode_bytes(task: Task, split: str, shots: int, query: int) -> int:
    """Bytes of one episode from ``task``'s ``split`` pool; :class:`_Unsupplied` with the pool's
    own reason when it cannot supply one (one draw finds that out: pools check before they draw)."""
    try:
        eps = task.episodes(split, 1, shots, query, torch.Generator().manual_seed(0))
    except ValueError as err:
        raise _Unsupplied(task, str(err)) from None
    return sum(t.numel() * t.element_size() for t in (eps.support_x, eps.support_y, eps.query_x, eps.query_y))


def _distinct(stream: Stream) -> list[Task]:
    """Each task once (a recurring task shares its pools with its first appearance)."""
    return list({task.id: task for task in stream}.values())


def _host_memory() -> int:
    """This machine's physical memory in bytes: every tensor of a run is built there first."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _size(nbytes: int) -> str:
    """``nbytes`` in binary units, in integer arithmetic (an absurd size is no float).

    Example:
        >>> _size(3 * 2**30 // 2), _size(10), _size(2**80)
        ('1.5 GiB', '10 bytes', '1048576.0 EiB')
    """
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = min((nbytes.bit_length() - 1) // 10, len(units) - 1) if nbytes > 0 else 0
    if power == 0:
        return f"{nbytes} bytes"
    tenths = nbytes * 10 // 1024**power
    return f"{tenths // 10}.{tenths % 10} {units[power]}"
