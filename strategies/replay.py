"""A reservoir replay buffer for online strategies: plain tensors, seeded, checkpointed.

Reservoir sampling (Vitter's algorithm R, as MER, GEM's reservoir variants and La-MAML use
it) keeps a uniform sample of everything seen so far in a fixed number of slots: the first
``capacity`` examples fill the slots; the s-th example after that (s counted from 1 over the
whole stream) draws ``j = floor(u * s)`` with ``u`` uniform in [0, 1) and replaces slot ``j``
when ``j < capacity``. :meth:`ReservoirBuffer.add` does this for a whole batch at once with
the same draws, in the same order, as the one-at-a-time algorithm (when two examples of a
batch pick the same slot, the later one stays, as it would sequentially). Every random number
comes from the generator it is given, so a buffer is a function of its seed and the examples;
:meth:`state_dict` holds everything needed to continue bit-identically.

Example:
    >>> buffer = ReservoirBuffer(capacity=3, generator=torch.Generator().manual_seed(0))
    >>> buffer.add(torch.arange(10.0).unsqueeze(1), torch.arange(10))
    >>> len(buffer), buffer.seen
    (3, 10)
    >>> x, y = buffer.sample(2)
    >>> tuple(x.shape), tuple(y.shape)
    ((2, 1), (2,))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class ReservoirBuffer:
    """A uniform sample of at most ``capacity`` examples of a stream (reservoir sampling)."""

    def __init__(self, capacity: int, generator: torch.Generator):
        if capacity <= 0:
            raise ValueError(f"a reservoir needs capacity > 0, got {capacity}")
        self.capacity, self.generator = capacity, generator
        self.x: Tensor | None = None   # (capacity, *input_shape), allocated at the first add
        self.y: Tensor | None = None
        self.size = 0
        self.seen = 0

    def __len__(self) -> int:
        return self.size

    def add(self, x: Tensor, y: Tensor) -> None:
        """Offer the examples of a batch, in order, to the reservoir."""
        if self.x is None:
            self.x = torch.zeros(self.capacity, *x.shape[1:], dtype=x.dtype, device=x.device)
            self.y = torch.zeros(self.capacity, *y.shape[1:], dtype=y.dtype, device=y.device)
        fill = min(self.capacity - self.size, len(x))
        self.x[self.size:self.size + fill] = x[:fill]
        self.y[self.size:self.size + fill] = y[:fill]
        self.size += fill
        rest = len(x) - fill
        if rest:
            counts = torch.arange(self.seen + fill + 1, self.seen + len(x) + 1, dtype=torch.float64)
            slots = (torch.rand(rest, generator=self.generator, dtype=torch.float64) * counts).long()
            keep = slots < self.capacity
            slots, source = slots[keep], torch.arange(fill, len(x))[keep]
            # A later example taking an earlier one's slot overwrites it: keep each slot's last.
            last = torch.zeros(self.capacity, dtype=torch.long).scatter_reduce(
                0, slots, source, reduce="amax", include_self=False)
            chosen = torch.zeros(self.capacity, dtype=torch.bool)
            chosen[slots] = True
            targets = chosen.nonzero().squeeze(1)
            picks = last[targets].to(x.device)
            targets = targets.to(x.device)
            self.x[targets] = x[picks]
            self.y[targets] = y[picks]
        self.seen += len(x)

    def sample(self, n: int) -> tuple[Tensor, Tensor]:
        """``min(n, len(self))`` distinct stored examples, drawn uniformly from the generator."""
        if self.size == 0:
            raise ValueError("the reservoir is empty")
        idx = torch.randperm(self.size, generator=self.generator)[:n].to(self.x.device)
        return self.x[idx], self.y[idx]

    def state_dict(self) -> dict[str, Any]:
        stored = None if self.x is None else (self.x[:self.size].clone(), self.y[:self.size].clone())
        return {"capacity": self.capacity, "size": self.size, "seen": self.seen, "stored": stored,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"the saved reservoir has capacity {state['capacity']}, this one {self.capacity}")
        self.size, self.seen = int(state["size"]), int(state["seen"])
        self.generator.set_state(state["generator"])
        if state["stored"] is None:
            self.x = self.y = None
            return
        x, y = state["stored"]
        self.x = torch.zeros(self.capacity, *x.shape[1:], dtype=x.dtype, device=x.device)
        self.y = torch.zeros(self.capacity, *y.shape[1:], dtype=y.dtype, device=y.device)
        self.x[:self.size], self.y[:self.size] = x, y
