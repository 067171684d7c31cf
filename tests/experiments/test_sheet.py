"""The backbone sheet: read in file order, and every bad cell refused naming its line, row and column."""
from pathlib import Path

import pytest

from quadranet.experiments import read_sheet
from quadranet.experiments.sheet import COLUMNS

SHEET = Path(__file__).parents[2] / "workflow" / "backbones.tsv"


def row(name="resnet_new", **cells) -> list:
    """A valid sheet row (a ResNet-10t trained by the workflow) with `cells` changed."""
    values = dict(name=name, family="ResNet", scale="10t", params_m="5.4", arch="resnet10t", weights="workflow",
                  weights_source="by this workflow", input_size="176", e1_scales="smoke", v1_arch="")
    values.update(cells)
    return [values[c] for c in COLUMNS]


def test_the_shipped_sheet_is_read_in_file_order(sheet):
    names = [line.split("\t")[0] for line in SHEET.read_text().splitlines()[1:] if line.strip()]
    assert list(sheet.rows) == names and names[0] == "test_convnext"
    assert sheet["test_convnext"]["v1_arch"] == "quadranet_v1_test"
    assert sheet["test_resnet"]["v1_arch"] == ""


def test_a_repeated_name_names_the_row_and_the_column(sheet_with):
    line = len(SHEET.read_text().splitlines()) + 1
    with pytest.raises(ValueError) as error:
        read_sheet(sheet_with(row("test_convnext")))
    assert (f"row 'test_convnext' (line {line}), column 'name': 'test_convnext' repeats the name of line 2"
            in str(error.value))


def test_a_missing_column_names_the_header_and_the_column(tmp_path):
    lines = SHEET.read_text().splitlines()
    path = tmp_path / "sheet.tsv"
    path.write_text("\n".join("\t".join(line.split("\t")[:-1]) for line in lines) + "\n")  # no v1_arch
    with pytest.raises(ValueError, match=r"header \(line 1\), column 'v1_arch': missing"):
        read_sheet(path)


def test_a_missing_cell_names_the_row_and_the_column(sheet_with):
    with pytest.raises(ValueError, match=r"row 'resnet_new' \(line \d+\), column 'v1_arch': no cell"):
        read_sheet(sheet_with(row()[:-1]))


@pytest.mark.parametrize("column, value, message", [
    ("weights", "from-the-web", "'from-the-web' does not match"),
    ("input_size", "224px", "'224px' does not match"),
    ("family", "", "'' should be non-empty"),
])
def test_a_bad_value_names_the_row_and_the_column(sheet_with, column, value, message):
    with pytest.raises(ValueError) as error:
        read_sheet(sheet_with(row(**{column: value})))
    assert f"row 'resnet_new' (line " in str(error.value)
    assert f"column {column!r}: {message}" in str(error.value)


@pytest.mark.parametrize("column", ["arch", "v1_arch"])
def test_an_unknown_architecture_names_the_row_and_the_column(sheet_with, column):
    with pytest.raises(ValueError) as error:
        read_sheet(sheet_with(row(**{column: "resnet9x_nope"})))
    assert f"row 'resnet_new' (line " in str(error.value)
    assert f"column {column!r}: 'resnet9x_nope' is not a timm model" in str(error.value)


def test_a_missing_sheet_names_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="backbone sheet '.*no-sheet.tsv' does not exist"):
        read_sheet(tmp_path / "no-sheet.tsv")
