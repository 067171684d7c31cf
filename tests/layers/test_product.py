"""The quadratic product: the memory-efficient backward equals plain autograd and holds less."""
import pytest
import torch

from quadranet.layers import ConvGeometry, QuadraticProductFn, quadratic_product
from quadranet.memory import saved_tensor_bytes

# (in_ch, factors, kernel, stride, padding, dilation, groups)
CONV_CASES = [
    (4, 8, 3, 1, 2, 2, 4),  # depthwise, atrous, rank 2
    (4, 6, 3, 2, 1, 1, 1),  # full conv, strided
    (6, 4, 3, 1, 1, 1, 2),  # grouped
]


def _conv_inputs(cin, cout, k, groups, dtype=torch.float64):
    x = torch.randn(1, cin, 5, 5, dtype=dtype, requires_grad=True)
    wa = torch.randn(cout, cin // groups, k, k, dtype=dtype, requires_grad=True)
    wb = torch.randn(cout, cin // groups, k, k, dtype=dtype, requires_grad=True)
    ba = torch.randn(cout, dtype=dtype, requires_grad=True)
    bb = torch.randn(cout, dtype=dtype, requires_grad=True)
    return x, wa, ba, wb, bb


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_gradcheck(case):
    cin, cout, k, s, p, d, g = case
    geom = ConvGeometry((s, s), (p, p), (d, d), g)
    args = _conv_inputs(cin, cout, k, g)
    assert torch.autograd.gradcheck(lambda *a: QuadraticProductFn.apply(*a, geom), args, fast_mode=True)


def test_linear_gradcheck():
    x = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)
    ws = [torch.randn(4, 5, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, wa, wb, b: QuadraticProductFn.apply(x, wa, b, wb, None, None), (x, *ws, b)
    )


@pytest.mark.parametrize("memory_efficient", [False, True])
@pytest.mark.parametrize("case", CONV_CASES)
def test_fused_branches_equal_the_definition(case, memory_efficient):
    """Both branches run as one conv internally; values and gradients equal two separate convs."""
    cin, cout, k, s, p, d, g = case
    geom = ConvGeometry((s, s), (p, p), (d, d), g)
    x, wa, ba, wb, _ = _conv_inputs(cin, cout, k, g)
    args = (x, wa, ba, wb)
    a = torch.nn.functional.conv2d(x, wa, ba, s, p, d, g)
    b = torch.nn.functional.conv2d(x, wb, None, s, p, d, g)
    ref = a * b
    out = quadratic_product(x, wa, ba, wb, None, geom, memory_efficient)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad((out * weights).sum(), args), torch.autograd.grad((ref * weights).sum(), args)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_fused_linear_branches_equal_the_definition(memory_efficient):
    x = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)
    wa, wb = (torch.randn(4, 5, dtype=torch.float64, requires_grad=True) for _ in range(2))
    bb = torch.randn(4, dtype=torch.float64, requires_grad=True)
    out = quadratic_product(x, wa, None, wb, bb, None, memory_efficient=memory_efficient)
    ref = (x @ wa.t()) * (x @ wb.t() + bb)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    args = (x, wa, wb, bb)
    for got, want in zip(torch.autograd.grad(out.sum(), args), torch.autograd.grad(ref.sum(), args)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CONV_CASES)
def test_memory_efficient_matches_plain_autograd(case):
    cin, cout, k, s, p, d, g = case
    geom = ConvGeometry((s, s), (p, p), (d, d), g)
    args = _conv_inputs(cin, cout, k, g)
    grads = []
    for me in (False, True):
        out = quadratic_product(*args, geom, memory_efficient=me)
        grads.append((out, torch.autograd.grad(out.square().sum(), args)))
    (out0, g0), (out1, g1) = grads
    torch.testing.assert_close(out1, out0, rtol=0, atol=0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_memory_efficient_saves_less():
    geom = ConvGeometry((1, 1), (2, 2), (2, 2), 16)
    x = torch.randn(8, 16, 32, 32, requires_grad=True)
    wa, wb = (torch.randn(64, 1, 3, 3, requires_grad=True) for _ in range(2))
    plain, _ = saved_tensor_bytes(lambda: quadratic_product(x, wa, None, wb, None, geom))
    lean, _ = saved_tensor_bytes(lambda: quadratic_product(x, wa, None, wb, None, geom, memory_efficient=True))
    branch = 8 * 64 * 32 * 32 * 4  # one branch output in float32
    assert plain - lean == 2 * branch  # both branch outputs are no longer kept
    assert lean == x.numel() * 4 + wa.numel() * 4 * 2


def test_no_grad_path_matches():
    geom = ConvGeometry((1, 1), (1, 1), (1, 1), 1)
    x, wa, ba, wb, bb = (t.detach() for t in _conv_inputs(4, 6, 3, 1, torch.float32))
    with torch.no_grad():
        a = quadratic_product(x, wa, ba, wb, bb, geom, memory_efficient=True)
    b = quadratic_product(x, wa, ba, wb, bb, geom)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("channels, outputs, groups", [(12, 3, 3), (12, 6, 3), (8, 8, 1)])
def test_grouped_pointwise_equals_conv(channels, outputs, groups):
    from quadranet.layers.grouped import grouped_pointwise

    q = torch.randn(2, channels, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(outputs, channels // groups, 1, 1, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.functional.conv2d(q, w, None, 1, 0, 1, groups)
    out = grouped_pointwise(q, w, groups)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(torch.autograd.grad(out.sum(), (q, w)), torch.autograd.grad(ref.sum(), (q, w))):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_product_is_a_second_order_interaction_of_both_branches():
    """dL/dA = -dL/dB would mean the term depends on (A - B) x alone (see tests/layers/test_kernels.py for rbf)."""
    geom = ConvGeometry((1, 1), (2, 2), (2, 2), 4)
    x, wa, _, wb, _ = _conv_inputs(4, 8, 3, 4)
    ga, gb = torch.autograd.grad(quadratic_product(x, wa, None, wb, None, geom).square().sum(), (wa, wb))
    assert not torch.allclose(ga, -gb)
