"""Schedules: task order from the seed, recurring tasks and concatenated families.

Pure functions over streams, and the ``schedule`` family that applies them from an experiment
file::

    [scenario]
    name = "schedule"
    order = "seeded"              # shuffle the tasks from the seed ("given": as built)
    sequence = [0, 1, 2, 0, 3]    # optional: positions into the task list; a repeat recurs
    cycles = 1                    # optional: play the sequence this many times

    [[scenario.parts]]            # the streams to concatenate, in order
    name = "omniglot-alphabets"
    num_tasks = 3

    [[scenario.parts]]            # MNIST digits as an out-of-distribution shift
    name = "split-mnist"
    protocol = "few-shot"
    num_tasks = 2
    classes_per_task = 5

**Recurring tasks.** A task that appears again keeps its id, so the evaluator scores it in one
column: the evaluation tensor has N+1 rows for N stream positions and T columns for the T
distinct tasks. Ids are numbered by first appearance, so column j is the j-th new task.
:func:`simulator.recurring.reduce_recurring` turns such a tensor into the (T+1, T) matrix the
metrics expect.

**Concatenation.** The parts must agree on kind, protocol and input shape (and on ``ways`` for
few-shot). Under the class- and task-incremental protocols each part's labels are shifted past
the previous parts' outputs, so their classes stay distinct (MNIST 0-9 then Fashion-MNIST
10-19); under the domain-incremental and few-shot protocols labels are kept.

Part p of a schedule is built with the run's seed for p = 0 and a seed derived from it for
p > 0, so two parts of the same family differ.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Sequence

import torch
from pydantic import Field, ValidationError, field_validator

from scenarios.base import Family, LabelledPool, ScenarioError, Stream
from scenarios.params import Params
from scenarios.rng import SCHEDULE_ORDER, SCHEDULE_PARTS, generator


def recurring(stream: Stream, sequence: Sequence[int]) -> Stream:
    """The stream playing its tasks at the positions ``sequence`` (indices into ``stream``).

    A task played more than once keeps one id; ids are renumbered 0..T-1 by first appearance.

    Example:
        >>> import torch
        >>> from scenarios.custom import from_tensors
        >>> x, y = torch.randn(8, 2), torch.arange(2).repeat(4)
        >>> s = recurring(from_tensors([(x, y, x, y), (x, y + 2, x, y + 2)]), [0, 1, 0])
        >>> [t.id for t in s], s.num_columns, s.spec.num_tasks
        ([0, 1, 0], 2, 2)
    """
    positions = list(sequence)
    if not positions:
        raise ScenarioError("a schedule's sequence needs at least one position")
    bad = [i for i in positions if not 0 <= i < len(stream)]
    if bad:
        raise ScenarioError(f"sequence index {bad[0]} is out of range for a stream of {len(stream)} tasks "
                            f"(indices 0..{len(stream) - 1})")
    new_id: dict[int, int] = {}
    tasks = []
    for i in positions:
        task = stream[i]
        new_id.setdefault(task.id, len(new_id))
        tasks.append(dataclasses.replace(task, id=new_id[task.id]))
    spec = dataclasses.replace(stream.spec, num_tasks=len(new_id))
    return Stream(spec, tuple(tasks))


def shuffled(stream: Stream, seed: int) -> Stream:
    """The stream's positions in an order drawn from ``seed`` (ids renumbered by first appearance)."""
    order = torch.randperm(len(stream), generator=generator(seed, SCHEDULE_ORDER)).tolist()
    return recurring(stream, order)


def _shift(source, offset: int, part: int):
    if offset == 0:
        return source
    if not isinstance(source, LabelledPool):
        raise ScenarioError(f"part {part}: its {type(source).__name__} source cannot have its labels shifted; "
                            f"concatenating class- or task-incremental streams needs labelled pools")
    return source.shift_labels(offset)


def concatenate(streams: Sequence[Stream], name: str | None = None) -> Stream:
    """One stream playing ``streams`` one after the other.

    Task ids of later streams are shifted past the earlier ones (a recurrence inside a part
    stays one). Under the class- and task-incremental protocols labels are shifted too, and
    the output size is the sum of the parts'; otherwise labels are kept and it is the largest.

    Raises:
        ScenarioError: the streams differ in kind, protocol, input shape or (few-shot) ways.

    Example:
        >>> import torch
        >>> from scenarios.custom import from_tensors
        >>> x, y = torch.randn(8, 2), torch.arange(2).repeat(4)
        >>> s = concatenate([from_tensors([(x, y, x, y)]), from_tensors([(x, y, x, y)])])
        >>> [t.classes for t in s], s.spec.output_size
        ([(0, 1), (2, 3)], 4)
    """
    streams = list(streams)
    if not streams:
        raise ScenarioError("concatenate needs at least one stream")
    first = streams[0].spec
    for p, s in enumerate(streams[1:], start=1):
        for field in ("kind", "protocol", "input_shape", "ways"):
            a, b = getattr(first, field), getattr(s.spec, field)
            if a != b:
                raise ScenarioError(f"part {p} ({s.spec.name}) has {field} {b!r} but part 0 ({first.name}) has {a!r}; "
                                    f"concatenated streams must share kind, protocol, input shape and ways")
    shift_labels = first.protocol in ("class-incremental", "task-incremental")
    output_size = (sum(s.spec.output_size for s in streams) if shift_labels
                   else max(s.spec.output_size for s in streams))
    tasks, id_offset, label_offset = [], 0, 0
    for p, s in enumerate(streams):
        offset = label_offset if shift_labels else 0
        for t in s:
            tasks.append(dataclasses.replace(
                t, id=t.id + id_offset, classes=tuple(c + offset for c in t.classes),
                train=_shift(t.train, offset, p), test=_shift(t.test, offset, p), output_size=output_size))
        id_offset += max(t.id for t in s) + 1
        label_offset += s.spec.output_size
    spec = dataclasses.replace(first, name=name or "+".join(s.spec.name for s in streams),
                               output_size=output_size, num_tasks=len({t.id for t in tasks}))
    # Ids renumbered by first appearance, the numbering every schedule uses.
    return recurring(Stream(spec, tuple(tasks)), range(len(tasks)))


class ScheduleParams(Params):
    parts: list[dict[str, Any]] = Field(min_length=1, description="streams to concatenate: tables with a name and its parameters")
    order: Literal["given", "seeded"] = Field("given", description="task order: as built, or shuffled from the seed")
    sequence: list[int] | None = Field(None, min_length=1, description="positions into the (ordered) task list to play; "
                                                                       "a repeated position is a recurring task")
    cycles: int = Field(1, gt=0, description="times the sequence is played (recurring every task)")
    data_root: str | None = Field(None, min_length=1, description="data root passed to parts that read files")

    @field_validator("parts")
    @classmethod
    def _valid_parts(cls, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import scenarios  # the registry imports this module

        for p, table in enumerate(parts):
            name = table.get("name")
            if not isinstance(name, str):
                raise ValueError(f"parts[{p}].name: required, a scenario name")
            try:
                family = scenarios.family(name)
            except KeyError as err:
                raise ValueError(f"parts[{p}].name: {err.args[0]}") from None
            except ScenarioError as err:
                raise ValueError(f"parts[{p}].name: {err}") from None
            try:
                family.params(**{k: v for k, v in table.items() if k != "name"})
            except ValidationError as err:
                details = "; ".join(
                    f"parts[{p}]{''.join('.' + str(part) for part in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                    for e in err.errors())
                raise ValueError(details) from None
        return parts


def _part_seed(seed: int, part: int) -> int:
    return seed if part == 0 else generator(seed, SCHEDULE_PARTS, part).initial_seed()


def build(params: ScheduleParams, seed: int) -> Stream:
    import scenarios

    streams = []
    for p, table in enumerate(params.parts):
        family = scenarios.family(table["name"])
        values = {k: v for k, v in table.items() if k != "name"}
        if params.data_root is not None and "data_root" in family.params.model_fields:
            values.setdefault("data_root", params.data_root)
        streams.append(family.build(family.params(**values), _part_seed(seed, p)))
    stream = concatenate(streams)
    if params.order == "seeded":
        stream = shuffled(stream, seed)
    positions = list(params.sequence if params.sequence is not None else range(len(stream)))
    return recurring(stream, positions * params.cycles)


# version 2: the parts after the first draw their seeds with the salt SCHEDULE_PARTS (13), not 11
SCHEDULE = Family("schedule", ScheduleParams, build,
                  "concatenated streams (parts), with task order from the seed and recurring tasks", version=2)
