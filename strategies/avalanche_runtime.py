"""The parts of the Avalanche strategies that need Avalanche itself (imported with this module).

:mod:`strategies.avalanche` imports this module only when a strategy is set up, so that
listing strategies and validating experiment files never pay Avalanche's import (seconds,
about 1 GB). Everything here is module-level so that it pickles (checkpoints hold LwF's
previous model and GDumb's initial model, which may be :class:`TaskMaskedModel` objects).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os
import types
import warnings
from typing import Any, Iterator

import avalanche
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
from avalanche.benchmarks.utils import DataAttribute
from avalanche.benchmarks.utils.classification_dataset import TaskAwareSupervisedClassificationDataset
from avalanche.core import SupervisedPlugin
from avalanche.models import MultiTaskModule
from avalanche.training import supervised
from avalanche.training.plugins import AGEMPlugin, EvaluationPlugin
from avalanche.training.plugins import SynapticIntelligencePlugin as AvalancheSIPlugin
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from strategies.base import check_finite
from strategies.signing import verify

MASK_VALUE = -1000.0  # as Avalanche's IncrementalClassifier: finite, so MAS's output norms stay finite
_AVALANCHE_DIR = os.path.dirname(avalanche.__file__)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Drop the warnings raised from Avalanche's own files; pass the others on afterwards.

    Avalanche warns about calls it makes itself (deprecated internals, positional arguments to
    its templates) and about running without loggers (ours, on purpose): nothing a user can
    act on. Its deprecation decorator installs its own filter, so filters cannot silence it:
    the warnings are recorded instead, and those from elsewhere re-emitted.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if not w.filename.startswith(_AVALANCHE_DIR):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def avalanche_class(target: str) -> type:
    """The Avalanche strategy class named ``"module:Class"``."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def silent_evaluator() -> EvaluationPlugin:
    """An evaluation plugin with no metrics and no loggers: evaluation is the simulator's job."""
    with quiet():
        return EvaluationPlugin(loggers=[])


def make_experience(x: Tensor, y: Tensor, task_label: int, index: int) -> DatasetExperience:
    """One training experience of ``(x, y, task_label)`` items with ``current_experience = index``.

    The dataset is built as :func:`scenarios.avalanche_adapter.to_avalanche` builds it, and
    the experience carries ``task_label``/``task_labels`` as ``with_task_labels`` sets them, so
    strategies use the same task-balanced data loader as on an adapter benchmark.
    """
    dataset = TaskAwareSupervisedClassificationDataset(
        [TensorDataset(x, y)],
        data_attributes=[DataAttribute(y.tolist(), "targets"),
                         DataAttribute([task_label] * len(y), "targets_task_labels", use_in_getitem=True)])
    experience = DatasetExperience(dataset=dataset, current_experience=index)
    experience.task_label = task_label
    experience.task_labels = [task_label]
    return experience


class TaskMasks:
    """Task id -> boolean mask of the task's classes, as a (task ids, outputs) table.

    Shared, not copied, by ``copy.deepcopy``: the model copies Avalanche makes (LwF's previous
    model, GDumb's initial model) keep seeing the masks of tasks registered later.
    """

    def __init__(self, output_size: int, device: torch.device):
        self.table = torch.ones(0, output_size, dtype=torch.bool, device=device)
        self.known: set[int] = set()

    def register(self, task_id: int, mask: Tensor) -> None:
        """Record task ``task_id``'s mask (rows of ids never registered allow every output)."""
        if task_id >= len(self.table):
            grow = torch.ones(task_id + 1 - len(self.table), self.table.shape[1], dtype=torch.bool,
                              device=self.table.device)
            self.table = torch.cat([self.table, grow])
        self.table[task_id] = mask.to(self.table.device)
        self.known.add(task_id)

    def __deepcopy__(self, memo: dict) -> "TaskMasks":
        return self


class TaskMaskedModel(MultiTaskModule):
    """``net`` as an Avalanche multi-task module: called as ``model(x, task_labels)``.

    With ``masked``, each example's logits outside its task's classes become ``MASK_VALUE``
    (``task_labels`` a tensor with one id per example, or one int); ``task_labels=None`` gives
    a dict of the masked outputs of every known task (what LwF's distillation asks for).
    Without ``masked`` the labels are ignored (LaMAML passes them on every stream).
    """

    def __init__(self, net: nn.Module, output_size: int, masked: bool):
        super().__init__()
        self.net, self.masked = net, masked
        device = next(net.parameters()).device
        self.masks = TaskMasks(output_size, device)

    def adaptation(self, experience) -> None:
        """Nothing to adapt: the strategy registers each task's mask before training on it."""

    def forward(self, x: Tensor, task_labels: Tensor | int | None = None):
        out = self.net(x)
        if not self.masked:
            return out
        table = self.masks.table
        if task_labels is None:
            return {t: out.masked_fill(~table[t], MASK_VALUE) for t in sorted(self.masks.known)}
        return out.masked_fill(~table[task_labels], MASK_VALUE)


def backbone(model: nn.Module) -> nn.Module:
    """The plain model inside a :class:`TaskMaskedModel`, or ``model`` itself."""
    return model.net if isinstance(model, TaskMaskedModel) else model


class LossMonitor(SupervisedPlugin):
    """Sums the minibatch losses of each epoch on the device and checks them once per epoch.

    One host synchronisation per epoch, as in :func:`strategies.training.train_minibatches`; a NaN
    or infinite sum raises :class:`~strategies.base.DivergenceError` naming strategy, task and step.
    """

    def __init__(self):
        super().__init__()
        self.start("strategy", "task")

    def start(self, label: str, task_name: str) -> None:
        """Begin a new experience for strategy ``label`` on task ``task_name``."""
        self.label, self.task_name = label, task_name
        self.steps, self.epoch_steps, self.epoch_loss = 0, 0, float("nan")
        self.epoch_sum: Tensor | None = None

    def before_training_epoch(self, strategy, **kwargs) -> None:
        self.epoch_sum, self.epoch_steps = torch.zeros((), device=strategy.device), 0

    def after_training_iteration(self, strategy, **kwargs) -> None:
        # Out of place: Avalanche's loss has shape (1,) or () depending on the template.
        self.epoch_sum = self.epoch_sum + strategy.loss.detach()
        self.epoch_steps += 1
        self.steps += 1

    def after_training_epoch(self, strategy, **kwargs) -> None:
        check_finite(self.epoch_sum, self.label, self.task_name, self.steps)
        self.epoch_loss = float(self.epoch_sum) / self.epoch_steps if self.epoch_steps else float("nan")

    def logs(self) -> dict[str, Any]:
        """``train_loss``: mean minibatch loss of the last epoch; ``steps``: minibatches."""
        return {"train_loss": self.epoch_loss, "steps": self.steps}


def _stateful_plugins(strategy, monitor: LossMonitor) -> list:
    # Evaluation is not the strategy's state, and the monitor starts afresh on every experience.
    return [p for p in strategy.plugins if not isinstance(p, EvaluationPlugin) and p is not monitor]


def save_state(strategy, memory_attributes: tuple[str, ...], monitor: LossMonitor) -> bytes:
    """The Avalanche strategy's state across experiences, serialised with ``torch.save``.

    Holds every plugin's attributes (the clock with the experience counter, replay buffers,
    importances, memories, previous or initial models) except generators (A-GEM's memory
    iterator, rebuilt on load), the strategy attributes in ``memory_attributes``, whether the
    optimiser was registered, and the task masks. One ``torch.save`` for all of it keeps
    shared objects shared (e.g. the task masks of the live and the copied models).
    """
    model = strategy.model
    payload = {
        "plugins": [{k: v for k, v in vars(p).items() if not isinstance(v, types.GeneratorType)}
                    for p in _stateful_plugins(strategy, monitor)],
        # Avalanche creates some of them on the first experience (LaMAML's optimizer_alpha):
        # before it, they are absent, and absent again after a load.
        "strategy": {name: getattr(strategy, name) for name in memory_attributes if hasattr(strategy, name)},
        "optimizer_registered": strategy.optimized_param_id is not None,
        "task_masks": model.masks if isinstance(model, TaskMaskedModel) else None,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def load_state(strategy, blob: bytes, mac: str | None, memory_attributes: tuple[str, ...],
               monitor: LossMonitor) -> None:
    """Put state written by :func:`save_state` into a freshly built strategy of the same class
    and options (tensors come back on the device they were saved from).

    The pickle is read only when ``mac`` is this user's signature of ``blob``
    (:func:`strategies.signing.verify`, a ``ValueError`` otherwise): unpickling runs code
    named in the data, so a file crafted elsewhere must never get that far.
    """
    verify(blob, mac)
    payload = torch.load(io.BytesIO(blob), weights_only=False)  # signed by this user: our own objects
    plugins = _stateful_plugins(strategy, monitor)
    if len(plugins) != len(payload["plugins"]):
        raise ValueError(f"the saved state has {len(payload['plugins'])} plugins; this strategy has {len(plugins)}")
    for plugin, saved in zip(plugins, payload["plugins"]):
        vars(plugin).update(saved)
        if isinstance(plugin, AGEMPlugin) and plugin.buffer_dataloader is not None:
            # A fresh, not yet started iterator: the saved one had not started either (A-GEM
            # builds it at the end of an experience and first draws from it in the next).
            plugin.buffer_dliter = iter(plugin.buffer_dataloader)
    for name, value in payload["strategy"].items():
        setattr(strategy, name, value)
    if payload["optimizer_registered"]:
        # What Avalanche's first make_optimizer records; without it the next experience would
        # reset the optimiser's state (momentum, Adam moments) as if it were the first.
        strategy.optimized_param_id = dict(strategy.model.named_parameters())
    if payload["task_masks"] is not None:
        strategy.model.masks = payload["task_masks"]


class SynapticIntelligencePlugin(AvalancheSIPlugin):
    """Avalanche 0.6's Synaptic Intelligence plugin, keeping copies where it kept views.

    Avalanche records the weights at the start of an experience (``init_batch``), before and
    after every step (``pre_update``, ``post_update``, ``update_ewc_data``) and each step's
    gradient (``post_update``) as ``param.detach().cpu().flatten()``. For a CUDA model that is
    a copy; for a CPU model it is a view of the live parameter or gradient, which moves with
    it: the start weights always equal the current ones (so the penalty is zero) and every
    step's change is zero (so the importances stay zero), and SI trains exactly like Naive.

    Here, right after each of the plugin's callbacks, every stored tensor that shares memory
    with a parameter or gradient of the model is replaced by a copy of itself: the value
    Avalanche meant to record, taken at the instant it meant to. Nothing else differs, and on
    CUDA, where nothing is shared, the computation is Avalanche's, bit for bit.
    """

    def before_training_exp(self, strategy, **kwargs):
        super().before_training_exp(strategy, **kwargs)
        self._copy_views(strategy.model)

    def before_training_iteration(self, strategy, **kwargs):
        super().before_training_iteration(strategy, **kwargs)
        self._copy_views(strategy.model)

    def after_training_iteration(self, strategy, **kwargs):
        super().after_training_iteration(strategy, **kwargs)
        self._copy_views(strategy.model)

    def after_training_exp(self, strategy, **kwargs):
        super().after_training_exp(strategy, **kwargs)
        self._copy_views(strategy.model)

    def _copy_views(self, model: nn.Module) -> None:
        live = {t.untyped_storage().data_ptr() for p in model.parameters() for t in (p, p.grad) if t is not None}
        for store in (*self.ewc_data, *self.syn_data.values()):
            for item in store.values():
                if item.data.untyped_storage().data_ptr() in live:
                    item.data = item.data.clone()


class SynapticIntelligence(supervised.SynapticIntelligence):
    """Avalanche's SynapticIntelligence strategy with our :class:`SynapticIntelligencePlugin`
    in place of Avalanche's (which holds the whole algorithm); same arguments."""

    @functools.wraps(supervised.SynapticIntelligence.__init__)  # its signature, for option checks
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plugins = [SynapticIntelligencePlugin(si_lambda=p.si_lambda, eps=p.eps,
                                                   excluded_parameters=p.excluded_parameters, device=p._device)
                        if type(p) is AvalancheSIPlugin else p for p in self.plugins]
