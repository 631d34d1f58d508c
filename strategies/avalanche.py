"""Avalanche's continual-learning baselines, run as strategies of this simulator.

``avalanche.<Name>`` in an experiment file runs Avalanche's reference implementation of that
baseline (Avalanche 0.6): ``learn(task)`` trains it on the task as one Avalanche experience,
``adapt`` is this project's functional fine-tuning of its model (the base class's) and
``predict`` uses its model, so the evaluator scores it exactly like every other strategy.

========================  ===================================================================
name                      Avalanche class
========================  ===================================================================
``avalanche.Naive``       ``training.supervised.Naive``
``avalanche.Replay``      ``training.supervised.Replay``
``avalanche.EWC``         ``training.supervised.EWC``
``avalanche.LwF``         ``training.supervised.LwF``
``avalanche.SI``          ``training.supervised.SynapticIntelligence`` (corrected: see below)
``avalanche.MAS``         ``training.supervised.MAS``
``avalanche.GEM``         ``training.supervised.GEM`` (solves a QP per step with ``quadprog``)
``avalanche.AGEM``        ``training.supervised.AGEM``
``avalanche.GDumb``       ``training.supervised.GDumb``
``avalanche.ERACE``       ``training.supervised.ER_ACE``
``avalanche.MER``         ``training.supervised.MER``
``avalanche.LaMAML``      ``training.supervised.lamaml_v2.LaMAML`` (torch.func; no ``higher``)
========================  ===================================================================

Options: the training options shared by this project's strategies (``lr``, ``epochs`` =
Avalanche's ``train_epochs``, ``batch_size`` = ``train_mb_size``, ``optimizer``, ``momentum``,
``adapt_lr``) and the class's own keyword arguments under Avalanche's names, types and
defaults. Where Avalanche has no default (``ewc_lambda``, LwF's ``alpha`` and ``temperature``,
``si_lambda``, GEM's and A-GEM's ``patterns_per_exp``) the field's description says which value
is ours. Unknown keys and wrong types are errors naming the field, as for every strategy;
tests/strategies/test_avalanche.py checks the declared fields against the signatures.

Avalanche is imported only when one of these strategies is set up (it takes seconds and about
1 GB), never by this module: ``lifelong list`` and experiment validation stay light. The
parts that need it live in :mod:`strategies.avalanche_runtime`.

Faithfulness and determinism:

- Where we differ from Avalanche 0.6: ``avalanche.SI``. Avalanche's SI plugin records the
  weights (at the start of an experience, before and after each step) and the gradients as
  ``param.detach().cpu().flatten()``, which for a model on the CPU is a *view* of the live
  tensor, not a copy: the recorded "previous" weights move with the model, the importances
  stay exactly zero and the penalty vanishes, so on the CPU Avalanche's SI trains exactly like
  Naive (bit-identical weights even with ``si_lambda = 1e6``), while on CUDA, where ``.cpu()``
  copies, it works. Ours (:class:`strategies.avalanche_runtime.SynapticIntelligencePlugin`)
  replaces each recorded view by a copy right after the callback that recorded it, so it
  computes what Avalanche computes on CUDA, on every device: importances equal to SI's path
  integral in Avalanche's convention (the gradient of the penalised loss, importances capped
  at 0.001), checked in tests/strategies/test_numerics.py against a computation from
  recorded paths. Runs of ``avalanche.SI`` on the CPU made with Avalanche 0.6 itself are
  Naive runs and do not compare with ours.
- A task becomes an experience of ``(x, y, task_label)`` items, built as
  :func:`scenarios.avalanche_adapter.to_avalanche` builds them: the task label is the task id
  under the task-incremental protocol and 0 otherwise, and ``current_experience`` counts the
  experiences learned so far. So a strategy trained here sees the same data loader, buffers
  and task-aware bookkeeping as in Avalanche's own loop (tests/strategies/
  test_avalanche_crosscheck.py shows equal accuracy matrices).
- Under task-incremental the model is wrapped in an Avalanche ``MultiTaskModule`` that masks
  each example's logits to its task's classes (with -1000, as Avalanche's
  ``IncrementalClassifier`` masks unused units): every strategy's training loss is then
  restricted to the task's classes, as the protocol prescribes, whatever task its replayed
  examples come from. LaMAML calls its model with task labels, so it is always wrapped
  (without masks outside task-incremental). ``predict`` and ``adapt`` use the bare model; the
  evaluator applies the protocol's mask itself.
- Avalanche draws shuffles, buffer samples and (LaMAML) initial weights from the global RNGs
  of torch, numpy and Python. ``setup`` and every ``learn`` run inside
  :func:`~scenarios.rng.isolated_rng`, which seeds all three from one draw of the strategy's
  own generator and puts the caller's states back: a run is a function of its seed, bit for
  bit, and leaves the caller's random state alone.
- Avalanche's ``save_checkpoint`` pickles the whole strategy with dill and fails with current
  torch (a PicklingError on the optimiser classes). :meth:`AvalancheStrategy.state_dict`
  holds instead what a resumed strategy needs to continue bit-identically: model, optimiser
  state, the strategy's generator, and the state of every plugin (replay buffers, EWC
  importances and saved parameters, SI and MAS state, LwF's previous model, GEM and A-GEM
  memories, GDumb's memory and initial model, the clock with the experience counter) plus
  the memories ER-ACE, MER and LaMAML keep on the strategy itself (LaMAML: its learned
  learning rates and their optimiser), serialised together with ``torch.save``. Tensors come
  back on the device they were saved from: resume on the same device.

Example:
    >>> import strategies
    >>> s = strategies.build("avalanche.EWC", {"ewc_lambda": 10.0, "epochs": 1})
    >>> s.name, s.avalanche_kwargs()
    ('avalanche.EWC', {'ewc_lambda': 10.0, 'mode': 'separate', 'decay_factor': None, 'keep_importance_data': False})
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from scenarios.base import StreamSpec, Task
from scenarios.rng import isolated_rng
from strategies.base import Strategy, training_examples
from strategies.signing import sign, verify
from strategies.training import MinibatchConfig, make_optimizer


def generator_seed(generator: torch.Generator) -> int:
    """One draw of ``generator``: the seed of the global RNGs inside :func:`~scenarios.rng.isolated_rng`
    around Avalanche's code, which draws from global state."""
    return int(torch.randint(0, 2**62, (), generator=generator))


class AvalancheConfig(MinibatchConfig):
    """Training options of every Avalanche strategy; subclasses add the class's keyword arguments."""


_COMMON = frozenset(AvalancheConfig.model_fields)


class ReplayConfig(AvalancheConfig):
    mem_size: int = Field(200, ge=0, description="replay buffer size (examples, balanced over experiences)")


class EWCConfig(AvalancheConfig):
    ewc_lambda: float = Field(0.4, ge=0, description="weight of the EWC penalty (ours: Avalanche has no default; "
                                                     "0.4 as in its EWC example)")
    mode: Literal["separate", "online"] = Field("separate", description="one penalty per experience, or online EWC")
    decay_factor: float | None = Field(None, ge=0, description="online mode: decay of the old importances")
    keep_importance_data: bool = Field(False, description="separate mode: keep the importances of every experience")


class LwFConfig(AvalancheConfig):
    alpha: float | list[float] = Field(1.0, description="weight of the distillation loss, or one per experience "
                                                        "(ours: Avalanche has no default)")
    temperature: float = Field(2.0, gt=0, description="softmax temperature of the distillation "
                                                      "(ours: Avalanche has no default)")


class SIConfig(AvalancheConfig):
    si_lambda: float | list[float] = Field(0.0001, description="weight of the SI penalty, or one per experience "
                                                               "(ours: Avalanche has no default)")
    eps: float = Field(1e-07, gt=0, description="damping of the importance denominator")


class MASConfig(AvalancheConfig):
    lambda_reg: float = Field(1.0, ge=0, description="weight of the MAS penalty")
    alpha: float = Field(0.5, ge=0, le=1, description="share of the old importance kept at each update")


class GEMConfig(AvalancheConfig):
    patterns_per_exp: int = Field(256, gt=0, description="examples kept per experience "
                                                         "(ours: Avalanche has no default)")
    memory_strength: float = Field(0.5, ge=0, description="offset added to the QP solution (GEM's gamma)")


class AGEMConfig(AvalancheConfig):
    patterns_per_exp: int = Field(256, gt=0, description="examples kept per experience "
                                                         "(ours: Avalanche has no default)")
    sample_size: int = Field(64, gt=0, description="memory examples of the reference gradient")


class GDumbConfig(AvalancheConfig):
    mem_size: int = Field(200, gt=0, description="class-balanced memory size; each task retrains from "
                                                 "the initial weights on the memory alone")


class ERACEConfig(AvalancheConfig):
    mem_size: int = Field(200, gt=0, description="class-balanced replay buffer size")
    batch_size_mem: int = Field(10, gt=0, description="replayed examples per minibatch")


class MERConfig(AvalancheConfig):
    mem_size: int = Field(200, gt=0, description="reservoir buffer size")
    batch_size_mem: int = Field(10, gt=0, description="replayed examples per inner batch")
    n_inner_steps: int = Field(5, gt=0, description="inner batches per minibatch")
    beta: float = Field(0.1, gt=0, description="within-batch Reptile step size")
    gamma: float = Field(0.1, gt=0, description="across-batch Reptile step size")


class LaMAMLConfig(AvalancheConfig):
    n_inner_updates: int = Field(5, gt=0, description="inner updates per minibatch (the minibatch is split "
                                                      "into this many chunks)")
    second_order: bool = Field(True, description="differentiate through the inner updates")
    grad_clip_norm: float = Field(1.0, gt=0, description="gradient clipping of inner and outer updates")
    learn_lr: bool = Field(True, description="learn the per-parameter learning rates")
    lr_alpha: float = Field(0.25, gt=0, description="learning rate of the learned learning rates")
    sync_update: bool = Field(False, description="update the weights with the optimiser (else with the "
                                                 "learned rates)")
    alpha_init: float = Field(0.1, gt=0, description="initial per-parameter learning rate")
    max_buffer_size: int = Field(200, gt=0, description="reservoir buffer size")
    buffer_mb_size: int = Field(10, gt=0, description="replayed examples per minibatch")


class AvalancheStrategy(Strategy):
    """An Avalanche strategy (``target``) trained by ``learn``, adapted and used by this project.

    Subclasses set ``name``, ``Config``, ``target`` (``"module:Class"``), and
    ``memory_attributes``: the strategy-level attributes in which the class keeps state across
    experiences (plugins' state is found without a list).
    """

    name = "avalanche"
    Config = AvalancheConfig
    kinds = frozenset({"classification"})  # Avalanche's strategies train with cross-entropy
    target: ClassVar[str]
    memory_attributes: ClassVar[tuple[str, ...]] = ()
    calls_model_with_task_labels: ClassVar[bool] = False

    def avalanche_kwargs(self) -> dict[str, Any]:
        """The class's own keyword arguments: every config field but the common training options."""
        return {k: v for k, v in self.config.model_dump().items() if k not in _COMMON}

    def setup(self, model: torch.nn.Module, spec: StreamSpec, device, seed: int = 0) -> None:
        """Build the Avalanche strategy around ``model`` (Avalanche is imported here).

        Raises:
            ValueError: the stream is not a classification stream.
        """
        if spec.kind != "classification":
            raise ValueError(f"strategy {self.name!r} learns classification streams; {spec.name!r} is {spec.kind}")
        from strategies import avalanche_runtime as rt

        super().setup(model, spec, device, seed)
        c = self.config
        masked = spec.protocol == "task-incremental"
        net = (rt.TaskMaskedModel(self.model, spec.output_size, masked=masked)
               if masked or self.calls_model_with_task_labels else self.model)
        self.monitor = rt.LossMonitor()
        with rt.quiet(), isolated_rng(generator_seed(self.generator), self.device):
            self.avalanche = rt.avalanche_class(self.target)(
                model=net, optimizer=make_optimizer(c.optimizer, net.parameters(), c.lr, c.momentum),
                criterion=torch.nn.CrossEntropyLoss(), train_mb_size=c.batch_size, train_epochs=c.epochs,
                eval_mb_size=c.batch_size, device=self.device, plugins=[self.monitor],
                evaluator=rt.silent_evaluator(), **self.avalanche_kwargs())
        self.model = rt.backbone(self.avalanche.model)  # LaMAML re-initialises the weights in place

    def learn(self, task: Task) -> dict[str, Any]:
        """Train the Avalanche strategy on ``task`` as its next experience.

        Returns ``train_loss`` (mean minibatch loss of the last epoch, penalties included) and
        ``steps`` (minibatches).
        """
        from strategies import avalanche_runtime as rt

        x, y, _ = training_examples(self, task)
        avalanche = self.avalanche
        label = task.id if self.spec.protocol == "task-incremental" else 0
        if isinstance(avalanche.model, rt.TaskMaskedModel) and avalanche.model.masked:
            avalanche.model.masks.register(task.id, task.mask)
        # The data loader pins memory on CUDA runs, so the dataset stays on the CPU; Avalanche
        # moves each minibatch to the device.
        experience = rt.make_experience(x.cpu(), y.cpu(), label, avalanche.clock.train_exp_counter)
        self.monitor.start(self.label, task.name)
        with rt.quiet(), isolated_rng(generator_seed(self.generator), self.device):
            avalanche.train(experience, eval_streams=[])
        # GDumb trains a fresh copy of its initial model on every experience: follow it.
        self.model = rt.backbone(avalanche.model)
        return self.monitor.logs()

    def state_dict(self) -> dict[str, Any]:
        """Model, optimiser, generator and the serialised Avalanche state (see the module doc)."""
        from strategies import avalanche_runtime as rt

        blob = rt.save_state(self.avalanche, self.memory_attributes, self.monitor)
        return {**super().state_dict(),
                "optimizer": copy.deepcopy(self.avalanche.optimizer.state_dict()),
                "avalanche": blob, "avalanche_mac": sign(blob)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`; the pickled Avalanche state only when its signature is
        this user's (see :func:`verify`), a ``ValueError`` otherwise."""
        from strategies import avalanche_runtime as rt

        # Refuse before touching any state; rt.load_state checks again where it unpickles.
        verify(state["avalanche"], state.get("avalanche_mac"))
        super().load_state_dict(state)
        self.avalanche.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        rt.load_state(self.avalanche, state["avalanche"], state["avalanche_mac"], self.memory_attributes,
                      self.monitor)


class Naive(AvalancheStrategy):
    """Avalanche's Naive: plain fine-tuning through Avalanche's training loop (the lower bound)."""

    name = "avalanche.Naive"
    target = "avalanche.training.supervised:Naive"


class Replay(AvalancheStrategy):
    """Avalanche's Replay: experience replay from a buffer balanced over experiences."""

    name = "avalanche.Replay"
    Config = ReplayConfig
    target = "avalanche.training.supervised:Replay"


class EWC(AvalancheStrategy):
    """Avalanche's EWC: elastic weight consolidation, a Fisher-weighted penalty on moving old weights."""

    name = "avalanche.EWC"
    Config = EWCConfig
    target = "avalanche.training.supervised:EWC"


class LwF(AvalancheStrategy):
    """Avalanche's LwF: learning without forgetting, distillation from the previous model's outputs."""

    name = "avalanche.LwF"
    Config = LwFConfig
    target = "avalanche.training.supervised:LwF"


class SI(AvalancheStrategy):
    """Avalanche's SynapticIntelligence: a penalty weighted by each weight's path-integral importance."""

    name = "avalanche.SI"
    Config = SIConfig
    target = "strategies.avalanche_runtime:SynapticIntelligence"  # Avalanche's, with its CPU trap fixed


class MAS(AvalancheStrategy):
    """Avalanche's MAS: memory-aware synapses, a penalty weighted by output-sensitivity importance."""

    name = "avalanche.MAS"
    Config = MASConfig
    target = "avalanche.training.supervised:MAS"


class GEM(AvalancheStrategy):
    """Avalanche's GEM: gradient episodic memory, gradients projected by a QP (needs quadprog)."""

    name = "avalanche.GEM"
    Config = GEMConfig
    target = "avalanche.training.supervised:GEM"


class AGEM(AvalancheStrategy):
    """Avalanche's A-GEM: averaged GEM, one projection against a memory sample's gradient."""

    name = "avalanche.AGEM"
    Config = AGEMConfig
    target = "avalanche.training.supervised:AGEM"


class GDumb(AvalancheStrategy):
    """Avalanche's GDumb: a class-balanced memory, and the model retrained on it alone for each task."""

    name = "avalanche.GDumb"
    Config = GDumbConfig
    target = "avalanche.training.supervised:GDumb"


class ERACE(AvalancheStrategy):
    """Avalanche's ER_ACE: experience replay with the asymmetric cross-entropy of Caccia et al."""

    name = "avalanche.ERACE"
    Config = ERACEConfig
    target = "avalanche.training.supervised:ER_ACE"
    memory_attributes = ("storage_policy",)


class MER(AvalancheStrategy):
    """Avalanche's MER: meta-experience replay, Reptile-style updates over replayed examples."""

    name = "avalanche.MER"
    Config = MERConfig
    target = "avalanche.training.supervised:MER"
    memory_attributes = ("buffer",)


class LaMAML(AvalancheStrategy):
    """Avalanche's La-MAML (torch.func version): look-ahead MAML with learned per-parameter rates."""

    name = "avalanche.LaMAML"
    Config = LaMAMLConfig
    target = "avalanche.training.supervised.lamaml_v2:LaMAML"
    memory_attributes = ("alpha_params", "alpha_params_initialized", "optimizer_alpha", "buffer")
    calls_model_with_task_labels = True
