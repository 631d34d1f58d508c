"""``metasgd``: Meta-SGD (Li et al. 2017), MAML with a learned learning rate per parameter.

Every adapted parameter tensor gets a tensor of inner learning rates of its own shape,
initialised to ``inner_lr``; an inner step is ``theta - rates * gradient`` (elementwise), and
the meta-update trains the rates with the initialisation (same Adam optimiser, same
``meta_lr``). The rates are not constrained: a rate may turn negative, as in the paper.
Evaluation adapts with the learned rates for ``inner_steps`` steps, the horizon they were
meta-learned for, and later states repeat the last one: beyond that horizon the rates are no
step size (on the drifting sinusoid, rates learned for one step gave a query MSE of 1.6 after
one step, 2.6 after two and 1e3 after three). With ``adapt_lr`` set, evaluation takes plain
SGD steps of that size instead, for every step (an ablation). Everything else, including
``first_order``, ``anil`` and ``chunk_size``, is MAML's machinery from :mod:`strategies.maml`.

Example:
    >>> import scenarios, strategies
    >>> stream = scenarios.build("sinusoid", {"num_tasks": 1, "train_functions": 50}, seed=0)
    >>> s = strategies.build("metasgd", {"meta_iterations": 2, "inner_lr": 0.01})
    >>> s.setup(strategies.build_model("mlp", {"hidden": [40, 40]}, stream.spec), stream.spec, "cpu")
    >>> _ = s.learn(stream[0].training_view())
    >>> s.rates["1.weight"].shape == s.model[1].weight.shape  # model[0] is the Flatten
    True
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import torch
from pydantic import Field
from torch import Tensor, nn

from scenarios.base import StreamSpec, Support
from strategies.base import AdaptState
from strategies.maml import MAML, MAMLConfig


class MetaSGDConfig(MAMLConfig):
    inner_lr: float = Field(0.1, gt=0, description="initial value of every learned per-parameter inner learning rate")
    adapt_lr: float | None = Field(None, gt=0, description="a fixed evaluation-time learning rate replacing the "
                                                           "learned ones (default: the learned rates)")


class MetaSGD(MAML):
    """Meta-SGD: meta-learn the initialisation and a learning rate for every parameter."""

    name = "metasgd"
    Config = MetaSGDConfig

    def setup(self, model: nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        adapted = self.adapted if self.adapted is not None else [n for n, _ in self.model.named_parameters()]
        params = dict(self.model.named_parameters())
        self.rates: dict[str, Tensor] = {
            n: torch.full_like(params[n], self.config.inner_lr).requires_grad_() for n in adapted}
        self.optimizer.add_param_group({"params": list(self.rates.values())})

    def inner_lr(self) -> Mapping[str, Tensor]:
        return self.rates

    def adapt(self, support: Support, steps: int) -> Iterator[AdaptState]:
        """Learned-rate steps up to ``inner_steps``, then the last state repeated (plain SGD
        steps of ``adapt_lr`` throughout when it is set)."""
        if self.config.adapt_lr is not None:
            yield from super().adapt(support, steps)
            return
        learned = min(steps, self.config.inner_steps)
        for state in super().adapt(support, learned):
            yield state
        for _ in range(steps - learned):
            yield state

    def evaluation_lr(self) -> float | Mapping[str, Tensor]:
        if self.config.adapt_lr is not None:
            return self.config.adapt_lr
        return {n: r.detach() for n, r in self.rates.items()}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rates": {n: r.detach().clone() for n, r in self.rates.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():  # in place: the optimiser holds these very tensors
            for n, r in self.rates.items():
                r.copy_(state["rates"][n])
