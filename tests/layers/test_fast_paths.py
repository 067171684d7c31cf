"""Every CPU fast path (trimmed kernels, one-tap factors, merged LoRA) equals the plain formulation in float64,
forward and backward, on fresh random inputs; the GPU runs the plain formulation and matches the CPU."""
import pytest
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from torch import nn

from quadranet.layers import ConvGeometry, LowRankAdapter, QuadraticAdapter
from quadranet.layers.grouped import conv_formulation, grouped_conv, one_tap

# (channels, groups, multiplier, kernel, stride, padding, dilation)
CONVS = [
    (4, 4, 8, 3, 1, 2, 2),  # the adapter's atrous factors
    (4, 4, 2, 7, 1, 3, 1),  # LoRA's factor beside a 7 x 7 depthwise conv
    (4, 4, 3, 3, 2, 1, 1),  # strided
    (4, 4, 2, 5, 2, 2, 1),
    (4, 4, 2, 3, 1, "same", 2),
    (4, 4, 1, 3, 1, 0, 2),  # valid
    (6, 2, 2, 3, 1, 2, 2),  # three input channels per group
]
SIZES = [(1, 1), (2, 2), (2, 3), (3, 3), (4, 5), (8, 8)]


def _grads(out, inputs):
    return torch.autograd.grad((out * torch.randn_like(out)).sum(), inputs)


def _assert_same(fast, plain, inputs):
    """`fast()` and `plain()` (the same function, run outside and inside `conv_formulation`) agree, with gradients."""
    torch.manual_seed(1)
    out = fast()
    got = _grads(out, inputs)
    torch.manual_seed(1)
    with conv_formulation():
        ref = plain()
        want = _grads(ref, inputs)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("conv", CONVS)
def test_trimmed_conv_equals_conv(conv, size):
    c, g, mult, k, s, p, d = conv
    if p == "same" and s > 1:
        pytest.skip("padding='same' needs stride 1")
    geom = ConvGeometry((s, s), p if isinstance(p, str) else (p, p), (d, d), g)
    x = torch.randn(2, c, *size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(g * mult, c // g, k, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(g * mult, dtype=torch.float64, requires_grad=True)
    try:
        F.conv2d(x, w, b, geom.stride, geom.padding, geom.dilation, g)
    except RuntimeError:
        pytest.skip("the kernel does not fit this map")
    _assert_same(lambda: grouped_conv(x, w, b, geom), lambda: grouped_conv(x, w, b, geom), (x, w, b))


def test_small_maps_read_one_tap():
    """A 3 x 3 dilation-2 factor on maps of up to 2 x 2 reads only its centre; on 3 x 3 it reads all taps."""
    geom = ConvGeometry((1, 1), (2, 2), (2, 2), 4)
    for size in (1, 2):
        xs, tap = one_tap(torch.randn(1, 4, size, size), (3, 3), geom)
        assert tap == (1, 1) and xs.shape[-2:] == (size, size)
    assert one_tap(torch.randn(1, 4, 3, 3), (3, 3), geom) is None
    with conv_formulation():
        assert one_tap(torch.randn(1, 4, 1, 1), (3, 3), geom) is None


LAYERS = {
    "depthwise7": lambda: nn.Conv2d(8, 8, 7, padding=3, groups=8),
    "depthwise3_strided": lambda: nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),
    "depthwise_multiplier": lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4),
    "full": lambda: nn.Conv2d(4, 6, 3, padding=1),
    "tf_same_strided": lambda: Conv2dSame(6, 6, 5, stride=2, groups=6),
    "linear": lambda: nn.Linear(10, 6),
}


def _adapter_inputs(layer, size):
    if isinstance(layer, nn.Linear):
        return torch.randn(3, 10, dtype=torch.float64, requires_grad=True)
    return torch.randn(3, layer.in_channels, *size, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("memory_efficient", [False, True])
@pytest.mark.parametrize("freeze", [False, True])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 2), (6, 6)])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_quadratic_adapter_fast_paths(name, size, freeze, memory_efficient):
    adapter = QuadraticAdapter(LAYERS[name](), rank=3, memory_efficient=memory_efficient,
                               freeze_primary=freeze).double()
    nn.init.normal_(adapter.quad_out.weight)
    x = _adapter_inputs(adapter.primary, size)
    inputs = (x, *(p for p in adapter.parameters() if p.requires_grad))
    _assert_same(lambda: adapter(x), lambda: adapter(x), inputs)


@pytest.mark.parametrize("kwargs", [{}, dict(kernel_size=3, dilation=2)])  # merged, and trimmed
@pytest.mark.parametrize("freeze", [False, True])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 2), (6, 6)])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_lora_fast_paths(name, size, freeze, kwargs):
    adapter = LowRankAdapter(LAYERS[name](), rank=2, freeze_primary=freeze, **kwargs).double()
    nn.init.normal_(adapter.lora_b.weight)
    x = _adapter_inputs(adapter.primary, size)
    inputs = (x, *(p for p in adapter.parameters() if p.requires_grad))
    _assert_same(lambda: adapter(x), lambda: adapter.primary(x) + adapter.low_rank(x), inputs)


@pytest.mark.gpu
@pytest.mark.parametrize("cls", [QuadraticAdapter, LowRankAdapter])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (8, 8)])
def test_gpu_matches_the_cpu(cls, size):
    adapter = cls(nn.Conv2d(8, 8, 7, padding=3, groups=8), rank=2).double()
    nn.init.normal_(adapter.quad_out.weight if cls is QuadraticAdapter else adapter.lora_b.weight)
    x = torch.randn(3, 8, *size, dtype=torch.float64)
    outs = []
    for device in ("cpu", "cuda"):
        net, xd = adapter.to(device), x.to(device).requires_grad_()
        y = net(xd)
        grads = torch.autograd.grad(y.square().sum(), (xd, *net.parameters()))
        outs.append([t.cpu() for t in (y, *grads)])
    for got, want in zip(*outs):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size", [(3, 2), (6, 6)])
@pytest.mark.parametrize("name", ["depthwise7", "depthwise3_strided", "tf_same_strided"])
def test_channels_last_inputs(name, size):
    """Channels-last inputs restride the factor weights (oneDNN picks its kernel by them): same values."""
    for adapter in (QuadraticAdapter(LAYERS[name](), rank=3), LowRankAdapter(LAYERS[name](), rank=2)):
        adapter = adapter.double().to(memory_format=torch.channels_last)
        nn.init.normal_(adapter.quad_out.weight if isinstance(adapter, QuadraticAdapter) else adapter.lora_b.weight)
        x = _adapter_inputs(adapter.primary, size).detach().contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        _assert_same(lambda: adapter(x), lambda: adapter(x), (x, *adapter.parameters()))
