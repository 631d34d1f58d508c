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

This module also holds the embedding machinery shared with Matching Networks
(:class:`EmbeddingConfig`, :class:`EmbeddingStrategy`, :func:`embed`, :func:`class_sums`,
:func:`fill_absent`).

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

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call, vmap

from scenarios.base import Episodes, StreamSpec, Support, Task
from strategies.backbones import use_batch_statistics
from strategies.base import Strategy, StrategyConfig, check_finite


EMBED_BATCH = 1024
"""Training examples embedded per forward pass when the memory is updated: bounds the
activation memory of a large task; under batch-statistics BatchNorm, each batch of this size
is normalised with its own statistics."""


class EmbeddingConfig(StrategyConfig):
    """Options of the strategies that train an embedding network on episodes."""

    adapt_lr: Literal[None] = Field(None, description="not used: these strategies adapt without gradient steps")
    embedding_dim: int = Field(64, gt=0, description="output size of a registered backbone: the embedding width")
    lr: float = Field(0.001, gt=0, description="Adam learning rate of the embedding network")
    meta_iterations: int = Field(100, gt=0, description="episodic training steps on each task")
    meta_batch_size: int = Field(4, gt=0, description="episodes per training step")
    shots: int | None = Field(None, gt=0, description="support items per class of a training episode "
                                                      "(default: the stream's)")
    query: int | None = Field(None, gt=0, description="query items per class of a training episode "
                                                      "(default: the stream's)")


class ProtoMemoryConfig(EmbeddingConfig):
    memory_size: int = Field(1000, gt=0, description="most classes the prototype memory keeps; when full, "
                                                     "the least recently updated are evicted")
    online_momentum: float = Field(1.0, gt=0, le=1, description="online loop on a few-shot stream: weight of an "
                                                               "observed batch's prototypes against the memory's "
                                                               "(1: they replace them)")


def embed(model: nn.Module, x: Tensor) -> Tensor:
    """Embeddings ``(E, N, D)`` of inputs ``(E, N, *input_shape)``, one forward per episode
    (so batch-statistics BatchNorm normalises each episode on its own); differentiable."""
    weights = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return vmap(lambda xe: functional_call(model, weights, (xe,)))(x)


def class_sums(embeddings: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per episode and class, the sum of the embeddings ``(E, C, D)`` and their count ``(E, C)``.

    Example:
        >>> sums, counts = class_sums(torch.tensor([[[1.0], [3.0], [5.0]]]), torch.tensor([[0, 0, 2]]), 3)
        >>> sums.flatten().tolist(), counts.flatten().tolist()
        ([4.0, 0.0, 5.0], [2.0, 0.0, 1.0])
    """
    onehot = F.one_hot(labels, num_classes).to(embeddings.dtype)           # (E, N, C)
    return onehot.transpose(1, 2) @ embeddings, onehot.sum(1)


def squared_distances(x: Tensor, prototypes: Tensor) -> Tensor:
    """Squared Euclidean distances ``(E, Q, C)`` from ``x`` ``(E, Q, D)`` to ``prototypes``
    ``(E, C, D)`` (or ``(C, D)``, shared by every episode)."""
    return (x.unsqueeze(-2) - prototypes.unsqueeze(-3)).pow(2).sum(-1)


def fill_absent(logits: Tensor, present: Tensor) -> Tensor:
    """``logits`` ``(E, Q, C)`` where the classes not ``present`` (``(E, C)`` or ``(C,)``) score
    one below the lowest present logit of their row, or 0 when no class is present.

    Example:
        >>> fill_absent(torch.tensor([[[-2.0, -5.0, 9.0]]]), torch.tensor([True, True, False])).tolist()
        [[[-2.0, -5.0, -6.0]]]
    """
    present = present.unsqueeze(-2).expand_as(logits)
    lowest = logits.masked_fill(~present, float("inf")).amin(-1, keepdim=True) - 1
    lowest = torch.where(present.any(-1, keepdim=True), lowest, torch.zeros_like(lowest))
    return torch.where(present, logits, lowest)


class EmbeddingStrategy(Strategy):
    """Shared machinery of the embedding strategies: model sizing, batch-statistics BatchNorm,
    episodic training with Adam. Subclasses implement :meth:`episode_loss` and may extend
    :meth:`after_task`."""

    Config = EmbeddingConfig
    kinds = frozenset({"classification"})  # classes are compared by embedding similarity

    def model_spec(self, spec: StreamSpec) -> StreamSpec:
        """The stream's spec with ``embedding_dim`` outputs: a registered backbone is the embedding."""
        return dataclasses.replace(spec, output_size=self.config.embedding_dim)

    def training_episodes(self, spec: StreamSpec) -> tuple[int, int, int]:
        """One training step's ``meta_batch_size`` episodes of ``shots`` and ``query`` (default: the stream's)."""
        c = self.config
        return c.meta_batch_size, c.shots or spec.shots, c.query or spec.query

    def setup(self, model: nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        if spec.kind != "classification":
            raise ValueError(f"{self.name} classifies by embedding similarity; stream {spec.name!r} is {spec.kind}")
        super().setup(model, spec, device, seed)
        use_batch_statistics(self.model)
        self.num_classes = spec.output_size
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)

    def episode_loss(self, episodes: Episodes) -> Tensor:
        """Mean training loss of the embedding on ``episodes`` (differentiable)."""
        raise NotImplementedError

    def after_task(self, task: Task) -> dict[str, Any]:
        """Called at the end of :meth:`learn`; returns extra logs."""
        return {}

    def learn(self, task: Task) -> dict[str, Any]:
        c = self.config
        self.model.train()
        loop = self.task_loop(total=torch.zeros((), device=self.device))
        total = loop.carry["total"]
        for _ in loop.steps(c.meta_iterations):
            eps = task.episodes("train", c.meta_batch_size, c.shots or self.spec.shots, c.query or self.spec.query,
                                self.generator).to(self.device)
            loss = self.episode_loss(eps)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.detach()
            loop.loss = loss.detach()
        check_finite(total, self.label, task.name, c.meta_iterations)
        return {"train_loss": float(total) / c.meta_iterations, "meta_iterations": c.meta_iterations,
                **self.after_task(task)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])


@dataclass(frozen=True)
class PrototypeState:
    """Class prototypes ``(C, D)``, or ``(E, C, D)`` when ``batched``, and which classes have
    one (``(C,)`` or ``(E, C)``)."""

    prototypes: Tensor
    present: Tensor
    batched: bool


class LastBatchSupport:
    """Online behaviour shared by the embedding strategies that read a support set (Matching
    Networks, SNAIL): ``observe`` keeps the last observed batch as the support set of the next
    ``predict_online`` calls, and the checkpoints carry it. List it before the strategy's base
    class (``class Matching(LastBatchSupport, EmbeddingStrategy)``); the strategy's
    ``predict_online`` reads :attr:`online_support` (``None`` before the first batch)."""

    online_support: tuple[Tensor, Tensor] | None = None

    def setup(self, model: nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        self.online_support = None

    @torch.no_grad()
    def observe(self, x: Tensor, y: Tensor, task: int | None = None) -> dict[str, Any]:
        """Online: the last observed batch becomes the support set of the next predictions."""
        self.online_support = (x.clone(), y.clone())
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "online_support": self.online_support}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        support = state.get("online_support")
        self.online_support = None if support is None else tuple(t.to(self.device) for t in support)


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
