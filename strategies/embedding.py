"""The machinery the embedding strategies share (prototype memory, Matching Networks, SNAIL, LEO).

:class:`EmbeddingConfig` holds their common options and :class:`EmbeddingStrategy` their
set-up and training loop: a registered backbone built with ``embedding_dim`` outputs,
batch-statistics BatchNorm, ``meta_iterations`` Adam steps on episodes of each task, each
through the subclass's :meth:`EmbeddingStrategy.episode_loss`, at the rate ``lr``, or lowered
from it along a half cosine over each task's steps with ``lr_schedule = "cosine"``
(:func:`~strategies.training.scheduled_lr`). :func:`embed` embeds a batch of
episodes, :func:`class_sums` sums embeddings per class, :func:`fill_absent` keeps classes
without a prototype out of every argmax, and :class:`LastBatchSupport` is the online
behaviour of the strategies that read a support set.

Example:
    >>> import torch
    >>> from torch import nn
    >>> embed(nn.Linear(3, 2), torch.zeros(4, 5, 3)).shape
    torch.Size([4, 5, 2])
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call, vmap

from scenarios.base import Episodes, StreamSpec, Task
from strategies.backbones import use_batch_statistics
from strategies.base import Strategy, StrategyConfig, check_finite
from strategies.training import LRSchedule, schedule_field, scheduled_lr, set_lr


class EmbeddingConfig(StrategyConfig):
    """Options of the strategies that train an embedding network on episodes."""

    adapt_lr: Literal[None] = Field(None, description="not used: these strategies adapt without gradient steps")
    embedding_dim: int = Field(64, gt=0, description="output size of a registered backbone: the embedding width")
    lr: float = Field(0.001, gt=0, description="Adam learning rate of the embedding network")
    lr_schedule: LRSchedule = schedule_field("lr")
    meta_iterations: int = Field(100, gt=0, description="episodic training steps on each task")
    meta_batch_size: int = Field(4, gt=0, description="episodes per training step")
    shots: int | None = Field(None, gt=0, description="support items per class of a training episode "
                                                      "(default: the stream's)")
    query: int | None = Field(None, gt=0, description="query items per class of a training episode "
                                                      "(default: the stream's)")


def embed(model: nn.Module, x: Tensor) -> Tensor:
    """Embeddings ``(E, N, D)`` of inputs ``(E, N, *input_shape)``, one forward per episode
    (so batch-statistics BatchNorm normalises each episode on its own); differentiable."""
    weights = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return vmap(lambda xe: functional_call(model, weights, (xe,)))(x)


def class_sums(embeddings: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per episode and class, the sum of the embeddings ``(E, C, D)`` and their count ``(E, C)``.

    Example:
        >>> sums, counts = class_sums(torch.tensor([[[1.0], [3.0], [5.0]]]), torch.tensor([[0, 0, 2]]), 3)
        >>> sums.flatten().tolist(), counts.flatten().tolist()
        ([4.0, 0.0, 5.0], [2.0, 0.0, 1.0])
    """
    onehot = F.one_hot(labels, num_classes).to(embeddings.dtype)           # (E, N, C)
    return onehot.transpose(1, 2) @ embeddings, onehot.sum(1)


def fill_absent(logits: Tensor, present: Tensor) -> Tensor:
    """``logits`` ``(E, Q, C)`` where the classes not ``present`` (``(E, C)`` or ``(C,)``) score
    one below the lowest present logit of their row, or 0 when no class is present.

    Example:
        >>> fill_absent(torch.tensor([[[-2.0, -5.0, 9.0]]]), torch.tensor([True, True, False])).tolist()
        [[[-2.0, -5.0, -6.0]]]
    """
    present = present.unsqueeze(-2).expand_as(logits)
    lowest = logits.masked_fill(~present, float("inf")).amin(-1, keepdim=True) - 1
    lowest = torch.where(present.any(-1, keepdim=True), lowest, torch.zeros_like(lowest))
    return torch.where(present, logits, lowest)


class EmbeddingStrategy(Strategy):
    """Shared machinery of the embedding strategies: model sizing, batch-statistics BatchNorm,
    episodic training with Adam. Subclasses implement :meth:`episode_loss` and may extend
    :meth:`after_task`."""

    Config = EmbeddingConfig
    kinds = frozenset({"classification"})  # classes are compared by embedding similarity

    def model_spec(self, spec: StreamSpec) -> StreamSpec:
        """The stream's spec with ``embedding_dim`` outputs: a registered backbone is the embedding."""
        return dataclasses.replace(spec, output_size=self.config.embedding_dim)

    def training_episodes(self, spec: StreamSpec) -> tuple[int, int, int]:
        """One training step's ``meta_batch_size`` episodes of ``shots`` and ``query`` (default: the stream's)."""
        c = self.config
        return c.meta_batch_size, c.shots or spec.shots, c.query or spec.query

    def setup(self, model: nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        if spec.kind != "classification":
            raise ValueError(f"{self.name} classifies by embedding similarity; stream {spec.name!r} is {spec.kind}")
        super().setup(model, spec, device, seed)
        use_batch_statistics(self.model)
        self.num_classes = spec.output_size
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)

    def episode_loss(self, episodes: Episodes) -> Tensor:
        """Mean training loss of the embedding on ``episodes`` (differentiable)."""
        raise NotImplementedError

    def after_task(self, task: Task) -> dict[str, Any]:
        """Called at the end of :meth:`learn`; returns extra logs."""
        return {}

    def learn(self, task: Task) -> dict[str, Any]:
        c = self.config
        self.model.train()
        loop = self.task_loop(total=torch.zeros((), device=self.device))
        total = loop.carry["total"]
        for step in loop.steps(c.meta_iterations):
            eps = task.episodes("train", c.meta_batch_size, c.shots or self.spec.shots, c.query or self.spec.query,
                                self.generator).to(self.device)
            loss = self.episode_loss(eps)
            set_lr(self.optimizer, scheduled_lr(c.lr, c.lr_schedule, step, c.meta_iterations))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.detach()
            loop.loss = loss.detach()
        check_finite(total, self.label, task.name, c.meta_iterations)
        return {"train_loss": float(total) / c.meta_iterations, "meta_iterations": c.meta_iterations,
                **self.after_task(task)}



class LastBatchSupport:
    """Online behaviour shared by the embedding strategies that read a support set (Matching
    Networks, SNAIL): ``observe`` keeps the last observed batch as the support set of the next
    ``predict_online`` calls, and the checkpoints carry it. List it before the strategy's base
    class (``class Matching(LastBatchSupport, EmbeddingStrategy)``); the strategy's
    ``predict_online`` reads :attr:`online_support` (``None`` before the first batch)."""

    online_support: tuple[Tensor, Tensor] | None = None

    def setup(self, model: nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        self.online_support = None

    @torch.no_grad()
    def observe(self, x: Tensor, y: Tensor, task: int | None = None) -> dict[str, Any]:
        """Online: the last observed batch becomes the support set of the next predictions."""
        self.online_support = (x.clone(), y.clone())
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "online_support": self.online_support}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        support = state.get("online_support")
        self.online_support = None if support is None else tuple(t.to(self.device) for t in support)
