"""``protomemory``: prototypical embedding with a lifelong memory of class prototypes.

The model is an embedding network: a registered backbone is built with ``embedding_dim``
outputs (:meth:`EmbeddingStrategy.model_spec`); a user's module may output any width. On each
task, the embedding is trained episodically with the prototypical loss (Snell et al. 2017):
``meta_iterations`` Adam steps, each on ``meta_batch_size`` episodes drawn from the task's
training source, where a query item's logits are the negative squared Euclidean distances to
the episode's class prototypes (the means of the support embeddings of each class).

The memory holds, per global class, the running mean of the embeddings of every training
example of that class seen so far (at the end of each task, the task's whole training set is
embedded with the embedding of that moment, :data:`EMBED_BATCH` examples per forward pass,
and folded into the means weighted by counts). It lives across the whole stream and is saved
by ``state_dict``. It holds at most ``memory_size`` classes. When a task brings it over the
bound, the least recently updated classes are evicted (those last updated by the earliest
task; among equals, those with fewer examples, then the lower class index), so a task's own
classes are evicted last.

Evaluation: state 0 classifies by the memory alone, so old classes are recognised without any
adaptation. ``adapt`` embeds each episode's support set and merges its prototypes with the
memory: for the classes in the support set, the support's prototypes replace the memory's
(they come from the current embedding, while the memory's means may predate later training
and be stale); the memory supplies every other class. Every later state repeats this merged
state, since nothing is taken step by step. (Folding the support into the running means
instead would leave adaptation almost without effect: a few shots against hundreds of
remembered examples.) A class without any prototype cannot be predicted: its logit is one below
the lowest logit of the classes that have one (all logits are 0 when no class has one), which
keeps the loss finite and the class out of every argmax.

Few-shot protocol: labels are 0..N-1 per episode and mean different classes in different
episodes, so the memory is never updated; prediction uses the support prototypes alone (and
state 0 has none).

The embedding machinery it shares with Matching Networks, SNAIL and LEO is in
:mod:`strategies.embedding`.

Example:
    >>> import scenarios, strategies, torch
    >>> stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    >>> s = strategies.build("protomemory", {"meta_iterations": 5, "embedding_dim": 16})
    >>> s.setup(strategies.build_model("mlp", {}, s.model_spec(stream.spec)), stream.spec, "cpu")
    >>> logs = s.learn(stream[0].training_view())
    >>> logs["memory_classes"]
    2
    >>> eps = stream[0].episodes("test", 4, 2, 3, torch.Generator().manual_seed(0))
    >>> s.predict(next(iter(s.adapt(eps.support, 0))), eps.query_x).shape
    torch.Size([4, 6, 10])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from scenarios.base import Episodes, StreamSpec, Support, Task
from strategies.embedding import EmbeddingConfig, EmbeddingStrategy, class_sums, embed, fill_absent


EMBED_BATCH = 1024
"""Training examples embedded per forward pass when the memory is updated: bounds the
activation memory of a large task; under batch-statistics BatchNorm, each batch of this size
is normalised with its own statistics."""


class ProtoMemoryConfig(EmbeddingConfig):
    memory_size: int = Field(1000, gt=0, description="most classes the prototype memory keeps; when full, "
                                                     "the least recently updated are evicted")
    online_momentum: float = Field(1.0, gt=0, le=1, description="online loop on a few-shot stream: weight of an "
                                                               "observed batch's prototypes against the memory's "
                                                               "(1: they replace them)")


def squared_distances(x: Tensor, prototypes: Tensor) -> Tensor:
    """Squared Euclidean distances ``(E, Q, C)`` from ``x`` ``(E, Q, D)`` to ``prototypes``
    ``(E, C, D)`` (or ``(C, D)``, shared by every episode)."""
    return (x.unsqueeze(-2) - prototypes.unsqueeze(-3)).pow(2).sum(-1)


@dataclass(frozen=True)
class PrototypeState:
    """Class prototypes ``(C, D)``, or ``(E, C, D)`` when ``batched``, and which classes have
    one (``(C,)`` or ``(E, C)``)."""

    prototypes: Tensor
    present: Tensor
    batched: bool


class ProtoMemory(EmbeddingStrategy):
    """Prototypical embedding plus a lifelong memory of class prototypes (nearest prototype)."""

    name = "protomemory"
    Config = ProtoMemoryConfig

    def setup(self, model: nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        width = self.model_output_width()
        self.memory = {
            "means": torch.zeros(self.num_classes, width, device=self.device),
            "counts": torch.zeros(self.num_classes, dtype=torch.long, device=self.device),
            "updated": torch.zeros(self.num_classes, dtype=torch.long, device=self.device),  # task number
        }
        self.tasks_learned = 0

    def model_output_width(self) -> int:
        """The embedding width, from one forward pass of a dummy input."""
        with torch.no_grad():
            return embed(self.model, torch.zeros(1, 2, *self.spec.input_shape, device=self.device)).shape[-1]

    def episode_loss(self, episodes: Episodes) -> Tensor:
        support = embed(self.model, episodes.support_x)
        sums, counts = class_sums(support, episodes.support_y, self.num_classes)
        prototypes = sums / counts.clamp_min(1).unsqueeze(-1)
        # Classes missing from an episode (other tasks' global labels) are never a target.
        logits = -squared_distances(embed(self.model, episodes.query_x), prototypes)
        logits = logits.masked_fill(~(counts > 0).unsqueeze(1), float("-inf"))
        return F.cross_entropy(logits.flatten(0, 1), episodes.query_y.flatten())

    @torch.no_grad()
    def after_task(self, task: Task) -> dict[str, Any]:
        self.tasks_learned += 1
        if self.spec.protocol == "few-shot":
            return {"memory_classes": 0}
        x, y = task.train.examples()
        sums = torch.zeros_like(self.memory["means"])
        counts = torch.zeros(self.num_classes, device=self.device)
        for start in range(0, len(x), EMBED_BATCH):
            xb, yb = x[start:start + EMBED_BATCH].to(self.device), y[start:start + EMBED_BATCH].to(self.device)
            batch_sums, batch_counts = class_sums(embed(self.model, xb.unsqueeze(0)), yb.unsqueeze(0), self.num_classes)
            sums += batch_sums[0]
            counts += batch_counts[0]
        self.fold(sums, counts)
        return {"memory_classes": int((self.memory["counts"] > 0).sum())}

    def fold(self, sums: Tensor, counts: Tensor) -> None:
        """Fold per-class embedding sums ``(C, D)`` and counts ``(C,)`` into the running means,
        weighted by counts, then evict beyond the bound."""
        m = self.memory
        total = m["counts"] + counts.long()
        m["means"] = torch.where((total > 0).unsqueeze(-1),
                                 (m["means"] * m["counts"].unsqueeze(-1) + sums) / total.clamp_min(1).unsqueeze(-1),
                                 m["means"])
        m["counts"] = total
        m["updated"] = torch.where(counts > 0, self.tasks_learned, m["updated"])
        self.evict_beyond_bound()

    @torch.no_grad()
    def observe(self, x: Tensor, y: Tensor, task: int | None = None) -> dict[str, Any]:
        """Online: the batch's embeddings update the prototypes. Where labels keep their meaning
        (class-, task-, domain-incremental), they are folded into the running means as at the
        end of a task; on a few-shot stream, where a label means another class in the next
        task, a class's prototype moves to the batch's by ``online_momentum``."""
        sums, counts = class_sums(embed(self.model, x.unsqueeze(0)), y.unsqueeze(0), self.num_classes)
        sums, counts = sums[0], counts[0]
        if self.spec.protocol != "few-shot":
            self.fold(sums, counts)
            return {}
        m, w = self.memory, self.config.online_momentum
        seen = counts > 0
        batch = sums / counts.clamp_min(1).unsqueeze(-1)
        blended = torch.where((m["counts"] > 0).unsqueeze(-1), (1 - w) * m["means"] + w * batch, batch)
        m["means"] = torch.where(seen.unsqueeze(-1), blended, m["means"])
        m["counts"] = m["counts"] + counts.long()
        return {}

    @torch.no_grad()
    def predict_online(self, x: Tensor) -> Tensor:
        """Logits ``(B, C)`` against the memory's prototypes."""
        m = self.memory
        logits = -squared_distances(embed(self.model, x.unsqueeze(0)), m["means"])
        return fill_absent(logits, m["counts"] > 0)[0]

    def evict_beyond_bound(self) -> None:
        """Drop the least recently updated classes (then the fewer examples, then the lower
        index) until at most ``memory_size`` classes remain."""
        m = self.memory
        stored = m["counts"] > 0
        excess = int(stored.sum()) - self.config.memory_size
        if excess <= 0:
            return
        priority = m["updated"] * (int(m["counts"].max()) + 1) + m["counts"]
        priority = priority.masked_fill(~stored, torch.iinfo(priority.dtype).max)
        evicted = priority.argsort(stable=True)[:excess]
        m["counts"][evicted] = 0
        m["means"][evicted] = 0
        m["updated"][evicted] = 0

    @torch.no_grad()
    def adapt(self, support: Support, steps: int) -> Iterator[PrototypeState]:
        """State 0: the memory alone; states 1..steps: each support set's prototypes, with the
        memory's for the classes the support set lacks."""
        m = self.memory
        remembered = m["counts"] > 0
        yield PrototypeState(m["means"], remembered, batched=False)
        if steps == 0:
            return
        sums, counts = class_sums(embed(self.model, support.x), support.y, self.num_classes)
        in_support = counts > 0                                                             # (E, C)
        merged = torch.where(in_support.unsqueeze(-1), sums / counts.clamp_min(1).unsqueeze(-1), m["means"])
        state = PrototypeState(merged, in_support | remembered, batched=True)
        for _ in range(steps):
            yield state

    @torch.no_grad()
    def predict(self, state: PrototypeState, x: Tensor) -> Tensor:
        """Logits ``(E, Q, C)``: minus the squared distance to each class's prototype."""
        logits = -squared_distances(embed(self.model, x), state.prototypes)
        return fill_absent(logits, state.present)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "memory": {k: v.clone() for k, v in self.memory.items()},
                "tasks_learned": self.tasks_learned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.memory = {k: v.to(self.device).clone() for k, v in state["memory"].items()}
        self.tasks_learned = state["tasks_learned"]
