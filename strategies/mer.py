"""``mer``: Meta-Experience Replay (Riemer et al., ICLR 2019, Algorithm 1).

For each incoming example ``(x, y)`` (``unit = "example"``, the paper)::

    theta_A0 <- theta
    for i in 1..s:                                   s = batches_per_example
        B_i <- [(x, y)] + (k - 1) memories drawn from the reservoir M     k = replay_batch_size
        theta_W0 <- theta
        for (x_c, y_c) in B_i:  theta <- theta - lr * grad loss(x_c, y_c; theta)   (one item per SGD step)
        theta <- theta_W0 + beta * (theta - theta_W0)          within-batch Reptile
    theta <- theta_A0 + gamma * (theta - theta_A0)             across-batch Reptile
    M <- reservoir_update(M, x, y)

The k SGD steps inside a batch, and the s batches, depend on each other: nothing in Algorithm 1
can run in parallel across items (no vmap applies), so the inner loop is a plain loop of
single-example steps on the parameters in place, and its cost is per-step overhead. For the
``mlp`` backbone (any plain ``Sequential`` of Linear and ReLU/Tanh layers, classification) each
step is written out by hand: softmax minus one-hot back through the layers, every weight moved
by one fused rank-one ``addmm_``, no autograd graph (about 2.5x faster than autograd's step on
the 784-100-100-10 MLP; a test checks it against the autograd path and the reference to 1e-10).
Any other model takes ``torch.autograd.grad`` steps with ``torch._foreach`` updates. Neither
keeps an optimiser object or copies state dicts. Every draw comes from the strategy's generator; the memory is a
:class:`~strategies.replay.ReservoirBuffer` sharing that generator, and :meth:`MER.state_dict`
holds the model, the memory and the generator, so a run resumes bit-identically mid-stream.

Defaults: the paper's MNIST Rotations setting with 200 memories (the authors'
``mer_examples.sh``): ``lr`` 0.1, ``beta`` 0.01, ``gamma`` 1.0, ``batches_per_example`` 5,
batches of 10 items. MNIST Permutations with 200 memories uses ``lr`` 0.03, ``beta`` 0.03,
``batches_per_example`` 10 there.

Where this differs from the paper and from the authors' code (github:mattriemer/MER,
``model/meralg1.py``):

- Batch size. Algorithm 1's batches hold k items: the example and k - 1 memories, which is
  ``replay_batch_size`` here. The authors' code draws ``replay_batch_size`` memories *plus*
  the example (k + 1 items): their ``--replay_batch_size 10`` is our ``replay_batch_size = 11``.
- Memory draws. The authors' ``getBatch`` reshuffles the whole memory before each pick, so a
  batch may repeat a memory; we draw k - 1 distinct memories (a random permutation's prefix),
  as "a random sample" reads in the paper. The example comes first in each batch in both.
- Reservoir. The authors replace slot ``randint(0, age)`` (both ends inclusive, age counted
  from 1); :class:`ReservoirBuffer` uses Vitter's ``floor(u * age)``, a uniform sample.
- Their loss is ``CrossEntropyLoss`` on each single example, as ours (``task_loss``), and the
  memory is updated after the example's own update, as ours.
- Their MLP (GEM's ``common.py``) starts from Xavier-uniform weights and zero biases: ``mlp``
  with ``init = "xavier_uniform"`` (the backbone's default is PyTorch's ``nn.Linear`` init).

``unit = "batch"`` is avalanche-lib's variant (``avalanche.training.supervised.MER``, 0.6),
for comparing with it: the whole incoming batch is the unit. Each of the s batches is the
incoming batch followed by ``replay_batch_size - 1`` memories (avalanche's ``batch_size_mem``
is our ``replay_batch_size - 1``), one SGD step per item, the within-batch Reptile step with
``beta``, one across-batch step with ``gamma`` per incoming batch, then the batch goes into the
memory. Avalanche also differs from the paper in its reservoir (it keeps the examples with the
largest random weights, updated once per experience, i.e. after each training call) and in its
defaults (``beta = gamma = 0.1``, 5 inner batches, 10 memories per batch). With ``unit =
"batch"`` and a stream of batch size 1 this is Algorithm 1 again.

Task streams (C[i, j, k]): ``learn(task)`` is one pass of ``observe`` over the task's training
data in batches of ``batch_size`` (the single-pass protocol), as every online strategy.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from scenarios.base import StreamSpec
from strategies.base import Strategy, StrategyConfig, check_finite
from strategies.replay import ReservoirBuffer


class MERConfig(StrategyConfig):
    lr: float = Field(0.1, gt=0, description="learning rate of the inner SGD steps (alpha), one example per step")
    beta: float = Field(0.01, ge=0, le=1, description="within-batch Reptile interpolation")
    gamma: float = Field(1.0, ge=0, le=1, description="across-batch Reptile interpolation")
    batches_per_example: int = Field(5, gt=0, description="batches (s) built for each incoming example "
                                                          "(for each incoming batch with unit = 'batch')")
    replay_batch_size: int = Field(10, gt=0, description="items (k) of each batch: the incoming example and "
                                                         "k - 1 memories (unit = 'batch': the incoming batch "
                                                         "and k - 1 memories)")
    memory_size: int = Field(200, gt=0, description="reservoir memory slots")
    batch_size: int = Field(10, gt=0, description="examples per observed batch when learning a task "
                                                  "in one pass (task streams)")
    unit: Literal["example", "batch"] = Field(
        "example", description="'example': Algorithm 1, s batches and one across-batch step per incoming "
                               "example; 'batch': avalanche-lib's variant, per incoming batch")


class MER(Strategy):
    """Meta-Experience Replay: reservoir memory, Reptile within and across replay batches."""

    name = "mer"
    Config = MERConfig
    kinds = frozenset({"classification", "regression"})

    def setup(self, model: torch.nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        self.memory = ReservoirBuffer(self.config.memory_size, self.generator)
        self.steps_done = 0
        self._layers = plain_mlp_layers(self.model) if spec.kind == "classification" else None

    @torch.no_grad()
    def _mlp_steps(self, bx: Tensor, by: Tensor) -> Tensor:
        """One SGD step per item of (bx, by), in order, on a plain MLP (:func:`plain_mlp_layers`):
        the cross-entropy gradient of one example written out (softmax minus one-hot,
        back through the layers) and each weight updated by a fused rank-one ``addmm_``; the
        same steps as autograd's, without its graph. Returns the summed loss."""
        lr, layers = self.config.lr, self._layers
        inputs = bx.flatten(1)
        onehot = F.one_hot(by, layers[-1][0].shape[0]).to(inputs.dtype)
        total = torch.zeros((), dtype=inputs.dtype, device=inputs.device)
        for j in range(len(inputs)):
            acts = [inputs[j:j + 1]]
            for weight, bias, act in layers:
                z = torch.addmm(bias, acts[-1], weight.t())
                acts.append(z.relu() if act == "relu" else z.tanh() if act == "tanh" else z)
            logp = torch.log_softmax(acts[-1], dim=1)
            total -= logp[0].dot(onehot[j])
            delta = logp.exp_().sub_(onehot[j:j + 1])          # d loss / d logits
            for layer in range(len(layers) - 1, -1, -1):
                weight, bias, _ = layers[layer]
                below = acts[layer]
                if layer:                                       # through the old weights, before the update
                    back = delta @ weight
                    act = layers[layer - 1][2]
                    back = back.mul_(below > 0) if act == "relu" else back.mul_(1 - below * below)
                weight.addmm_(delta.t(), below, alpha=-lr)
                bias.add_(delta[0], alpha=-lr)
                if layer:
                    delta = back
        return total.double()

    # -- the algorithm ----------------------------------------------------------------------
    def draw_memories(self, batches: int, per_batch: int) -> Tensor:
        """Indices (batches, m) of the memories of each replay batch, m = min(per_batch, memory size):
        distinct within a batch, independent across batches, from the strategy's generator."""
        size = len(self.memory)
        m = min(per_batch, size)
        if m == 0:
            return torch.zeros(batches, 0, dtype=torch.long)
        return torch.rand(batches, size, generator=self.generator).argsort(dim=1)[:, :m]

    def _update(self, x: Tensor, y: Tensor) -> Tensor:
        """One across-batch unit of Algorithm 1 on the items (x, y) (one example, or a batch);
        returns the summed loss of the SGD steps (detached)."""
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        draws = self.draw_memories(c.batches_per_example, c.replay_batch_size - 1)
        with torch.no_grad():
            start = [p.detach().clone() for p in params] if c.gamma != 1 else None
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for i in range(c.batches_per_example):
            if draws.shape[1]:
                idx = draws[i].to(self.memory.x.device)
                bx, by = torch.cat([x, self.memory.x[idx]]), torch.cat([y, self.memory.y[idx]])
            else:
                bx, by = x, y
            with torch.no_grad():
                within = [p.detach().clone() for p in params] if c.beta != 1 else None
            if self._layers is not None:
                total += self._mlp_steps(bx, by)
            else:
                for j in range(len(bx)):
                    loss = self.loss(self.model(bx[j:j + 1]), by[j:j + 1])
                    grads = torch.autograd.grad(loss, params)
                    with torch.no_grad():
                        torch._foreach_add_(params, grads, alpha=-c.lr)
                    total += loss.detach().double()
            if within is not None:
                with torch.no_grad():   # theta <- theta_W0 + beta (theta - theta_W0)
                    torch._foreach_lerp_(params, within, 1.0 - c.beta)
        if start is not None:
            with torch.no_grad():       # theta <- theta_A0 + gamma (theta - theta_A0)
                torch._foreach_lerp_(params, start, 1.0 - c.gamma)
        return total

    def observe(self, x: Tensor, y: Tensor, task: int | None = None) -> dict[str, Any]:
        """Algorithm 1 on each example of the batch in turn (``unit = "example"``), each going
        into the memory after its own update; or once on the whole batch (``unit = "batch"``)."""
        self.model.train()
        units = [(x[i:i + 1], y[i:i + 1]) for i in range(len(x))] if self.config.unit == "example" else [(x, y)]
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        steps = 0
        for ux, uy in units:
            steps += self.config.batches_per_example * (len(ux) + min(self.config.replay_batch_size - 1,
                                                                      len(self.memory)))
            total += self._update(ux, uy)
            self.memory.add(ux.detach(), uy.detach())
        self.steps_done += 1
        check_finite(total, self.label, "online" if task is None else f"task {task}", self.steps_done)
        return {"loss": float(total) / max(steps, 1), "memory": len(self.memory)}

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "memory": self.memory.state_dict(), "steps_done": self.steps_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.memory.load_state_dict(state["memory"])   # sets the shared generator to the same state
        self.steps_done = int(state["steps_done"])


def plain_mlp_layers(model: nn.Module) -> list[tuple[Tensor, Tensor, str | None]] | None:
    """``[(weight, bias, activation)]`` of a model that is exactly ``nn.Sequential([Flatten,]
    Linear, ReLU|Tanh, ..., Linear)`` or a subclass with its forward (the ``mlp`` backbone), activation ``None`` on the last
    layer; ``None`` for any other model (which then takes autograd's steps)."""
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        return None
    modules = list(model)
    if modules and type(modules[0]) is nn.Flatten and (modules[0].start_dim, modules[0].end_dim) == (1, -1):
        modules = modules[1:]
    layers: list[tuple[Tensor, Tensor, str | None]] = []
    for i in range(0, len(modules), 2):
        linear, act = modules[i], modules[i + 1] if i + 1 < len(modules) else None
        if type(linear) is not nn.Linear or linear.bias is None:
            return None
        if act is not None and type(act) not in (nn.ReLU, nn.Tanh):
            return None
        if act is not None and type(act) is nn.ReLU and act.inplace:
            return None
        layers.append((linear.weight, linear.bias, None if act is None else
                       "relu" if type(act) is nn.ReLU else "tanh"))
    if not layers or layers[-1][2] is not None or any(not p.requires_grad for p in model.parameters()):
        return None
    return layers
