"""The (T+1, T) view of an evaluation tensor from a stream whose tasks recur.

When a task reappears later in the stream it keeps its id, and the evaluator scores it in one
column: a stream of N positions over T distinct tasks gives tensors of shape (N+1, T, K+1).
The metrics of :mod:`simulator.metrics` are defined on (T+1, T) matrices in which row j+1 is
"just after learning task j" and row T is "at the end". :func:`reduce_recurring` keeps exactly
those rows and orders the columns by first appearance:

- column j is the j-th distinct task of the stream, in order of first appearance;
- row 0 is row 0 (before any training);
- row j+1, for j < T-1, is the row right after task j's **first** occurrence;
- row T is the **final** row N, after the whole stream, recurrences included.

So ``learning_accuracy`` and ``forward_transfer`` describe each task's first encounter,
``final_accuracy``, ``backward_transfer`` and ``forgetting`` the end of the stream. For the
last new task, R[T, T-1] is its final score, not the one right after its first occurrence
when it recurs later. Rows in between (after recurrences) are left out of the metrics but kept
in the saved tensors. For a stream without recurrences and with ids in stream order, the
view is the tensor itself.

Example:
    >>> import numpy as np
    >>> acc = np.arange(8).reshape(4, 2)            # N = 3 positions (ids 0, 1, 0), T = 2 tasks
    >>> reduce_recurring(acc, [0, 1, 0]).tolist()    # rows 0, 1 (after task 0) and 3 (final)
    [[0, 1], [2, 3], [6, 7]]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def first_appearance(task_ids: Sequence[int]) -> list[int]:
    """The distinct ids of ``task_ids`` in order of first appearance."""
    return list(dict.fromkeys(task_ids))


def reduce_recurring(tensor, task_ids: Sequence[int]) -> np.ndarray:
    """The (T+1, T, ...) view of an (N+1, T, ...) tensor of a stream with ids ``task_ids``.

    Args:
        tensor: rows 0..N (before training, then after each stream position), columns the T
            distinct task ids in increasing order (the evaluator's order); any trailing axes
            (adaptation steps) are kept.
        task_ids: the id of the task at each of the N stream positions.

    Returns:
        A new array of shape (T+1, T, ...): see the module docstring for which rows and columns.

    Raises:
        ValueError: the tensor's shape does not match ``task_ids``.
    """
    ids = list(task_ids)
    tensor = np.asarray(tensor)
    distinct = sorted(set(ids))
    if tensor.ndim < 2 or tensor.shape[0] != len(ids) + 1 or tensor.shape[1] != len(distinct):
        raise ValueError(f"a stream of {len(ids)} positions over {len(distinct)} tasks needs a tensor of shape "
                         f"({len(ids) + 1}, {len(distinct)}, ...); got {tensor.shape}")
    order = first_appearance(ids)
    columns = [distinct.index(i) for i in order]
    rows = [0] + [ids.index(i) + 1 for i in order[:-1]] + [len(ids)]
    return tensor[rows][:, columns]
