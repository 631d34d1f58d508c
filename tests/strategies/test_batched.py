"""The batched-parameter path of MAML's meta-objective (strategies/batched.py) against its vmap path.

The vmap path is itself checked against a plain per-task loop (test_maml.py, test_numerics.py);
here the batched path must give the same meta-gradient in float64, second order included,
for the backbones' layers with and without norm layers, and any other model must fall back.
"""

import pytest
import torch
from torch import nn
from torch.func import functional_call

import strategies
import strategies.episodic as episodic_module
from scenarios.base import Episodes, LabelledPool, StreamSpec, Task
from strategies.backbones import use_batch_statistics, use_exact_norms
from strategies.batched import batched_forward, summed_episode_losses
from strategies.episodic import meta_objective
from strategies.maml import head_names

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGES = StreamSpec("toy-images", "classification", "few-shot", (2, 8, 8), 3, 1, shots=2, query=2, ways=3)
VECTORS = StreamSpec("toy-vectors", "regression", "few-shot", (3,), 2, 1, shots=2, query=2)


def exact(model: nn.Module) -> nn.Module:
    """``model`` in float64 with norm layers as the episodic strategies install them."""
    torch.manual_seed(0)
    model = use_exact_norms(use_batch_statistics(model)).double()
    with torch.no_grad():  # norm layers' affine parameters away from 1 and 0, so that they matter
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 2)
    return model


MODELS = {  # name: (builder, input shape, kind)
    "mlp": (lambda: strategies.build_model("mlp", {"hidden": [6, 5]}, VECTORS), (3,), "regression"),
    "mlp-tanh-layernorm": (lambda: nn.Sequential(nn.Linear(3, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 2)),
                           (3,), "regression"),
    "mlp-batchnorm": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(),
                                            nn.Linear(6, 3)), (3,), "classification"),
    "conv4": (lambda: strategies.build_model("conv4", {"filters": 4, "blocks": 2}, IMAGES), (2, 8, 8),
              "classification"),
    "conv-no-norm": (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                           nn.Conv2d(3, 4, 3, stride=2), nn.Tanh(), nn.Flatten(),
                                           nn.Linear(4, 3)), (2, 8, 8), "classification"),
    "conv-instancenorm": (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False),
                                                nn.InstanceNorm2d(3, affine=True), nn.ReLU(), nn.Flatten(),
                                                nn.Linear(3 * 8 * 8, 3)), (2, 8, 8), "classification"),
}


def episodes(shape, kind, n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = lambda items: torch.randn(n, items, *shape, generator=g, dtype=torch.float64)  # noqa: E731
    y = ((lambda items: torch.randn(n, items, 2, generator=g, dtype=torch.float64)) if kind == "regression"
         else (lambda items: torch.randint(3, (n, items), generator=g)))
    return Episodes(x(5), y(5), x(6), y(6))


def meta_gradient(model, eps, kind, batched, rates=None, **kw):
    inputs = list(model.parameters()) + list((rates or {}).values())
    loss = meta_objective(model, dict(model.named_parameters()), {}, eps, kind=kind, batched=batched,
                          lr=rates or 0.3, **kw)
    return loss.detach(), torch.autograd.grad(loss, inputs, allow_unused=True)


def assert_same(a, b, tol=1e-12):
    """Equal up to ``tol`` of the largest component (float64 rounding of other summation orders)."""
    scale = max(float(t.abs().max()) for t in b if t is not None)
    for x, y in zip(a, b, strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            assert float((x - y).abs().max()) <= tol * scale, float((x - y).abs().max()) / scale


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("variant", ["second-order", "first-order", "anil", "metasgd"])
def test_batched_meta_gradient_equals_the_vmap_path(name, variant):
    build, shape, kind = MODELS[name]
    model = exact(build())
    assert batched_forward(model) is not None, "this model should take the batched path"
    eps = episodes(shape, kind)
    kw = {"steps": 2}
    if variant == "first-order":
        kw["first_order"] = True
    elif variant == "anil":
        kw["names"] = head_names(model)
    elif variant == "metasgd":
        g = torch.Generator().manual_seed(3)
        kw["rates"] = {n: (0.05 + 0.3 * torch.rand(p.shape, generator=g, dtype=torch.float64)).requires_grad_()
                       for n, p in model.named_parameters()}
    loss, ours = meta_gradient(model, eps, kind, batched=True, **kw)
    ref_loss, ref = meta_gradient(model, eps, kind, batched=False, **kw)
    assert abs(float(loss - ref_loss)) <= 1e-12 * abs(float(ref_loss))
    assert_same(ours, ref)
    if variant == "second-order":  # the second-order terms matter, so dropping them would fail above
        _, first = meta_gradient(model, eps, kind, batched=False, first_order=True, steps=2)
        assert max(float((a - b).abs().max()) for a, b in zip(ref, first)) > 1e-4


def test_masked_classification_takes_the_mask_in_the_batched_path():
    build, shape, kind = MODELS["conv4"]
    model = exact(build())
    eps = episodes(shape, kind)
    eps = Episodes(eps.support_x, eps.support_y % 2 + 1, eps.query_x, eps.query_y % 2 + 1,
                   mask=torch.tensor([False, True, True]))
    loss, ours = meta_gradient(model, eps, kind, batched=True, steps=1)
    ref_loss, ref = meta_gradient(model, eps, kind, batched=False, steps=1)
    assert abs(float(loss - ref_loss)) <= 1e-12 * abs(float(ref_loss))
    assert_same(ours, ref)


@pytest.mark.parametrize("channels_last", [False, True])
def test_batched_forward_gives_each_episode_its_own_parameters(channels_last):
    model = exact(MODELS["conv4"][0]())
    g = torch.Generator().manual_seed(0)
    params = {n: p.detach() + 0.1 * torch.randn(3, *p.shape, generator=g, dtype=torch.float64)
              for n, p in model.named_parameters()}
    params["4.bias"] = model[4].bias.detach()  # a shared one among batched ones (model[4]: the 2nd conv)
    x = torch.randn(3, 5, 2, 8, 8, generator=g, dtype=torch.float64)
    out = batched_forward(model)(params, x, channels_last=channels_last)
    for e in range(3):
        own = {n: p if n == "4.bias" else p[e] for n, p in params.items()}
        torch.testing.assert_close(out[e], functional_call(model, own, (x[e],)), rtol=0, atol=1e-12)


def test_summed_episode_losses_add_the_episodes_mean_losses():
    out, y = torch.tensor([[[1.0], [3.0]], [[0.0], [0.0]]]), torch.tensor([[[0.0], [0.0]], [[1.0], [1.0]]])
    # episode 0: (1 + 9) / 2 = 5; episode 1: (1 + 1) / 2 = 1
    assert float(summed_episode_losses(out, y, "regression")) == 6.0


class Doubling(nn.Sequential):
    def forward(self, x):
        return 2 * super().forward(x)


UNSUPPORTED = {
    "GroupNorm": lambda: nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4 * 36, 3)),
    "Unflatten": lambda: nn.Sequential(nn.Flatten(), nn.Linear(128, 8), nn.Unflatten(1, (2, 4)), nn.Flatten(),
                                       nn.Linear(8, 3)),
    # Running statistics, used (not updated: eval mode) as the user left them.
    "buffers": lambda: nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 3)).eval(),
    "Sequential-subclass": lambda: Doubling(nn.Flatten(), nn.Linear(128, 3)),
    "nested": lambda: nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(128, 3))),
    "hook": lambda: hooked(nn.Sequential(nn.Flatten(), nn.Linear(128, 3))),
}


def hooked(model):
    model[1].register_forward_hook(lambda module, args, out: out * 2)
    return model


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_an_unsupported_model_falls_back_to_vmap(name, monkeypatch):
    torch.manual_seed(0)
    model = UNSUPPORTED[name]().double()
    assert batched_forward(model) is None
    eps = episodes((2, 8, 8), "classification", n=2)
    monkeypatch.setattr(episodic_module, "batched_steps", lambda *a, **k: pytest.fail("took the batched path"))
    buffers = dict(model.named_buffers())
    loss = meta_objective(model, dict(model.named_parameters()), buffers, eps, steps=1, lr=0.3,
                          kind="classification")
    ref = meta_objective(model, dict(model.named_parameters()), buffers, eps, steps=1, lr=0.3,
                         kind="classification", batched=False)
    assert torch.equal(loss, ref)


def test_a_supported_model_does_not_touch_vmap(monkeypatch):
    model = exact(MODELS["conv4"][0]())
    monkeypatch.setattr(episodic_module, "vmap", lambda *a, **k: pytest.fail("took the vmap path"))
    loss, grads = meta_gradient(model, episodes((2, 8, 8), "classification"), "classification", True, steps=1)
    assert torch.isfinite(loss) and all(g.abs().sum() > 0 for g in grads)


def test_maml_learn_is_bit_identical_on_a_rerun():
    def run():
        torch.manual_seed(0)
        strategy = strategies.build("maml", {"meta_iterations": 3, "meta_batch_size": 3, "inner_lr": 0.3})
        strategy.setup(strategies.build_model("conv4", {"filters": 4, "blocks": 2}, IMAGES), IMAGES, "cpu", seed=0)
        pool = torch.randn(60, 2, 8, 8, generator=torch.Generator().manual_seed(0))
        task = Task(id=0, name="t", classes=(0, 1, 2, 3, 4, 5), train=LabelledPool(pool, torch.arange(6).repeat(10)),
                    test=None, protocol="few-shot", output_size=3, ways=3)
        strategy.learn(task)
        return [p.detach().clone() for p in strategy.model.parameters()]

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
