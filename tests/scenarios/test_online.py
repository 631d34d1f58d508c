"""Online streams: OSAKA, the switching sinusoid and task streams presented online.

Statistics are checked against the parameters within 4 standard deviations of their sampling
distribution, on metadata alone (no batch is drawn for them).
"""

import hashlib
import math

import numpy as np
import pytest
import torch

import scenarios
from scenarios.base import ScenarioError
from scenarios.online import OnlineFamily, OnlineStream, switching
from scenarios.switching_sinusoid import sine
from simulator.config import ConfigError, validate_experiment

WAYS, SHOTS = 10, 5
RECURRING = {"switch_prob": 0.3, "recur_prob": 0.5}


def batch_hash(batches) -> str:
    h = hashlib.sha256()
    for b in batches:
        for t in (b.x, b.y):
            h.update(t.numpy().tobytes())
        h.update(repr((b.task, b.pool, b.switch)).encode())
    return h.hexdigest()


def within(count: int, n: int, p: float) -> bool:
    """Whether ``count`` successes of ``n`` trials is within 4 sigma of Binomial(n, p)."""
    return abs(count / n - p) <= 4 * math.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def osaka(data_root):
    """The default OSAKA stream (10-way 5-shot, 10000 batches, switch_prob 0.1)."""
    return scenarios.build("osaka", {"data_root": str(data_root)}, seed=0)


@pytest.fixture(scope="module")
def recurring(data_root):
    return scenarios.build("osaka", {"data_root": str(data_root), **RECURRING}, seed=0)


class ImageClasses:
    """Finds the class (pool label) of an image of an OSAKA stream, by a hash of its pixels."""

    def __init__(self, stream: OnlineStream):
        self.weights = torch.randint(0, 2**31, (28 * 28,), generator=torch.Generator().manual_seed(0))
        self.train = [self._lookup(c.train.x, c.train.y) for c in stream.columns]
        self.test = [set(self._lookup(c.test.x, c.test.y)) for c in stream.columns]

    def keys(self, x: torch.Tensor) -> list[int]:
        images = x if x.dtype == torch.uint8 else (x * 255).round().to(torch.uint8)
        return (images.flatten(1).long() @ self.weights).tolist()

    def _lookup(self, x, y) -> dict[int, int]:
        return dict(zip(self.keys(x), y.tolist()))

    def label_classes(self, batch) -> tuple[int, ...]:
        """The class of each label 0..N-1 of a batch, checking that a label is one class."""
        keys = self.keys(batch.x)
        assert all(k in self.train[batch.pool] for k in keys)          # from the stream's pool...
        assert not set(keys) & self.test[batch.pool]                    # ...never a held-out image
        out = []
        for label in range(WAYS):
            classes = {self.train[batch.pool][k] for k, y in zip(keys, batch.y.tolist()) if y == label}
            assert len(classes) == 1, (label, classes)
            out.append(classes.pop())
        return tuple(out)


# -- OSAKA ---------------------------------------------------------------------------------------

def test_osaka_is_deterministic_random_access_and_prefix_stable(recurring, data_root):
    short = scenarios.build("osaka", {"data_root": str(data_root), **RECURRING, "length": 40}, seed=0)
    batches = list(short.batches())
    assert len(batches) == 40
    # A shorter stream is the beginning of a longer one with the same parameters and seed.
    assert batch_hash(batches) == batch_hash(recurring.batch(t) for t in range(40))
    for t in (0, 17, 39):
        assert batch_hash([short.batch(t)]) == batch_hash([batches[t]])
    assert batch_hash(short.batches(25)) == batch_hash(batches[25:])
    other = scenarios.build("osaka", {"data_root": str(data_root), **RECURRING, "length": 40}, seed=1)
    assert batch_hash(other.batches()) != batch_hash(batches)
    with pytest.raises(IndexError):
        short.batch(40)


def test_osaka_spec_columns_and_pretraining(osaka):
    assert isinstance(scenarios.family("osaka"), OnlineFamily) and isinstance(osaka, OnlineStream)
    spec = osaka.spec
    assert (spec.kind, spec.protocol, spec.input_shape, spec.output_size, spec.ways, spec.num_tasks) == (
        "classification", "few-shot", (1, 28, 28), WAYS, WAYS, 3)
    assert osaka.pools == osaka.column_names == ("omniglot", "mnist", "fashion-mnist")
    assert osaka.boundaries == "hidden" and len(osaka) == 10000
    assert [c.id for c in osaka.columns] == [0, 1, 2]
    # Omniglot: 659 evaluation characters, 30% (rounded up) held out for the column.
    assert (len(osaka.columns[0].train.classes), len(osaka.columns[0].test.classes)) == (461, 198)
    assert [len(c.test) for c in osaka.columns[1:]] == [10000, 10000]    # the official test sets
    gen = torch.Generator().manual_seed(0)
    for column in osaka.columns:
        eps = column.episodes("test", 2, SHOTS, 15, gen)
        assert tuple(eps.support_x.shape) == (2, WAYS * SHOTS, 1, 28, 28)
        assert sorted(eps.support_y[0].unique().tolist()) == list(range(WAYS))
    # Pre-training: the 964 background characters, 100 of them held out.
    (task,) = tuple(osaka.pretrain)
    assert (len(task.train.classes), len(task.test.classes), task.protocol, task.ways) == (864, 100, "few-shot", WAYS)
    evaluation = {tuple(x.flatten().tolist()) for x in osaka.columns[0].train.x[::20]}
    assert not evaluation & {tuple(x.flatten().tolist()) for x in task.train.x[::20]}


def test_osaka_batch_holds_k_examples_of_each_of_n_classes(osaka):
    classes = ImageClasses(osaka)
    meta = osaka.meta()
    for pool in range(3):
        for t in np.flatnonzero(meta["pool"] == pool)[:3].tolist():
            b = osaka.batch(t)
            assert b.pool == pool and b.x.dtype == torch.float32 and tuple(b.x.shape) == (WAYS * SHOTS, 1, 28, 28)
            assert 0 <= float(b.x.min()) and float(b.x.max()) <= 1
            assert torch.bincount(b.y, minlength=WAYS).tolist() == [SHOTS] * WAYS    # labels 0..N-1, K each
            assert len(set(classes.keys(b.x))) == WAYS * SHOTS                       # distinct images
            assert len(set(classes.label_classes(b))) == WAYS                        # N distinct classes


def test_osaka_switch_rate_and_pool_shares_match_the_parameters(osaka, data_root):
    for stream, p in ((osaka, 0.1), (scenarios.build("osaka", {"data_root": str(data_root), "switch_prob": 0.02}, 1), 0.02)):
        meta = stream.meta()
        L = len(stream)
        assert meta["switch"][0] and within(int(meta["switch"][1:].sum()), L - 1, p)
        starts = np.flatnonzero(meta["switch"])
        for pool, q in enumerate((0.5, 0.25, 0.25)):
            assert within(int((meta["pool"][starts] == pool).sum()), len(starts), q)   # a pool per task...
            # ...and per batch: runs of geometric length make the share vary more than a binomial's
            # (renewal-reward variance of a ratio: (2 - p) q (1 - q) / (p L)).
            share = float((meta["pool"] == pool).mean())
            assert abs(share - q) <= 4 * math.sqrt((2 - p) * q * (1 - q) / (p * L))
        # Without recurrence every switch is a new task, numbered by first appearance.
        assert meta["task"][starts].tolist() == list(range(len(starts)))
        assert (meta["task"] == np.cumsum(meta["switch"]) - 1).all()


def test_osaka_recurrence_rate(recurring):
    meta = recurring.meta()
    seen: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    pool_of: dict[int, int] = {}
    eligible = recurred = 0
    for t in np.flatnonzero(meta["switch"]).tolist():
        task, pool = int(meta["task"][t]), int(meta["pool"][t])
        candidates = seen[pool] - ({int(meta["task"][t - 1])} if t else set())
        if task in pool_of:                       # a recurrence: an earlier task of this pool, not the current one
            assert task in candidates and pool_of[task] == pool
            recurred += 1
        else:
            assert task == len(pool_of)           # a new task takes the next id
        eligible += bool(candidates)
        seen[pool].add(task)
        pool_of[task] = pool
    assert within(recurred, eligible, RECURRING["recur_prob"])
    stay = np.flatnonzero(~meta["switch"])
    assert (meta["task"][stay] == meta["task"][stay - 1]).all()          # no switch, no change of task


def test_osaka_recurring_task_has_the_same_classes_and_labels(recurring):
    classes = ImageClasses(recurring)
    meta = recurring.meta()
    starts = np.flatnonzero(meta["switch"])
    first, again = {}, {}
    for t in starts[:80].tolist():
        (again if int(meta["task"][t]) in first else first).setdefault(int(meta["task"][t]), t)
    assert len(again) >= 5
    for task, t in list(again.items())[:5]:
        b0, b1 = recurring.batch(first[task]), recurring.batch(t)
        assert b1.switch and b1.task == b0.task and b1.pool == b0.pool
        assert classes.label_classes(b1) == classes.label_classes(b0)
        assert set(classes.keys(b1.x)) != set(classes.keys(b0.x))         # the same task, new images
    # Two new tasks of a pool differ (for MNIST's ten classes: in their labels).
    news = {}
    for task, t in first.items():
        news.setdefault(int(meta["pool"][t]), []).append(t)
    for ts in news.values():
        a, b = recurring.batch(ts[0]), recurring.batch(ts[1])
        assert classes.label_classes(a) != classes.label_classes(b)


# -- switching sinusoid --------------------------------------------------------------------------

def _fit_sine(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Amplitude and phase of ``y = A sin(x + phi)`` by least squares (A sin(x + phi) = a sin x + b cos x)."""
    x64, y64 = x.double().flatten(), y.double().flatten()
    a, b = torch.linalg.lstsq(torch.stack([x64.sin(), x64.cos()], 1), y64[:, None]).solution.flatten().tolist()
    return math.hypot(a, b), math.atan2(b, a)


def test_switching_sinusoid_hazard_rate_and_sines():
    stream = scenarios.build("switching-sinusoid", {"hazard": 0.05, "recur_prob": 0.5, "batch_size": 8}, seed=3)
    meta = stream.meta()
    assert meta["switch"][0] and within(int(meta["switch"][1:].sum()), len(stream) - 1, 0.05)
    assert (stream.spec.kind, stream.pools, stream.column_names) == ("regression", ("sine",), ("sine",))
    fits: dict[int, tuple[float, float]] = {}
    for t in range(300):
        b = stream.batch(t)
        assert tuple(b.x.shape) == tuple(b.y.shape) == (8, 1) and float(b.x.abs().max()) <= 5
        amplitude, phase = _fit_sine(b.x, b.y)
        assert 0.1 <= amplitude <= 5 and 0 <= phase <= math.pi
        if b.task in fits:                        # the same sine throughout a task and when it recurs
            assert fits[b.task] == pytest.approx((amplitude, phase), abs=1e-4)
        fits[b.task] = (amplitude, phase)
    assert len(fits) > 5 and len({round(a, 4) for a, _ in fits.values()}) == len(fits)
    assert sum(bool(s) for s in meta["switch"][:300]) > len(fits)         # some sines recurred
    assert fits[0] == pytest.approx(sine(0, scenarios.family("switching-sinusoid").params(), 3), abs=1e-4)
    twin = scenarios.build("switching-sinusoid", {"hazard": 0.05, "recur_prob": 0.5, "batch_size": 8}, seed=3)
    assert batch_hash(twin.batch(t) for t in range(50)) == batch_hash(stream.batch(t) for t in range(50))
    (task,) = tuple(stream.pretrain)
    assert task.test is stream.columns[0].test and len(task.train) == 1000 * 50


# -- task streams online -------------------------------------------------------------------------

def test_online_presents_each_training_example_once_in_task_order():
    source = scenarios.build("split-digits", {"num_tasks": 3}, seed=2)
    stream = scenarios.build("online", {"source": "split-digits", "source_params": {"num_tasks": 3},
                                        "batch_size": 7, "boundaries": "given"}, seed=2)
    assert stream.spec == source.spec and stream.pools == ("tasks",) and stream.boundaries == "given"
    assert stream.column_names == tuple(t.name for t in source) and stream.pretrain is None
    batches = list(stream.batches())
    meta = stream.meta()
    sizes = [math.ceil(len(t.train) / 7) for t in source]
    assert len(stream) == sum(sizes)
    assert meta["task"].tolist() == [i for i, n in enumerate(sizes) for _ in range(n)]
    assert np.flatnonzero(meta["switch"]).tolist() == [0, sizes[0], sizes[0] + sizes[1]]
    assert [b.task for b in batches] == meta["task"].tolist() and {b.pool for b in batches} == {0}
    for i, task in enumerate(source):
        played = [b for b in batches if b.task == i]
        x = torch.cat([b.x for b in played])
        y = torch.cat([b.y for b in played])
        tx, ty = task.train.examples()
        rows = lambda x, y: sorted(map(tuple, torch.cat([x.flatten(1), y[:, None].float()], 1).tolist()))  # noqa: E731
        assert rows(x, y) == rows(tx, ty)                                # every example exactly once
        assert not torch.equal(y, ty)                                    # shuffled
        assert all(len(b.y) == 7 for b in played[:-1])
    assert batch_hash(stream.batches(5)) == batch_hash(batches[5:])


def test_online_examples_per_task_is_a_seeded_subset():
    params = {"source": "split-digits", "source_params": {"num_tasks": 2}, "batch_size": 10, "examples_per_task": 25}
    stream = scenarios.build("online", params, seed=0)
    assert len(stream) == 6 and [len(stream.batch(t).y) for t in range(3)] == [10, 10, 5]
    x = torch.cat([stream.batch(t).x for t in range(3)]).flatten(1)
    assert len({tuple(r) for r in x.tolist()}) == 25
    assert batch_hash(stream.batches()) == batch_hash(scenarios.build("online", params, seed=0).batches())
    assert batch_hash(stream.batches()) != batch_hash(scenarios.build("online", params, seed=1).batches())
    with pytest.raises(ScenarioError, match="examples_per_task = 5000 exceeds"):
        scenarios.build("online", {**params, "examples_per_task": 5000}, seed=0)


def test_online_mer_mnist_permutations_and_rotations(data_root):
    for source, extra in (("permuted-mnist", {}), ("rotated-mnist", {"test_per_task": 500})):
        stream = scenarios.build("online", {"source": source, "source_params": {"data_root": str(data_root), **extra}}, 0)
        meta = stream.meta()
        assert len(stream) == 20 * 100 and int(meta["switch"].sum()) == 20 and len(stream.columns) == 20
        assert stream.spec.protocol == "domain-incremental" and stream.boundaries == "hidden"
        b = stream.batch(150)
        assert (b.task, b.switch, tuple(b.x.shape), b.y.dtype) == (1, False, (10, 1, 28, 28), torch.int64)


def test_online_refuses_few_shot_sources():
    with pytest.raises(ScenarioError, match="few-shot"):
        scenarios.build("online", {"source": "sinusoid"}, seed=0)


# -- bad parameters ------------------------------------------------------------------------------

def problems(scenario: dict) -> list[tuple[str, str]]:
    """The (field path, message) problems of an experiment file with this [scenario] table."""
    with pytest.raises(ConfigError) as err:
        validate_experiment({"name": "t", "scenario": scenario, "strategies": {"finetune": {}}}, "t.toml")
    return err.value.problems


def test_bad_osaka_parameters_are_named():
    assert problems({"name": "osaka", "pool_probs": [0.5, 0.3, 0.3]}) == [
        ("scenario.pool_probs", "must sum to 1, got [0.5, 0.3, 0.3] (sum 1.1)")]
    assert problems({"name": "osaka", "pools": ["omniglot", "mnist"]}) == [
        ("scenario.pool_probs", "has 3 entries but pools has 2; give one probability per pool")]
    assert problems({"name": "osaka", "pools": ["omniglot", "cifar"], "pool_probs": [0.5, 0.5]}) == [
        ("scenario.pools", "unknown pool 'cifar' (valid: omniglot, mnist, fashion-mnist)")]
    assert problems({"name": "osaka", "pool_probs": [1.5, -0.25, -0.25]}) == [
        ("scenario.pool_probs", "must be >= 0, got [1.5, -0.25, -0.25]")]
    assert problems({"name": "osaka", "ways": 20}) == [
        ("scenario", "ways = 20 exceeds the 10 classes of MNIST and Fashion-MNIST")]
    assert problems({"name": "switching-sinusoid", "hazard": 1.5}) == [("scenario.hazard", "must be <= 1.0")]


def test_bad_online_parameters_are_named():
    [(path, message)] = problems({"name": "online", "source": "nope"})
    assert path == "scenario.source" and message.startswith("unknown scenario 'nope'; valid: ")
    assert problems({"name": "online", "source": "osaka"})[0][1].startswith("'osaka' is already an online stream")
    assert problems({"name": "online", "source": "permuted-mnist", "source_params": {"num_tasks": 0}}) == [
        ("scenario.source_params.num_tasks", "must be > 0")]
    assert problems({"name": "online", "source": "permuted-mnist", "source_params": {"train_per_task": -1}}) == [
        ("scenario.source_params.train_per_task", "must be > 0")]
    [(path, message)] = problems({"name": "online", "source": "split-digits", "source_params": {"bogus": 1}})
    assert path == "scenario.source_params.bogus" and message.startswith("unknown key (valid keys: num_tasks, ")
    assert problems({"name": "online", "source": "split-mnist", "source_params": {"num_tasks": 6}}) == [
        ("scenario.source_params", "num_tasks * classes_per_task = 12 exceeds the 10 classes")]
    assert problems({"name": "online", "source": "schedule"}) == [("scenario.source_params.parts", "required")]


USER_STREAM = """
import torch
from scenarios.custom import from_tensors

def blobs(num_tasks: int = 2, scale: float | list[float] = 1.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(num_tasks):
        x, y = torch.randn(20, 3, generator=gen), torch.arange(2).repeat(10) + 2 * t
        tasks.append((x, y, x, y))
    return from_tensors(tasks)
"""


def test_online_user_stream_and_its_union_parameters(module_in_cwd):
    module = module_in_cwd(USER_STREAM, "user_online")
    stream = scenarios.build("online", {"source": f"{module}:blobs", "batch_size": 8}, seed=0)
    assert [len(b.y) for b in stream.batches()] == [8, 8, 4] * 2 and len(stream.columns) == 2
    # One error per union-typed field, located without pydantic's member type name.
    assert problems({"name": "online", "source": f"{module}:blobs", "source_params": {"scale": "big"}}) == [
        ("scenario.source_params.scale", "must be a number, got 'big'")]
    assert problems({"name": "online", "source": f"{module}:blobs", "source_params": {"scale": [1.0, "x"]}}) == [
        ("scenario.source_params.scale.1", "must be a number, got 'x'")]


def test_switching_metadata_of_the_helper():
    short, long = switching(100, 0.3, (0.2, 0.8), 0.4, seed=5), switching(9000, 0.3, (0.2, 0.8), 0.4, seed=5)
    for name in ("task", "pool", "switch"):
        assert (getattr(long, name)[:100] == getattr(short, name)).all()
    assert (long.task_pool[long.task] == long.pool).all()
    assert switching(50, 0.0, (1.0,), 0.0, seed=0).switch.sum() == 1
    assert switching(50, 1.0, (1.0,), 0.0, seed=0).switch.all()
