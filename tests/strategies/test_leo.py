"""LEO: the generated weights and one latent step against the paper's equations (float64, by
hand), the vectorised adaptation against a loop over episodes, global labels, mid-task resume,
learning, the refusal of regression, the CLI. (Generic determinism and state_dict round trips:
tests/test_conformance.py.)"""

import json
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import scenarios
import strategies
from scenarios.base import LabelledPool, Stream, StreamSpec, Task
from simulator.evaluator import EvalSettings
from simulator.runner import run
from strategies.leo import clip_gradients, encode, kl_from_standard_normal, orthogonality_penalty

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"meta_iterations": 3, "meta_batch_size": 3, "embedding_dim": 8, "latent_dim": 4, "inner_steps": 2,
        "finetune_steps": 1}


def toy_stream(ways: int = 3, dim: int = 4, seed: int = 0) -> Stream:
    """A few-shot stream of Gaussian blobs (6 classes, 20 items each), episodes of ``ways`` classes."""
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(6, dim, generator=g)
    y = torch.arange(6).repeat_interleave(20)
    pool = LabelledPool(centres[y] + torch.randn(120, dim, generator=g), y)
    spec = StreamSpec("toy", "classification", "few-shot", (dim,), ways, 1, shots=2, query=3, ways=ways)
    return Stream(spec, (Task(0, "toy", (), pool, pool, "few-shot", ways, ways=ways),))


def make(stream, params=None, model=None, seed=0, dtype=torch.float32):
    s = strategies.build("leo", {**TINY, **(params or {})})
    torch.manual_seed(seed)
    if model is None:
        model = strategies.build_model("mlp", {"hidden": [16]}, s.model_spec(stream.spec))
    s.setup(model.to(dtype), stream.spec, "cpu", seed=seed)
    return s


# -- the paper's equations, by hand ------------------------------------------------------------

def reference(p, e, y, num_classes):
    """One episode in float64 with Python loops, from the paper's equations: the codes' means
    and standard deviations (encoder, relation network over every pair, averaged per class),
    the decoded weights, the analytic gradient of the summed support cross-entropy with respect
    to each class's weights (sum_i (softmax_n - [y_i = n]) e_i) and to its code (chain rule
    through the decoder's mean rows), and the code after one latent step."""
    S, D = e.shape
    L = p["encoder"].shape[0]
    h = [p["encoder"] @ e[i] for i in range(S)]

    def g(a, b):
        x = torch.relu(p["relation.0"] @ torch.cat([a, b]))
        x = torch.relu(p["relation.1"] @ x)
        return p["relation.2"] @ x

    mean, std = [], []
    for n in range(num_classes):
        items = [i for i in range(S) if y[i] == n]
        total = sum(g(h[i], h[j]) for i in items for j in range(S)) / (len(items) * S)
        mean.append(total[:L])
        std.append(torch.log1p(torch.exp(total[L:])))
    decoder_mean = p["decoder"][:D]                                   # (D, L): w_n = decoder_mean z_n

    def weight_gradients(w):
        grads = [torch.zeros(D, dtype=e.dtype) for _ in range(num_classes)]
        for i in range(S):
            prob = torch.softmax(torch.stack([w[n] @ e[i] for n in range(num_classes)]), 0)
            for n in range(num_classes):
                grads[n] = grads[n] + (prob[n] - float(y[i] == n)) * e[i]
        return grads

    weights = [decoder_mean @ z for z in mean]
    gw = weight_gradients(weights)
    gz = [decoder_mean.T @ gw[n] for n in range(num_classes)]
    stepped = [mean[n] - p["inner_lr"] * gz[n] for n in range(num_classes)]
    return {"mean": torch.stack(mean), "std": torch.stack(std), "weights": torch.stack(weights),
            "weight_gradient": torch.stack(gw), "latent_gradient": torch.stack(gz), "stepped": torch.stack(stepped),
            "stepped_weights": torch.stack([decoder_mean @ z for z in stepped])}


def randomised(s, seed=1):
    """Give LEO's networks random float64 weights and per-dimension step sizes (not the constant
    initial ones, so that a wrong broadcast would show)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, q in s.net.named_parameters():
            q.copy_(0.5 * torch.randn(q.shape, generator=g, dtype=q.dtype))
        s.net.inner_lr.copy_(torch.rand(s.net.inner_lr.shape, generator=g, dtype=torch.float64) + 0.1)
        s.net.finetune_lr.copy_(torch.rand(s.net.finetune_lr.shape, generator=g, dtype=torch.float64) * 0.1)


@pytest.mark.parametrize("finetune_steps", [0, 1])
def test_weights_and_one_latent_step_match_the_papers_equations(finetune_steps):
    stream = toy_stream(ways=3, dim=4)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)                                    # a user's embedding network: D = 3
    s = make(stream, {"latent_dim": 2, "finetune_steps": finetune_steps}, model=model, dtype=torch.float64)
    randomised(s)
    x = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.tensor([[2, 0, 1, 1, 0, 2], [0, 1, 2, 0, 1, 2]])    # shuffled: classes are grouped by label
    support = scenarios.base.Support(x, y)
    states = list(s.adapt(support, 1))
    p = {n: q.detach() for n, q in s.net.named_parameters()}
    with torch.no_grad():
        e = model(x)
        mean, std, present = encode(p, e, y, 3)
    assert present.all()
    for ep in range(2):
        ref = reference(p, e[ep], y[ep], 3)
        assert torch.allclose(mean[ep], ref["mean"], rtol=0, atol=1e-10)
        assert torch.allclose(std[ep], ref["std"], rtol=0, atol=1e-10)
        assert torch.allclose(states[0].latents[ep], ref["mean"], rtol=0, atol=1e-10)     # evaluation: the mean
        assert torch.allclose(states[1].latents[ep], ref["stepped"], rtol=0, atol=1e-10)
        if finetune_steps == 0:
            assert torch.allclose(states[0].weights[ep], ref["weights"], rtol=0, atol=1e-10)
            assert torch.allclose(states[1].weights[ep], ref["stepped_weights"], rtol=0, atol=1e-10)
        else:                                                    # w - eta * grad_w, eta per embedding dimension
            tuned = ref["weights"] - p["finetune_lr"] * ref["weight_gradient"]
            assert torch.allclose(states[0].weights[ep], tuned, rtol=0, atol=1e-10)
    # The latent gradient itself: (z - z') / alpha.
    ref = reference(p, e[1], y[1], 3)
    assert torch.allclose((states[0].latents[1] - states[1].latents[1]) / p["inner_lr"], ref["latent_gradient"],
                          rtol=0, atol=1e-10)
    assert ref["latent_gradient"].abs().max() > 1e-3                                        # not trivially zero


def test_regularisers_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    std = torch.rand(2, 3, 4, generator=g, dtype=torch.float64) + 0.1
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mean, std),
                                                 torch.distributions.Normal(torch.zeros_like(mean), 1.0))
    assert torch.allclose(kl_from_standard_normal(mean, std), expected, rtol=0, atol=1e-12)
    decoder = torch.randn(6, 4, generator=g, dtype=torch.float64)          # (2D, L): one vector per latent dim
    corr = torch.tensor([[float(decoder[:, a] @ decoder[:, b] / (decoder[:, a].norm() * decoder[:, b].norm()))
                          for b in range(4)] for a in range(4)], dtype=torch.float64)
    assert abs(float(orthogonality_penalty(decoder)) - float(((corr - torch.eye(4)) ** 2).mean())) < 1e-12
    q, _ = torch.linalg.qr(torch.randn(6, 4, generator=g, dtype=torch.float64))
    assert float(orthogonality_penalty(q)) < 1e-20                           # orthogonal columns: no penalty


def test_gradients_are_clipped_by_value_then_by_norm_per_tensor():
    a, b = torch.zeros(3, dtype=torch.float64, requires_grad=True), torch.zeros(2, dtype=torch.float64,
                                                                                  requires_grad=True)
    a.grad, b.grad = torch.tensor([0.3, -0.05, 0.02], dtype=torch.float64), torch.tensor([0.01, 0.02],
                                                                                          dtype=torch.float64)
    clip_gradients([a, b], value=0.1, norm=0.1)
    clipped = torch.tensor([0.1, -0.05, 0.02], dtype=torch.float64)          # by value first
    assert torch.allclose(a.grad, clipped * 0.1 / clipped.norm(), rtol=0, atol=1e-15)   # then to norm 0.1
    assert torch.equal(b.grad, torch.tensor([0.01, 0.02], dtype=torch.float64))          # within both: unchanged
    clip_gradients([a], value=0, norm=0)                                     # 0: no clipping
    assert torch.allclose(a.grad, clipped * 0.1 / clipped.norm(), rtol=0, atol=1e-15)


# -- vectorisation, global labels -------------------------------------------------------------

@pytest.mark.parametrize("scenario", ["few-shot", "class-incremental"])
def test_vectorised_adapt_equals_a_loop_over_episodes(scenario):
    if scenario == "few-shot":
        stream = toy_stream()
    else:
        stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    s = make(stream)
    s.learn(stream[0].training_view())
    s.model.double(), s.net.double()                 # trained networks, compared in float64
    eps = stream[0].episodes("test", 5, 2, 3, torch.Generator().manual_seed(0))
    eps = type(eps)(eps.support_x.double(), eps.support_y, eps.query_x.double(), eps.query_y, eps.mask)
    together = list(s.adapt(eps.support, 3))
    outputs = [s.predict(state, eps.query_x) for state in together]
    assert len(together) == 4 and outputs[0].shape == (5, eps.query_y.shape[1], stream.spec.output_size)
    for e in range(5):
        one = eps.slice(e, e + 1)
        for k, state in enumerate(s.adapt(one.support, 3)):
            assert torch.allclose(state.weights[0], together[k].weights[e], rtol=0, atol=1e-12)
            assert torch.allclose(state.latents[0], together[k].latents[e], rtol=0, atol=1e-12)
            assert torch.allclose(s.predict(state, one.query_x)[0], outputs[k][e], rtol=0, atol=1e-12)
    # The query embeddings shared by the states of one adapt change nothing.
    assert torch.equal(s.predict(together[2], eps.query_x.clone()), outputs[2])
    assert not torch.equal(outputs[0], outputs[3])                           # the latent steps do something
    if scenario == "class-incremental":                                      # classes 2..9 have no support items
        assert (outputs[3][..., 2:] < outputs[3][..., :2].amin(-1, keepdim=True)).all()


# -- checkpoints -----------------------------------------------------------------

def test_resume_mid_learn_is_bit_identical(tmp_path, stop_inside_task):
    from simulator.runner import Interrupted, StopRequest

    stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    params = {**TINY, "meta_iterations": 5}

    def fresh():
        s = strategies.build("leo", params)
        torch.manual_seed(0)
        return s, strategies.build_model("mlp", {"hidden": [16]}, s.model_spec(stream.spec))

    settings = EvalSettings(episodes=3, adapt_steps=2)
    clean_strategy, model = fresh()
    clean = run(stream, clean_strategy, model, 0, settings)
    checkpoint, stop = tmp_path / "ckpt.pt", StopRequest()
    with pytest.raises(Interrupted, match="inside task 1"):
        run(stream, *fresh(), 0, settings, checkpoint=checkpoint, identity={"test": 1}, stop=stop,
            progress=stop_inside_task(stop, task=1, position=2))
    resumed_strategy, model = fresh()
    resumed = run(stream, resumed_strategy, model, 0, settings, checkpoint=checkpoint, identity={"test": 1},
                  resume=True)
    assert resumed.acc.tobytes() == clean.acc.tobytes() and resumed.loss.tobytes() == clean.loss.tobytes()
    a, b = clean_strategy.state_dict(), resumed_strategy.state_dict()
    for part in ("model", "leo"):
        assert all(torch.equal(a[part][n], b[part][n]) for n in a[part])
    assert resumed.logs[1] == clean.logs[1]                 # the carried sums: the same task logs


# -- learning, streams it refuses, the CLI ------------------------------------------------------

def test_leo_learns_few_shot_blobs():
    stream = toy_stream(ways=3)
    s = strategies.build("leo", {"meta_iterations": 60, "meta_batch_size": 4, "embedding_dim": 16,
                                 "latent_dim": 8, "lr": 0.003, "dropout": 0.0})
    torch.manual_seed(0)
    model = strategies.build_model("mlp", {"hidden": [32]}, s.model_spec(stream.spec))
    result = run(stream, s, model, 0, EvalSettings(episodes=20, adapt_steps=5))
    assert result.logs[0]["meta_loss"] < 0.5
    # Trained, the classifiers generated by the encoder alone (k = 0) separate the blobs (chance:
    # 1/3; untrained: 0.32, measured), and after the latent steps the query loss is well below
    # the untrained one's (measured: 0.04 against 0.30).
    assert result.acc[1, 0, 0] > 0.9 and result.acc[1, 0, -1] > 0.95
    assert result.loss[1, 0, -1] < 0.5 * result.loss[0, 0, -1]


def test_regression_streams_are_refused_with_a_reason():
    stream = scenarios.build("sinusoid", {"num_tasks": 1, "train_functions": 10, "test_functions": 10}, seed=0)
    why = strategies.build("leo").incompatibility(stream.spec)
    assert why is not None and "regression" in why and "classifier" in why
    assert strategies.build("leo").incompatibility(toy_stream().spec) is None


def test_cli_run_on_a_lifelong_omniglot_stream(tmp_path, data_root):
    from simulator import cli
    exp = tmp_path / "leo.toml"
    exp.write_text(textwrap.dedent(f"""
        name = "leo-tiny"
        seeds = [0]
        threads = 1

        [scenario]
        name = "omniglot-alphabets"
        num_tasks = 2
        ways = 3
        shots = 1
        query = 2
        data_root = "{data_root}"

        [model]
        name = "conv4"
        filters = 4

        [evaluation]
        episodes = 2
        adapt_steps = 2

        [strategies.leo]
        meta_iterations = 2
        meta_batch_size = 2
        embedding_dim = 8
        latent_dim = 4
        inner_steps = 1
        finetune_steps = 1
    """))
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    (only,) = results["runs"]
    assert only["strategy"] == "leo"
    tensors = np.load(tmp_path / "out" / "tensors.npz")
    acc = tensors["leo/seed0/acc"]
    assert acc.shape == (3, 2, 3) and np.isfinite(acc).all()


def test_full_test_is_refused_with_a_reason():
    stream = scenarios.build("split-digits", {"num_tasks": 1}, seed=0)
    s = strategies.build("leo", TINY)
    torch.manual_seed(0)
    model = strategies.build_model("mlp", {"hidden": [16]}, s.model_spec(stream.spec))
    with pytest.raises(ValueError, match="full_test"):
        run(stream, s, model, 0, EvalSettings(episodes=2, adapt_steps=1, full_test=True))
