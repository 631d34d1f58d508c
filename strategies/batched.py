"""Batched-parameter forward passes: many episodes' fast weights through one model at once.

MAML's inner loop runs every episode of a meta-batch from its own copy of the parameters.
``vmap`` of ``torch.func.grad`` does this for any model; for the layers the ``mlp`` and
``conv4`` backbones are made of, writing the batched computation by hand is about twice as
fast on the CPU: the parameters carry a leading episode dimension ``E``, a linear layer is one
batched matrix product (``torch.baddbmm``), a convolution one grouped convolution with
``groups = E``, a norm layer per-episode statistics, and the inner gradients of all episodes
come from one ordinary ``torch.autograd.grad`` call on the batched parameters (each episode's
loss depends only on its own slice, so the gradient of their sum is every episode's gradient).
Plain autograd keeps second-order gradients exact, also through the norm layers (see
``strategies/backbones.py`` on why ``vmap`` does not).

:func:`batched_forward` reads a model's structure once and returns the batched function, or
``None`` for a model it does not cover: the callers (:func:`strategies.episodic.meta_objective`)
then fall back to ``vmap``. Covered: an ``nn.Sequential`` (``MLP`` and ``Conv4`` included)
without hooks or buffers, of ``Linear``, ``Conv2d`` (zero padding), ``BatchStatNorm``,
``SampleStatNorm`` (the exact ``LayerNorm`` and ``InstanceNorm`` that the episodic strategies
install), ``MaxPool2d``, ``Flatten``, ``ReLU``, ``Tanh`` and ``Identity`` layers.

Example:
    >>> from strategies.backbones import MLP
    >>> mlp = MLP((3,), 2, hidden=[4])
    >>> forward = batched_forward(mlp)
    >>> params = {n: p.expand(5, *p.shape) for n, p in mlp.named_parameters()}  # 5 episodes
    >>> x = torch.randn(5, 7, 3)                                                 # 7 items each
    >>> torch.allclose(forward(params, x), mlp(x.flatten(0, 1)).view(5, 7, 2), atol=1e-6)
    True
"""

from __future__ import annotations

from typing import Callable, Collection, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from strategies.backbones import MLP, BatchStatNorm, Conv4, MaxPool, SampleStatNorm

BatchedForward = Callable[..., Tensor]  # f(params, x, channels_last=False)
# A layer's batched step: (params, x, episodes, merged) -> (x, merged); see batched_forward.
Step = Callable[[Mapping[str, Tensor], Tensor, int, bool], tuple[Tensor, bool]]

_CONTAINERS = (nn.Sequential, MLP, Conv4)  # exact types: a subclass may override forward


def batched_forward(model: nn.Module) -> BatchedForward | None:
    """``f(params, x, channels_last=False)``: the model's outputs ``(E, N, ...)`` for inputs ``x``
    of shape ``(E, N, ...)``.

    Episode ``e``'s items go through the model with parameters ``params[name][e]`` for every
    parameter given with a leading episode dimension (one more dimension than the model's own
    tensor), and with the shared ``params[name]`` for the others. The values equal those of
    ``functional_call(model, params_e, (x[e],))`` per episode (up to the summation order of the
    batched kernels), and so do the gradients of every order. Returns ``None`` when the model
    has a layer this module does not cover, a hook or a buffer (see the module docstring):
    the caller then uses ``vmap``. The structure is read once, here.

    Between convolutions the images stay in a merged layout, ``(N, E * C, H, W)``: episode
    ``e``'s channels are block ``e`` of the channels, which is what a grouped convolution takes
    and gives, and in which ``F.batch_norm`` normalises each episode with its own statistics
    (outside ``vmap`` its second-order gradients are exact) and max-pooling pools each
    channel; so no copy between the layers of a conv net. With ``channels_last`` that layout is
    stored channels-last: on the CPU about four times faster max-pooling and faster
    convolutions in a pass that is differentiated once (MAML's query pass), but slower in one
    differentiated twice (the batch-norm double backward then reduces over channels-last
    tensors), so the inner steps keep the default.
    """
    if type(model) not in _CONTAINERS or _hooked(model) or any(True for _ in model.buffers()):
        return None
    shapes = {n: p.dim() for n, p in model.named_parameters()}
    layers: list[Step] = []
    convolutions = set()
    for name, layer in model.named_children():
        step = None if _hooked(layer) else _layer_step(layer, name, shapes)
        if step is None:
            return None
        layers.append(step)
        if type(layer) is nn.Conv2d:
            convolutions.add(step)

    def forward(params: Mapping[str, Tensor], x: Tensor, channels_last: bool = False) -> Tensor:
        episodes, merged = x.shape[0], False
        for step in layers:
            if channels_last and not merged and step in convolutions and x.dim() == 5:
                x, merged = _merge(x).contiguous(memory_format=torch.channels_last), True
            x, merged = step(params, x, episodes, merged)
        return _unmerge(x, episodes) if merged else x

    return forward


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _is_batched(params: Mapping[str, Tensor], name: str, shapes: Mapping[str, int]) -> bool:
    return params[name].dim() == shapes[name] + 1


def _merge(x: Tensor) -> Tensor:
    """Images ``(E, N, C, H, W)`` as ``(N, E * C, H, W)``."""
    if x.dim() != 5:
        raise ValueError(f"a batched convolution takes images (E, N, C, H, W), got shape {tuple(x.shape)}")
    return x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])


def _unmerge(x: Tensor, episodes: int) -> Tensor:
    """``(N, E * C, H, W)`` back to ``(E, N, C, H, W)`` (a view)."""
    return x.view(x.shape[0], episodes, -1, *x.shape[2:]).transpose(0, 1)


def _per_episode(fn: Callable[[Mapping[str, Tensor], Tensor], Tensor]) -> Step:
    """A step that needs the ``(E, N, ...)`` layout."""
    def step(params, x, episodes, merged):
        return fn(params, _unmerge(x, episodes) if merged else x), False
    return step


def _layer_step(layer: nn.Module, name: str, shapes: Mapping[str, int]) -> Step | None:
    """The batched step of one layer, or ``None`` when it is not covered."""
    kind = type(layer)
    key = (lambda p: f"{name}.{p}" if getattr(layer, p, None) is not None else None)
    if kind in (nn.ReLU, nn.Tanh, nn.Identity):  # elementwise: any layout
        fn = {nn.ReLU: F.relu, nn.Tanh: torch.tanh, nn.Identity: lambda t: t}[kind]
        return lambda params, x, episodes, merged: (fn(x), merged)
    if kind is nn.Flatten:
        # The layer flattens each episode's (N, ...) batch; the episode dimension comes first.
        start, end = (d + 1 if d >= 0 else d for d in (layer.start_dim, layer.end_dim))
        return _per_episode(lambda params, x: x.flatten(start, end))
    if kind is nn.Linear:
        return _per_episode(_linear(key("weight"), key("bias"), shapes))
    if kind is nn.Conv2d:
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            return None
        return _conv_step(layer, key("weight"), key("bias"), shapes)
    if kind is BatchStatNorm:
        return _batch_norm_step(layer, key("weight"), key("bias"), shapes)
    if kind is SampleStatNorm:
        return _per_episode(_sample_norm(layer, key("weight"), key("bias"), shapes))
    if kind in (nn.MaxPool2d, MaxPool):
        if layer.return_indices:
            return None
        pool = dict(kernel_size=layer.kernel_size, stride=layer.stride, padding=layer.padding,
                    dilation=layer.dilation, ceil_mode=layer.ceil_mode)

        def max_pool(params, x, episodes, merged):
            if merged:
                return F.max_pool2d(x, **pool), True
            out = F.max_pool2d(x.flatten(0, 1), **pool)
            return out.view(x.shape[:2] + out.shape[1:]), False
        return max_pool
    return None


def _linear(weight: str, bias: str | None, shapes: Mapping[str, int]):
    def linear(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        w = params[weight]
        b = None if bias is None else params[bias]
        if not _is_batched(params, weight, shapes):
            if b is None or not _is_batched(params, bias, shapes):
                return F.linear(x, w, b)
            return F.linear(x, w) + b.view(b.shape[0], *(1,) * (x.dim() - 2), b.shape[1])
        flat = x.reshape(x.shape[0], -1, x.shape[-1])               # (E, N * ..., in)
        if b is None:
            out = torch.bmm(flat, w.transpose(1, 2))
        elif _is_batched(params, bias, shapes):
            out = torch.baddbmm(b.unsqueeze(1), flat, w.transpose(1, 2))
        else:
            out = torch.baddbmm(b, flat, w.transpose(1, 2))
        return out.view(*x.shape[:-1], out.shape[-1])
    return linear


def _per_channel(params: Mapping[str, Tensor], name: str | None, shapes: Mapping[str, int],
                 episodes: int) -> Tensor | None:
    """A per-channel parameter for the merged layout: ``(E * C,)``, shared ones repeated."""
    if name is None:
        return None
    p = params[name]
    return p.flatten() if _is_batched(params, name, shapes) else p.repeat(episodes)


def _conv_step(layer: nn.Conv2d, weight: str, bias: str | None, shapes: Mapping[str, int]) -> Step:
    conv = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
    groups = layer.groups

    def step(params, x, episodes, merged):
        w = params[weight]
        if not merged and not _is_batched(params, weight, shapes):
            # Shared weights (ANIL's body): one ordinary convolution of all the items.
            b = None if bias is None else params[bias]
            shared_bias = b is None or not _is_batched(params, bias, shapes)
            out = F.conv2d(x.flatten(0, 1), w, b if shared_bias else None, groups=groups, **conv)
            out = out.view(x.shape[:2] + out.shape[1:])
            return (out if shared_bias else out + b.view(episodes, 1, -1, 1, 1)), False
        # One grouped convolution: episode e's channels form group e (times the layer's groups).
        w = w.flatten(0, 1) if _is_batched(params, weight, shapes) else w.repeat(episodes, 1, 1, 1)
        return F.conv2d(x if merged else _merge(x), w, _per_channel(params, bias, shapes, episodes),
                        groups=episodes * groups, **conv), True
    return step


def _affine(params: Mapping[str, Tensor], name: str | None, shapes: Mapping[str, int],
            shape: tuple[int, ...], dims: int) -> Tensor | None:
    """The parameter ``name`` viewed to broadcast against ``(E, N, ...)`` inputs of ``dims``
    dimensions: ``shape`` is its per-item view, aligned to the last dimensions."""
    if name is None:
        return None
    p = params[name]
    lead = (1,) * (dims - 1 - len(shape))
    if _is_batched(params, name, shapes):
        return p.view(p.shape[0], *lead, *shape)
    return p.view(*lead, *shape)


def _batch_norm_step(layer: BatchStatNorm, weight: str | None, bias: str | None, shapes: Mapping[str, int]) -> Step:
    eps = layer.eps

    def step(params, x, episodes, merged):
        if merged:
            # Per channel of the merged layout is per episode and channel.
            return F.batch_norm(x, None, None, _per_channel(params, weight, shapes, episodes),
                                _per_channel(params, bias, shapes, episodes), training=True, eps=eps), True
        # BatchStatNorm's computation with each episode's own statistics: over its items and
        # every dimension after the channels.
        dims = [1, *range(3, x.dim())]
        centred = x - x.mean(dims, keepdim=True)
        scale = torch.rsqrt(centred.square().mean(dims, keepdim=True) + eps)
        affine = (-1,) + (1,) * (x.dim() - 3)
        w = _affine(params, weight, shapes, affine, x.dim())
        b = _affine(params, bias, shapes, affine, x.dim())
        if w is None:
            return centred * scale, False
        return centred * (scale * w) + b, False
    return step


def _sample_norm(layer: SampleStatNorm, weight: str | None, bias: str | None, shapes: Mapping[str, int]):
    dims, eps, shape = tuple(range(-layer.dims, 0)), layer.eps, tuple(layer.affine_shape)

    def norm(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        centred = x - x.mean(dims, keepdim=True)
        out = centred * torch.rsqrt(centred.square().mean(dims, keepdim=True) + eps)
        w = _affine(params, weight, shapes, shape, x.dim())
        b = _affine(params, bias, shapes, shape, x.dim())
        if w is not None:
            out = out * w
        if b is not None:
            out = out + b
        return out
    return norm


def summed_episode_losses(outputs: Tensor, targets: Tensor, kind: str, mask: Tensor | None = None) -> Tensor:
    """The sum over episodes of each episode's mean loss, for outputs ``(E, N, out)``: the sum
    of what :func:`strategies.base.task_loss` gives for every episode's ``(N, out)`` outputs.

    Computed as one summed loss divided by the items per episode (the episodes have equal
    sizes): fewer operations to differentiate twice than per-episode means.

    Example:
        >>> out, y = torch.randn(2, 3, 4), torch.tensor([[0, 1, 2], [3, 3, 3]])
        >>> from strategies.base import task_loss
        >>> per_episode = task_loss(out[0], y[0], "classification") + task_loss(out[1], y[1], "classification")
        >>> torch.allclose(summed_episode_losses(out, y, "classification"), per_episode)
        True
    """
    if kind == "regression":
        return F.mse_loss(outputs, targets, reduction="sum") / outputs[0].numel()
    if mask is not None:
        outputs = outputs.masked_fill(~mask, float("-inf"))
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1),
                           reduction="sum") / outputs.shape[1]


def batched_steps(forward: BatchedForward, params: Mapping[str, Tensor], x: Tensor, y: Tensor, *, steps: int,
                  lr: float | Mapping[str, Tensor], kind: str, mask: Tensor | None = None,
                  names: Collection[str] | None = None, first_order: bool = False) -> dict[str, Tensor]:
    """Every episode's parameters after ``steps`` full-batch gradient steps on its ``(x[e], y[e])``.

    ``forward`` is :func:`batched_forward`'s function for the model, ``params`` the shared
    starting parameters (the model's own shapes), ``x`` and ``y`` the episodes' support sets
    ``(E, N, ...)``. The parameters in ``names`` (all by default) come back batched,
    ``(E, *shape)``, the others as given. The steps are
    :func:`strategies.base.gradient_step`'s (``lr`` a number or a tensor per name;
    ``first_order`` takes the gradients at detached parameters), for all episodes at once: one
    ``torch.autograd.grad`` per step, differentiable with respect to ``params`` and ``lr``
    unless ``first_order``.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 1))
        >>> p = dict(model.named_parameters())
        >>> fast = batched_steps(batched_forward(model), p, torch.randn(3, 4, 2), torch.randn(3, 4, 1),
        ...                      steps=1, lr=0.1, kind="regression", names=["0.bias"])
        >>> fast["0.bias"].shape, fast["0.weight"] is p["0.weight"]
        (torch.Size([3, 1]), True)
    """
    adapted = list(params if names is None else names)
    # Views, not copies: the gradient flowing back to a shared tensor sums the episodes'.
    fast = {**params, **{n: params[n].expand(x.shape[0], *params[n].shape) for n in adapted}}
    rate = (lambda n: lr[n]) if isinstance(lr, Mapping) else (lambda n: lr)
    for _ in range(steps):
        at = {n: p.detach().requires_grad_(n in adapted) for n, p in fast.items()} if first_order else fast
        # Each episode's loss depends on its own slice only, so the gradient of the sum holds
        # every episode's gradient in its slice.
        loss = summed_episode_losses(forward(at, x), y, kind, mask)
        grads = torch.autograd.grad(loss, [at[n] for n in adapted], create_graph=not first_order)
        fast.update({n: _descend(fast[n], g, rate(n)) for n, g in zip(adapted, grads)})
    return fast


def _descend(p: Tensor, g: Tensor, lr: float | Tensor) -> Tensor:
    # One fused op for a number: one node less in the graph that is differentiated twice.
    return torch.add(p, g, alpha=-lr) if isinstance(lr, (int, float)) else p - lr * g
