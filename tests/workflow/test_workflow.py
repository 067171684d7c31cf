"""The Snakemake workflow: lint, the DAG of every scale, the registry's checks wired in, and a smoke run end to end.

The registry itself (which runs, ids and configs a config asks for; its errors) is tested without Snakemake in
tests/experiments/. Every test here starts snakemake in a subprocess."""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).parents[2]
CONFIGS = REPO / "workflow" / "config"
# snakemake of this interpreter (CI runs .venv/bin/python -m pytest without the venv on PATH)
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("snakemake") is None, reason="snakemake is not installed")


def snakemake(workdir, *args, timeout=120):
    """Run snakemake on this repository's Snakefile with `workdir` as working directory."""
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def bad_config(tmp_path, edit):
    cfg = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    edit(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_lint_is_clean(tmp_path):
    out = snakemake(tmp_path, "--lint")
    assert out.returncode == 0, out.stdout + out.stderr


def job_outputs(out) -> set:
    """Run folders (results/runs/...) of the jobs a dry run lists."""
    return set(re.findall(r"results/runs/(\S+)/metrics\.json", out.stdout))


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["default.yaml", "smoke.yaml", "gpu.yaml"])
def test_every_scale_builds_its_dag(tmp_path, scale):
    out = snakemake(tmp_path, "-n", "--configfile", str(CONFIGS / scale))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "train" in out.stdout and "claims" in out.stdout


def paper_fixture(root: Path) -> dict:
    """An empty ImageNet-1K / 21K / COCO 2017 folder tree and weights files, and paper.yaml pointed at it."""
    for name in ("imagenet", "imagenet21k"):
        for split in ("train", "val"):
            (root / name / split / "n01440764").mkdir(parents=True)
    (root / "coco" / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / "coco" / split).mkdir()
        (root / "coco" / "annotations" / f"instances_{split}.json").write_text("{}")
    cfg = yaml.safe_load((CONFIGS / "paper.yaml").read_text())
    for name in cfg["weights"]:
        cfg["weights"][name] = str(root / f"{name}.safetensors")
        Path(cfg["weights"][name]).write_bytes(b"")
    cfg["run"]["data"]["root"] = cfg["e3"]["data"]["root"] = str(root / "imagenet")
    cfg["source"]["data"]["root"] = str(root / "imagenet21k")
    cfg["coco"]["run"]["data"]["root"] = str(root / "coco")
    return cfg


@pytest.mark.slow
def test_paper_dry_run_lists_every_imagenet_and_coco_job(tmp_path):
    cfg = paper_fixture(tmp_path / "data")
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "-p", "--configfile", str(tmp_path / "paper.yaml"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = job_outputs(out)
    sheet = pd.read_csv(REPO / "workflow" / "backbones.tsv", sep="\t", dtype=str, keep_default_na=False)
    e1 = sheet[sheet["e1_scales"].str.split(",").map(lambda s: "paper" in s)]["name"]
    assert len(e1) >= 6
    settings = list(cfg["e1"]["settings"])
    for bb in e1:  # ImageNet-1K: every E1 backbone x method (from random init: one run for all settings)
        assert {f"e1/{bb}/{m}/{settings[0]}/seed0" for m in cfg["e1"]["methods"] if m != "v1_scratch"} <= runs, bb
    for n in cfg["e2"]["source_per_class"]:  # ImageNet-21K pretraining at each scale, then adaptation
        assert f"pretrain/convnext_tiny/first_order/src{n}/seed0" in runs
        assert f"e2/convnext_tiny/adapt/src{n}/seed0" in runs
    assert {f"coco/convnext_tiny/{m}/{s}/seed0" for m in cfg["coco"]["methods"]
            for s in ("1x", "3x")} <= runs  # COCO 2017, both schedules
    assert sum(r.startswith("e3/") for r in runs) == len(cfg["e3"]["strength"]) * len(cfg["e3"]["methods"])
    # the ImageNet runs read the fixture tree, the COCO runs its annotation files
    configs = " ".join(out.stdout.split())
    # torchrun, or `python -m torch.distributed.run` where torchrun is not on PATH
    assert "--standalone --nproc_per_node=8" in configs and "detect train" in configs


@pytest.mark.slow
def test_missing_data_or_weights_stop_before_any_job(tmp_path):
    cfg = paper_fixture(tmp_path / "data")
    cfg["coco"]["run"]["data"]["root"] = str(tmp_path / "no-coco")
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "a.yaml"))
    assert out.returncode != 0 and "COCO train image folder" in out.stdout + out.stderr
    cfg = paper_fixture(tmp_path / "data2")
    cfg["weights"]["convnext_small"] = str(tmp_path / "missing.safetensors")
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "b.yaml"))
    assert out.returncode != 0 and "missing.safetensors' does not exist" in out.stdout + out.stderr
    out = snakemake(tmp_path, "-n", "--configfile", str(bad_config(
        tmp_path, lambda c: c["run"]["data"].update(root=str(tmp_path / "no-fmnist")))))
    assert out.returncode != 0 and "apt-get install dataset-fashion-mnist" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(unknown_section=1), "Additional properties are not allowed"),  # the schema, wired in
    (lambda c: c["run"]["train"].update(lr=-1.0), "train.lr=-1.0 must be > 0"),  # the registry's check of each run
    (lambda c: c["e1"].update(backbones=["resnet_missing"]), "e1.backbones: backbone 'resnet_missing' is not a row"),
])
def test_workflow_refuses_a_bad_config(tmp_path, edit, message):
    out = snakemake(tmp_path, "-n", "--configfile", str(bad_config(tmp_path, edit)))
    assert out.returncode != 0
    assert message in out.stdout + out.stderr


@pytest.mark.slow
def test_run_config_files_are_the_registrys_configs(tmp_path):
    """results/configs/<run>.yaml, what each training job reads, is the registry's config of that run."""
    from quadranet.experiments import build_registry, load_workflow_config, read_sheet

    config = load_workflow_config(CONFIGS / "smoke.yaml")
    runs = build_registry(config, read_sheet(REPO / config["sheet"]), check_files=False).runs
    chosen = ["e1/test_convnext/adapt/transfer/seed0", "e3/test_convnext/lora/gamma-0.6/seed0"]
    out = snakemake(tmp_path, "--cores", "1", *(f"results/configs/{rid}.yaml" for rid in chosen),
                    "--configfile", str(CONFIGS / "smoke.yaml"))
    assert out.returncode == 0, out.stderr[-3000:]
    for rid in chosen:
        assert yaml.safe_load((tmp_path / "results" / "configs" / f"{rid}.yaml").read_text()) == runs[rid]


def sheet_row(*cells) -> str:
    return "\t".join(cells)


@pytest.mark.slow
@pytest.mark.parametrize("row, message", [
    (sheet_row("resnet_new", "ResNet", "9x", "5.0", "resnet9x_nope", "workflow", "by this workflow", "160", "smoke",
               ""),
     "column 'arch': 'resnet9x_nope' is not a timm model"),
    (sheet_row("test_convnext", "ConvNeXt", "test", "0.27", "test_convnext", "workflow", "by this workflow", "160",
               "", ""),
     "column 'name': 'test_convnext' repeats the name of line 2"),
    (sheet_row("resnet_new", "ResNet", "9x", "5.0", "resnet10t", "from-the-web", "by this workflow", "160", "", ""),
     "column 'weights': 'from-the-web' does not match"),
])
def test_a_bad_sheet_row_stops_the_dry_run_naming_the_row_and_column(tmp_path, row, message):
    sheet = (REPO / "workflow" / "backbones.tsv").read_text()
    lines = sheet.rstrip("\n").splitlines()
    (tmp_path / "sheet.tsv").write_text("\n".join([*lines, row]) + "\n")
    out = snakemake(tmp_path, "-n", "--configfile",
                    str(bad_config(tmp_path, lambda c: c.update(sheet=str(tmp_path / "sheet.tsv")))))
    assert out.returncode != 0
    name = row.split("\t")[0]
    assert f"row {name!r} (line {len(lines) + 1}), {message}" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()


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


def long_scratch_run(tmp_path):
    """The smoke config cut to one training run long enough to be killed mid-run (a smoke epoch takes a fraction
    of a second), checkpointed every step and evaluated once; returns its config file and run folder."""
    cfg = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    cfg["e1"].update(methods=["scratch"])
    for exp in ("e2", "e3", "e4", "e5"):
        cfg[exp]["enabled"] = False
    cfg["methods"]["scratch"]["train"].update(epochs=40, eval_every=40)
    cfg["run"]["train"]["checkpoint_every"] = 1
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "c.yaml", tmp_path / "results" / "runs" / "e1" / "test_convnext" / "scratch" / "intask" / "seed0"


def group_alive(pgid) -> bool:
    """Whether a live (not zombie) process of process group `pgid` remains."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc (Linux)")
def test_kill_9_then_unlock_and_the_same_command_ends_as_an_uninterrupted_run(tmp_path):
    """kill -9 of snakemake mid-training leaves its lock and its training job (an orphan, killed here too, as a
    preempted node would). `--unlock`, then the same command: no --rerun-incomplete needed (the default
    workflow profile sets it), the run resumes from its checkpoint and ends as an uninterrupted run ends."""
    config, run = long_scratch_run(tmp_path)
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "1",
           str((run / "metrics.json").relative_to(tmp_path)), "--configfile", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "last.pt").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the workflow ended before the training job wrote a checkpoint"
    os.kill(proc.pid, signal.SIGKILL)  # snakemake alone
    proc.wait(timeout=60)
    assert group_alive(proc.pid), "the training job should have outlived snakemake"
    os.killpg(proc.pid, signal.SIGKILL)  # the orphaned training job
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (run / "metrics.json").exists()

    locked = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr  # what the README says to do
    unlock = subprocess.run([*cmd, "--unlock"], capture_output=True, text=True, timeout=300)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]

    ref = tmp_path / "uninterrupted"
    config_file = tmp_path / "results" / "configs" / "e1" / "test_convnext" / "scratch" / "intask" / "seed0.yaml"
    straight = subprocess.run([sys.executable, "-m", "quadranet.cli", "train", "--config", str(config_file),
                               "--out", str(ref)], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})  # as the job
    assert straight.returncode == 0, straight.stderr[-3000:]
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (ref, run))
    assert b["resumes"] >= 1 and a["resumes"] == 0
    for key in ("acc1", "acc5", "best_acc1", "initial_acc1", "epochs", "steps", "images_seen"):
        assert a[key] == b[key], key
    timing = ("wall_s", "device_s", "train_s", "data_wait_s", "images_per_s", "peak_mem_mb")
    log = lambda d: [{k: v for k, v in json.loads(line).items() if k not in timing}
                     for line in (d / "log.jsonl").read_text().splitlines()]
    assert log(ref) == log(run)  # the same losses, step by step, and no line twice


@pytest.mark.slow
def test_interrupted_workflow_resumes_the_training_job(tmp_path):
    """Ctrl-C (SIGINT to the whole process group) while a training job runs, after its first checkpoint:
    the rerun resumes that run from the checkpoint and completes it."""
    config, run = long_scratch_run(tmp_path)
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "1",
           str((run / "metrics.json").relative_to(tmp_path)), "--configfile", str(config)]
    # SIGINT back to its default in the child: a pytest started in the background (`cmd &`, as CI scripts
    # may do) ignores SIGINT, every process it starts would inherit that, and Ctrl-C would do nothing.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "last.pt").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the workflow ended before the training job wrote a checkpoint"
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    assert not (run / "metrics.json").exists() and (run / "checkpoints" / "last.pt").is_file()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumes"] >= 1 and metrics["epochs"] == 40


@pytest.mark.slow
def test_torchrun_shim_records_each_launch_and_hands_over(tmp_path, torchrun_shim):
    """The shim the SLURM and rehearsal tests count launches with (conftest.py)."""
    env = torchrun_shim("$*")
    out = subprocess.run(["torchrun", "--help"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and "nproc" in out.stdout  # the real torchrun answered
    assert (tmp_path / "torchrun.calls").read_text().splitlines() == ["--help"]
