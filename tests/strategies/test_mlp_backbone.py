"""The ``mlp`` backbone: its ``init`` option, and ``functional_forward``'s direct chain (functional_call's values and gradients)."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from strategies.backbones import MLP, Conv4, functional_forward


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mlp_chain_equals_functional_call_in_value_and_second_order_gradient(activation):
    torch.manual_seed(0)
    mlp = MLP((1, 4, 4), 3, hidden=[5, 6], activation=activation).double()
    x, y = torch.randn(7, 1, 4, 4, dtype=torch.float64), torch.randint(3, (7,))

    def second_order(forward):
        fast = {n: p * 1.5 for n, p in mlp.named_parameters()}  # fast weights in the graph of the slow ones
        loss = nn.functional.cross_entropy(forward(fast, x), y)
        grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
        return torch.autograd.grad(sum(g.square().sum() for g in grads), list(mlp.parameters()))

    direct = functional_forward(mlp)
    reference = lambda p, inputs: functional_call(mlp, p, (inputs,))  # noqa: E731
    params = dict(mlp.named_parameters())
    assert torch.equal(direct(params, x), reference(params, x))
    for mine, theirs in zip(second_order(direct), second_order(reference)):
        assert torch.allclose(mine, theirs, rtol=0, atol=1e-12)


def test_other_models_and_hooked_mlps_go_through_functional_call():
    torch.manual_seed(0)
    conv = Conv4((1, 28, 28), 5, filters=4)
    x = torch.randn(2, 1, 28, 28)
    params = dict(conv.named_parameters())
    assert torch.equal(functional_forward(conv)(params, x), functional_call(conv, params, (x,)))

    mlp = MLP((3,), 2, hidden=[4])
    mlp[1].register_forward_hook(lambda module, inputs, output: output * 0)  # the hook must be honoured
    out = functional_forward(mlp)(dict(mlp.named_parameters()), torch.randn(5, 3))
    assert torch.equal(out, mlp[3](mlp[2](torch.zeros(5, 4))).expand(5, 2))


def test_inits_have_zero_biases_and_the_documented_weight_scales():
    torch.manual_seed(0)
    kaiming = MLP((784,), 10, hidden=[400, 400], init="kaiming_normal")
    xavier = MLP((784,), 10, hidden=[400, 400], init="xavier_uniform")
    torch.manual_seed(0)
    default = MLP((784,), 10, hidden=[400, 400])
    for index, fan_in in ((1, 784), (3, 400)):
        assert torch.count_nonzero(kaiming[index].bias) == 0 and torch.count_nonzero(xavier[index].bias) == 0
        # He et al.: std sqrt(2 / fan_in); Glorot: U(-a, a), a = sqrt(6 / (fan_in + fan_out))
        assert abs(kaiming[index].weight.std().item() / (2 / fan_in) ** 0.5 - 1) < 0.02
        assert abs(xavier[index].weight.abs().max().item() / (6 / (fan_in + 400)) ** 0.5 - 1) < 1e-3
    assert abs(default[1].weight.std().item() * (3 * 784) ** 0.5 - 1) < 0.02     # PyTorch: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    with pytest.raises(ValueError, match="unknown init 'xavier': use one of 'pytorch', 'kaiming_normal', 'xavier_uniform'"):
        MLP((4,), 2, init="xavier")
