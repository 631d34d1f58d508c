"""The conv-4 backbone and the batch-statistics BatchNorm policy inside episodes."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import strategies
from scenarios.base import Episodes, StreamSpec
from strategies.backbones import BatchStatNorm, Conv4, MaxPool, use_batch_statistics
from strategies.base import AdaptState

from test_maml import assert_close, ours, reference_meta_gradient

pytestmark = pytest.mark.usefixtures("one_thread")


def spec(shape, outputs=5):
    return StreamSpec("toy", "classification", "few-shot", shape, outputs, 1, shots=1, query=1, ways=outputs)


def test_shapes_registration_and_size_limits():
    model = strategies.build_model("conv4", {}, spec((1, 28, 28)))
    assert isinstance(model, Conv4) and model[-1].in_features == 64            # 28 -> 14 -> 7 -> 3 -> 1
    assert sum(isinstance(m, nn.Conv2d) and m.out_channels == 64 for m in model) == 4
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 5)
    assert Conv4((3, 16, 20), 5)(torch.zeros(2, 3, 16, 20)).shape == (2, 5)
    assert Conv4((1, 8, 8), 10, filters=8, blocks=3)[-1].in_features == 8
    with pytest.raises(ValueError, match="height and width >= 16"):
        Conv4((1, 8, 8), 10)


def test_batchnorm_uses_batch_statistics_in_eval_mode_too():
    torch.manual_seed(0)
    model = Conv4((1, 16, 16), 5, filters=4).eval()
    assert dict(model.named_buffers()) == {} and isinstance(model[1], BatchStatNorm)
    x = torch.randn(6, 1, 16, 16)
    assert not torch.allclose(model(x)[:3], model(x[:3]))       # the batch's statistics, not running ones


def test_predict_normalises_each_episode_on_its_own():
    torch.manual_seed(0)
    strategy = strategies.build("maml")
    strategy.setup(Conv4((1, 16, 16), 5, filters=4), spec((1, 16, 16)), "cpu")
    x = torch.randn(3, 4, 1, 16, 16)
    state = AdaptState({n: p.detach() for n, p in strategy.model.named_parameters()}, batched=False)
    out = strategy.predict(state, x)
    with torch.no_grad():
        for e in range(3):
            assert torch.allclose(out[e], strategy.model(x[e]), atol=1e-6)


def test_conv4_meta_gradient_equals_the_per_task_loop():
    torch.manual_seed(0)
    model = Conv4((1, 16, 16), 3, filters=4)
    g = torch.Generator().manual_seed(0)
    eps = Episodes(torch.randn(2, 3, 1, 16, 16, generator=g), torch.tensor([[0, 1, 2]] * 2),
                   torch.randn(2, 6, 1, 16, 16, generator=g), torch.tensor([[0, 1, 2, 0, 1, 2]] * 2))
    ref = reference_meta_gradient(model, eps, steps=2, lr=0.1, kind="classification")
    assert_close(ours(model, eps, steps=2, lr=0.1, kind="classification"), ref)


def test_batch_stat_norm_matches_batchnorm_in_training_mode():
    g = torch.Generator().manual_seed(0)
    for shape in [(8, 3), (8, 3, 5), (8, 3, 4, 4)]:
        x = torch.randn(*shape, generator=g)
        layer = BatchStatNorm(3)
        with torch.no_grad():
            layer.weight.uniform_(0.5, 2, generator=g)
            layer.bias.uniform_(-1, 1, generator=g)
        expected = F.batch_norm(x, None, None, layer.weight, layer.bias, training=True, eps=layer.eps)
        assert torch.allclose(layer(x), expected, atol=1e-5)


def test_a_user_batchnorm_model_gets_exact_meta_gradients():
    # nn.BatchNorm1d is replaced (keeping its parameters), and the meta-gradient through the
    # replacement equals the per-task loop through the original layer.
    torch.manual_seed(0)
    original = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))
    with torch.no_grad():
        original[1].weight.uniform_(0.5, 2)
    reference_model = copy.deepcopy(original)
    reference_model[1].track_running_stats = False
    reference_model[1].running_mean = reference_model[1].running_var = None
    weight = original[1].weight
    converted = use_batch_statistics(original)
    assert isinstance(converted[1], BatchStatNorm) and converted[1].weight is weight
    assert dict(converted.named_buffers()) == {}
    g = torch.Generator().manual_seed(0)
    eps = Episodes(torch.randn(3, 6, 3, generator=g), torch.randint(3, (3, 6), generator=g),
                   torch.randn(3, 5, 3, generator=g), torch.randint(3, (3, 5), generator=g))
    ref = reference_meta_gradient(reference_model, eps, steps=2, lr=0.3, kind="classification")
    assert_close(ours(converted, eps, steps=2, lr=0.3, kind="classification"), ref)


def test_episodic_strategies_apply_the_policy_to_a_user_model():
    for name in ["maml", "reptile", "protomemory", "matching"]:
        strategy = strategies.build(name)
        strategy.setup(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)), spec((4,), 3), "cpu")
        assert isinstance(strategy.model[1], BatchStatNorm), name


def papers_conv4(model: Conv4) -> nn.Sequential:
    """``model``'s parameters in the papers' block order (conv-BN-ReLU-maxpool) with torch's own
    ``nn.BatchNorm2d``: the computation Conv4 and BatchStatNorm were rewritten from for speed."""
    layers = []
    modules = list(model)
    for conv, norm in zip(modules[0:-2:4], modules[1:-2:4]):
        bn = nn.BatchNorm2d(norm.weight.numel(), eps=norm.eps, track_running_stats=False)
        bn.weight, bn.bias = norm.weight, norm.bias
        layers += [conv, bn, nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, model[-2], model[-1])


def test_conv4_equals_the_papers_block_order_with_torch_batchnorm():
    # Values and second-order meta-gradients, in float64, on images with flat background (ties
    # in the pooling windows) and an odd size (7x7 -> 3x3 drops a row and a column).
    torch.manual_seed(0)
    model = Conv4((1, 28, 28), 3, filters=4).double()
    reference = papers_conv4(model)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 9, 1, 28, 28, generator=g, dtype=torch.float64) > 0.8).double()
    assert torch.allclose(model(x[0]), reference(x[0]), atol=1e-10)
    y = torch.tensor([0, 1, 2] * 3)
    eps = Episodes(x[:, :3], torch.stack([y[:3]] * 2), x[:, 3:], torch.stack([y[3:]] * 2))
    ref = reference_meta_gradient(reference, eps, steps=2, lr=0.4, kind="classification")
    assert_close(ours(model, eps, steps=2, lr=0.4, kind="classification"), ref, tol=1e-8)


def test_channels_last_pooling_without_gradients_gives_the_same_outputs():
    # Evaluation (no gradients) pools a channels-last copy; training keeps torch's layout. Both
    # give the same outputs, directly and under predict's vmap over episodes.
    torch.manual_seed(0)
    model = Conv4((1, 28, 28), 5, filters=8)
    x = (torch.rand(3, 6, 1, 28, 28) > 0.8).float()
    with torch.no_grad():
        fast, fast_batched = model(x[0]), torch.func.vmap(model)(x)
        odd = torch.randn(2, 3, 7, 7)
        pooled = MaxPool(2)(odd)
    assert pooled.is_contiguous(memory_format=torch.channels_last)        # the fast path was taken
    assert torch.equal(pooled, nn.MaxPool2d(2)(odd))
    slow, slow_batched = model(x[0]), torch.func.vmap(model)(x)
    assert torch.allclose(fast, slow, atol=1e-5) and torch.allclose(fast_batched, slow_batched, atol=1e-5)
