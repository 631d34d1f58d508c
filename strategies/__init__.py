"""Strategies (one file each, registered by name) and backbones.

Besides the registered names, ``"package.module:Class"`` names a user's strategy class and
``"package.module:factory"`` a user's model factory (see :mod:`strategies.user`): every
lookup below accepts them, so a user's method runs wherever a built-in one does.

Example:
    >>> import strategies
    >>> strategies.build("finetune", {"lr": 0.05}).config.lr
    0.05
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from scenarios.base import StreamSpec
from scenarios.registry import Registry
from strategies.base import AdaptState, DivergenceError, Strategy, StrategyConfig, task_loss
from strategies.user import UserCodeError, is_target, user_model, user_strategy


class _TargetRegistry(Registry):
    """A :class:`Registry` that also resolves ``"package.module:name"`` user targets with
    ``resolve`` (raising :class:`~strategies.user.UserCodeError`); they are not listed in
    :meth:`names`."""

    def __init__(self, what: str, entries: dict[str, str], resolve):
        super().__init__(what, entries)
        self.resolve = resolve

    def get(self, name: str) -> Any:
        if is_target(name) and name not in self.entries:
            return self.resolve(name)
        return super().get(name)


STRATEGIES = _TargetRegistry("strategy", {
    "avalanche.AGEM": "strategies.avalanche:AGEM",
    "avalanche.EWC": "strategies.avalanche:EWC",
    "avalanche.ERACE": "strategies.avalanche:ERACE",
    "avalanche.GDumb": "strategies.avalanche:GDumb",
    "avalanche.GEM": "strategies.avalanche:GEM",
    "avalanche.LaMAML": "strategies.avalanche:LaMAML",
    "avalanche.LwF": "strategies.avalanche:LwF",
    "avalanche.MAS": "strategies.avalanche:MAS",
    "avalanche.MER": "strategies.avalanche:MER",
    "avalanche.Naive": "strategies.avalanche:Naive",
    "avalanche.Replay": "strategies.avalanche:Replay",
    "avalanche.SI": "strategies.avalanche:SI",
    "continual_maml": "strategies.continual_maml:ContinualMAML",
    "finetune": "strategies.finetune:Finetune",
    "joint": "strategies.joint:Joint",
    "lamaml": "strategies.lamaml:LaMAML",
    "leo": "strategies.leo:LEO",
    "maml": "strategies.maml:MAML",
    "matching": "strategies.matching:Matching",
    "mer": "strategies.mer:MER",
    "metasgd": "strategies.metasgd:MetaSGD",
    "oml": "strategies.oml:OML",
    "anml": "strategies.oml:ANML",
    "protomemory": "strategies.protomemory:ProtoMemory",
    "reptile": "strategies.reptile:Reptile",
    "snail": "strategies.snail:SNAIL",
}, user_strategy)

MODELS = _TargetRegistry("model", {
    "mlp": "strategies.backbones:MLP",
    "conv4": "strategies.backbones:Conv4",
}, user_model)


def available() -> list[str]:
    """Names of every registered strategy."""
    return STRATEGIES.names()


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name`` (a ``KeyError`` listing the valid names otherwise), or
    the user's class ``name = "package.module:Class"`` (a ``UserCodeError`` if it cannot serve)."""
    return STRATEGIES.get(name)


def build(name: str, params: Mapping[str, Any] | None = None, label: str | None = None) -> Strategy:
    """An unconfigured-to-model instance of strategy ``name`` with validated parameters."""
    cls = strategy_class(name)
    return cls(cls.Config(**dict(params or {})), label=label)


def build_model(name: str, params: Mapping[str, Any] | None, spec: StreamSpec) -> nn.Module:
    """The backbone ``name`` sized for ``spec`` (input shape, output size); ``name`` may be a
    user's ``"package.module:factory"``, called as ``factory(spec=spec, **params)``."""
    cls = MODELS.get(name)
    return cls.from_params(cls.Params(**dict(params or {})), spec)


__all__ = ["AdaptState", "DivergenceError", "MODELS", "STRATEGIES", "Strategy", "StrategyConfig", "UserCodeError",
           "available", "build", "build_model", "strategy_class", "task_loss"]
