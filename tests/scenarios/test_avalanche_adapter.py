"""Avalanche benchmarks to streams and back."""

import pytest
import torch
from torch.utils.data import TensorDataset

from scenarios.avalanche_adapter import from_avalanche, to_avalanche
from scenarios.custom import from_tensors
from scenarios.schedule import recurring

pytest.importorskip("avalanche")


def tensors_tasks(num_tasks=3, classes=2, shape=(1, 4, 4)):
    g = torch.Generator().manual_seed(0)
    tasks = []
    for t in range(num_tasks):
        y = torch.arange(classes * t, classes * (t + 1)).repeat(6)
        yt = torch.arange(classes * t, classes * (t + 1)).repeat(3)
        tasks.append((torch.randn(len(y), *shape, generator=g), y, torch.randn(len(yt), *shape, generator=g), yt))
    return tasks


def assert_same_tasks(a, b):
    assert len(a) == len(b) and a.spec.protocol == b.spec.protocol and a.spec.output_size == b.spec.output_size
    for ta, tb in zip(a, b):
        assert ta.id == tb.id and ta.classes == tb.classes
        for pa, pb in ((ta.train, tb.train), (ta.test, tb.test)):
            (xa, ya), (xb, yb) = pa.examples(), pb.examples()
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("protocol", ["class-incremental", "task-incremental", "domain-incremental"])
def test_a_stream_round_trips_through_an_avalanche_benchmark(protocol):
    tasks = tensors_tasks()
    if protocol == "domain-incremental":
        tasks = [(x, y % 2, xt, yt % 2) for x, y, xt, yt in tasks]
    stream = from_tensors(tasks, protocol=protocol)
    benchmark = to_avalanche(stream)
    experiences = list(benchmark.train_stream)
    assert len(experiences) == 3 and len(list(benchmark.test_stream)) == 3
    assert [sorted(e.classes_in_this_experience) for e in experiences] == [list(t.classes) for t in stream]
    expected_labels = [0, 1, 2] if protocol == "task-incremental" else [0, 0, 0]
    assert [e.task_label for e in experiences] == expected_labels
    x, y, t = experiences[1].dataset[0]
    assert torch.equal(x, tasks[1][0][0]) and int(y) == int(tasks[1][1][0]) and t == expected_labels[1]
    assert_same_tasks(from_avalanche(benchmark), stream)  # protocol inferred from the benchmark


def test_an_avalanche_benchmark_built_from_tensors_becomes_a_stream():
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(100, 1, 4, 4, generator=g), torch.arange(10).repeat(10)
    xt, yt = torch.randn(50, 1, 4, 4, generator=g), torch.arange(10).repeat(5)
    benchmark = nc_benchmark(TensorDataset(x, y), TensorDataset(xt, yt), n_experiences=5, task_labels=False, seed=1)
    stream = from_avalanche(benchmark)
    assert len(stream) == 5 and stream.spec.protocol == "class-incremental" and stream.spec.output_size == 10
    original = {x[i].numpy().tobytes(): int(y[i]) for i in range(len(y))}
    for task, exp in zip(stream, benchmark.train_stream):
        assert set(task.classes) == set(exp.classes_in_this_experience)
        tx, ty = task.train.examples()
        assert len(ty) == 20 and all(original[tx[i].numpy().tobytes()] == int(ty[i]) for i in range(len(ty)))
    again = from_avalanche(to_avalanche(stream))
    assert_same_tasks(again, stream)


def test_a_recurring_stream_gives_one_test_experience_per_task():
    stream = recurring(from_tensors(tensors_tasks(2)), [0, 1, 0])
    benchmark = to_avalanche(stream)
    assert len(list(benchmark.train_stream)) == 3 and len(list(benchmark.test_stream)) == 2
