"""CPU time of conv4's hot paths before and after the speed changes of strategies/backbones.py.

Before: the papers' block order conv3x3-BN-ReLU-maxpool, with BatchNorm on batch statistics
written as ``(x - mean) * rsqrt(var + eps)`` with ``x.var``, and ``nn.MaxPool2d``. After: the
library's ``Conv4`` (conv3x3-BN-maxpool-ReLU, the variance as the mean square of the centred
input, channels-last pooling when no gradient is recorded). Both share one set of weights;
the script first checks, in float64, that they give the same outputs and the same
second-order meta-gradient, then times (best of ``--repeats``, CPU time of this process):

- a second-order and a first-order MAML meta-gradient (``strategies.episodic.meta_objective`` and
  its backward) on a meta-batch of 32 five-way one-shot episodes of 28x28 images, one query
  image per class, one inner step of 0.4;
- a test forward pass without gradients, as ``Strategy.predict`` makes it: ``vmap`` over 25
  episodes of 25 query images.

``--keep-freed-memory`` first applies the allocator setting of reproduce_omniglot.py (glibc
keeps freed memory instead of unmapping it); run the script with and without it.

    python benchmarks/conv4_speed.py [--repeats 5] [--threads 1] [--keep-freed-memory]
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial

import torch
from reproduce_omniglot import keep_freed_memory
from torch import nn
from torch.func import functional_call, vmap

from scenarios.base import Episodes
from strategies.backbones import Conv4
from strategies.episodic import meta_objective


class VarianceBatchNorm(nn.Module):
    """The batch-statistics BatchNorm as it was before: ``x.var`` and four full-size operations."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter, eps: float):
        super().__init__()
        self.weight, self.bias, self.eps = weight, bias, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]
        out = (x - x.mean(dims, keepdim=True)) * torch.rsqrt(x.var(dims, correction=0, keepdim=True) + self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return out * self.weight.view(shape) + self.bias.view(shape)


def before(model: Conv4) -> nn.Sequential:
    """``model``'s weights in the previous formulation (see the module docstring)."""
    modules = list(model)
    layers: list[nn.Module] = []
    for conv, norm in zip(modules[0:-2:4], modules[1:-2:4]):
        layers += [conv, VarianceBatchNorm(norm.weight, norm.bias, norm.eps), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, modules[-2], modules[-1])


def episodes(n: int, ways: int, query: int, dtype: torch.dtype, seed: int = 0) -> Episodes:
    """Binary 28x28 images (like Omniglot's strokes on a flat background), labels 0..ways-1."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, ways * (1 + query), 1, 28, 28, generator=g) > 0.8).to(dtype)
    y = torch.arange(ways).repeat(n, 1 + query)
    return Episodes(x[:, :ways], y[:, :ways], x[:, ways:], y[:, ways:])


def meta_gradient(model: nn.Module, eps: Episodes, first_order: bool) -> list[torch.Tensor]:
    loss = meta_objective(model, dict(model.named_parameters()), {}, eps, steps=1, lr=0.4, kind="classification",
                          first_order=first_order)
    return list(torch.autograd.grad(loss, list(model.parameters())))


@torch.no_grad()
def test_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    params = {n: p.detach() for n, p in model.named_parameters()}
    return vmap(lambda xe: functional_call(model, params, (xe,)))(x)


def check_equal() -> float:
    """Largest difference of outputs and meta-gradients in float64 (on a small case)."""
    torch.manual_seed(0)
    new = Conv4((1, 28, 28), 5).double()
    old = before(new)
    eps = episodes(4, 5, 1, torch.float64)
    diffs = [(a - b).abs().max().item() for a, b in zip(meta_gradient(new, eps, False), meta_gradient(old, eps, False))]
    diffs.append((test_forward(new, eps.query_x) - test_forward(old, eps.query_x)).abs().max().item())
    return max(diffs)


def best_cpu(fn, repeats: int) -> float:
    fn()  # warm-up: allocator and oneDNN primitive caches
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--keep-freed-memory", action="store_true", help="apply reproduce_omniglot.py's allocator setting")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory() if args.keep_freed_memory else False
    diff = check_equal()
    assert diff < 1e-9, diff
    print(f"torch {torch.__version__}, {args.threads} thread(s), malloc keeps freed memory: {kept}, "
          f"load average {os.getloadavg()[0]:.2f}; float64 check: largest difference {diff:.1e}")
    torch.manual_seed(0)
    new = Conv4((1, 28, 28), 5)
    old = before(new)
    train, test = episodes(32, 5, 1, torch.float32), episodes(25, 5, 5, torch.float32, seed=1)
    cases = {
        "MAML second order, 32 episodes": lambda m: meta_gradient(m, train, False),
        "MAML first order, 32 episodes": lambda m: meta_gradient(m, train, True),
        "test forward, 25 x 25 images": lambda m: test_forward(m, test.query_x),
    }
    print("| case | before (CPU s) | after (CPU s) | speed-up |\n| --- | ---: | ---: | ---: |")
    for name, fn in cases.items():
        t_old, t_new = best_cpu(partial(fn, old), args.repeats), best_cpu(partial(fn, new), args.repeats)
        print(f"| {name} | {t_old:.3f} | {t_new:.3f} | {t_old / t_new:.2f}x |", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
