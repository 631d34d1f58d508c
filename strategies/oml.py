"""``oml`` and ``anml``: Online-aware Meta-Learning (Javed & White 2019) and its neuromodulated
variant ANML (Beaulieu et al. 2020).

The model is split in two: a **representation** ``phi`` (every layer of the backbone but its
last ``nn.Linear``), meta-learned, and a **prediction head** (a linear layer) learned online,
one example at a time. ``anml`` adds a **neuromodulatory network** of the representation's
architecture (re-initialised) followed by a linear layer and a sigmoid, whose output gates
(multiplies, elementwise) the representation: ``features(x) = phi(x) * sigmoid(nm(x))``.

**Meta-training** (``learn(task)``, on the stream's pre-training tasks, e.g. the ``osaka``
family's ``pretrain`` stream of Omniglot background characters): each of ``meta_iterations``
meta-updates (OML's algorithm)

1. draws a trajectory of ``trajectory_classes`` classes of the task's training pool, with
   ``trajectory_shots`` images each, in class order (class-incremental), and
   ``random_samples`` images drawn uniformly from the whole pool (the paper's ``S_rand``);
2. resets the rows of the meta-training head ``W`` (one row per class label, ``meta_head_size``
   rows, as the paper's 1000 outputs) of the trajectory's classes: weight rows drawn
   N(0, 2 / fan_in) (Kaiming, as the authors' ``reset_classifer``), biases zero;
3. takes one SGD step of size ``inner_lr`` on ``W`` per trajectory example, one example at a
   time (``W_j = W_{j-1} - inner_lr * grad_W CE(W_{j-1} f(x_j), y_j)``);
4. takes the meta-loss ``CE(W_k f(x), y)`` over the trajectory and the random samples together,
   and updates the representation (and the gate) and the head's initial ``W`` with Adam
   (``meta_lr``) along its exact gradient: second order through the inner loop. The inner loop
   moves only the head, so the features of the trajectory and random samples are computed once
   per meta-update, and the inner loop differentiates through them (``torch.func.grad``).

**Meta-test** (``observe``, and ``learn`` on any stream without meta-training data to offer: see
below): the representation is frozen; the online head (the backbone's last ``nn.Linear``,
sized to the stream's outputs, distinct from the meta-training head) is learned by SGD with
``online_lr``, one example at a time in the order given. ``predict_online`` uses it as it is.
``adapt(support, steps)`` (the evaluator's held-out episodes) yields the head after 0..steps
passes of that same one-example-at-a-time SGD over each support set, from the current online
head, all episodes at once under ``vmap``.

``learn(task)`` meta-trains on every task it is given (the online loop calls it on the
pre-training tasks only, then ``observe`` on the stream); ``meta_iterations = 0`` makes it a pure
online learner (one pass of ``observe`` over the task's data, the training-from-scratch baseline
with a frozen random representation).

**Backbone.** The project's registered backbones (``conv4``, ``mlp``): any ``nn.Sequential``
ending in an ``nn.Linear``. Their BatchNorm layers (``conv4``'s) are replaced by the identity:
OML's network has none, and batch statistics would make an example's representation depend on
the batch it comes in, while the meta-test sees one example at a time. The paper's network
(6 conv layers of 256 channels, 2304 features) is not reproduced; ``conv4`` with its
``filters`` option stands in at a CPU-sized width.

**Where we differ from the paper and the authors' code** (github.com/khurramjaved96/mrcl,
``model/meta_learner.py``, ``oml_omniglot.py``; github.com/uvm-neurobotics-lab/ANML):

- mrcl's ``MetaLearingClassification.forward`` takes its meta-loss on ``x_rand`` (one random
  batch plus 5 further images of each trajectory class) only, not on the trajectory itself;
  we follow the paper (trajectory plus random samples). mrcl draws trajectory classes from
  the second half of the 963 background classes and random samples from all; we draw both
  from the whole training pool.
- mrcl resets only weight rows (``kaiming_normal_``), keeping the biases; we zero the biases
  too (a reset class starts unbiased). Reset rows keep their Adam moments, as in mrcl.
- ANML's code adapts the prediction network's layers after the ``rln`` cut in the inner loop
  and can fine-tune the whole prediction network at meta-test (``--rln 0``); here ANML's inner
  loop and meta-test move the head only, as OML's (the gate and the representation are both
  meta-learned, as in ANML). ANML's gate has its own conv stack of the prediction network's
  shape, as here.
- No gradient clipping (mrcl's classification learner does none either).

Example:
    >>> import scenarios, strategies, torch
    >>> stream = scenarios.build("split-digits", {"num_tasks": 1}, seed=0)
    >>> oml = strategies.build("oml", {"meta_iterations": 2, "meta_head_size": 10})
    >>> oml.setup(strategies.build_model("mlp", {"hidden": [16]}, stream.spec), stream.spec, "cpu")
    >>> sorted(oml.learn(stream[0].training_view()))
    ['meta_iterations', 'meta_loss']
"""

from __future__ import annotations

import copy
import math
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from scenarios.base import StreamSpec, Support, Task
from strategies.backbones import BatchStatNorm
from strategies.base import AdaptState, Strategy, StrategyConfig, check_finite, learn_by_observing


class OMLConfig(StrategyConfig):
    meta_lr: float = Field(1e-4, gt=0, description="Adam learning rate of the meta-update (representation, gate "
                                                   "and the meta-training head's initial weights)")
    inner_lr: float = Field(0.03, gt=0, description="SGD step of the inner loop on the meta-training head, per "
                                                    "trajectory example")
    online_lr: float | None = Field(None, gt=0, description="SGD step of the online head at meta-test, per example "
                                                            "(default: inner_lr)")
    meta_iterations: int = Field(100, ge=0, description="meta-updates on each task learn() is given (0: learn "
                                                       "online only)")
    trajectory_classes: int = Field(5, gt=0, description="classes of a meta-training trajectory (at most the task's)")
    trajectory_shots: int = Field(4, gt=0, description="images of each trajectory class, one inner step each")
    random_samples: int = Field(15, ge=0, description="images drawn from the whole pool for the meta-loss (S_rand)")
    meta_head_size: int = Field(1000, gt=0, description="rows of the meta-training head: one per class label of "
                                                        "the meta-training pool (the paper's 1000)")
    neuromodulation: bool = Field(False, description="ANML: a sigmoid gating network multiplies the representation")
    batch_size: int = Field(10, gt=0, description="examples per observe() call when learn() learns online")


class ANMLConfig(OMLConfig):
    meta_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the meta-update (representation, gate "
                                                   "and the meta-training head's initial weights; ANML's 0.001)")
    neuromodulation: bool = Field(True, description="ANML: a sigmoid gating network multiplies the representation")


class OMLNet(nn.Module):
    """Representation, optional gate, online head and meta-training head.

    ``forward(x)`` is the online head on :meth:`features`; ``meta_head`` is used only in
    meta-training."""

    def __init__(self, representation: nn.Module, head: nn.Linear, meta_classes: int, gate: nn.Module | None):
        super().__init__()
        self.representation, self.head, self.gate = representation, head, gate
        self.meta_head = nn.Linear(head.in_features, meta_classes).to(head.weight)

    def features(self, x: Tensor) -> Tensor:
        z = self.representation(x)
        return z if self.gate is None else z * torch.sigmoid(self.gate(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _strip_norms(module: nn.Module) -> nn.Module:
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (BatchStatNorm, nn.modules.batchnorm._BatchNorm)):
                setattr(parent, name, nn.Identity())
    return module


def _reinit(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return module


def _linear(w: dict[str, Tensor], f: Tensor) -> Tensor:
    return f @ w["weight"].T + w["bias"]


def sequential_sgd(head: dict[str, Tensor], feats: Tensor, y: Tensor, lr: float,
                   mask: Tensor | None = None) -> dict[str, Tensor]:
    """The linear head after one SGD step of size ``lr`` per example of ``(feats, y)``, in
    order (cross-entropy, over the allowed outputs ``mask`` when given). Differentiable with
    respect to ``head`` and ``feats`` (the inner loop's second-order path)."""
    def loss(w: dict[str, Tensor], f: Tensor, t: Tensor) -> Tensor:
        logits = _linear(w, f)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return F.cross_entropy(logits.unsqueeze(0), t.unsqueeze(0))

    step = grad(loss)
    for j in range(feats.shape[0]):
        g = step(head, feats[j], y[j])
        head = {n: head[n] - lr * g[n] for n in head}
    return head


class OML(Strategy):
    """OML: meta-learn a representation on which a linear head learns online without forgetting."""

    name = "oml"
    Config = OMLConfig
    kinds = frozenset({"classification"})

    def setup(self, model: nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
            raise ValueError(f"{self.name} splits the backbone into a representation and its last nn.Linear "
                             f"layer, so it needs an nn.Sequential ending in nn.Linear (conv4, mlp), got "
                             f"{type(model).__name__}")
        representation = _strip_norms(nn.Sequential(*list(model)[:-1]))
        gate = None
        if self.config.neuromodulation:
            gate = _reinit(copy.deepcopy(representation))
            gate = nn.Sequential(*gate, nn.Linear(model[-1].in_features, model[-1].in_features))
        net = OMLNet(representation, model[-1], self.config.meta_head_size, gate)
        super().setup(net, spec, device, seed)
        meta = [p for n, p in self.model.named_parameters() if not n.startswith("head.")]
        self.optimizer = torch.optim.Adam(meta, lr=self.config.meta_lr)

    # -- meta-training -------------------------------------------------------------------------
    def reset_rows(self, classes: Tensor) -> None:
        """Re-draw the meta-training head's rows of ``classes`` (weights N(0, 2/fan_in), bias 0)."""
        head = self.model.meta_head
        with torch.no_grad():
            w = torch.randn(len(classes), head.in_features, generator=self.generator, dtype=head.weight.dtype)
            head.weight[classes] = (w * math.sqrt(2.0 / head.in_features)).to(self.device)
            head.bias[classes] = 0

    def meta_loss(self, traj_x: Tensor, traj_y: Tensor, rand_x: Tensor, rand_y: Tensor) -> Tensor:
        """The meta-loss after the inner loop on the trajectory, differentiable (second order)."""
        net = self.model
        feats = net.features(torch.cat([traj_x, rand_x]))
        start = {"weight": net.meta_head.weight, "bias": net.meta_head.bias}
        fast = sequential_sgd(start, feats[:len(traj_x)], traj_y, self.config.inner_lr)
        return F.cross_entropy(_linear(fast, feats), torch.cat([traj_y, rand_y]))

    def meta_update(self, traj_x: Tensor, traj_y: Tensor, rand_x: Tensor, rand_y: Tensor) -> Tensor:
        """One Adam step along the meta-gradient; returns the meta-loss (detached)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.meta_loss(traj_x, traj_y, rand_x, rand_y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def learn(self, task: Task) -> dict[str, Any]:
        c = self.config
        if c.meta_iterations == 0:
            return learn_by_observing(self, task, c.batch_size)
        x, y = task.train.examples()
        x, y = x.to(self.device), y.to(self.device)
        if int(y.max()) >= c.meta_head_size:
            raise ValueError(f"{self.name} meta-trains a head of meta_head_size = {c.meta_head_size} rows, and task "
                             f"{task.name!r} has class labels up to {int(y.max())}; raise meta_head_size")
        classes, counts = torch.unique(y, return_counts=True)
        if int(counts.min()) < c.trajectory_shots:
            raise ValueError(f"task {task.name!r} has a class of {int(counts.min())} images; a trajectory needs "
                             f"{c.trajectory_shots} images of each of its classes (lower trajectory_shots)")
        n_traj = min(c.trajectory_classes, len(classes))
        by_class = torch.argsort(y, stable=True)
        offsets = torch.cumsum(counts, 0) - counts
        self.model.train()
        loop = self.task_loop(total=torch.zeros((), device=self.device))
        for _ in loop.steps(c.meta_iterations):
            pick = torch.randperm(len(classes), generator=self.generator)[:n_traj]
            index = []
            for k in pick.tolist():
                within = torch.randperm(int(counts[k]), generator=self.generator)[:c.trajectory_shots]
                index.append(by_class[offsets[k] + within.to(self.device)])
            traj = torch.cat(index)
            rand = torch.randint(len(y), (c.random_samples,), generator=self.generator).to(self.device)
            self.reset_rows(classes[pick.to(self.device)])
            loop.loss = self.meta_update(x[traj], y[traj], x[rand], y[rand])
            loop.carry["total"] += loop.loss
        check_finite(loop.carry["total"], self.label, task.name, c.meta_iterations)
        return {"meta_loss": float(loop.carry["total"]) / c.meta_iterations, "meta_iterations": c.meta_iterations}

    # -- meta-test: the online head -------------------------------------------------------------
    def _online_lr(self) -> float:
        return self.config.online_lr or self.config.inner_lr

    def _head(self) -> dict[str, Tensor]:
        return {"weight": self.model.head.weight.detach(), "bias": self.model.head.bias.detach()}

    def observe(self, x: Tensor, y: Tensor, task: int | None = None) -> dict[str, Any]:
        """SGD on the online head, one example at a time; the representation stays frozen."""
        with torch.no_grad():
            feats = self.model.features(x)
        new = sequential_sgd(self._head(), feats, y, self._online_lr())
        with torch.no_grad():
            self.model.head.weight.copy_(new["weight"])
            self.model.head.bias.copy_(new["bias"])
        return {}

    @torch.no_grad()
    def predict_online(self, x: Tensor) -> Tensor:
        return self.model(x)

    def adapt(self, support: Support, steps: int) -> Iterator[AdaptState]:
        """The online head after 0..steps passes of one-example-at-a-time SGD over each support set."""
        params = {n: p.detach() for n, p in self.model.named_parameters()}
        yield AdaptState(params, batched=False)
        if steps == 0:
            return
        with torch.no_grad():
            feats = vmap(self.model.features)(support.x)
        lr, mask = self._online_lr(), support.mask
        one_pass = vmap(lambda w, f, t: sequential_sgd(w, f, t, lr, mask), in_dims=(None, 0, 0))
        again = vmap(lambda w, f, t: sequential_sgd(w, f, t, lr, mask), in_dims=(0, 0, 0))
        head, episodes = self._head(), support.x.shape[0]
        for k in range(steps):
            head = (again if k else one_pass)(head, feats, support.y)
            batched = {n: p.expand(episodes, *p.shape) for n, p in params.items()}
            batched["head.weight"], batched["head.bias"] = head["weight"], head["bias"]
            yield AdaptState(batched, batched=True)

    def predict(self, state: AdaptState, x: Tensor) -> Tensor:
        if not state.batched:
            return functional_call(self.model, state.params, (x.flatten(0, 1),)).unflatten(0, x.shape[:2])
        feats = vmap(self.model.features)(x)
        return vmap(lambda w, b, f: f @ w.T + b)(state.params["head.weight"], state.params["head.bias"], feats)

    def training_episodes(self, spec: StreamSpec) -> None:
        return None



class ANML(OML):
    """ANML: OML with a meta-learned neuromodulatory gate on the representation."""

    name = "anml"
    Config = ANMLConfig
