"""LowRankAdapter and lora_adapt: exact at init, learns, merges, matches the quadratic parameter budget."""
import pytest
import timm
import torch
from timm.layers import Conv2dSame
from torch import nn

import quadranet
from quadranet.convert import lora_adapt, lora_adapters, lora_parameters, matched_lora_rank, select_layers, unlora
from quadranet.layers import LowRankAdapter

# name -> (primary layer, LowRankAdapter kwargs)
TEST_CASES = {
    "depthwise": (lambda: nn.Conv2d(8, 8, 7, padding=3, groups=8), {}),
    "depthwise_atrous": (lambda: nn.Conv2d(8, 8, 7, padding=3, groups=8), dict(kernel_size=3, dilation=2)),
    "depthwise_multiplier": (lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4), {}),
    "full_strided": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1), {}),
    "grouped_no_bias": (lambda: nn.Conv2d(8, 6, 3, padding=1, groups=2, bias=False), {}),
    "dilated": (lambda: nn.Conv2d(4, 4, 3, padding=2, dilation=2), dict(dilation=None)),  # None: the primary's
    "dilated_undilated_factor": (lambda: nn.Conv2d(4, 4, 3, padding=2, dilation=2), dict(dilation=1)),
    "valid": (lambda: nn.Conv2d(4, 4, 3, padding=0), {}),
    "same_string": (lambda: nn.Conv2d(4, 4, 5, padding="same"), {}),
    "pointwise": (lambda: nn.Conv2d(4, 8, 1), {}),
    "tf_same_strided": (lambda: Conv2dSame(6, 6, 5, stride=2, groups=6), {}),
    "tf_same_strided_atrous": (lambda: Conv2dSame(6, 6, 5, stride=2, groups=6), dict(kernel_size=3, dilation=2)),
    "linear": (lambda: nn.Linear(10, 6), {}),
}
# A of the primary's own geometry, or a smaller / dilated A on the primary's taps (3 x 3 dilation 2 inside 7 x 7)
MERGEABLE = sorted([k for k, (_, kw) in TEST_CASES.items() if kw in ({}, dict(dilation=None))] + ["depthwise_atrous"])
MODELS = {"convnext_atto": 12, "resnet18": 17, "efficientnet_lite0": 16}  # layers the default targets choose
# timm's random-init ResNet zeroes each block's last BN scale, which would cut every gradient inside the blocks
MODEL_KWARGS = {"resnet18": dict(zero_init_last=False)}


def _input(layer):
    return torch.randn(2, 3, 10) if isinstance(layer, nn.Linear) else torch.randn(2, layer.in_channels, 15, 13)


@pytest.mark.parametrize("name", sorted(TEST_CASES))
def test_exact_at_init_then_learns(name):
    make, kwargs = TEST_CASES[name]
    layer = make()
    x = _input(layer)
    ref = layer(x).detach()
    adapter = LowRankAdapter(layer, rank=3, **kwargs)
    assert torch.equal(adapter.lora_b.weight, torch.zeros_like(adapter.lora_b.weight))
    out = adapter(x)
    assert torch.equal(out, ref)
    out.square().sum().backward()
    assert adapter.lora_b.weight.grad.abs().sum() > 0  # the zero factor gets a gradient at init
    torch.optim.SGD(adapter.parameters(), lr=0.1).step()
    adapter.zero_grad()
    adapter(x).square().sum().backward()
    assert adapter.lora_a.weight.grad.abs().sum() > 0 and adapter.lora_b.weight.grad.abs().sum() > 0
    assert not torch.equal(adapter(x).detach(), ref)


@pytest.mark.parametrize("name", MERGEABLE)
def test_merge_equals_adapter(name):
    make, kwargs = TEST_CASES[name]
    adapter = LowRankAdapter(make(), rank=2, **kwargs)
    nn.init.normal_(adapter.lora_b.weight)  # a trained B
    x = _input(adapter.primary)
    merged = adapter.merge()
    assert type(merged) is type(adapter.primary) and merged.weight.shape == adapter.primary.weight.shape
    with torch.no_grad():
        torch.testing.assert_close(merged(x), adapter(x), rtol=1e-5, atol=1e-5)
    adapter.enabled = False
    with torch.no_grad():
        assert torch.equal(adapter(x), adapter.primary(x))


@pytest.mark.parametrize("name", sorted(set(TEST_CASES) - set(MERGEABLE)))
def test_merge_refuses_other_kernel_or_dilation(name):
    make, kwargs = TEST_CASES[name]
    adapter = LowRankAdapter(make(), **kwargs)
    assert not adapter.mergeable
    with pytest.raises(ValueError, match="cannot merge"):
        adapter.merge()


def test_geometry_is_per_group():
    adapter = LowRankAdapter(nn.Conv2d(16, 16, 7, padding=3, groups=16), rank=4, kernel_size=3, dilation=3)
    assert adapter.lora_a.weight.shape == (64, 1, 3, 3) and adapter.lora_a.padding == (3, 3)
    assert adapter.lora_b.weight.shape == (16, 4, 1, 1) and adapter.lora_b.groups == 16


@pytest.mark.parametrize("rank", [0, -1, 1.5, True])
def test_rank_must_be_positive_int(rank):
    with pytest.raises(ValueError, match=f"rank={rank!r}"):
        LowRankAdapter(nn.Conv2d(4, 4, 3, padding=1), rank=rank)
    with pytest.raises(ValueError, match=f"rank={rank!r}"):
        lora_adapt(timm.create_model("resnet18", num_classes=2), rank=rank)


def test_bad_geometry_is_a_value_error():
    with pytest.raises(ValueError, match="dilation=0"):
        LowRankAdapter(nn.Conv2d(4, 4, 3, padding=1), dilation=0)
    with pytest.raises(ValueError, match="does not fit"):  # even kernel cannot keep a padding-1 3x3 grid
        LowRankAdapter(nn.Conv2d(4, 4, 3, padding=1), kernel_size=2)
    with pytest.raises(TypeError, match="Conv2d"):
        LowRankAdapter(nn.Conv1d(4, 4, 3))


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_model_exact_at_init_gradients_and_unlora(arch):
    model = timm.create_model(arch, num_classes=3, **MODEL_KWARGS.get(arch, {})).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    lora_adapt(model, rank=2, freeze_primary=True)
    found = list(lora_adapters(model))
    assert [n for n, _ in found] == select_layers(timm.create_model(arch)) and len(found) == MODELS[arch]
    assert all(not a.primary.weight.requires_grad for _, a in found)
    with torch.no_grad():
        assert (model(x) - ref).abs().max().item() <= 1e-5
    model.train()
    opt = torch.optim.SGD(lora_parameters(model), lr=0.5)
    for _ in range(2):  # step 1 moves the zero B, step 2 then reaches A
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), torch.tensor([0, 1])).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lora_parameters(model))
        opt.step()
    assert all(a.lora_a.weight.grad.abs().sum() > 0 for _, a in found)
    model.eval().double()  # in float64, so that rounding (amplified by random-init depth) cannot hide an error
    with torch.no_grad():
        adapted = model(x.double())
        merged = unlora(model)
        assert not list(lora_adapters(merged))
        torch.testing.assert_close(merged(x.double()), adapted, rtol=1e-9, atol=1e-9)


def test_lora_adapt_refuses_adapted_models():
    model = quadranet.quadratize(timm.create_model("resnet18", num_classes=2))
    with pytest.raises(ValueError, match="already adapted"):
        lora_adapt(model)
    model = lora_adapt(timm.create_model("resnet18", num_classes=2))
    with pytest.raises(ValueError, match="already adapted"):
        lora_adapt(model)


@pytest.mark.parametrize("arch,quadratic_rank,kwargs", [
    ("convnext_atto", 4, {}),
    ("convnext_atto", 8, dict(kernel_size=5, dilation=1)),
    ("resnet18", 2, {}),
    ("efficientnet_lite0", 4, {}),
    ("test_convnext", 4, {}),  # a whole rank on every layer adds 32% more than the quadratic adapter here
])
def test_matched_ranks_per_layer_add_the_quadratic_count_within_5_percent(arch, quadratic_rank, kwargs):
    model = timm.create_model(arch, num_classes=2)
    before = sum(p.numel() for p in model.parameters())
    m = matched_lora_rank(model, quadratic_rank, **kwargs)
    assert sum(p.numel() for p in model.parameters()) == before  # counted on copies
    quad = quadranet.quadratize(timm.create_model(arch, num_classes=2), rank=quadratic_rank, **kwargs)
    assert m.quadratic_params == sum(p.numel() for p in quadranet.quadratic_parameters(quad))
    lora = lora_adapt(timm.create_model(arch, num_classes=2), rank=m.ranks)
    assert m.lora_params == sum(p.numel() for p in lora_parameters(lora))
    assert set(m.ranks.values()) <= {m.rank, m.rank + 1}
    assert abs(m.mismatch) <= 0.05
    with pytest.raises(ValueError, match="quadratic_rank=0"):
        matched_lora_rank(model, 0)


def test_lora_adapt_refuses_ranks_that_miss_a_layer():
    model = timm.create_model("test_convnext", num_classes=2)
    with pytest.raises(ValueError, match="no rank for layer 'stages.0.blocks.0.conv_dw'"):
        lora_adapt(model, rank={"stem.0": 2})
    assert not lora_adapters(model)  # left as it was
