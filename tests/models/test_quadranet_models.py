"""The QuadraNet V1 family and the quadranet_v2_<backbone> names, through timm.create_model."""
import pytest
import timm
import torch

import quadranet
from quadranet.convert import adapters
from quadranet.layers import QuadraticConv2d
from quadranet.models import QUADRANET_V1_CONFIGS


def test_every_v1_size_is_registered():
    assert set(timm.list_models("quadranet_v1_*")) == {f"quadranet_v1_{s}" for s in QUADRANET_V1_CONFIGS}


def test_v1_every_parameter_gets_a_finite_gradient():
    model = timm.create_model("quadranet_v1_atto", num_classes=5)
    blocks = [b for s in model.stages for b in s.blocks]
    assert len(blocks) == sum(QUADRANET_V1_CONFIGS["atto"]["depths"])
    assert all(isinstance(b.conv_dw, QuadraticConv2d) for b in blocks)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.slow
def test_v1_tiny_size():
    model = timm.create_model("quadranet_v1_tiny")
    # ConvNeXt-T has 28.6M parameters; each 7x7 depthwise conv gains two more of the same size
    dw = sum(d * (49 + 1) * 2 for d, n in zip((96, 192, 384, 768), (3, 3, 9, 3)) for _ in range(n))
    assert sum(p.numel() for p in model.parameters()) == 28_589_128 + dw


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
    found = list(adapters(model))
    assert len(found) == 12 and found[0][1].rank == 2 and found[0][1].dilation == (3, 3)
    assert model.num_classes == 7


def test_unknown_model_name():
    with pytest.raises(RuntimeError, match="quadranet_v1_huge"):
        timm.create_model("quadranet_v1_huge")
    with pytest.raises(ValueError, match="size 'huge'"):
        quadranet.models.quadranet_v1("huge")
