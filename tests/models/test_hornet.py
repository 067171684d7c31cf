"""The HorNet family (quadranet/models/hornet.py) through timm.create_model."""
import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import quadranet  # noqa: F401  (registers the families)
from quadranet.convert import count_flops
from quadranet.models import HORNET_CONFIGS
from quadranet.convert.measure import FFT_FLOP_FORMULAS
from quadranet.models.hornet import HORNET_PUBLISHED, GnConv, HorNetBlock


def test_every_hornet_size_is_registered():
    assert set(timm.list_models("hornet_*")) == {f"hornet_{s}" for s in HORNET_CONFIGS}


def test_forward_and_backward_shapes():
    model = timm.create_model("hornet_test", in_chans=1, num_classes=5)
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    features = model.forward_features(x)
    logits = model.forward_head(features)
    logits.sum().backward()
    assert features.shape == (2, 64, 1, 1)  # stride 32, test_convnext's last width
    assert logits.shape == (2, 5)
    assert x.grad.shape == x.shape


def test_every_parameter_of_a_gf_block_gets_a_finite_gradient():
    block = HorNetBlock(32, order=4, grid=(8, 8), ls_init_value=1.0)
    block(torch.randn(2, 32, 8, 8)).square().sum().backward()
    bad = [n for n, p in block.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
           or not p.grad.any()]
    assert bad == []


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_gnconv_of_order_n_is_a_polynomial_of_degree_n_plus_1(order):
    """Without biases, p_0 and every gate are linear in x, so the n gated products make gnConv homogeneous of
    degree n + 1: the order of spatial interaction the paper builds it for."""
    conv = GnConv(16, order, scale=1.0).double()
    with torch.no_grad():
        for m in conv.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    x = torch.randn(1, 16, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(conv(2.0 * x), 2.0 ** (order + 1) * conv(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("grid", [None, (4, 4)], ids=["7x7", "gf"])
def test_gnconv_recursion_gradcheck(grid):
    conv = GnConv(8, order=3, grid=grid).double()
    x = torch.randn(1, 8, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (x,))


def test_gnconv_rejects_a_width_the_order_does_not_divide():
    with pytest.raises(ValueError, match=r"order=3 on dim=6: .*divisible by 2\^\(order-1\) = 4"):
        GnConv(6, order=3)


def test_an_unknown_size_is_refused():
    with pytest.raises(ValueError, match="'huge' is unknown; expected one of"):
        quadranet.models.hornet("huge")


def test_gf_sizes_its_filters_from_img_size_and_runs_at_another():
    model = timm.create_model("hornet_tiny_gf", img_size=64, num_classes=3).eval()
    filters = [b.gnconv.dwconv.filter.complex_weight.shape[:2] for s in model.stages[2:] for b in s.blocks[:1]]
    assert filters == [(4, 3), (2, 2)]  # 64 px: 4 x 4 and 2 x 2 feature maps, half-spectra 4 x 3 and 2 x 2
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 3)


# Parameters and multiply-adds at 224 px / 1000 classes of the authors' own models (raoyongming/HorNet,
# hornet.py at ac9e210, instantiated and counted the same way; our weights load into theirs key for key and
# give the same outputs), then the published figures (HORNET_PUBLISHED).
AUTHORS_COUNTS = {"tiny_7x7": (22_409_512, 3_968_389_312), "tiny_gf": (22_991_848, 3_888_705_120)}


def _fft_macs(model, x) -> int:
    """Multiply-adds of the FFTs in `model(x)`, by the authors' rule (convert.measure.FFT_FLOP_FORMULAS)."""
    with FlopCounterMode(display=False, custom_mapping=FFT_FLOP_FORMULAS) as counter, torch.no_grad():
        model(x)
    counts = counter.get_flop_counts()["Global"]
    return sum(counts.get(op, 0) for op in FFT_FLOP_FORMULAS) // 2


@pytest.mark.parametrize("size", list(HORNET_PUBLISHED))
def test_paper_tiny_sizes_count_as_published(size):
    with torch.device("meta"):  # shapes only: counting needs no weights
        model = timm.create_model(f"hornet_{size}").eval()
    x = torch.empty(1, 3, 224, 224, device="meta")
    params = sum(p.numel() for p in model.parameters())
    fft = _fft_macs(model, x) if "gf" in size else 0
    macs = count_flops(model, x) // 2 - fft  # the authors count the rest without FFTs
    published = HORNET_PUBLISHED[size]
    assert (params, macs) == AUTHORS_COUNTS[size]
    assert params == pytest.approx(published["params_m"] * 1e6, rel=0.03)
    assert macs + fft == pytest.approx(published["gflops"] * 1e9, rel=0.03)
    assert fft < 0.005 * macs  # the GF stages' FFTs: under 0.5% of HorNet-T GF


@pytest.mark.slow
def test_torch_compile_matches_eager():
    model = timm.create_model("hornet_test", num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-4, atol=1e-5)
