import pytest
import torch

from rog.models import ROG
from rog.models.depthwise import DepthwiseConv3d, _DepthwiseConv3dFn


@pytest.mark.parametrize("stride,shape", [
    ((1, 1, 1), (2, 6, 9, 10, 11)), ((2, 2, 2), (2, 6, 9, 10, 11)), ((2, 2, 2), (1, 4, 8, 8, 8)),
    ((2, 2, 1), (1, 4, 8, 10, 7)), ((1, 2, 2), (2, 3, 6, 7, 6)),
])
def test_depthwise_equals_pytorch_forward_and_gradients(stride, shape):
    x = torch.randn(shape, requires_grad=True)
    ref = torch.nn.Conv3d(shape[1], shape[1], 3, stride, 1, groups=shape[1], bias=False)
    y_ref = ref(x)
    g = torch.randn_like(y_ref)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x, ref.weight), g)
    y = _DepthwiseConv3dFn.apply(x, ref.weight, stride)
    gx, gw = torch.autograd.grad(y, (x, ref.weight), g)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    assert ((gx - gx_ref).abs().max() / gx_ref.abs().max()) < 1e-4
    assert ((gw - gw_ref).abs().max() / gw_ref.abs().max()) < 1e-4


def test_module_is_a_drop_in_conv3d():
    m = DepthwiseConv3d(5, (2, 2, 1))
    assert isinstance(m, torch.nn.Conv3d) and set(m.state_dict()) == {"weight"}
    x = torch.randn(1, 5, 8, 8, 6)
    assert m(x).shape == (1, 5, 4, 4, 6)


def test_fast_and_plain_rog_agree_in_gradients():
    fast = ROG(1, 3, (1, 1, 2), width=8)
    plain = ROG(1, 3, (1, 1, 2), width=8, fast=False)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(2, 1, 16, 24, 16)
    y = torch.randint(0, 3, (2, 16, 24, 16))
    grads = []
    for model in (fast, plain):
        xi = x.clone().requires_grad_(True)  # the input gradient drives Free AT and the attacks
        loss = torch.nn.functional.cross_entropy(model(xi), y)
        grads.append(torch.autograd.grad(loss, [xi, *model.parameters()]))
    for a, b in zip(*grads):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-7


@pytest.mark.parametrize("stride,shape", [((1, 1, 1), (2, 4, 9, 30, 31)), ((2, 2, 1), (1, 4, 10, 30, 31)),
                                          ((2, 1, 1), (2, 3, 11, 30, 30))])
def test_weight_gradient_in_slabs_equals_pytorch(monkeypatch, stride, shape):
    # a slab budget of one output row forces the slabbed path, edges included
    monkeypatch.setattr("rog.models.depthwise._SLAB_BYTES", 1)
    x = torch.randn(shape, requires_grad=True)
    ref = torch.nn.Conv3d(shape[1], shape[1], 3, stride, 1, groups=shape[1], bias=False)
    g = torch.randn_like(ref(x))
    gw_ref, = torch.autograd.grad(ref(x), ref.weight, g)
    gw, = torch.autograd.grad(_DepthwiseConv3dFn.apply(x, ref.weight, stride), ref.weight, g)
    assert ((gw - gw_ref).abs().max() / gw_ref.abs().max()) < 1e-4


def test_fast_rog_keeps_activations_channels_last_on_the_cpu_and_plain_does_not():
    from rog.models.norm import InstanceNorm3d
    layouts = {}
    for name, fast in (("fast", True), ("plain", False)):
        model = ROG(1, 3, (1, 1, 2), width=8, fast=fast)
        seen = []
        for m in model.modules():
            if isinstance(m, InstanceNorm3d):
                m.register_forward_hook(lambda mod, inp, out: seen.append(
                    out.is_contiguous(memory_format=torch.channels_last_3d) and not out.is_contiguous()))
        out = model(torch.randn(2, 1, 16, 24, 16))
        assert out.is_contiguous()  # logits come back in the default layout
        layouts[name] = seen
    assert all(layouts["fast"]) and not any(layouts["plain"])
