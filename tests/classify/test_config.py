"""Run configs: defaults, overrides, and one clear error per bad key or value."""
import pytest

from quadranet.classify.config import config_hash, load_config
from quadranet.config import ConfigError, parse_override


def test_defaults_and_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("method: adapt\nmodel: {pretrained: offline}\ntrain: {lr: 3e-4, epochs: 2}\n")
    cfg = load_config(f, ["train.epochs=3", "adapter.targets=[depthwise, 'stages.3.*']",
                          "train.stages=[{epochs: 1, trainable: quadratic}, {epochs: 2, trainable: [all], lr: 1e-4}]"])
    assert cfg.method == "adapt" and cfg.train.lr == 3e-4 and cfg.train.epochs == 3
    assert cfg.adapter.targets == ["depthwise", "stages.3.*"]
    assert [(s.epochs, s.trainable, s.lr) for s in cfg.train.stages] == [(1, ["quadratic"], None), (2, ["all"], 1e-4)]
    assert cfg.data.dataset == "fashion_mnist" and cfg.adapter.rank == 4  # untouched defaults


def test_hash_ignores_run_control_only():
    base = load_config(None, [])
    assert config_hash(base) == config_hash(load_config(None, ["train.log_every=3", "train.progress=none"]))
    assert config_hash(base) != config_hash(load_config(None, ["train.lr=0.5"]))


@pytest.mark.parametrize("overrides, message", [
    (["foo=1"], "unknown config key 'foo'; allowed keys: .*'train'"),
    (["train.lrr=1"], r"unknown config key 'train.lrr'; allowed keys in train: .*'lr'"),
    (["method=distill"], r"method='distill' is not allowed; expected one of \['scratch', 'adapt', 'finetune', 'lora'\]"),
    (["adapter.kernel=cubic"], r"adapter.kernel='cubic' is not allowed; expected one of \['bilinear', 'rbf', 'rbf_in'\]"),
    (["adapter.rank=0"], "adapter.rank=0 must be > 0"),
    (["data.batch_size=abc"], "data.batch_size='abc' must be an integer"),
    (["train.compile=maybe"], "train.compile='maybe' must be true or false"),
    (["data.shift=blur"], "data.shift='blur' is not allowed"),
    (["data.shift_strength=2"], r"data.shift_strength=2.0 must lie in \[0, 1\]"),
    (["method=adapt"], "method='adapt' starts from pretrained weights: set model.pretrained"),
    (["model.pretrained=offline"], "method='scratch' trains from random init"),
    (["train.stages=[{trainable: bogus}]"], r"train.stages\[0\].trainable=\['bogus'\]: expected a non-empty list of"),
    (["train.stages=[{epochs: 0}]"], r"train.stages\[0\].epochs=0 must be >= 1"),
    (["method=finetune", "model.pretrained=offline", "train.stages=[{trainable: quadratic}]"],
     "has 'quadratic' but method='finetune'"),
    (["data.eval_split=val"], "needs data.val_size > 0"),
    (["train.lr"], "is not of the form section.key=value"),
    (["train.lr.x=1"], r"train.lr=\{'x': 1\} must be a number"),
])
def test_bad_input_names_key_and_allowed(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")


def test_override_values_are_yaml():
    assert parse_override("train.amp=none") == ("train.amp", "none")
    assert parse_override("data.classes=[0, 3]") == ("data.classes", [0, 3])
    assert parse_override("model.num_classes=null") == ("model.num_classes", None)
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 1e-3  # YAML 1.1 would read a string


def test_file_over_base_merges_section_by_section(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("train: {lr: 3e-4}\n")
    cfg = load_config(f, ["train.epochs=2"], base={"seed": 3, "train": {"epochs": 5, "log_every": 1}})
    assert (cfg.seed, cfg.train.lr, cfg.train.epochs, cfg.train.log_every) == (3, 3e-4, 2, 1)
