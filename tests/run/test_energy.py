"""Energy and CO2e of a run: measured or estimated with a label, and a run without a tracker still completes."""
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


def test_run_without_the_tracker_completes_and_says_why(run_toy, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # as if it were not installed
    m = run_toy(tmp_path / "run", carbon_intensity=100.0)
    assert m["steps"] == 10 and m["energy_joules"] is None and m["co2e_kg"] is None
    assert m["carbon_intensity_g_per_kwh"] == 100.0 and m["energy_source"].startswith("unavailable: codecarbon")
