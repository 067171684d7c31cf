"""The Snakemake workflow: lint, the DAG of every scale, schema validation, and a smoke run end to end."""
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).parents[2]
CONFIGS = REPO / "workflow" / "config"
SCHEMAS = REPO / "workflow" / "schemas"
pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")


def snakemake(workdir, *args, timeout=120):
    """Run snakemake on this repository's Snakefile with `workdir` as working directory."""
    cmd = ["snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def bad_config(tmp_path, edit):
    cfg = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    edit(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_lint_is_clean(tmp_path):
    out = snakemake(tmp_path, "--lint")
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["default.yaml", "smoke.yaml", "gpu.yaml", "paper.yaml"])
def test_every_scale_builds_its_dag(tmp_path, scale):
    out = snakemake(tmp_path, "-n", "--configfile", str(CONFIGS / scale))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "train" in out.stdout and "claims" in out.stdout


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(unknown_section=1), "Additional properties are not allowed"),
    (lambda c: c["e1"].update(methods="adapt"), "is not of type 'array'"),
    (lambda c: c["e3"].update(shifts=["blur"]), "is not one of"),
    (lambda c: c["resources"].update(gpus=-1), "less than the minimum"),
    (lambda c: c["methods"]["adapt"].pop("method"), "'method' is a required property"),
    (lambda c: c["run"].update(optimiser="sgd"), "'optimiser' is not one of"),
])
def test_schema_rejects_a_bad_config(tmp_path, edit, message):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    cfg = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    validate(cfg, str(SCHEMAS / "config.schema.yaml"))  # the shipped config passes
    edit(cfg)
    with pytest.raises(WorkflowError, match=message):
        validate(cfg, str(SCHEMAS / "config.schema.yaml"))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(unknown_section=1), "Additional properties are not allowed"),  # the schema, wired in
    (lambda c: c["run"]["train"].update(lr=-1.0), "train.lr=-1.0 must be > 0"),  # quadranet's own check
    (lambda c: c["e1"].update(backbones=["resnet_missing"]), "is not a row of"),
])
def test_workflow_refuses_a_bad_config(tmp_path, edit, message):
    out = snakemake(tmp_path, "-n", "--configfile", str(bad_config(tmp_path, edit)))
    assert out.returncode != 0
    assert message in out.stdout + out.stderr


def test_schema_rejects_a_bad_backbone_sheet(tmp_path):
    sheet = (REPO / "workflow" / "backbones.tsv").read_text().replace("\toffline\t", "\tfrom-the-web\t", 1)
    (tmp_path / "sheet.tsv").write_text(sheet)
    out = snakemake(tmp_path, "-n", "--configfile",
                    str(bad_config(tmp_path, lambda c: c.update(sheet=str(tmp_path / "sheet.tsv")))))
    assert out.returncode != 0 and "does not match" in out.stdout + out.stderr


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path):
    """The smoke config through every stage: runs, bench, tables, figures, claims, and the HTML report."""
    from quadranet.report import FIGURES, TABLES

    start = time.perf_counter()
    out = snakemake(tmp_path, "--cores", "2", "--configfile", str(CONFIGS / "smoke.yaml"), timeout=1800)
    wall = time.perf_counter() - start
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
    print(f"smoke workflow: {wall:.0f} s wall", file=sys.stderr)
    for name in TABLES:
        assert all((tmp_path / f"results/tables/{name}.{ext}").is_file() for ext in ("csv", "md", "tex"))
    for name in FIGURES:
        assert all((tmp_path / f"figures/{name}.{ext}").is_file() for ext in ("png", "pdf"))
    claims = (tmp_path / "results" / "claims.md").read_text()
    assert all(f"## C{i}:" in claims for i in range(1, 9))
    # a second invocation has nothing to do
    again = snakemake(tmp_path, "-n", "--configfile", str(CONFIGS / "smoke.yaml"))
    assert "Nothing to be done" in again.stdout + again.stderr
    report = snakemake(tmp_path, "--report", "results/report.html", "--configfile", str(CONFIGS / "smoke.yaml"))
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "results" / "report.html").stat().st_size > 10_000
