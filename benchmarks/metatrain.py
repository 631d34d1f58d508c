"""Meta-training with progress lines, for the reproduction scripts.

``lifelong run`` calls a strategy's ``learn`` once per task; a reproduction trains one task for
tens of thousands of meta-iterations, so :func:`meta_train` makes the same calls on blocks of
``log_every`` iterations and prints a line after each. The strategy's optimiser, generator and
model carry over between calls, so the blocks draw the same episodes and take the same steps
as one call of ``learn`` with every iteration (``tests/test_benchmarks.py`` checks this).
"""

from __future__ import annotations

import os
import time


def meta_train(strategy, task, iterations: int, log_every: int) -> tuple[float, float]:
    """``iterations`` meta-updates of ``strategy`` on ``task`` in calls of ``learn`` of
    ``log_every`` each, printing the loss, wall and CPU time and load after each call.

    Returns (wall seconds, CPU seconds of this process). ``strategy.config.meta_iterations``
    is left at the size of the last block.
    """
    wall, cpu, done = time.perf_counter(), time.process_time(), 0
    while done < iterations:
        block = min(log_every, iterations - done)
        if block != strategy.config.meta_iterations:
            strategy.config = strategy.config.model_copy(update={"meta_iterations": block})
        logs = strategy.learn(task)
        done += block
        loss = next(v for k, v in logs.items() if k.endswith("loss"))
        print(f"  {done:>7} iterations  loss {loss:.3f} (mean of the last {block})  "
              f"{time.perf_counter() - wall:7.0f} s  cpu {time.process_time() - cpu:7.0f} s  "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    return time.perf_counter() - wall, time.process_time() - cpu
