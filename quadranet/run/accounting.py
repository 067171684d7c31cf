"""What a run costs and where it ran: device-seconds, energy, peak memory, provenance.

Device-seconds are wall-clock seconds times the number of devices the run holds, measured with
synchronised timers (a GPU clock reads only after the queued work finished), never estimated.
Energy comes from NVML's cumulative counter on GPUs and from CodeCarbon's offline tracker on CPUs (RAPL where
readable, else its load-based estimate), each labelled with how it was obtained (`EnergyMeter`); CO2e is energy
times the grid's carbon intensity (`train.carbon_intensity`, default DEFAULT_CARBON_INTENSITY).
"""
from __future__ import annotations

import contextlib
import datetime
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import torch


def process_age() -> Optional[float]:
    """Seconds since this process started (Linux /proc), so start-up includes the imports; None elsewhere."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


COST_PHASES = ("train", "eval")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DeviceClock:
    """Accumulates device-seconds per phase for `num_devices` devices: 'train', 'eval', and apart from a run's cost
    'startup', 'initial_eval' (the evaluation before the first optimizer step) and 'probe' (measurements such as
    the quadratic share)."""

    def __init__(self, device: torch.device, num_devices: int, seconds: Optional[dict] = None):
        self.device, self.num_devices = device, num_devices
        self.seconds = {"train": 0.0, "eval": 0.0, "startup": 0.0, "initial_eval": 0.0, "probe": 0.0, **(seconds or {})}
        self._phase, self._t0 = None, 0.0

    def start(self, phase: str) -> None:
        self.stop()
        synchronize(self.device)
        self._phase, self._t0 = phase, time.perf_counter()

    def stop(self) -> float:
        """End the running phase; returns its wall seconds."""
        if self._phase is None:
            return 0.0
        synchronize(self.device)
        wall = time.perf_counter() - self._t0
        self.seconds[self._phase] += wall * self.num_devices
        self._phase = None
        return wall

    def snapshot(self) -> dict:
        """Device-seconds per phase now, the running phase included up to this moment."""
        synchronize(self.device)
        seconds = dict(self.seconds)
        if self._phase is not None:
            seconds[self._phase] += (time.perf_counter() - self._t0) * self.num_devices
        return seconds

    def total(self) -> float:
        return sum(self.seconds.values())

    def cost(self) -> float:
        """Device-seconds of training and evaluation since the first optimizer step, the running phase included
        (no synchronisation: for logging). This is a run's cost (design: measurement rules)."""
        extra = (time.perf_counter() - self._t0) * self.num_devices if self._phase in COST_PHASES else 0.0
        return sum(self.seconds[p] for p in COST_PHASES) + extra


# Grid carbon intensity (g CO2e per kWh) when a run's config names none: the world average of electricity
# generation, 475 g/kWh (IEA, Global Energy & CO2 Status Report 2019, for 2018). Set train.carbon_intensity for
# the grid a run draws from.
DEFAULT_CARBON_INTENSITY = 475.0


class EnergyMeter:
    """Cumulative energy (joules) of this process's device since the meter started, with `source`, a label that says
    how it was obtained:
    - "measured: nvml ..." on a GPU (the board's energy counter, through the NVML bindings);
    - "measured: CodeCarbon RAPL ..." or "estimated: CodeCarbon ..." on a CPU: CodeCarbon's offline tracker in
      process mode reads RAPL where it can, else estimates from this process's CPU load and its CPU power table
      (the label gives the model and the wattages it used), RAM at its per-size power;
    - "unavailable: <why>" where neither works (energy is then None; the run goes on).
    The field's libraries, not hand-written sysfs readers."""

    def __init__(self, device: torch.device, output_dir: Optional[Path] = None):
        self.carried = 0.0  # energy of earlier attempts of the run, up to the checkpoint it resumes from
        t0 = time.perf_counter()
        try:
            self._open(device, output_dir)
        finally:
            self.seconds = time.perf_counter() - t0  # wall seconds spent tracking (its overhead)

    def _open(self, device: torch.device, output_dir: Optional[Path]) -> None:
        self.joules, self.source, self._read, self._tracker, self._starting = None, None, None, None, None
        if device.type == "cuda":
            try:
                import pynvml  # the NVML bindings (nvidia-ml-py)

                pynvml.nvmlInit()
                handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # raises where unsupported
                self.source = "measured: nvml (GPU board energy counter, this process's device)"
                self._read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3  # mJ -> J
                self._last = self._read()
                self.joules = 0.0
            except Exception as e:  # no bindings, or a GPU without an energy counter
                self.source = f"unavailable: nvml ({type(e).__name__}: {e})"
            return
        # CodeCarbon's hardware detection waits on a CPU-info subprocess: it runs beside the run's
        # start-up (model and data building) in a thread, which the first update() joins
        self._starting = threading.Thread(target=self._start_tracker, args=(output_dir,), daemon=True)
        self._starting.start()

    def _start_tracker(self, output_dir: Optional[Path]) -> None:
        try:
            self._open_tracker(output_dir)
        except Exception as e:  # the library missing or failing: the run goes on without energy
            self._tracker, self.joules = None, None
            self.source = f"unavailable: codecarbon ({type(e).__name__}: {e})"

    def _open_tracker(self, output_dir: Optional[Path]) -> None:
        import logging
        import tempfile

        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        folder = Path(output_dir or tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        # nothing is written (no output method); measure_power_secs: it samples when we ask (update). Its own
        # emissions figure is not used: CO2e is ours, from train.carbon_intensity (the country only satisfies it)
        self._tracker = OfflineEmissionsTracker(
            country_iso_code="USA", output_dir=str(folder), output_methods=[], log_level="error",
            measure_power_secs=3600, tracking_mode="process")
        self._tracker.start_task("run")
        self.joules, self.source = 0.0, "codecarbon (starting)"

    def carry_on(self, joules: Optional[float]) -> None:
        """Resume a run: count on from `joules` (its checkpoint's; work after that checkpoint is lost, not counted)."""
        self.carried = joules or 0.0

    def update(self) -> Optional[float]:
        """Energy of the run up to now (joules), or None where nothing measures it."""
        t0 = time.perf_counter()
        try:
            joules = self._update()
            return None if joules is None else self.carried + joules
        finally:
            self.seconds += time.perf_counter() - t0

    def _update(self) -> Optional[float]:
        if self._starting is not None:
            self._starting.join()
            self._starting = None
        if self._read is not None:
            now = self._read()
            self.joules += now - self._last
            self._last = now
        elif self._tracker is not None:
            try:
                data = self._tracker.stop_task()
                self.joules += data.energy_consumed * 3.6e6  # kWh -> J
                self.source = self._label(data)
                self._tracker.start_task("run")
            except Exception as e:  # noqa: BLE001 (energy is a nicety; never fail a run over it)
                self._tracker, self.joules = None, None
                self.source = f"unavailable: codecarbon failed ({type(e).__name__}: {e})"
        return self.joules

    def _label(self, data) -> str:
        import codecarbon

        hw = self._tracker.get_detected_hardware()
        # CodeCarbon 3.3 says how it obtained CPU power only in its CPU object's `_mode` (no public accessor)
        mode = next((getattr(h, "_mode", None) for h in getattr(self._tracker, "_hardware", [])
                     if type(h).__name__ == "CPU"), None)
        how = "measured" if mode in ("intel_rapl", "intel_power_gadget", "powermetrics") else "estimated"
        return (f"{how}: CodeCarbon {codecarbon.__version__} offline tracker, process mode, CPU power mode "
                f"{mode or 'unknown'} ({hw.get('cpu_model')}, {hw.get('cpu_count')} threads, {data.cpu_power:.1f} W "
                f"for this process at the last sample), RAM {data.ram_power:.1f} W")

    def close(self) -> None:
        if self._starting is not None:
            self._starting.join()
        if self._tracker is not None:
            with contextlib.suppress(Exception):
                self._tracker.stop()


def carbon_kg(joules: Optional[float], intensity_g_per_kwh: float) -> Optional[float]:
    """kg CO2e of `joules` at a grid intensity in g CO2e per kWh."""
    return None if joules is None else joules / 3.6e6 * intensity_g_per_kwh / 1000


def peak_memory_mb(device: torch.device) -> Optional[float]:
    """Peak allocated device memory since the last reset (GPU), else this process's peak RSS (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    except ImportError:  # pragma: no cover (not Linux)
        return None


def git(*args: str) -> Optional[str]:
    """The output of `git <args>` in this package's checkout, or None (no git, not a checkout)."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    import numpy
    import timm
    import torchvision

    from .. import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "numpy": numpy.__version__, "quadranet": __version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}


def hardware(num_devices: int = 1, device_type: str = "cpu") -> dict:
    gpu = torch.cuda.get_device_name(0) if device_type == "cuda" else None
    return {"cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu_name": gpu, "gpu_count": num_devices if gpu else 0, "hostname": platform.node(),
            "platform": platform.platform()}


def provenance(config: Optional[dict] = None, config_hash: Optional[str] = None, seed: Optional[int] = None,
               num_devices: int = 1, device_type: str = "cpu", command: Optional[list] = None) -> dict:
    """Where a number came from: code version, command, config, libraries, hardware, date."""
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit, "git_dirty": None if status is None else bool(status),
        "command": shlex.join(command if command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]),
        "config": config, "config_hash": config_hash, "seed": seed,
        "versions": versions(), "hardware": hardware(num_devices, device_type),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
