# Shared by all stages: the validated config, the run registry and the shell commands of the jobs.
#
# The experiment design lives in the package (quadranet/experiments/): from the config and the backbone sheet it
# builds RUNS (run id "<exp>/<backbone>/<method>/<variant>/seed<seed>" -> its complete `quadranet train` config),
# DETECT_RUNS (the same for `quadranet detect train`, COCO) and MANIFEST (every (experiment, run) role: the rows of
# results/manifest.tsv). A run's folder is results/runs/<run id>/, its config file results/configs/<run id>.yaml.
# Building the registry checks every run config, data folder and weights file, so a bad one stops the DAG build.
import os
import shlex
import shutil
import sys

import yaml
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)  # this checkout's quadranet package, installed or not
from quadranet.experiments import CONFIG_SCHEMA, MANIFEST_COLUMNS, RUNS_DIR, build_registry, read_sheet, run_dir

validate(config, str(CONFIG_SCHEMA))
# a config's sheet path is relative to this checkout (the Snakefile's folder), not to the working directory
REGISTRY = build_registry(config, read_sheet(os.path.join(workflow.basedir, config["sheet"])))
RUNS, DETECT_RUNS, MANIFEST = REGISTRY.runs, REGISTRY.detect_runs, REGISTRY.manifest

# profiles/slurm reads the account and partitions from these; unset means empty: no -A, the default partition
for _var in ("QUADRANET_SLURM_ACCOUNT", "QUADRANET_SLURM_PARTITION", "QUADRANET_SLURM_GPU_PARTITION"):
    os.environ.setdefault(_var, "")

CONFIGS_DIR = "results/configs"
# Jobs run this checkout's quadranet package (PYTHONPATH), through the installed console script (the job's
# environment, e.g. a conda env) or else this interpreter (a venv that is not on PATH).
CHECKOUT = f"env PYTHONPATH={shlex.quote(workflow.basedir)}"
QUADRANET = f"{CHECKOUT} " + (
    "quadranet" if shutil.which("quadranet") else f"{shlex.quote(sys.executable)} -m quadranet.cli"
)
TORCHRUN = "torchrun" if shutil.which("torchrun") else f"{shlex.quote(sys.executable)} -m torch.distributed.run"

# Shell command that writes a small text output (params.text) atomically. Not a Python `run` block, since
# Snakemake executes each such job in a new Snakemake process that parses this workflow again (as it imports
# quadranet, that takes seconds), and the default writes about 80 such files.
WRITE_TEXT = "printf '%s' {params.text:q} > {output}.tmp && mv {output}.tmp {output} && echo 'wrote {output}' > {log}"


def done(rid):
    return f"{run_dir(rid)}/metrics.json"


def needs(rid):
    """metrics.json of the run whose model run `rid` starts from, if it starts from one."""
    src = REGISTRY.starts_from(rid)
    return [done(src)] if src else []


def train_shell(gpus_key, command="train"):
    """The shell command of a training job: `quadranet <command>`, under torchrun inside this one job when
    the job holds more than one GPU (SLURM gives the job all its GPUs; nothing else launches it twice)."""
    gpus = config["resources"][gpus_key]
    launch = (f"{CHECKOUT} {TORCHRUN} --standalone --nproc_per_node={gpus} -m quadranet.cli" if gpus > 1 else QUADRANET)
    return (f"OMP_NUM_THREADS={{threads}} {launch} {command} --config {{input.config}} "
            "--out $(dirname {output.metrics}) > {log} 2>&1")
