"""The evaluator: fixed held-out episodes per task, scored after 0..K adaptation steps.

For each task column j, ``episodes`` episodes are drawn once from the task's test source with
a generator derived from the run seed; every row of the evaluation tensor reuses them, so rows
differ only by what the strategy learned. One call of :meth:`Evaluator.evaluate` fills one row
``(T, K+1)`` of ``acc`` and ``loss``: per task, the strategy adapts on all support sets at
once and predicts all query sets at once (``chunk`` episodes at a time to bound memory).

:meth:`Evaluator.episode_scores` gives the per-episode scores behind one task's cells, for
confidence intervals over episodes.

No score is computed from a diverged model: if any output or query loss of a task's cells is
NaN or infinite, evaluation stops with :class:`~strategies.base.DivergenceError` naming the
strategy, the task, the row (tasks learned so far, when given) and the first adaptation step
at which it happened. The check is vectorised: a few reductions per batch of episodes and
adaptation step, kept on the device, and one host transfer per task.

With ``full_test`` (:class:`EvalSettings`) a task is scored on its whole test pool instead of
on sampled query sets, as Avalanche evaluates: k = 0 is the score over every test item, and for
k > 0 the support sets are drawn from the task's *training* pool, so that no scored item is
ever adapted on.

Example:
    >>> import scenarios, strategies
    >>> stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    >>> s = strategies.build("finetune"); s.setup(strategies.build_model("mlp", {}, stream.spec), stream.spec, "cpu")
    >>> acc, loss = Evaluator(stream, EvalSettings(episodes=4, adapt_steps=2), seed=0).evaluate(s)
    >>> acc.shape
    (2, 3)
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from scenarios.base import Episodes, Stream, Support
from scenarios.params import Params
from scenarios.rng import EVAL_EPISODES, generator
from strategies.base import DivergenceError, Strategy


class EvalSettings(Params):
    """How each task is evaluated: the ``[evaluation]`` table of an experiment file.

    Attributes:
        episodes: held-out episodes per task.
        adapt_steps: K, the largest number of adaptation steps; steps 0..K are all scored.
        shots: support items per class (``None``: the stream's default).
        query: query items per class (``None``: the stream's default).
        chunk: episodes adapted at once (``None``: all); lower it when memory binds.
        full_test: score each task on its whole test pool rather than on ``episodes`` query
            sets. k = 0 is then the score over every test item (what Avalanche's experience
            accuracy measures); for k > 0, ``episodes`` support sets of ``shots`` items per
            class come from the task's training pool (never from the scored items), each
            adapted state scores the whole pool, and the scores are averaged over support sets.
            ``query`` is unused. Not for the few-shot protocol, whose labels only mean
            something within an episode.
        eval_every: the schedule's rows: every row i with i % eval_every == 0, and the last,
            is scored as ``columns`` says; every other row scores only the task just learned
            and the next one (see :meth:`Evaluator.row_plan`).
        columns: ``"all"`` (every task in every scheduled row) or ``"seen+next"`` (the tasks
            learned so far and the next one; row 0 is always scored on every task, the
            reference of forward transfer).
        adapt_cells: ``"all"`` (every scored cell after 0..K steps) or ``"metrics"`` (k > 0
            only where an adaptation metric reads it: the task just learned, the next task,
            and every cell of the first and last rows; the other cells k = 0 only).
    """

    episodes: int = Field(20, gt=0, description="held-out episodes per task")
    adapt_steps: int = Field(5, ge=0, description="K: adaptation steps scored (0..K)")
    shots: int | None = Field(None, gt=0, description="support items per class (default: the scenario's)")
    query: int | None = Field(None, gt=0, description="query items per class (default: the scenario's)")
    chunk: int | None = Field(None, gt=0, description="episodes adapted at once (default: all)")
    full_test: bool = Field(False, description="score k = 0 on each task's whole test pool (as Avalanche does); "
                                               "k > 0 adapts on `episodes` support sets from the training pool")
    eval_every: int = Field(1, gt=0, description="task streams: rows 0, every eval_every-th and the last are scored "
                                                 "as `columns` says; the others score only the task just learned "
                                                 "and the next (forgetting and average incremental accuracy then "
                                                 "need eval_every = 1)")
    columns: Literal["all", "seen+next"] = Field("seen+next", description="tasks a scheduled row scores: all, or the "
                                                                   "tasks learned so far and the next (row 0: "
                                                                   "all); every metric stays exact")
    adapt_cells: Literal["all", "metrics"] = Field("all", description="cells scored after k > 0 steps: all, or "
                                                                      "only the task just learned, the next task "
                                                                      "and the first and last rows (metrics at "
                                                                      "k = K that read other cells are then NaN)")

    @property
    def is_full(self) -> bool:
        """Whether every row scores every task after every k (the schedule of the whole tensor)."""
        return self.eval_every == 1 and self.columns == "all" and self.adapt_cells == "all"


COLUMN_SCHEDULES = ("all", "seen+next")
ADAPT_SCHEDULES = ("all", "metrics")

PASS_INPUT_ELEMENTS = 2**22
"""Input scalars adapted and scored in one pass when ``chunk`` is not set: episodes of several
tasks go through the strategy together up to this bound (16 MiB of float32 inputs; a conv-4
multiplies it by its 64 channels), and never fewer than one task's episodes."""


@dataclass(frozen=True)
class RowPlan:
    """The cells one row scores: task columns ``scored`` at k = 0, and the subset ``adapted``
    of them also after 1..K steps. Both sorted."""

    scored: tuple[int, ...]
    adapted: tuple[int, ...]


@dataclass(frozen=True)
class PoolColumn:
    """One task's whole test pool (``x``, ``y``, ``mask``) and the support sets (drawn from
    its training pool) that the k > 0 scores adapt on; the column type of ``full_test``."""

    x: Tensor
    y: Tensor
    mask: Tensor | None
    support: Support


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """``model`` in eval mode for the block, then back in the mode it was in (even on error)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class Evaluator:
    """Scores a strategy on every task of ``stream`` with fixed episodes from ``seed``.

    The episodes of all tasks whose episodes have the same shapes and the same output mask
    (every task of a class-, domain-incremental or few-shot stream; each task-incremental task
    has its own mask) are stacked once, and a row adapts and scores them together: one
    ``adapt`` over the support sets of many tasks, in passes of ``chunk`` episodes (default:
    as many as :data:`PASS_INPUT_ELEMENTS` allows, at least one task's). Episodes are
    independent in the protocol, so this computes what one pass per task computes; the
    numbers agree with it to float rounding (batched kernels may sum in another order: see
    tests/simulator/test_evaluator_batched.py). A strategy whose ``adapt`` couples the
    episodes of one call sets ``batch_across_tasks = False`` and gets one pass per task.
    """

    def __init__(self, stream: Stream, settings: EvalSettings, seed: int, device: torch.device | str = "cpu"):
        self.stream, self.settings = stream, settings
        spec = stream.spec
        shots = settings.shots or spec.shots
        query = settings.query or spec.query
        if settings.full_test and spec.protocol == "few-shot":
            raise ValueError("full_test scores a task's whole test pool, which has no common labels under "
                             "the few-shot protocol; use episodes")
        if settings.eval_every < 1:
            raise ValueError(f"eval_every must be at least 1; got {settings.eval_every}")
        if settings.columns not in COLUMN_SCHEDULES:
            raise ValueError(f"columns must be one of {', '.join(COLUMN_SCHEDULES)}; got {settings.columns!r}")
        if settings.adapt_cells not in ADAPT_SCHEDULES:
            raise ValueError(f"adapt_cells must be one of {', '.join(ADAPT_SCHEDULES)}; got {settings.adapt_cells!r}")
        columns: dict[int, Episodes | PoolColumn] = {}
        for task in stream:  # a recurring task keeps its column and its episodes
            if task.id not in columns:
                gen = generator(seed, EVAL_EPISODES, task.id)
                if settings.full_test:
                    support = task.episodes("train", settings.episodes, shots, 0, gen).to(device).support
                    x, y = task.test.examples()
                    mask = None if task.mask is None else task.mask.to(device)
                    columns[task.id] = PoolColumn(x.to(device), y.to(device), mask, support)
                else:
                    columns[task.id] = task.episodes("test", settings.episodes, shots, query, gen).to(device)
        ids = sorted(columns)
        first_names = {task.id: task.name for task in reversed(stream)}
        self.task_names = [first_names[j] for j in ids]
        column_of = {j: c for c, j in enumerate(ids)}
        self.stream_columns = [column_of[task.id] for task in stream]  # the column of each task of the stream
        if settings.full_test:
            self.columns, self.groups = [columns[j] for j in ids], []
        else:
            self.groups = stack_groups([columns[j] for j in ids])
            self.columns = [None] * len(ids)
            for group in self.groups:  # each column: a view into its group's stacked episodes
                for position, column in enumerate(group.columns):
                    self.columns[column] = group.episodes.slice(position * group.size, (position + 1) * group.size)

    @property
    def num_columns(self) -> int:
        return len(self.columns)

    def row_plan(self, row: int) -> RowPlan:
        """The cells that row ``row`` (tasks learned so far) scores under the schedule.

        Scheduled rows (0, every ``eval_every``-th, the last) score every task, or with
        ``columns = "seen+next"`` the tasks learned so far and the next (row 0: every task).
        Any other row scores the task just learned and the next one, which keeps the learning
        accuracy, backward and forward transfer and new-task adaptation exact. With
        ``adapt_cells = "metrics"`` only those two cells, and the first and last rows, are
        adapted (k > 0); other cells get k = 0 and NaN beyond.

        Example:
            >>> import scenarios
            >>> stream = scenarios.build("permuted-digits", {"num_tasks": 5}, seed=0)
            >>> ev = Evaluator(stream, EvalSettings(episodes=1, eval_every=2, columns="seen+next"), seed=0)
            >>> ev.row_plan(2), ev.row_plan(3)
            (RowPlan(scored=(0, 1, 2), adapted=(0, 1, 2)), RowPlan(scored=(2, 3), adapted=(2, 3)))
        """
        s, T = self.settings, len(self.stream)
        if not 0 <= row <= T:
            raise IndexError(f"row {row} out of range: the stream has {T} tasks (rows 0..{T})")
        everything = tuple(range(self.num_columns))
        around = {self.stream_columns[i] for i in (row - 1, row) if 0 <= i < T}  # just learned, next
        if row in (0, T) or row % s.eval_every == 0:
            if s.columns == "all" or row == 0:
                scored = everything
            else:
                scored = tuple(sorted(around | {self.stream_columns[i] for i in range(row)}))
        else:
            scored = tuple(sorted(around))
        adapted = scored if s.adapt_cells == "all" or row in (0, T) else tuple(sorted(around & set(scored)))
        return RowPlan(scored, adapted)

    @torch.no_grad()
    def evaluate(self, strategy: Strategy, row: int | None = None,
                 plan: RowPlan | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One row: ``acc`` and ``loss`` of shape (T, K+1). ``acc`` is NaN for regression.

        ``plan`` (default: every cell) says which cells to score; the others stay NaN.
        ``row`` (the number of tasks learned) only names the row in an error message.

        Raises:
            DivergenceError: an output or a query loss of some task's cells is NaN or infinite
                (the first such task column, at its first such step).
        """
        K = self.settings.adapt_steps
        everything = tuple(range(self.num_columns))
        plan = plan or RowPlan(everything, everything)
        acc = np.full((self.num_columns, K + 1), np.nan)
        loss = np.full((self.num_columns, K + 1), np.nan)
        problems: dict[int, Tensor] = {}
        kind = self.stream.spec.kind
        adapted = set(plan.adapted)
        only_unadapted = tuple(j for j in plan.scored if j not in adapted)
        with eval_mode(strategy.model):
            for steps, columns in ((K, plan.adapted), (0, only_unadapted)):
                if not columns:
                    continue
                if self.settings.full_test:
                    for j in columns:
                        acc[j, :steps + 1], loss[j, :steps + 1], problems[j] = self._score_pool(
                            strategy, self.columns[j], steps, kind)
                else:
                    self._score_columns(strategy, columns, steps, kind, acc, loss, problems)
        for j in sorted(problems):
            raise_if_diverged(problems[j], strategy.label, self.task_names[j], row)
        return acc, loss

    @torch.no_grad()
    def episode_scores(self, strategy: Strategy, column: int) -> tuple[np.ndarray, np.ndarray]:
        """Accuracy and loss of every held-out episode of task ``column`` after 0..K adaptation
        steps, each of shape (K+1, episodes); :meth:`evaluate`'s row is their mean over episodes.

        For confidence intervals over episodes (the few-shot reproductions in ``benchmarks/``).
        ``acc`` is NaN for regression. Not available with ``full_test``, which scores a pool,
        not episodes. Raises :class:`~strategies.base.DivergenceError` as :meth:`evaluate` does.

        Example:
            >>> import scenarios, strategies
            >>> stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
            >>> s = strategies.build("finetune"); s.setup(strategies.build_model("mlp", {}, stream.spec), stream.spec, "cpu")
            >>> acc, loss = Evaluator(stream, EvalSettings(episodes=4, adapt_steps=2), seed=0).episode_scores(s, 1)
            >>> acc.shape
            (3, 4)
        """
        if self.settings.full_test:
            raise ValueError("full_test scores each task's whole test pool, not episodes; "
                             "episode_scores needs full_test = false")
        if not 0 <= column < self.num_columns:
            raise IndexError(f"task column {column} out of range: the stream has {self.num_columns}")
        eps = self.columns[column]
        with eval_mode(strategy.model):
            acc, loss, bad = self._episode_scores(strategy, eps, self.settings.adapt_steps,
                                                  self.stream.spec.kind, self.settings.chunk or len(eps))
        raise_if_diverged(step_problems(bad, loss), strategy.label, self.task_names[column])
        return acc.cpu().numpy(), loss.cpu().numpy()

    def _score_columns(self, strategy: Strategy, columns: tuple[int, ...], steps: int, kind: str,
                       acc: np.ndarray, loss: np.ndarray, problems: dict[int, Tensor]) -> None:
        """Fill ``acc[j, :steps+1]``, ``loss[j, :steps+1]`` and ``problems[j]`` for each task
        column ``j`` in ``columns``: the columns of each group of stacked episodes in one go."""
        together = strategy.batch_across_tasks
        for group in self.groups:
            positions = [group.position_of[j] for j in columns if j in group.position_of]
            batches = [positions] if together else [[p] for p in positions]
            for batch in filter(None, batches):
                eps = group.select(batch)
                chunk = self.settings.chunk or max(group.size, PASS_INPUT_ELEMENTS // group.episode_elements)
                ep_acc, ep_loss, bad = self._episode_scores(strategy, eps, steps, kind, chunk)
                n, E = len(batch), group.size
                col_acc = ep_acc.view(steps + 1, n, E).mean(2).T.cpu().numpy()
                col_loss = ep_loss.view(steps + 1, n, E).mean(2).T.cpu().numpy()
                col_problems = step_problems(bad.view(steps + 1, n, E, 2), ep_loss.view(steps + 1, n, E))
                for i, p in enumerate(batch):
                    j = group.columns[p]
                    acc[j, :steps + 1], loss[j, :steps + 1], problems[j] = col_acc[i], col_loss[i], col_problems[:, i]

    def _episode_scores(self, strategy: Strategy, eps: Episodes, K: int, kind: str,
                        chunk: int) -> tuple[Tensor, Tensor, Tensor]:
        """(K+1, E) float64 accuracy (NaN for regression) and loss per episode, and (K+1, E, 2)
        bool whether each episode's outputs hold a NaN / an infinity; all on the device."""
        E = len(eps)
        device = eps.query_x.device
        loss = torch.zeros(K + 1, E, dtype=torch.float64, device=device)
        acc = torch.full((K + 1, E), float("nan"), dtype=torch.float64, device=device)
        bad = torch.zeros(K + 1, E, 2, dtype=torch.bool, device=device)
        episode_loss = functools.partial(query_losses, kind=kind, mask=eps.mask)
        for start in range(0, E, chunk):
            stop = min(start + chunk, E)
            part = eps.slice(start, stop)
            for k, state in enumerate(strategy.adapt(part.support, K)):
                out = strategy.predict(state, part.query_x)
                bad[k, start:stop] = non_finite(out)
                loss[k, start:stop] = episode_loss(out, part.query_y)
                if kind == "classification":
                    logits = out if part.mask is None else out.masked_fill(~part.mask, float("-inf"))
                    acc[k, start:stop] = (logits.argmax(-1) == part.query_y).double().mean(-1)
        return acc, loss, bad

    def _score_pool(self, strategy: Strategy, column: PoolColumn, K: int, kind: str):
        E = len(column.support)
        chunk = self.settings.chunk or E
        device = column.x.device
        loss_sum = torch.zeros(K + 1, dtype=torch.float64, device=device)
        hits = torch.zeros(K + 1, dtype=torch.float64, device=device)
        outputs_bad = torch.zeros(K + 1, 2, dtype=torch.bool, device=device)
        episode_loss = functools.partial(query_losses, kind=kind, mask=column.mask)

        def add(k: int, out: Tensor) -> None:  # out: (n, N, outputs), one row per adapted state
            outputs_bad[k] |= non_finite(out).any(0)
            targets = column.y.expand(out.shape[0], *column.y.shape)
            loss_sum[k] += episode_loss(out, targets).double().sum()
            if kind == "classification":
                logits = out if column.mask is None else out.masked_fill(~column.mask, float("-inf"))
                hits[k] += (logits.argmax(-1) == targets).double().mean(-1).sum()

        support = column.support
        for start in range(0, E, chunk):
            stop = min(start + chunk, E)
            part = Support(support.x[start:stop], support.y[start:stop], support.mask)
            for k, state in enumerate(strategy.adapt(part, K)):
                if k > 0:
                    add(k, strategy.predict(state, column.x.expand(stop - start, *column.x.shape)))
                elif start == 0:  # the unadapted model is the same for every support set: score once
                    add(0, strategy.predict(state, column.x.unsqueeze(0)))
        # k = 0 was scored once; every k > 0 once per support set.
        count = torch.tensor([1.0] + [float(E)] * K, dtype=torch.float64, device=device)
        acc = (hits / count).cpu().numpy() if kind == "classification" else np.full(K + 1, np.nan)
        return acc, (loss_sum / count).cpu().numpy(), step_problems(outputs_bad, loss_sum)


@dataclass(frozen=True)
class EpisodeGroup:
    """The stacked episodes of task ``columns`` that share shapes and mask: task ``columns[p]``
    holds episodes ``p * size`` to ``(p + 1) * size`` of ``episodes``."""

    columns: tuple[int, ...]
    episodes: Episodes
    size: int

    @functools.cached_property
    def position_of(self) -> dict[int, int]:
        """The position in the group of each of its task columns (built once, read every row)."""
        return {j: p for p, j in enumerate(self.columns)}

    @property
    def episode_elements(self) -> int:
        """Input scalars of one episode (support and query)."""
        return max(1, self.episodes.support_x[0].numel() + self.episodes.query_x[0].numel())

    def select(self, positions: list[int]) -> Episodes:
        """The episodes of the group's tasks at ``positions`` (sorted), as one batch: a view
        when they are consecutive, else a copy."""
        if positions == list(range(positions[0], positions[-1] + 1)):
            return self.episodes.slice(positions[0] * self.size, (positions[-1] + 1) * self.size)
        index = torch.cat([torch.arange(p * self.size, (p + 1) * self.size) for p in positions])
        index = index.to(self.episodes.query_x.device)
        e = self.episodes
        return Episodes(e.support_x[index], e.support_y[index], e.query_x[index], e.query_y[index], e.mask)


def stack_groups(columns: list[Episodes]) -> list[EpisodeGroup]:
    """Group task columns whose episodes have the same count, shapes, dtypes and mask, and stack
    each group's episodes along the episode dimension (the groups in order of first column)."""
    def key(eps: Episodes):
        tensors = (eps.support_x, eps.support_y, eps.query_x, eps.query_y)
        mask = None if eps.mask is None else tuple(eps.mask.tolist())
        return tuple((tuple(t.shape), t.dtype) for t in tensors), mask

    members: dict[Any, list[int]] = {}
    for j, eps in enumerate(columns):
        members.setdefault(key(eps), []).append(j)
    groups = []
    for js in members.values():
        parts = [columns[j] for j in js]
        stacked = Episodes(*(torch.cat([getattr(p, name) for p in parts]) for name in
                             ("support_x", "support_y", "query_x", "query_y")), parts[0].mask)
        groups.append(EpisodeGroup(tuple(js), stacked, len(parts[0])))
    return groups


def query_losses(outputs: Tensor, targets: Tensor, kind: str, mask: Tensor | None = None) -> Tensor:
    """Each episode's mean query loss, shape (E,), for outputs (E, Q, out): what
    :func:`~strategies.base.task_loss` gives for each episode, to float rounding (3.6e-8 relative
    in tests/simulator/test_evaluator.py's cases), written for speed: the cross-entropy as
    log-sum-exp minus the target's output takes a quarter of ``log_softmax``'s time over ten
    classes on the CPU (4 to 8% of an evaluation row of permuted-digits; same accuracies).

    Example:
        >>> from strategies.base import task_loss
        >>> out, y = torch.randn(2, 3, 4), torch.tensor([[0, 1, 2], [3, 3, 3]])
        >>> torch.allclose(query_losses(out, y, "classification"),
        ...                torch.stack([task_loss(out[e], y[e], "classification") for e in range(2)]))
        True
    """
    if kind == "regression":
        return (outputs - targets).square().flatten(1).mean(1)
    if mask is not None:
        outputs = outputs.masked_fill(~mask, float("-inf"))
    picked = outputs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (outputs.logsumexp(-1) - picked).mean(-1)


def non_finite(outputs: Tensor) -> Tensor:
    """Per episode (the first dimension of ``outputs``), whether its outputs hold a NaN and
    whether they hold an infinity: an (E, 2) bool tensor on their device (no host sync)."""
    flat = outputs.reshape(outputs.shape[0], -1)
    return torch.stack((flat.isnan().any(1), flat.isinf().any(1)), 1)


def step_problems(bad: Tensor, loss: Tensor) -> Tensor:
    """Per adaptation step (and any further leading dimensions of ``loss`` after the first, e.g.
    the task columns), whether outputs are NaN, infinite, and whether the query loss is not
    finite: a bool tensor of shape (K+1, ..., 3) on the host. ``bad`` has ``loss``'s shape plus
    a last (NaN, inf) dimension, with any trailing episode dimension reduced over too.

    ``loss`` (K+1, n, E) with ``bad`` (K+1, n, E, 2) gives (K+1, n, 3); ``loss`` (K+1,) with
    ``bad`` (K+1, 2) gives (K+1, 3).
    """
    if loss.dim() == 1:
        return torch.cat([bad, ~torch.isfinite(loss)[:, None]], -1).cpu()
    return torch.cat([bad.any(-2), ~torch.isfinite(loss).all(-1, keepdim=True)], -1).cpu()


def raise_if_diverged(problems: Tensor, strategy: str, task: str, row: int | None = None) -> None:
    """Raise :class:`DivergenceError` for the first adaptation step with a problem, if any.

    ``problems`` is :func:`step_problems`'s table for task ``task``; ``row`` is the number of
    tasks learned (None: not named).

    Example:
        >>> problems = torch.tensor([[False, False, False], [True, False, True]])
        >>> raise_if_diverged(problems, "finetune", "digits 0-1", row=3)
        Traceback (most recent call last):
        ...
        strategies.base.DivergenceError: strategy 'finetune' diverged while adapting to task 'digits 0-1' (after 3 tasks learned) at adaptation step 1: outputs are NaN
    """
    steps = problems.any(1).nonzero()
    if len(steps) == 0:
        return
    k = int(steps[0])
    nan, inf, _ = problems[k].tolist()
    what = ("outputs are NaN and infinite" if nan and inf else "outputs are NaN" if nan
            else "outputs are infinite" if inf else "the query loss is inf")
    learned = ("" if row is None else " (before any task was learned)" if row == 0
               else f" (after {row} task{'s' if row > 1 else ''} learned)")
    where = (f"while adapting to task {task!r}{learned} at adaptation step {k}" if k
             else f"on task {task!r}{learned} at adaptation step 0 (no adaptation yet)")
    raise DivergenceError(f"strategy {strategy!r} diverged {where}: {what}")
