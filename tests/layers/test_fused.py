"""The fused CPU kernel for depthwise quadratic terms equals the conv formulation P(conv(x, A) * conv(x, B)) in
float64, forward and backward, on fresh random inputs, for every geometry the adapters meet; the adapter uses
it where it applies and falls back where it cannot be built."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quadranet.layers import ConvGeometry, QuadraticAdapter, fused
from quadranet.layers.grouped import conv_formulation

# (channels, rank, kernel, stride, padding, dilation, height, width)
GEOMETRIES = [
    (8, 4, 3, 1, 2, 2, 8, 8),  # the adapter's default: 3 x 3, dilation 2, inside a 7 x 7 depthwise layer
    (8, 4, 3, 1, 2, 2, 2, 2),  # a small map: only the centre tap reads the input
    (3, 1, 3, 1, 2, 2, 1, 1),
    (70, 2, 3, 1, 2, 2, 5, 3),  # more channels than one block of 64
    (5, 2, 3, 2, 2, 2, 9, 7),  # strided
    (6, 3, 5, 2, 2, 1, 7, 8),  # EfficientNet's 5 x 5 strided layers
    (4, 5, 7, 1, 3, 1, 6, 6),
    (24, 5, 7, 1, 3, 1, 6, 6),  # register-blocked channels (ranks 1-8)
    (16, 9, 3, 1, 2, 2, 4, 4),  # rank above 8: the generic path everywhere
    (4, 2, 3, 1, "same", 2, 5, 5),
    (4, 2, 3, 1, "valid", 1, 5, 4),
]


def _geometry(c, s, p, d) -> ConvGeometry:
    return ConvGeometry((s, s), p if isinstance(p, str) else (p, p), (d, d), c)


def _reference(x, wa, wb, wp, geom):
    a, b = (F.conv2d(x, w, None, geom.stride, geom.padding, geom.dilation, geom.groups) for w in (wa, wb))
    return F.conv2d(a * b, wp, None, 1, 0, 1, geom.groups)


def _inputs(c, r, k, h, w, batch=3, dtype=torch.float64):
    x = torch.randn(batch, c, h, w, dtype=dtype, requires_grad=True)
    weights = [torch.randn(c * r, 1, k, k, dtype=dtype, requires_grad=True) for _ in range(2)]
    return x, *weights, torch.randn(c, r, 1, 1, dtype=dtype, requires_grad=True)


@pytest.fixture(scope="module", autouse=True)
def kernel_built():
    assert fused.ops() is not None, "the fused kernel did not build (see the warning above): a C++ compiler is needed"


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_equals_the_conv_formulation(geometry, channels_last):
    c, r, k, s, p, d, h, w = geometry
    tensors = _inputs(c, r, k, h, w)
    x, wa, wb, wp = tensors
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        tensors = (x, wa, wb, wp)
    geom = _geometry(c, s, p, d)
    out = fused.depthwise_quadratic(x, wa, wb, wp, geom)
    ref = _reference(x, wa, wb, wp, geom)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, tensors, grad), torch.autograd.grad(ref, tensors, grad)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_float32_within_rounding_of_float64():
    x, wa, wb, wp = _inputs(96, 4, 3, 8, 8, batch=4)
    geom = _geometry(96, 1, 2, 2)
    want = _reference(x, wa, wb, wp, geom)
    with torch.no_grad():
        got = fused.depthwise_quadratic(x.float(), wa.float(), wb.float(), wp.float(), geom)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_only_the_gradients_asked_for():
    x, wa, wb, wp = _inputs(8, 2, 3, 6, 6)
    geom = _geometry(8, 1, 2, 2)
    frozen = x.detach()  # e.g. the first adapted layer: no gradient to its input
    ga, = torch.autograd.grad(fused.depthwise_quadratic(frozen, wa, wb, wp, geom).sum(), (wa,))
    ga_ref, = torch.autograd.grad(_reference(frozen, wa, wb, wp, geom).sum(), (wa,))
    torch.testing.assert_close(ga, ga_ref, rtol=1e-12, atol=1e-12)
    weights = [t.detach() for t in (wa, wb, wp)]  # factors frozen, gradient to x only
    gx, = torch.autograd.grad(fused.depthwise_quadratic(x, *weights, geom).sum(), (x,))
    gx_ref, = torch.autograd.grad(_reference(x, *weights, geom).sum(), (x,))
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)


def test_bit_identical_reruns():
    """Fixed chunks per thread count, summed in order: the same inputs give the same bits."""
    x, wa, wb, wp = _inputs(40, 4, 3, 8, 8, batch=8, dtype=torch.float32)
    geom = _geometry(40, 1, 2, 2)
    runs = []
    for _ in range(2):
        out = fused.depthwise_quadratic(x, wa, wb, wp, geom)
        runs.append((out, *torch.autograd.grad(out.square().sum(), (x, wa, wb, wp))))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_not_for_other_terms():
    x, wa, wb, wp = _inputs(8, 2, 3, 6, 6)
    geom = _geometry(8, 1, 2, 2)
    with conv_formulation():  # FLOP counters must see the convolutions
        assert fused.depthwise_quadratic(x, wa, wb, wp, geom) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fused.depthwise_quadratic(x.float(), wa.float(), wb.float(), wp.float(), geom) is None
    assert fused.depthwise_quadratic(x.bfloat16(), wa.bfloat16(), wb.bfloat16(), wp.bfloat16(), geom) is None
    full = torch.randn(2, 4, 3, 3, dtype=torch.float64)  # a full conv's factors (4 inputs per group)
    assert fused.depthwise_quadratic(x, full, full, torch.randn(6, 2, 1, 1, dtype=torch.float64),
                                     _geometry(1, 1, 1, 1)) is None


def _count_calls(monkeypatch) -> list:
    calls = []
    apply = fused.DepthwiseQuadraticFn.apply
    monkeypatch.setattr(fused.DepthwiseQuadraticFn, "apply", lambda *a: calls.append(1) or apply(*a))
    return calls


def test_the_adapter_uses_it_on_depthwise_layers(monkeypatch):
    calls = _count_calls(monkeypatch)
    depthwise = QuadraticAdapter(nn.Conv2d(8, 8, 7, padding=3, groups=8), rank=2)
    depthwise(torch.randn(2, 8, 6, 6))
    assert calls == [1]
    QuadraticAdapter(nn.Conv2d(4, 6, 3, padding=1), rank=2)(torch.randn(2, 4, 6, 6))
    assert calls == [1]


def test_falls_back_with_a_warning_when_it_cannot_build(monkeypatch):
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension 'quadranet_dwq': c++: command not found")

    adapter = QuadraticAdapter(nn.Conv2d(8, 8, 7, padding=3, groups=8), rank=2).double()
    nn.init.normal_(adapter.quad_out.weight)
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    want = adapter(x)
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(fused, "_BUILT", {})
    with pytest.warns(RuntimeWarning, match="c\\+\\+: command not found"):
        got = adapter(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning, not one per call
        adapter(x)


@pytest.mark.slow
def test_torch_compile_traces_through_it():
    adapter = QuadraticAdapter(nn.Conv2d(16, 16, 7, padding=3, groups=16), rank=2)
    nn.init.normal_(adapter.quad_out.weight)
    x = torch.randn(4, 16, 8, 8, requires_grad=True)
    want = adapter(x)
    want_grad, = torch.autograd.grad(want.sum(), (x,))
    got = torch.compile(adapter)(x)
    got_grad, = torch.autograd.grad(got.sum(), (x,))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)
