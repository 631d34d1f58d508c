"""The built-in stream families: protocols, splits, transforms, drift and determinism."""

import hashlib

import pytest
import torch

import scenarios
from scenarios.digits import rotate


def stream_hash(stream):
    h = hashlib.sha256()
    for task in stream:
        for source in (task.train, task.test):
            for t in source.examples():
                h.update(t.numpy().tobytes())
    return h.hexdigest()


def test_split_digits_class_incremental():
    stream = scenarios.build("split-digits", {"num_tasks": 5}, seed=0)
    spec = stream.spec
    assert (spec.kind, spec.protocol, spec.input_shape, spec.output_size) == (
        "classification", "class-incremental", (1, 8, 8), 10)
    assert [t.classes for t in stream] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    total = 0
    for task in stream:
        for source in (task.train, task.test):
            x, y = source.examples()
            assert set(y.unique().tolist()) == set(task.classes)
            assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
            total += len(y)
        assert task.mask is None
    assert total == 1797                   # every digit used exactly once
    # about 30% of each class is held out
    assert 0.25 < len(stream[0].test) / (len(stream[0].train) + len(stream[0].test)) < 0.35


def test_split_digits_task_incremental_and_shuffled_classes():
    stream = scenarios.build("split-digits", {"num_tasks": 3, "classes_per_task": 3,
                                              "protocol": "task-incremental", "shuffle_classes": True}, seed=1)
    classes = [c for t in stream for c in t.classes]
    assert len(set(classes)) == 9 and classes != list(range(9))
    assert stream[0].mask.sum() == 3 and stream[0].mask[list(stream[0].classes)].all()


def test_streams_are_functions_of_the_seed():
    for name in ("split-digits", "permuted-digits", "rotated-digits", "sinusoid"):
        a = scenarios.build(name, {"num_tasks": 2}, seed=0)
        b = scenarios.build(name, {"num_tasks": 2}, seed=0)
        c = scenarios.build(name, {"num_tasks": 2}, seed=1)
        assert stream_hash(a) == stream_hash(b), name
        assert stream_hash(a) != stream_hash(c), name


def test_permuted_digits_permutes_the_same_images():
    stream = scenarios.build("permuted-digits", {"num_tasks": 3}, seed=0)
    assert stream.spec.protocol == "domain-incremental"
    x0, y0 = stream[0].train.examples()
    x1, y1 = stream[1].train.examples()
    assert torch.equal(y0, y1) and not torch.equal(x0, x1)
    # same multiset of pixel values per image: a permutation, not a new image
    assert torch.equal(x0.flatten(1).sort(dim=1).values, x1.flatten(1).sort(dim=1).values)
    assert all(t.classes == tuple(range(10)) for t in stream)


def test_rotated_digits_angles_and_rotation():
    stream = scenarios.build("rotated-digits", {"num_tasks": 3, "max_angle": 90.0}, seed=0)
    assert [t.name for t in stream] == ["rotation 0 deg", "rotation 45 deg", "rotation 90 deg"]
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 0, 4:] = 1.0                      # a bar on the top row, right half
    assert torch.allclose(rotate(x, 0.0), x, atol=1e-6)
    ccw = torch.zeros(1, 1, 8, 8)
    ccw[0, 0, :4, 0] = 1.0                    # counter-clockwise: top edge to left edge
    assert torch.allclose(rotate(x, 90.0), ccw, atol=1e-5)
    turned = rotate(x, 180.0)
    assert torch.allclose(turned, x.flip(-1).flip(-2), atol=1e-5)
    r0, _ = stream[0].train.examples()
    r2, _ = stream[2].train.examples()
    assert not torch.allclose(r0, r2)


def test_sinusoid_regimes_drift():
    params = {"num_tasks": 3, "phase_drift": 1.0, "frequency_drift": 0.5, "train_functions": 200}
    stream = scenarios.build("sinusoid", params, seed=0)
    spec = stream.spec
    assert (spec.kind, spec.protocol, spec.input_shape, spec.output_size) == ("regression", "few-shot", (1,), 1)
    eps = stream[0].episodes("train", 8, 5, 10, torch.Generator().manual_seed(0))
    assert eps.support_x.shape == (8, 5, 1) and eps.query_y.shape == (8, 10, 1)
    x, y = stream[0].train.examples()
    assert x.shape == (200 * 50, 1) and float(x.min()) >= -5 and float(x.max()) <= 5
    assert float(y.abs().max()) <= 5.0
    # same x, different regimes: the targets at x = 0 are A*sin(phi); phi ranges shift by 1 per task
    mean_at_zero = []
    for t in range(3):
        pool = stream[t].train
        near = pool.x.abs() < 0.2
        mean_at_zero.append(float(pool.y[near].mean()))
    assert mean_at_zero[0] > mean_at_zero[2]     # phases drift from [0, pi] towards [2, pi + 2]


def test_sinusoid_rejects_inconsistent_parameters():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="shots \\+ query = 60 exceeds points = 50"):
        scenarios.build("sinusoid", {"shots": 30, "query": 30})
    with pytest.raises(ValidationError, match="lower end 5.0 is above upper end 1.0"):
        scenarios.build("sinusoid", {"amplitude": [5.0, 1.0]})
