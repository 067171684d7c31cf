"""The workflow config: read, checked against the packaged schema, its defaults filled in as Snakemake fills them."""
import copy
import importlib.util
from pathlib import Path

import pytest
import yaml

from quadranet.experiments import CONFIG_SCHEMA, load_workflow_config, validate_workflow_config

CONFIGS = Path(__file__).parents[2] / "workflow" / "config"
SHIPPED = sorted(p.name for p in CONFIGS.glob("*.yaml") if p.stem != "coco_cpu")  # coco_cpu is an overlay


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_conforms(name):
    config = load_workflow_config(CONFIGS / name)
    assert config["scale"] and isinstance(config["native_resolution"], bool)


def test_defaults_are_filled_in():
    config = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    assert "native_resolution" not in config
    assert validate_workflow_config(config)["native_resolution"] is False


@pytest.mark.skipif(importlib.util.find_spec("snakemake") is None, reason="snakemake is not installed")
def test_defaults_are_those_snakemakes_validate_fills_in():
    from snakemake.utils import validate

    ours, theirs = (yaml.safe_load((CONFIGS / "default.yaml").read_text()) for _ in range(2))
    validate_workflow_config(ours)
    validate(theirs, str(CONFIG_SCHEMA))
    assert ours == theirs


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(unknown_section=1), "top level: Additional properties are not allowed"),
    (lambda c: c["e1"].update(methods="adapt"), "e1.methods: 'adapt' is not of type 'array'"),
    (lambda c: c["e3"]["strength"].update(blur=0.5), "e3.strength: 'blur' is not one of"),
    (lambda c: c["e1"]["settings"]["intask"].update(weights="imagenet"), "e1.settings.intask.weights: 'imagenet' is"),
    (lambda c: c["resources"].update(gpus=-1), "resources.gpus: -1 is less than the minimum of 0"),
    (lambda c: c["methods"]["adapt"].pop("method"), "methods.adapt: 'method' is a required property"),
    (lambda c: c["run"].update(optimiser="sgd"), "run: 'optimiser' is not one of"),
])
def test_a_bad_config_is_refused_naming_the_key(edit, message):
    config = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    validate_workflow_config(copy.deepcopy(config))  # the shipped config passes
    edit(config)
    with pytest.raises(ValueError) as error:
        validate_workflow_config(config, "smoke.yaml")
    assert str(error.value).startswith("smoke.yaml: ") and message in str(error.value)


def test_a_missing_config_file_names_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="workflow config '.*nothing.yaml' does not exist"):
        load_workflow_config(tmp_path / "nothing.yaml")
