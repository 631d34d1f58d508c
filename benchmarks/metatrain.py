"""Meta-training with progress lines, for the reproduction scripts.

``lifelong run`` calls a strategy's ``learn`` once per task; a reproduction trains one task for
tens of thousands of meta-iterations, so :func:`meta_train` makes that one call with a progress
hook on the strategy's task loop (:class:`~strategies.base.TaskLoop`), which prints a line every
``log_every`` iterations. Being one call, everything that depends on the iteration's place in
the task (``lr_schedule``, ``meta_lr_schedule``, Reptile's ``epsilon_final``) spans the whole run,
as in ``lifelong run`` (``tests/test_benchmarks.py`` checks that it takes the same steps).

Until 2026-12-02 it called ``learn`` once per block of ``log_every`` iterations instead: the same
steps for a constant rate, but a schedule then started again with every block (see
benchmarks/RESULTS.md for the rows that ran so).
"""

from __future__ import annotations

import os
import time
from typing import Any

from strategies.base import TaskLoop


def meta_train(strategy, task, iterations: int, log_every: int) -> tuple[float, float]:
    """``iterations`` meta-updates of ``strategy`` on ``task`` in one call of ``learn``, printing the
    mean loss of the last ``log_every`` iterations (the loop's ``loss``), wall and CPU time and load
    every ``log_every`` iterations and after the last.

    Returns (wall seconds, CPU seconds of this process). ``strategy.config.meta_iterations``
    is left at ``iterations``.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    # The block's losses are summed where they are (on the GPU there): one host read per line.
    block: dict[str, Any] = {"sum": 0.0, "count": 0}
    current: dict[str, TaskLoop] = {}

    def line(done: int) -> None:
        print(f"  {done:>7} iterations  loss {float(block['sum']) / block['count']:.3f} (mean of the last "
              f"{block['count']})  {time.perf_counter() - wall:7.0f} s  cpu {time.process_time() - cpu:7.0f} s  "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        block.update(sum=0.0, count=0)

    def add(loop: TaskLoop) -> None:
        block["sum"] = block["sum"] + loop.loss.detach()
        block["count"] += 1

    def after_step(loop: TaskLoop) -> None:    # after every iteration but the last
        add(loop)
        if loop.position % log_every == 0:
            line(loop.position)

    def make_loop(carry) -> TaskLoop:
        current["loop"] = TaskLoop(carry, on_step=after_step)
        return current["loop"]

    strategy.config = strategy.config.model_copy(update={"meta_iterations": iterations})
    strategy.loop_factory = make_loop
    try:
        strategy.learn(task)
    finally:
        strategy.loop_factory = None
    add(current["loop"])
    line(iterations)
    return time.perf_counter() - wall, time.process_time() - cpu
