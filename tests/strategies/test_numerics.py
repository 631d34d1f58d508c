"""Silent numerical traps, each checked against an independent computation.

- Synaptic Intelligence: Avalanche 0.6's plugin records the parameters as views on the CPU, so
  its importances stay zero there; ours must equal SI's path integral, on CPU and CUDA.
- Second-order meta-gradients through normalisation layers under ``vmap`` (MAML, Meta-SGD)
  must equal a plain per-task loop, whatever norm layer a user's model has.
"""

import copy

import pytest
import torch
from torch import nn

import scenarios
import strategies
from scenarios.base import Episodes, StreamSpec
from strategies.backbones import SampleStatNorm, use_exact_norms

from test_maml import assert_close, reference_meta_gradient
from test_maml import ours as meta_gradient

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = StreamSpec("toy", "classification", "few-shot", (3,), 3, 1, shots=2, query=2, ways=3)
SI_OPTIONS = {"epochs": 1, "batch_size": 16, "lr": 0.1}


def digits(num_tasks=2):
    return scenarios.build("split-digits", {"num_tasks": num_tasks}, seed=0)


def avalanche_strategy(name, stream, device="cpu", **options):
    strategy = strategies.build(name, {**SI_OPTIONS, **options})
    torch.manual_seed(0)
    strategy.setup(strategies.build_model("mlp", {"hidden": [16]}, stream.spec), stream.spec, device, seed=0)
    return strategy


def si_plugin(strategy):
    from avalanche.training.plugins import SynapticIntelligencePlugin

    [plugin] = [p for p in strategy.avalanche.plugins if isinstance(p, SynapticIntelligencePlugin)]
    return plugin


def importances(strategy):
    """SI's importance of every parameter (flat, on the CPU), by parameter name."""
    return {name: data.data.clone() for name, data in si_plugin(strategy).ewc_data[1].items()}


def raw_importances(strategy):
    """The importances before Avalanche caps them: minus its ``cum_trajectory``."""
    return {name: -data.data for name, data in si_plugin(strategy).syn_data["cum_trajectory"].items()}


class PathRecorder:
    """An Avalanche plugin that records, with copies, what SI's path integral is made of: the
    parameters at the start and end of each experience, and per step the parameters before
    and after the update and the gradient that made it."""

    def __init__(self):
        self.experiences = []

    def params(self, strategy):
        return {n: p.detach().flatten().clone().cpu() for n, p in strategy.model.named_parameters()}

    # Avalanche calls the callbacks a plugin has (hasattr), so these four are enough.
    def before_training_exp(self, strategy, **kwargs):
        self.experiences.append({"start": self.params(strategy), "steps": []})

    def before_training_iteration(self, strategy, **kwargs):
        self.before = self.params(strategy)

    def after_training_iteration(self, strategy, **kwargs):
        grads = {n: p.grad.detach().flatten().clone().cpu() for n, p in strategy.model.named_parameters()}
        self.experiences[-1]["steps"].append((self.before, self.params(strategy), grads))

    def after_training_exp(self, strategy, **kwargs):
        self.experiences[-1]["end"] = self.params(strategy)


def path_integral_importances(experiences, eps=1e-7):
    """SI's importances (Zenke et al. 2017, eq. 5) from recorded paths, in Avalanche's convention.

    Per experience, omega = -sum over steps of gradient * (theta_after - theta_before) (the
    paper's path integral of the loss decrease; Avalanche takes the gradient of the penalised
    loss that made the step), divided by (total change over the experience)**2 + eps and summed
    over experiences (Avalanche's ``update_ewc_data`` with c = 1), before Avalanche's cap.
    """
    total = None
    for exp in experiences:
        omega = {n: -sum(g[n] * (after[n] - before[n]) for before, after, g in exp["steps"]) for n in exp["start"]}
        part = {n: omega[n] / ((exp["end"][n] - exp["start"][n]) ** 2 + eps) for n in omega}
        total = part if total is None else {n: total[n] + part[n] for n in part}
    return total


def test_si_importances_equal_the_path_integral():
    pytest.importorskip("avalanche")
    stream = digits()
    strategy = avalanche_strategy("avalanche.SI", stream, si_lambda=100.0)
    recorder = PathRecorder()
    strategy.avalanche.plugins.append(recorder)
    for i, task in enumerate(stream):
        strategy.learn(task.training_view())
        raw, expected = raw_importances(strategy), path_integral_importances(recorder.experiences[:i + 1])
        assert all(raw[n].max() > 1 for n in raw), f"importances vanish after task {i}"
        for n in raw:
            torch.testing.assert_close(raw[n], expected[n], rtol=1e-4, atol=1e-6)
            # Avalanche caps them at 0.001 (clip_to), which nearly every moving weight reaches.
            torch.testing.assert_close(importances(strategy)[n], expected[n].clamp(max=0.001), rtol=1e-4, atol=1e-9)


def test_si_with_a_large_lambda_trains_unlike_naive_and_holds_the_old_weights():
    """With importances the penalty pulls towards the weights after task 0; without (the
    Avalanche 0.6 trap on the CPU) SI's weights are Naive's, bit for bit."""
    pytest.importorskip("avalanche")
    stream = digits()
    runs = {}
    for name, options in [("avalanche.Naive", {}), ("avalanche.SI", {"si_lambda": 1e3})]:
        strategy = avalanche_strategy(name, stream, **options)
        strategy.learn(stream[0].training_view())
        after_first = torch.cat([p.detach().flatten().clone() for p in strategy.model.parameters()])
        strategy.learn(stream[1].training_view())
        final = torch.cat([p.detach().flatten() for p in strategy.model.parameters()])
        runs[name] = (after_first, final)
    (naive_first, naive), (si_first, si) = runs["avalanche.Naive"], runs["avalanche.SI"]
    assert torch.equal(naive_first, si_first)          # no penalty on the first task
    assert not torch.equal(naive, si)
    assert (si - si_first).norm() < 0.9 * (naive - naive_first).norm()


def test_si_stores_no_view_of_a_parameter_or_gradient():
    pytest.importorskip("avalanche")
    stream = digits(num_tasks=1)
    strategy = avalanche_strategy("avalanche.SI", stream)
    strategy.learn(stream[0].training_view())
    plugin = si_plugin(strategy)
    live = {t.untyped_storage().data_ptr() for p in strategy.model.parameters() for t in (p, p.grad)
            if t is not None}
    stored = [d.data for store in (*plugin.ewc_data, *plugin.syn_data.values()) for d in store.values()]
    assert stored and not any(t.untyped_storage().data_ptr() in live for t in stored)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_si_importances_are_the_same_on_cpu_and_cuda():
    pytest.importorskip("avalanche")
    stream = digits()
    found = {}
    for device in ("cpu", "cuda"):
        strategy = avalanche_strategy("avalanche.SI", stream, device, si_lambda=100.0)
        for task in stream:
            strategy.learn(task.training_view())
        found[device] = {"capped": importances(strategy), "raw": raw_importances(strategy)}
    assert all(found["cpu"]["raw"][n].max() > 1 for n in found["cpu"]["raw"])
    for kind in ("capped", "raw"):
        for n, cpu in found["cpu"][kind].items():
            torch.testing.assert_close(found["cuda"][kind][n], cpu, rtol=1e-3, atol=1e-6)


# -- second-order meta-gradients through normalisation layers ---------------------------------

def image_model(norm):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), norm, nn.Tanh(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))


def vector_model(norm):
    return nn.Sequential(nn.Linear(3, 8), norm, nn.Tanh(), nn.Linear(8, 3))


def channels_of_4(norm):
    """``norm`` of (N, 2, 4) sequences between two linear layers of 8 units."""
    return nn.Sequential(nn.Unflatten(1, (2, 4)), norm, nn.Flatten())


NORMS = {  # name: (model builder, layer); InstanceNorm is affine only on request
    "LayerNorm": (vector_model, lambda: nn.LayerNorm(8)),
    "LayerNorm-no-bias": (vector_model, lambda: nn.LayerNorm(8, bias=False)),
    "LayerNorm-CHW": (image_model, lambda: nn.LayerNorm([4, 5, 5])),
    "InstanceNorm1d": (vector_model, lambda: channels_of_4(nn.InstanceNorm1d(2, affine=True))),
    "InstanceNorm2d": (image_model, lambda: nn.InstanceNorm2d(4, affine=True)),
    "InstanceNorm2d-running-stats": (image_model, lambda: nn.InstanceNorm2d(4, affine=True, track_running_stats=True)),
    "InstanceNorm2d-no-affine": (image_model, lambda: nn.InstanceNorm2d(4)),
    "GroupNorm": (image_model, lambda: nn.GroupNorm(2, 4)),
    "BatchNorm2d": (image_model, lambda: nn.BatchNorm2d(4)),
    "RMSNorm": (vector_model, lambda: nn.RMSNorm(8)),
}


def norm_model(name):
    """A float64 model with the norm layer ``name``, its affine parameters away from 1 and 0."""
    build, layer = NORMS[name]
    torch.manual_seed(0)
    model = build(layer()).double()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith("1."):
                p.uniform_(0.5, 2)
    return model


def norm_episodes(name, n=3):
    g = torch.Generator().manual_seed(0)
    shape = (1, 5, 5) if NORMS[name][0] is image_model else (3,)
    return Episodes(torch.randn(n, 6, *shape, generator=g, dtype=torch.float64), torch.randint(3, (n, 6), generator=g),
                    torch.randn(n, 5, *shape, generator=g, dtype=torch.float64), torch.randint(3, (n, 5), generator=g))


def reference_model(model):
    """``model`` as the per-task loop runs it: each norm layer with its input's own statistics
    (the episodic policy), which for BatchNorm and a tracking InstanceNorm means no running
    statistics."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
            module.track_running_stats = False
            module.running_mean = module.running_var = None
    return model


@pytest.mark.parametrize("name", ["maml", "metasgd"])
@pytest.mark.parametrize("norm", sorted(NORMS))
def test_second_order_meta_gradient_through_norm_layers_equals_the_per_task_loop(name, norm):
    """The strategy's own meta-loss after ``setup`` (which may rewrite norm layers) against the
    per-task loop through the user's original layers, in float64."""
    model, eps = norm_model(norm), norm_episodes(norm)
    reference = reference_model(model)
    strategy = strategies.build(name, {"inner_steps": 2, "inner_lr": 0.3})
    strategy.setup(model, SPEC, "cpu")
    rates = getattr(strategy, "rates", None)
    inputs = list(strategy.model.parameters()) + list((rates or {}).values())
    ours = torch.autograd.grad(strategy.meta_loss(eps), inputs, allow_unused=True)
    ref = reference_meta_gradient(reference, eps, steps=2, lr=0.3, kind="classification", rates=rates)
    assert_close(ours, ref, tol=1e-10)


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_first_order_meta_gradient_through_the_original_norm_layers_is_exact(norm):
    """First-order MAML and Reptile differentiate the inner steps once: no trap there, even
    with the layers as the user wrote them."""
    model, eps = reference_model(norm_model(norm)), norm_episodes(norm)
    ref = reference_meta_gradient(model, eps, steps=2, lr=0.3, kind="classification", first_order=True)
    assert_close(meta_gradient(model, eps, steps=2, lr=0.3, kind="classification", first_order=True), ref, tol=1e-10)


@pytest.mark.parametrize("layer,shape", [
    (lambda: nn.LayerNorm(8), (5, 8)),
    (lambda: nn.LayerNorm([3, 4, 4], bias=False), (5, 3, 4, 4)),
    (lambda: nn.LayerNorm(4, elementwise_affine=False), (2, 5, 4)),
    (lambda: nn.InstanceNorm1d(3, affine=True), (5, 3, 7)),
    (lambda: nn.InstanceNorm1d(3, affine=True), (3, 7)),            # unbatched
    (lambda: nn.InstanceNorm2d(3), (5, 3, 4, 4)),
    (lambda: nn.InstanceNorm3d(3, affine=True), (2, 3, 3, 4, 4)),
])
def test_sample_stat_norm_computes_what_the_torch_layer_computes_with_its_parameters(layer, shape):
    g = torch.Generator().manual_seed(0)
    original = layer()
    with torch.no_grad():
        for p in original.parameters():
            p.uniform_(0.5, 2, generator=g)
    model = use_exact_norms(nn.Sequential(original))
    assert isinstance(model[0], SampleStatNorm)
    assert model[0].weight is original.weight and model[0].bias is original.bias   # shared, or both None
    assert model.state_dict().keys() == nn.Sequential(original).state_dict().keys()
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(model.double()(x), original.double()(x))


def test_the_meta_learners_share_the_users_norm_parameters_and_keep_other_layers():
    model = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.GroupNorm(2, 8), nn.Linear(8, 3))
    weight = model[1].weight
    for name in ["maml", "metasgd", "reptile"]:
        strategy = strategies.build(name)
        strategy.setup(model, SPEC, "cpu")
        assert isinstance(model[1], SampleStatNorm) and model[1].weight is weight
        assert isinstance(model[2], nn.GroupNorm)
