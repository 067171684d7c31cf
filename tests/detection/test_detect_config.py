"""Detection configs: embedded defaults, COCO presets, and one clear error per bad value."""
import argparse

import pytest

from quadranet.config import ConfigError, to_yaml
from quadranet.detection import cli
from quadranet.detection.config import PRESETS, SCHEDULES, config_hash, default_trainable, load_config
from quadranet.detection.synthetic import CanvasSpec


def test_defaults_are_the_embedded_run():
    cfg = load_config()
    assert cfg.method == "scratch" and cfg.model.detector == "maskrcnn" and cfg.data.dataset == "fashion_mnist_canvas"
    assert cfg.epochs == 5 and cfg.lr_steps == SCHEDULES["1x"][1] and cfg.out_indices == (-4, -3, -2, -1) and cfg.masks
    assert cfg.data.canvas.canvas == cfg.data.min_size == cfg.data.max_size == CanvasSpec().canvas == 96
    assert not cfg.freeze_bn and default_trainable(cfg) == ["all"]
    fcos = load_config(overrides=["model.detector=fcos", "method=adapt", "model.pretrained=offline"])
    assert fcos.out_indices == (-3, -2, -1) and not fcos.masks and fcos.freeze_bn
    assert default_trainable(fcos) == ["quadratic", "head"]


@pytest.mark.parametrize("preset,epochs,steps", [("coco_1x", 12, (2 / 3, 8 / 9)), ("coco_3x", 36, (7 / 9, 25 / 27))])
def test_coco_presets_follow_detectron2_schedules(preset, epochs, steps):
    cfg = load_config(preset=preset, overrides=["data.root=/data/coco"])
    assert cfg.data.dataset == "coco" and cfg.data.min_size == 800 and cfg.data.max_size == 1333
    assert cfg.epochs == epochs and cfg.lr_steps == pytest.approx(steps)
    assert cfg.train.optimizer == "sgd" and cfg.train.lr == 0.02 and cfg.data.batch_size == 16
    assert cfg.model.fpn_channels == 256 and cfg.model.mask_head_layers == [256] * 4
    assert "data" in PRESETS[preset]
    assert cfg.data.multiscale == ([640, 672, 704, 736, 768, 800] if preset == "coco_3x" else None)


def test_yaml_round_trip_and_hash(tmp_path):
    cfg = load_config(overrides=["method=adapt", "model.pretrained=offline", "adapter.rank=2"])
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg))
    again = load_config(path)
    assert again == cfg and config_hash(again) == config_hash(cfg)
    assert config_hash(load_config(path, ["train.log_every=1"])) == config_hash(cfg)  # run control
    assert config_hash(load_config(path, ["train.lr=0.01"])) != config_hash(cfg)


@pytest.mark.parametrize("overrides,message", [
    (["method=adapt"], "starts from pretrained first-order weights"),
    (["model.pretrained=offline"], "method='scratch' trains from random init"),
    (["model.quadratic=true", "method=finetune", "model.pretrained=offline"], "model.quadratic=true is for method scratch"),
    (["model.detector=yolo"], "model.detector='yolo' is not allowed"),
    (["train.schedule=1x"], "set exactly one of them"),
    (["train.trainable=[quadratic]"], "has no quadratic terms"),
    (["train.trainable=[everything]"], "expected a list of"),
    (["model.out_indices=[1, 2, 3]"], "maskrcnn takes 4 levels"),
    (["model.out_indices=[3, 2]", "model.detector=fcos"], "increasing backbone level indices"),
    (["model.detector=fcos", "model.fpn_channels=48"], "multiple of 32"),
    (["data.multiscale=[64, 80]"], "ending at data.min_size=96"),
    (["data.multiscale=[128, 96]"], "increasing positive sizes"),
    (["data.min_size=200"], "data.min_size=200 exceeds data.max_size=96"),
    (["data.train_images=/x"], "is for data.dataset='coco'"),
    (["data.dataset=coco", "data.train_images=/x"], "go together"),
    (["data.canvas.max_objects=0"], "data.canvas:"),
    (["train.lr_steps=[0.9, 0.5]"], "increasing fractions"),
    (["train.lr=0"], "train.lr=0.0 must be > 0"),
    (["data.bogus=1"], "unknown config key 'data.bogus'"),
    (["model.fpn_channels=wide"], "must be an integer"),
])
def test_bad_values_are_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'coco_9x'"):
        load_config(preset="coco_9x")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")


def test_cli_parser():
    parser = argparse.ArgumentParser(prog="quadranet")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["detect", "train", "--out", "runs/d", "--preset", "coco_1x", "method=adapt",
                              "model.pretrained=offline"])
    assert args.func is cli.cmd_train and args.preset == "coco_1x" and args.out == "runs/d"
    assert args.overrides == ["method=adapt", "model.pretrained=offline"]
    args = parser.parse_args(["detect", "eval", "--run", "runs/d", "data.eval_limit=10"])
    assert args.func is cli.cmd_eval and args.overrides == ["data.eval_limit=10"]
    assert parser.parse_args(["detect", "data"]).func is cli.cmd_data
    with pytest.raises(SystemExit):
        parser.parse_args(["detect", "fly"])
