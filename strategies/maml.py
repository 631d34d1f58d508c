"""``maml``: Model-Agnostic Meta-Learning (Finn et al. 2017), with its first-order and ANIL variants.

On each task of the stream, MAML makes ``meta_iterations`` meta-updates. Each one draws
``meta_batch_size`` episodes from the task's training source (with the strategy's own
generator), adapts a copy of the parameters to every episode's support set with
``inner_steps`` gradient steps of size ``inner_lr``, and moves the initialisation with Adam
(``meta_lr``) along the gradient of the mean query loss of the adapted copies. Adam's rate
stays ``meta_lr`` unless ``meta_lr_schedule = "cosine"``, which lowers it along a half cosine
towards 0 over each task's meta-updates (:func:`~strategies.training.scheduled_lr`).

The inner loops of a meta-batch run together: for a model of the layers that
:mod:`strategies.batched` covers (``mlp``, ``conv4``), :func:`~strategies.episodic.meta_objective` expands the
parameters over the episodes and takes each inner step for all of them with one
``torch.autograd.grad(create_graph=True)``; for any other model it is one ``vmap`` over the
episodes of a function that takes its inner steps with ``torch.func.grad``
(:func:`~strategies.base.gradient_step`) and returns the episode's query loss. Either way the
inner gradients stay in the autograd graph, so the ordinary ``backward`` of the mean query
loss is the exact second-order meta-gradient; ``first_order`` (FOMAML) takes the inner gradients at
detached parameters instead, so they count as constants. ``chunk_size`` episodes are
differentiated at a time and their gradients summed (:func:`~strategies.episodic.meta_backward`): the same gradient
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

The machinery it shares with the other gradient-based meta-learners (:class:`EpisodicStrategy`,
:func:`~strategies.episodic.meta_objective`) is in :mod:`strategies.episodic`.

Example:
    >>> import scenarios, strategies, torch
    >>> stream = scenarios.build("sinusoid", {"num_tasks": 1, "train_functions": 50}, seed=0)
    >>> maml = strategies.build("maml", {"meta_iterations": 2, "inner_lr": 0.01})
    >>> maml.setup(strategies.build_model("mlp", {"hidden": [40, 40]}, stream.spec), stream.spec, "cpu")
    >>> sorted(maml.learn(stream[0].training_view()))
    ['meta_iterations', 'meta_loss']
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from pydantic import Field
from torch import Tensor, nn

from scenarios.base import Episodes, StreamSpec, Task
from strategies.base import check_finite
from strategies.episodic import EpisodicConfig, EpisodicStrategy, meta_backward, meta_objective
from strategies.training import LRSchedule, schedule_field, scheduled_lr, set_lr


class MAMLConfig(EpisodicConfig):
    meta_lr: float = Field(0.001, gt=0, description="Adam learning rate of the meta-update")
    meta_lr_schedule: LRSchedule = schedule_field("meta_lr")
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
        """:func:`~strategies.episodic.meta_objective` of the current model on ``episodes``, differentiable."""
        c = self.config
        return meta_objective(self.model, dict(self.model.named_parameters()), dict(self.model.named_buffers()),
                              episodes, steps=c.inner_steps, lr=self.inner_lr(), kind=self.spec.kind,
                              names=self.adapted, first_order=c.first_order)

    def learn(self, task: Task) -> dict[str, Any]:
        c = self.config
        self.model.train()
        loop = self.task_loop(total=torch.zeros((), device=self.device))
        total = loop.carry["total"]
        for step in loop.steps(c.meta_iterations):
            episodes = self.episodes(task)
            set_lr(self.optimizer, scheduled_lr(c.meta_lr, c.meta_lr_schedule, step, c.meta_iterations))
            self.optimizer.zero_grad(set_to_none=True)
            loop.loss = meta_backward(self.meta_loss, episodes, c.chunk_size)
            loop.report(meta_loss=loop.loss)  # for the run's logs: kept on the device, read at their interval
            total += loop.loss
            self.optimizer.step()
        # One check per task: a per-iteration check would synchronise the GPU every step.
        check_finite(total, self.label, task.name, c.meta_iterations)
        return {"meta_loss": float(total) / c.meta_iterations, "meta_iterations": c.meta_iterations}
