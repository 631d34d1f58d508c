"""Conversions between Avalanche benchmarks and streams, both ways.

- :func:`from_avalanche`: any Avalanche classification benchmark (its ``train_stream`` and
  ``test_stream`` of experiences, old generators such as ``nc_benchmark`` or the 0.6
  ``benchmark_from_datasets``) becomes a :class:`~scenarios.base.Stream`: experience i of the
  train stream is task i, with experience i of the test stream as its held-out pool.
- :func:`to_avalanche`: a stream becomes an Avalanche 0.6 benchmark (``train_stream`` with one
  experience per stream position, ``test_stream`` with one per distinct task, in id order),
  whose datasets yield ``(x, y, task_label)`` as Avalanche strategies expect; this is what lets
  Avalanche's baselines run on every stream of this project.

Avalanche is imported inside the functions only: it takes seconds and about 1 GB to import.

Example:
    >>> import torch
    >>> from scenarios.custom import from_tensors
    >>> x, y = torch.randn(20, 1, 4, 4), torch.arange(2).repeat(10)
    >>> stream = from_tensors([(x, y, x, y), (x, y + 2, x, y + 2)])
    >>> bm = to_avalanche(stream)                                   # doctest: +SKIP
    >>> [t.classes for t in from_avalanche(bm)]                     # doctest: +SKIP
    [(0, 1), (2, 3)]
"""

from __future__ import annotations

import torch
from torch import Tensor

from scenarios.base import PROTOCOLS, ScenarioError, Stream
from scenarios.custom import dataset_tensors, from_tensors


def _experience_tensors(experience, what: str) -> tuple[Tensor, Tensor]:
    dataset = experience.dataset
    # The eval transform group is deterministic (no random augmentation), so the stream is a
    # fixed set of examples.
    if hasattr(dataset, "eval"):
        dataset = dataset.eval()
    return dataset_tensors(dataset, what)


def _task_labels(experience) -> set[int]:
    labels = getattr(experience, "task_labels", None)
    if labels is None:
        label = getattr(experience, "task_label", None)
        labels = [] if label is None else [label]
    return {int(t) for t in labels}


def from_avalanche(benchmark, *, protocol: str | None = None, ways: int | None = None, name: str = "avalanche",
                   shots: int = 5, query: int = 10, output_size: int | None = None) -> Stream:
    """A stream from an Avalanche classification benchmark.

    Task i holds the examples of train experience i, and its test pool is test experience i;
    when the test stream has a single experience (``new_instances_benchmark``), every task is
    tested on its own classes' share of it.

    Args:
        benchmark: an Avalanche benchmark with ``train_stream`` and ``test_stream``.
        protocol: one of the four protocols; by default inferred: ``task-incremental`` when
            the experiences carry distinct task labels, ``domain-incremental`` when every
            experience has the same classes, ``class-incremental`` otherwise. ``few-shot``
            must be asked for, with ``ways``.
        ways, name, shots, query, output_size: as in :func:`scenarios.custom.from_tensors`.

    Raises:
        ScenarioError: no train or test stream, stream lengths that cannot be paired, or
            experiences that do not yield ``(tensor, label, ...)`` items.
    """
    if protocol is not None and protocol not in PROTOCOLS:
        raise ScenarioError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    try:
        train_exps, test_exps = list(benchmark.train_stream), list(benchmark.test_stream)
    except AttributeError as err:
        raise ScenarioError(f"not an Avalanche benchmark with train and test streams: {err}") from None
    if not train_exps:
        raise ScenarioError("the benchmark's train stream is empty")
    if len(test_exps) not in (len(train_exps), 1):
        raise ScenarioError(f"{len(train_exps)} train experiences but {len(test_exps)} test experiences; "
                            f"expected as many, or a single test experience")
    train = [_experience_tensors(e, f"train experience {i}") for i, e in enumerate(train_exps)]
    test = [_experience_tensors(e, f"test experience {i}") for i, e in enumerate(test_exps)]
    if len(test) == 1 and len(train) > 1:
        x, y = test[0]
        test = [(x[torch.isin(y, ytr.unique())], y[torch.isin(y, ytr.unique())]) for _, ytr in train]
    if protocol is None:
        task_labels = [_task_labels(e) for e in train_exps]
        classes = [set(ytr.unique().tolist()) for _, ytr in train]
        distinct_tasks = len({frozenset(t) for t in task_labels}) == len(train) and len(train) > 1
        protocol = ("task-incremental" if distinct_tasks
                    else "domain-incremental" if len(train) > 1 and all(c == classes[0] for c in classes)
                    else "class-incremental")
    tensors = [(xtr, ytr, xte, yte) for (xtr, ytr), (xte, yte) in zip(train, test)]
    return from_tensors(tensors, protocol=protocol, ways=ways, name=name, shots=shots, query=query,
                        output_size=output_size, task_names=[f"experience {i}" for i in range(len(train))])


def _dataset(x: Tensor, y: Tensor, task_label: int):
    from avalanche.benchmarks.utils import DataAttribute
    from avalanche.benchmarks.utils.classification_dataset import TaskAwareSupervisedClassificationDataset
    from torch.utils.data import TensorDataset

    return TaskAwareSupervisedClassificationDataset(
        [TensorDataset(x, y)],
        data_attributes=[DataAttribute(y.tolist(), "targets"),
                         DataAttribute([task_label] * len(y), "targets_task_labels", use_in_getitem=True)])


def to_avalanche(stream: Stream):
    """An Avalanche 0.6 benchmark (``CLScenario``) with the stream's training and test data.

    ``train_stream`` has one experience per stream position (a recurring task appears again),
    ``test_stream`` one per distinct task, in increasing id order. The task label of every
    example is the task's id under the task-incremental protocol and 0 otherwise (Avalanche's
    convention for class- and domain-incremental benchmarks). Experiences carry
    ``task_label``/``task_labels`` and ``classes_in_this_experience``.

    Raises:
        ScenarioError: a task has no test data (a training view), or the stream is not a
            classification stream.
    """
    from avalanche.benchmarks.scenarios import benchmark_from_datasets, with_classes_timeline, with_task_labels

    if stream.spec.kind != "classification":
        raise ScenarioError("Avalanche benchmarks hold classification data; this stream is "
                            f"{stream.spec.kind}")
    label = (lambda t: t.id) if stream.spec.protocol == "task-incremental" else (lambda t: 0)
    train, test = [], {}
    for task in stream:
        if task.test is None:
            raise ScenarioError(f"task {task.name!r} has no test data (a training view cannot be converted)")
        train.append(_dataset(*task.train.examples(), label(task)))
        if task.id not in test:
            test[task.id] = _dataset(*task.test.examples(), label(task))
    benchmark = benchmark_from_datasets(train=train, test=[test[i] for i in sorted(test)])
    return with_classes_timeline(with_task_labels(benchmark))
