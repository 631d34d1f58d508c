"""``leo``: Latent Embedding Optimization (Rusu et al. 2019, "Meta-Learning with Latent
Embedding Optimization", ICLR).

LEO does not adapt a network's weights directly. It generates a linear classifier from the
support set through a low-dimensional **latent code per class** and adapts in that latent space:

1. **Embedding.** The model passed to ``setup`` is an embedding network: a registered backbone
   is built with ``embedding_dim`` outputs (:meth:`~strategies.embedding.EmbeddingStrategy.model_spec`,
   as ``protomemory``); BatchNorm uses batch statistics, each support and each query set on its
   own (``strategies/backbones.py``). ``e(x)`` is an item's embedding, of width ``D``.
2. **Encoder and relation network** (:func:`encode`). Each support embedding is mapped to
   ``h_i = W_e e(x_i)`` (``latent_dim`` = ``L`` wide); the relation network ``g`` (three
   bias-free linear layers of width ``2L``, ReLU between them, as the authors') scores every
   ordered pair of support items of the episode, ``g([h_i, h_j])``; a class's Gaussian over codes
   ``q(z_n | support)`` = N(mu_n, diag(sigma_n^2)) has ``(mu_n, sigma_n)`` = the mean of
   ``g([h_i, h_j])`` over the items ``i`` of class ``n`` and every item ``j`` of the episode
   (the paper's ``1 / (N K^2)`` sum), split in halves, ``sigma = softplus(second half)``. In
   meta-training ``z_n = mu_n + sigma_n * eps`` (the reparameterisation trick); at evaluation
   ``z_n = mu_n``.
3. **Decoder** (:func:`decode`). A bias-free linear map ``W_d`` of the code gives a Gaussian over
   class ``n``'s classifier weights ``w_n`` (``D`` wide); ``w_n`` is sampled in meta-training and
   is the mean at evaluation. The logits of an item are ``e(x) . w_n`` (no bias), a softmax over
   the episode's classes.
4. **Inner loop.** ``inner_steps`` gradient steps in the latent space on the support loss,
   ``z <- z - alpha * grad_z L_support(decode(z))``, with ``alpha`` meta-learned per latent
   dimension (initial value ``inner_lr``), then ``finetune_steps`` steps on the generated weights,
   ``w <- w - eta * grad_w L_support(w)``, ``eta`` meta-learned per embedding dimension (initial
   value ``finetune_lr``). ``L_support`` is the cross-entropy **summed** over the support items
   (the paper's equation and the authors' code; it scales the learned step sizes, nothing else).
5. **Meta-objective** (``learn``): the mean query cross-entropy of the adapted weights, plus
   ``kl_weight`` (beta) x the KL divergence of ``q(z | support)`` from the N(0, I) prior, plus
   ``encoder_penalty_weight`` (gamma) x ``||stopgrad(z') - z||^2`` (the adapted codes ``z'`` pull
   the encoder's codes ``z`` towards them; the encoder-stop-gradient penalty), plus
   ``l2_penalty_weight`` (lambda_1) x the squared L2 norm of the encoder, relation network and
   decoder weights, plus ``orthogonality_penalty_weight`` (lambda_2) x the mean squared
   difference between the correlation matrix of the decoder's weight vectors (one per latent
   dimension) and the identity. Each of ``meta_iterations`` meta-updates draws
   ``meta_batch_size`` episodes of the task with the strategy's generator and takes one Adam
   step (``lr``, or its cosine schedule with ``lr_schedule``) on every parameter, after clipping
   each gradient element to ``clip_value`` and then each parameter tensor's gradient to the norm
   ``clip_norm`` (the authors' code). The
   meta-gradient is exact: second order through the inner loop.

**The embedding is trained jointly** with LEO's own parameters, end to end: the meta-gradient
reaches the backbone through the query embeddings, the encoder's input and the inner loop's
support loss (second order), and one Adam optimiser moves both. The paper uses fixed features
of a WRN-28-10 pre-trained on the meta-training classes (miniImageNet, tieredImageNet); there are
no such features for Omniglot or the other streams here, and a lifelong stream would have to
pre-train on its first task only, so joint training is what this strategy does. Dropout
(``dropout``) then acts on learned features, not fixed ones.

**Evaluation.** ``adapt(support, steps)`` yields, for ``k = 0 .. steps``, the classifier generated
from each support set after ``k`` latent steps (state 0: straight from the encoder, already
support-specific), each followed by the ``finetune_steps`` fine-tuning steps; the state after
``inner_steps`` latent steps is exactly the procedure the meta-training optimised. All
episodes adapt together as batched tensors (the latent gradients of a batch of episodes are one
``torch.autograd.grad`` of the sum of their support losses: each episode's code touches only its
own loss), never in a Python loop over episodes; the encoder's pairwise relation scores are
computed :data:`RELATION_CHUNK` pair scores at a time to bound memory. ``predict(state, x)`` gives
logits ``(E, Q, C)``, ``C`` the stream's outputs (the ways under the few-shot protocol); the
states of one ``adapt`` share the query embeddings, so scoring the same queries after each of
the K+1 states embeds them once.

**Streams.** Classification streams only (:meth:`LEO.incompatibility`: a regression stream has no
classes to generate weights for). Under the few-shot protocol (``omniglot-fewshot``, and each task
of ``omniglot-alphabets``, a lifelong stream of few-shot tasks) every class of an episode has a
code; under the class-, task- and domain-incremental protocols labels are global: only the
classes present in a support set get a code and weights, the others are never a training target,
and at evaluation they score one below the lowest present logit
(:func:`~strategies.embedding.fill_absent`). LEO keeps no memory across tasks: learning a new
task moves the embedding, encoder and decoder, which may forget. It has no ``observe``, so online
streams refuse it. ``evaluation.full_test`` is refused too: its k = 0 scores one support-free state
on the whole test pool, and every LEO state comes from a support set: the checks before a run
refuse it (``needs_support``, exit status 2).

**Where we differ from the paper and the authors' code** (github.com/deepmind/leo, ``model.py``,
``config.py``):

- The embedding is trained jointly, end to end (above); the paper and the code train LEO on
  fixed, pre-trained features. Defaults of the options shared with the other embedding
  strategies (``lr`` 0.001, ``meta_batch_size`` 4, ``meta_iterations`` 100) are the library's, as
  the backbone is trained too; the authors' ``config.py`` has Adam 1e-4, 12 episodes per batch
  and 100,000 steps. LEO's own options default to ``config.py``'s: ``latent_dim`` 64,
  ``inner_steps`` 5, ``inner_lr`` 1, ``finetune_steps`` 5, ``finetune_lr`` 0.001, ``dropout``
  0.5, beta 1e-3, gamma 1e-9, lambda_1 1e-8, lambda_2 1e-3, clipping 0.1 and 0.1.
- Standard deviations: the code uses ``exp(u) - 1`` clamped at 1e-10 for the codes (zero
  gradient below ``u = 0``) and ``exp(u) - 1 + sqrt(2 / (D + N))`` for the weights; we use
  ``softplus(u)`` for the codes and ``softplus(u + c)`` for the weights, ``c`` chosen so that
  ``u = 0`` gives the code's Glorot-sized ``sqrt(2 / (D + C))``: smooth and positive.
- The KL divergence is the closed form of KL(N(mu, sigma^2) || N(0, 1)) averaged over classes and
  latent dimensions (the paper's D_KL); the code averages a one-sample estimate
  ``log q(z) - log p(z)`` at the sampled code. The encoder penalty is averaged over classes and
  dimensions (the code's mean squared error; the paper writes a squared norm). The L2 penalty is
  lambda_1 times the sum of squares (the paper; TensorFlow's ``l2_regularizer`` halves it).
- One code and one weight sample per class. The code tiles the class parameters over the K
  shots and samples K codes and K weight vectors per class, whose mean is the classifier: the
  same at evaluation (the means); in K-shot training (K > 1) its classifier is less noisy.
- Dropout (rate ``dropout``, meta-training only) acts on the embeddings at the encoder's input,
  in every inner-loop support loss and on the query, a fresh mask each time, as in the code.
- The code replaces a NaN meta-gradient by the gradient of the L2 penalty and goes on; here a
  NaN or infinite loss stops the run (:class:`~strategies.base.DivergenceError`), as for every
  strategy of the library. The code computes in float64; we compute in the model's dtype.
- The relation network's first layer is applied as ``A h_i + B h_j`` (its weight split in two
  halves) rather than to the concatenation ``[h_i, h_j]``: the same function with ``S`` times
  fewer operations, equal up to rounding.

Randomness (episodes, codes, weights, dropout masks) comes from the strategy's generator, so
runs are bit-identical per seed and resume bit-identically from a mid-task checkpoint
(:class:`~strategies.base.TaskLoop`).

Example:
    >>> import scenarios, strategies, torch
    >>> stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    >>> s = strategies.build("leo", {"meta_iterations": 3, "embedding_dim": 16, "latent_dim": 4})
    >>> s.setup(strategies.build_model("mlp", {}, s.model_spec(stream.spec)), stream.spec, "cpu")
    >>> sorted(s.learn(stream[0].training_view()))
    ['meta_iterations', 'meta_loss', 'meta_objective', 'train_accuracy']
    >>> eps = stream[0].episodes("test", 4, 2, 3, torch.Generator().manual_seed(0))
    >>> states = list(s.adapt(eps.support, 2))
    >>> len(states), s.predict(states[-1], eps.query_x).shape
    (3, torch.Size([4, 6, 10]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Mapping

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from scenarios.base import Episodes, StreamSpec, Support, Task
from strategies.base import check_finite
from strategies.embedding import EmbeddingConfig, EmbeddingStrategy, class_sums, embed, fill_absent
from strategies.training import scheduled_lr, set_lr

RELATION_CHUNK = 2**22
"""Pair scores (episodes x support items^2 x 2 latent_dim values) the relation network computes at
once at evaluation, where a large batch of big support sets (1000 episodes of 20-way 5-shot:
10^7 pairs) would otherwise need gigabytes; the episodes are split into chunks of at most this
many values (at least one episode each)."""


class LEOConfig(EmbeddingConfig):
    lr: float = Field(0.001, gt=0, description="Adam learning rate of the embedding network, LEO's networks and its "
                                               "step sizes")
    adapt_lr: Literal[None] = Field(None, description="not used: the latent and fine-tuning step sizes are "
                                                      "meta-learned (initial values: inner_lr, finetune_lr)")
    latent_dim: int = Field(64, gt=0, description="width of a class's latent code")
    inner_steps: int = Field(5, ge=0, description="latent-space gradient steps on the support set in meta-training "
                                                  "(the evaluation takes adapt_steps of them)")
    inner_lr: float = Field(1.0, gt=0, description="initial value of the meta-learned latent step size (one per "
                                                   "latent dimension)")
    finetune_steps: int = Field(5, ge=0, description="gradient steps on the generated classifier weights after the "
                                                     "latent steps, in meta-training and in every evaluation state")
    finetune_lr: float = Field(0.001, gt=0, description="initial value of the meta-learned fine-tuning step size "
                                                        "(one per embedding dimension)")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout rate on the embeddings in meta-training (encoder "
                                                        "input, support and query logits)")
    kl_weight: float = Field(0.001, ge=0, description="beta: weight of the KL divergence of the codes from N(0, I)")
    encoder_penalty_weight: float = Field(1e-9, ge=0, description="gamma: weight of the mean squared distance of the "
                                                                  "encoder's codes to the adapted ones (stop-gradient)")
    l2_penalty_weight: float = Field(1e-8, ge=0, description="lambda_1: weight of the squared L2 norm of the encoder, "
                                                             "relation network and decoder weights")
    orthogonality_penalty_weight: float = Field(0.001, ge=0, description="lambda_2: weight of the decoder's "
                                                                         "orthogonality penalty")
    clip_value: float = Field(0.1, ge=0, description="clip each meta-gradient element to +-clip_value (0: no "
                                                     "clipping)")
    clip_norm: float = Field(0.1, ge=0, description="then clip each parameter tensor's meta-gradient to this norm "
                                                    "(0: no clipping)")


class LatentNetworks(nn.Module):
    """LEO's own parameters: the encoder ``(L, D)``, the relation network's three ``(2L, 2L)``
    layers, the decoder ``(2D, L)`` (all bias-free, Glorot-uniform from ``generator``, as the
    authors'), and the meta-learned step sizes ``inner_lr`` ``(L,)`` and ``finetune_lr`` ``(D,)``.

    Example:
        >>> net = LatentNetworks(5, 3, 1.0, 0.01, torch.Generator().manual_seed(0))
        >>> {n: tuple(p.shape) for n, p in net.named_parameters()}["decoder"]
        (10, 3)
    """

    def __init__(self, embedding_dim: int, latent_dim: int, inner_lr: float, finetune_lr: float,
                 generator: torch.Generator, dtype: torch.dtype = torch.float32):
        super().__init__()
        D, L = embedding_dim, latent_dim

        def glorot(rows: int, cols: int) -> nn.Parameter:
            w = torch.empty(rows, cols, dtype=dtype)
            nn.init.xavier_uniform_(w, generator=generator)
            return nn.Parameter(w)

        self.encoder = glorot(L, D)
        self.relation = nn.ParameterList([glorot(2 * L, 2 * L) for _ in range(3)])
        self.decoder = glorot(2 * D, L)
        self.inner_lr = nn.Parameter(torch.full((L,), inner_lr, dtype=dtype))
        self.finetune_lr = nn.Parameter(torch.full((D,), finetune_lr, dtype=dtype))


REGULARISED = ("encoder", "relation.0", "relation.1", "relation.2", "decoder")
"""The weights under the L2 penalty (not the step sizes)."""


def relation_scores(p: Mapping[str, Tensor], codes: Tensor) -> Tensor:
    """For each support item ``i``, the mean over every item ``j`` of its episode of the relation
    network's output ``g([h_i, h_j])``: ``(E, S, 2L)`` from the codes ``h`` ``(E, S, L)``."""
    L = codes.shape[-1]
    first = p["relation.0"]
    # g's first layer on the concatenation [h_i, h_j] is A h_i + B h_j (A, B: halves of its weight).
    h = (codes @ first[:, :L].T).unsqueeze(-2) + (codes @ first[:, L:].T).unsqueeze(-3)   # (E, S_i, S_j, 2L)
    h = torch.relu(h) @ p["relation.1"].T
    h = torch.relu(h) @ p["relation.2"].T
    return h.mean(-2)


def encode(p: Mapping[str, Tensor], embeddings: Tensor, labels: Tensor,
           num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """The code distribution of every class: means ``(E, C, L)``, standard deviations ``(E, C, L)``
    and which classes have support items ``(E, C)``, from support embeddings ``(E, S, D)`` with
    labels ``(E, S)``. A class without items gets mean 0 (never used: see ``present``).

    Example:
        >>> net = LatentNetworks(4, 2, 1.0, 0.01, torch.Generator().manual_seed(0))
        >>> mean, std, present = encode(dict(net.named_parameters()), torch.randn(3, 6, 4),
        ...                             torch.tensor([[0, 0, 1, 1, 2, 2]] * 3), 4)
        >>> mean.shape, bool((std > 0).all()), present[0].tolist()
        (torch.Size([3, 4, 2]), True, [True, True, True, False])
    """
    codes = embeddings @ p["encoder"].T                                          # (E, S, L)
    sums, counts = class_sums(relation_scores(p, codes), labels, num_classes)   # (E, C, 2L), (E, C)
    params = sums / counts.clamp_min(1).unsqueeze(-1)
    mean, raw = params.chunk(2, dim=-1)
    return mean, F.softplus(raw), counts > 0


def weight_std_shift(embedding_dim: int, num_classes: int) -> float:
    """``c`` with ``softplus(c) = sqrt(2 / (D + C))``: the weights' standard deviation for a zero
    decoder output is the Glorot scale of a ``D x C`` classifier, as in the authors' code."""
    return math.log(math.expm1(math.sqrt(2.0 / (embedding_dim + num_classes))))


def decode(p: Mapping[str, Tensor], latents: Tensor, std_shift: float = 0.0) -> tuple[Tensor, Tensor]:
    """The distribution of each class's classifier weights: means and standard deviations
    ``(E, C, D)`` from codes ``(E, C, L)``; the means are ``W_d``'s first ``D`` rows times the code."""
    out = latents @ p["decoder"].T
    mean, raw = out.chunk(2, dim=-1)
    return mean, F.softplus(raw + std_shift)


def masked_logits(embeddings: Tensor, weights: Tensor, present: Tensor) -> Tensor:
    """Logits ``(E, Q, C)`` = embeddings ``(E, Q, D)`` times each class's weights ``(E, C, D)``;
    the classes not ``present`` ``(E, C)`` are ``-inf`` (never a target, never predicted)."""
    return (embeddings @ weights.transpose(-1, -2)).masked_fill(~present.unsqueeze(-2), float("-inf"))


def support_loss(embeddings: Tensor, labels: Tensor, weights: Tensor, present: Tensor) -> Tensor:
    """Per episode, the cross-entropy of ``weights`` on the support items, summed over them: ``(E,)``."""
    logits = masked_logits(embeddings, weights, present)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape).sum(-1)


def batched_gradient(loss: Callable[[Tensor], Tensor], at: Tensor, create_graph: bool) -> Tensor:
    """The gradient of each episode's ``loss(at)`` ``(E,)`` with respect to its own slice of
    ``at`` (leading dimension E), for all episodes at once: the gradient of their sum, since an
    episode's loss depends on its own slice only. ``create_graph`` keeps it differentiable
    (meta-training, second order); otherwise ``at`` is detached first and so is the result."""
    with torch.enable_grad():
        if not create_graph:
            at = at.detach().requires_grad_()
        (gradient,) = torch.autograd.grad(loss(at).sum(), at, create_graph=create_graph)
    return gradient


def latent_step(p: Mapping[str, Tensor], embeddings: Tensor, labels: Tensor, latents: Tensor,
                present: Tensor) -> Tensor:
    """Evaluation's latent step for every episode: ``z - alpha * grad_z L_support(decode(z))``
    with the decoder's mean weights, ``(E, C, L)``; not differentiable.

    Example:
        >>> net = LatentNetworks(4, 2, 1.0, 0.01, torch.Generator().manual_seed(0))
        >>> p, e, y = dict(net.named_parameters()), torch.randn(3, 6, 4), torch.tensor([[0, 0, 1, 1, 2, 2]] * 3)
        >>> z, _, present = encode(p, e, y, 3)
        >>> latent_step(p, e, y, z, present).shape
        torch.Size([3, 3, 2])
    """
    gradient = batched_gradient(lambda z: support_loss(embeddings, labels, decode(p, z)[0], present), latents, False)
    return latents.detach() - p["inner_lr"].detach() * gradient


def finetune(p: Mapping[str, Tensor], embeddings: Tensor, labels: Tensor, weights: Tensor, present: Tensor,
             steps: int, create_graph: bool = False,
             dropout: Callable[[Tensor], Tensor] = lambda t: t) -> Tensor:
    """``steps`` fine-tuning steps ``w - eta * grad_w L_support(w)`` on every episode's weights
    ``(E, C, D)``; ``dropout`` is applied to the embeddings of each step's loss (meta-training)."""
    for _ in range(steps):
        gradient = batched_gradient(lambda w: support_loss(dropout(embeddings), labels, w, present), weights,
                                    create_graph)
        weights = (weights if create_graph else weights.detach()) - p["finetune_lr"] * gradient
    return weights


def masked_mean(values: Tensor, present: Tensor) -> Tensor:
    """The mean of ``values`` ``(E, C, L)`` over the present classes ``(E, C)`` and every dimension."""
    weight = present.unsqueeze(-1).to(values.dtype)
    return (values * weight).sum() / (weight.sum() * values.shape[-1])


def kl_from_standard_normal(mean: Tensor, std: Tensor) -> Tensor:
    """KL(N(mean, std^2) || N(0, 1)) per element (closed form)."""
    return 0.5 * (std.square() + mean.square() - 1) - std.log()


def orthogonality_penalty(decoder: Tensor) -> Tensor:
    """The mean squared difference between the identity and the correlation (cosine) matrix
    ``(L, L)`` of the decoder's weight vectors, one per latent dimension (the columns of the
    ``(2D, L)`` matrix: the rows of the authors' ``(L, 2D)`` Sonnet weight)."""
    w = decoder.T
    norms = w.norm(dim=1, keepdim=True) + 1e-32
    correlation = (w @ w.T) / (norms @ norms.T)
    return (correlation - torch.eye(len(w), dtype=w.dtype, device=w.device)).square().mean()


def l2_penalty(p: Mapping[str, Tensor]) -> Tensor:
    """The sum of squares of the encoder, relation network and decoder weights."""
    return sum(p[name].square().sum() for name in REGULARISED)


def clip_gradients(params: list[Tensor], value: float, norm: float) -> None:
    """The authors' clipping, in place: each gradient element to ``[-value, value]``, then each
    tensor's gradient to at most ``norm`` in L2 norm (``tf.clip_by_norm``); a 0 skips either; no
    host synchronisation."""
    for q in params:
        if q.grad is None:
            continue
        if value > 0:
            q.grad.clamp_(-value, value)
        if norm > 0:
            q.grad.mul_(norm / q.grad.norm().clamp_min(norm))


@dataclass(frozen=True)
class LatentState:
    """Adapted classifiers: weights ``(E, C, D)``, which classes have one ``(E, C)``, and the
    latent codes ``(E, C, L)`` they were decoded from.

    ``query_cache`` is shared by the states of one ``adapt`` call: the last query tensor given to
    ``predict`` and its embeddings, so that scoring the same queries after each of the K+1 states
    embeds them once (the embedding does not change between the states of one ``adapt``)."""

    weights: Tensor
    present: Tensor
    latents: Tensor
    query_cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class LEO(EmbeddingStrategy):
    """LEO: generate each class's classifier from a latent code and adapt in that latent space."""

    name = "leo"
    Config = LEOConfig
    needs_support = True

    def incompatibility(self, spec: StreamSpec) -> str | None:
        if spec.kind != "classification":
            return (f"{self.name} generates a linear classifier's weights for each class of a support set, and "
                    f"stream {spec.name!r} is {spec.kind} (it has no classes)")
        return super().incompatibility(spec)

    def setup(self, model: nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        c = self.config
        dtype = next(iter(self.model.parameters()), torch.zeros(())).dtype
        with torch.no_grad():
            out = embed(self.model, torch.zeros(1, 2, *spec.input_shape, dtype=dtype, device=self.device))
        self.embedding_width = out.shape[-1]
        self.net = LatentNetworks(self.embedding_width, c.latent_dim, c.inner_lr, c.finetune_lr, self.generator,
                                  out.dtype).to(self.device)
        self.std_shift = weight_std_shift(self.embedding_width, self.num_classes)
        self.optimizer = torch.optim.Adam([*self.model.parameters(), *self.net.parameters()], lr=c.lr)

    # -- randomness, from the strategy's generator ------------------------------------------
    def normal(self, like: Tensor, shape: tuple[int, ...] | None = None) -> Tensor:
        """Standard normal noise of ``like``'s shape (or ``shape``), dtype and device."""
        shape = like.shape if shape is None else shape
        return torch.randn(shape, generator=self.generator, dtype=like.dtype).to(like.device)

    def dropout(self, x: Tensor) -> Tensor:
        """``x`` with each element zeroed with probability ``dropout``, the rest scaled up."""
        rate = self.config.dropout
        if rate == 0:
            return x
        keep = torch.rand(x.shape, generator=self.generator) >= rate
        return x * keep.to(device=x.device, dtype=x.dtype) / (1 - rate)

    def sample_weights(self, p: Mapping[str, Tensor], latents: Tensor) -> Tensor:
        """Classifier weights drawn from the decoder's distribution (reparameterised)."""
        mean, std = decode(p, latents, self.std_shift)
        return mean + std * self.normal(mean)

    # -- meta-training ------------------------------------------------------------------------
    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, Tensor, Tensor]:
        """The meta-objective on ``episodes`` (differentiable), its query loss and query accuracy
        (both detached)."""
        c = self.config
        p = dict(self.net.named_parameters())
        support = embed(self.model, episodes.support_x)
        query = embed(self.model, episodes.query_x)
        labels = episodes.support_y
        mean, std, present = encode(p, self.dropout(support), labels, self.num_classes)
        start = mean + std * self.normal(mean)
        kl = masked_mean(kl_from_standard_normal(mean, std), present)
        latents = start
        for _ in range(c.inner_steps):
            noise = self.normal(mean, (*mean.shape[:-1], self.embedding_width))
            dropped = self.dropout(support)

            def inner_loss(z: Tensor) -> Tensor:   # sampled weights: mean + std * noise, a function of z
                w_mean, w_std = decode(p, z, self.std_shift)
                return support_loss(dropped, labels, w_mean + w_std * noise, present)

            latents = latents - p["inner_lr"] * batched_gradient(inner_loss, latents, create_graph=True)
        penalty = masked_mean((latents.detach() - start).square(), present)
        weights = finetune(p, support, labels, self.sample_weights(p, latents), present, c.finetune_steps,
                           create_graph=True, dropout=self.dropout)
        logits = masked_logits(self.dropout(query), weights, present)
        query_loss = F.cross_entropy(logits.flatten(0, 1), episodes.query_y.flatten())
        accuracy = (logits.argmax(-1) == episodes.query_y).to(query_loss.dtype).mean()
        objective = (query_loss + c.kl_weight * kl + c.encoder_penalty_weight * penalty
                     + c.l2_penalty_weight * l2_penalty(p)
                     + c.orthogonality_penalty_weight * orthogonality_penalty(p["decoder"]))
        return objective, query_loss.detach(), accuracy.detach()

    def learn(self, task: Task) -> dict[str, Any]:
        c = self.config
        self.model.train()
        params = [*self.model.parameters(), *self.net.parameters()]
        zero = torch.zeros((), device=self.device)
        loop = self.task_loop(objective=zero.clone(), loss=zero.clone(), accuracy=zero.clone())
        carry = loop.carry
        for step in loop.steps(c.meta_iterations):
            episodes = task.episodes("train", c.meta_batch_size, c.shots or self.spec.shots,
                                     c.query or self.spec.query, self.generator).to(self.device)
            objective, loss, accuracy = self.meta_loss(episodes)
            set_lr(self.optimizer, scheduled_lr(c.lr, c.lr_schedule, step, c.meta_iterations))
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            clip_gradients(params, c.clip_value, c.clip_norm)
            self.optimizer.step()
            carry["objective"] += objective.detach()
            carry["loss"] += loss
            carry["accuracy"] += accuracy
            loop.loss = loss
        # One check per task: a per-iteration check would synchronise the GPU every step.
        check_finite(carry["objective"], self.label, task.name, c.meta_iterations)
        n = c.meta_iterations
        return {"meta_loss": float(carry["loss"]) / n, "meta_objective": float(carry["objective"]) / n,
                "train_accuracy": float(carry["accuracy"]) / n, "meta_iterations": n}

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_support(self, p: Mapping[str, Tensor], support: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Code means and present classes of every support set, :data:`RELATION_CHUNK` pair scores at a time."""
        E, S = support.shape[:2]
        per_episode = S * S * 2 * self.config.latent_dim
        chunk = max(1, RELATION_CHUNK // per_episode)
        parts = [encode(p, support[i:i + chunk], labels[i:i + chunk], self.num_classes) for i in range(0, E, chunk)]
        return torch.cat([m for m, _, _ in parts]), torch.cat([present for _, _, present in parts])

    @torch.no_grad()
    def adapt(self, support: Support, steps: int) -> Iterator[LatentState]:
        """State ``k`` (0..steps): the classifiers decoded (means) from each support set's codes after
        ``k`` latent steps, then fine-tuned ``finetune_steps`` steps."""
        p = {n: t.detach() for n, t in self.net.named_parameters()}
        embeddings = embed(self.model, support.x)
        latents, present = self.encode_support(p, embeddings, support.y)
        query_cache: dict[str, Any] = {}
        for k in range(steps + 1):
            if k > 0:
                latents = latent_step(p, embeddings, support.y, latents, present)
            weights = finetune(p, embeddings, support.y, decode(p, latents)[0], present, self.config.finetune_steps)
            yield LatentState(weights, present, latents, query_cache)

    @torch.no_grad()
    def predict(self, state: LatentState, x: Tensor) -> Tensor:
        """Logits ``(E, Q, C)``: each query embedding times its episode's class weights; the classes
        without support items score below the others. The same ``x`` given after several states
        of one ``adapt`` is embedded once (see :class:`LatentState`)."""
        if x.shape[0] != state.weights.shape[0]:
            raise ValueError(f"leo predicts {x.shape[0]} query set(s) with classifiers generated from "
                             f"{state.weights.shape[0]} support set(s); every state, k = 0 included, is generated from "
                             "a support set, so leo cannot score evaluation.full_test's support-free k = 0 (use "
                             "episodes: full_test = false)")
        cache = state.query_cache
        if cache.get("x") is x and cache.get("version") == x._version:
            embeddings = cache["embeddings"]
        else:
            embeddings = embed(self.model, x)
            cache.update(x=x, version=x._version, embeddings=embeddings)
        return fill_absent(embeddings @ state.weights.transpose(-1, -2), state.present)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "leo": self.net.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.net.load_state_dict(state["leo"])
