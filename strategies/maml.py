"""``maml``: Model-Agnostic Meta-Learning (Finn et al. 2017), with its first-order and ANIL variants.

On each task of the stream, MAML makes ``meta_iterations`` meta-updates. Each one draws
``meta_batch_size`` episodes from the task's training source (with the strategy's own
generator), adapts a copy of the parameters to every episode's support set with
``inner_steps`` gradient steps of size ``inner_lr``, and moves the initialisation with Adam
(``meta_lr``) along the gradient of the mean query loss of the adapted copies.

The inner loops of a meta-batch run together: for a model of the layers that
:mod:`strategies.batched` covers (``mlp``, ``conv4``), :func:`meta_objective` expands the
parameters over the episodes and takes each inner step for all of them with one
``torch.autograd.grad(create_graph=True)``; for any other model it is one ``vmap`` over the
episodes of a function that takes its inner steps with ``torch.func.grad``
(:func:`~strategies.base.gradient_step`) and returns the episode's query loss. Either way the
inner gradients stay in the autograd graph, so the ordinary ``backward`` of the mean query
loss is the exact second-order meta-gradient; ``first_order`` (FOMAML) takes the inner gradients at
detached parameters instead, so they count as constants. ``chunk_size`` episodes are
differentiated at a time and their gradients summed (:func:`meta_backward`): the same gradient
with less activation memory.

ANIL (Raghu et al. 2020) adapts only the head in the inner loop, both in meta-training and at
evaluation; the outer update still trains every parameter. The head is the last ``nn.Linear``
in the order of ``model.named_modules()`` (:func:`head_names`): for an ``nn.Sequential``
backbone such as ``mlp`` or ``conv4`` that is the output layer. A model whose output layer is
not its last registered ``nn.Linear`` should not be used with ``anil``.

At evaluation, ``adapt`` takes the same kind of steps with ``inner_lr`` (or ``adapt_lr`` when
set), one ``vmap`` over the episodes per step. BatchNorm uses batch statistics (see
``strategies/backbones.py``); :func:`~strategies.backbones.use_batch_statistics` is applied to
the model in ``setup``, and so is :func:`~strategies.backbones.use_exact_norms`, which rewrites
``nn.LayerNorm`` and ``nn.InstanceNorm*d`` layers, whose second-order gradients under ``vmap``
torch gets wrong, with plain tensor operations that keep the meta-gradient exact.

This module also holds the machinery the other gradient-based meta-learners share:
:class:`EpisodicConfig`, :class:`EpisodicStrategy` and :func:`fast_weights` (Reptile,
Meta-SGD).

Example:
    >>> import scenarios, strategies, torch
    >>> stream = scenarios.build("sinusoid", {"num_tasks": 1, "train_functions": 50}, seed=0)
    >>> maml = strategies.build("maml", {"meta_iterations": 2, "inner_lr": 0.01})
    >>> maml.setup(strategies.build_model("mlp", {"hidden": [40, 40]}, stream.spec), stream.spec, "cpu")
    >>> sorted(maml.learn(stream[0].training_view()))
    ['meta_iterations', 'meta_loss']
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterator, Literal, Mapping

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call, vmap

from scenarios.base import Episodes, StreamSpec, Support, Task
from strategies.backbones import use_batch_statistics, use_exact_norms
from strategies.base import AdaptState, Strategy, StrategyConfig, check_finite, gradient_step, task_loss
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


class MAMLConfig(EpisodicConfig):
    meta_lr: float = Field(0.001, gt=0, description="Adam learning rate of the meta-update")
    first_order: bool = Field(False, description="FOMAML: treat the inner gradients as constants")
    anil: bool = Field(False, description="ANIL: the inner loop adapts only the head (the last nn.Linear)")


def head_names(model: nn.Module) -> tuple[str, ...]:
    """Names of the parameters of the last ``nn.Linear`` in ``model.named_modules()`` order.

    Example:
        >>> head_names(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)))
        ('2.weight', '2.bias')
    """
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"ANIL adapts the model's last nn.Linear layer, and {type(model).__name__} has none")
    prefix = linears[-1]
    head = model.get_submodule(prefix)
    return tuple(f"{prefix}.{n}" if prefix else n for n, _ in head.named_parameters(recurse=False))


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


class MAML(EpisodicStrategy):
    """MAML: meta-learn an initialisation that adapts to a task in a few gradient steps."""

    name = "maml"
    Config = MAMLConfig

    def setup(self, model: nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        if self.config.anil:
            self.adapted = head_names(self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.meta_lr)

    def inner_lr(self) -> float | Mapping[str, Tensor]:
        """The inner loop's step size in meta-training (learned tensors in Meta-SGD)."""
        return self.config.inner_lr

    def meta_loss(self, episodes: Episodes) -> Tensor:
        """:func:`meta_objective` of the current model on ``episodes``, differentiable."""
        c = self.config
        return meta_objective(self.model, dict(self.model.named_parameters()), dict(self.model.named_buffers()),
                              episodes, steps=c.inner_steps, lr=self.inner_lr(), kind=self.spec.kind,
                              names=self.adapted, first_order=c.first_order)

    def learn(self, task: Task) -> dict[str, Any]:
        c = self.config
        self.model.train()
        loop = self.task_loop(total=torch.zeros((), device=self.device))
        total = loop.carry["total"]
        for _ in loop.steps(c.meta_iterations):
            episodes = self.episodes(task)
            self.optimizer.zero_grad(set_to_none=True)
            loop.loss = meta_backward(self.meta_loss, episodes, c.chunk_size)
            loop.report(meta_loss=loop.loss)  # for the run's logs: kept on the device, read at their interval
            total += loop.loss
            self.optimizer.step()
        # One check per task: a per-iteration check would synchronise the GPU every step.
        check_finite(total, self.label, task.name, c.meta_iterations)
        return {"meta_loss": float(total) / c.meta_iterations, "meta_iterations": c.meta_iterations}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
