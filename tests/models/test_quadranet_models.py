"""The QuadraNet V1 family and the quadranet_v2_<backbone> names, through timm.create_model."""
import pytest
import timm
import torch
import torch.nn.functional as F

import quadranet
from quadranet.convert import count_flops, quadratic_adapters
from quadranet.layers import QuadraticConv2d, QuadraticLinear
from quadranet.models import QUADRANET_V1_CONFIGS
from quadranet.models.quadranet_v1 import QuadraBlock


def test_every_v1_size_is_registered():
    assert set(timm.list_models("quadranet_v1_*")) == {f"quadranet_v1_{s}" for s in QUADRANET_V1_CONFIGS}


# The authors' registered models (miniHuiHui/QuadraNet, QuadraNet.py) at 224 px / 1000 classes: parameters and
# MACs (torch FlopCounterMode / 2, as `quadranet.convert.count_flops`), 23.60 M / 4.13 G, 44.61 M / 7.83 G,
# 90.45 M / 15.81 G, the counts of their own code.
AUTHORS_SIZES = [
    ("tiny36_dw", 23_598_824, 4_129_570_304),
    ("tiny_dw_fc", 44_609_768, 7_828_946_432),
    ("base_dw36", 90_450_408, 15_812_033_536),
]


@pytest.mark.parametrize("size,params,macs", AUTHORS_SIZES)
def test_v1_authors_sizes_count(size, params, macs):
    with torch.device("meta"):  # shapes only: counting needs no weights
        model = timm.create_model(f"quadranet_v1_{size}").eval()
    assert sum(p.numel() for p in model.parameters()) == params
    assert count_flops(model, torch.empty(1, 3, 224, 224, device="meta")) // 2 == macs


def test_v1_tiny_dw_fc_has_a_quadratic_first_pointwise_layer():
    with torch.device("meta"):
        fc, dw = timm.create_model("quadranet_v1_tiny_dw_fc"), timm.create_model("quadranet_v1_tiny36_dw")
    assert all(isinstance(b.pwconv1, QuadraticLinear) for s in fc.stages for b in s.blocks)
    assert not any(isinstance(m, QuadraticLinear) for m in dw.modules())


def _block_reference(block, x):
    """The authors' QuadraBlock1_dw written out: x + g1 * Q(LN1 x), then x + g2 * MLP(LN2 x)."""
    def ln(t, norm):  # LayerNorm over channels of NCHW
        u = t.mean(1, keepdim=True)
        v = (t - u).pow(2).mean(1, keepdim=True)
        return norm.weight[:, None, None] * (t - u) / torch.sqrt(v + 1e-6) + norm.bias[:, None, None]

    q = block.conv_dw
    h = ln(x, block.norm1)
    dw = [F.conv2d(h, c.weight, c.bias, padding=3, groups=h.shape[1]) for c in (q.conv_a, q.conv_b, q.conv_c)]
    x = x + block.gamma1[:, None, None] * (dw[0] * dw[1] + dw[2])
    h = ln(x, block.norm2).permute(0, 2, 3, 1)
    p1 = block.pwconv1
    if isinstance(p1, QuadraticLinear):
        h = p1.fc_a(h) * p1.fc_b(h) + p1.fc_c(h)
    else:
        h = p1(h)
    h = block.pwconv2(F.gelu(h))
    return x + (block.gamma2 * h).permute(0, 3, 1, 2)


@pytest.mark.parametrize("quadratic_mlp", [False, True])
@pytest.mark.parametrize("memory_efficient", [False, True])
def test_v1_block_is_the_authors_block(quadratic_mlp, memory_efficient):
    block = QuadraBlock(8, quadratic_mlp=quadratic_mlp, memory_efficient=memory_efficient)
    assert torch.equal(block.gamma1, torch.full((8,), 1e-6)) and torch.equal(block.gamma2, block.gamma1)
    block.double()
    with torch.no_grad():  # layer scale at 1e-6 would hide a wrong branch
        for p in block.parameters():
            p.normal_()
    x = torch.randn(2, 8, 9, 9, dtype=torch.float64, requires_grad=True)
    out, ref = block(x), _block_reference(block, x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(out)
    params = [x, *block.parameters()]
    for got, want in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_v1_drop_path_schedule_is_linear_over_all_blocks():
    model = timm.create_model("quadranet_v1_test", drop_path_rate=0.3)
    blocks = [b for s in model.stages for b in s.blocks]
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.3, len(blocks)).tolist())


def test_v1_every_parameter_gets_a_finite_gradient():
    model = timm.create_model("quadranet_v1_atto", num_classes=5)
    blocks = [b for s in model.stages for b in s.blocks]
    assert len(blocks) == sum(QUADRANET_V1_CONFIGS["atto"]["depths"])
    assert all(isinstance(b, QuadraBlock) and isinstance(b.conv_dw, QuadraticConv2d) for b in blocks)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_v1_tiny_size():
    with torch.device("meta"):
        model = timm.create_model("quadranet_v1_tiny")
    # ConvNeXt-T has 28.6M parameters; each block's 7x7 depthwise conv gains two more of the same size, and
    # the block a LayerNorm (2 x dim) and a second layer scale (dim)
    extra = sum(d * ((49 + 1) * 2 + 3) * n for d, n in zip((96, 192, 384, 768), (3, 3, 9, 3)))
    assert sum(p.numel() for p in model.parameters()) == 28_589_128 + extra


def test_v1_memory_efficient_matches_plain():
    torch.manual_seed(1)
    plain = timm.create_model("quadranet_v1_atto", num_classes=3)
    lean = timm.create_model("quadranet_v1_atto", num_classes=3, memory_efficient=True)
    lean.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(lean(x), plain(x))


def test_v1_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="trained from scratch"):
        timm.create_model("quadranet_v1_atto", pretrained=True)


def test_v2_names_build_quadratized_backbones():
    model = timm.create_model("quadranet_v2_convnext_atto", rank=2, dilation=3, num_classes=7)
    found = list(quadratic_adapters(model))
    assert len(found) == 12 and found[0][1].rank == 2 and found[0][1].dilation == (3, 3)
    assert model.num_classes == 7


def test_unknown_model_name():
    with pytest.raises(RuntimeError, match="quadranet_v1_huge"):
        timm.create_model("quadranet_v1_huge")
    with pytest.raises(ValueError, match="size 'huge'"):
        quadranet.models.quadranet_v1("huge")
