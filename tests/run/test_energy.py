"""Energy and CO2e of a run: measured or estimated with a label, and a run without a tracker still completes."""
import json
import subprocess
import sys

import torch

from quadranet.run.accounting import DEFAULT_CARBON_INTENSITY, EnergyMeter, carbon_kg


def test_cpu_meter_gives_energy_with_its_label(tmp_path):
    meter = EnergyMeter(torch.device("cpu"), tmp_path)
    sum(range(10 ** 6))
    first = meter.update()
    sum(range(10 ** 6))
    second = meter.update()
    meter.close()
    assert 0 < first < second  # cumulative
    assert meter.source.startswith(("estimated: CodeCarbon", "measured: CodeCarbon")) and " W" in meter.source
    assert list(tmp_path.iterdir()) == []  # the tracker writes nothing


def test_carbon_of_energy():
    assert carbon_kg(3.6e6, 400.0) == 0.4  # 1 kWh at 400 g/kWh
    assert carbon_kg(None, DEFAULT_CARBON_INTENSITY) is None


def test_run_without_the_tracker_completes_and_says_why(tmp_path):
    out = tmp_path / "run"
    code = ("import sys; sys.modules['codecarbon'] = None  # as if it were not installed\n"
            "from quadranet.cli import main; sys.exit(main())")
    proc = subprocess.run([sys.executable, "-c", code, "train", "--out", str(out), "model.arch=test_convnext",
                           "data.resolution=32", "data.train_per_class=8", "data.eval_limit=64", "data.batch_size=16",
                           "train.epochs=1", "train.progress=none", "train.carbon_intensity=100"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["energy_joules"] is None and m["co2e_kg"] is None and m["carbon_intensity_g_per_kwh"] == 100.0
    assert m["energy_source"].startswith("unavailable: codecarbon")
