"""Omniglot streams on the real zips: the Vinyals split with rotations, and alphabets in sequence."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import scenarios
from scenarios.base import ScenarioError
from scenarios.data import load_omniglot


def build(name, data_root, seed=0, **params):
    return scenarios.build(name, {"data_root": str(data_root), **params}, seed)


def test_fewshot_vinyals_split_with_rotations(data_root):
    stream = build("omniglot-fewshot", data_root)
    assert len(stream) == 1 and stream.spec.protocol == "few-shot"
    assert stream.spec.ways == 5 and stream.spec.output_size == 5 and stream.spec.input_shape == (1, 28, 28)
    task = stream[0]
    assert len(task.train.classes) == 4800 and len(task.train) == 4800 * 20
    assert len(task.test.classes) == 1692 and len(task.test) == 1692 * 20
    assert not set(task.train.classes.tolist()) & set(task.test.classes.tolist())
    eps = task.episodes("test", 8, 1, 15, torch.Generator().manual_seed(0))
    assert eps.support_x.shape == (8, 5, 1, 28, 28) and eps.query_x.shape == (8, 75, 1, 28, 28)
    assert eps.support_y[0].tolist() == [0, 1, 2, 3, 4] and float(eps.support_x.max()) <= 1.0


def test_rotated_classes_are_rotated_images(data_root):
    om = load_omniglot(data_root)
    stream = build("omniglot-fewshot", data_root)
    pool = stream[0].test  # classes in split-file order: Gurmukhi/character42 at 0, 90, 180, 270
    upright = torch.from_numpy(om.images[om.image_table()[om.characters.index("Gurmukhi/character42")]])
    for k in range(4):
        images = pool.x[pool.y == pool.classes[k]][:, 0]
        assert torch.equal(images, torch.rot90(upright, k, dims=(-2, -1)))
    upright_only = build("omniglot-fewshot", data_root, rotations=False, train_split="train", test_split="val")
    assert len(upright_only[0].train.classes) == 1028 and len(upright_only[0].test.classes) == 172


def test_alphabets_arrive_in_sequence_with_held_out_characters(data_root):
    om = load_omniglot(data_root)
    stream = build("omniglot-alphabets", data_root, num_tasks=3)
    assert [t.name for t in stream] == om.alphabets("background")[:3]
    assert [t.id for t in stream] == [0, 1, 2] and stream.spec.ways == 5
    magi = sum(c.startswith("Alphabet_of_the_Magi/") for c in om.characters)
    first = stream[0]
    assert len(first.train.classes) + len(first.test.classes) == magi
    assert len(first.test.classes) == int(np.ceil(0.3 * magi))
    # Held-out characters are new characters: no test image is a training image.
    train_rows = {bytes(r) for r in first.train.x.reshape(len(first.train), -1).numpy()}
    assert not any(bytes(r) in train_rows for r in first.test.x.reshape(len(first.test), -1).numpy())
    labels = [set(t.classes) for t in stream]
    assert not (labels[0] & labels[1]) and not (labels[1] & labels[2])
    eps = stream[2].episodes("train", 4, 1, 10, torch.Generator().manual_seed(0))
    assert eps.query_y.shape == (4, 50)


def test_alphabet_order_and_holdout_follow_the_seed(data_root):
    params = dict(num_tasks=4, shuffle_alphabets=True, alphabets="all")
    a, b, c = (build("omniglot-alphabets", data_root, seed=s, **params) for s in (3, 3, 4))
    assert [t.name for t in a] == [t.name for t in b] != [t.name for t in c]
    assert all(torch.equal(x.test.x, y.test.x) for x, y in zip(a, b))


def test_drawer_holdout_keeps_characters_and_splits_drawers(data_root):
    stream = build("omniglot-alphabets", data_root, num_tasks=2, alphabets_per_task=2, holdout="drawers",
                   test_fraction=0.3, query=5, rotations=True)
    task = stream[0]
    assert torch.equal(task.train.classes, task.test.classes)  # the same classes, other drawings
    assert len(task.train) == len(task.train.classes) * 14 and len(task.test) == len(task.test.classes) * 6
    assert "+" in task.name


def test_alphabets_parameter_errors(data_root):
    with pytest.raises(ValidationError, match="exceeds the 20 alphabets"):
        scenarios.family("omniglot-alphabets").params(alphabets="evaluation", num_tasks=11, alphabets_per_task=2)
    with pytest.raises(ValidationError, match="held-out drawers"):
        scenarios.family("omniglot-alphabets").params(holdout="drawers", shots=1, query=10)
    with pytest.raises(ScenarioError, match="fewer than ways = 20"):
        build("omniglot-alphabets", data_root, num_tasks=1, ways=20, query=5)
