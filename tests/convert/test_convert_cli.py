"""`quadranet convert-report`: one CSV row per rank; its old name `report` still works and says that it moved."""
import pandas as pd

from quadranet.cli import main


def test_convert_report_writes_one_row_per_rank(tmp_path):
    out = tmp_path / "report.csv"
    assert main(["convert-report", "--model", "test_convnext", "--ranks", "1", "2", "--input-size", "32",
                 "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert df["rank"].tolist() == [1, 2] and (df["layers"] == 9).all()
    assert df["params_added"].iloc[1] == 2 * df["params_added"].iloc[0]  # every added term is linear in the rank


def test_old_report_name_still_works_and_says_it_moved(tmp_path, capsys):
    out = tmp_path / "report.csv"
    assert main(["report", "--model", "test_convnext", "--ranks", "1", "--input-size", "32", "--out", str(out)]) == 0
    assert "now `quadranet convert-report`" in capsys.readouterr().err
    assert "params_added" in out.read_text()
