"""``lamaml``: Look-ahead MAML (Gupta, Yadav & Paull 2020), with its C-MAML and Sync-La-MAML variants.

On every incoming batch ``b`` (``batch_size`` items, boundaries not needed) La-MAML makes
``glances`` meta-updates. Each one (the paper's Algorithm 1):

1. draws ``replay_batch_size`` memories from a reservoir buffer (:class:`~strategies.replay.ReservoirBuffer`,
   ``memory_size`` slots) and forms the meta-batch ``b_m = Sample(R) ∪ b``;
2. pushes the batch's items into the reservoir (first glance only: each item enters once);
3. takes an inner SGD step per item of ``b``, one item at a time, with learned per-parameter
   learning rates ``alpha`` (same shapes as the weights):
   ``theta_{n+1} = theta_n - max(0, alpha) * grad l(theta_n, b[n])``;
4. takes the meta-loss ``L`` of the fast weights on ``b_m``, and updates
   asynchronously: first the rates, ``alpha <- alpha - alpha_lr * dL/dalpha``, then the
   weights with the *new* rates clipped at zero, ``theta_0 <- theta_0 - max(0, alpha) * dL/dtheta_0``.

Variants (as in the paper, section 5 and Table 1):

- ``sync`` (Sync-La-MAML): rates and weights are updated synchronously from the same
  meta-gradient, the weights by plain SGD with ``weight_lr`` (the authors' ``--sync_update``).
- ``fixed_lr`` (the paper's C-MAML, "continual MAML": *not* OSAKA's Continual-MAML, which is the
  ``continual_maml`` strategy): one fixed inner rate ``alpha_init``, nothing learned; the weights
  move by SGD with ``weight_lr``.

The meta-gradient is exact second order (the inner gradients stay in the graph) unless
``first_order``, where they count as constants: ``dL/dtheta_0`` is then ``dL/dtheta_k`` and
``dL/dalpha`` is still exact. The inner steps are sequential by nature (item n+1 starts from
the weights after item n), so the speed comes from elsewhere: an ``mlp`` runs as a direct chain
of ``F.linear`` calls (:func:`~strategies.backbones.functional_forward`) instead of
``functional_call``, the updates are ``torch._foreach`` operations, and evaluation-time
adaptation is vectorised over episodes (:meth:`Strategy.gradient_adapt`) with the learned
rates. (A ``vmap`` of the ``trajectory`` meta-loss over the stacked fast weights gives the same
value but a slower backward.)

Defaults are the authors' MNIST Rotations settings for La-MAML (``run_experiments.sh`` of
github.com/montrealrobotics/La-MAML): ``glances = 5``, ``batch_size = 10``, ``memory_size = 200``,
``replay_batch_size = 10``, ``alpha_init = 0.15``, ``alpha_lr = 0.3``, clipping at 2.0. Their
other MNIST settings: Sync-La-MAML rotations ``alpha_lr 0.1, weight_lr 0.3, alpha_init 0.15``,
permutations ``alpha_lr 0.1, weight_lr 0.1, alpha_init 0.15``; C-MAML rotations
``alpha_init 0.1, weight_lr 0.1``, permutations ``alpha_init 0.03, weight_lr 0.1``;
La-MAML permutations as rotations (see ``benchmarks/reproduce_lamaml.py``).

Where this differs from the paper's Algorithm 1:

- ``meta_loss = "trajectory"`` (default) averages the meta-loss over the fast weights after
  each inner step (``theta_1 .. theta_k``), as the authors' code and avalanche-lib do;
  Algorithm 1 writes the loss at ``theta_k`` only (``meta_loss = "final"``).
- The meta-gradients are clipped to total norm ``grad_clip_norm`` (weights and rates
  separately, torch's ``clip_grad_norm_`` formula) as the authors' code does; the paper does
  not mention it. ``grad_clip_norm = None`` switches it off.
- The inner step uses ``max(0, alpha)`` (the authors' code); Algorithm 1 writes ``alpha``. The
  two agree while every rate is positive.

Where this differs from the authors' code:

- Their MNIST runs are first order (``--second_order`` is not passed); the default here is the
  paper's exact second order (``first_order = true`` gives theirs).
- ``--use_old_task_memory`` reads as replay from the memory as it was at the start of the
  current task, but their code binds ``self.M = self.M_new`` (the same list, not a copy), so it
  replays from the live reservoir, as here; the streams here need no task boundaries for it.
- Their MLP starts from Kaiming-normal weights and zero biases: ``mlp`` with ``init =
  "kaiming_normal"`` (the default ``"pytorch"`` init is PyTorch's ``nn.Linear`` one).
- Their memory sample may repeat an item (``shuffle`` then index per draw); here it draws
  distinct items. Their inner-loop ``torch.clamp`` of the gradients discards its result (a
  no-op); none here either.
- The shuffles of a batch per glance, the reservoir and the replay draws come from the
  strategy's seeded generator, not from the global RNG.

Where avalanche-lib's ``LaMAML`` (``training.supervised.lamaml_v2``) differs (a test compares
one step): it splits the batch into ``n_inner_updates`` chunks (one item each when it equals
the batch size), clamps each inner gradient element to ``[-grad_clip_norm, grad_clip_norm]``,
uses ``alpha`` (not ``max(0, alpha)``) in the inner step, takes no glances (one meta-update per
minibatch, the batch unshuffled), adds to its reservoir only at the end of each experience and
replays only from the second experience on (so nothing on a hidden-boundary stream's first
"experience"), and re-initialises the model (Kaiming normal) when built.

Example:
    >>> import scenarios, strategies, torch
    >>> stream = scenarios.build("online", {"source": "split-digits", "source_params": {"num_tasks": 2}}, seed=0)
    >>> lamaml = strategies.build("lamaml", {"glances": 2})
    >>> lamaml.setup(strategies.build_model("mlp", {"hidden": [16]}, stream.spec), stream.spec, "cpu")
    >>> batch = stream.batch(0)
    >>> sorted(lamaml.observe(batch.x, batch.y))
    ['meta_loss']
"""

from __future__ import annotations

from typing import Any, Iterator, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from scenarios.base import StreamSpec, Support
from strategies.backbones import functional_forward
from strategies.base import AdaptState, Strategy, StrategyConfig, check_finite
from strategies.replay import ReservoirBuffer


class LaMAMLConfig(StrategyConfig):
    """Options of La-MAML (defaults: the authors' MNIST Rotations settings)."""

    adapt_lr: float | None = Field(None, gt=0, description="learning rate of the evaluation-time adaptation steps "
                                                           "(default: the learned rates max(0, alpha))")
    batch_size: int = Field(10, gt=0, description="examples per batch when a task stream is presented in batches")
    glances: int = Field(5, gt=0, description="meta-updates on each incoming batch (each with a fresh replay sample)")
    memory_size: int = Field(200, gt=0, description="slots of the reservoir replay memory")
    replay_batch_size: int = Field(10, gt=0, description="memories joined to the batch in each meta-loss")
    alpha_init: float = Field(0.15, gt=0, description="initial value of every learned inner learning rate "
                                                      "(the fixed inner rate under fixed_lr)")
    alpha_lr: float = Field(0.3, gt=0, description="SGD learning rate of the learned rates (the paper's eta)")
    weight_lr: float = Field(0.1, gt=0, description="SGD learning rate of the weights' meta-update under sync or "
                                                    "fixed_lr (else the learned rates move the weights)")
    sync: bool = Field(False, description="Sync-La-MAML: update weights (with weight_lr) and rates synchronously")
    fixed_lr: bool = Field(False, description="C-MAML (Gupta et al.): one fixed inner rate alpha_init, no learned "
                                              "rates; weights move with weight_lr")
    first_order: bool = Field(False, description="treat the inner gradients as constants (the authors' MNIST runs)")
    meta_loss: Literal["trajectory", "final"] = Field(
        "trajectory", description="meta-loss at every inner step's fast weights, averaged (the authors' code) or at "
                                  "the last only (Algorithm 1)")
    grad_clip_norm: float | None = Field(2.0, gt=0, description="clip the meta-gradients of weights and of rates "
                                                                "to this total norm (None: no clipping)")

    @model_validator(mode="after")
    def _one_variant(self) -> "LaMAMLConfig":
        if self.sync and self.fixed_lr:
            raise ValueError("sync and fixed_lr are exclusive: fixed_lr (C-MAML) learns no rates to synchronise")
        return self


def clip_total_norm(grads: list[Tensor], max_norm: float | None) -> list[Tensor]:
    """``grads`` scaled as ``torch.nn.utils.clip_grad_norm_`` scales them (same formula)."""
    if max_norm is None:
        return grads
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return [g * scale for g in grads]


class LaMAML(Strategy):
    """La-MAML: online meta-learning with replay and learned, asynchronously updated rates."""

    name = "lamaml"
    Config = LaMAMLConfig

    def setup(self, model: nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        c = self.config
        self.alpha = {n: torch.full_like(p, c.alpha_init).detach() for n, p in self.model.named_parameters()}
        memory_seed = int(torch.randint(2 ** 62, (1,), generator=self.generator))
        self.memory = ReservoirBuffer(c.memory_size, torch.Generator().manual_seed(memory_seed))
        self.forward = functional_forward(self.model)

    # -- the update --------------------------------------------------------------------------
    def observe(self, x: Tensor, y: Tensor, task: int | None = None) -> dict[str, Any]:
        """``glances`` meta-updates on the batch ``(x, y)``; returns the last meta-loss."""
        c = self.config
        x, y = x.to(self.device), y.to(self.device)
        meta = None
        for glance in range(c.glances):
            order = torch.randperm(len(x), generator=self.generator).to(self.device)
            bx, by = x[order], y[order]
            if len(self.memory):
                mx, my = self.memory.sample(c.replay_batch_size)
                meta_x, meta_y = torch.cat([mx, bx]), torch.cat([my, by])
            else:
                meta_x, meta_y = bx, by
            if glance == 0:
                self.memory.add(bx, by)
            meta = self.meta_step(bx, by, meta_x, meta_y)
            check_finite(meta, self.label, "online" if task is None else str(task), self.memory.seen)
        return {"meta_loss": float(meta)}

    def meta_step(self, x: Tensor, y: Tensor, meta_x: Tensor, meta_y: Tensor) -> Tensor:
        """One meta-update: inner steps over the items of ``(x, y)`` in order, meta-loss on
        ``(meta_x, meta_y)``, then the rates and weights updated. Returns the meta-loss, detached."""
        c = self.config
        learn_rates = not c.fixed_lr
        params = dict(self.model.named_parameters())
        names, weights = list(params), list(params.values())
        alpha = [self.alpha[n].requires_grad_(learn_rates) for n in names]
        rates = [F.relu(a) for a in alpha]
        forward = self.forward

        def loss_at(fast: list[Tensor], inputs: Tensor, targets: Tensor) -> Tensor:
            return self.loss(forward(dict(zip(names, fast)), inputs), targets)

        fast, meta_losses = weights, []
        for n in range(len(x)):
            inner = loss_at(fast, x[n:n + 1], y[n:n + 1])
            grads = torch.autograd.grad(inner, fast, create_graph=not c.first_order)
            fast = torch._foreach_sub(fast, torch._foreach_mul(grads, rates))
            if c.meta_loss == "trajectory" or n == len(x) - 1:
                meta_losses.append(loss_at(fast, meta_x, meta_y))
        # The trajectory meta-loss as separate forwards, not one vmap over the stacked fast
        # weights: the same value, and its backward is about a quarter cheaper on an MLP.
        meta = meta_losses[0] if len(meta_losses) == 1 else torch.stack(meta_losses).mean()

        if learn_rates:
            grads = torch.autograd.grad(meta, weights + alpha)
            weight_grads, rate_grads = list(grads[:len(weights)]), list(grads[len(weights):])
        else:
            weight_grads, rate_grads = list(torch.autograd.grad(meta, weights)), []
        weight_grads = clip_total_norm(weight_grads, c.grad_clip_norm)
        with torch.no_grad():
            if learn_rates:
                rate_grads = clip_total_norm(rate_grads, c.grad_clip_norm)
                alpha = [(a - c.alpha_lr * g).detach() for a, g in zip(alpha, rate_grads)]
            else:
                alpha = [a.detach() for a in alpha]
            self.alpha = dict(zip(names, alpha))
            if c.sync or c.fixed_lr:
                torch._foreach_sub_(weights, torch._foreach_mul(weight_grads, c.weight_lr))
            else:
                torch._foreach_sub_(weights, torch._foreach_mul(weight_grads, [F.relu(a) for a in alpha]))
        return meta.detach()

    # -- evaluation, checkpoints ----------------------------------------------------------------
    def adapt(self, support: Support, steps: int) -> Iterator[AdaptState]:
        """Gradient steps on each support set with the learned rates ``max(0, alpha)`` (or ``adapt_lr``)."""
        lr = self.config.adapt_lr
        if lr is None:
            lr = {n: F.relu(a) for n, a in self.alpha.items()}
        return self.gradient_adapt(support, steps, lr)

    def log_scalars(self) -> dict[str, Any]:
        """For the run's logs: the mean of the rates the inner steps use, ``max(0, alpha)``, over
        every weight (with ``fixed_lr``, the fixed rate), and the share of rates clipped at zero."""
        rates = torch.cat([F.relu(a).flatten() for a in self.alpha.values()])
        return {"lr_mean": rates.mean(), "lr_zero_fraction": (rates == 0).double().mean()}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "alpha": {n: a.clone() for n, a in self.alpha.items()},
                "memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.alpha = {n: a.to(self.device).clone() for n, a in state["alpha"].items()}
        self.memory.load_state_dict(state["memory"])
