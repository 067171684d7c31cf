"""`quadranet export` / `quadranet.export`: every model family of the embedded default exports to ONNX and
torch.export with no custom op left, ONNX Runtime and the torch.export round trip match eager PyTorch within 1e-4
(relative, float32) with identical top-1 on real Fashion-MNIST evaluation images, BatchNorm is folded, the metadata
travels in the file, and bad input gets one clear error naming it."""
import json
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

import quadranet
from quadranet import deploy
from quadranet.classify.config import load_config
from quadranet.classify.data import num_classes
from quadranet.classify.model import build_structure
from quadranet.cli import main
from quadranet.config import to_yaml
from quadranet.convert import lora_adapters, quadratic_adapters
from quadranet.layers import QuadraticConv2d

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TASK = ["model.arch=test_convnext", "data.resolution=32", "data.classes=[0,2,4,6,9]", "data.eval_limit=256"]
# the families of the embedded default (workflow/config/default.yaml): method and keys of each
PRETRAINED = "model.pretrained=source_run"  # read when a run is trained, not when its model is rebuilt
FAMILIES = {
    "first_order": ["method=finetune", PRETRAINED],
    "adapt": ["method=adapt", PRETRAINED],
    "quadratic_scratch": ["method=scratch", "model.quadratic=true"],
    "v1": ["method=scratch", "model.arch=quadranet_v1_test"],
    "lora": ["method=lora", PRETRAINED],
    "e3_stem": ["method=adapt", PRETRAINED, "adapter.targets=[spatial,'stem.*']", "adapter.kernel_size=null",
                "adapter.dilation=1"],
    "e4_mlp": ["method=adapt", PRETRAINED, "adapter.targets=[linear,'stages.*']"],
}


def make_run(folder, overrides, std=0.05):
    """A run folder as `quadranet train` leaves it (config.yaml, model.safetensors), the added terms random (as
    after training: at init they are zero and would hide a wrong export)."""
    cfg = load_config(None, (*TASK, *overrides))
    torch.manual_seed(0)
    model = build_structure(cfg, num_classes(cfg))
    with torch.no_grad():
        for _, a in quadratic_adapters(model):
            nn.init.normal_(a.quad_out.weight, std=std)
        for _, a in lora_adapters(model):
            nn.init.normal_(a.lora_b.weight, std=std)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(to_yaml(cfg))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_exports_and_matches_eager_on_real_images(family, tmp_path):
    run = make_run(tmp_path / family, FAMILIES[family])
    for fmt, suffix in (("onnx", ".onnx"), ("torch-export", ".pt2")):
        path = deploy.export_run(run, tmp_path / f"{family}{suffix}", fmt, batch=64, dynamic_batch=fmt == "onnx")
        check = deploy.check_run(run, path, limit=256, batch=64)
        assert check["images"] == 256
        assert check["max_rel_error"] <= 1e-4 and check["top1_agree"] == 1.0, (fmt, check)
        assert check["acc1_exported"] == check["acc1_eager"]


@pytest.mark.slow
def test_onnx_file_holds_only_standard_ops_and_its_metadata(tmp_path):
    import onnx

    run = make_run(tmp_path / "adapt", FAMILIES["adapt"])
    path = deploy.export_run(run, format="onnx")
    assert path == run / "model.onnx"
    graph = onnx.load(str(path)).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}  # no custom domain, no quadranet_cpu op
    assert "Conv" in {n.op_type for n in graph.node}
    meta = deploy.read_metadata(path)
    cfg = load_config(run / "config.yaml")
    assert meta["arch"] == "test_convnext" and meta["method"] == "adapt" and meta["input_size"] == [3, 32, 32]
    assert meta["class_names"] == ["T-shirt/top", "Pullover", "Coat", "Shirt", "Ankle boot"]
    assert meta["mean"] and meta["std"] and meta["quadratic_layers"] == 9
    from quadranet.classify.config import config_hash

    assert meta["config_hash"] == config_hash(cfg) and meta["input_shape"] == [1, 3, 32, 32]


@pytest.mark.slow
def test_torch_export_holds_no_custom_op_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = quadranet.quadratize(timm.create_model("test_convnext", num_classes=5), rank=2).eval()
    for _, a in quadratic_adapters(model):
        nn.init.normal_(a.quad_out.weight, std=0.1)
    path = quadranet.export(model, tmp_path / "m.pt2", "torch-export", input_size=(3, 32, 32), batch=4,
                            metadata={"arch": "test_convnext"})
    program = torch.export.load(str(path))
    assert not [n for n in program.graph.nodes if n.op == "call_function" and "quadranet" in str(n.target)]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(deploy.load(path)(x), model(x), rtol=1e-4, atol=1e-5)
    meta = deploy.read_metadata(path)
    assert meta["arch"] == "test_convnext" and meta["format"] == "torch-export" and meta["quadratic_layers"] == 9


def test_batchnorm_is_folded_into_convs_and_quadratic_adapters():
    torch.manual_seed(0)
    model = quadranet.quadratize(timm.create_model("test_efficientnet", num_classes=5), rank=2)
    for m in model.modules():  # trained-looking statistics
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.running_mean, std=0.1), nn.init.uniform_(m.running_var, 0.5, 2.0)
            nn.init.normal_(m.weight, 1.0, 0.1), nn.init.normal_(m.bias, std=0.1)
    for _, a in quadratic_adapters(model):
        nn.init.normal_(a.quad_out.weight, std=0.1)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    net, info = deploy.prepare(model, x)
    assert info["batchnorm_folded"] == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-5)


def test_lora_is_merged_before_export():
    torch.manual_seed(0)
    model = quadranet.lora_adapt(timm.create_model("test_convnext", num_classes=5), rank=2).eval()
    net, info = deploy.prepare(model, torch.randn(1, 3, 32, 32))
    assert info["lora_merged"] == 9 and not lora_adapters(net) and lora_adapters(model)  # the model is untouched


@pytest.mark.slow
def test_v1_model_exports(tmp_path):
    model = timm.create_model("quadranet_v1_test", num_classes=5).eval()
    assert any(isinstance(m, QuadraticConv2d) for m in model.modules())
    path = quadranet.export(model, tmp_path / "v1.pt2", "torch-export", input_size=(3, 32, 32), batch=2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(deploy.load(path)(x), model(x), rtol=1e-4, atol=1e-5)


# ---- bad input: one clear error naming it ----


def test_run_folder_without_weights_is_named(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(load_config(None, TASK)))
    with pytest.raises(FileNotFoundError, match="model.safetensors not found"):
        deploy.export_run(run)


def test_bad_format_is_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="format='tflite' is not supported"):
        quadranet.export(nn.Linear(2, 2), tmp_path / "x", "tflite")
    assert main(["export", "--run", str(tmp_path), "--format", "tflite"]) == 2
    err = capsys.readouterr().err
    assert "format='tflite' is not supported" in err and len(err.strip().splitlines()) == 1


@torch.library.custom_op("quadranet_cpu::_test_unsupported", mutates_args=())
def _unsupported(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@_unsupported.register_fake
def _(x):
    return torch.empty_like(x)


class Unsupported(nn.Module):
    def forward(self, x):
        return _unsupported(x)


def test_layer_running_a_custom_op_without_decomposition_is_named(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Unsupported())
    with pytest.raises(deploy.ExportError, match=r"layer '1' runs custom op quadranet_cpu\._test_unsupported"):
        quadranet.export(model, tmp_path / "m.onnx", input_size=(3, 8, 8))
    assert not (tmp_path / "m.onnx").exists()


def test_cuda_provider_missing_is_named():
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this ONNX Runtime has the CUDA provider")
    with pytest.raises(deploy.ExportError, match="no CUDAExecutionProvider"):
        deploy.onnx_session("unused.onnx", device="cuda")


@pytest.mark.gpu
def test_onnxruntime_cuda_matches_eager(tmp_path):
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu (CUDAExecutionProvider) is not installed")
    torch.manual_seed(0)
    model = quadranet.quadratize(timm.create_model("test_convnext", num_classes=5), rank=2).eval()
    path = quadranet.export(model, tmp_path / "m.onnx", input_size=(3, 32, 32), batch=8)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(deploy.load(path, device="cuda")(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_cli_exports_a_trained_run_and_checks_it(tmp_path):
    run = tmp_path / "run"
    train = [sys.executable, "-m", "quadranet", "train", "--out", str(run), *TASK, "method=scratch",
             "model.quadratic=true", "data.train_per_class=8", "data.eval_limit=64", "data.batch_size=16",
             "train.epochs=1", "train.progress=none"]
    subprocess.run(train, check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "quadranet", "export", "--run", str(run), "--dynamic-batch",
                           "--check", "64"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    check = json.loads(proc.stdout.strip().splitlines()[-1])
    assert check["images"] == 64 and check["top1_agree"] == 1.0 and check["max_rel_error"] <= 1e-4
    meta = deploy.read_metadata(run / "model.onnx")
    metrics = json.loads((run / "metrics.json").read_text())
    assert meta["git_commit"] == metrics["provenance"]["git_commit"] and meta["input_shape"][0] is None
    assert meta["acc1"] == metrics["acc1"]
    # pruning every quadratic term (a share threshold no layer reaches): the file says which, --check what it costs
    pruned = subprocess.run([sys.executable, "-m", "quadranet", "export", "--run", str(run), "--out",
                             str(tmp_path / "pruned.onnx"), "--prune", "1e9", "--prune-images", "16", "--check", "64"],
                            capture_output=True, text=True)
    assert pruned.returncode == 0, pruned.stderr[-2000:]
    info = deploy.read_metadata(tmp_path / "pruned.onnx")["prune"]
    assert info["measured_on_train_images"] == 16 and len(info["pruned"]) == info["quadratic_layers_before"] > 0
    assert f"pruned {len(info['pruned'])} of {len(info['pruned'])} quadratic layers" in pruned.stdout
    assert "top-1 on 64 evaluation images: eager" in pruned.stdout


def test_prune_quadratic_drops_the_layers_whose_term_is_negligible():
    torch.manual_seed(0)
    model = quadranet.quadratize(timm.create_model("test_convnext", num_classes=5), rank=2).eval()
    live = [name for name, _ in quadratic_adapters(model)][::2]
    for name, a in quadratic_adapters(model):
        if name in live:
            nn.init.normal_(a.quad_out.weight, std=0.1)  # the others keep P = 0: a share of 0
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    shares = deploy.quadratic_shares(model, [x])
    assert {n for n, s in shares.items() if s > 0} == set(live)
    pruned = deploy.prune_quadratic(model, [x], threshold=1e-6)
    assert set(pruned) == set(shares) - set(live) and [n for n, _ in quadratic_adapters(model)] == live
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)
    with pytest.raises(ValueError, match="threshold=-1"):
        deploy.prune_quadratic(model, [x], threshold=-1)
