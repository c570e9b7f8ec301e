"""NVML readings during a run: SM / memory clocks, power, temperature, memory used, utilisation.

    mon = NvmlMonitor(device).start()
    a = mon.mark(); ...timed region...; b = mon.mark()
    mon.summary(a, b)        # {field: {min, p50, max, mean}, "samples": n, ...} or None
    mon.stop()

Everything is guarded: with no NVIDIA GPU, no `pynvml` (package nvidia-ml-py), or any NVML
error, `available` is False and `summary` / `static_info` return None.
"""
from __future__ import annotations

import os
import threading
import time

import torch

from titok_bench.harness.timing import quantile

NVML_FIELDS = ("sm_clock_mhz", "mem_clock_mhz", "power_w", "temperature_c", "memory_used_bytes",
               "gpu_utilization_pct")


def _guarded(fn):
    try:
        value = fn()
        return value.decode() if isinstance(value, bytes) else value
    except Exception:  # noqa: BLE001 - any NVML failure is a missing reading
        return None


class NvmlMonitor:
    """Samples NVML readings of one CUDA device every `interval_s` in a background thread."""

    def __init__(self, device: torch.device | str, interval_s: float = 0.1):
        self.device = torch.device(device)
        self.interval_s = interval_s
        self._samples: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._nvml = self._handle = None
        if self.device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = self._find_handle(pynvml)
        except Exception:  # noqa: BLE001 - no driver library, no pynvml, or an NVML error: no readings
            self._nvml = self._handle = None

    @property
    def available(self) -> bool:
        return self._handle is not None

    def _find_handle(self, nvml):
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        uuid = getattr(props, "uuid", None)
        if uuid is not None:
            for candidate in (str(uuid), "GPU-" + str(uuid)):
                handle = _guarded(lambda: nvml.nvmlDeviceGetHandleByUUID(candidate))
                if handle is not None:
                    return handle
        bus = getattr(props, "pci_bus_id", None)
        if bus is not None:
            pci = f"{getattr(props, 'pci_domain_id', 0):08x}:{bus:02x}:{getattr(props, 'pci_device_id', 0):02x}.0"
            handle = _guarded(lambda: nvml.nvmlDeviceGetHandleByPciBusId(pci))
            if handle is not None:
                return handle
        if not os.environ.get("CUDA_VISIBLE_DEVICES"):
            return nvml.nvmlDeviceGetHandleByIndex(index)
        return None

    def _read(self) -> dict:
        nvml, h = self._nvml, self._handle
        power = _guarded(lambda: nvml.nvmlDeviceGetPowerUsage(h))
        return {
            "t": time.perf_counter(),
            "sm_clock_mhz": _guarded(lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)),
            "mem_clock_mhz": _guarded(lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM)),
            "power_w": None if power is None else power / 1000.0,
            "temperature_c": _guarded(lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
            "memory_used_bytes": _guarded(lambda: int(nvml.nvmlDeviceGetMemoryInfo(h).used)),
            "gpu_utilization_pct": _guarded(lambda: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
        }

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            sample = self._read()
            with self._lock:
                self._samples.append(sample)

    def start(self) -> "NvmlMonitor":
        if self.available and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="nvml-monitor", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None

    def mark(self) -> int:
        """Take one reading now and return the index that starts (or ends) a region."""
        if not self.available:
            return 0
        sample = self._read()
        with self._lock:
            self._samples.append(sample)
            return len(self._samples) - 1

    def summary(self, start: int = 0, end: int | None = None) -> dict | None:
        """min / p50 / max / mean of each reading over samples[start:end + 1]; None without NVML."""
        if not self.available:
            return None
        with self._lock:
            window = self._samples[start:None if end is None else end + 1]
        if not window:
            return None
        out: dict = {"samples": len(window), "interval_s": self.interval_s,
                     "seconds": window[-1]["t"] - window[0]["t"]}
        for field in NVML_FIELDS:
            values = [s[field] for s in window if s[field] is not None]
            out[field] = None if not values else {
                "min": min(values), "p50": quantile(values, 0.5), "max": max(values),
                "mean": sum(values) / len(values)}
        return out

    def static_info(self) -> dict | None:
        """Driver version, name, maximum clocks, enforced power limit, total memory."""
        if not self.available:
            return None
        nvml, h = self._nvml, self._handle
        limit = _guarded(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(h))
        return {
            "driver": _guarded(nvml.nvmlSystemGetDriverVersion),
            "name": _guarded(lambda: nvml.nvmlDeviceGetName(h)),
            "max_sm_clock_mhz": _guarded(lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM)),
            "max_mem_clock_mhz": _guarded(lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_MEM)),
            "power_limit_w": None if limit is None else limit / 1000.0,
            "memory_total_bytes": _guarded(lambda: int(nvml.nvmlDeviceGetMemoryInfo(h).total)),
        }

    def telemetry(self, fn):
        """(fn(), {"static", "during_run"} or None): readings while `fn` runs (starts and stops the thread)."""
        if not self.available:
            return fn(), None
        self.start()
        try:
            result = fn()
        finally:
            self.stop()
        return result, {"static": self.static_info(), "during_run": self.summary()}
