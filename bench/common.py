"""What every benchmark entry point shares: the environment block, timing, device peaks, JSON output.

Timing protocol (conventions.md): warm-up calls outside the timed region, then
`iters` timed calls; on CUDA each call is bracketed by CUDA events (nothing is
allocated by the harness inside the timed region), on CPU by perf_counter.
Reported: median (p50), p20 and p80 in milliseconds.
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


def time_fn(fn: Callable[[], object], *, device: torch.device | str, warmup: int = 3, iters: int = 10) -> Timing:
    """Time `fn()` (median / p20 / p80 ms). CUDA events on GPU, perf_counter on CPU."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for start, end in zip(starts, ends):
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        samples = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return Timing(p50_ms=_quantile(samples, 0.5), p20_ms=_quantile(samples, 0.2),
                  p80_ms=_quantile(samples, 0.8), iters=iters)


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
