"""``continual_maml``: OSAKA's Continual-MAML (Caccia et al. 2020, "Online Fast Adaptation and
Knowledge Accumulation: a New Approach to Continual Learning", NeurIPS 2020).

Not to be confused with La-MAML's "C-MAML" (Gupta et al. 2020; the ``lamaml`` strategy with
``fixed_lr``), an unrelated algorithm that shares the abbreviation: this module is always
"Continual-MAML" or ``continual_maml``, never "C-MAML".

Two phases:

- **Pre-training** (``learn``): MAML's meta-training, inherited unchanged from
  :class:`strategies.maml.MAML` (second order unless ``first_order``; ANIL with ``anil``): on an
  online stream the runner calls it on the stream's pre-training tasks; on a task stream it is
  MAML's per-task meta-training.
- **Online** (``observe``), on each labelled batch ``B_t`` (after it was predicted with the current
  fast weights ``phi``, the slow, meta-learned weights ``theta`` before the first batch):

  1. ``loss_before = L(phi, B_t)``, the loss of the prediction just scored;
  2. fast adaptation: ``phi' = U(phi, B_t)``, ``inner_steps`` gradient steps of ``inner_lr`` (or
     ``adapt_lr``) from the *current fast weights* (OSAKA's prolonged adaptation phase), from
     ``theta`` on the first batch and on the batch after a detected switch;
     ``loss_after = L(phi', B_t)``;
  3. task-switch detection (``detection``): ``adaptation_gain`` (OSAKA's code) flags a switch when
     adapting on the batch lowered its loss by at least ``gamma``
     (``loss_before - loss_after >= gamma``: the fast weights did not fit this batch's task);
     ``loss_rise`` flags it when ``loss_before`` exceeds the previous batch's ``loss_before`` by
     more than ``gamma`` (the paper's wording);
  4. knowledge accumulation: on a detected switch with a non-empty buffer, or when the buffer
     holds more than ``max_buffer`` batches, an outer (meta) update of ``theta`` on the buffered
     batches of the task just left: the MAML loss of adapting on the first half of the buffer
     (``ceil(n/2)`` batches, concatenated) and evaluating on the second half (a one-batch buffer
     is both), scaled by the update modulation ``1 - exp(-lambda * loss)`` (``modulation``:
     OSAKA's ``loss_smooth``; large when the loss is high, i.e. the task is out of distribution,
     small in distribution), one step of the meta-optimiser (the pre-training Adam, its state
     kept, as in OSAKA's code); the buffer is then emptied. Otherwise ``B_t`` joins the buffer;
  5. a detected switch resets the fast weights to the slow ones: on the next batch (``reset =
     "next"``, OSAKA's code: the batch that revealed the switch was adapted from the old fast
     weights, the next one is adapted from ``theta``) or at once (``"immediate"``: ``phi`` becomes
     ``U(theta, B_t)`` with ``theta`` just updated).

Defaults are those of the authors' best C-MAML-with-PAP configuration on Omniglot with
``prob_statio`` 0.9 (``Config/Best_params/omniglot_p0.9.json``, ``ours_pre_kwto_acc``:
``cl_accumulate`` true, ``cl_strategy`` ``loss_smooth`` with threshold 0.25 = ``modulation``,
``cl_tbd_thres`` 2.0 = ``gamma``); its ``prob_statio`` 0.98 counterpart uses ``gamma`` 2.5.
Step sizes, inner steps and the meta-learning rate are MAML's options; ``meta_lr_schedule``
shapes pre-training only, and every online outer update takes ``meta_lr``.

**Where we differ from OSAKA's code** (github.com/ElementAI/osaka, branch ``camera_ready``,
``MAML/metalearners/maml.py``, ``observe_accumulate``):

- Its outer update uses the batches of the buffer as they were stored, including BatchNorm in
  train mode; ours is :func:`strategies.episodic.meta_objective` on one episode (batch-statistics
  BatchNorm, as every strategy here), second order unless ``first_order``.
- It learns per-parameter inner step sizes (``learn_step_size``, ``per_param_step_size``, Meta-SGD
  style) in its best configurations; here the step size is MAML's fixed ``inner_lr`` (use
  ``metasgd`` for learned rates). Pre-training is ``meta_iterations`` meta-updates per
  pre-training task, without its early stopping on a validation split.
- Its fast adaptation online is first order (the model is in eval mode) and so is ours (the fast
  weights are detached: they carry no gradient to ``theta``).
- ``max_buffer`` defaults to twice the number of examples in a batch, as its
  ``len(cl_buffer) > 2 * batch_size`` (``batch_size`` there being the batch's examples); the
  batch that triggers an update is not buffered, as there.
- ``loss_rise`` and ``reset = "immediate"`` are not in its code: they follow the paper's
  description (algorithm 1) and are off by default.
- The first batch is only adapted on and buffered, as there; its prediction (scored by the
  runner) is the slow weights'.

**Where the paper differs from its code**: the paper's algorithm 1 describes the switch as a rise
of the online loss; the code compares the loss before and after adapting on the same batch. Its
update modulation appears in the paper as ``eta_t = eta * g_lambda(L)``; in the code (and here) it
scales the loss, which under Adam changes the step only through Adam's moments.

Example:
    >>> import scenarios, strategies, torch
    >>> stream = scenarios.build("switching-sinusoid", {"length": 5}, seed=0)
    >>> cm = strategies.build("continual_maml", {"meta_iterations": 2, "inner_lr": 0.01})
    >>> cm.setup(strategies.build_model("mlp", {"hidden": [8]}, stream.spec), stream.spec, "cpu")
    >>> b = stream.batch(0)
    >>> sorted(cm.observe(b.x, b.y))
    ['loss_after', 'loss_before', 'outer_update', 'switch']
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor
from torch.func import functional_call

from scenarios.base import Episodes
from strategies.base import check_finite, task_loss
from strategies.episodic import fast_weights
from strategies.maml import MAML, MAMLConfig
from strategies.training import set_lr


class ContinualMAMLConfig(MAMLConfig):
    """Options of Continual-MAML: MAML's, and those of the online phase (OSAKA's defaults)."""

    online_adaptation: Literal["accumulate"] = Field(
        "accumulate", description="online loop: Continual-MAML keeps adapting the same fast weights and resets "
                                  "them to the slow weights on a detected task switch (no other value)")
    gamma: float = Field(2.0, ge=0, description="task-switch threshold on the loss (OSAKA's cl_tbd_thres; its "
                                                "best Omniglot values: 2.0 at switch 0.1, 2.5 at 0.02)")
    detection: Literal["adaptation_gain", "loss_rise"] = Field(
        "adaptation_gain", description="switch rule: adaptation_gain (OSAKA's code: the loss on the batch fell by "
                                       ">= gamma when adapting on it) or loss_rise (the paper: the loss on the "
                                       "new batch exceeds the previous batch's by more than gamma)")
    reset: Literal["next", "immediate"] = Field(
        "next", description="after a detected switch the fast weights restart from the slow ones on the next "
                            "batch (next: OSAKA's code) or at once on this batch (immediate)")
    modulation: float | None = Field(0.25, gt=0, description="update modulation lambda: the outer loss is scaled "
                                                             "by 1 - exp(-lambda * loss) (OSAKA's loss_smooth); "
                                                             "None: no scaling")
    max_buffer: int | None = Field(None, gt=0, description="an outer update also happens when the buffer holds "
                                                           "more batches than this (default: twice a batch's "
                                                           "examples, as OSAKA's code)")


def switch_detected(loss_before: float, loss_after: float, previous_before: float | None, gamma: float,
                    rule: str) -> bool:
    """Whether a task switch is flagged on a batch (see the module's step 3).

    Example:
        >>> switch_detected(2.5, 0.4, 0.3, 2.0, "adaptation_gain"), switch_detected(2.5, 0.4, 0.3, 2.0, "loss_rise")
        (True, True)
        >>> switch_detected(1.0, 0.4, 0.3, 2.0, "adaptation_gain"), switch_detected(2.5, 2.4, None, 2.0, "loss_rise")
        (False, False)
    """
    if rule == "adaptation_gain":
        return loss_after + gamma <= loss_before
    return previous_before is not None and loss_before > previous_before + gamma


class ContinualMAML(MAML):
    """Continual-MAML (OSAKA): MAML pre-training, then online fast weights, switch detection and
    buffered outer updates of the slow weights."""

    name = "continual_maml"
    Config = ContinualMAMLConfig

    def setup(self, model, spec, device, seed: int = 0) -> None:
        super().setup(model, spec, device, seed)
        self.buffer: list[tuple[Tensor, Tensor]] = []   # the batches of the current task, since the last update
        self.last_switch = False
        self.previous_before: float | None = None
        self.online_step = 0
        self.counts = {"switches": 0, "outer_updates": 0}

    # -- pieces of one online step -------------------------------------------------------------
    def _slow(self) -> dict[str, Tensor]:
        return {n: p.detach() for n, p in self.model.named_parameters()}

    def _loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            return task_loss(functional_call(self.model, (params, dict(self.model.named_buffers())), (x,)), y,
                             self.spec.kind)

    def _adapt(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> dict[str, Tensor]:
        fast = fast_weights(self.model, params, x, y, steps=self.config.inner_steps,
                            buffers=dict(self.model.named_buffers()), lr=self.evaluation_lr(), kind=self.spec.kind,
                            names=self.adapted, first_order=True)
        return {n: p.detach() for n, p in fast.items()}

    def buffer_episode(self) -> Episodes:
        """The buffer as one episode: the first ``ceil(n/2)`` batches support, the rest query."""
        batches = self.buffer if len(self.buffer) > 1 else self.buffer * 2
        half = math.ceil(len(batches) / 2)
        sx, sy = (torch.cat([b[i] for b in batches[:half]]) for i in (0, 1))
        qx, qy = (torch.cat([b[i] for b in batches[half:]]) for i in (0, 1))
        return Episodes(sx[None], sy[None], qx[None], qy[None])

    def outer_update(self) -> float:
        """One meta-optimiser step on the buffer's MAML loss, modulated; returns the loss."""
        c = self.config
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.meta_loss(self.buffer_episode())
        check_finite(loss, self.label, "online", self.online_step)
        weight = 1.0 if c.modulation is None else 1 - torch.exp(-c.modulation * loss.detach())
        (weight * loss).backward()
        # meta_lr_schedule shapes pre-training only: without this, a cosine schedule would leave
        # every online update at the last, near-zero rate of the last pre-training task.
        set_lr(self.optimizer, c.meta_lr)
        self.optimizer.step()
        self.counts["outer_updates"] += 1
        return float(loss.detach())

    # -- the online protocol -----------------------------------------------------------------
    def observe(self, x: Tensor, y: Tensor, task: int | None = None) -> dict[str, Any]:
        c = self.config
        self.online_step += 1
        current = self.online_fast if self.online_fast is not None else self._slow()
        loss_before = self._loss(current, x, y)
        check_finite(loss_before, self.label, "online", self.online_step)
        before = float(loss_before)
        if self.online_fast is None:   # the first batch: adapt from the slow weights and buffer it
            self.online_fast = self._adapt(current, x, y)
            self.buffer.append((x, y))
            self.previous_before = before
            return {"loss_before": before, "loss_after": float(self._loss(self.online_fast, x, y)),
                    "switch": 0, "outer_update": 0}
        start = self._slow() if self.last_switch and c.reset == "next" else current
        fast = self._adapt(start, x, y)
        after = float(self._loss(fast, x, y))
        switch = switch_detected(before, after, self.previous_before, c.gamma, c.detection)
        limit = c.max_buffer if c.max_buffer is not None else 2 * len(x)
        updated = (switch and len(self.buffer) > 0) or len(self.buffer) > limit
        if updated:
            self.outer_update()
            self.buffer = []
        else:
            self.buffer.append((x, y))
        if switch and c.reset == "immediate":
            fast = self._adapt(self._slow(), x, y)
        self.online_fast = fast
        self.last_switch, self.previous_before = switch, before
        self.counts["switches"] += int(switch)
        return {"loss_before": before, "loss_after": after, "switch": int(switch), "outer_update": int(updated)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": [list(b) for b in self.buffer], "last_switch": self.last_switch,
                "previous_before": self.previous_before, "online_step": self.online_step,
                "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.buffer = [(x.to(self.device), y.to(self.device)) for x, y in state["buffer"]]
        self.last_switch, self.previous_before = state["last_switch"], state["previous_before"]
        self.online_step, self.counts = state["online_step"], dict(state["counts"])
