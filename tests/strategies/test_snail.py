"""SNAIL: causal blocks, queries in one pass, label slots, shapes, learning, mid-task and mid-stream
resume, the CLI. (Generic determinism and state_dict round trips: tests/test_conformance.py.)"""

import hashlib
import json
import textwrap

import numpy as np
import pytest
import torch

import scenarios
import strategies
from scenarios.base import LabelledPool, Stream, StreamSpec, Support, Task
from simulator import cli
from simulator.evaluator import EvalSettings
from simulator.runner import Interrupted, StopRequest, run
from strategies.snail import AttentionBlock, DenseBlock, SnailHead, assign_slots

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"embedding_dim": 8, "key_sizes": [8, 8], "value_sizes": [4, 4], "tc_filters": [6]}


def make(stream, seed=0, **params):
    s = strategies.build("snail", {"meta_iterations": 3, **SMALL, **params})
    torch.manual_seed(seed)
    s.setup(strategies.build_model("mlp", {"hidden": [16]}, s.model_spec(stream.spec)), stream.spec, "cpu", seed=seed)
    return s


def few_shot_stream(ways=3) -> Stream:
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(8, 4, generator=g)
    y = torch.arange(8).repeat_interleave(20)
    pool = LabelledPool(centres[y] + torch.randn(160, 4, generator=g), y)
    spec = StreamSpec("toy", "classification", "few-shot", (4,), ways, 1, shots=2, query=3, ways=ways)
    return Stream(spec, (Task(0, "toy", (), pool, pool, "few-shot", ways, ways=ways),))


@pytest.fixture(scope="module")
def split():
    return scenarios.build("split-digits", {"num_tasks": 2}, seed=0)


@pytest.fixture
def head():
    torch.manual_seed(0)
    return SnailHead(features=5, slots=3, key_sizes=[6, 7, 5], value_sizes=[3, 4, 2], tc_filters=[4, 5], depth=3)


# -- the network --------------------------------------------------------------------------------

def test_the_default_architecture_is_the_papers_omniglot_network(split):
    s = strategies.build("snail", {})
    fewshot = StreamSpec("toy", "classification", "few-shot", (1, 28, 28), 5, 1, shots=1, query=5, ways=5)
    torch.manual_seed(0)
    s.setup(strategies.build_model("conv4", {"filters": 4}, s.model_spec(fewshot)), fewshot, "cpu")
    kinds = [type(b) for b in s.head.blocks]
    # T = 5 * 1 + 1 = 6 items: ceil(log2 6) = 3 dense blocks per TC block, dilations 2, 4, 8
    assert kinds == [AttentionBlock, *[DenseBlock] * 3, AttentionBlock, *[DenseBlock] * 3, AttentionBlock]
    assert [b.dilation for b in s.head.blocks if isinstance(b, DenseBlock)] == [2, 4, 8, 2, 4, 8]
    attention = [b for b in s.head.blocks if isinstance(b, AttentionBlock)]
    assert [(a.key.out_features, a.value.out_features) for a in attention] == [(64, 32), (256, 128), (512, 256)]
    assert s.head.blocks[0].key.in_features == 64 + 5                    # the embedding and the one-hot label
    assert s.head.output.in_features == 64 + 5 + 32 + 3 * 128 + 128 + 3 * 128 + 256
    assert s.head.output.out_features == 5 and s.model_spec(fewshot).output_size == 64
    assert make(split).slots == 10                                        # global labels: one slot per class


def test_a_sequence_item_never_sees_later_items(head):
    x = torch.randn(2, 6, 8)
    out, _ = head.sequence(x)
    for t in range(5):
        later = x.clone()
        later[:, t + 1:] = torch.randn(2, 5 - t, 8)
        changed, _ = head.sequence(later)
        assert torch.equal(changed[:, :t + 1], out[:, :t + 1])             # bit for bit
        assert not torch.equal(changed[:, t + 1:], out[:, t + 1:])


def test_each_query_is_the_last_item_after_the_support_set(head):
    support, queries = torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    together = head.queries(queries, head.condition(support))
    for i in range(4):
        alone, _ = head.sequence(torch.cat([support, queries[:, i:i + 1]], dim=1))
        torch.testing.assert_close(together[:, i], alone[:, -1], rtol=1e-5, atol=1e-6)


def test_queries_never_see_each_other(head):
    support, queries = torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    memory = head.condition(support)
    out = head.queries(queries, memory)
    others = queries.clone()
    others[:, 1:] = torch.randn(2, 3, 8)
    assert torch.equal(head.queries(others, memory)[:, 0], out[:, 0])     # bit for bit
    # Alone, the same value up to rounding (other shapes take other matrix-product kernels).
    torch.testing.assert_close(head.queries(queries[:, :1], memory)[:, 0], out[:, 0], rtol=1e-6, atol=1e-7)
    assert not torch.equal(head.queries(queries, head.condition(support + 0.1))[:, 0], out[:, 0])


def test_a_support_shorter_than_a_dilation_reads_zeros_at_the_tap():
    torch.manual_seed(0)
    head = SnailHead(features=2, slots=2, key_sizes=[3, 3], value_sizes=[2, 2], tc_filters=[3], depth=4)  # up to 16
    support, queries = torch.randn(1, 3, 4), torch.randn(1, 2, 4)
    out = head.queries(queries, head.condition(support))
    for i in range(2):
        alone, _ = head.sequence(torch.cat([support, queries[:, i:i + 1]], dim=1))
        torch.testing.assert_close(out[:, i], alone[:, -1], rtol=1e-5, atol=1e-6)


def test_slots_in_class_order_or_at_random():
    labels = torch.tensor([[7, 2, 7, 5], [1, 1, 0, 0]])
    slot, present = assign_slots(labels, 8, 3)
    assert present.sum(-1).tolist() == [3, 2]
    assert slot[0, [2, 5, 7]].tolist() == [0, 1, 2] and slot[1, [0, 1]].tolist() == [0, 1]
    drawn, _ = assign_slots(labels, 8, 5, torch.Generator().manual_seed(0))
    for e, classes in enumerate([[2, 5, 7], [0, 1]]):
        assert len(set(drawn[e, classes].tolist())) == len(classes) and drawn[e, classes].max() < 5
    with pytest.raises(ValueError, match="2 label slots, and a support set holds 3 classes"):
        assign_slots(labels, 8, 2)


# -- the strategy -------------------------------------------------------------------------------

def test_states_shapes_and_class_mapping(split):
    s = make(split)
    eps = split[1].episodes("test", 3, 2, 4, torch.Generator().manual_seed(0))
    states = list(s.adapt(eps.support, 2))
    assert len(states) == 3 and states[0] is states[1] is states[2]       # conditioned from k = 0
    out = s.predict(states[0], eps.query_x)
    assert out.shape == (3, 8, 10)
    present = out[..., 2:4]
    assert (out[..., [0, 1, *range(4, 10)]] < present.amin(-1, keepdim=True)).all()   # absent classes never win
    slot_logits = s.slot_logits(states[0], eps.query_x)                  # digits 2, 3 -> slots 0, 1
    assert torch.equal(present, slot_logits[..., :2])


def test_a_query_prediction_ignores_the_other_queries():
    stream = few_shot_stream()
    s = make(stream)   # an MLP embedding: no BatchNorm couples the queries
    eps = stream[0].episodes("test", 2, 2, 3, torch.Generator().manual_seed(1))
    state = next(iter(s.adapt(eps.support, 0)))
    out = s.predict(state, eps.query_x)
    assert out.shape == (2, 9, 3)
    others = eps.query_x.clone()
    others[:, 1:] = torch.randn_like(others[:, 1:])
    assert torch.equal(s.predict(state, others)[:, 0], out[:, 0])
    moved = eps.support_x.clone()
    moved[:, -1] += 1.0
    state2 = next(iter(s.adapt(Support(moved, eps.support_y), 0)))
    assert not torch.equal(s.predict(state2, eps.query_x)[:, 0], out[:, 0])


def test_a_full_test_k0_call_is_refused_with_a_message(split):
    s = make(split)
    eps = split[0].episodes("test", 3, 2, 2, torch.Generator().manual_seed(0))
    state = next(iter(s.adapt(eps.support, 0)))
    with pytest.raises(ValueError, match="full_test"):
        s.predict(state, eps.query_x[:1])


def test_snail_learns_a_few_shot_stream():
    stream = few_shot_stream()
    s = strategies.build("snail", {"meta_iterations": 250, "meta_batch_size": 8, "lr": 0.003, **SMALL})
    torch.manual_seed(0)
    model = strategies.build_model("mlp", {"hidden": [32]}, s.model_spec(stream.spec))
    result = run(stream, s, model, 0, EvalSettings(episodes=20, adapt_steps=1))
    assert np.array_equal(result.acc[:, :, 0], result.acc[:, :, 1])      # every k: the same state
    # measured: 0.95 after 250 steps (0.36 after 50: SNAIL first has to find how to read the labels)
    assert result.acc[1, 0, 0] > 0.85 and result.acc[0, 0, 0] < 0.6       # chance: 1/3
    assert result.loss[1, 0, 0] < 0.5 * result.loss[0, 0, 0]


def test_too_few_slots_are_refused(split):
    stream = few_shot_stream(ways=3)
    s = strategies.build("snail", {"slots": 2, **SMALL})
    assert "2 label slots" in s.incompatibility(stream.spec)
    with pytest.raises(ValueError, match="task 'digits 0-1' has 2 classes"):
        make(split, slots=1).learn(split[0].training_view())


def test_regression_streams_are_refused():
    stream = scenarios.build("sinusoid", {"num_tasks": 1, "train_functions": 10, "test_functions": 10}, seed=0)
    assert "classification" in strategies.build("snail", {}).incompatibility(stream.spec)
    with pytest.raises(ValueError, match="regression"):
        make(stream)


def test_online_conditions_on_the_last_observed_batch():
    stream = few_shot_stream()
    s = make(stream)
    x, y = stream[0].train.examples()
    batch, labels = x[:6], torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.equal(s.predict_online(x[6:9]), torch.zeros(3, 3))
    s.observe(batch, labels)
    state = next(iter(s.adapt(Support(batch.unsqueeze(0), labels.unsqueeze(0)), 0)))
    assert torch.equal(s.predict_online(x[6:9]), s.predict(state, x[6:9].unsqueeze(0))[0])


# -- checkpoints ---------------------------------------------------------------

def digest(result, strategy) -> str:
    h = hashlib.sha256(result.acc.tobytes() + result.loss.tobytes())
    state = strategy.state_dict()
    for part in ("model", "head"):
        for name, t in state[part].items():
            h.update(name.encode() + t.contiguous().numpy().tobytes())
    h.update(state["generator"].numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", ["split", "few-shot"])
def test_resume_mid_task_is_bit_identical(tmp_path, split, name, stop_inside_task):
    stream = split if name == "split" else few_shot_stream()
    params = {"meta_iterations": 5, "meta_batch_size": 2, **SMALL}

    def fresh():
        s = strategies.build("snail", params)
        torch.manual_seed(0)
        return s, strategies.build_model("mlp", {"hidden": [16]}, s.model_spec(stream.spec))

    settings = EvalSettings(episodes=3, adapt_steps=1)
    clean_strategy, model = fresh()
    clean = digest(run(stream, clean_strategy, model, 0, settings), clean_strategy)
    checkpoint, stop = tmp_path / "ckpt.pt", StopRequest()
    task = len(stream) - 1
    with pytest.raises(Interrupted, match=f"stopped inside task {task} .* at iteration 2 of 5"):
        run(stream, *fresh(), 0, settings, checkpoint=checkpoint, identity={"test": 1}, stop=stop,
            progress=stop_inside_task(stop, task, 2))
    resumed_strategy, model = fresh()
    resumed = run(stream, resumed_strategy, model, 0, settings, checkpoint=checkpoint, identity={"test": 1},
                  resume=True)
    assert digest(resumed, resumed_strategy) == clean


def test_online_run_resumes_mid_stream_bit_identical(interrupted_online_run):
    from simulator.online import OnlineSettings

    stream = scenarios.build("online", {"source": "split-digits", "source_params": {"num_tasks": 2}}, seed=0)

    def fresh():
        s = strategies.build("snail", {"meta_iterations": 2, **SMALL})
        torch.manual_seed(0)
        return s, strategies.build_model("mlp", {"hidden": [8]}, s.model_spec(stream.spec))

    settings, online = EvalSettings(episodes=3, adapt_steps=1), OnlineSettings(eval_every=15)
    clean, resumed = interrupted_online_run(stream, fresh, settings, online, batches=11)
    assert np.isfinite(clean.online["correct"]).all()
    assert resumed.online["correct"].tobytes() == clean.online["correct"].tobytes()
    assert resumed.acc.tobytes() == clean.acc.tobytes() and resumed.loss.tobytes() == clean.loss.tobytes()


# -- the command line ---------------------------------------------------------------------------

def test_cli_runs_a_tiny_lifelong_omniglot_experiment(tmp_path, data_root):
    exp = tmp_path / "snail.toml"
    exp.write_text(textwrap.dedent(f"""
        name = "snail-tiny"
        seeds = [0]
        data_root = "{data_root}"

        [scenario]
        name = "omniglot-alphabets"
        num_tasks = 2
        ways = 3
        shots = 1
        query = 2

        [model]
        name = "conv4"
        filters = 4

        [evaluation]
        episodes = 3
        adapt_steps = 1

        [strategies.snail]
        meta_iterations = 2
        meta_batch_size = 2
        embedding_dim = 8
        key_sizes = [8, 8]
        value_sizes = [4, 4]
        tc_filters = [8]
    """))
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    runs = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert [r["strategy"] for r in runs] == ["snail"]
    tensors = np.load(tmp_path / "out" / "tensors.npz")
    acc = tensors["snail/seed0/acc"]
    assert acc.shape == (3, 2, 2) and np.isfinite(acc).all() and np.array_equal(acc[..., 0], acc[..., 1])


def test_cli_refuses_a_regression_stream_with_exit_2(tmp_path, capsys):
    exp = tmp_path / "sine.toml"
    exp.write_text(textwrap.dedent("""
        seeds = [0]
        [scenario]
        name = "sinusoid"
        num_tasks = 1
        [model]
        name = "mlp"
        [strategies.snail]
    """))
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "strategies.snail.strategy" in err and "classification" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["snail", "leo"])
def test_cli_refuses_full_test_for_support_only_strategies_with_exit_2(tmp_path, capsys, name):
    exp = tmp_path / "full.toml"
    exp.write_text(textwrap.dedent(f"""
        seeds = [0]
        [scenario]
        name = "split-digits"
        num_tasks = 2
        [model]
        name = "mlp"
        [evaluation]
        full_test = true
        [strategies.{name}]
        [strategies.finetune]
    """))
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"strategies.{name}.strategy" in err and "evaluation.full_test" in err and "Traceback" not in err
    assert "strategies.finetune" not in err
    assert not (tmp_path / "out").exists()
