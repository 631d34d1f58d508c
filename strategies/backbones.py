"""Backbones as plain ``torch.nn.Module``s, registered by name for experiment files.

A user's own module works unchanged with every strategy: pass it to ``Strategy.setup``.

BatchNorm policy inside episodes: **batch statistics, always** (transductive, as in MAML's
reference code). A BatchNorm layer has no running statistics and normalises every forward
pass with the statistics of the batch it is given: one episode's support set during an inner
step, one episode's query set when scoring (``Strategy.predict`` runs one forward per episode
under ``vmap``, so episodes never share statistics), in meta-training and in evaluation alike,
in ``train()`` and ``eval()`` mode. A query item's output therefore depends on the rest of its
query set. :class:`Conv4` is built this way with :class:`BatchStatNorm`; the episodic
strategies (MAML, Meta-SGD, Reptile, prototype memory, Matching Networks) apply the policy to
a user's module with :func:`use_batch_statistics`; the minibatch strategies (finetune, joint)
leave a user's module as it is.

Why :class:`BatchStatNorm` rather than ``nn.BatchNorm2d(track_running_stats=False)``: with
torch 2.15, second-order gradients through ``F.batch_norm`` inside ``vmap`` of
``torch.func.grad`` are wrong (MAML's meta-gradient through one inner step of a toy
conv-BN net differs from the plain-autograd reference by up to 7e-3 in float64, while
``grad`` without ``vmap`` is exact); the same normalisation written with ``mean`` and ``var``
is exact. Running statistics could not be used anyway: they are updated in place, which
``vmap`` forbids.

The same trap, with affine parameters, in ``nn.LayerNorm`` and ``nn.InstanceNorm1d/2d/3d``:
second-order meta-gradients of MAML and Meta-SGD through them under ``vmap`` were off by up to
3e-3 (LayerNorm) and 5e-2 (InstanceNorm2d) in float64 against a per-task loop, while the forward
values and first-order gradients (first-order MAML, Reptile, evaluation steps) are exact, as
are ``nn.GroupNorm``, ``nn.RMSNorm`` and ``nn.LocalResponseNorm``. So the episodic strategies
that take steps on a user's module (MAML, Meta-SGD, Reptile) also rewrite those two layers with
plain tensor operations, :class:`SampleStatNorm` (see :func:`use_exact_norms`); the
meta-gradients then equal the per-task loop (tests/strategies/test_numerics.py). An
``nn.InstanceNorm`` with ``track_running_stats`` then uses each input's own statistics in
``eval()`` mode too, as BatchNorm does under the policy above (its in-place running-statistics
updates made it fail under ``vmap`` anyway).
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn
from torch.func import functional_call

from scenarios.base import StreamSpec
from scenarios.params import Params


class MLPParams(Params):
    hidden: list[int] = Field([100, 100], description="widths of the hidden layers")
    activation: Literal["relu", "tanh"] = Field("relu", description="hidden-layer non-linearity")
    init: Literal["pytorch", "kaiming_normal", "xavier_uniform"] = Field(
        "pytorch", description="initial weights: PyTorch's nn.Linear default; Kaiming-normal weights (fan in) "
                               "with zero biases (La-MAML's code, avalanche-lib's LaMAML); or Xavier-uniform "
                               "weights with zero biases (GEM's and MER's code)")

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, hidden: list[int]) -> list[int]:
        if any(h <= 0 for h in hidden):
            raise ValueError(f"every width must be > 0, got {hidden}")
        return hidden


class MLP(nn.Sequential):
    """Flatten, then Linear-activation layers of widths ``hidden``, then a linear output.

    Example:
        >>> import torch
        >>> MLP((1, 8, 8), 10, hidden=[32])(torch.zeros(5, 1, 8, 8)).shape
        torch.Size([5, 10])
    """

    Params = MLPParams

    def __init__(self, input_shape: tuple[int, ...], output_size: int, hidden: list[int] = (100, 100),
                 activation: str = "relu", init: str = "pytorch"):
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        layers.append(nn.Linear(width, output_size))
        super().__init__(*layers)
        weight_init = {"pytorch": None, "kaiming_normal": nn.init.kaiming_normal_,
                       "xavier_uniform": nn.init.xavier_uniform_}
        if init not in weight_init:
            raise ValueError(f"unknown init {init!r}: use one of {', '.join(map(repr, weight_init))}")
        if weight_init[init] is not None:
            for layer in self:
                if isinstance(layer, nn.Linear):
                    weight_init[init](layer.weight)
                    nn.init.zeros_(layer.bias)

    @classmethod
    def from_params(cls, params: MLPParams, spec: StreamSpec) -> "MLP":
        return cls(spec.input_shape, spec.output_size, params.hidden, params.activation, params.init)

    @classmethod
    def input_problem(cls, params: MLPParams, input_shape: tuple[int, ...]) -> str | None:
        """Why ``mlp`` cannot take inputs of ``input_shape``, or ``None``: it flattens any shape."""
        return None


class Conv4Params(Params):
    filters: int = Field(64, gt=0, description="channels of every convolution")
    blocks: int = Field(4, gt=0, description="conv-BN-maxpool-ReLU blocks; each halves height and width")


class Conv4(nn.Sequential):
    """The standard few-shot conv net: ``blocks`` x (conv3x3-BN-maxpool2-ReLU), then a linear output.

    With the defaults (4 blocks of 64 filters) a 28x28 image ends as 64 features of 1x1, as in
    MAML, Prototypical and Matching Networks. Any input of shape (C, H, W) with H, W >= 2**blocks
    works: the linear layer's width is the flattened size of the last block. BatchNorm always
    uses batch statistics (see the module docstring).

    The ReLU comes after the pooling, where the papers put it before: the same function with the
    same gradients (ReLU is non-decreasing, so it commutes with the max and picks the same
    element), applied to a quarter of the values, which saves a pass over the largest
    activations in every forward and backward pass.

    Example:
        >>> import torch
        >>> Conv4((1, 28, 28), 5)(torch.zeros(3, 1, 28, 28)).shape
        torch.Size([3, 5])
        >>> Conv4((1, 8, 8), 10, blocks=3)[-1].in_features
        64
    """

    Params = Conv4Params

    def __init__(self, input_shape: tuple[int, ...], output_size: int, filters: int = 64, blocks: int = 4):
        problem = conv4_input_problem(tuple(input_shape), blocks)
        if problem is not None:
            raise ValueError(problem)
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for _ in range(blocks):
            layers += [nn.Conv2d(channels, filters, 3, padding=1), BatchStatNorm(filters), MaxPool(2), nn.ReLU()]
            channels, height, width = filters, height // 2, width // 2
        layers += [nn.Flatten(), nn.Linear(filters * height * width, output_size)]
        super().__init__(*layers)

    @classmethod
    def from_params(cls, params: Conv4Params, spec: StreamSpec) -> "Conv4":
        return cls(spec.input_shape, spec.output_size, params.filters, params.blocks)

    @classmethod
    def input_problem(cls, params: Conv4Params, input_shape: tuple[int, ...]) -> str | None:
        """Why ``conv4`` with ``params`` cannot take inputs of ``input_shape``, or ``None``."""
        return conv4_input_problem(tuple(input_shape), params.blocks)


def conv4_input_problem(input_shape: tuple[int, ...], blocks: int) -> str | None:
    """Why :class:`Conv4` with ``blocks`` blocks cannot take inputs of ``input_shape``, or ``None``.

    It needs images (channels, height, width); each block's 2x2 max-pooling halves height and
    width (rounding down), so ``blocks`` blocks need both to be at least ``2**blocks``.

    Example:
        >>> conv4_input_problem((1, 28, 28), 4) is None
        True
        >>> print(conv4_input_problem((1, 8, 8), 4))
        conv4 with 4 blocks needs height and width >= 16 (each block's 2x2 max-pooling halves them), but the inputs are 8x8; use blocks = 3 or fewer
    """
    if len(input_shape) != 3:
        return (f"conv4 needs images of shape (channels, height, width), but the inputs have shape "
                f"{input_shape}; use mlp")
    fits = min(input_shape[1:]).bit_length() - 1  # the most blocks whose poolings leave at least 1x1
    if blocks > fits:
        # Compared by bit length: 2**blocks of an absurd blocks would take forever to compute.
        side = 2**blocks if blocks <= 64 else f"2**{blocks}"
        advice = f"use blocks = {fits} or fewer" if fits > 0 else "use mlp"
        return (f"conv4 with {blocks} blocks needs height and width >= {side} (each block's 2x2 "
                f"max-pooling halves them), but the inputs are {input_shape[1]}x{input_shape[2]}; {advice}")
    return None


class MaxPool(nn.MaxPool2d):
    """``nn.MaxPool2d`` that pools a channels-last copy of its input on the CPU when no gradient
    is recorded (evaluation, prediction).

    Torch's CPU max-pooling kernel is about ten times slower on the default (NCHW) layout than
    on channels-last, and the copy costs less than the difference. The result is the same
    maximum (in channels-last layout, which the next convolution accepts). With gradients the
    default layout is kept: there the backward pass through the copy costs more than it saves.
    The layout is chosen by copying rather than with ``memory_format``, which ``vmap`` does
    not support.

    Example:
        >>> x = torch.randn(2, 3, 6, 6)
        >>> with torch.no_grad():
        ...     torch.equal(MaxPool(2)(x), nn.MaxPool2d(2)(x))
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.device.type != "cpu":
            return super().forward(x)
        return super().forward(x.movedim(-3, -1).contiguous().movedim(-1, -3))


class BatchStatNorm(nn.Module):
    """Batch normalisation with the statistics of the batch it is given, always.

    Normalises over every dimension but the channel dimension 1 (so it stands in for
    ``BatchNorm1d``, ``2d`` and ``3d``) with the biased variance, then applies the per-channel
    ``weight`` and ``bias`` when ``affine``. Forward values equal ``F.batch_norm(training=True)``;
    it is written with plain tensor operations so that its higher-order gradients stay exact
    under ``vmap`` (see the module docstring). No buffers.

    Example:
        >>> x = torch.randn(8, 3, 5, 5)
        >>> torch.allclose(BatchStatNorm(3)(x), nn.BatchNorm2d(3, track_running_stats=False)(x), atol=1e-5)
        True
    """

    def __init__(self, channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.register_parameter("weight", nn.Parameter(torch.ones(channels)) if affine else None)
        self.register_parameter("bias", nn.Parameter(torch.zeros(channels)) if affine else None)

    @classmethod
    def replacing(cls, layer: nn.modules.batchnorm._BatchNorm) -> "BatchStatNorm":
        """A layer with ``layer``'s own ``weight`` and ``bias`` parameters (shared) and ``eps``."""
        new = cls(layer.num_features, layer.eps, affine=False)
        new.weight, new.bias = layer.weight, layer.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The variance as the mean square of the centred input (two passes, numerically sound)
        # rather than ``x.var``, whose CPU kernel over these dimensions is an order of
        # magnitude slower; the scale is folded per channel so that the full-size tensor is
        # touched by one multiply and one add (fewer full-size ops in the second-order graph).
        dims = [0, *range(2, x.dim())]
        centred = x - x.mean(dims, keepdim=True)
        scale = torch.rsqrt(centred.square().mean(dims, keepdim=True) + self.eps)
        if self.weight is None:
            return centred * scale
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return centred * (scale * self.weight.view(shape)) + self.bias.view(shape)


class SampleStatNorm(nn.Module):
    """``nn.LayerNorm`` or ``nn.InstanceNorm*d`` written with plain tensor operations.

    Normalises each input over its last ``dims`` dimensions with the biased variance (as both
    layers do), then multiplies by ``weight`` and adds ``bias`` (either may be ``None``), each
    viewed as ``affine_shape`` so that it broadcasts against the input. Forward values equal
    the torch layer's; unlike it, its second-order gradients stay exact under ``vmap`` (see the
    module docstring). No buffers.

    Example:
        >>> x = torch.randn(4, 3, 5, 5)
        >>> layer = nn.InstanceNorm2d(3, affine=True)
        >>> torch.allclose(SampleStatNorm.replacing(layer)(x), layer(x), atol=1e-5)
        True
    """

    def __init__(self, dims: int, eps: float, weight: nn.Parameter | None, bias: nn.Parameter | None,
                 affine_shape: tuple[int, ...]):
        super().__init__()
        self.dims, self.eps, self.affine_shape = dims, eps, affine_shape
        self.register_parameter("weight", weight)
        self.register_parameter("bias", bias)

    @classmethod
    def replacing(cls, layer: nn.LayerNorm | nn.modules.instancenorm._InstanceNorm) -> "SampleStatNorm":
        """A layer computing what ``layer`` computes with ``layer``'s own parameters (shared) and
        ``eps``; an instance norm uses each input's statistics even when it tracks running ones."""
        if isinstance(layer, nn.LayerNorm):
            shape = tuple(layer.normalized_shape)
            return cls(len(shape), layer.eps, layer.weight, layer.bias, shape)
        spatial = next(d for d, kind in enumerate((nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d), 1)
                       if isinstance(layer, kind))
        return cls(spatial, layer.eps, layer.weight, layer.bias, (-1,) + (1,) * spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(-self.dims, 0))
        centred = x - x.mean(dims, keepdim=True)
        out = centred * torch.rsqrt(centred.square().mean(dims, keepdim=True) + self.eps)
        if self.weight is not None:
            out = out * self.weight.view(self.affine_shape)
        if self.bias is not None:
            out = out + self.bias.view(self.affine_shape)
        return out


def use_batch_statistics(model: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm*`` layer of ``model`` by a :class:`BatchStatNorm`.

    In place (the model is returned for convenience): each replacement keeps the layer's own
    ``weight`` and ``bias`` parameters and its ``eps``; running statistics are dropped. A model
    without BatchNorm layers is unchanged. This is the episode policy of the module docstring.

    Example:
        >>> m = use_batch_statistics(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)))
        >>> type(m[1]).__name__, dict(m.named_buffers())
        ('BatchStatNorm', {})
    """
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(module, child_name, BatchStatNorm.replacing(child))
    return model


def use_exact_norms(model: nn.Module) -> nn.Module:
    """Replace every ``nn.LayerNorm`` and ``nn.InstanceNorm*d`` of ``model`` by a :class:`SampleStatNorm`.

    In place (the model is returned for convenience): each replacement keeps the layer's own
    parameters (so ``state_dict`` keys stay the same, but for an instance norm's running
    statistics, which are dropped) and its ``eps``. Second-order gradients through the
    replacements are exact under ``vmap`` (see the module docstring). Other modules are left
    as they are.

    Example:
        >>> m = use_exact_norms(nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3)))
        >>> type(m[1]).__name__, sorted(dict(m.named_parameters()))
        ('SampleStatNorm', ['0.bias', '0.weight', '1.bias', '1.weight'])
    """
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, (nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)):
                setattr(module, child_name, SampleStatNorm.replacing(child))
    return model


_DIRECT_LAYERS = (nn.Flatten, nn.Linear, nn.ReLU, nn.Tanh, nn.Identity)


def functional_forward(model: nn.Module) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
    """A function ``f(params, x)`` with the value and gradients of ``functional_call(model, params, (x,))``.

    ``params`` maps the names of ``model.named_parameters()`` to tensors (fast weights). For a
    plain ``nn.Sequential`` of ``Flatten``, ``Linear``, ``ReLU``, ``Tanh`` and ``Identity`` layers
    without hooks (the ``mlp`` backbone) it is a direct chain of ``F.linear`` calls; any other
    model goes through ``functional_call`` with the model's buffers. Why: the strategies that
    step through examples one at a time (La-MAML, MER, OML) call the forward hundreds of times
    per batch on tiny inputs, and ``functional_call``'s swapping of every parameter into the
    module and back (about 0.1 ms a call) is then most of the cost. The model's structure is
    read once, here: build the function again after changing the model.

    Example:
        >>> mlp = MLP((4,), 3, hidden=[5])
        >>> x = torch.randn(2, 4)
        >>> torch.equal(functional_forward(mlp)(dict(mlp.named_parameters()), x), mlp(x))
        True
    """
    direct = (type(model) in (nn.Sequential, MLP)
              and all(type(m) in _DIRECT_LAYERS and not (m._forward_hooks or m._forward_pre_hooks)
                      for m in model)
              and not (model._forward_hooks or model._forward_pre_hooks))
    if not direct:
        buffers = dict(model.named_buffers())
        return lambda params, x: functional_call(model, (params, buffers), (x,))
    steps: list[tuple[str, object]] = []
    for name, layer in model.named_children():
        if isinstance(layer, nn.Linear):
            steps.append(("linear", (f"{name}.weight", f"{name}.bias" if layer.bias is not None else None)))
        elif isinstance(layer, nn.Flatten):
            steps.append(("flatten", (layer.start_dim, layer.end_dim)))
        elif isinstance(layer, nn.ReLU):
            steps.append(("relu", None))
        elif isinstance(layer, nn.Tanh):
            steps.append(("tanh", None))

    def forward(params: dict[str, Tensor], x: Tensor) -> Tensor:
        for kind, arg in steps:
            if kind == "linear":
                weight, bias = arg
                x = F.linear(x, params[weight], None if bias is None else params[bias])
            elif kind == "flatten":
                x = x.flatten(*arg)
            elif kind == "relu":
                x = F.relu(x)
            else:
                x = torch.tanh(x)
        return x

    return forward
