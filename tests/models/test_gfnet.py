"""The GFNet family (quadranet/models/gfnet.py) through timm.create_model."""
import pytest
import timm
import torch
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

import quadranet  # noqa: F401  (registers the families)
from quadranet.convert import count_flops
from quadranet.models import GFNET_CONFIGS
from quadranet.convert.measure import FFT_FLOP_FORMULAS
from quadranet.models.gfnet import GFNET_PUBLISHED, GFNet, GlobalFilter


def _small_isotropic(**kwargs):
    return GFNet(dims=(32,), depths=(2,), patch_size=4, img_size=32, **kwargs)


def test_every_gfnet_size_is_registered():
    assert set(timm.list_models("gfnet_*")) == {f"gfnet_{s}" for s in GFNET_CONFIGS}


@pytest.mark.parametrize("build,grid,width", [
    (lambda: timm.create_model("gfnet_test", in_chans=1, num_classes=5), 1, 64),  # hierarchical: 8-4-2-1
    (lambda: _small_isotropic(in_chans=1, num_classes=5), 8, 32),
], ids=["hierarchical", "isotropic"])
def test_forward_and_backward_shapes(build, grid, width):
    model = build()
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    features = model.forward_features(x)
    logits = model.forward_head(features)
    logits.sum().backward()
    assert features.shape == (2, grid, grid, width)  # channels-last tokens
    assert logits.shape == (2, 5)
    assert x.grad.shape == x.shape


def test_every_parameter_of_the_isotropic_design_gets_a_finite_gradient():
    model = _small_isotropic(num_classes=5)
    model(torch.randn(2, 3, 32, 32)).logsumexp(1).sum().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
           or not p.grad.any()]
    assert bad == []


def test_global_filter_gradcheck_in_input_and_filter():
    layer = GlobalFilter(3, (5, 6)).double()
    x = torch.randn(2, 5, 6, 3, dtype=torch.float64, requires_grad=True)
    weight = layer.complex_weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: functional_call(layer, {"complex_weight": w}, (x,)), (x, weight))


def test_global_filter_of_ones_is_the_identity():
    layer = GlobalFilter(4, (6, 7))
    with torch.no_grad():
        layer.complex_weight.zero_()[..., 0] = 1.0  # K = 1 + 0j at every frequency
    x = torch.randn(2, 6, 7, 4)
    torch.testing.assert_close(layer(x), x, rtol=1e-5, atol=1e-5)


def test_global_filter_mixes_every_token_into_every_other():
    layer = GlobalFilter(2, (6, 6))
    x = torch.randn(1, 6, 6, 2, requires_grad=True)
    layer(x)[0, 0, 0].sum().backward()  # one output token
    assert (x.grad.abs().sum(-1) > 0).all()  # depends on all 36 input tokens


def test_a_model_runs_at_another_input_size():
    model = timm.create_model("gfnet_test", num_classes=3).eval()  # filters and positions sized for 32 px
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_bad_shapes_and_names_are_refused():
    with pytest.raises(ValueError, match=r"dims=\(8, 16\) and depths=\(1,\): expected one width and one depth"):
        GFNet(dims=(8, 16), depths=(1,))
    with pytest.raises(ValueError, match="a 2 x 2 token grid, expected at least 8 per side for 4 stages"):
        timm.create_model("gfnet_test", img_size=8)
    with pytest.raises(ValueError, match="'huge' is unknown; expected one of"):
        quadranet.models.gfnet("huge")
    with pytest.raises(ValueError, match="gfnet_test has no pretrained weights"):
        timm.create_model("gfnet_test", pretrained=True)


def test_torch_counts_no_fft_and_count_flops_counts_them_by_the_authors_rule():
    layer, x = GlobalFilter(8, (14, 14)), torch.randn(1, 14, 14, 8)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        layer(x)
    assert counter.get_total_flops() == 0
    # rfft2 and irfft2, each ceil(log2 196) = 8 multiply-adds per value of the 14 x 14 x 8 grid, 2 FLOPs each
    assert count_flops(layer, x) == 2 * 2 * (14 * 14 * 8) * 8


# Parameters and multiply-adds at 224 px / 1000 classes of the authors' own models (raoyongming/GFNet, gfnet.py
# at 2de48b6: GFNet and GFNetPyramid as main_gfnet.py builds gfnet-ti and gfnet-h-ti, counted the same way,
# without FFTs; our weights load into theirs key for key and give the same outputs).
AUTHORS_COUNTS = {"ti": (7_511_784, 1_271_916_544), "h_ti": (15_085_096, 2_039_664_640)}


@pytest.mark.parametrize("size", list(GFNET_PUBLISHED))
def test_paper_tiny_sizes_count_as_published(size):
    with torch.device("meta"):  # shapes only: counting needs no weights
        model = timm.create_model(f"gfnet_{size}").eval()
    x = torch.empty(1, 3, 224, 224, device="meta")
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False, custom_mapping=FFT_FLOP_FORMULAS) as counter, torch.no_grad():
        model(x)
    fft = sum(counter.get_flop_counts()["Global"].get(op, 0) for op in FFT_FLOP_FORMULAS) // 2
    macs = count_flops(model, x) // 2 - fft  # the authors count the rest without FFTs
    published = GFNET_PUBLISHED[size]
    assert (params, macs) == AUTHORS_COUNTS[size]
    # GFNet-Ti's published "7M" is the 7.51 M of the authors' own model, rounded down; GFNet-H-Ti is within 1%
    assert params == pytest.approx(published["params_m"] * 1e6, rel=0.08)
    # with the FFTs by the authors' rule: GFNet-Ti 1.28 G, GFNet-H-Ti 2.07 G (published 1.3 G and 2.0 G)
    assert macs + fft == pytest.approx(published["gflops"] * 1e9, rel=0.04)
    assert fft < 0.015 * macs  # the FFTs: under 1.5%


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation for complex")  # FFT: eager
def test_torch_compile_matches_eager():
    model = timm.create_model("gfnet_test", num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-4, atol=1e-5)
