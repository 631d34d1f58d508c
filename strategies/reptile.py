"""``reptile``: Reptile (Nichol et al. 2018), first-order meta-learning by interpolation.

On each task of the stream, Reptile makes ``meta_iterations`` meta-updates. Each draws
``meta_batch_size`` episodes from the task's training source, adapts a copy of the parameters
to every episode with ``inner_steps`` (k) steps of the inner optimiser, and moves the
parameters towards the mean of the adapted copies::

    theta <- theta + epsilon * (mean_i theta_i - theta)

Reptile has no query split, so the inner steps use every example of an episode (its support
and query items together): the whole episode at every step, or with ``inner_batch_size``
mini-batches drawn as the authors' code draws them (passes over the episode in a fresh random
order, a batch running on into the next pass). The copies of a meta-batch adapt together: one
``vmap`` over the episodes (``chunk_size`` episodes at a time).

Inner optimisers:

- ``sgd`` (default): steps of size ``inner_lr``.
- ``adam``: the paper's. Adam with ``adam_beta1`` = 0 and ``adam_beta2`` = 0.999 (the
  authors' ``AdamOptimizer(beta1=0)``), in TensorFlow's form (the bias correction folded into
  the step size, ``eps`` added to the root of the second moment), step size ``inner_lr``. As in
  the authors' code (github.com/openai/supervised-reptile, ``reptile.py``) the moments are
  never reset: they carry over from episode to episode and task to task, and are part of the
  checkpoint. Where we differ: their episodes run one after another, each starting from the
  moments the previous one left; here the episodes of a meta-batch run together from the same
  moments, and the moments that carry over are the mean of the episodes' final ones (the step
  count advances by every step taken, as theirs). Evaluation and the online loop take Adam
  steps from the stored moments without changing them (the authors restore their whole
  optimiser state after each evaluation episode), on the whole support set.

``epsilon`` is constant unless ``epsilon_final`` is set: then it falls linearly from
``epsilon`` to ``epsilon_final`` over each task's meta-iterations (the paper anneals it over its
one training run; on a lifelong stream each task's training is such a run). Evaluation adapts
with ``adapt_lr`` (default ``inner_lr``) and the inner optimiser.

Example:
    >>> import scenarios, strategies
    >>> stream = scenarios.build("sinusoid", {"num_tasks": 1, "train_functions": 50}, seed=0)
    >>> s = strategies.build("reptile", {"meta_iterations": 2, "inner_lr": 0.01})
    >>> s.setup(strategies.build_model("mlp", {"hidden": [40, 40]}, stream.spec), stream.spec, "cpu")
    >>> sorted(s.learn(stream[0].training_view()))
    ['inner_loss', 'meta_iterations']
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Literal, Mapping

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from scenarios.base import Support, Task
from strategies.base import AdaptState, check_finite, gradient_step, task_loss
from strategies.episodic import EpisodicConfig, EpisodicStrategy, fast_weights


class ReptileConfig(EpisodicConfig):
    inner_steps: int = Field(5, gt=0, description="k: SGD steps on each sampled episode")
    query: int | None = Field(None, gt=0, description="more items per class of a meta-training episode; the "
                                                      "inner steps use support and query items together "
                                                      "(default: the stream's)")
    epsilon: float = Field(0.1, gt=0, le=1, description="outer step size: theta += epsilon * "
                                                        "(mean adapted theta - theta)")
    epsilon_final: float | None = Field(None, ge=0, le=1, description="anneal epsilon linearly to this value over "
                                                                      "each task's meta-iterations (default: constant)")
    inner_optimizer: Literal["sgd", "adam"] = Field("sgd", description="inner-loop optimiser: sgd, or adam (the "
                                                                      "paper's: beta1 = 0, moments carried over)")
    inner_batch_size: int | None = Field(None, gt=0, description="items per inner step, drawn in passes over "
                                                                 "the episode (default: the whole episode)")
    adam_beta1: float = Field(0.0, ge=0, lt=1, description="adam: decay of the first moment (the paper's: 0)")
    adam_beta2: float = Field(0.999, gt=0, lt=1, description="adam: decay of the second moment")
    adam_eps: float = Field(1e-8, gt=0, description="adam: added to the root of the second moment")

    @model_validator(mode="after")
    def _annealing_goes_down(self):
        if self.epsilon_final is not None and self.epsilon_final > self.epsilon:
            raise ValueError(f"epsilon_final = {self.epsilon_final} exceeds epsilon = {self.epsilon}: "
                             "the outer step size is annealed downwards")
        return self


Moments = tuple[dict[str, Tensor], dict[str, Tensor]]


def adam_step(model: nn.Module, params: Mapping[str, Tensor], moments: Moments, x: Tensor, y: Tensor, *,
              count: int, lr: float, betas: tuple[float, float], eps: float, buffers: Mapping[str, Tensor],
              kind: str, mask: Tensor | None = None) -> tuple[dict[str, Tensor], Moments]:
    """One Adam step on ``(x, y)``, the optimiser's ``count``-th (from 1), in TensorFlow's form
    (the Reptile authors' optimiser)::

        m <- beta1 m + (1 - beta1) g;   v <- beta2 v + (1 - beta2) g^2
        theta <- theta - lr sqrt(1 - beta2^count) / (1 - beta1^count) * m / (sqrt(v) + eps)

    Pure (returns the new parameters and moments ``(m, v)``) and usable inside ``vmap``.

    Example:
        >>> model = nn.Linear(1, 1, bias=False)
        >>> p = {"weight": torch.ones(1, 1)}
        >>> zero = ({"weight": torch.zeros(1, 1)}, {"weight": torch.zeros(1, 1)})
        >>> new, _ = adam_step(model, p, zero, torch.ones(2, 1), torch.zeros(2, 1), count=1, lr=0.1,
        ...                    betas=(0.0, 0.999), eps=0.0, buffers={}, kind="regression")
        >>> round(float(new["weight"]), 6)  # the first step moves by lr whatever the gradient's size
        0.9
    """
    def loss(p: dict[str, Tensor]) -> Tensor:
        return task_loss(functional_call(model, (p, buffers), (x,)), y, kind, mask)

    gradient = grad(loss)(dict(params))
    beta1, beta2 = betas
    m = {n: beta1 * moments[0][n] + (1 - beta1) * gradient[n] for n in params}
    v = {n: beta2 * moments[1][n] + (1 - beta2) * gradient[n] * gradient[n] for n in params}
    rate = lr * math.sqrt(1 - beta2 ** count) / (1 - beta1 ** count)
    return {n: params[n] - rate * m[n] / (v[n].sqrt() + eps) for n in params}, (m, v)


def inner_batches(episodes: int, items: int, steps: int, batch_size: int, generator: torch.Generator) -> Tensor:
    """Indices ``(episodes, steps, batch_size)`` into each episode's ``items`` items: passes over
    the items, each in a fresh random order, laid end to end and cut into batches (a batch may
    run on into the next pass, and hold an item twice when ``batch_size > items``), as the
    Reptile authors' ``_mini_batches`` draws them.

    Example:
        >>> batches = inner_batches(2, 4, steps=3, batch_size=2, generator=torch.Generator().manual_seed(0))
        >>> batches.shape, sorted(batches[0, :2].flatten().tolist())
        (torch.Size([2, 3, 2]), [0, 1, 2, 3])
    """
    passes = math.ceil(steps * batch_size / items)
    order = torch.rand(episodes, passes, items, generator=generator).argsort(-1)
    return order.reshape(episodes, passes * items)[:, :steps * batch_size].reshape(episodes, steps, batch_size)


def reptile_target(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor,
                   y: Tensor, *, steps: int, lr: float, kind: str, mask: Tensor | None = None,
                   chunk_size: int | None = None, batches: Tensor | None = None,
                   adam: dict[str, Any] | None = None) -> tuple[dict[str, Tensor], Tensor, Moments | None]:
    """The mean over tasks of the parameters adapted to each task, the mean adapted loss and,
    under Adam, the mean of the tasks' final moments.

    Task ``i`` starts from ``params`` and takes ``steps`` steps on ``(x[i], y[i])``: on all of
    it, or on the items ``batches[i, s]`` at step ``s`` (:func:`inner_batches`); SGD steps of
    ``lr``, or with ``adam = {"moments": (m, v), "count": c, "betas": ..., "eps": ...}`` Adam
    steps (:func:`adam_step`) from those moments, numbered ``c + 1 ..``. The tasks run together
    in one ``vmap`` (``chunk_size`` at a time). The loss is each task's loss on all of its data
    at its adapted parameters, averaged over tasks.

    Example:
        >>> model = nn.Linear(1, 1)
        >>> p = {n: t.detach() for n, t in model.named_parameters()}
        >>> target, loss, _ = reptile_target(model, p, {}, torch.randn(3, 4, 1), torch.randn(3, 4, 1),
        ...                                  steps=2, lr=0.1, kind="regression")
        >>> target["weight"].shape, loss.shape
        (torch.Size([1, 1]), torch.Size([]))
    """
    def final_loss(fast: dict[str, Tensor], xe: Tensor, ye: Tensor) -> Tensor:
        return task_loss(functional_call(model, (fast, buffers), (xe,)), ye, kind, mask)

    def batch(xe: Tensor, ye: Tensor, order: Tensor | None, s: int) -> tuple[Tensor, Tensor]:
        return (xe, ye) if order is None else (xe[order[s]], ye[order[s]])

    def sgd_one(xe: Tensor, ye: Tensor, order: Tensor | None):
        if order is None:
            fast = fast_weights(model, params, xe, ye, steps=steps, buffers=buffers, lr=lr, kind=kind, mask=mask)
        else:
            fast = dict(params)
            for s in range(steps):
                fast = gradient_step(model, fast, *batch(xe, ye, order, s), buffers=buffers, lr=lr, kind=kind,
                                     mask=mask)
        return fast, final_loss(fast, xe, ye)

    def adam_one(xe: Tensor, ye: Tensor, order: Tensor | None):
        fast, moments = dict(params), adam["moments"]
        for s in range(steps):
            fast, moments = adam_step(model, fast, moments, *batch(xe, ye, order, s), count=adam["count"] + s + 1,
                                      lr=lr, betas=adam["betas"], eps=adam["eps"], buffers=buffers, kind=kind,
                                      mask=mask)
        return fast, final_loss(fast, xe, ye), moments

    total = x.shape[0]
    chunk_size = chunk_size or total
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    moment_sums = None if adam is None else tuple({n: torch.zeros_like(p) for n, p in params.items()}
                                                  for _ in range(2))
    loss = torch.zeros((), device=x.device)
    for start in range(0, total, chunk_size):
        part = slice(start, start + chunk_size)
        order, order_dim = (None, None) if batches is None else (batches[part], 0)
        out = vmap(sgd_one if adam is None else adam_one, in_dims=(0, 0, order_dim))(x[part], y[part], order)
        for n in sums:
            sums[n] += out[0][n].sum(0)
        loss += out[1].sum()
        if moment_sums is not None:
            for mine, theirs in zip(moment_sums, out[2]):
                for n in mine:
                    mine[n] += theirs[n].sum(0)
    moments = None if moment_sums is None else tuple({n: t / total for n, t in m.items()} for m in moment_sums)
    return {n: t / total for n, t in sums.items()}, loss / total, moments


class Reptile(EpisodicStrategy):
    """Reptile: move the initialisation towards the parameters adapted to sampled episodes."""

    name = "reptile"
    Config = ReptileConfig

    def setup(self, model: nn.Module, spec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        # Adam's moments and step count, carried over from episode to episode and task to task
        self.moments: Moments = tuple({n: torch.zeros_like(p) for n, p in self.model.named_parameters()}
                                      for _ in range(2))
        self.adam_count = 0

    def adam_options(self) -> dict[str, Any] | None:
        c = self.config
        if c.inner_optimizer != "adam":
            return None
        return {"moments": self.moments, "count": self.adam_count, "betas": (c.adam_beta1, c.adam_beta2),
                "eps": c.adam_eps}

    def epsilon(self, iteration: int) -> float:
        """The outer step size at ``iteration`` of the task (annealed when ``epsilon_final`` is set)."""
        c = self.config
        if c.epsilon_final is None:
            return c.epsilon
        done = iteration / c.meta_iterations
        return done * c.epsilon_final + (1 - done) * c.epsilon

    @torch.no_grad()
    def learn(self, task: Task) -> dict[str, Any]:
        c = self.config
        self.model.train()
        buffers = dict(self.model.named_buffers())
        loop = self.task_loop(total=torch.zeros((), device=self.device))
        total = loop.carry["total"]
        for iteration in loop.steps(c.meta_iterations):
            eps = self.episodes(task)
            x = torch.cat([eps.support_x, eps.query_x], dim=1)
            y = torch.cat([eps.support_y, eps.query_y], dim=1)
            batches = None if c.inner_batch_size is None else inner_batches(
                x.shape[0], x.shape[1], c.inner_steps, c.inner_batch_size, self.generator).to(self.device)
            params = {n: p.detach() for n, p in self.model.named_parameters()}
            target, loss, moments = reptile_target(self.model, params, buffers, x, y, steps=c.inner_steps,
                                                   lr=c.inner_lr, kind=self.spec.kind, mask=eps.mask,
                                                   chunk_size=c.chunk_size, batches=batches,
                                                   adam=self.adam_options())
            epsilon = self.epsilon(iteration)
            for n, p in self.model.named_parameters():
                p.add_(epsilon * (target[n] - p))
            if moments is not None:
                self.moments, self.adam_count = moments, self.adam_count + c.inner_steps * x.shape[0]
            total += loss
            loop.loss = loss
        check_finite(total, self.label, task.name, c.meta_iterations)
        return {"inner_loss": float(total) / c.meta_iterations, "meta_iterations": c.meta_iterations}

    # -- evaluation and the online loop under Adam -------------------------------------------------
    def adam_steps(self, x: Tensor, y: Tensor, mask: Tensor | None,
                   batched: bool) -> Callable[..., tuple[dict[str, Tensor], Moments]]:
        """A function taking one full-batch Adam step (step size ``adapt_lr`` or ``inner_lr``) on
        ``(x, y)`` (``batched``: one per episode, ``vmap``-ed) from given parameters and moments."""
        c = self.config
        options = {"lr": self.evaluation_lr(), "betas": (c.adam_beta1, c.adam_beta2), "eps": c.adam_eps,
                   "buffers": dict(self.model.named_buffers()), "kind": self.spec.kind, "mask": mask}

        def step(params, moments, xe, ye, count):
            return adam_step(self.model, params, moments, xe, ye, count=count, **options)

        def run(params, moments, k, stepped):
            """Step ``k``; ``stepped``: parameters and moments already carry the episode dimension."""
            count = self.adam_count + k
            if not batched:
                return step(params, moments, x, y, count)
            dims = (0, 0, 0, 0) if stepped else (None, None, 0, 0)
            return vmap(lambda p, m, xe, ye: step(p, m, xe, ye, count), in_dims=dims)(params, moments, x, y)
        return run

    def adapt(self, support: Support, steps: int) -> Iterator[AdaptState]:
        """The evaluation's steps on each support set: SGD as MAML's, or Adam steps from the stored
        moments (left unchanged) under ``inner_optimizer = "adam"``."""
        if self.config.inner_optimizer != "adam":
            yield from super().adapt(support, steps)
            return
        params = {n: p.detach() for n, p in self.model.named_parameters()}
        state = AdaptState(params, batched=False)
        yield state
        run = self.adam_steps(support.x, support.y, support.mask, batched=True)
        moments = self.moments
        for k in range(1, steps + 1):
            new, moments = run(state.params, moments, k, state.batched)
            state = AdaptState(new, batched=True)
            yield state

    def observe(self, x: Tensor, y: Tensor, task: int | None = None) -> dict[str, Any]:
        """Online, as the other episodic strategies; under Adam the ``inner_steps`` steps are Adam
        steps from the stored moments (left unchanged)."""
        mode = self.config.online_adaptation
        if self.config.inner_optimizer != "adam" or mode == "frozen":
            return super().observe(x, y, task)
        start = self.online_fast if mode == "accumulate" and self.online_fast is not None else \
            {n: p.detach() for n, p in self.model.named_parameters()}
        run = self.adam_steps(x, y, None, batched=False)
        fast, moments = start, self.moments
        for k in range(1, self.config.inner_steps + 1):
            fast, moments = run(fast, moments, k, False)
        self.online_fast = {n: p.detach() for n, p in fast.items()}
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "adam_moments": [{n: t.clone() for n, t in m.items()} for m in self.moments],
                "adam_count": self.adam_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "adam_moments" in state:  # absent from checkpoints written before the Adam option
            self.moments = tuple({n: t.to(self.device) for n, t in m.items()} for m in state["adam_moments"])
            self.adam_count = int(state["adam_count"])
