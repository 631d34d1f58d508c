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
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from scenarios.base import Episodes, Stream, Support, generator
from strategies.base import DivergenceError, Strategy, task_loss

EVAL_SALT = 7919  # keeps evaluation episodes independent of every other seeded stream


@dataclass(frozen=True)
class EvalSettings:
    """How each task is evaluated.

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
    """

    episodes: int = 20
    adapt_steps: int = 5
    shots: int | None = None
    query: int | None = None
    chunk: int | None = None
    full_test: bool = False


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
    """Scores a strategy on every task of ``stream`` with fixed episodes from ``seed``."""

    def __init__(self, stream: Stream, settings: EvalSettings, seed: int, device: torch.device | str = "cpu"):
        self.stream, self.settings = stream, settings
        spec = stream.spec
        shots = settings.shots or spec.shots
        query = settings.query or spec.query
        if settings.full_test and spec.protocol == "few-shot":
            raise ValueError("full_test scores a task's whole test pool, which has no common labels under "
                             "the few-shot protocol; use episodes")
        columns: dict[int, Episodes | PoolColumn] = {}
        for task in stream:  # a recurring task keeps its column and its episodes
            if task.id not in columns:
                gen = generator(seed, EVAL_SALT, task.id)
                if settings.full_test:
                    support = task.episodes("train", settings.episodes, shots, 0, gen).to(device).support
                    x, y = task.test.examples()
                    mask = None if task.mask is None else task.mask.to(device)
                    columns[task.id] = PoolColumn(x.to(device), y.to(device), mask, support)
                else:
                    columns[task.id] = task.episodes("test", settings.episodes, shots, query, gen).to(device)
        self.columns = [columns[j] for j in sorted(columns)]
        names = {task.id: task.name for task in reversed(stream)}  # a recurring task: its first name
        self.task_names = [names[j] for j in sorted(columns)]

    @property
    def num_columns(self) -> int:
        return len(self.columns)

    @torch.no_grad()
    def evaluate(self, strategy: Strategy, row: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One row: ``acc`` and ``loss`` of shape (T, K+1). ``acc`` is NaN for regression.

        ``row`` (the number of tasks learned) only names the row in an error message.

        Raises:
            DivergenceError: an output or a query loss of some task's cells is NaN or infinite.
        """
        K = self.settings.adapt_steps
        acc = np.full((self.num_columns, K + 1), np.nan)
        loss = np.full((self.num_columns, K + 1), np.nan)
        kind = self.stream.spec.kind
        score = self._score_pool if self.settings.full_test else self._score_column
        with eval_mode(strategy.model):
            for j, column in enumerate(self.columns):
                acc[j], loss[j], problems = score(strategy, column, K, kind)
                raise_if_diverged(problems, strategy.label, self.task_names[j], row)
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
        with eval_mode(strategy.model):
            acc, loss, problems = self._episode_scores(strategy, self.columns[column], self.settings.adapt_steps,
                                                       self.stream.spec.kind)
        raise_if_diverged(problems, strategy.label, self.task_names[column])
        return acc.cpu().numpy(), loss.cpu().numpy()

    def _score_column(self, strategy: Strategy, eps: Episodes, K: int, kind: str):
        acc, loss, problems = self._episode_scores(strategy, eps, K, kind)
        return acc.mean(1).cpu().numpy(), loss.mean(1).cpu().numpy(), problems

    def _episode_scores(self, strategy: Strategy, eps: Episodes, K: int, kind: str) -> tuple[Tensor, Tensor, Tensor]:
        """(K+1, E) float64 accuracy (NaN for regression) and loss per episode, on the device,
        and the (K+1, 3) problems of each step on the host (see :func:`step_problems`)."""
        E = len(eps)
        chunk = self.settings.chunk or E
        device = eps.query_x.device
        loss = torch.zeros(K + 1, E, dtype=torch.float64, device=device)
        acc = torch.full((K + 1, E), float("nan"), dtype=torch.float64, device=device)
        outputs_bad = torch.zeros(K + 1, 2, dtype=torch.bool, device=device)
        episode_loss = torch.vmap(lambda o, t: task_loss(o, t, kind, eps.mask))
        for start in range(0, E, chunk):
            stop = min(start + chunk, E)
            part = eps.slice(start, stop)
            for k, state in enumerate(strategy.adapt(part.support, K)):
                out = strategy.predict(state, part.query_x)
                outputs_bad[k] |= non_finite(out)
                loss[k, start:stop] = episode_loss(out, part.query_y)
                if kind == "classification":
                    logits = out if part.mask is None else out.masked_fill(~part.mask, float("-inf"))
                    acc[k, start:stop] = (logits.argmax(-1) == part.query_y).double().mean(-1)
        return acc, loss, step_problems(outputs_bad, loss)

    def _score_pool(self, strategy: Strategy, column: PoolColumn, K: int, kind: str):
        E = len(column.support)
        chunk = self.settings.chunk or E
        device = column.x.device
        loss_sum = torch.zeros(K + 1, dtype=torch.float64, device=device)
        hits = torch.zeros(K + 1, dtype=torch.float64, device=device)
        outputs_bad = torch.zeros(K + 1, 2, dtype=torch.bool, device=device)
        episode_loss = torch.vmap(lambda o, t: task_loss(o, t, kind, column.mask))

        def add(k: int, out: Tensor) -> None:  # out: (n, N, outputs), one row per adapted state
            outputs_bad[k] |= non_finite(out)
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


def non_finite(outputs: Tensor) -> Tensor:
    """Whether ``outputs`` hold a NaN and whether they hold an infinity: a (2,) bool tensor on
    their device (no host synchronisation)."""
    return torch.stack((outputs.isnan().any(), outputs.isinf().any()))


def step_problems(outputs_bad: Tensor, loss: Tensor) -> Tensor:
    """(K+1, 3) bool on the host: per adaptation step, outputs NaN, outputs infinite, query loss
    not finite. ``outputs_bad`` is (K+1, 2) from :func:`non_finite`; ``loss`` is (K+1, ...)."""
    loss_bad = ~torch.isfinite(loss.reshape(len(loss), -1)).all(1, keepdim=True)
    return torch.cat([outputs_bad, loss_bad], 1).cpu()


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
