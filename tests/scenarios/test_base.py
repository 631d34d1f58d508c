"""Episodes, pools and tasks: shapes, disjointness, labels, masks and seeded determinism."""

import pytest
import torch

from scenarios.base import GroupedPool, LabelledPool, Task
from scenarios.registry import Registry
from scenarios.rng import generator


def toy_pool(per_class=(6, 8, 7, 9)):
    x = torch.cat([torch.full((n, 2), float(c)) + torch.arange(n).unsqueeze(1) / 100
                   for c, n in enumerate(per_class)])
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    return LabelledPool(x, y)


def test_all_way_episodes_have_every_class_with_k_shots_and_disjoint_query():
    pool = toy_pool()
    eps = pool.sample(10, shots=2, query=3, generator=generator(0))
    assert eps.support_x.shape == (10, 8, 2) and eps.query_y.shape == (10, 12)
    for e in range(10):
        for c in range(4):
            assert int((eps.support_y[e] == c).sum()) == 2 and int((eps.query_y[e] == c).sum()) == 3
        s = {tuple(r.tolist()) for r in eps.support_x[e]}
        q = {tuple(r.tolist()) for r in eps.query_x[e]}
        assert len(s) == 8 and len(q) == 12 and not s & q
        # labels belong to their inputs (the class is the integer part of x)
        assert torch.equal(eps.support_x[e, :, 0].floor().long(), eps.support_y[e])


def test_few_shot_episodes_choose_ways_and_relabel():
    pool = toy_pool()
    eps = pool.sample(50, shots=1, query=2, generator=generator(1), ways=2, relabel=True)
    assert set(eps.support_y.unique().tolist()) == {0, 1}
    true_class = eps.support_x[:, :, 0].floor().long()
    # the same original class maps to one label within an episode, and classes vary across episodes
    assert (true_class[:, 0] != true_class[:, 1]).all()
    assert len({tuple(r.tolist()) for r in true_class}) > 3


def test_sampling_is_a_function_of_the_generator_seed():
    pool = toy_pool()
    a = pool.sample(5, 2, 2, generator(3), ways=3)
    b = pool.sample(5, 2, 2, generator(3), ways=3)
    c = pool.sample(5, 2, 2, generator(4), ways=3)
    assert torch.equal(a.query_x, b.query_x) and not torch.equal(a.query_x, c.query_x)


def test_too_few_examples_is_a_clear_error():
    with pytest.raises(ValueError, match="class 0 has 6 examples; an episode needs 7 per class"):
        toy_pool().sample(1, shots=3, query=4, generator=generator(0))
    with pytest.raises(ValueError, match="5-way episodes need 5 classes; the pool has 4"):
        toy_pool().sample(1, 1, 1, generator(0), ways=5)


def test_grouped_pool_episodes_stay_within_one_function():
    x = torch.arange(4 * 10, dtype=torch.float32).reshape(4, 10, 1)
    y = torch.arange(4).repeat_interleave(10).reshape(4, 10, 1).float()   # y = group id
    eps = GroupedPool(x, y).sample(20, shots=3, query=4, generator=generator(0))
    assert eps.support_x.shape == (20, 3, 1) and eps.query_y.shape == (20, 4, 1)
    group = eps.support_y[:, :1, 0]
    assert (eps.support_y[..., 0] == group).all() and (eps.query_y[..., 0] == group).all()
    for e in range(20):
        pts = eps.support_x[e].flatten().tolist() + eps.query_x[e].flatten().tolist()
        assert len(set(pts)) == 7


def test_task_incremental_mask_and_training_view():
    pool = toy_pool()
    task = Task(id=0, name="t", classes=(1, 3), train=pool, test=pool, protocol="task-incremental",
                output_size=4)
    assert task.mask.tolist() == [False, True, False, True]
    eps = task.episodes("test", 2, 1, 1, generator(0))
    assert torch.equal(eps.mask, task.mask) and torch.equal(eps.support.mask, task.mask)
    view = task.training_view()
    assert view.test is None and view.train is pool
    with pytest.raises(ValueError, match="has no test data in this view"):
        view.episodes("test", 1, 1, 1, generator(0))
    ci = Task(id=0, name="t", classes=(1, 3), train=pool, test=pool, protocol="class-incremental", output_size=4)
    assert ci.mask is None


def test_registry_lists_valid_names_and_imports_lazily():
    reg = Registry("thing", {"a": "math:pi"})
    reg.register("b", 2)
    assert reg.get("a") == pytest.approx(3.14159, rel=1e-5) and reg.get("b") == 2
    with pytest.raises(KeyError, match="unknown thing 'c'; valid: a, b"):
        reg.get("c")


def test_image_pool_hands_out_an_empty_batch_without_calling_the_transform():
    # the rotation and permutation transforms refuse N = 0 (affine_grid, reshape(0, -1)), and
    # the evaluator's full_test columns ask for empty query sets
    from scenarios.base import ImagePool
    from scenarios.mnist import rotation

    pool = ImagePool(torch.full((3, 1, 28, 28), 255, dtype=torch.uint8), torch.tensor([0, 1, 1]),
                     transform=rotation(30.0))
    empty = pool.to_float(torch.zeros((2, 0, 1, 28, 28), dtype=torch.uint8))
    assert empty.shape == (2, 0, 1, 28, 28) and empty.dtype == torch.float32
    assert pool.to_float(pool.x[:1]).shape == (1, 1, 28, 28)
