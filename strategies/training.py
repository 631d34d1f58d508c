"""Plain minibatch training, shared by the baselines (``finetune``, ``joint``, the Avalanche
strategies): their options (:class:`MinibatchConfig`), the optimiser (:func:`make_optimizer`),
and the resumable minibatch loop (:func:`train_minibatches`) over a task's training data as flat
examples (:func:`~strategies.base.training_examples`).

Example:
    >>> import scenarios, strategies
    >>> stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    >>> s = strategies.build("finetune", {"epochs": 1})
    >>> s.setup(strategies.build_model("mlp", {}, stream.spec), stream.spec, "cpu", seed=0)
    >>> from strategies.base import training_examples
    >>> x, y, mask = training_examples(s, stream[0].training_view())
    >>> sorted(train_minibatches(s, make_optimizer("sgd", s.model.parameters(), 0.1), x, y, mask,
    ...                          epochs=1, batch_size=32, task_name="digits 0-1"))
    ['steps', 'train_loss']
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from strategies.base import Strategy, StrategyConfig, TaskLoop, check_finite


class MinibatchConfig(StrategyConfig):
    """Options of the strategies trained by plain minibatch gradient descent."""

    lr: float = Field(0.1, gt=0, description="learning rate of training")
    epochs: int = Field(5, gt=0, description="passes over the training data of each task")
    batch_size: int = Field(32, gt=0, description="examples per minibatch")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="training optimiser")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum")


LRSchedule = Literal["constant", "cosine"]
"""How a strategy's outer learning rate moves over a task's iterations (:func:`scheduled_lr`)."""


def schedule_field(rate: str) -> Any:
    """The pydantic field of an ``LRSchedule`` option that schedules the option ``rate``."""
    return Field("constant", description=f"how {rate} moves over each task's meta_iterations: constant, or cosine "
                                         f"(from {rate} at the first iteration down towards 0 along a half cosine)")


def scheduled_lr(base: float, schedule: LRSchedule, step: int, total: int) -> float:
    """The learning rate of iteration ``step`` (from 0) of ``total``.

    ``constant`` keeps ``base``; ``cosine`` gives ``base * (1 + cos(pi * step / total)) / 2``: ``base``
    at the first iteration, half of it midway, near 0 at the last. A function of the iteration
    alone, so a run resumed from a checkpoint takes the same rates; on a stream of several tasks
    the schedule starts again with each task.

    Example:
        >>> [round(scheduled_lr(0.001, "cosine", i, 4), 6) for i in range(4)]
        [0.001, 0.000854, 0.0005, 0.000146]
        >>> scheduled_lr(0.001, "constant", 3, 4)
        0.001
    """
    if schedule == "constant":
        return base
    return base * (1 + math.cos(math.pi * step / total)) / 2


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group of ``optimizer`` the learning rate ``lr``."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(name: str, params, lr: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    """``sgd`` or ``adam`` over ``params``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


def train_minibatches(strategy: Strategy, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                      mask: Tensor | None, epochs: int, batch_size: int, task_name: str,
                      loop: TaskLoop | None = None) -> dict[str, Any]:
    """Plain minibatch training of ``strategy.model`` on (x, y) for ``epochs`` passes.

    Batches are drawn from the strategy's generator (reproducible); ``mask`` is None, (out,)
    or (N, out) per example. The minibatches are the iterations of ``loop`` (a fresh
    :meth:`Strategy.task_loop` by default), so a run can be checkpointed and resumed between
    any two of them. Returns the mean loss of the last epoch and the number of steps.
    """
    loop = loop if loop is not None else strategy.task_loop()
    model, n = strategy.model, x.shape[0]
    per_epoch = -(-n // batch_size)
    model.train()
    carry = loop.carry
    carry.setdefault("epoch_loss", torch.zeros((), device=x.device))
    for step in loop.steps(epochs * per_epoch):
        batch = step % per_epoch
        if batch == 0:  # a new epoch: a new order (kept in the carry for a mid-epoch resume)
            carry["order"] = torch.randperm(n, generator=strategy.generator).to(x.device)
            carry["epoch_loss"] = torch.zeros((), device=x.device)
        idx = carry["order"][batch * batch_size:(batch + 1) * batch_size]
        batch_mask = mask[idx] if mask is not None and mask.dim() == 2 else mask
        loss = strategy.loss(model(x[idx]), y[idx], batch_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        carry["epoch_loss"] += loss.detach() * len(idx)
        loop.loss = loss.detach()
        loop.report(loss=loop.loss)
        if batch == per_epoch - 1:
            check_finite(carry["epoch_loss"], strategy.label, task_name, step + 1)
    return {"train_loss": float(carry["epoch_loss"]) / n, "steps": epochs * per_epoch}
