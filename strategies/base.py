"""The strategy protocol, its default functional adaptation and its default online learning.

A strategy is a handful of methods over plain state (docs/design.md, "The strategy protocol")::

    setup(model, spec, device, seed)   build optimiser / memory; own RNG seeded from ``seed``
    learn(task) -> dict                consume one task's training data (no test data)
    adapt(support, steps)              yield the adapted state after 0, 1, ..., steps steps
    predict(state, x) -> outputs       outputs for x of shape (E, Q, ...), batched over episodes
    state_dict() / load_state_dict()   everything needed to resume, memories included
    model_spec(spec) -> StreamSpec     what the runner sizes a registered backbone for (default: spec)

and, for the online loop (docs/design.md, "The online loop"), two more that a strategy may implement::

    predict_online(x) -> outputs       outputs (B, out) of the current online state, before the labels
    observe(x, y, task=None) -> dict   update on one labelled batch; ``task`` only when boundaries are given

A strategy that implements ``observe`` but not ``learn`` gets ``learn(task)`` as one pass over
the task's training data in batches of ``online_batch_size`` (:func:`learn_by_observing`).

The default :meth:`Strategy.adapt` is full-batch gradient descent on each episode's support
set with ``torch.func`` (``functional_call`` + ``grad``, vectorised over episodes with
``vmap``): the base model is never modified, and step k's state costs one batched gradient.

Example:
    >>> import strategies, scenarios, torch
    >>> stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    >>> strategy = strategies.build("finetune", {"epochs": 1})
    >>> model = strategies.build_model("mlp", {}, stream.spec)
    >>> strategy.setup(model, stream.spec, "cpu", seed=0)
    >>> logs = strategy.learn(stream[0].training_view())
    >>> eps = stream[0].episodes("test", 4, 2, 3, torch.Generator().manual_seed(0))
    >>> states = list(strategy.adapt(eps.support, steps=2))
    >>> strategy.predict(states[-1], eps.query_x).shape
    torch.Size([4, 6, 10])
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar, Collection, Iterator, Mapping

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from scenarios.base import PROTOCOLS, StreamSpec, Support, Task
from scenarios.params import Params


class StrategyConfig(Params):
    """Fields every strategy has; subclasses add their own."""

    adapt_lr: float = Field(0.1, gt=0, description="learning rate of the evaluation-time adaptation steps")


class DivergenceError(RuntimeError):
    """A training loss became NaN or infinite; the message names strategy, task and step."""


@dataclass(frozen=True)
class AdaptState:
    """Parameters after some adaptation steps; ``batched`` means a leading episode dimension."""

    params: dict[str, Tensor]
    batched: bool


def task_loss(outputs: Tensor, targets: Tensor, kind: str, mask: Tensor | None = None) -> Tensor:
    """Mean loss of ``outputs`` against ``targets``: cross-entropy over the allowed outputs
    (``mask``, broadcastable to ``outputs``) for classification, MSE for regression."""
    if kind == "regression":
        return F.mse_loss(outputs, targets)
    if mask is not None:
        outputs = outputs.masked_fill(~mask, float("-inf"))
    if outputs.dim() != 2:  # a batch of episodes: flatten; a plain minibatch skips two ops per step
        outputs, targets = outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1)
    return F.cross_entropy(outputs, targets)


def check_finite(loss: Tensor, strategy: str, task: str, step: int) -> None:
    """Raise :class:`DivergenceError` if ``loss`` is NaN or infinite."""
    if not torch.isfinite(loss).all():
        raise DivergenceError(f"strategy {strategy!r} diverged on task {task!r} by step {step}: "
                              f"loss is {loss.item()}")


class TaskLoop:
    """The iterations of one ``learn(task)``, written so that the runner can checkpoint between
    them and resume in the middle of a task.

    A strategy's ``learn`` opens one loop with :meth:`Strategy.task_loop`, keeps every value
    that lives across iterations (accumulated losses, the current epoch's order) in
    :attr:`carry`, a dict of tensors and plain numbers, and iterates :meth:`steps`. After each
    iteration the runner may save a checkpoint holding the strategy's ``state_dict``, the
    carry and the position; a resumed ``learn`` gets a loop whose :attr:`resumed` is true and
    whose :meth:`steps` starts after the saved position with the saved carry. Work done
    before :meth:`steps` (drawing the task's training examples) runs again on resume and must
    draw from the strategy's generator only: the runner rewinds that generator to its state
    at the start of ``learn`` first, so it draws the same examples, and :meth:`steps` then
    puts every RNG where the checkpoint left it. State changes before :meth:`steps` (adding to a
    memory, re-initialising the model) must be skipped when :attr:`resumed`: the checkpoint
    already holds them.

    Example:
        >>> loop = TaskLoop(carry={"total": 0.0})
        >>> for i in loop.steps(3):
        ...     loop.carry["total"] += i
        >>> loop.carry["total"], loop.position
        (3.0, 3)
    """

    def __init__(self, carry: dict[str, Any] | None = None, start: int = 0, on_start=None, on_step=None):
        self.carry = dict(carry or {})
        self.start = start
        self.position = start
        self.total: int | None = None
        self.loss: Tensor | None = None   # the latest loss, for progress displays (read rarely: a sync)
        self.scalars: dict[str, Any] = {}  # the latest values of :meth:`report`, for the run's logs
        self._on_start, self._on_step = on_start, on_step

    def report(self, **values: Any) -> None:
        """Record this iteration's numbers for the run's logs (:mod:`simulator.loggers`), by name.

        Values are kept as given (a one-element tensor stays on its device, a zero-argument
        callable is not called): recording costs a dict update and never a host
        synchronisation. The runner reads them only every ``[logging] every`` iterations.

        Example:
            >>> loop = TaskLoop()
            >>> loop.report(meta_loss=torch.tensor(0.5))
            >>> float(loop.scalars["meta_loss"])
            0.5
        """
        self.scalars.update(values)

    @property
    def resumed(self) -> bool:
        """Whether this loop continues a task from a mid-task checkpoint."""
        return self.start > 0

    def steps(self, total: int) -> Iterator[int]:
        """Yield the iteration indices ``start .. total-1``; the runner's hook runs after each."""
        if self.start > total:
            raise ValueError(f"a checkpoint resumes this task at iteration {self.start}, but it has {total}")
        self.total = total
        if self._on_start is not None:
            self._on_start(self)
        for i in range(self.start, total):
            yield i
            self.position = i + 1
            if self._on_step is not None and self.position < total:
                self._on_step(self)


class Strategy:
    """Base class holding the protocol's shared machinery.

    Subclasses set ``name`` and ``Config`` and implement :meth:`learn`; they extend
    :meth:`state_dict`/:meth:`load_state_dict` with their own memories. They narrow ``kinds``
    and ``protocols`` to the streams they can run on, so that an experiment pairing them with
    another stream is refused before it starts (:meth:`incompatibility`).
    """

    name: ClassVar[str] = "strategy"
    Config: ClassVar[type[StrategyConfig]] = StrategyConfig
    kinds: ClassVar[frozenset[str]] = frozenset({"classification", "regression"})
    protocols: ClassVar[frozenset[str]] = frozenset(PROTOCOLS)
    # Every state comes from a support set (SNAIL, LEO): no prediction without one, so the
    # support-free k = 0 of evaluation.full_test is refused before a run starts.
    needs_support: ClassVar[bool] = False
    # Evaluation adapts the episodes of many tasks in one ``adapt`` call (episodes are
    # independent in the protocol); a strategy whose ``adapt`` couples the episodes of a call
    # sets this to False and gets one call per task.
    batch_across_tasks: ClassVar[bool] = True

    def __init__(self, config: StrategyConfig | None = None, label: str | None = None):
        self.config = config if config is not None else self.Config()
        self.label = label or self.name
        self.model: nn.Module | None = None
        # Set by the runner for the length of one learn(task): makes the loops of task_loop.
        self.loop_factory = None

    # -- protocol -------------------------------------------------------------------------
    def setup(self, model: nn.Module, spec: StreamSpec, device: torch.device | str, seed: int = 0) -> None:
        """Take ownership of ``model`` on ``device`` and seed the strategy's own RNG."""
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.spec = spec
        self.generator = torch.Generator().manual_seed(seed)

    def learn(self, task: Task) -> dict[str, Any]:
        """Consume one task's training data; return logs (plain numbers).

        A strategy with :meth:`observe` and no ``learn`` of its own learns a task in one pass
        of ``observe`` calls over batches of its config's ``batch_size`` (default 10): see
        :func:`learn_by_observing`.
        """
        if self.learns_online():
            return learn_by_observing(self, task, getattr(self.config, "batch_size", 10))
        raise NotImplementedError(f"{self.name} implements neither learn nor observe")

    def adapt(self, support: Support, steps: int) -> Iterator[AdaptState]:
        """Yield the state after 0, 1, ..., ``steps`` gradient steps on each support set.

        The steps use ``config.adapt_lr``; see :meth:`gradient_adapt`.
        """
        return self.gradient_adapt(support, steps, self.config.adapt_lr)

    def gradient_adapt(self, support: Support, steps: int, lr: float | Mapping[str, Tensor],
                       names: Collection[str] | None = None) -> Iterator[AdaptState]:
        """Yield the state after 0, 1, ..., ``steps`` full-batch gradient steps on each support set.

        The episodes adapt independently and together (one ``vmap`` over the episode dimension
        per step). State 0 is the model as it is; every later state is batched. Only the
        parameters in ``names`` (all by default) move, each by ``-lr * gradient`` where ``lr`` is
        a number or a tensor per parameter name (learned rates, as in Meta-SGD).
        """
        params = {n: p.detach() for n, p in self.model.named_parameters()}
        state = AdaptState(params, batched=False)
        yield state
        if steps == 0:
            return
        step = functools.partial(gradient_step, self.model, buffers=dict(self.model.named_buffers()),
                                 lr=lr, kind=self.spec.kind, mask=support.mask, names=names)
        batched_step = {False: vmap(step, in_dims=(None, 0, 0)), True: vmap(step, in_dims=(0, 0, 0))}
        for _ in range(steps):
            state = AdaptState(batched_step[state.batched](state.params, support.x, support.y), batched=True)
            yield state

    def model_spec(self, spec: StreamSpec) -> StreamSpec:
        """The spec a registered backbone is sized from for this strategy (the runner calls it).

        The stream's own spec by default; a strategy whose model outputs something other
        than the stream's outputs (an embedding, say) returns a copy with its output size.
        """
        return spec

    def incompatibility(self, spec: StreamSpec) -> str | None:
        """Why this strategy cannot run on a stream of ``spec``, in a sentence, or ``None`` if it can.

        The default checks the declared ``kinds`` and ``protocols``.
        """
        if spec.kind not in self.kinds:
            return (f"{self.name} learns {' or '.join(sorted(self.kinds))} streams, and stream {spec.name!r} "
                    f"is {spec.kind}")
        if spec.protocol not in self.protocols:
            return (f"{self.name} runs under the {', '.join(sorted(self.protocols))} protocols, and stream "
                    f"{spec.name!r} is {spec.protocol}")
        return None

    def training_episodes(self, spec: StreamSpec) -> tuple[int, int, int] | None:
        """The largest batch of episodes ``learn`` draws at once from a task's training pool, as
        ``(episodes, shots, query)`` (items per class), or ``None`` when it draws none.

        A run is refused before it starts when a task's pool cannot supply such episodes. The
        default describes :func:`training_examples`: episodes of the stream's shots and query
        under the few-shot classification protocol (as many as fill the pool, so the pool's
        own size bounds their memory: counted as one), else the pool's examples as they are.
        """
        if spec.protocol == "few-shot" and spec.kind == "classification":
            return 1, spec.shots, spec.query
        return None

    def predict(self, state: AdaptState, x: Tensor) -> Tensor:
        """Outputs of the model with ``state``'s parameters for ``x`` of shape (E, Q, ...)."""
        buffers = dict(self.model.named_buffers())
        # One forward per episode even for shared parameters, so that a BatchNorm using batch
        # statistics normalises each query set on its own (the policy in strategies/backbones.py).
        per_episode = vmap(lambda p, xe: functional_call(self.model, (p, buffers), (xe,)),
                           in_dims=(0 if state.batched else None, 0))
        return per_episode(state.params, x)

    def state_dict(self) -> dict[str, Any]:
        """Model weights, the RNG state and, when the strategy's ``self.optimizer`` is a
        ``torch.optim.Optimizer`` (the training optimiser a subclass creates in ``setup``), its
        state; subclasses add their other optimisers and memories."""
        state = {"model": self.model.state_dict(), "generator": self.generator.get_state()}
        if isinstance(optimizer := getattr(self, "optimizer", None), torch.optim.Optimizer):
            state["optimizer"] = optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.generator.set_state(state["generator"])
        if isinstance(optimizer := getattr(self, "optimizer", None), torch.optim.Optimizer):
            optimizer.load_state_dict(state["optimizer"])

    # -- the online protocol ------------------------------------------------------------------
    @classmethod
    def learns_online(cls) -> bool:
        """Whether the strategy implements :meth:`observe` (and so runs in the online loop)."""
        return cls.observe is not Strategy.observe

    def observe(self, x: Tensor, y: Tensor, task: int | None = None) -> dict[str, Any]:
        """Update on one labelled batch ``(x, y)``, already scored; ``task`` is the batch's
        task id when the stream's boundaries are given, else ``None``. Returns logs (numbers)."""
        raise NotImplementedError(f"{self.name} does not learn online (it has no observe)")

    @torch.no_grad()
    def predict_online(self, x: Tensor) -> Tensor:
        """Outputs ``(B, out)`` of the current online state for a batch ``x`` whose labels the
        strategy has not seen; by default the model's."""
        return self.model(x)

    # -- logs -----------------------------------------------------------------------------------
    def log_scalars(self) -> dict[str, Any]:
        """Numbers of the strategy's state for the run's logs (e.g. a summary of learned
        learning rates), computed only when the runner logs (every ``[logging] every``
        iterations or batches); values as for :meth:`TaskLoop.report`. None by default."""
        return {}

    # -- helpers for subclasses -------------------------------------------------------------
    def task_loop(self, **carry: Any) -> TaskLoop:
        """The resumable loop of the current ``learn`` (see :class:`TaskLoop`); ``carry`` gives
        the initial values that live across its iterations. Open at most one per ``learn``."""
        if self.loop_factory is None:
            return TaskLoop(carry)
        return self.loop_factory(carry)

    def loss(self, outputs: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        return task_loss(outputs, targets, self.spec.kind, mask)


def gradient_step(model: nn.Module, params: Mapping[str, Tensor], x: Tensor, y: Tensor, *,
                  buffers: Mapping[str, Tensor], lr: float | Mapping[str, Tensor], kind: str,
                  mask: Tensor | None = None, names: Collection[str] | None = None,
                  first_order: bool = False) -> dict[str, Tensor]:
    """The parameters after one full-batch gradient step on one task's ``(x, y)``.

    Pure: ``params`` is not modified. The parameters in ``names`` (all by default) move by
    ``-lr * gradient`` (``lr`` a number or a tensor per name); the others come back
    unchanged. The step stays differentiable with respect to ``params`` and ``lr`` (second
    order), unless ``first_order``, where the gradient is taken at detached parameters and so
    counts as a constant. Call it inside ``vmap`` to step many tasks at once.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> p = dict(model.named_parameters())
        >>> new = gradient_step(model, p, torch.ones(4, 2), torch.zeros(4, 1), buffers={}, lr=0.1,
        ...                     kind="regression", names=["bias"])
        >>> torch.equal(new["weight"], p["weight"]), torch.equal(new["bias"], p["bias"])
        (True, False)
    """
    adapted = {n: params[n] for n in (params if names is None else names)}
    fixed = {n: p for n, p in params.items() if n not in adapted}

    def loss(a: dict[str, Tensor], f: dict[str, Tensor]) -> Tensor:
        return task_loss(functional_call(model, ({**f, **a}, buffers), (x,)), y, kind, mask)

    if first_order:
        grads = grad(loss)({n: p.detach() for n, p in adapted.items()}, {n: p.detach() for n, p in fixed.items()})
    else:
        grads = grad(loss)(adapted, fixed)
    if isinstance(lr, Mapping):
        return {n: p - lr[n] * grads[n] if n in grads else p for n, p in params.items()}
    # one fused kernel (p + (-lr) * g): half the memory traffic of a product then a difference,
    # which matters when the weights are stacked over many episodes (evaluation's adaptation)
    return {n: torch.add(p, grads[n], alpha=-lr) if n in grads else p for n, p in params.items()}


def learn_by_observing(strategy: Strategy, task: Task, batch_size: int) -> dict[str, Any]:
    """``learn(task)`` of an online strategy: one pass over the task's training examples
    (:func:`training_examples`) in an order drawn from the strategy's generator, handed to
    :meth:`Strategy.observe` ``batch_size`` at a time (the single-pass protocol of GEM, MER
    and La-MAML), as the iterations of a resumable :class:`TaskLoop`."""
    loop = strategy.task_loop()
    x, y, _ = training_examples(strategy, task)
    order = torch.randperm(len(x), generator=strategy.generator).to(x.device)
    batches = -(-len(x) // batch_size)
    logs: dict[str, Any] = {}
    for b in loop.steps(batches):
        idx = order[b * batch_size:(b + 1) * batch_size]
        logs = strategy.observe(x[idx], y[idx], task.id)
        loop.report(**logs)
    return {**logs, "batches": batches}


def training_examples(strategy: Strategy, task: Task) -> tuple[Tensor, Tensor, Tensor | None]:
    """A task's training data as flat ``(x, y, mask)`` on the strategy's device, for plain
    minibatch training.

    Under the few-shot classification protocol labels only mean something within an episode
    (0..ways-1), so the examples are freshly drawn episodes, relabelled, as many items as the
    training pool holds; otherwise they are the pool's examples with their labels.
    """
    spec = strategy.spec
    if spec.protocol == "few-shot" and spec.kind == "classification":
        per_episode = spec.ways * (spec.shots + spec.query)
        n = max(1, -(-len(task.train) // per_episode))
        eps = task.episodes("train", n, spec.shots, spec.query, strategy.generator)
        x = torch.cat([eps.support_x, eps.query_x], dim=1).flatten(0, 1)
        y = torch.cat([eps.support_y, eps.query_y], dim=1).flatten(0, 1)
    else:
        x, y = task.train.examples()
    mask = None if task.mask is None else task.mask.to(strategy.device)
    return x.to(strategy.device), y.to(strategy.device), mask
