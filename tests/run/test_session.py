"""The run layer's contract, on a toy loop driven as every task's loop drives it: a resumed run ends as an
uninterrupted one, a complete run is found and kept, a checkpoint that does not fit is refused and kept, a loss
that is not finite stops the run at its last good checkpoint, and metrics.json appears whole or not at all."""
import json
from pathlib import Path

import pytest
import torch

from quadranet.run import (LAST, METRICS, WEIGHTS, CheckpointError, NonFiniteLossError, checkpoint, load_checkpoint,
                           save_checkpoint)


def last_checkpoint(out) -> dict:
    return torch.load(Path(out) / "checkpoints" / LAST, weights_only=True)


def log(out) -> list:
    timing = ("wall_s", "device_s", "train_s", "data_wait_s", "images_per_s", "peak_mem_mb")
    rows = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in timing} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, run_toy):
    """An uninterrupted toy run."""
    out = tmp_path_factory.mktemp("runs") / "ref"
    run_toy(out)
    return out


class Crash(Exception):
    pass


def test_crash_after_a_checkpoint_then_rerun_resumes_to_the_same_result(reference, run_toy, tmp_path, monkeypatch):
    out, save = tmp_path / "crashed", checkpoint.save_checkpoint

    def save_then_crash(directory, state, **kw):
        save(directory, state, **kw)
        if state["progress"]["step"] == 6:  # mid-epoch 2 (5 steps per epoch, a checkpoint every 3)
            raise Crash

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        run_toy(out)
    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    saved = last_checkpoint(out)["progress"]
    assert saved["step"] == 6 and not (out / METRICS).exists()
    m, ref = run_toy(out), json.loads((reference / METRICS).read_text())
    assert m["resumes"] == 1 and ref["resumes"] == 0
    assert m["mse"] == ref["mse"] and m["steps"] == ref["steps"] == 10 and m["images_seen"] == ref["images_seen"]
    assert log(out) == log(reference)  # the same losses step by step, no line twice
    assert m["device_seconds"]["train"] >= saved["seconds"]["train"]  # clocks carry on from the checkpoint's


def test_finish_writes_weights_and_metrics_and_drops_the_checkpoint(reference):
    m = json.loads((reference / METRICS).read_text())
    assert m["steps"] == 10 and m["config_hash"] == "toy-lr0.05" and m["num_devices"] == 1
    assert (reference / WEIGHTS).is_file() and (reference / "config.yaml").read_text() == "toy: true\n"
    assert not (reference / "checkpoints" / LAST).exists() and not (reference / ".lock").exists()


def test_rerun_of_a_complete_run_returns_its_metrics(reference, run_toy, capsys):
    before = (reference / METRICS).read_text()
    assert run_toy(reference) == json.loads(before)
    assert "is complete" in capsys.readouterr().err and (reference / METRICS).read_text() == before


def test_complete_run_of_another_config_is_refused(reference, run_toy):
    with pytest.raises(CheckpointError, match="holds a finished run with config hash toy-lr0.05, not toy-lr0.5"):
        run_toy(reference, lr=0.5)


def test_corrupt_checkpoint_is_refused_and_kept(run_toy, tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / LAST
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"checkpoint {ckpt} cannot be read"):
        run_toy(tmp_path / "run")
    assert ckpt.read_bytes() == b"not a checkpoint"


def test_checkpoint_of_another_config_is_refused_and_kept(tmp_path):
    save_checkpoint(tmp_path, {"config_hash": "0123456789abcdef", "model": {}})
    with pytest.raises(CheckpointError, match="config hash 0123456789abcdef, but this run's config hashes to abc"):
        load_checkpoint(tmp_path, "abc")
    assert (tmp_path / LAST).is_file()
    assert load_checkpoint(tmp_path / "empty", "abc") is None


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(run_toy, tmp_path):
    with pytest.raises(NonFiniteLossError, match="loss became nan by step 5 .* kept its last good checkpoint"):
        run_toy(tmp_path, nan_from_step=5)
    state = last_checkpoint(tmp_path)
    assert state["progress"]["step"] == 3 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / METRICS).exists()


def test_metrics_json_is_whole_or_absent(run_toy, tmp_path, monkeypatch):
    """A crash while metrics.json is written leaves no metrics.json (the run is not complete) and no temporary
    file; the checkpoint stays, so the rerun finishes the run."""
    out, real = tmp_path / "run", Path.write_text

    def half_then_fail(self, text, *args, **kwargs):
        if self.name.startswith(f".{METRICS}."):  # atomic's temporary file beside metrics.json
            real(self, text[:len(text) // 2])
            raise OSError("disk full")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        run_toy(out)
    monkeypatch.setattr(Path, "write_text", real)
    assert not (out / METRICS).exists() and not list(out.glob(f".{METRICS}.*"))
    assert (out / "checkpoints" / LAST).is_file()
    assert run_toy(out)["steps"] == 10 and json.loads((out / METRICS).read_text())["steps"] == 10
