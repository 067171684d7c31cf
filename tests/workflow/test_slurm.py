"""The workflow on a real SLURM cluster through profiles/slurm (snakemake-executor-plugin-slurm).

Uses the cluster that answers `sinfo`; else, as root with SLURM installed, starts the single-node test cluster
of scripts/slurm_cluster.sh (and stops it afterwards unless other jobs are queued). Skipped, with the reason,
where neither works. CI installs and starts the cluster before the tests (.ci/run).
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).parents[2]
SCRIPT = REPO / "scripts" / "slurm_cluster.sh"
JOBCOMP = Path("/var/log/slurm/jobcomp.log")  # where scripts/slurm_cluster.sh's cluster records finished jobs
NONLOCAL = {"pretrain", "train", "bench", "detect"}  # the rules that are not localrule

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("snakemake") is None, reason="snakemake is not installed"),
    pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                       reason="snakemake-executor-plugin-slurm is not installed (pip install -e '.[workflow]')"),
]


def node_up() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(s.startswith(("idle", "mix", "alloc")) for s in out.stdout.split())


@pytest.fixture(scope="module")
def cluster():
    """A SLURM cluster taking jobs: the one that is up, else the test cluster of scripts/slurm_cluster.sh."""
    if node_up():
        yield
        return
    if not shutil.which("slurmctld") or not shutil.which("sbatch"):
        pytest.skip("SLURM is not installed; `scripts/slurm_cluster.sh start` (root, apt) installs and starts a "
                    "single-node test cluster")
    if os.geteuid() != 0:
        pytest.skip("no SLURM cluster is up and starting the test cluster needs root (scripts/slurm_cluster.sh)")
    start = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    if start.returncode != 0 or not node_up():
        pytest.skip(f"the SLURM test cluster did not start: {start.stderr.strip()[-500:]}")
    yield
    queue = subprocess.run(["squeue", "-h"], capture_output=True, text=True, timeout=30).stdout
    if not queue.strip():  # stop the cluster this test started, unless another session's jobs are on it
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=120)


def accounting_off() -> bool:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    return "accounting_storage/none" in out


def finished_jobs(ids) -> dict:
    """SLURM job id -> final state, from the cluster's accounting (sacct) or its job completion log."""
    if not accounting_off():
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)],
                             capture_output=True, text=True, timeout=60).stdout
        return dict(line.split("|")[:2] for line in out.splitlines() if "|" in line)
    text = JOBCOMP.read_text() if JOBCOMP.is_file() else ""
    return {m.group(1): m.group(2) for m in re.finditer(r"JobId=(\d+) .*?JobState=(\S+)", text)}


def test_smoke_config_runs_every_job_on_slurm_and_torchrun_once_per_job(cluster, tmp_path, torchrun_shim):
    cfg = yaml.safe_load((REPO / "workflow" / "config" / "smoke.yaml").read_text())
    # The smoke config cut to fit CI's time (all of it takes about 8 minutes here, most of it SLURM and snakemake
    # start-up per job): E1 with two methods in both settings and E5's layer bench still run every kind of job,
    # pretraining, training, benchmark and the local report rules.
    cfg["e1"]["methods"] = ["fo_scratch", "adapt"]
    for exp in ("e2", "e3", "e4"):
        cfg[exp]["enabled"] = False
    # Pretraining asks for 2 processes: its job asks SLURM for 2 GPUs and starts torchrun with 2 processes (on a
    # CPU-only node they run on the CPU with gloo); 2 ranks need an even batch.
    cfg["resources"]["pretrain_gpus"] = 2
    cfg["run"]["data"]["batch_size"] = 24
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump(cfg))
    # a torchrun first on PATH that records each launch (SLURM job and step) and hands over to the real one
    env = torchrun_shim("$SLURM_JOB_ID $SLURM_STEP_ID $*")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--profile", str(REPO / "profiles" / "slurm"), "--configfile", str(tmp_path / "smoke.yaml"),
           # test settings: 4 jobs at a time on this machine's cores, quick status checks, keep every job's log
           "--jobs", "4", "--latency-wait", "5", "--slurm-init-seconds-before-status-checks", "2",
           "--slurm-keep-successful-logs"]
    if accounting_off():  # no slurmdbd: job states from squeue (the cluster keeps finished jobs, MinJobAge)
        cmd += ["--slurm-status-command", "squeue"]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=env)
    print(f"smoke workflow on SLURM: {time.perf_counter() - start:.0f} s wall", file=sys.stderr)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]
    assert (tmp_path / "results" / "claims.md").is_file()

    # every job of a rule that is not a localrule was submitted, once, and SLURM ran it to completion
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    jobid: (\d+)", log, flags=re.M)
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: \S+\)", log))
    assert {rule for rule, _ in jobs} <= NONLOCAL and {"pretrain", "train", "bench"} <= {r for r, _ in jobs}
    assert sorted(submitted) == sorted(job for _, job in jobs)
    slurm_ids = list(submitted.values())
    states = finished_jobs(slurm_ids)
    assert {i: states.get(i) for i in slurm_ids} == {i: "COMPLETED" for i in slurm_ids}
    for slurm_id, path in re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", log):
        assert Path(path).is_file() and Path(path).stem == slurm_id  # the job's own SLURM log, kept

    # each pretraining job (2 processes) launched torchrun exactly once, inside its SLURM job, with 2 processes
    pretrain = {submitted[job] for rule, job in jobs if rule == "pretrain"}
    calls = [line.split() for line in (tmp_path / "torchrun.calls").read_text().splitlines()]
    assert sorted(c[0] for c in calls) == sorted(pretrain)
    assert all("--nproc_per_node=2" in c for c in calls)
    for metrics in (tmp_path / "results" / "runs" / "pretrain").rglob("metrics.json"):
        assert json.loads(metrics.read_text())["num_devices"] == 2
