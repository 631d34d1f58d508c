"""``snail``: SNAIL, a Simple Neural Attentive meta-Learner (Mishra et al. 2018).

SNAIL reads an episode as a sequence: each support item is the pair (embedding, one-hot
label), and the query item comes last with its label slot zero. Temporal convolution (TC)
blocks and causal soft-attention blocks, interleaved, turn the sequence into features; a
linear layer (the paper's 1x1 convolution) gives the query's logits. Nothing is fitted per
episode: reading the support set *is* the adaptation.

Blocks (the paper's Algorithms 1-3):

- dense block (dilation ``d``, ``D`` filters): a causal convolution of kernel 2 and dilation
  ``d`` (item ``t`` sees items ``t - d`` and ``t``, zero before the start), with 2D filters split
  into ``tanh(xf) * sigmoid(xg)``; its D outputs are concatenated to its input;
- TC block: dense blocks of dilation 2, 4, ..., 2**depth, ``depth = ceil(log2 T)`` for
  sequences of ``T`` items (``tc_depth`` overrides it);
- attention block (key size K, value size V): keys, queries and values are linear maps of the
  input, item ``t`` attends to the items ``0..t`` with ``softmax(q k^T / sqrt(K))`` (a causal
  mask), and the V read values are concatenated to the input.

The default architecture is the paper's for Omniglot (as two independent PyTorch
reproductions, eambutu/snail-pytorch and Michedev/snail, build it from the paper's appendix):
attention(64, 32), TC(128), attention(256, 128), TC(128), attention(512, 256), linear.
``key_sizes``, ``value_sizes`` and ``tc_filters`` change it (one more attention block than TC
blocks, alternating, attention first and last).

**All queries in one pass.** Every query item is the last element of its own sequence (the
support set followed by that query): it attends to the support items and to itself, never to
another query. Since the support items of those sequences are the same and causal blocks never
look ahead, the support part is computed once per episode (:meth:`SnailHead.condition`, in
``adapt``), keeping per block what a later item reads from it (the attention keys and values,
and the input at the dilation tap of each dense block); :meth:`SnailHead.queries` then runs
every query of every episode through the blocks at once (``predict``). A query's logits are
those of the plain causal network on the sequence (support, query) (a test checks both ways
against each other, and that a query's output is bit-for-bit unchanged when other queries or
later items change).

**Training** (:meth:`learn`, the loop of :class:`~strategies.embedding.EmbeddingStrategy`):
``meta_iterations`` Adam steps (``lr``) of the embedding network and the SNAIL head together,
each on ``meta_batch_size`` episodes of the task's training source (``shots`` and ``query`` per
class, default the stream's), with the cross-entropy of every query's logits. The support
items of a training episode are put in a random order (``shuffle_support``), as in the
reproduction's sequences (the library draws them class by class). Resumable mid-task (a
:class:`~strategies.base.TaskLoop`): all randomness comes from the strategy's generator.

**Labels.** The one-hot label slots and the head's outputs number ``slots`` (default: the
stream's ``ways`` under the few-shot protocol, else its number of classes). Under the few-shot
protocol the episode labels 0..N-1 are the slots. Under the class-, task- and
domain-incremental protocols the labels are global: an episode's classes are mapped to slots
(at evaluation, in increasing class order; in training, to random distinct slots, so that every
slot learns to be read and the head stays a few-shot learner instead of memorising which class
a slot stands for), and the slot logits are mapped back to the global classes. A class absent
from the support set cannot be predicted: its logit is one below the lowest present one
(:func:`~strategies.embedding.fill_absent`), as for the other embedding strategies. So SNAIL
runs on few-shot streams (``omniglot-fewshot``), lifelong few-shot streams
(``omniglot-alphabets``) and split streams alike; it keeps no memory across tasks beyond its
weights.

**Adaptation**: ``adapt(support, steps)`` conditions the head on each support set once and
yields that same state for every k = 0..steps (k = 0 included: there is no unadapted state,
unlike Matching Networks, whose state 0 has no support set). ``predict(state, x)`` returns
logits ``(E, Q, C)``, C the stream's classes (``ways`` under few-shot). The BatchNorm policy of
the embedding strategies holds (strategies/backbones.py): each support set and each query set
is normalised with its own statistics, so with ``conv4`` a query's embedding depends on its
query set through those statistics (the SNAIL head never mixes queries).

**Online**: ``observe`` keeps the last observed batch as the support set of the next
``predict_online`` calls (all logits 0 before the first), as ``matching`` does; it does not train.

Refused: regression streams (``kinds``: exit status 2 before a run starts), and
``evaluation.full_test``, whose k = 0 scores one support-free state on the whole test pool:
the checks before a run refuse it (``needs_support``, exit status 2).

Where we differ from the paper:

- the embedding is the library's ``conv4`` (conv-BN-maxpool-ReLU x 4, batch-statistics
  BatchNorm), ending with its linear layer (64 to ``embedding_dim``), which the independent
  reproduction's embedding (eambutu/snail-pytorch) does not have;
- a training episode holds ``query`` items per class, each the last item of its own sequence,
  scored together; the paper's sequences hold one query (N*K + 1 items), one per episode;
- the support and query sets are embedded as two batches per episode (the library's BatchNorm
  policy), where the reproduction embeds all sequences of a training step as one batch;
- the default depth of a TC block counts the sequences of a training episode (``T = N*K + 1``
  under few-shot, ``slots * K + 1`` otherwise, an upper bound); test episodes with more
  support items still see every item through attention.

Example:
    >>> import scenarios, strategies, torch
    >>> stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    >>> s = strategies.build("snail", {"meta_iterations": 2, "embedding_dim": 8, "key_sizes": [8, 8],
    ...                                "value_sizes": [4, 4], "tc_filters": [8]})
    >>> s.setup(strategies.build_model("mlp", {"hidden": [16]}, s.model_spec(stream.spec)), stream.spec, "cpu")
    >>> _ = s.learn(stream[0].training_view())
    >>> eps = stream[0].episodes("test", 4, 2, 3, torch.Generator().manual_seed(0))
    >>> states = list(s.adapt(eps.support, 2))
    >>> states[0] is states[2], s.predict(states[0], eps.query_x).shape
    (True, torch.Size([4, 6, 10]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from scenarios.base import Episodes, StreamSpec, Support, Task
from strategies.embedding import EmbeddingConfig, EmbeddingStrategy, LastBatchSupport, embed, fill_absent


class SNAILConfig(EmbeddingConfig):
    lr: float = Field(0.001, gt=0, description="Adam learning rate of the embedding network and the SNAIL blocks")
    key_sizes: list[int] = Field([64, 256, 512], description="key (and query) size of each attention block; "
                                                             "the paper's Omniglot network: 64, 256, 512")
    value_sizes: list[int] = Field([32, 128, 256], description="value size of each attention block (the width "
                                                               "it adds); the paper's: 32, 128, 256")
    tc_filters: list[int] = Field([128, 128], description="filters of each dense block of each TC block (one TC "
                                                          "block between two attention blocks); the paper's: 128, 128")
    tc_depth: int | None = Field(None, gt=0, description="dense blocks per TC block, of dilations 2, 4, ... "
                                                         "(default: ceil(log2 T), T = support items of a "
                                                         "training episode + 1, as in the paper)")
    slots: int | None = Field(None, gt=0, description="one-hot label slots and outputs of the head (default: the "
                                                      "stream's ways under few-shot, else its number of classes)")
    shuffle_support: bool = Field(True, description="present a training episode's support items in a random order "
                                                    "(false: in the order drawn, class by class)")

    @model_validator(mode="after")
    def _blocks_alternate(self) -> "SNAILConfig":
        if len(self.key_sizes) != len(self.value_sizes):
            raise ValueError(f"key_sizes and value_sizes give one size per attention block and must be as long: "
                             f"{len(self.key_sizes)} against {len(self.value_sizes)}")
        if len(self.key_sizes) != len(self.tc_filters) + 1:
            raise ValueError(f"attention and TC blocks alternate, attention first and last: {len(self.key_sizes)} "
                             f"attention block(s) need {len(self.key_sizes) - 1} TC block(s), tc_filters has "
                             f"{len(self.tc_filters)}")
        for name in ("key_sizes", "value_sizes", "tc_filters"):
            if any(v <= 0 for v in getattr(self, name)):
                raise ValueError(f"{name}: every size must be > 0, got {getattr(self, name)}")
        return self


# -- the network --------------------------------------------------------------------------------

class DenseBlock(nn.Module):
    """Causal convolution of kernel 2 and dilation ``dilation`` with a gated activation; its
    ``filters`` outputs are concatenated to the input (the paper's Algorithm 1)."""

    def __init__(self, channels: int, filters: int, dilation: int):
        super().__init__()
        self.dilation, self.filters = dilation, filters
        self.conv = nn.Conv1d(channels, 2 * filters, kernel_size=2, dilation=dilation)

    def gate(self, z: Tensor) -> Tensor:
        xf, xg = z.split(self.filters, dim=-1)
        return torch.tanh(xf) * torch.sigmoid(xg)

    def sequence(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Outputs ``(B, T, C + filters)`` of sequences ``x`` ``(B, T, C)``, and what an item
        appended after them reads: the tap weights applied to item ``T - dilation`` ``(B, 2 filters)``
        (zeros when the tap falls before the start)."""
        B, T, C = x.shape
        z = self.conv(F.pad(x.transpose(1, 2), (self.dilation, 0))).transpose(1, 2)
        past = x[:, T - self.dilation] if T >= self.dilation else x.new_zeros(B, C)
        return torch.cat([x, self.gate(z)], dim=-1), F.linear(past, self.conv.weight[:, :, 0])

    def appended(self, x: Tensor, tap: Tensor) -> Tensor:
        """Outputs for items ``x`` ``(B, Q, C)``, each appended alone after the sequences whose
        ``tap`` ``(B, 2 filters)`` :meth:`sequence` returned."""
        z = F.linear(x, self.conv.weight[:, :, 1], self.conv.bias) + tap.unsqueeze(1)
        return torch.cat([x, self.gate(z)], dim=-1)


class AttentionBlock(nn.Module):
    """Causal single-head soft attention; its ``value_size`` reads are concatenated to the input
    (the paper's Algorithm 3)."""

    def __init__(self, channels: int, key_size: int, value_size: int):
        super().__init__()
        self.query = nn.Linear(channels, key_size)
        self.key = nn.Linear(channels, key_size)
        self.value = nn.Linear(channels, value_size)
        self.scale = 1 / math.sqrt(key_size)

    def sequence(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Outputs ``(B, T, C + value_size)``: item ``t`` attends to items ``0..t``; and the keys
        and values ``(B, T, K)``, ``(B, T, V)`` that an item appended later reads."""
        T = x.shape[1]
        keys, values = self.key(x), self.value(x)
        logits = (self.query(x) @ keys.transpose(1, 2)) * self.scale                        # (B, T, T)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        read = logits.masked_fill(future, float("-inf")).softmax(-1) @ values
        return torch.cat([x, read], dim=-1), (keys, values)

    def appended(self, x: Tensor, memory: tuple[Tensor, Tensor]) -> Tensor:
        """Outputs for items ``x`` ``(B, Q, C)``, each appended alone after the sequences whose keys
        and values are ``memory``: each attends to the sequence and to itself, not to the others."""
        keys, values = memory
        q = self.query(x)
        to_sequence = (q @ keys.transpose(1, 2)) * self.scale                              # (B, Q, T)
        to_itself = (q * self.key(x)).sum(-1, keepdim=True) * self.scale                   # (B, Q, 1)
        weights = torch.cat([to_sequence, to_itself], dim=-1).softmax(-1)
        read = weights[..., :-1] @ values + weights[..., -1:] * self.value(x)
        return torch.cat([x, read], dim=-1)


class SnailHead(nn.Module):
    """The SNAIL blocks over (feature, one-hot label) sequences and the output layer.

    Example:
        >>> head = SnailHead(features=6, slots=3, key_sizes=[4, 4], value_sizes=[2, 2], tc_filters=[5], depth=2)
        >>> support, queries = torch.randn(2, 4, 9), torch.randn(2, 7, 9)
        >>> memory = head.condition(support)
        >>> head.queries(queries, memory).shape
        torch.Size([2, 7, 3])
    """

    def __init__(self, features: int, slots: int, key_sizes: list[int], value_sizes: list[int],
                 tc_filters: list[int], depth: int):
        super().__init__()
        blocks: list[nn.Module] = []
        width = features + slots
        for i, (key_size, value_size) in enumerate(zip(key_sizes, value_sizes)):
            blocks.append(AttentionBlock(width, key_size, value_size))
            width += value_size
            if i < len(tc_filters):
                for level in range(1, depth + 1):
                    blocks.append(DenseBlock(width, tc_filters[i], 2 ** level))
                    width += tc_filters[i]
        self.blocks = nn.ModuleList(blocks)
        self.output = nn.Linear(width, slots)

    def sequence(self, x: Tensor) -> tuple[Tensor, list[Any]]:
        """Logits ``(B, T, slots)`` at every item of the causal sequences ``x`` ``(B, T, width)``,
        and what each block keeps for an item appended after them."""
        memory = []
        for block in self.blocks:
            x, kept = block.sequence(x)
            memory.append(kept)
        return self.output(x), memory

    def condition(self, support: Tensor) -> list[Any]:
        """What queries read from the support sequences ``(B, S, width)``, block by block."""
        return self.sequence(support)[1]

    def queries(self, x: Tensor, memory: list[Any]) -> Tensor:
        """Logits ``(B, Q, slots)`` of items ``x`` ``(B, Q, width)``, each the last item of its own
        sequence after the support sequence of ``memory``."""
        for block, kept in zip(self.blocks, memory):
            x = block.appended(x, kept)
        return self.output(x)


# -- labels and slots ----------------------------------------------------------------------------

def assign_slots(labels: Tensor, num_classes: int, slots: int, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, Tensor]:
    """Per episode, the slot of each class ``(E, C)`` (meaningful where present) and which
    classes the support labels ``(E, S)`` hold ``(E, C)``.

    Without ``generator`` the present classes take slots 0, 1, ... in increasing class order;
    with it, distinct random slots (drawn from ``generator``).

    Example:
        >>> slot, present = assign_slots(torch.tensor([[3, 1, 3]]), 5, slots=2)
        >>> slot[0, [1, 3]].tolist(), present.tolist()
        ([0, 1], [[False, True, False, True, False]])
    """
    present = F.one_hot(labels, num_classes).sum(1) > 0                                     # (E, C)
    most = int(present.sum(-1).max())
    if most > slots:
        raise ValueError(f"snail has {slots} label slots, and a support set holds {most} classes; "
                         f"set the strategy's slots to at least {most}")
    rank = (present.cumsum(-1) - 1).clamp_min(0)
    if generator is None:
        return rank, present
    order = torch.rand(len(labels), slots, generator=generator).argsort(-1).to(labels.device)
    return order.gather(1, rank), present


@dataclass(frozen=True)
class ConditionedState:
    """SNAIL conditioned on a batch of support sets: per block what a query reads (``memory``),
    each class's slot ``(E, C)`` and which classes the support sets hold ``(E, C)``."""

    memory: list[Any]
    slot: Tensor
    present: Tensor

    @property
    def episodes(self) -> int:
        return self.slot.shape[0]


class SNAIL(LastBatchSupport, EmbeddingStrategy):
    """SNAIL: temporal convolutions and causal attention over the labelled support sequence."""

    name = "snail"
    Config = SNAILConfig
    needs_support = True

    def slots_for(self, spec: StreamSpec) -> int:
        if self.config.slots is not None:
            return self.config.slots
        return spec.ways if spec.protocol == "few-shot" else spec.output_size

    def incompatibility(self, spec: StreamSpec) -> str | None:
        why = super().incompatibility(spec)
        if why is None and spec.protocol == "few-shot" and self.slots_for(spec) < spec.ways:
            return (f"snail has {self.config.slots} label slots, and stream {spec.name!r} has {spec.ways}-way "
                    f"episodes; set slots to at least {spec.ways}")
        return why

    def setup(self, model: nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        c = self.config
        why = self.incompatibility(spec)
        if why is not None:
            raise ValueError(why)
        self.slots = self.slots_for(spec)
        shots = c.shots or spec.shots
        classes = spec.ways if spec.protocol == "few-shot" else self.slots
        depth = c.tc_depth or max(1, math.ceil(math.log2(classes * shots + 1)))
        with torch.no_grad():
            features = embed(self.model, torch.zeros(1, 2, *spec.input_shape, device=self.device)).shape[-1]
        # The head's initial weights depend on the seed alone, not on the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            self.head = SnailHead(features, self.slots, c.key_sizes, c.value_sizes, c.tc_filters, depth)
        self.head.to(self.device)
        self.optimizer = torch.optim.Adam([*self.model.parameters(), *self.head.parameters()], lr=c.lr)

    # -- conditioning and prediction -------------------------------------------------------------
    def condition(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> ConditionedState:
        """The head conditioned on support sets ``x`` ``(E, S, ...)`` with labels ``y`` ``(E, S)``
        (slots drawn from ``generator`` when given, else in class order); differentiable."""
        slot, present = assign_slots(y, self.num_classes, self.slots, generator)
        features = embed(self.model, x)
        labels = F.one_hot(slot.gather(1, y), self.slots).to(features.dtype)
        return ConditionedState(self.head.condition(torch.cat([features, labels], dim=-1)), slot, present)

    def slot_logits(self, state: ConditionedState, x: Tensor) -> Tensor:
        """Logits ``(E, Q, slots)`` of queries ``x`` ``(E, Q, ...)``; differentiable."""
        if x.shape[0] != state.episodes:
            raise ValueError(f"snail predicts {x.shape[0]} query set(s) with a state conditioned on {state.episodes} "
                             "support set(s); every state, k = 0 included, holds one per episode, so snail cannot "
                             "score evaluation.full_test's support-free k = 0 (use episodes: full_test = false)")
        features = embed(self.model, x)
        blank = features.new_zeros(*features.shape[:2], self.slots)
        return self.head.queries(torch.cat([features, blank], dim=-1), state.memory)

    @torch.no_grad()
    def adapt(self, support: Support, steps: int) -> Iterator[ConditionedState]:
        """The head conditioned on each support set, the same state for every k = 0..steps."""
        state = self.condition(support.x, support.y)
        for _ in range(steps + 1):
            yield state

    @torch.no_grad()
    def predict(self, state: ConditionedState, x: Tensor) -> Tensor:
        """Logits ``(E, Q, C)``: each query as the last item after its episode's support set;
        classes absent from the support set score one below the lowest present one."""
        logits = self.slot_logits(state, x)
        index = state.slot.unsqueeze(1).expand(-1, x.shape[1], -1)                         # (E, Q, C)
        return fill_absent(logits.gather(-1, index), state.present)

    # -- training --------------------------------------------------------------------------------
    def episode_loss(self, episodes: Episodes) -> Tensor:
        g = self.generator
        sx, sy = episodes.support_x, episodes.support_y
        if self.config.shuffle_support:
            order = torch.rand(sy.shape, generator=g).argsort(-1).to(sy.device)            # (E, S)
            sy = sy.gather(1, order)
            sx = sx.gather(1, order.view(*order.shape, *[1] * (sx.dim() - 2)).expand_as(sx))
        # Few-shot labels are the slots (already drawn at random per episode); global labels go
        # to random slots, so that the head reads labels instead of remembering classes.
        state = self.condition(sx, sy, generator=None if self.spec.protocol == "few-shot" else g)
        logits = self.slot_logits(state, episodes.query_x)                                   # (E, Q, slots)
        used = F.one_hot(state.slot.gather(1, sy), self.slots).sum(1) > 0                    # (E, slots)
        logits = logits.masked_fill(~used.unsqueeze(1), float("-inf"))
        targets = state.slot.gather(1, episodes.query_y)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def learn(self, task: Task) -> dict[str, Any]:
        if self.spec.protocol != "few-shot" and len(task.classes) > self.slots:
            raise ValueError(f"snail has {self.slots} label slots, and task {task.name!r} has {len(task.classes)} "
                             f"classes; set the strategy's slots to at least {len(task.classes)}")
        return super().learn(task)

    # -- online ------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_online(self, x: Tensor) -> Tensor:
        """Logits ``(B, C)`` of each item after the last observed batch (zeros before any)."""
        if self.online_support is None:
            return torch.zeros(len(x), self.num_classes, device=x.device)
        sx, sy = self.online_support
        return self.predict(self.condition(sx.unsqueeze(0), sy.unsqueeze(0)), x.unsqueeze(0))[0]

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "head": self.head.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.head.load_state_dict(state["head"])
