"""``switching-sinusoid``: online sine regression whose function switches at a hazard rate (as MOCA).

MOCA (Harrison et al., "Continuous Meta-Learning without Tasks", NeurIPS 2020) meta-learns and
tests on a time series whose sine function changes at random: at every step, with
probability ``hazard``, a new sine ``y = A sin(x + phi)`` is drawn, A and phi uniform in the
MAML ranges (A in [0.1, 5], phi in [0, pi]); x is uniform in [-5, 5].

- **The stream**: ``length`` batches of ``batch_size`` points (x, y) of the current sine,
  x of shape (B, 1) and y of shape (B, 1), plus Gaussian noise of std ``noise_std`` on y.
  Batch 0 starts a sine; after it the sine switches with probability ``hazard`` per batch, to
  a fresh one (a new task id) or, with probability ``recur_prob``, to an earlier one (same
  amplitude and phase, same id). There is one pool, ``"sine"``.
- **Pre-training** (``stream.pretrain``): the ``sinusoid`` family with one regime and no drift,
  i.e. MAML's few-shot sine distribution (``train_functions`` functions of ``points`` points).
- **Columns**: one, ``"sine"``, a pool column like OSAKA's: its test source is the pre-training
  stream's ``test_functions`` held-out sines, none of which the stream plays (the stream's
  sines are fresh draws), so it measures how well the learner adapts to a new sine of the
  distribution after ``shots`` points, at each evaluation. Held-out sines carry no noise.

Where we differ from MOCA's code (``SwitchingSinusoidDataset``): it observes one point per
step (set ``batch_size = 1``) with noise variance 0.05 (``noise_std = 0.2236``), draws phase in
[0, 3.14] and frequency in [0.999, 1]; it trains with hazard 0.1 and tests with 0.01. Here a
batch defaults to 10 points without noise, frequency is exactly 1 and phase in [0, pi], as MAML.

Example:
    >>> import scenarios
    >>> stream = scenarios.build("switching-sinusoid", {"length": 50, "batch_size": 4}, seed=0)
    >>> b = stream.batch(0)
    >>> tuple(b.x.shape), tuple(b.y.shape), b.switch, stream.column_names
    ((4, 1), (4, 1), True, ('sine',))
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
from pydantic import Field, model_validator
from torch import Tensor

from scenarios import sinusoid
from scenarios.params import Params
from scenarios.rng import SWITCHING_BATCHES, SWITCHING_TASKS, generator
from scenarios.online import BOUNDARIES_HELP, Boundaries, OnlineFamily, OnlineStream, Switching, switching


class SwitchingSinusoidParams(Params):
    length: int = Field(10000, gt=0, description="number of batches L")
    hazard: float = Field(0.1, ge=0, le=1, description="probability that the sine switches after a batch "
                                                       "(MOCA: 0.1 in training, 0.01 in testing)")
    batch_size: int = Field(10, gt=0, description="points per batch (MOCA: 1)")
    recur_prob: float = Field(0.0, ge=0, le=1, description="probability that a switch returns to an earlier sine (MOCA: 0)")
    noise_std: float = Field(0.0, ge=0, description="standard deviation of Gaussian noise on the stream's targets "
                                                    "(MOCA: 0.2236, variance 0.05)")
    amplitude: list[float] = Field([0.1, 5.0], min_length=2, max_length=2, description="amplitude range")
    phase: list[float] = Field([0.0, math.pi], min_length=2, max_length=2, description="phase range (radians)")
    x_range: list[float] = Field([-5.0, 5.0], min_length=2, max_length=2, description="input range")
    shots: int = Field(5, gt=0, description="support points per evaluation and pre-training episode")
    query: int = Field(10, gt=0, description="query points per evaluation and pre-training episode")
    train_functions: int = Field(1000, gt=0, description="pre-training functions")
    test_functions: int = Field(200, gt=0, description="held-out functions of the sine column")
    points: int = Field(50, gt=1, description="sampled points per pre-training or held-out function")
    boundaries: Boundaries = Field("hidden", description=BOUNDARIES_HELP)

    @model_validator(mode="after")
    def _consistent(self):
        sinusoid.check_ranges(self, ("amplitude", "phase", "x_range"))
        return self


def _uniform(lo: float, hi: float, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def sine(task: int, params: SwitchingSinusoidParams, seed: int) -> tuple[float, float]:
    """Amplitude and phase of sine ``task``: a pure function of its id, so a recurring sine is
    the same sine."""
    gen = generator(seed, SWITCHING_TASKS, task)
    return float(_uniform(*params.amplitude, (), gen)), float(_uniform(*params.phase, (), gen))


def _drawer(params: SwitchingSinusoidParams, seed: int, meta: Switching) -> Callable[[int], tuple[Tensor, Tensor]]:
    def draw(t: int) -> tuple[Tensor, Tensor]:
        amplitude, phase = sine(int(meta.task[t]), params, seed)
        gen = generator(seed, SWITCHING_BATCHES, t)
        x = _uniform(*params.x_range, (params.batch_size, 1), gen)
        noise = params.noise_std * torch.randn(params.batch_size, 1, generator=gen)
        return x, amplitude * torch.sin(x + phase) + noise

    return draw


def build(params: SwitchingSinusoidParams, seed: int) -> OnlineStream:
    pretrain = sinusoid.build(sinusoid.SinusoidParams(
        num_tasks=1, shots=params.shots, query=params.query, amplitude=params.amplitude, phase=params.phase,
        frequency=[1.0, 1.0], x_range=params.x_range, amplitude_drift=0.0, phase_drift=0.0, frequency_drift=0.0,
        train_functions=params.train_functions, test_functions=params.test_functions, points=params.points), seed)
    spec = dataclasses.replace(pretrain.spec, name="switching-sinusoid")
    meta = switching(params.length, params.hazard, (1.0,), params.recur_prob, seed)
    columns = (dataclasses.replace(pretrain[0], name="sine"),)
    return OnlineStream(spec, ("sine",), params.boundaries, columns, meta, _drawer(params, seed, meta), pretrain=pretrain)


SWITCHING_SINUSOID = OnlineFamily("switching-sinusoid", SwitchingSinusoidParams, build,
                                  "online: sine regression whose function switches at a hazard rate per batch (as MOCA)")
