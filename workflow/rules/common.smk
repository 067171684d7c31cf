# Helpers shared by all stages: validated config and backbone sheet, the run registry, the CLI call.
#
# Every training run is one entry of RUNS: a run id "<exp>/<backbone>/<method>/<variant>/seed<seed>" mapped to
# its complete `quadranet train` config (quadranet/config.py keys). Its folder is results/runs/<run id>/ and
# its config file results/configs/<run id>.yaml. Experiments that need an identical run share it (same
# config -> same id), so e.g. E2's adaptation from the default source set is E1's run, computed once.
# MANIFEST lists every (experiment, run) role; the reporting package reads runs through it.
import copy
import os
import shlex
import shutil
import sys

import pandas as pd
import yaml
from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")
sys.path.insert(0, workflow.basedir)  # this checkout's quadranet package, installed or not


def repo_path(path):
    """A path of the config relative to the repository (the Snakefile's folder) unless absolute."""
    return path if os.path.isabs(path) else os.path.join(workflow.basedir, path)


SHEET = pd.read_csv(repo_path(config["sheet"]), sep="\t", comment="#", dtype=str, keep_default_na=False)
validate(SHEET, "../schemas/backbones.schema.yaml")
SHEET = SHEET.set_index("name", drop=False)


def check_architectures(sheet):
    """Fail at DAG-building time, naming the row, when a sheet row's arch or v1_arch is not a timm model (the
    QuadraNet families register themselves with timm on import), instead of when its first job runs."""
    import difflib

    import timm

    import quadranet.models  # noqa: F401  (registers quadranet_v1_* / quadranet_v2_* with timm)

    known = set(timm.list_models())
    for name, row in sheet.iterrows():
        for column in ("arch", "v1_arch"):
            arch = row[column]
            if arch and arch not in known:
                close = difflib.get_close_matches(arch, known, n=3)
                raise ValueError(f"{config['sheet']}: row {name!r}: {column} {arch!r} is not a timm model"
                                 + (f" (did you mean {', '.join(close)}?)" if close else "")
                                 + "; timm.list_models('*pattern*') lists them")


check_architectures(SHEET)

# profiles/slurm reads the account and partitions from these; unset means empty: no -A, the default partition
for _var in ("QUADRANET_SLURM_ACCOUNT", "QUADRANET_SLURM_PARTITION", "QUADRANET_SLURM_GPU_PARTITION"):
    os.environ.setdefault(_var, "")

RUNS_DIR = "results/runs"
CONFIGS_DIR = "results/configs"
# Jobs run this checkout's quadranet package (PYTHONPATH), through the installed console script (the job's
# environment, e.g. a conda env) or else this interpreter (a venv that is not on PATH).
CHECKOUT = f"env PYTHONPATH={shlex.quote(workflow.basedir)}"
QUADRANET = f"{CHECKOUT} " + ("quadranet" if shutil.which("quadranet") else f"{shlex.quote(sys.executable)} -m quadranet.cli")
TORCHRUN = "torchrun" if shutil.which("torchrun") else f"{shlex.quote(sys.executable)} -m torch.distributed.run"
RUNS = {}  # run id -> run config
DETECT_RUNS = {}  # run id -> detection run config (COCO, table 3)
MANIFEST_COLUMNS = ["exp", "backbone", "method", "variant", "seed", "run"]
MANIFEST = []  # one row (MANIFEST_COLUMNS) per role of a run in an experiment


def merge(*dicts):
    """Deep merge, later wins; lists are replaced, not merged."""
    out = {}
    for d in dicts:
        for key, value in (d or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def seeds(exp):
    return config[exp].get("seeds", config["seeds"])


def backbone(name):
    if name not in SHEET.index:
        raise ValueError(f"backbone {name!r} is not a row of {config['sheet']}; rows: {list(SHEET.index)}")
    return SHEET.loc[name]


def run_dir(rid):
    return f"{RUNS_DIR}/{rid}"


def done(rid):
    return f"{run_dir(rid)}/metrics.json"


def _check(rid, cfg, detection=False):
    """Fail at DAG-building time, not hours later, on a config quadranet would refuse, on data that is not
    where the config says, or on a weights file that does not exist."""
    from quadranet.config import ConfigError, load_config
    from quadranet.data import check_data
    from quadranet.detection.config import load_detection_config
    from quadranet.detection.train import check_detection_data

    plan = os.environ.get("QUADRANET_PLAN") == "1"  # `quadranet plan`: the runs, before their data is on disk
    try:
        parsed = (load_detection_config if detection else load_config)(base=cfg)
        if not plan:
            check_detection_data(parsed) if detection else check_data(parsed.data.dataset, parsed.data.root)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        raise ValueError(f"run {rid}: {e}") from None
    if plan:
        return
    weights = parsed.model.pretrained
    made_here = weights.startswith(f"{RUNS_DIR}/")  # a run of this workflow, made before this run starts
    if weights not in ("none", "offline", "timm") and not made_here and not os.path.exists(weights):
        raise ValueError(f"run {rid}: model.pretrained={weights!r} does not exist; expected 'none', 'offline', "
                         f"a run folder or a .safetensors file (set weights.<backbone> in the config)")


def add_run(exp, bb, method, variant, seed, *parts, registry=None):
    """Register a training run (config = config['run'] merged with `parts`, then the seed); returns its id.

    An identical config registered before (by any experiment) is reused under its first id. registry:
    DETECT_RUNS for `quadranet detect train` runs, whose configs are complete in `parts`.
    """
    detection = registry is DETECT_RUNS
    registry = RUNS if registry is None else registry
    cfg = merge({} if detection else config["run"], *parts, {"seed": seed})
    rid = next((r for r, c in registry.items() if c == cfg), None)
    if rid is None:
        rid = f"{exp}/{bb}/{method}/{variant}/seed{seed}"
        if rid in registry:
            raise ValueError(f"run id {rid} registered twice with different configs")
        _check(rid, cfg, detection)
        registry[rid] = cfg
    row = dict(zip(MANIFEST_COLUMNS, (exp, bb, method, variant, seed, rid)))
    if row not in MANIFEST:
        MANIFEST.append(row)
    return rid


def needs(rid):
    """metrics.json of the runs whose model this run starts from (model.pretrained = a run folder)."""
    src = RUNS.get(rid, DETECT_RUNS.get(rid, {})).get("model", {}).get("pretrained", "")
    return [f"{src}/metrics.json"] if src.startswith(RUNS_DIR + "/") else []


# Shell command that writes a small text output (params.text) atomically. Not a Python `run` block, since
# Snakemake executes each such job in a new Snakemake process that parses this workflow again (about
# 10 s here, as it imports quadranet), and the default writes about 80 such files.
WRITE_TEXT = "printf '%s' {params.text:q} > {output}.tmp && mv {output}.tmp {output} && echo 'wrote {output}' > {log}"


def run_config(rid):
    return RUNS[rid] if rid in RUNS else DETECT_RUNS[rid]


def train_shell(gpus_key, command="train"):
    """The shell command of a training job: `quadranet <command>`, under torchrun inside this one job when
    the job holds more than one GPU (SLURM gives the job all its GPUs; nothing else launches it twice)."""
    gpus = config["resources"][gpus_key]
    launch = (f"{CHECKOUT} {TORCHRUN} --standalone --nproc_per_node={gpus} -m quadranet.cli" if gpus > 1 else QUADRANET)
    return (f"OMP_NUM_THREADS={{threads}} {launch} {command} --config {{input.config}} "
            "--out $(dirname {output.metrics}) > {log} 2>&1")


def weights_of(name):
    """Where backbone `name`'s first-order weights come from: config weights.<name> wins over the sheet."""
    return (config.get("weights") or {}).get(name) or backbone(name)["weights"]


def native(name):
    """data.resolution = the backbone's native input size, when config native_resolution asks for it."""
    return {"data": {"resolution": int(backbone(name)["input_size"])}} if config["native_resolution"] else {}


def pretrain_run(name, per_class=None):
    """Run id of `name`'s first-order pretraining on the source task (train_per_class = per_class)."""
    src = merge(config["source"], {"data": {"train_per_class": per_class}} if per_class else {})
    n = src["data"].get("train_per_class") or "all"
    model = {"method": "scratch", "model": {"arch": backbone(name)["arch"], "pretrained": "none", "quadratic": False}}
    return add_run("pretrain", name, "first_order", f"src{n}", config["source"].get("seed", 0), native(name), src, model)


def backbone_model(name, per_class=None):
    """Run config keys that put backbone `name` in a run: its arch, its first-order weights from the sheet (used by
    the methods that start from them; scratch methods set pretrained none), its native resolution if asked.
    per_class: pretrain it on a source set of that many images per class (E2), whatever the sheet says."""
    arch, weights = backbone(name)["arch"], weights_of(name)
    if weights == "workflow" or per_class is not None:
        weights = run_dir(pretrain_run(name, per_class))
    return merge({"model": {"arch": arch, "pretrained": weights}}, native(name))


def v1_model(name, keys):
    """`keys` with model.arch 'v1' replaced by backbone `name`'s QuadraNet V1 counterpart (sheet v1_arch);
    None when the backbone has none (such a method skips it)."""
    if (keys.get("model") or {}).get("arch") != "v1":
        return keys
    v1 = backbone(name)["v1_arch"]
    return merge(keys, {"model": {"arch": v1}}) if v1 else None
