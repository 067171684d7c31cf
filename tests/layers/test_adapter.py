"""QuadraticAdapter: exact at init, learns, validates its options."""
import pytest
import torch
from timm.layers import Conv2dSame
from torch import nn

from quadranet.layers import QuadraticAdapter

CONVS = {
    "depthwise": lambda: nn.Conv2d(8, 8, 7, padding=3, groups=8),
    "depthwise_multiplier": lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4),
    "full_strided": lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1),
    "grouped": lambda: nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False),
    "valid": lambda: nn.Conv2d(4, 4, 3, padding=0),
    "same_string": lambda: nn.Conv2d(4, 4, 5, padding="same"),
    "pointwise": lambda: nn.Conv2d(4, 8, 1),
    "tf_same_strided": lambda: Conv2dSame(6, 6, 5, stride=2, groups=6),  # EfficientNet-Lite's TF convs
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_conv_adapter_exact_at_init_then_learns(name):
    conv = CONVS[name]()
    x = torch.randn(2, conv.in_channels, 15, 13)
    ref = conv(x).detach()
    adapter = QuadraticAdapter(conv, rank=3)
    out = adapter(x)
    assert torch.equal(out, ref)
    out.square().sum().backward()
    assert adapter.quad_out.weight.grad.abs().sum() > 0  # the zero factor receives a gradient
    opt = torch.optim.SGD([adapter.quad_out.weight], lr=0.1)
    opt.step()
    adapter.zero_grad()
    adapter(x).square().sum().backward()
    assert adapter.quad_a.weight.grad.abs().sum() > 0 and adapter.quad_b.weight.grad.abs().sum() > 0
    assert not torch.equal(adapter(x), ref)


def test_linear_adapter_exact_at_init():
    fc = nn.Linear(10, 6)
    x = torch.randn(4, 3, 10)
    adapter = QuadraticAdapter(fc, rank=2)
    assert torch.equal(adapter(x), fc(x))
    assert adapter.quad_a.weight.shape == (2, 10) and adapter.quad_out.weight.shape == (6, 2)


def test_primary_is_kept_and_freezable():
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    w = conv.weight.detach().clone()
    adapter = QuadraticAdapter(conv, freeze_primary=True)
    assert adapter.primary is conv and torch.equal(conv.weight, w)
    assert not conv.weight.requires_grad and adapter.quad_a.weight.requires_grad


def test_factor_geometry():
    adapter = QuadraticAdapter(nn.Conv2d(16, 16, 7, padding=3, groups=16), rank=4, kernel_size=3, dilation=3)
    assert adapter.quad_a.weight.shape == (64, 1, 3, 3)  # one grouped conv computes all 4 factors per channel
    assert adapter.quad_a.dilation == (3, 3) and adapter.quad_a.padding == (3, 3)
    assert adapter.quad_out.weight.shape == (16, 4, 1, 1)


@pytest.mark.parametrize("rank", [0, -2, 1.5, True])
def test_bad_rank(rank):
    with pytest.raises(ValueError, match=f"rank={rank!r}"):
        QuadraticAdapter(nn.Conv2d(4, 4, 3, padding=1), rank=rank)


def test_bad_kernel():
    with pytest.raises(ValueError, match="kernel='cubic'.*bilinear"):
        QuadraticAdapter(nn.Linear(4, 4), kernel="cubic")


def test_kernel_size_that_does_not_fit():
    # primary k=3, p=1 keeps H; an even kernel with dilation 1 cannot
    with pytest.raises(ValueError, match=r"kernel_size=\(2, 2\).*does not fit"):
        QuadraticAdapter(nn.Conv2d(4, 4, 3, padding=1), kernel_size=2, dilation=1, name="conv")


def test_dilation_that_does_not_fit_a_valid_conv():
    # a valid 5x5 conv shrinks H by 4; a 3x3 factor with dilation 1 can only shrink it by 2
    with pytest.raises(ValueError, match=r"dilation=\(1, 1\).*at least 4"):
        QuadraticAdapter(nn.Conv2d(4, 4, 5, padding=0), kernel_size=3, dilation=1)
    fits = QuadraticAdapter(nn.Conv2d(4, 4, 5, padding=0), kernel_size=3, dilation=2)
    assert fits(torch.randn(1, 4, 11, 11)).shape == (1, 4, 7, 7)


def test_unsupported_layer():
    with pytest.raises(TypeError, match="BatchNorm2d"):
        QuadraticAdapter(nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match="Conv2d"):
        QuadraticAdapter(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))


def test_memory_efficient_adapter_matches():
    conv = nn.Conv2d(6, 6, 5, padding=2, groups=6)
    a = QuadraticAdapter(conv, rank=2)
    nn.init.normal_(a.quad_out.weight)
    b = QuadraticAdapter(nn.Conv2d(6, 6, 5, padding=2, groups=6), rank=2, memory_efficient=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 6, 9, 9)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb)
    ya.sum().backward()
    yb.sum().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


@pytest.mark.parametrize("size", [(16, 16), (15, 13), (7, 9)])
def test_tf_same_factors_follow_the_primary_grid(size):
    conv = Conv2dSame(6, 6, 3, stride=2, groups=6)
    adapter = QuadraticAdapter(conv, rank=2, kernel_size=3, dilation=2)
    nn.init.normal_(adapter.quad_out.weight)
    x = torch.randn(1, 6, *size)
    assert adapter.quadratic(x).shape == conv(x).shape == (1, 6, -(-size[0] // 2), -(-size[1] // 2))


@pytest.mark.parametrize("name", sorted(CONVS))
@pytest.mark.parametrize("kind", ["quadratic", "lora"])
def test_channels_last_model_gets_gradients_in_its_parameters_strides(name, kind):
    """DDP's gradient buckets take each parameter's strides; a gradient with other strides is copied every step
    with the warning "Grad strides do not match bucket view strides". After `.to(memory_format=channels_last)`
    every parameter's gradient must come back with that parameter's strides, on every path of the term."""
    from quadranet.layers import LowRankAdapter
    from quadranet.layers.fused import disabled

    torch.manual_seed(0)
    layer = QuadraticAdapter(CONVS[name]()) if kind == "quadratic" else LowRankAdapter(CONVS[name](), rank=2)
    nn.init.normal_((layer.quad_out if kind == "quadratic" else layer.lora_b).weight)
    layer.to(memory_format=torch.channels_last)
    small = 3 if name == "valid" else 2  # a 2 x 2 map: the 3 x 3 dilation-2 factors read one tap
    for size, fused in ((9, True), (9, False), (small, True)):  # the fused kernel, the grouped convs, small maps
        x = torch.randn(2, layer.primary.in_channels, size, size).contiguous(memory_format=torch.channels_last)
        layer.zero_grad(set_to_none=True)
        if fused:
            layer(x).square().sum().backward()
        else:
            with disabled():
                layer(x).square().sum().backward()
        for pname, p in layer.named_parameters():
            assert p.grad.stride() == p.stride(), (pname, size, fused)
