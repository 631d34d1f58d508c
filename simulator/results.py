"""What one run produced (:class:`RunResult`): plain numpy data, free of torch, so that
reports, sweeps and exports read results without loading it.

Example:
    >>> import numpy as np
    >>> acc = np.array([[[0.5]], [[0.9]]])  # (T+1, T, K+1) for one task, K = 0
    >>> r = RunResult("finetune", 0, "classification", acc, np.zeros_like(acc))
    >>> round(r.summary(0)["ACC"], 2)
    0.9
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulator import metrics
from simulator.recurring import reduce_recurring


@dataclass
class RunResult:
    """Everything one (strategy, seed) run produced.

    Attributes:
        acc, loss: evaluation tensors of shape (T+1, T, K+1); ``acc`` is NaN for regression.
        learn_seconds, eval_seconds: wall time of each task's ``learn`` and of each row's evaluation (T+1).
        peak_memory_mb: per task, peak CUDA memory allocated (cuda) or the process's peak
            resident memory so far (cpu; a high-water mark, so it never decreases).
        logs: what ``learn`` returned for each task.
    """

    strategy: str
    seed: int
    kind: str
    acc: np.ndarray
    loss: np.ndarray
    learn_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    peak_memory_mb: list[float] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    task_ids: tuple[int, ...] = ()  # id of the task at each stream position (a recurring task repeats its id)
    online: dict[str, Any] | None = None  # the online loop's record (simulator.online); None for the task loop

    @property
    def score(self) -> np.ndarray:
        """Higher-is-better tensor: ``acc`` for classification, ``-loss`` for regression."""
        return self.acc if self.kind == "classification" else -self.loss

    def summary(self, k: int) -> dict[str, Any]:
        """The metrics at adaptation step ``k``: those of docs/design.md, "Metrics", for the task
        loop; the online metrics and those of the anytime tensor for the online loop."""
        if self.online is not None:
            from simulator import online_metrics

            return online_metrics.flat_summary(self.online, self.score, k)
        # A stream with recurring tasks has N+1 > T+1 rows: the metrics use its (T+1, T) view.
        score = reduce_recurring(self.score, self.task_ids) if self.task_ids else self.score
        return metrics.summarize(score, k)
