"""MNIST and Fashion-MNIST streams on the real files."""

import pytest
import torch
from pydantic import ValidationError

import scenarios
from scenarios.data import load_mnist_like
from scenarios.digits import rotate


def build(name, data_root, seed=0, **params):
    return scenarios.build(name, {"data_root": str(data_root), **params}, seed)


def test_split_mnist_class_incremental_uses_every_example_once(data_root):
    stream = build("split-mnist", data_root)
    assert len(stream) == 5 and stream.spec.protocol == "class-incremental"
    assert stream.spec.input_shape == (1, 28, 28) and stream.spec.output_size == 10
    assert [t.classes for t in stream] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert sum(len(t.train) for t in stream) == 60000 and sum(len(t.test) for t in stream) == 10000
    x, y = stream[2].train.examples()
    assert x.dtype == torch.float32 and float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(y.tolist()) == {4, 5}
    assert stream[2].train.x.dtype == torch.uint8  # stored as bytes, handed out as float
    eps = stream[0].episodes("test", 3, 2, 4, torch.Generator().manual_seed(0))
    assert eps.support_x.shape == (3, 4, 1, 28, 28) and eps.mask is None


def test_split_mnist_pixels_are_the_file_bytes_scaled(data_root):
    images, labels = load_mnist_like("mnist", True, data_root)
    stream = build("split-mnist", data_root)
    x, y = stream[2].train.examples()  # digits 4 and 5: train image 0 is a 5
    first = int(torch.nonzero(torch.from_numpy(labels.astype("int64")) >= 4)[0])
    assert first == 0 and int(y[0]) == 5
    assert torch.equal(x[0, 0], torch.from_numpy(images[0].copy()).float() / 255)


def test_split_task_incremental_masks_and_few_shot_relabels(data_root):
    ti = build("split-fashion-mnist", data_root, protocol="task-incremental", train_per_class=30, test_per_class=30)
    assert ti[1].name == "fashion Pullover+Dress"
    assert ti[1].mask.tolist() == [False, False, True, True] + [False] * 6
    assert [len(t.train) for t in ti] == [60] * 5
    fs = build("split-mnist", data_root, protocol="few-shot", num_tasks=2, classes_per_task=5, ways=3)
    assert fs.spec.ways == 3 and fs.spec.output_size == 3
    eps = fs[1].episodes("test", 4, 1, 2, torch.Generator().manual_seed(0))
    assert eps.support_y.tolist() == [[0, 1, 2]] * 4


def test_split_is_a_function_of_the_seed(data_root):
    params = dict(shuffle_classes=True, train_per_class=50, test_per_class=20)
    a, b, c = (build("split-mnist", data_root, seed=s, **params) for s in (0, 0, 1))
    assert [t.classes for t in a] == [t.classes for t in b]
    assert all(torch.equal(ta.train.x, tb.train.x) for ta, tb in zip(a, b))
    assert [t.classes for t in a] != [t.classes for t in c]


def test_invalid_split_parameters_are_rejected():
    with pytest.raises(ValidationError, match="exceeds the 10 classes"):
        scenarios.family("split-mnist").params(num_tasks=6, classes_per_task=2)
    with pytest.raises(ValidationError, match="ways applies only"):
        scenarios.family("split-mnist").params(ways=2)


def test_permuted_mnist_gem_sizes_and_permutations(data_root):
    stream = build("permuted-mnist", data_root, num_tasks=3)
    assert [len(t.train) for t in stream] == [1000] * 3 and [len(t.test) for t in stream] == [10000] * 3
    assert stream.spec.protocol == "domain-incremental" and stream[0].classes == tuple(range(10))
    task = stream[1]
    x, _ = task.train.examples()
    raw = task.train.x.float().reshape(1000, -1) / 255
    flat = x.reshape(1000, -1)
    # A fixed permutation of the pixels: the same pixel multiset, in another order, for every image.
    assert torch.equal(flat.sort(1).values, raw.sort(1).values) and not torch.equal(flat, raw)
    again = build("permuted-mnist", data_root, num_tasks=3)
    other = build("permuted-mnist", data_root, seed=1, num_tasks=3)
    assert torch.equal(again[1].train.examples()[0], x)
    assert not torch.equal(other[1].train.examples()[0], x)


def test_rotated_mnist_angles_and_rotation(data_root):
    stream = build("rotated-mnist", data_root, num_tasks=3, test_per_task=500)
    assert [t.name for t in stream] == ["rotation 0 deg", "rotation 90 deg", "rotation 180 deg"]
    assert len(stream[0].test) == 500
    x0, _ = stream[0].train.examples()
    assert torch.equal(x0, stream[0].train.x.float() / 255)
    x1, _ = stream[1].train.examples()
    assert torch.allclose(x1, rotate(stream[1].train.x.float() / 255, 90.0), atol=1e-5)
    assert torch.equal(x1, torch.rot90(stream[1].train.x.float() / 255, 1, dims=(-2, -1)))
    random = build("rotated-mnist", data_root, num_tasks=4, random_angles=True, min_angle=10, max_angle=20)
    angles = [float(t.name.split()[1]) for t in random]
    assert all(10 <= a <= 20 for a in angles) and len(set(angles)) == 4
