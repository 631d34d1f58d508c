"""``reptile``: Reptile (Nichol et al. 2018), first-order meta-learning by interpolation.

On each task of the stream, Reptile makes ``meta_iterations`` meta-updates. Each draws
``meta_batch_size`` episodes from the task's training source, adapts a copy of the parameters
to every episode with ``inner_steps`` (k) full-batch SGD steps of size ``inner_lr``, and moves
the parameters towards the mean of the adapted copies::

    theta <- theta + epsilon * (mean_i theta_i - theta)

Reptile has no query split, so the inner steps use every example of an episode (its support
and query items together). The copies of a meta-batch adapt together: one ``vmap`` over the
episodes of :func:`~strategies.maml.fast_weights` (``chunk_size`` episodes at a time). The step
size ``epsilon`` is constant (the paper anneals it linearly within one training run; a lifelong
stream has no end to anneal towards). Evaluation adapts like MAML: SGD steps of ``inner_lr``
(or ``adapt_lr``) on each support set.

Example:
    >>> import scenarios, strategies
    >>> stream = scenarios.build("sinusoid", {"num_tasks": 1, "train_functions": 50}, seed=0)
    >>> s = strategies.build("reptile", {"meta_iterations": 2, "inner_lr": 0.01})
    >>> s.setup(strategies.build_model("mlp", {"hidden": [40, 40]}, stream.spec), stream.spec, "cpu")
    >>> sorted(s.learn(stream[0].training_view()))
    ['inner_loss', 'meta_iterations']
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call, vmap

from scenarios.base import Task
from strategies.base import check_finite, task_loss
from strategies.maml import EpisodicConfig, EpisodicStrategy, fast_weights


class ReptileConfig(EpisodicConfig):
    inner_steps: int = Field(5, gt=0, description="k: SGD steps on each sampled episode")
    query: int | None = Field(None, gt=0, description="more items per class of a meta-training episode; the "
                                                      "inner steps use support and query items together "
                                                      "(default: the stream's)")
    epsilon: float = Field(0.1, gt=0, le=1, description="outer step size: theta += epsilon * "
                                                        "(mean adapted theta - theta)")


def reptile_target(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor,
                   y: Tensor, *, steps: int, lr: float, kind: str, mask: Tensor | None = None,
                   chunk_size: int | None = None) -> tuple[dict[str, Tensor], Tensor]:
    """The mean over tasks of the parameters adapted to each task, and the mean adapted loss.

    Task ``i`` starts from ``params`` and takes ``steps`` full-batch SGD steps on
    ``(x[i], y[i])``; the tasks run together in one ``vmap`` (``chunk_size`` at a time). The
    loss is each task's loss on its own data at its adapted parameters, averaged over tasks.

    Example:
        >>> model = nn.Linear(1, 1)
        >>> p = {n: t.detach() for n, t in model.named_parameters()}
        >>> target, loss = reptile_target(model, p, {}, torch.randn(3, 4, 1), torch.randn(3, 4, 1),
        ...                               steps=2, lr=0.1, kind="regression")
        >>> target["weight"].shape, loss.shape
        (torch.Size([1, 1]), torch.Size([]))
    """
    def adapt_one(xe: Tensor, ye: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        fast = fast_weights(model, params, xe, ye, steps=steps, buffers=buffers, lr=lr, kind=kind, mask=mask)
        return fast, task_loss(functional_call(model, (fast, buffers), (xe,)), ye, kind, mask)

    total = x.shape[0]
    chunk_size = chunk_size or total
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    loss = torch.zeros((), device=x.device)
    for start in range(0, total, chunk_size):
        fast, losses = vmap(adapt_one)(x[start:start + chunk_size], y[start:start + chunk_size])
        for n in sums:
            sums[n] += fast[n].sum(0)
        loss += losses.sum()
    return {n: s / total for n, s in sums.items()}, loss / total


class Reptile(EpisodicStrategy):
    """Reptile: move the initialisation towards the parameters adapted to sampled episodes."""

    name = "reptile"
    Config = ReptileConfig

    @torch.no_grad()
    def learn(self, task: Task) -> dict[str, Any]:
        c = self.config
        self.model.train()
        buffers = dict(self.model.named_buffers())
        loop = self.task_loop(total=torch.zeros((), device=self.device))
        total = loop.carry["total"]
        for _ in loop.steps(c.meta_iterations):
            eps = self.episodes(task)
            x = torch.cat([eps.support_x, eps.query_x], dim=1)
            y = torch.cat([eps.support_y, eps.query_y], dim=1)
            params = {n: p.detach() for n, p in self.model.named_parameters()}
            target, loss = reptile_target(self.model, params, buffers, x, y, steps=c.inner_steps, lr=c.inner_lr,
                                          kind=self.spec.kind, mask=eps.mask, chunk_size=c.chunk_size)
            for n, p in self.model.named_parameters():
                p.add_(c.epsilon * (target[n] - p))
            total += loss
            loop.loss = loss
        check_finite(total, self.label, task.name, c.meta_iterations)
        return {"inner_loss": float(total) / c.meta_iterations, "meta_iterations": c.meta_iterations}
