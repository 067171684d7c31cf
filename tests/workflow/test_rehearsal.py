"""The rehearsal of the paper scale (workflow/config/rehearsal.yaml, docs/rehearsal.md) and its fixtures.

Always: `quadranet fixtures` writes real ImageNet-1K / 21K / COCO 2017 trees and ConvNeXt weights files that the
readers accept, and the rehearsal is paper.yaml with only sizes changed, planning exactly paper.yaml's runs. With
`pytest -m rehearsal` (CI runs it on its own): the rehearsal end to end, every training job under torchrun.
"""
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from quadranet.data import fixtures

REPO = Path(__file__).parents[2]
CONFIGS = REPO / "workflow" / "config"
FIXTURES = Path("data") / "rehearsal"  # where rehearsal.yaml reads them, relative to the workflow's directory
needs_snakemake = pytest.mark.skipif(importlib.util.find_spec("snakemake") is None, reason="snakemake is not installed")

# keys whose values are sizes: the rehearsal may change them, add them or leave them out (and nothing else)
SIZES = {"resolution", "batch_size", "eval_batch_size", "num_workers", "train_limit", "eval_limit", "epochs",
         "warmup_epochs", "warmup_steps", "log_every", "checkpoint_every", "min_size", "max_size", "multiscale",
         "fpn_channels", "anchor_size", "box_head_dim", "mask_head_layers", "rpn_proposals", "roi_batch",
         "source_per_class", "model_args", "layer_args"}
# the other differences, by path: where the data and weights are, the scale label, the resources (2 processes on
# the CPU) and the native resolution (224-260 px on a CPU would take hours)
PATHS = {("scale",), ("resources",), ("native_resolution",), ("weights",), ("run", "data", "root"),
         ("source", "data", "root"), ("e3", "data", "root"), ("coco", "run", "data", "root")}


def differences(paper, rehearsal, path=()) -> list:
    """Paths where the two configs differ other than in SIZES keys and PATHS."""
    if path in PATHS or (path and path[-1] in SIZES):
        return []
    if isinstance(paper, dict) and isinstance(rehearsal, dict):
        return [d for key in {**paper, **rehearsal}
                for d in differences(paper.get(key), rehearsal.get(key), (*path, key))]
    if isinstance(paper, list) and isinstance(rehearsal, list) and len(paper) == len(rehearsal):
        return [d for i, (a, b) in enumerate(zip(paper, rehearsal)) for d in differences(a, b, (*path, i))]
    return [] if paper == rehearsal else [(path, paper, rehearsal)]


def test_rehearsal_is_the_paper_config_with_only_sizes_changed():
    paper, rehearsal = (yaml.safe_load((CONFIGS / name).read_text()) for name in ("paper.yaml", "rehearsal.yaml"))
    assert differences(paper, rehearsal) == []
    assert rehearsal["resources"]["gpus"] == rehearsal["resources"]["pretrain_gpus"] == 2  # torchrun, 2 processes
    assert len(rehearsal["e2"]["source_per_class"]) == len(paper["e2"]["source_per_class"])
    assert rehearsal["coco"]["schedules"].keys() == paper["coco"]["schedules"].keys() == {"1x", "3x"}


def test_differences_names_a_change_beyond_sizes():
    paper = yaml.safe_load((CONFIGS / "paper.yaml").read_text())
    changed = yaml.safe_load((CONFIGS / "rehearsal.yaml").read_text())
    changed["e4"]["variants"].pop()
    changed["methods"]["adapt"]["train"]["stages"][0]["trainable"] = ["all"]
    found = {d[0] for d in differences(paper, changed)}
    assert found == {("e4", "variants"), ("methods", "adapt", "train", "stages", 0, "trainable")}


@pytest.fixture(scope="module")
def data_trees(tmp_path_factory) -> Path:
    """The fixture's data trees (no weights: the dry runs only check that the weights files exist)."""
    root = tmp_path_factory.mktemp("rehearsal") / "fixtures"
    fixtures.make_fixtures(root, ("imagenet", "imagenet21k", "coco"), log=lambda _: None)
    return root


def test_fixture_trees_are_what_the_readers_expect(data_trees):
    from quadranet.data import imagenet1k, imagenet21k
    from quadranet.detection.coco import CocoDetection

    train, val = (imagenet1k(data_trees / "imagenet", split, input_size=32) for split in ("train", "val"))
    assert len(train.classes) == len(val) == 1000 and train.classes == val.classes
    assert all(re.fullmatch(r"n\d{8}", w) for w in train.classes)
    x0, x1 = train[0][0], train[1][0]
    assert x0.shape == (3, 32, 32) and x0.std() > 0.1 and (x0 - x1).abs().mean() > 0.1  # classes look different
    src = imagenet21k(data_trees / "imagenet21k", "train", input_size=32)
    assert src.num_classes == 8 and len(src) == 8 * 4 and not set(src.classes) & set(train.classes)
    for split, n in (("train2017", 4), ("val2017", 4)):
        ds = CocoDetection(data_trees / "coco" / split, data_trees / "coco" / "annotations" / f"instances_{split}.json",
                           train=split == "train2017")
        assert len(ds) == n and not ds.skipped and ds.categories == [1, 3, 18, 44]
        image, target = ds[0]
        assert image.shape[0] == 3 and len(target["boxes"]) >= 1 and (target["masks"].sum((1, 2)) > 0).all()


def test_fixtures_are_seeded_and_kept_when_written_before(tmp_path):
    logs = []
    assert fixtures.make_fixtures(tmp_path / "a", ("coco",), log=logs.append) == [tmp_path / "a" / "coco"]
    fixtures.make_fixtures(tmp_path / "b", ("coco",), log=logs.append)
    ann = "coco/annotations/instances_train2017.json"
    assert (tmp_path / "a" / ann).read_bytes() == (tmp_path / "b" / ann).read_bytes()
    assert fixtures.make_fixtures(tmp_path / "a", ("coco",), log=logs.append) == []  # the same options: kept
    assert logs[-1].startswith("kept")
    assert fixtures.make_fixtures(tmp_path / "a", ("coco",), seed=1, log=logs.append)  # other options: rewritten
    assert (tmp_path / "a" / ann).read_bytes() != (tmp_path / "b" / ann).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["coco"]  # no temporary folder left
    with pytest.raises(ValueError, match="unknown fixture part 'cifar'"):
        fixtures.make_fixtures(tmp_path, ("cifar",))
    with pytest.raises(ValueError, match="coco_train=0 must be a positive integer"):
        fixtures.make_fixtures(tmp_path, ("coco",), coco_train=0)


def test_weights_file_has_timms_key_names(tmp_path):
    import timm
    from safetensors.torch import load_file

    fixtures.write_weights(tmp_path / "t.safetensors", "convnext_tiny", 0, {})
    state = load_file(str(tmp_path / "t.safetensors"))
    timm.create_model("convnext_tiny").load_state_dict(state)  # strict: every key and shape
    assert "stem.0.weight" in state and "head.fc.weight" in state


def snakemake(workdir, *args, timeout=300, env=None):
    """snakemake of this interpreter on this repository's Snakefile, in `workdir`."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def job_counts(out) -> dict:
    """rule -> job count, from the 'Job stats' table snakemake prints."""
    table = (out.stdout + out.stderr).split("Job stats:", 1)[1]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M) if m[0] != "total"}


def planned_runs(out) -> set:
    return set(re.findall(r"results/runs/(\S+)/metrics\.json", out.stdout))


def planned_manifest(out) -> list:
    """The rows of results/manifest.tsv (every role of every run), from the command a dry run with -p prints."""
    text = re.search(r"printf '%s' '(exp\tbackbone.*?)' > results/manifest\.tsv", out.stdout, flags=re.S)[1]
    return text.strip().splitlines()[1:]


def link_fixtures(workdir: Path, trees: Path) -> None:
    """Put the data trees (and empty weights files, which the dry run only looks for) where rehearsal.yaml
    reads them."""
    (workdir / FIXTURES).mkdir(parents=True)
    for part in ("imagenet", "imagenet21k", "coco"):
        (workdir / FIXTURES / part).symlink_to(trees / part)
    (workdir / FIXTURES / "weights").mkdir()
    for arch in fixtures.PAPER_ARCHS:
        (workdir / FIXTURES / "weights" / f"{arch}.safetensors").write_bytes(b"")


@needs_snakemake
@pytest.mark.slow
def test_rehearsal_plans_exactly_the_paper_runs(tmp_path, data_trees):
    """Dry runs of paper.yaml and rehearsal.yaml on the same fixtures: the same runs and manifest (E2's source sizes
    aside), the same jobs per rule, and every training job of the rehearsal under torchrun with 2 processes."""
    link_fixtures(tmp_path, data_trees)
    paper = yaml.safe_load((CONFIGS / "paper.yaml").read_text())
    rehearsal = yaml.safe_load((CONFIGS / "rehearsal.yaml").read_text())
    paper["weights"] = rehearsal["weights"]
    for keys in (("run", "data"), ("source", "data"), ("e3", "data"), ("coco", "run", "data")):
        a, b = paper, rehearsal
        for k in keys:
            a, b = a[k], b[k]
        a["root"] = b["root"]
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(paper, sort_keys=False))
    planned = {}
    for name, path in (("paper", tmp_path / "paper.yaml"), ("rehearsal", CONFIGS / "rehearsal.yaml")):
        out = snakemake(tmp_path, "-n", "-p", "--configfile", str(path))
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        planned[name] = out
    sizes = dict(zip(paper["e2"]["source_per_class"], rehearsal["e2"]["source_per_class"]))
    as_rehearsal = lambda text: re.sub(r"\bsrc(\d+)\b", lambda m: f"src{sizes[int(m[1])]}", text)  # noqa: E731
    assert {as_rehearsal(r) for r in planned_runs(planned["paper"])} == planned_runs(planned["rehearsal"])
    manifest = planned_manifest(planned["rehearsal"])
    assert [as_rehearsal(row) for row in planned_manifest(planned["paper"])] == manifest
    assert {row.split("\t")[-1] for row in manifest} == planned_runs(planned["rehearsal"])
    counts = job_counts(planned["rehearsal"])
    assert job_counts(planned["paper"]) == counts
    assert counts["train"] >= 50 and counts["pretrain"] == 3 and counts["detect"] == 6 and counts["bench"] == 5
    launches = re.findall(r"--nproc_per_node=(\d+) -m quadranet.cli (train|detect train)", planned["rehearsal"].stdout)
    assert len(launches) == counts["train"] + counts["pretrain"] + counts["detect"]
    assert {n for n, _ in launches} == {"2"}


@needs_snakemake
@pytest.mark.rehearsal
@pytest.mark.slow
def test_rehearsal_runs_every_paper_job_to_the_claims_report(tmp_path, torchrun_shim):
    """rehearsal.yaml to the end on its fixtures: every table, figure and the claims report, and every training
    job launched through torchrun with 2 processes (a torchrun shim first on PATH records each launch)."""
    from quadranet.report import FIGURES, TABLES

    fixtures.make_fixtures(tmp_path / FIXTURES, log=lambda _: None)
    env = torchrun_shim()
    start = time.perf_counter()
    try:
        out = snakemake(tmp_path, "--cores", "2", "--configfile", str(CONFIGS / "rehearsal.yaml"), timeout=3600,
                        env=env)
        wall = time.perf_counter() - start
    finally:  # the weights written (about 9 GB: 70 runs, ConvNeXt-B among them); logs and metrics stay
        for weights in tmp_path.rglob("*.safetensors"):
            weights.unlink()
    print(f"rehearsal workflow: {wall:.0f} s wall", file=sys.stderr)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]

    for name in TABLES:
        assert all((tmp_path / f"results/tables/{name}.{ext}").is_file() for ext in ("csv", "md", "tex"))
    for name in FIGURES:
        assert all((tmp_path / f"figures/{name}.{ext}").is_file() for ext in ("png", "pdf"))
    claims = (tmp_path / "results" / "claims.md").read_text()
    assert all(f"## C{i}:" in claims for i in range(1, 9)) and "rehearsal" in claims

    metrics = sorted((tmp_path / "results" / "runs").rglob("metrics.json"))
    calls = (tmp_path / "torchrun.calls").read_text().splitlines()
    assert len(calls) == len(metrics) >= 70  # one torchrun per training job, nothing trained outside it
    assert all("--nproc_per_node=2" in c for c in calls)
    for path in metrics:
        m = json.loads(path.read_text())
        assert m["num_devices"] == 2 and m["status"] == "complete", path
    for exp in ("pretrain", "e1", "e2", "e3", "e4", "coco"):
        assert (tmp_path / "results" / "runs" / exp).is_dir(), exp
    for model in yaml.safe_load((CONFIGS / "rehearsal.yaml").read_text())["e5"]["models"]:
        assert (tmp_path / "results" / "bench" / f"{model}.csv").is_file()
