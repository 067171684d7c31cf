"""Classification runs on real Fashion-MNIST images with timm's tiny test_convnext: what the task adds to the
shared run layer (whose contract tests/run tests): its metrics, methods, stages, eval steps, resume across
stages, DDP, and the `quadranet train | eval` commands."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from quadranet.classify.config import load_config
from quadranet.classify.train import train
from quadranet.run import checkpoint

TINY = ["model.arch=test_convnext", "data.resolution=32", "data.train_per_class=8", "data.eval_limit=64",
        "data.batch_size=16", "train.epochs=2", "train.progress=lines"]  # 80 images: 5 steps per epoch


def cli(out, *overrides):
    """`quadranet train` in a subprocess: (return code, stderr)."""
    cmd = [sys.executable, "-m", "quadranet", "train", "--out", str(out), *TINY, *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, proc.stderr


def run(out, *overrides) -> dict:
    """A training run in this process, recorded as the command that would start it."""
    args = ["train", "--out", str(out), *TINY, *overrides]
    return train(load_config(None, TINY + list(overrides)), out, command=["quadranet", *args])


def metrics(out):
    return json.loads((Path(out) / "metrics.json").read_text())


def log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished first-order scratch run, used as the pretrained weights of later runs."""
    out = tmp_path_factory.mktemp("runs") / "source"
    run(out, "train.log_every=2")
    return out


def test_scratch_run_writes_accounting_and_provenance(source):
    m = metrics(source)
    assert m["status"] == "complete" and m["method"] == "scratch" and m["steps"] == 10 and m["epochs"] == 2
    assert 0 <= m["initial_acc1"] <= 100 and m["acc1"] > m["initial_acc1"]  # it learned something
    assert m["acc5"] >= m["acc1"] and m["best_acc1"] >= m["acc1"] and m["eval_images"] == 64
    sec = m["device_seconds"]
    assert sec["train"] > 0 and sec["eval"] > 0 and sec["startup"] > 0 and sec["initial_eval"] > 0
    assert sec["total"] == pytest.approx(sum(v for k, v in sec.items() if k != "total"), abs=0.01)
    assert m["quadratic_share"] is None  # a first-order network has no quadratic term
    assert m["device_hours"] == pytest.approx(sec["total"] / 3600)
    assert m["num_devices"] == 1 and m["device_type"] == "cpu"
    assert m["params"] == m["trainable_params"] > 0 and m["params_added"] == 0 and m["flops"] > 0
    p = m["provenance"]
    assert p["config"]["model"]["arch"] == "test_convnext" and p["config_hash"] == m["config_hash"] and p["seed"] == 0
    assert "quadranet train --out" in p["command"] and p["versions"]["torch"] == torch.__version__
    assert p["hardware"]["cpu_count"] >= 1 and p["date"].startswith("20")
    # energy: a CPU run gets CodeCarbon's figure with its label (an estimate here, RAPL where readable)
    assert m["energy_joules"] > 0 and m["energy_kwh"] == pytest.approx(m["energy_joules"] / 3.6e6)
    assert m["co2e_kg"] == pytest.approx(m["energy_kwh"] * m["carbon_intensity_g_per_kwh"] / 1000)
    assert m["energy_source"].startswith(("estimated: CodeCarbon", "measured: CodeCarbon"))
    assert 0 <= m["energy_tracking_s"] < sec["total"]
    lines = log(source)
    evals = [r for r in lines if r["event"] == "eval"]
    assert len(evals) == 3  # initial + one per epoch
    # the cost counts from the first optimizer step: the evaluation before it is not part of it
    assert evals[0]["tag"] == "initial" and evals[0]["device_s"] == 0
    assert evals[-1]["device_s"] == pytest.approx(sec["train"] + sec["eval"], abs=2e-3)
    steps = [r for r in lines if r["event"] == "step"]
    assert [r["step"] for r in steps] == [2, 4, 5, 6, 8, 10]  # every 2 steps and each epoch's last
    assert all(r["images_per_s"] > 0 and r["loss"] > 0 and r["lr"] > 0 for r in steps)
    # every line carries training seconds alone (evaluation apart) and the data wait inside them
    assert evals[-1]["train_s"] == pytest.approx(sec["train"], abs=2e-3) and evals[0]["train_s"] == 0
    assert all(0 <= r["data_wait_s"] <= r["train_s"] for r in lines)
    assert 0 < m["data_wait_s"] == pytest.approx(evals[-1]["data_wait_s"], abs=2e-3)
    assert not (source / "checkpoints" / "last.pt").exists()  # removed once complete
    assert (source / "model.safetensors").is_file() and (source / "config.yaml").is_file()


def test_eval_steps_add_evaluations_that_move_no_training_cost(source, tmp_path):
    out = tmp_path / "dense"
    run(out, "train.log_every=2", "train.eval_steps=[2, 5, 7]")
    evals = [r for r in log(out) if r["event"] == "eval"]
    assert [(r["step"], r["tag"]) for r in evals] == [(0, "initial"), (2, "step"), (5, "epoch"), (7, "step"),
                                                      (10, "epoch")]
    # the same training as without them (the same seed and data order): identical losses, accuracy
    assert [r["loss"] for r in log(out) if r["event"] == "step"] == [r["loss"] for r in log(source) if r["event"] == "step"]
    assert metrics(out)["acc1"] == metrics(source)["acc1"]
    assert all(b["train_s"] >= a["train_s"] for a, b in zip(evals, evals[1:]))
    with pytest.raises(Exception, match="train.eval_steps"):
        load_config(None, ["train.eval_steps=[0, 3]"])


def test_adapt_starts_at_the_pretrained_accuracy_and_trains_in_stages(source, tmp_path):
    out = tmp_path / "adapt"
    run(out, "method=adapt", f"model.pretrained={source}", "adapter.rank=2",
        "train.stages=[{epochs: 1, trainable: quadratic}, {epochs: 1, trainable: all, lr: 3e-4}]")
    m, src = metrics(out), metrics(source)
    assert m["initial_acc1"] == src["acc1"] and m["initial_acc5"] == src["acc5"]  # quadratic term is zero at init
    assert m["params_added"] > 0 and m["params"] == src["params"] + m["params_added"]
    assert m["trainable_params_stages"] == [m["params_added"], m["params"]]
    assert m["head_reinitialised"] is False
    stages = {r["stage"] for r in log(out) if r["event"] == "step"}
    assert stages == {0, 1}
    share = m["quadratic_share"]
    assert share["start"] == {"median": 0.0, "max": 0.0, "layers": 9}  # P = 0: exact at init
    assert 0 < share["end"]["median"] <= share["end"]["max"] and share["end"]["layers"] == 9


def test_quadratic_scratch_starts_with_a_live_quadratic_term(tmp_path):
    out = tmp_path / "qscratch"
    run(out, "model.quadratic=true", "train.epochs=1")
    share = metrics(out)["quadratic_share"]
    assert share["start"]["median"] > 0.01 and share["end"]["median"] > 0.01


def test_other_class_count_gets_a_fresh_head(source, tmp_path):
    out = tmp_path / "ft"
    run(out, "method=finetune", f"model.pretrained={source}", "data.classes=[0, 1, 2]", "train.epochs=1",
        "data.train_per_class=16")
    m = metrics(out)
    assert m["head_reinitialised"] is True and m["eval_images"] == 64


def test_reset_head_starts_a_fitting_head_afresh(source, tmp_path):
    out = tmp_path / "reset"
    run(out, "method=finetune", f"model.pretrained={source}", "model.reset_head=true", "train.epochs=1")
    m = metrics(out)
    assert m["head_reinitialised"] is True and m["initial_acc1"] != metrics(source)["acc1"]


def test_crash_in_the_second_stage_then_rerun_resumes_that_stage(source, tmp_path, monkeypatch):
    """The task's part of resuming: the stages before the checkpoint's are skipped and the optimizer of the
    checkpoint's stage restored, so the rerun ends as an uninterrupted run."""
    args = (f"model.pretrained={source}", "method=adapt", "adapter.rank=2", "train.checkpoint_every=2",
            "train.log_every=1", "train.stages=[{epochs: 1, trainable: head}, {epochs: 2, trainable: all}]")
    ref = tmp_path / "ref"
    run(ref, *args)
    out, save = tmp_path / "crashed", checkpoint.save_checkpoint

    class Crash(Exception):
        pass

    def save_then_crash(directory, state, **kw):
        save(directory, state, **kw)
        if state["progress"]["step"] == 8:  # stage 1, mid-epoch (5 steps per epoch)
            raise Crash

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        run(out, *args)
    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    b, a = run(out, *args), metrics(ref)
    assert b["resumes"] == 1 and a["resumes"] == 0
    for key in ("acc1", "acc5", "best_acc1", "initial_acc1", "steps", "images_seen", "trainable_params_stages"):
        assert a[key] == b[key], key
    timing = ("wall_s", "device_s", "train_s", "data_wait_s", "images_per_s", "peak_mem_mb")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(log(ref)) == strip(log(out))  # the same losses, step by step, and no duplicated lines


def test_missing_data_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        run(tmp_path / "run", f"data.root={tmp_path / 'nowhere'}")


@pytest.mark.slow
def test_bad_key_is_one_clear_error(tmp_path):
    code, stderr = cli(tmp_path / "run", "train.lrr=1")
    assert code == 2 and "unknown config key 'train.lrr'" in stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path):
    """Same global batch: 2 gloo ranks x 8 images follow the single process's loss curve (no BatchNorm in
    test_convnext, so the only difference is the order of float sums), across a change of trainable set.
    65 eval images in global batches of 32: rank 1 has no image in the last one."""
    args = ("train.log_every=1", "train.stages=[{epochs: 1, trainable: head}, {epochs: 1, trainable: all}]",
            "data.eval_limit=65", "data.eval_batch_size=16")
    single = tmp_path / "single"
    run(single, *args)
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "quadranet", "train", "--out", str(ddp), *TINY, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = metrics(single), metrics(ddp)
    assert b["num_devices"] == 2 and b["device_seconds"]["train"] > 0
    assert b["energy_joules"] > 0 and b["energy_source"].startswith(("estimated", "measured"))  # both ranks' sum
    la = [r["loss"] for r in log(single) if r["event"] == "step"]
    lb = [r["loss"] for r in log(ddp) if r["event"] == "step"]
    assert len(la) == len(lb) == 10
    assert lb == pytest.approx(la, rel=1e-4)  # stated tolerance: 1e-4 relative
    assert a["eval_images"] == b["eval_images"] == 65
    assert b["acc1"] == pytest.approx(a["acc1"], abs=100 / 65 + 1e-9)  # at most one eval image flips
    assert len([r for r in log(ddp) if r["event"] == "eval"]) == 3  # written once, by rank 0


@pytest.mark.slow
def test_lora_run_at_matched_budget_and_eval_reproduces_it(source, tmp_path):
    out = tmp_path / "lora"
    run(out, "method=lora", f"model.pretrained={source}", "train.epochs=1")
    m = metrics(out)
    assert m["initial_acc1"] == metrics(source)["acc1"]  # B is zero at init
    assert m["lora_rank"] >= 1 and m["trainable_params"] == m["params_added"] + 650  # + the head (64 * 10 + 10)
    again = subprocess.run([sys.executable, "-m", "quadranet", "eval", "--run", str(out), "--out", str(tmp_path / "e.json")],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "e.json").read_text())["acc1"] == m["acc1"]
    shifted = subprocess.run([sys.executable, "-m", "quadranet", "eval", "--run", str(out), "data.shift=invert_range",
                              "data.shift_strength=1", "--out", str(tmp_path / "s.json")], capture_output=True, text=True)
    assert shifted.returncode == 0, shifted.stderr[-2000:]
    assert json.loads((tmp_path / "s.json").read_text())["overrides"] == ["data.shift=invert_range", "data.shift_strength=1"]
