"""Detection runs end to end on a tiny canvas set: what the task adds to the shared run layer (whose contract
tests/run tests): its metrics, resume replaying its flips, COCO data, eval, CLI."""
import argparse
import json
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

from quadranet.data.fashion_mnist import fashion_mnist_root
from quadranet.detection import cli
from quadranet.detection.config import load_config
from quadranet.detection.evaluate import evaluate_run
from quadranet.detection.train import lr_factor, train
from quadranet.run import checkpoint

pytestmark = pytest.mark.skipif(not any((fashion_mnist_root() / f).exists() for f in
                                        ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte")),
                                reason="Fashion-MNIST (Debian dataset-fashion-mnist) not installed")

TINY = ["data.canvas.train_size=8", "data.canvas.val_size=4", "data.canvas.canvas=64", "data.canvas.min_side=16",
        "data.canvas.max_side=32", "data.canvas.max_objects=2", "data.min_size=64", "data.max_size=64",
        "data.batch_size=4", "data.eval_batch_size=4", "model.fpn_channels=16", "model.box_head_dim=32",
        "model.mask_head_layers=[16]", "model.rpn_proposals=50", "model.roi_batch=32", "train.epochs=2",
        "train.warmup_steps=2", "train.log_every=1", "train.progress=none"]  # 2 steps per epoch


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("canvas")


def config(cache, *overrides):
    return load_config(overrides=TINY + [f"data.root={cache}", *overrides])


def read(out):
    m = json.loads((Path(out) / "metrics.json").read_text())
    log = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    return m, log


TIMING = ("wall_s", "device_s", "train_s", "data_wait_s", "images_per_s", "peak_mem_mb")


def strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_lr_schedule_warms_up_then_steps_down():
    steps = (2 / 3, 8 / 9)
    assert lr_factor(0, 90, 10, 0.001, steps) == pytest.approx(0.001)
    assert lr_factor(5, 90, 10, 0.001, steps) == pytest.approx(0.001 * 0.5 + 0.5)
    assert [lr_factor(s, 90, 10, 0.001, steps) for s in (10, 59, 60, 79, 80, 89)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory):
    """An uninterrupted adapt run of Mask R-CNN, started through the CLI's own function."""
    out = tmp_path_factory.mktemp("runs") / "ref"
    parser = argparse.ArgumentParser(prog="quadranet")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    argv = ["detect", "train", "--out", str(out), *TINY, f"data.root={cache}", "method=adapt",
            "model.pretrained=offline", "train.checkpoint_every=1", "train.keep_checkpoint=true"]
    args = parser.parse_args(argv)
    with mock.patch.object(sys, "argv", ["quadranet", *argv]):  # the command provenance records
        args.func(args)
    return out


def test_run_folder_holds_metrics_log_weights_and_provenance(reference):
    m, log = read(reference)
    assert m["status"] == "complete" and m["task"] == "detection" and m["method"] == "adapt"
    assert m["arch"] == "efficientnet_lite0" and m["detector"] == "maskrcnn" and m["dataset"] == "fashion_mnist_canvas"
    assert m["steps"] == 4 and m["epochs"] == 2 and m["images_seen"] == 16 and m["train_images"] == 8
    assert m["eval_images"] == 4 and m["seed"] == 0 and m["resumes"] == 0
    for k in ("box_ap", "box_ap50", "box_ap75", "mask_ap", "mask_ap50"):
        assert 0.0 <= m[k] <= 1.0, k
    assert m["box_apl"] is None  # no garment of 96^2 px on a 64 px canvas
    sec = m["device_seconds"]
    assert sec["train"] > 0 and sec["eval"] > 0 and sec["startup"] > 0
    assert sec["total"] == pytest.approx(sec["train"] + sec["eval"] + sec["startup"], abs=0.01)
    assert m["device_hours"] == pytest.approx(sec["total"] / 3600) and m["num_devices"] == 1
    assert "energy_joules" in m and "energy_source" in m
    assert 0 < m["params_added"] < m["trainable_params"] < m["params"] and m["adapters"] == 16
    assert m["provenance"]["config_hash"] == m["config_hash"] and "detect train" in m["provenance"]["command"]
    assert m["data_skipped"] == {"train": {}, "val": {}}
    events = [r["event"] for r in log]
    assert events.count("step") == 4 and events.count("epoch") == 2 and events.count("eval") == 1
    step = next(r for r in log if r["event"] == "step")
    assert {"step", "epoch", "loss", "lr", "loss_mask", *TIMING} <= set(step)
    assert (reference / "model.safetensors").is_file() and (reference / "config.yaml").is_file()
    assert (reference / "checkpoints" / "last.pt").is_file()  # kept: train.keep_checkpoint=true
    state = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)
    assert state["config_hash"] == m["config_hash"]


def test_crash_after_a_checkpoint_then_rerun_resumes_to_the_same_result(reference, cache, tmp_path, monkeypatch):
    cfg = config(cache, "method=adapt", "model.pretrained=offline", "train.checkpoint_every=1",
                 "train.keep_checkpoint=true")
    out = tmp_path / "crashed"
    save = checkpoint.save_checkpoint

    class Crash(Exception):
        pass

    def save_then_crash(directory, state, **kw):
        save(directory, state, **kw)
        if state["progress"]["step"] == 3:  # mid-epoch 2, after the first epoch's checkpoint
            raise Crash

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        train(cfg, out)
    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    assert not (out / "metrics.json").exists()
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["progress"]["step"] == 3
    m = train(cfg, out)
    ref, ref_log = read(reference)
    assert m["resumes"] == 1 and m["steps"] == ref["steps"]
    for key in ("box_ap", "box_ap50", "mask_ap", "images_seen", "config_hash"):
        assert m[key] == ref[key], key
    assert strip(read(out)[1]) == strip(ref_log)  # the same losses step by step, no line twice


def test_eval_of_a_run_folder_reproduces_its_metrics(reference, tmp_path):
    r = evaluate_run(reference, out=str(tmp_path / "e.json"))
    m, _ = read(reference)
    assert r["box_ap"] == m["box_ap"] and r["mask_ap"] == m["mask_ap"] and r["eval_images"] == 4
    assert json.loads((tmp_path / "e.json").read_text())["box_ap"] == m["box_ap"]
    with pytest.raises(ValueError, match="eval overrides must be data"):
        evaluate_run(reference, ("train.lr=1",))


def test_fcos_box_only_run_reports_no_mask_metrics(cache, tmp_path):
    cfg = config(cache, "model.detector=fcos", "model.fpn_channels=32", "train.epochs=1")
    m = train(cfg, tmp_path / "fcos")
    assert m["mask_ap"] is None and m["mask_ap50"] is None and m["box_ap"] is not None
    assert m["params_added"] == 0 and m["steps"] == 2


def test_coco_without_a_root_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("QUADRANET_COCO", raising=False)
    cfg = load_config(preset="coco_1x")
    with pytest.raises(ValueError, match="needs data.root"):
        train(cfg, tmp_path / "coco")


def test_coco_layout_run_with_bad_items_counted(tmp_path, write_coco, tiny_data):
    """The paper-scale path (data.dataset=coco, train2017 / val2017 under data.root) on a tiny COCO."""
    train_data = tiny_data()
    train_data["images"].append({"id": 3, "file_name": "gone.png", "width": 64, "height": 48})
    train_data["annotations"].append({"id": 9, "image_id": 1, "category_id": 3, "bbox": [100, 100, 5, 5], "area": 25,
                                      "iscrowd": 0, "segmentation": [[100, 100, 105, 100, 105, 105]]})
    write_coco(tmp_path / "coco", train_data, split="train2017", skip_files={"gone.png"})
    write_coco(tmp_path / "coco", tiny_data(), split="val2017")
    cfg = load_config(preset="coco_1x", overrides=[
        f"data.root={tmp_path / 'coco'}", "train.schedule=null", "train.epochs=1", "data.batch_size=2",
        "data.min_size=64", "data.max_size=64", "data.multiscale=[48, 64]", "data.num_workers=0",
        "model.fpn_channels=16", "model.box_head_dim=32", "model.mask_head_layers=[16]", "model.rpn_proposals=50",
        "model.roi_batch=32", "train.warmup_steps=1", "train.progress=none"])
    with pytest.warns(UserWarning, match="1 images whose file is missing"):
        m = train(cfg, tmp_path / "run")
    assert m["dataset"] == "coco" and m["train_images"] == 2 and m["eval_images"] == 2 and m["steps"] == 1
    assert m["data_skipped"]["train"] == {"missing_image": 1, "box_outside_image": 1}
    assert m["box_ap"] is not None and m["mask_ap"] is not None


def test_data_command_writes_the_canvas_set(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="quadranet")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["detect", "data", "--root", str(tmp_path), "data.canvas.train_size=4",
                              "data.canvas.val_size=2"])
    args.func(args)
    folder = Path(capsys.readouterr().out.strip())
    assert folder.parent == tmp_path and (folder / "annotations" / "instances_train.json").is_file()


@pytest.mark.slow
def test_ddp_two_processes_complete_and_gather_the_evaluation(cache, tmp_path):
    """2 gloo ranks share each global batch and the eval images; rank 0 runs COCOeval over all of them."""
    import subprocess

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29541",
           "-m", "quadranet", "detect", "train", "--out", str(out), *TINY, f"data.root={cache}", "train.epochs=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m, log = read(out)
    assert m["num_devices"] == 2 and m["steps"] == 2 and m["images_seen"] == 8 and m["eval_images"] == 4
    assert m["box_ap"] is not None and [r["event"] for r in log].count("eval") == 1  # written once, by rank 0
