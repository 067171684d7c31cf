"""The adapter's kernels rbf and rbf_in (the authors' RBF_kernel / RBF_kernel_in, miniHuiHui/InfiNet, InfiNet.py):
every path (fused CPU kernel, grouped convs, one-tap and trimmed small maps, memory-efficient recomputation,
channels-last, TF 'SAME' padding, linear layers) equals a float64 reference written from the formula, forward
and backward; exact at init; branch gradients that are not mirror images; clear errors."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from timm.layers.padding import pad_same
from torch import nn

from quadranet.layers import QuadraticAdapter, QuadraticConv2d, fused
from quadranet.layers.grouped import conv_formulation
from quadranet.memory import saved_tensor_bytes

KERNELS = ["rbf", "rbf_in"]
LAYERS = {
    "depthwise7": lambda: nn.Conv2d(8, 8, 7, padding=3, groups=8),  # the fused kernel's case
    "depthwise_wide": lambda: nn.Conv2d(70, 70, 3, padding=1, groups=70),  # more channels than one block
    "depthwise3_strided": lambda: nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),
    "depthwise_multiplier": lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4),
    "grouped": lambda: nn.Conv2d(8, 6, 3, padding=1, groups=2),
    "full": lambda: nn.Conv2d(4, 6, 3, padding=1),
    "pointwise": lambda: nn.Conv2d(4, 8, 1),
    "tf_same_strided": lambda: Conv2dSame(6, 6, 5, stride=2, groups=6),  # EfficientNet-Lite's TF convs
    "linear": lambda: nn.Linear(10, 6),
}


def _reference(adapter: QuadraticAdapter, x: torch.Tensor) -> torch.Tensor:
    """primary(x) + P exp(-BN(sum_i (GELU(A_i x_a) - GELU(B_i x_b))^2 / (2 sigma^2))), one factor at a time."""
    prim, a, b = adapter.primary, adapter.quad_a, adapter.quad_b
    x_a = x_b = x
    if adapter.kernel == "rbf_in":
        x_a, x_b = adapter.quad_in_a(x), adapter.quad_in_b(x)
    if isinstance(prim, nn.Linear):
        exps = [(F.gelu(x_a @ a.weight[i]) - F.gelu(x_b @ b.weight[i])) ** 2 for i in range(adapter.rank)]
        e = sum(exps).unsqueeze(-1) / (2 * adapter.sigma ** 2)
        dims = tuple(range(e.dim() - 1))
    else:
        if adapter.tf_same:
            x_a, x_b = (pad_same(t, adapter.kernel_size, a.stride, adapter.dilation) for t in (x_a, x_b))
        g = prim.groups

        def factor(t, w, i):  # factor i of every group: output channels g * rank + i
            return F.conv2d(t, w[i::adapter.rank], None, a.stride, a.padding, a.dilation, g)

        e = sum((F.gelu(factor(x_a, a.weight, i)) - F.gelu(factor(x_b, b.weight, i))) ** 2
                for i in range(adapter.rank)) / (2 * adapter.sigma ** 2)
        dims = (0, 2, 3)
    norm = adapter.quad_norm
    if adapter.training:
        mean, var = e.mean(dims, keepdim=True), e.var(dims, unbiased=False, keepdim=True)
    else:
        shape = (1, -1, 1, 1) if e.dim() == 4 else (-1,)
        mean, var = norm.running_mean.view(shape), norm.running_var.view(shape)
    shape = (1, -1, 1, 1) if e.dim() == 4 else (-1,)
    k = torch.exp(-((e - mean) / torch.sqrt(var + norm.eps) * norm.weight.view(shape) + norm.bias.view(shape)))
    if isinstance(prim, nn.Linear):
        return prim(x) + k @ adapter.quad_out.weight.t()
    return prim(x) + F.conv2d(k, adapter.quad_out.weight, None, 1, 0, 1, g)


def _adapter(name, kernel, **kwargs):
    torch.manual_seed(0)
    adapter = QuadraticAdapter(LAYERS[name](), rank=3, kernel=kernel, **kwargs).double()
    with torch.no_grad():  # P = 0 at init would hide every error but P's; BN's affine too
        nn.init.normal_(adapter.quad_out.weight)
        if kernel != "bilinear":
            adapter.quad_norm.weight.uniform_(0.5, 1.5)
            adapter.quad_norm.bias.normal_(0, 0.3)
    return adapter


def _input(adapter, size, channels_last=False):
    if isinstance(adapter.primary, nn.Linear):
        return torch.randn(3, 2, 10, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, adapter.primary.in_channels, *size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_()


def _check(adapter, x):
    inputs = (x, *(p for p in adapter.parameters() if p.requires_grad))
    out = adapter(x)
    ref = _reference(adapter, x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", ["fast", "conv_formulation", "unfused"])
@pytest.mark.parametrize("memory_efficient", [False, True])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 6)])
@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("kernel", KERNELS)
def test_every_path_equals_the_formula_in_float64(kernel, name, size, memory_efficient, path):
    adapter = _adapter(name, kernel, memory_efficient=memory_efficient)
    x = _input(adapter, size, channels_last=name.startswith("depthwise"))
    if path == "conv_formulation":
        with conv_formulation():
            _check(adapter, x)
    elif path == "unfused":
        with fused.disabled():
            _check(adapter, x)
    else:
        _check(adapter, x)


@pytest.mark.parametrize("channels_last", [False, True])  # the fused tail, and BatchNorm2d
@pytest.mark.parametrize("kernel", KERNELS)
def test_eval_mode_uses_the_running_statistics(kernel, channels_last):
    adapter = _adapter("depthwise7", kernel)
    x = _input(adapter, (6, 6), channels_last)
    adapter(x)  # one training step's statistics
    adapter.eval()
    assert adapter.quad_norm.num_batches_tracked == 1
    _check(adapter, x)


@pytest.mark.parametrize("kernel", KERNELS)
def test_fused_tail_updates_the_running_statistics_as_batchnorm(kernel, monkeypatch):
    calls = []
    apply = fused.RBFTailFn.apply
    monkeypatch.setattr(fused.RBFTailFn, "apply", lambda *a: calls.append(1) or apply(*a))
    fast = _adapter("depthwise_wide", kernel)
    plain = copy.deepcopy(fast)
    x = _input(fast, (5, 5), channels_last=True)
    for _ in range(2):
        fast(x)
        with fused.disabled():
            plain(x)
    assert calls == [1, 1]
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(fast.quad_norm, name), getattr(plain.quad_norm, name), rtol=1e-12, atol=0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_fused_kernel_float32_within_rounding_of_float64(kernel):
    adapter = _adapter("depthwise_wide", kernel)
    x = _input(adapter, (8, 8), channels_last=True)
    want = _reference(adapter, x)
    got = adapter.float()(x.detach().float())
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def _count_calls(monkeypatch) -> list:
    calls = []
    apply = fused.DepthwiseRBFExponentFn.apply
    monkeypatch.setattr(fused.DepthwiseRBFExponentFn, "apply", lambda *a: calls.append(1) or apply(*a))
    return calls


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_fused_kernel_runs_depthwise_terms(kernel, monkeypatch):
    calls = _count_calls(monkeypatch)
    QuadraticAdapter(LAYERS["depthwise7"](), rank=2, kernel=kernel)(torch.randn(2, 8, 6, 6))
    assert calls == [1]
    QuadraticAdapter(LAYERS["full"](), rank=2, kernel=kernel)(torch.randn(2, 4, 6, 6))
    with conv_formulation():  # FLOP counters see the convolutions
        QuadraticAdapter(LAYERS["depthwise7"](), rank=2, kernel=kernel)(torch.randn(2, 8, 6, 6))
    assert calls == [1]


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("kernel", KERNELS)
def test_exact_at_init_then_every_part_learns(kernel, name):
    layer = LAYERS[name]()
    adapter = QuadraticAdapter(layer, rank=3, kernel=kernel)
    x = _input(adapter, (9, 7)).float().detach()
    assert torch.equal(adapter(x), layer(x))
    adapter.eval()
    assert torch.equal(adapter(x), layer(x))
    adapter.train()
    adapter(x).square().sum().backward()
    assert adapter.quad_out.weight.grad.abs().sum() > 0  # P, the zero factor, learns first
    with torch.no_grad():
        adapter.quad_out.weight.normal_()
    adapter.zero_grad()
    adapter(x).square().sum().backward()
    for n, p in adapter.named_parameters():
        if not n.startswith("primary."):
            assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_shapes():
    a = QuadraticAdapter(nn.Conv2d(16, 16, 7, padding=3, groups=16), rank=4, kernel="rbf_in", sigma=0.5)
    assert a.quad_a.weight.shape == (64, 1, 3, 3)  # rank factors per channel, as for bilinear
    assert a.quad_out.weight.shape == (16, 1, 1, 1)  # one kernel channel per group, its own scale
    assert a.quad_in_a.weight.shape == (16, 16, 1, 1) and a.quad_in_a.bias is not None  # dense 1x1 with bias
    assert a.quad_norm.num_features == 16 and a.sigma == 0.5
    lin = QuadraticAdapter(nn.Linear(10, 6), rank=2, kernel="rbf")
    assert lin.quad_out.weight.shape == (6, 1) and lin.quad_norm.num_features == 1
    assert "kernel='rbf_in', sigma=0.5" in repr(a)


@pytest.mark.parametrize("kernel", ["bilinear", *KERNELS])
def test_branch_gradients_are_not_mirror_images(kernel):
    """dL/dA = -dL/dB would mean the term depends on (A - B) x alone; the GELU on each branch prevents it."""
    adapter = _adapter("depthwise7", kernel)
    x = _input(adapter, (6, 6))
    ga, gb = torch.autograd.grad(adapter(x).square().sum(), (adapter.quad_a.weight, adapter.quad_b.weight))
    assert not torch.allclose(ga, -gb, rtol=1e-3, atol=1e-6)
    assert (ga + gb).abs().max() > 0.1 * ga.abs().max()


def test_without_the_gelu_the_gradients_would_be_mirror_images(monkeypatch):
    """The check above can fail: the old kernel exp(-(A x - B x)^2 / 2 sigma^2) (no GELU) gives dL/dA = -dL/dB."""
    monkeypatch.setattr(F, "gelu", lambda t: t)
    adapter = _adapter("depthwise7", "rbf")
    x = _input(adapter, (6, 6))
    with fused.disabled():  # the fused kernel has the GELU built in
        ga, gb = torch.autograd.grad(adapter(x).square().sum(), (adapter.quad_a.weight, adapter.quad_b.weight))
    torch.testing.assert_close(ga, -gb)


@pytest.mark.parametrize("kernel", KERNELS)
def test_memory_efficient_keeps_no_factor_maps(kernel):
    """Plain autograd keeps the 2 x rank factor maps and the rank differences GELU(a) - GELU(b); the memory-efficient
    path keeps the term's inputs and the C-channel maps of BN and exp; the fused kernels keep the inputs and the
    exponent."""
    def saved(memory_efficient, fuse):
        adapter = QuadraticAdapter(nn.Conv2d(16, 16, 7, padding=3, groups=16), rank=4, kernel=kernel,
                                   memory_efficient=memory_efficient)
        x = torch.randn(8, 16, 32, 32, requires_grad=True).contiguous(memory_format=torch.channels_last)
        if fuse:
            return saved_tensor_bytes(lambda: adapter.quadratic(x))[0]
        with fused.disabled():
            return saved_tensor_bytes(lambda: adapter.quadratic(x))[0]

    plain, lean, fast = saved(False, False), saved(True, False), saved(False, True)
    channel_map = 8 * 16 * 32 * 32 * 4  # one C-channel float32 map
    assert plain - lean == 3 * 4 * channel_map  # a, b and their GELUs' difference at rank 4
    assert lean <= 8 * channel_map
    # fused: x and the exponent e (rbf_in: and P_a x, P_b x), and the weights
    maps = 2 if kernel == "rbf" else 4
    assert maps * channel_map < fast < maps * channel_map + 8192


@pytest.mark.parametrize("sigma", [0, -1.0, math.inf, math.nan, "1", True])
def test_bad_sigma(sigma):
    with pytest.raises(ValueError, match=f"sigma={sigma!r}"):
        QuadraticAdapter(nn.Conv2d(4, 4, 3, padding=1, groups=4), kernel="rbf", sigma=sigma)


def test_bad_kernel_names_the_choices():
    with pytest.raises(ValueError, match="kernel='RBF'.*'bilinear', 'rbf', 'rbf_in'"):
        QuadraticAdapter(nn.Linear(4, 4), kernel="RBF")


def test_the_v1_neuron_has_the_product_alone():
    with pytest.raises(ValueError, match="kernel='rbf' is not supported by the V1 neuron"):
        QuadraticConv2d(4, 4, 3, padding=1, kernel="rbf")


# (channels, rank, kernel, stride, padding, dilation, height, width): the fused exponent kernel's own table
GEOMETRIES = [
    (8, 4, 3, 1, 2, 2, 8, 8),
    (8, 4, 3, 1, 2, 2, 2, 2),  # a small map: only the centre tap reads the input
    (70, 2, 3, 1, 2, 2, 5, 3),  # more channels than one block of 64
    (6, 3, 5, 2, 2, 1, 7, 8),  # strided
    (24, 5, 7, 1, 3, 1, 6, 6),  # register-blocked channels
    (16, 9, 3, 1, 2, 2, 4, 4),  # rank above 8: the generic path everywhere
    (4, 2, 3, 1, "same", 2, 5, 5),
    (4, 2, 3, 1, "valid", 1, 5, 4),
]


@pytest.mark.parametrize("two_inputs", [False, True])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_fused_exponent_equals_its_definition(geometry, two_inputs):
    from quadranet.layers import ConvGeometry
    from quadranet.layers.product import rbf_exponent

    c, r, k, s, p, d, h, w = geometry
    geom = ConvGeometry((s, s), p if isinstance(p, str) else (p, p), (d, d), c)
    x_a, x_b = (torch.randn(3, c, h, w, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
                .requires_grad_() for _ in range(2))
    x_b = x_b if two_inputs else None
    wa, wb = (torch.randn(c * r, 1, k, k, dtype=torch.float64, requires_grad=True) for _ in range(2))
    got = fused.depthwise_rbf_exponent(x_a, x_b, wa, wb, 0.3, geom)
    with conv_formulation():
        want = rbf_exponent(x_a, x_b, wa, wb, geom, 0.3)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    inputs = [t for t in (x_a, x_b, wa, wb) if t is not None]
    grad = torch.randn_like(want)
    for g, h_ in zip(torch.autograd.grad(got, inputs, grad), torch.autograd.grad(want, inputs, grad)):
        torch.testing.assert_close(g, h_, rtol=1e-11, atol=1e-11)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
def test_torch_compile_traces_through_the_fused_kernels(kernel):
    adapter = QuadraticAdapter(nn.Conv2d(16, 16, 7, padding=3, groups=16), rank=2, kernel=kernel)
    nn.init.normal_(adapter.quad_out.weight)
    eager = copy.deepcopy(adapter)
    x = torch.randn(4, 16, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    want = eager(x)
    want_grad, = torch.autograd.grad(want.sum(), (x,))
    got = torch.compile(adapter)(x)
    got_grad, = torch.autograd.grad(got.sum(), (x,))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)
    torch.testing.assert_close(adapter.quad_norm.running_var, eager.quad_norm.running_var)


@pytest.mark.parametrize("kernel", KERNELS)
def test_bf16_autocast_takes_the_unfused_path(kernel):
    adapter = _adapter("depthwise7", kernel).float()
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = adapter(x)
    want = adapter(x)
    torch.testing.assert_close(out.float(), want, rtol=0.05, atol=0.05 * want.abs().max().item())
    out.float().square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in adapter.parameters() if p.grad is not None)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", ["depthwise7", "full", "linear"])
def test_gpu_matches_the_cpu(kernel, name):
    adapter = _adapter(name, kernel)
    x = _input(adapter, (5, 5)).detach()
    outs = []
    for device in ("cpu", "cuda"):
        net, xd = copy.deepcopy(adapter).to(device), x.to(device).requires_grad_()
        y = net(xd)
        grads = torch.autograd.grad(y.square().sum(), (xd, *net.parameters()))
        outs.append([t.cpu() for t in (y, *grads, net.quad_norm.running_var)])
    for got, want in zip(*outs):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
