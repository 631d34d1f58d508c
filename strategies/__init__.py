"""Strategies (one file each, registered by name) and backbones.

Example:
    >>> import strategies
    >>> strategies.build("finetune", {"lr": 0.05}).config.lr
    0.05
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from scenarios.base import Registry, StreamSpec
from strategies.base import AdaptState, DivergenceError, Strategy, StrategyConfig, task_loss

STRATEGIES = Registry("strategy", {
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
})

MODELS = Registry("model", {
    "mlp": "strategies.backbones:MLP",
    "conv4": "strategies.backbones:Conv4",
})


def available() -> list[str]:
    """Names of every registered strategy."""
    return STRATEGIES.names()


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name`` (a ``KeyError`` listing the valid names otherwise)."""
    return STRATEGIES.get(name)


def build(name: str, params: Mapping[str, Any] | None = None, label: str | None = None) -> Strategy:
    """An unconfigured-to-model instance of strategy ``name`` with validated parameters."""
    cls = strategy_class(name)
    return cls(cls.Config(**dict(params or {})), label=label)


def build_model(name: str, params: Mapping[str, Any] | None, spec: StreamSpec) -> nn.Module:
    """The backbone ``name`` sized for ``spec`` (input shape, output size)."""
    cls = MODELS.get(name)
    return cls.from_params(cls.Params(**dict(params or {})), spec)


__all__ = ["AdaptState", "DivergenceError", "MODELS", "STRATEGIES", "Strategy", "StrategyConfig",
           "available", "build", "build_model", "strategy_class", "task_loss"]
