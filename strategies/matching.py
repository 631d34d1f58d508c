"""``matching``: Matching Networks (Vinyals et al. 2016): attention over the support set.

A query item's class distribution is ``p(c | x) = sum_i a(x, x_i) [y_i = c]``, where the
attention ``a(x, x_i)`` is the softmax over the support items of ``scale`` times the cosine
similarity of the embeddings (``scale`` = 10 by default, our choice: the paper's formula has
no scale, which ``scale = 1`` gives). The query and support items share one embedding, trained
episodically on each task (``meta_iterations`` Adam steps on ``meta_batch_size`` episodes) with
the negative log-likelihood of the query labels; the embedding machinery (model sizing,
batch-statistics BatchNorm, the training loop) is that of :mod:`strategies.protomemory`.
Full-context embeddings (FCE) are not used.

Matching Networks keep no memory: state 0 of ``adapt`` has no support set and predicts all
logits 0; states 1..K attend over each episode's support set (all equal: nothing is taken step
by step). The outputs are ``log p(c | x)``, with classes absent from the support set placed one
below the lowest present log-probability (see :func:`~strategies.embedding.fill_absent`).

Example:
    >>> import scenarios, strategies, torch
    >>> stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    >>> s = strategies.build("matching", {"meta_iterations": 5, "embedding_dim": 16})
    >>> s.setup(strategies.build_model("mlp", {}, s.model_spec(stream.spec)), stream.spec, "cpu")
    >>> _ = s.learn(stream[0].training_view())
    >>> eps = stream[0].episodes("test", 4, 2, 3, torch.Generator().manual_seed(0))
    >>> s.predict(list(s.adapt(eps.support, 1))[-1], eps.query_x).shape
    torch.Size([4, 6, 10])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from scenarios.base import Episodes, Support
from strategies.embedding import EmbeddingConfig, EmbeddingStrategy, LastBatchSupport, embed, fill_absent


class MatchingConfig(EmbeddingConfig):
    scale: float = Field(10.0, gt=0, description="multiplies the cosine similarities before the attention softmax")


@dataclass(frozen=True)
class SupportState:
    """Support embeddings ``(E, S, D)`` and labels ``(E, S)``; ``None`` for no support set."""

    embeddings: Tensor | None
    labels: Tensor | None


def class_probabilities(query: Tensor, support: Tensor, labels: Tensor, num_classes: int, scale: float) -> Tensor:
    """``p(c | x)`` ``(E, Q, C)``: cosine attention of the query embeddings ``(E, Q, D)`` over the
    support embeddings ``(E, S, D)``, summed per support label ``(E, S)``.

    Example:
        >>> q, s = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        >>> class_probabilities(q, s, torch.tensor([[1, 0]]), 2, scale=1.0).squeeze().tolist()  # e^0 : e^1
        [0.2689414322376251, 0.7310585975646973]
    """
    similarity = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2)   # (E, Q, S)
    attention = torch.softmax(scale * similarity, dim=-1)
    return attention @ F.one_hot(labels, num_classes).to(attention.dtype)


class Matching(LastBatchSupport, EmbeddingStrategy):
    """Matching Networks: classify a query by cosine attention over the support set."""

    name = "matching"
    Config = MatchingConfig

    def episode_loss(self, episodes: Episodes) -> Tensor:
        probs = class_probabilities(embed(self.model, episodes.query_x), embed(self.model, episodes.support_x),
                                    episodes.support_y, self.num_classes, self.config.scale)
        # Only the targets' probabilities: they are positive, unlike those of classes absent
        # from the episode, whose log would make the gradient NaN.
        target = probs.gather(-1, episodes.query_y.unsqueeze(-1))
        return -target.log().mean()

    @torch.no_grad()
    def predict_online(self, x: Tensor) -> Tensor:
        """``log p(c | x)`` ``(B, C)`` by attention over the last observed batch (zeros before any)."""
        if self.online_support is None:
            return torch.zeros(len(x), self.num_classes, device=x.device)
        sx, sy = self.online_support
        state = SupportState(embed(self.model, sx.unsqueeze(0)), sy.unsqueeze(0))
        return self.predict(state, x.unsqueeze(0))[0]

    @torch.no_grad()
    def adapt(self, support: Support, steps: int) -> Iterator[SupportState]:
        """State 0: no support set; states 1..steps: each episode's embedded support set."""
        yield SupportState(None, None)
        if steps == 0:
            return
        state = SupportState(embed(self.model, support.x), support.y)
        for _ in range(steps):
            yield state

    @torch.no_grad()
    def predict(self, state: SupportState, x: Tensor) -> Tensor:
        """``log p(c | x)`` ``(E, Q, C)``; all zeros without a support set."""
        if state.embeddings is None:
            return torch.zeros(*x.shape[:2], self.num_classes, device=x.device)
        probs = class_probabilities(embed(self.model, x), state.embeddings, state.labels, self.num_classes,
                                    self.config.scale)
        present = F.one_hot(state.labels, self.num_classes).sum(1) > 0                      # (E, C)
        return fill_absent(probs.masked_fill(~present.unsqueeze(1), 1.0).log(), present)
