"""The machinery the gradient-based meta-learners share (MAML, Meta-SGD, Reptile, Continual-MAML).

:class:`EpisodicConfig` holds their common options, :class:`EpisodicStrategy` their set-up
(batch-statistics BatchNorm, norms rewritten for exact second-order gradients, training
episodes drawn with the strategy's generator, evaluation steps, the online fast weights),
:func:`fast_weights` the inner loop of one task, :func:`meta_objective` MAML's objective over a
meta-batch of episodes (batched over episodes for the layers of :mod:`strategies.batched`, one
``vmap`` otherwise) and :func:`meta_backward` its gradient accumulated over chunks of episodes.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Linear(1, 1)
    >>> fast = fast_weights(model, dict(model.named_parameters()), torch.ones(3, 1), torch.zeros(3, 1),
    ...                     steps=2, buffers={}, lr=0.1, kind="regression")
    >>> sorted(fast)
    ['bias', 'weight']
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterator, Literal, Mapping

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call, vmap

from scenarios.base import Episodes, StreamSpec, Support, Task
from strategies.backbones import use_batch_statistics, use_exact_norms
from strategies.base import AdaptState, Strategy, StrategyConfig, gradient_step, task_loss
from strategies.batched import batched_forward, batched_steps


class EpisodicConfig(StrategyConfig):
    """Options of the strategies that meta-train on batches of episodes of each task."""

    adapt_lr: float | None = Field(None, gt=0, description="learning rate of the evaluation-time adaptation "
                                                           "steps (default: inner_lr)")
    inner_steps: int = Field(1, ge=0, description="gradient steps on a support set in the inner loop")
    inner_lr: float = Field(0.1, gt=0, description="learning rate of the inner-loop steps")
    meta_batch_size: int = Field(8, gt=0, description="episodes per meta-update")
    meta_iterations: int = Field(100, gt=0, description="meta-updates on each task")
    shots: int | None = Field(None, gt=0, description="support items per class of a meta-training episode "
                                                      "(default: the stream's)")
    query: int | None = Field(None, gt=0, description="query items per class of a meta-training episode "
                                                      "(default: the stream's)")
    chunk_size: int | None = Field(None, gt=0, description="episodes of a meta-batch processed at once "
                                                           "(default: all); lower it when memory binds")
    online_adaptation: Literal["frozen", "reset", "accumulate"] = Field(
        "reset", description="online loop: predict with the meta-learned weights (frozen), with weights adapted "
                             "from them on the last observed batch (reset: OSAKA's MAML baseline), or keep "
                             "adapting the same fast weights on every batch (accumulate)")


def fast_weights(model: nn.Module, params: Mapping[str, Tensor], x: Tensor, y: Tensor, *, steps: int,
                 buffers: Mapping[str, Tensor], lr: float | Mapping[str, Tensor], kind: str,
                 mask: Tensor | None = None, names: Collection[str] | None = None,
                 first_order: bool = False) -> dict[str, Tensor]:
    """One task's parameters after ``steps`` full-batch gradient steps on ``(x, y)``.

    The arguments are those of :func:`~strategies.base.gradient_step`, applied ``steps``
    times; with ``steps = 0`` the parameters come back as they are.
    """
    for _ in range(steps):
        params = gradient_step(model, params, x, y, buffers=buffers, lr=lr, kind=kind, mask=mask,
                               names=names, first_order=first_order)
    return dict(params)


def meta_objective(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                   episodes: Episodes, *, steps: int, lr: float | Mapping[str, Tensor], kind: str,
                   names: Collection[str] | None = None, first_order: bool = False,
                   batched: bool = True) -> Tensor:
    """MAML's objective: the mean over episodes of the query loss after adapting to the support set.

    Every episode starts from ``params`` and takes ``steps`` inner steps (:func:`fast_weights`).
    The episodes run together: when the model is made of the layers
    :func:`strategies.batched.batched_forward` covers (``mlp``, ``conv4`` and plain
    ``nn.Sequential`` stacks of them), with parameters batched over the episodes and one
    ``torch.autograd.grad`` per inner step (:func:`strategies.batched.batched_steps`); for any
    other model, or with ``batched=False``, in one ``vmap``. Both give the same value and
    gradients up to rounding. The result is differentiable with respect to ``params`` (and
    ``lr`` when it holds tensors): exactly, through the inner gradients, unless ``first_order``.

    Example:
        >>> model = nn.Linear(1, 1)
        >>> eps = Episodes(torch.randn(4, 5, 1), torch.randn(4, 5, 1), torch.randn(4, 3, 1), torch.randn(4, 3, 1))
        >>> loss = meta_objective(model, dict(model.named_parameters()), {}, eps, steps=2, lr=0.1,
        ...                       kind="regression")
        >>> [g.shape for g in torch.autograd.grad(loss, list(model.parameters()))]
        [torch.Size([1, 1]), torch.Size([1])]
    """
    forward = batched_forward(model) if batched and not buffers else None
    if forward is not None:
        fast = batched_steps(forward, params, episodes.support_x, episodes.support_y, steps=steps, lr=lr,
                             kind=kind, mask=episodes.mask, names=names, first_order=first_order)
        # The query pass is differentiated once: channels-last images are faster there on the CPU.
        outputs = forward(fast, episodes.query_x, channels_last=episodes.query_x.device.type == "cpu")
        # The mean of the episodes' mean losses: one mean over all items (equal-sized episodes).
        return task_loss(outputs, episodes.query_y, kind, episodes.mask)

    def episode_loss(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        fast = fast_weights(model, params, sx, sy, steps=steps, buffers=buffers, lr=lr, kind=kind,
                            mask=episodes.mask, names=names, first_order=first_order)
        return task_loss(functional_call(model, (fast, buffers), (qx,)), qy, kind, episodes.mask)

    losses = vmap(episode_loss)(episodes.support_x, episodes.support_y, episodes.query_x, episodes.query_y)
    return losses.mean()


def meta_backward(objective: Callable[[Episodes], Tensor], episodes: Episodes, chunk_size: int | None) -> Tensor:
    """Backpropagate the mean of ``objective`` over ``episodes``, ``chunk_size`` episodes at a time.

    ``objective(part)`` must return the mean loss over the episodes of ``part``; each chunk's
    loss is weighted by its share of the episodes, so the gradients accumulated in ``.grad``
    are those of the mean over all episodes, whatever the chunk size. Returns that mean,
    detached.
    """
    total = len(episodes)
    chunk_size = chunk_size or total
    mean = torch.zeros((), device=episodes.support_x.device)
    for start in range(0, total, chunk_size):
        part = episodes.slice(start, min(start + chunk_size, total))
        loss = objective(part) * (len(part) / total)
        loss.backward()
        mean += loss.detach()
    return mean


class EpisodicStrategy(Strategy):
    """Shared set-up of the gradient-based meta-learners: batch-statistics BatchNorm, LayerNorm
    and InstanceNorm rewritten for exact second-order gradients, episodes drawn from the current
    task with the strategy's generator, evaluation steps with ``adapt_lr`` or else ``inner_lr``.
    Subclasses implement :meth:`learn`."""

    Config = EpisodicConfig

    def setup(self, model: nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        use_batch_statistics(self.model)
        use_exact_norms(self.model)
        self.adapted: tuple[str, ...] | None = None  # parameters the inner loop moves; None: all
        self.online_fast: dict[str, Tensor] | None = None  # the online loop's adapted weights

    def observe(self, x: Tensor, y: Tensor, task: int | None = None) -> dict[str, Any]:
        """Online: fast weights after ``inner_steps`` steps (the evaluation's step size, only the
        head's under ANIL) on the observed batch, from the meta-learned weights (``reset``) or
        from the current fast weights (``accumulate``); nothing under ``frozen``. The
        meta-learned weights themselves never move online."""
        mode = self.config.online_adaptation
        if mode == "frozen":
            return {}
        start = self.online_fast if mode == "accumulate" and self.online_fast is not None else \
            {n: p.detach() for n, p in self.model.named_parameters()}
        fast = fast_weights(self.model, start, x, y, steps=self.config.inner_steps,
                            buffers=dict(self.model.named_buffers()), lr=self.evaluation_lr(), kind=self.spec.kind,
                            names=self.adapted)
        self.online_fast = {n: p.detach() for n, p in fast.items()}
        return {}

    @torch.no_grad()
    def predict_online(self, x: Tensor) -> Tensor:
        """Outputs ``(B, out)`` of the fast weights (the meta-learned ones before any batch)."""
        params = self.online_fast or {n: p.detach() for n, p in self.model.named_parameters()}
        return functional_call(self.model, (params, dict(self.model.named_buffers())), (x,))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "online_fast": self.online_fast}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        fast = state.get("online_fast")
        self.online_fast = None if fast is None else {n: t.to(self.device) for n, t in fast.items()}

    def episodes(self, task: Task) -> Episodes:
        """A meta-batch of training episodes of ``task`` on the strategy's device."""
        c = self.config
        return task.episodes("train", c.meta_batch_size, c.shots or self.spec.shots, c.query or self.spec.query,
                             self.generator).to(self.device)

    def training_episodes(self, spec: StreamSpec) -> tuple[int, int, int]:
        """One meta-batch: ``meta_batch_size`` episodes of ``shots`` and ``query`` (default: the stream's)."""
        c = self.config
        return c.meta_batch_size, c.shots or spec.shots, c.query or spec.query

    def evaluation_lr(self) -> float | Mapping[str, Tensor]:
        """The step size of ``adapt``: ``adapt_lr`` when set, else ``inner_lr``."""
        c = self.config
        return c.adapt_lr if c.adapt_lr is not None else c.inner_lr

    def adapt(self, support: Support, steps: int) -> Iterator[AdaptState]:
        """The inner loop's steps on each support set (only the head's under ANIL)."""
        return self.gradient_adapt(support, steps, self.evaluation_lr(), self.adapted)
