from pathlib import Path

import pytest
import yaml

from quadranet.experiments import read_sheet, validate_workflow_config

REPO = Path(__file__).parents[2]
CONFIGS = REPO / "workflow" / "config"
SHEET = REPO / "workflow" / "backbones.tsv"


@pytest.fixture(scope="session")
def sheet():
    """The shipped backbone sheet."""
    return read_sheet(SHEET)


@pytest.fixture
def workflow_config():
    """A fresh, validated copy of the shipped workflow config `name` (smoke, default, ...)."""
    def load(name: str) -> dict:
        return validate_workflow_config(yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()), name)
    return load


@pytest.fixture
def sheet_with(tmp_path):
    """A copy of the shipped sheet with `rows` (lists of cells) appended, read back."""
    def write(*rows) -> Path:
        text = SHEET.read_text().rstrip("\n") + "\n" + "".join("\t".join(row) + "\n" for row in rows)
        path = tmp_path / "sheet.tsv"
        path.write_text(text)
        return path
    return write
