"""Backbones as plain ``torch.nn.Module``s, registered by name for experiment files.

A user's own module works unchanged with every strategy: pass it to ``Strategy.setup``.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import nn

from scenarios.base import Params, StreamSpec


class MLPParams(Params):
    hidden: list[int] = Field([100, 100], description="widths of the hidden layers")
    activation: Literal["relu", "tanh"] = Field("relu", description="hidden-layer non-linearity")


class MLP(nn.Sequential):
    """Flatten, then Linear-activation layers of widths ``hidden``, then a linear output.

    Example:
        >>> import torch
        >>> MLP((1, 8, 8), 10, hidden=[32])(torch.zeros(5, 1, 8, 8)).shape
        torch.Size([5, 10])
    """

    Params = MLPParams

    def __init__(self, input_shape: tuple[int, ...], output_size: int, hidden: list[int] = (100, 100),
                 activation: str = "relu"):
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        layers.append(nn.Linear(width, output_size))
        super().__init__(*layers)

    @classmethod
    def from_params(cls, params: MLPParams, spec: StreamSpec) -> "MLP":
        return cls(spec.input_shape, spec.output_size, params.hidden, params.activation)
