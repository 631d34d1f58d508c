"""The evaluator: fixed held-out episodes per task, scored after 0..K adaptation steps.

For each task column j, ``episodes`` episodes are drawn once from the task's test source with
a generator derived from the run seed; every row of the evaluation tensor reuses them, so rows
differ only by what the strategy learned. One call of :meth:`Evaluator.evaluate` fills one row
``(T, K+1)`` of ``acc`` and ``loss``: per task, the strategy adapts on all support sets at
once and predicts all query sets at once (``chunk`` episodes at a time to bound memory).

Example:
    >>> import scenarios, strategies
    >>> stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    >>> s = strategies.build("finetune"); s.setup(strategies.build_model("mlp", {}, stream.spec), stream.spec, "cpu")
    >>> acc, loss = Evaluator(stream, EvalSettings(episodes=4, adapt_steps=2), seed=0).evaluate(s)
    >>> acc.shape
    (2, 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from scenarios.base import Episodes, Stream, generator
from strategies.base import Strategy, task_loss

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
    """

    episodes: int = 20
    adapt_steps: int = 5
    shots: int | None = None
    query: int | None = None
    chunk: int | None = None


class Evaluator:
    """Scores a strategy on every task of ``stream`` with fixed episodes from ``seed``."""

    def __init__(self, stream: Stream, settings: EvalSettings, seed: int, device: torch.device | str = "cpu"):
        self.stream, self.settings = stream, settings
        spec = stream.spec
        shots = settings.shots or spec.shots
        query = settings.query or spec.query
        columns: dict[int, Episodes] = {}
        for task in stream:  # a recurring task keeps its column and its episodes
            if task.id not in columns:
                gen = generator(seed, EVAL_SALT, task.id)
                columns[task.id] = task.episodes("test", settings.episodes, shots, query, gen).to(device)
        self.columns = [columns[j] for j in sorted(columns)]

    @property
    def num_columns(self) -> int:
        return len(self.columns)

    @torch.no_grad()
    def evaluate(self, strategy: Strategy) -> tuple[np.ndarray, np.ndarray]:
        """One row: ``acc`` and ``loss`` of shape (T, K+1). ``acc`` is NaN for regression."""
        K = self.settings.adapt_steps
        acc = np.full((self.num_columns, K + 1), np.nan)
        loss = np.full((self.num_columns, K + 1), np.nan)
        kind = self.stream.spec.kind
        was_training = strategy.model.training
        strategy.model.eval()
        try:
            for j, eps in enumerate(self.columns):
                a, l = self._score_column(strategy, eps, K, kind)
                acc[j], loss[j] = a, l
        finally:
            strategy.model.train(was_training)
        return acc, loss

    def _score_column(self, strategy: Strategy, eps: Episodes, K: int, kind: str):
        E = len(eps)
        chunk = self.settings.chunk or E
        device = eps.query_x.device
        # Sums over episodes of per-episode means; every episode has the same query size, so
        # dividing by E gives the mean over episodes. Kept on the device until the end.
        loss_sum = torch.zeros(K + 1, dtype=torch.float64, device=device)
        hits = torch.zeros(K + 1, dtype=torch.float64, device=device)
        episode_loss = torch.vmap(lambda o, t: task_loss(o, t, kind, eps.mask))
        for start in range(0, E, chunk):
            part = eps.slice(start, min(start + chunk, E))
            for k, state in enumerate(strategy.adapt(part.support, K)):
                out = strategy.predict(state, part.query_x)
                loss_sum[k] += episode_loss(out, part.query_y).double().sum()
                if kind == "classification":
                    logits = out if part.mask is None else out.masked_fill(~part.mask, float("-inf"))
                    hits[k] += (logits.argmax(-1) == part.query_y).double().mean(-1).sum()
        acc = (hits / E).cpu().numpy() if kind == "classification" else np.full(K + 1, np.nan)
        return acc, (loss_sum / E).cpu().numpy()
