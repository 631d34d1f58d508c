"""Prototype memory: prototypes, the memory across tasks, its bound, learning. (Checkpoint round trips:
tests/test_conformance.py.)"""

import pytest
import torch

import scenarios
import strategies
from scenarios.base import LabelledPool, Stream, StreamSpec, Task
from simulator.evaluator import EvalSettings
from simulator.runner import run
from strategies.embedding import fill_absent

pytestmark = pytest.mark.usefixtures("one_thread")


def make(stream, seed=0, **params):
    s = strategies.build("protomemory", {"meta_iterations": 3, "embedding_dim": 8, **params})
    torch.manual_seed(seed)
    s.setup(strategies.build_model("mlp", {"hidden": [16]}, s.model_spec(stream.spec)), stream.spec, "cpu", seed=seed)
    return s


@pytest.fixture(scope="module")
def split():
    return scenarios.build("split-digits", {"num_tasks": 3}, seed=0)


def class_means(model, x, y, classes):
    with torch.no_grad():
        return {c: model(x[y == c]).mean(0) for c in classes}


def test_the_backbone_is_sized_as_the_embedding(split):
    s = make(split, embedding_dim=7)
    assert s.model_spec(split.spec).output_size == 7 and s.model[-1].out_features == 7
    assert s.memory["means"].shape == (10, 7)


def test_support_prototypes_are_the_class_means_of_the_embeddings(split):
    s = make(split)
    eps = split[0].episodes("test", 3, 4, 2, torch.Generator().manual_seed(0))
    states = list(s.adapt(eps.support, 2))
    assert len(states) == 3 and states[2] is states[1]
    for e in range(3):
        for c, mean in class_means(s.model, eps.support_x[e], eps.support_y[e], [0, 1]).items():
            assert torch.allclose(states[1].prototypes[e, c], mean, atol=1e-6)
    assert states[1].present[:, :2].all() and not states[1].present[:, 2:].any()


@pytest.mark.parametrize("embed_batch", [1024, 7])   # the whole task at once, or in uneven batches
def test_memory_holds_running_means_and_persists_across_tasks(split, embed_batch, monkeypatch):
    monkeypatch.setattr("strategies.protomemory.EMBED_BATCH", embed_batch)
    s = make(split)
    x0, y0 = split[0].train.examples()
    s.learn(split[0].training_view())
    after_first = class_means(s.model, x0, y0, [0, 1])
    for c, mean in after_first.items():
        assert torch.allclose(s.memory["means"][c], mean, atol=1e-5)
        assert s.memory["counts"][c] == (y0 == c).sum()
    s.learn(split[1].training_view())
    x1, y1 = split[1].train.examples()
    for c, mean in {**after_first, **class_means(s.model, x1, y1, [2, 3])}.items():
        assert torch.allclose(s.memory["means"][c], mean, atol=1e-5)   # old classes kept as they were
    assert (s.memory["counts"] > 0).tolist() == [True] * 4 + [False] * 6


def test_a_class_seen_again_gets_the_count_weighted_mean_of_both_visits():
    stream = scenarios.build("permuted-digits", {"num_tasks": 2}, seed=0)
    s = make(stream)
    sums = torch.zeros(10, 8)
    for task in stream:
        s.learn(task.training_view())
        x, y = task.train.examples()
        with torch.no_grad():
            sums.index_add_(0, y, s.model(x))
    counts = torch.bincount(torch.cat([t.train.examples()[1] for t in stream]), minlength=10)
    assert torch.equal(s.memory["counts"], counts)
    assert torch.allclose(s.memory["means"], sums / counts.unsqueeze(-1), atol=1e-5)


def test_zero_steps_use_the_memory_alone_and_adaptation_replaces_the_support_classes(split):
    s = make(split)
    s.learn(split[0].training_view())
    s.learn(split[1].training_view())
    eps = split[0].episodes("test", 2, 3, 4, torch.Generator().manual_seed(0))
    state0, state1 = list(s.adapt(eps.support, 1))
    with torch.no_grad():
        q = s.model(eps.query_x.flatten(0, 1)).reshape(2, 8, -1)
    distances = ((q.unsqueeze(2) - s.memory["means"]) ** 2).sum(-1)          # (E, Q, C)
    out = s.predict(state0, eps.query_x)
    assert torch.allclose(out[..., :4], -distances[..., :4], atol=1e-4)
    assert (out[..., 4:] < out[..., :4].amin(-1, keepdim=True)).all()       # unknown classes never win
    for e in range(2):
        means = class_means(s.model, eps.support_x[e], eps.support_y[e], [0, 1])
        assert torch.allclose(state1.prototypes[e, 0], means[0], atol=1e-6)
        assert torch.equal(state1.prototypes[e, 2:4], s.memory["means"][2:4])


def test_fill_absent():
    logits = torch.tensor([[[-3.0, -1.0, -7.0], [-2.0, -9.0, -4.0]]])
    out = fill_absent(logits, torch.tensor([True, False, True]))
    assert out.tolist() == [[[-3.0, -8.0, -7.0], [-2.0, -5.0, -4.0]]]
    assert torch.equal(fill_absent(logits, torch.zeros(3, dtype=torch.bool)), torch.zeros_like(logits))


def test_bound_evicts_the_least_recently_updated_classes_then_those_with_fewer_examples(split):
    def fewer(task, a, b):   # the class evicted first between a and b (a tie evicts the lower index)
        y = split[task].train.examples()[1]
        return a if (y == a).sum() <= (y == b).sum() else b

    def stored():
        return {int(c) for c in torch.nonzero(s.memory["counts"]).flatten()}

    s = make(split, memory_size=3)
    s.learn(split[0].training_view())
    assert stored() == {0, 1}
    s.learn(split[1].training_view())
    evicted = fewer(0, 0, 1)
    assert stored() == {0, 1, 2, 3} - {evicted}
    assert s.memory["means"][evicted].abs().sum() == 0
    s.learn(split[2].training_view())    # classes 4, 5 push out task 0's last class, then one of task 1's
    assert stored() == {4, 5} | ({2, 3} - {fewer(1, 2, 3)})


def few_shot_stream() -> Stream:
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(6, 4, generator=g)
    y = torch.arange(6).repeat_interleave(20)
    x = centres[y] + torch.randn(120, 4, generator=g)
    pool = LabelledPool(x, y)
    spec = StreamSpec("toy", "classification", "few-shot", (4,), 3, 1, shots=2, query=3, ways=3)
    return Stream(spec, (Task(0, "toy", (), pool, pool, "few-shot", 3, ways=3),))


def test_few_shot_episode_labels_never_enter_the_memory():
    stream = few_shot_stream()
    s = make(stream)
    logs = s.learn(stream[0].training_view())
    assert logs["memory_classes"] == 0 and s.memory["counts"].sum() == 0
    eps = stream[0].episodes("test", 2, 2, 3, torch.Generator().manual_seed(0))
    state0, state1 = list(s.adapt(eps.support, 1))
    assert torch.equal(s.predict(state0, eps.query_x), torch.zeros(2, 9, 3))
    assert state1.present.all()


def test_regression_streams_are_refused():
    stream = scenarios.build("sinusoid", {"num_tasks": 1, "train_functions": 10, "test_functions": 10}, seed=0)
    with pytest.raises(ValueError, match="regression"):
        make(stream)


def test_protomemory_learns_split_digits():
    stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    s = strategies.build("protomemory", {"meta_iterations": 30, "lr": 0.003, "embedding_dim": 32})
    torch.manual_seed(0)
    model = strategies.build_model("mlp", {"hidden": [64]}, s.model_spec(stream.spec))
    result = run(stream, s, model, 0, EvalSettings(episodes=10, adapt_steps=1))
    # Right after learning a task, the memory alone recognises its digits (chance: 1/2 at best).
    assert result.acc[1, 0, 0] > 0.9 and result.acc[2, 1, 0] > 0.9
    # Training shapes the embedding: a task's prototype loss falls well below the untrained
    # embedding's (measured: 0.00 and 0.16 against 1.5; a random embedding already separates
    # two digits, so accuracy alone would not show it).
    assert result.loss[1, 0, 1] < 0.5 * result.loss[0, 0, 1] and result.loss[2, 1, 1] < 0.5 * result.loss[0, 1, 1]
    assert result.acc[2, :, 1].mean() > 0.5   # with a support set, at the end (chance: 1/4 of the digits seen)
