"""What every benchmark entry point shares: the environment block, timing, device peaks, JSON output.

Timing protocol (conventions.md): warm-up calls outside the timed region, then
`iters` timed calls; on CUDA each call is bracketed by CUDA events (nothing is
allocated by the harness inside the timed region), on CPU by perf_counter.
Reported: median (p50), p20 and p80 in milliseconds.

Also here, for every benchmark entry point (bench/sampling.py, bench/kernels.py):
- `time_samples` / `time_chain`: the raw per-iteration times (the latter times a chain of
  calls, each fed the previous one's output, with one boundary per call);
- `NvmlMonitor`: NVML readings (SM / memory clocks, power, temperature, memory used) sampled in a
  background thread while a benchmark runs, summarised per region; None everywhere when there is
  no NVIDIA GPU or no `pynvml` (package nvidia-ml-py);
- `is_out_of_memory` / `free_device_memory`: out-of-memory handling, so a harness can record a
  row and go on;
- `peak_memory_reset` / `peak_memory_bytes`: `torch.cuda.max_memory_allocated` around a region;
- `ENVIRONMENT_SCHEMA` and `validate_json`: the JSON-Schema (draft 2020-12) of the environment
  block every result file carries, and validation of a result file against a schema file.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Callable

import torch

# Published dense peaks per device family: HBM bandwidth (GB/s), and TFLOP/s by math mode.
# Sources: NVIDIA data sheets (SXM parts). "fp32" is CUDA-core FP32, "tf32"/"bf16" tensor-core dense.
DEVICE_PEAKS = {
    "H200": {"bandwidth_gbps": 4800.0, "tflops": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}},
    "H100": {"bandwidth_gbps": 3350.0, "tflops": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}},
    "A100": {"bandwidth_gbps": 2039.0, "tflops": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}},
}


@dataclasses.dataclass
class Timing:
    """Milliseconds per call over the timed iterations."""

    p50_ms: float
    p20_ms: float
    p80_ms: float
    iters: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize_ms(samples: list[float]) -> Timing:
    """Median / p20 / p80 of per-iteration milliseconds."""
    if not samples:
        raise ValueError("no timing samples")
    return Timing(p50_ms=_quantile(samples, 0.5), p20_ms=_quantile(samples, 0.2),
                  p80_ms=_quantile(samples, 0.8), iters=len(samples))


def time_chain(fns: list[Callable], *, device: torch.device | str, warmup: int = 3,
               iters: int = 10) -> list[list[float]]:
    """Time a chain of calls per iteration: fns[0](), fns[1](out0), fns[2](out1), ...

    Returns one list of per-iteration milliseconds per call (the split of each iteration at the
    call boundaries). On CUDA one event per boundary, recorded on the current stream: no host
    synchronisation between the calls, one at the end of all iterations.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    device = torch.device(device)

    def run_once():
        out = None
        for i, fn in enumerate(fns):
            out = fn() if i == 0 else fn(out)
        return out

    for _ in range(warmup):
        run_once()
    per_call: list[list[float]] = [[] for _ in fns]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = [[torch.cuda.Event(enable_timing=True) for _ in range(len(fns) + 1)] for _ in range(iters)]
        for ev in events:
            ev[0].record()
            out = None
            for i, fn in enumerate(fns):
                out = fn() if i == 0 else fn(out)
                ev[i + 1].record()
            del out
        torch.cuda.synchronize(device)
        for ev in events:
            for i in range(len(fns)):
                per_call[i].append(ev[i].elapsed_time(ev[i + 1]))
    else:
        for _ in range(iters):
            t = [time.perf_counter()]
            out = None
            for i, fn in enumerate(fns):
                out = fn() if i == 0 else fn(out)
                t.append(time.perf_counter())
            del out
            for i in range(len(fns)):
                per_call[i].append((t[i + 1] - t[i]) * 1e3)
    return per_call


def time_samples(fn: Callable[[], object], *, device: torch.device | str, warmup: int = 3,
                 iters: int = 10) -> list[float]:
    """Per-iteration milliseconds of `fn()`: CUDA events on GPU, perf_counter on CPU."""
    return time_chain([fn], device=device, warmup=warmup, iters=iters)[0]


def time_fn(fn: Callable[[], object], *, device: torch.device | str, warmup: int = 3, iters: int = 10) -> Timing:
    """Time `fn()` (median / p20 / p80 ms). CUDA events on GPU, perf_counter on CPU."""
    return summarize_ms(time_samples(fn, device=device, warmup=warmup, iters=iters))


def device_peaks(device: torch.device | str) -> dict | None:
    """Peak bandwidth / TFLOP/s for a known GPU, else None (CPU or an unlisted GPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for family, peaks in DEVICE_PEAKS.items():
        if family in name:
            return {"family": family, **peaks}
    return None


def git_sha() -> str | None:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device | str) -> dict:
    """Versions, device and provenance of a run: recorded in every result file."""
    device = torch.device(device)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    env = {
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "device_type": device.type,
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else (platform.processor() or platform.machine())),
        "cpu_threads": torch.get_num_threads(),
        "peaks": device_peaks(device),
    }
    return env


def device_slug(device: torch.device | str) -> str:
    """Folder name for profiles/: 'h200', 'a100-sxm4-80gb', or 'cpu'."""
    device = torch.device(device)
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower().replace("nvidia", "").strip()
    return "-".join(part for part in name.replace("_", " ").split() if part)


def write_json(path: str, payload: dict) -> None:
    """Write JSON atomically: a temporary file in the same folder, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---- out-of-memory handling and peak memory -------------------------------------------------------

def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch.cuda.OutOfMemoryError and for RuntimeErrors whose message says 'out of memory'."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_device_memory(device: torch.device | str) -> None:
    """After an out-of-memory error: collect garbage and return cached blocks to the driver."""
    import gc

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def peak_memory_reset(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device | str) -> int | None:
    """torch.cuda.max_memory_allocated since the last reset (weights included); None off CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


# ---- NVML readings during a run -------------------------------------------------------------------

NVML_FIELDS = ("sm_clock_mhz", "mem_clock_mhz", "power_w", "temperature_c", "memory_used_bytes",
               "gpu_utilization_pct")


class NvmlMonitor:
    """Samples NVML readings of one CUDA device every `interval_s` in a background thread.

        mon = NvmlMonitor(device); mon.start()
        a = mon.mark(); ...timed region...; b = mon.mark()
        mon.summary(a, b)        # {field: {min, p50, max, mean}, "samples": n, ...} or None
        mon.stop()

    Everything is guarded: with no NVIDIA GPU, no `pynvml` (package nvidia-ml-py), or any NVML
    error, `available` is False and `summary` / `static_info` return None.
    """

    def __init__(self, device: torch.device | str, interval_s: float = 0.1):
        import threading

        self.device = torch.device(device)
        self.interval_s = interval_s
        self._samples: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._nvml = None
        self._handle = None
        if self.device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = self._find_handle(pynvml)
        except Exception:  # no driver library, no pynvml, or an NVML error: no readings
            self._nvml = self._handle = None

    @property
    def available(self) -> bool:
        return self._handle is not None

    def _find_handle(self, nvml):
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        uuid = getattr(props, "uuid", None)
        if uuid is not None:
            text = str(uuid)
            for candidate in (text, "GPU-" + text):
                try:
                    return nvml.nvmlDeviceGetHandleByUUID(candidate)
                except Exception:
                    pass
        bus = getattr(props, "pci_bus_id", None)
        if bus is not None:
            pci = (f"{getattr(props, 'pci_domain_id', 0):08x}:{bus:02x}:"
                   f"{getattr(props, 'pci_device_id', 0):02x}.0")
            try:
                return nvml.nvmlDeviceGetHandleByPciBusId(pci)
            except Exception:
                pass
        if not os.environ.get("CUDA_VISIBLE_DEVICES"):
            return nvml.nvmlDeviceGetHandleByIndex(index)
        return None

    def _read(self) -> dict:
        nvml, h = self._nvml, self._handle

        def get(fn):
            try:
                return fn()
            except Exception:
                return None

        power = get(lambda: nvml.nvmlDeviceGetPowerUsage(h))
        return {
            "t": time.perf_counter(),
            "sm_clock_mhz": get(lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)),
            "mem_clock_mhz": get(lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM)),
            "power_w": None if power is None else power / 1000.0,
            "temperature_c": get(lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
            "memory_used_bytes": get(lambda: int(nvml.nvmlDeviceGetMemoryInfo(h).used)),
            "gpu_utilization_pct": get(lambda: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
        }

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            sample = self._read()
            with self._lock:
                self._samples.append(sample)

    def start(self) -> "NvmlMonitor":
        import threading

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
                "min": min(values), "p50": _quantile(values, 0.5), "max": max(values),
                "mean": sum(values) / len(values)}
        return out

    def static_info(self) -> dict | None:
        """Driver version, name, maximum clocks, enforced power limit, total memory."""
        if not self.available:
            return None
        nvml, h = self._nvml, self._handle

        def get(fn):
            try:
                value = fn()
                return value.decode() if isinstance(value, bytes) else value
            except Exception:
                return None

        limit = get(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(h))
        return {
            "driver": get(nvml.nvmlSystemGetDriverVersion),
            "name": get(lambda: nvml.nvmlDeviceGetName(h)),
            "max_sm_clock_mhz": get(lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM)),
            "max_mem_clock_mhz": get(lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_MEM)),
            "power_limit_w": None if limit is None else limit / 1000.0,
            "memory_total_bytes": get(lambda: int(nvml.nvmlDeviceGetMemoryInfo(h).total)),
        }


# ---- JSON schema shared by the result files -------------------------------------------------------

_STAT = {"type": ["object", "null"], "properties": {k: {"type": "number"} for k in ("min", "p50", "max", "mean")},
         "required": ["min", "p50", "max", "mean"]}

# The NVML block: `static` (NvmlMonitor.static_info) and `during_run` (NvmlMonitor.summary).
NVML_SCHEMA = {
    "type": ["object", "null"],
    "properties": {
        "static": {"type": ["object", "null"]},
        "during_run": {
            "type": ["object", "null"],
            "properties": {"samples": {"type": "integer", "minimum": 1}, "interval_s": {"type": "number"},
                           "seconds": {"type": "number"}, **{f: _STAT for f in NVML_FIELDS}},
            "required": ["samples", *NVML_FIELDS],
        },
    },
    "required": ["static", "during_run"],
}

# The environment block of every result file (`environment()`, plus keys a harness adds, e.g. "nvml").
ENVIRONMENT_SCHEMA = {
    "type": "object",
    "properties": {
        "command": {"type": "string"},
        "timestamp": {"type": "string"},
        "git_sha": {"type": ["string", "null"]},
        "python": {"type": "string"},
        "torch": {"type": "string"},
        "triton": {"type": ["string", "null"]},
        "cuda": {"type": ["string", "null"]},
        "device_type": {"type": "string"},
        "device_name": {"type": "string"},
        "cpu_threads": {"type": "integer"},
        "peaks": {
            "type": ["object", "null"],
            "properties": {"family": {"type": "string"}, "bandwidth_gbps": {"type": "number"},
                           "tflops": {"type": "object", "additionalProperties": {"type": "number"}}},
            "required": ["family", "bandwidth_gbps", "tflops"],
        },
        "nvml": NVML_SCHEMA,
    },
    "required": ["command", "timestamp", "git_sha", "python", "torch", "triton", "cuda", "device_type",
                 "device_name", "cpu_threads", "peaks"],
}


def validate_json(payload: dict, schema_path: str) -> None:
    """Validate a result payload against a JSON-Schema file (draft 2020-12); ValueError listing the errors."""
    import jsonschema

    with open(schema_path) as f:
        schema = json.load(f)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:10]]
        raise ValueError(f"{len(errors)} schema error(s) against {schema_path}:\n  " + "\n  ".join(lines))
