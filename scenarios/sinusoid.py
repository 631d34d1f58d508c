"""``sinusoid``: few-shot regression over drifting regimes of sine functions.

Task t is a regime: functions ``y = A * sin(f * x + phi)`` with A, phi and f drawn uniformly
from ranges that move by ``*_drift`` per task, and x uniform on ``x_range``. With the default
ranges, task 0 is the MAML paper's distribution (A in [0.1, 5], phi in [0, pi], f = 1,
x in [-5, 5]); later tasks shift phase and frequency, so what was learned goes stale.

Each task holds ``train_functions`` training and ``test_functions`` held-out functions with
``points`` samples each, drawn once from the seed; an episode is one function with ``shots``
support and ``query`` query points.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator

from scenarios.base import Family, GroupedPool, Stream, StreamSpec, Task
from scenarios.params import Params
from scenarios.rng import generator

_TRAIN_FUNCTIONS_SALT, _TEST_FUNCTIONS_SALT = 10, 11  # the seeded draws of this family (see scenarios/rng.py)


class SinusoidParams(Params):
    num_tasks: int = Field(5, gt=0, description="number of regimes T")
    shots: int = Field(5, gt=0, description="support points per episode (K in K-shot regression)")
    query: int = Field(10, gt=0, description="query points per episode")
    amplitude: list[float] = Field([0.1, 5.0], min_length=2, max_length=2, description="amplitude range of task 0")
    phase: list[float] = Field([0.0, math.pi], min_length=2, max_length=2, description="phase range of task 0 (radians)")
    frequency: list[float] = Field([1.0, 1.0], min_length=2, max_length=2, description="frequency range of task 0")
    x_range: list[float] = Field([-5.0, 5.0], min_length=2, max_length=2, description="input range")
    amplitude_drift: float = Field(0.0, description="shift of the amplitude range per task")
    phase_drift: float = Field(0.5, description="shift of the phase range per task (radians)")
    frequency_drift: float = Field(0.25, description="shift of the frequency range per task")
    train_functions: int = Field(1000, gt=0, description="training functions per task")
    test_functions: int = Field(200, gt=0, description="held-out functions per task")
    points: int = Field(50, gt=1, description="sampled points per function")

    @model_validator(mode="after")
    def _consistent(self):
        check_ranges(self, ("amplitude", "phase", "frequency", "x_range"))
        return self


def check_ranges(params, ranges: tuple[str, ...]) -> None:
    """Raise ``ValueError`` when one of the ``(low, high)`` fields ``ranges`` of ``params`` is
    reversed, or when an episode's ``shots + query`` exceed the ``points`` of a function."""
    for name in ranges:
        lo, hi = getattr(params, name)
        if lo > hi:
            raise ValueError(f"{name}: lower end {lo} is above upper end {hi}")
    if params.shots + params.query > params.points:
        raise ValueError(f"shots + query = {params.shots + params.query} exceeds points = {params.points}")


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def sample_functions(params: SinusoidParams, task: int, n: int, gen: torch.Generator) -> GroupedPool:
    """``n`` functions of regime ``task`` with ``params.points`` points each."""
    shifted = lambda r, d: (r[0] + task * d, r[1] + task * d)  # noqa: E731
    amp = _uniform(n, *shifted(params.amplitude, params.amplitude_drift), gen)
    phase = _uniform(n, *shifted(params.phase, params.phase_drift), gen)
    freq = _uniform(n, *shifted(params.frequency, params.frequency_drift), gen)
    x = _uniform(n * params.points, *params.x_range, gen).reshape(n, params.points, 1)
    y = amp[:, None, None] * torch.sin(freq[:, None, None] * x + phase[:, None, None])
    return GroupedPool(x, y)


def build(params: SinusoidParams, seed: int) -> Stream:
    tasks = tuple(
        Task(id=t, name=f"regime {t}", classes=(),
             train=sample_functions(params, t, params.train_functions, generator(seed, _TRAIN_FUNCTIONS_SALT, t)),
             test=sample_functions(params, t, params.test_functions, generator(seed, _TEST_FUNCTIONS_SALT, t)),
             protocol="few-shot", output_size=1)
        for t in range(params.num_tasks))
    spec = StreamSpec(name="sinusoid", kind="regression", protocol="few-shot", input_shape=(1,),
                      output_size=1, num_tasks=params.num_tasks, shots=params.shots, query=params.query)
    return Stream(spec, tasks)


SINUSOID = Family("sinusoid", SinusoidParams, build,
                  "few-shot sine regression whose amplitude/phase/frequency regime drifts per task")
