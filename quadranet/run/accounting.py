"""What a run costs and where it ran: device-seconds, energy, peak memory, provenance.

Device-seconds are wall-clock seconds times the number of devices the run holds, measured with
synchronised timers (a GPU clock reads only after the queued work finished), never estimated.
Energy comes from NVML's cumulative counter on GPUs, or from Linux RAPL on CPUs when readable (the
whole CPU package, other processes included; labelled so); otherwise it is null.
"""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
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


class EnergyMeter:
    """Cumulative energy in joules over the devices of this process, or None where nothing measures it."""

    RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")

    def __init__(self, device: torch.device):
        self.source, self._read = None, None
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # raises where unsupported
                self.source = "nvml (GPU board, this process's device)"
                self._read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3  # mJ -> J
            except Exception:  # no pynvml, or a GPU without an energy counter
                pass
        elif os.access(self.RAPL, os.R_OK):
            max_uj = int((self.RAPL.parent / "max_energy_range_uj").read_text())
            self.source = "rapl (CPU package 0, whole machine, measured)"
            self._wrap = max_uj
            self._read = lambda: int(self.RAPL.read_text()) / 1e6
        self.joules = 0.0 if self._read else None
        self._last = self._read() if self._read else None

    def update(self) -> Optional[float]:
        if self._read is None:
            return None
        now = self._read()
        delta = now - self._last
        if delta < 0 and self.source.startswith("rapl"):  # counter wrapped
            delta += self._wrap / 1e6
        self.joules += delta
        self._last = now
        return self.joules


def peak_memory_mb(device: torch.device) -> Optional[float]:
    """Peak allocated device memory since the last reset (GPU), else this process's peak RSS (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    except ImportError:  # pragma: no cover (not Linux)
        return None


def _git(*args: str) -> Optional[str]:
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
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit, "git_dirty": None if status is None else bool(status),
        "command": shlex.join(command if command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]),
        "config": config, "config_hash": config_hash, "seed": seed,
        "versions": versions(), "hardware": hardware(num_devices, device_type),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
