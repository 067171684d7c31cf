"""LoRA merged into its layer for deployment (`LowRankAdapter.merge`, `merge_lora`, as peft's merge_and_unload): the
same outputs in float64, a plain layer of the primary's type and shape (no added parameter or FLOP), dilated and
grouped convs included, and a smaller or dilated A placed on the primary's taps; one error naming what cannot merge."""
import pytest
import timm
import torch
from timm.layers import Conv2dSame
from torch import nn

from quadranet.convert import conversion_report, lora_adapt, lora_adapters, merge_lora, model_flops  # noqa: F401
from quadranet.layers import LowRankAdapter

# name -> (primary layer, LowRankAdapter kwargs)
TEST_CASES = {
    "depthwise": (lambda: nn.Conv2d(8, 8, 7, padding=3, groups=8), {}),
    "depthwise_atrous_inside": (lambda: nn.Conv2d(8, 8, 7, padding=3, groups=8), dict(kernel_size=3, dilation=2)),
    "depthwise_small_inside": (lambda: nn.Conv2d(8, 8, 7, padding=3, groups=8), dict(kernel_size=3, dilation=1)),
    "dilated": (lambda: nn.Conv2d(4, 4, 3, padding=2, dilation=2), dict(dilation=None)),
    "dilated_atrous_inside": (lambda: nn.Conv2d(4, 4, 5, padding=4, dilation=2), dict(kernel_size=3, dilation=4)),
    "grouped": (lambda: nn.Conv2d(8, 6, 3, padding=1, groups=2, bias=False), {}),
    "grouped_strided_inside": (lambda: nn.Conv2d(8, 8, 5, stride=2, padding=2, groups=4), dict(kernel_size=3)),
    "depthwise_multiplier": (lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4), {}),
    "same_string": (lambda: nn.Conv2d(4, 4, 5, padding="same"), dict(kernel_size=3)),
    "tf_same": (lambda: Conv2dSame(6, 6, 5, stride=2, groups=6), {}),
    "pointwise": (lambda: nn.Conv2d(4, 8, 1), {}),
    "linear": (lambda: nn.Linear(10, 6), {}),
}
UNMERGEABLE = {
    "dilated_undilated_factor": (lambda: nn.Conv2d(4, 4, 3, padding=2, dilation=2), dict(dilation=1)),
    "factor_larger_than_primary": (lambda: nn.Conv2d(4, 4, 3, padding=1), dict(kernel_size=3, dilation=2)),
    "tf_same_atrous": (lambda: Conv2dSame(6, 6, 5, stride=2, groups=6), dict(kernel_size=3, dilation=2)),
}


def _adapter(make, kwargs):
    adapter = LowRankAdapter(make(), rank=2, **kwargs).double()
    nn.init.normal_(adapter.lora_b.weight)  # B = 0 at init would make any merge look exact
    return adapter


def _input(layer):
    return (torch.randn(2, 3, 10, dtype=torch.float64) if isinstance(layer, nn.Linear)
            else torch.randn(2, layer.in_channels, 11, 9, dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(TEST_CASES))
def test_merged_layer_equals_the_adapter(name):
    adapter = _adapter(*TEST_CASES[name])
    assert adapter.mergeable
    x = _input(adapter.primary)
    with torch.no_grad():
        expected = adapter.primary(x) + adapter.low_rank(x)  # the unmerged formulation, term by term
        merged = adapter.merge()
        assert type(merged) is type(adapter.primary) and merged.weight.shape == adapter.primary.weight.shape
        torch.testing.assert_close(merged(x), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(UNMERGEABLE))
def test_unmergeable_factor_is_refused(name):
    adapter = _adapter(*UNMERGEABLE[name])
    assert not adapter.mergeable
    with pytest.raises(ValueError, match="cannot merge"):
        adapter.merge()


def test_merge_lora_is_exact_and_costs_nothing():
    torch.manual_seed(0)
    plain = timm.create_model("test_convnext", num_classes=5).double().eval()
    model = lora_adapt(timm.create_model("test_convnext", num_classes=5), rank=2, targets=["depthwise", "linear"])
    model.load_state_dict(plain.state_dict(), strict=False)
    model.double().eval()
    for _, a in lora_adapters(model):
        nn.init.normal_(a.lora_b.weight, std=0.1)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        merged = merge_lora(model)
        assert not lora_adapters(merged)
        torch.testing.assert_close(merged(x), expected, rtol=1e-10, atol=1e-12)
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in plain.parameters())
    assert model_flops(merged, (3, 32, 32)) == model_flops(plain, (3, 32, 32))


def test_merge_lora_names_the_layers_that_cannot_merge():
    model = lora_adapt(timm.create_model("test_convnext", num_classes=5), rank=1, kernel_size=3, dilation=4)
    with pytest.raises(ValueError, match=r"LoRA layers \[.stages\.0\.blocks\.0\.conv_dw.*cannot merge"):
        merge_lora(model)
    assert lora_adapters(model)  # left as it was
    assert lora_adapters(merge_lora(model, strict=False))  # non-strict: those stay adapters
