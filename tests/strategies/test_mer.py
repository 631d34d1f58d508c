"""``mer`` (Meta-Experience Replay, Riemer et al. 2019): one update against a reference written
from Algorithm 1, one step against avalanche-lib's MER, mid-stream resume, the CLI. (Generic determinism and
state_dict round trips: tests/test_conformance.py.)"""

import copy
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import scenarios
import strategies
from scenarios.base import StreamSpec

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = StreamSpec(name="toy", kind="classification", protocol="class-incremental", input_shape=(4,),
                  output_size=3, num_tasks=1, shots=2, query=2)


def toy_model(plain: bool = True) -> nn.Module:
    """A float64 MLP 4-6-5-3; ``plain``: an nn.Sequential (the strategy's hand-written steps),
    else the same layers inside another module (autograd's steps)."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    return net if plain else Wrapped(net)


class Wrapped(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


# -- the reference: Algorithm 1 written out, parameters as a list [W1, b1, W2, b2, W3, b3] -------------
def _forward(params, x):
    h = x
    for W, b in zip(params[0:-2:2], params[1:-2:2]):
        h = torch.relu(h @ W.T + b)
    return h @ params[-2].T + params[-1]


def _sgd(params, x, y, alpha):
    params = [p.detach().requires_grad_() for p in params]
    loss = F.cross_entropy(_forward(params, x.unsqueeze(0)), y.unsqueeze(0))
    grads = torch.autograd.grad(loss, params)
    return [(p - alpha * g).detach() for p, g in zip(params, grads)]


def reference_mer(theta, xs, ys, memory, draws, alpha, beta, gamma, s):
    """Algorithm 1 on the examples (xs, ys) in turn; ``memory`` a list of (x, y) that each
    example joins after its update (a reservoir with room: appending); ``draws[e][i]`` the
    memory indices of batch i of example e (the batch: the example, then those memories)."""
    memory = list(memory)
    for e, (x, y) in enumerate(zip(xs, ys)):
        theta_A0 = theta
        for i in range(s):
            batch = [(x, y)] + [memory[j] for j in draws[e][i]]
            theta_W0 = theta
            for x_c, y_c in batch:
                theta = _sgd(theta, x_c, y_c, alpha)
            theta = [w0 + beta * (w - w0) for w0, w in zip(theta_W0, theta)]     # within-batch Reptile
        theta = [a0 + gamma * (a - a0) for a0, a in zip(theta_A0, theta)]         # across-batch Reptile
        memory.append((x, y))
    return theta


def _spy_draws(strategy):
    recorded, draw = [], strategy.draw_memories

    def spy(*args):
        out = draw(*args)
        recorded.append(out.clone())
        return out
    strategy.draw_memories = spy
    return recorded


@pytest.mark.parametrize("plain", [True, False], ids=["hand-written-steps", "autograd-steps"])
@pytest.mark.parametrize("prefill", [0, 7])
def test_one_update_matches_algorithm_1(prefill, plain):
    model = toy_model(plain)
    theta = [p.detach().clone() for p in model.parameters()]
    options = dict(lr=0.1, beta=0.3, gamma=0.7, batches_per_example=3, replay_batch_size=4, memory_size=50)
    strategy = strategies.build("mer", options)
    strategy.setup(model, SPEC, "cpu", seed=0)
    assert (strategy._layers is not None) == plain
    mx, my = toy_data(prefill, seed=1)
    if prefill:
        strategy.memory.add(mx, my)   # room to spare: stored in order, no random draw
    recorded = _spy_draws(strategy)
    x, y = toy_data(4, seed=2)
    strategy.observe(x, y)

    assert len(recorded) == 4 and all(d.shape[0] == 3 for d in recorded)
    assert [d.shape[1] for d in recorded] == [min(3, prefill + e) for e in range(4)]
    assert all(len(set(row.tolist())) == len(row) for d in recorded for row in d)   # distinct memories
    expected = reference_mer(theta, x, y, list(zip(mx, my)), [d.tolist() for d in recorded],
                             0.1, 0.3, 0.7, 3)
    for p, q in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=1e-10)
    assert not torch.equal(expected[0], theta[0])
    assert len(strategy.memory) == prefill + 4


@pytest.mark.parametrize("plain", [True, False], ids=["hand-written-steps", "autograd-steps"])
def test_full_memory_update_matches_algorithm_1(plain):
    """With a full reservoir the memory seen by each example is the buffer's at that time."""
    model = toy_model(plain)
    theta = [p.detach().clone() for p in model.parameters()]
    strategy = strategies.build("mer", dict(lr=0.05, beta=0.5, gamma=0.5, batches_per_example=2,
                                            replay_batch_size=3, memory_size=5))
    strategy.setup(model, SPEC, "cpu", seed=4)
    strategy.memory.add(*toy_data(9, seed=5))
    snapshots, update = [], strategy._update

    def spy(ux, uy):
        snapshots.append(list(zip(strategy.memory.x.clone(), strategy.memory.y.clone())))
        return update(ux, uy)
    strategy._update = spy
    recorded = _spy_draws(strategy)
    x, y = toy_data(3, seed=6)
    strategy.observe(x, y)
    for e in range(3):
        theta = reference_mer(theta, x[e:e + 1], y[e:e + 1], snapshots[e], [recorded[e].tolist()],
                              0.05, 0.5, 0.5, 2)
    for p, q in zip(model.parameters(), theta):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=1e-10)


def test_unit_batch_matches_avalanche_mer_step():
    """avalanche-lib's MER (0.6) on two experiences of 5 examples, one minibatch each: each of its
    ``n_inner_steps`` batches is the minibatch then ``batch_size_mem`` memories, one SGD step per
    item, Reptile with beta within and gamma across; its memory takes the experience after
    training. Ours with ``unit = "batch"`` and the same memory draws ends on the same weights."""
    pytest.importorskip("avalanche")
    from avalanche.benchmarks.scenarios import benchmark_from_datasets, with_task_labels
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import mer as avalanche_mer

    from scenarios.avalanche_adapter import _dataset
    from strategies import avalanche_runtime as rt

    lr, beta, gamma, steps, mem = 0.1, 0.3, 0.6, 2, 3
    (x1, y1), (x2, y2) = toy_data(5, seed=7), toy_data(5, seed=8)
    theirs = toy_model()
    ours = copy.deepcopy(theirs)

    buffers = []
    get_batch = avalanche_mer.MERBuffer.get_batch

    def spy(self, x, y, t):
        mixed = get_batch(self, x, y, t)
        buffers.append((mixed[0][len(x):].clone(), mixed[1][len(x):].clone()))
        return mixed
    benchmark = with_task_labels(benchmark_from_datasets(train=[_dataset(x1, y1, 0), _dataset(x2, y2, 0)],
                                                         test=[_dataset(x1, y1, 0), _dataset(x2, y2, 0)]))
    with rt.quiet(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(avalanche_mer.MERBuffer, "get_batch", spy)
        cl = avalanche_mer.MER(model=theirs, optimizer=torch.optim.SGD(theirs.parameters(), lr=lr),
                               mem_size=50, batch_size_mem=mem, n_inner_steps=steps, beta=beta, gamma=gamma,
                               train_mb_size=5, train_epochs=1, evaluator=EvaluationPlugin(loggers=[]))
        after_first = None
        for experience in benchmark.train_stream:
            cl.train(experience, eval_streams=[], shuffle=False)
            after_first = after_first or [p.detach().clone() for p in theirs.parameters()]
    assert len(buffers) == 2 * steps and buffers[0][0].shape[0] == 0 and buffers[-1][0].shape[0] == mem

    strategy = strategies.build("mer", dict(lr=lr, beta=beta, gamma=gamma, batches_per_example=steps,
                                            replay_batch_size=mem + 1, memory_size=50, unit="batch"))
    strategy.setup(ours, SPEC, "cpu", seed=0)
    calls = iter([buffers[:steps], buffers[steps:]])

    def same_draws(batches, per_batch):   # the slots of our memory holding avalanche's drawn examples
        drawn = next(calls)
        if len(strategy.memory) == 0:
            return torch.zeros(batches, 0, dtype=torch.long)
        slots = [[int((strategy.memory.x[:len(strategy.memory)] == row).all(1).nonzero()) for row in bx]
                 for bx, _ in drawn]
        return torch.tensor(slots)
    strategy.draw_memories = same_draws
    strategy.observe(x1, y1)
    for p, q in zip(ours.parameters(), after_first):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=1e-10)
    strategy.observe(x2, y2)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-10)


def test_hand_written_tanh_steps_equal_autograd_steps():
    ends = []
    for plain in (True, False):
        torch.manual_seed(3)
        net = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
        model = net if plain else Wrapped(net)
        strategy = strategies.build("mer", dict(lr=0.2, beta=0.4, gamma=0.8, batches_per_example=2,
                                                replay_batch_size=3, memory_size=4))
        strategy.setup(model, SPEC, "cpu", seed=0)
        assert (strategy._layers is not None) == plain
        for b in range(3):
            strategy.observe(*toy_data(3, seed=30 + b))
        ends.append([p.detach() for p in model.parameters()])
    for p, q in zip(*ends):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-10)


def test_resumes_mid_stream_bit_identical(interrupted_online_run):
    from simulator.evaluator import EvalSettings
    from simulator.online import OnlineSettings

    stream = scenarios.build("online", {"source": "split-digits", "source_params": {"num_tasks": 2},
                                        "examples_per_task": 40}, seed=0)
    params = dict(batches_per_example=2, replay_batch_size=3, memory_size=20)

    def fresh():
        strategy = strategies.build("mer", params)
        torch.manual_seed(0)
        return strategy, strategies.build_model("mlp", {"hidden": [8]}, strategy.model_spec(stream.spec))

    settings, online = EvalSettings(episodes=2, adapt_steps=1), OnlineSettings(eval_every=3)
    clean, resumed = interrupted_online_run(stream, fresh, settings, online, batches=5)
    assert np.isfinite(clean.online["correct"]).all()
    assert resumed.online["correct"].tobytes() == clean.online["correct"].tobytes()
    assert resumed.acc.tobytes() == clean.acc.tobytes() and resumed.loss.tobytes() == clean.loss.tobytes()


def test_cli_run_on_a_tiny_online_stream(tmp_path):
    import json

    from simulator import cli
    exp = tmp_path / "mer.toml"
    exp.write_text(textwrap.dedent("""
        name = "mer-online"
        seeds = [0]

        [scenario]
        name = "online"
        source = "split-digits"
        source_params = { num_tasks = 2 }
        examples_per_task = 30
        batch_size = 10

        [model]
        hidden = [16]

        [evaluation]
        episodes = 2
        adapt_steps = 1

        [online]
        eval_every = 3

        [strategies.mer]
        batches_per_example = 2
        replay_batch_size = 4
        memory_size = 20
    """))
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    run = json.loads((tmp_path / "out" / "results.json").read_text())["runs"][0]
    assert run["strategy"] == "mer" and run["loop"] == "online"
    assert 0 <= run["online"]["cumulative_accuracy"]["total"] <= 1
