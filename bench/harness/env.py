"""The machine a benchmark runs on: device choice, environment block, device peaks, memory, CPU share.

- `parse_device`: the one parser of every tool's `--device` (auto | cpu | cuda | cuda:N);
- `environment`: versions, device and provenance recorded in every result file;
- `device_peaks`: published dense peaks (bandwidth, TFLOP/s per math mode) of known GPUs;
- `is_out_of_memory` / `free_device_memory` / `peak_memory_*`: out-of-memory handling and
  `torch.cuda.max_memory_allocated` around a region;
- `CpuWindow`: how much CPU this process got over a region (process CPU time / wall time / the
  threads torch runs) and the load average; `busy_warnings` turns it into warnings when the
  machine was busy (the figures are then pessimistic and noisy).
"""
from __future__ import annotations

import dataclasses
import datetime
import gc
import os
import platform
import subprocess
import sys
import time

import torch

from titok.errors import TiTokInputError
from titok.errors import is_out_of_memory as _oom_rule
from titok_bench.harness.cli import UsageError

# Published dense peaks per device family: HBM bandwidth (GB/s), and TFLOP/s by math mode.
# Sources: NVIDIA data sheets (SXM parts). "fp32" is CUDA-core FP32, "tf32"/"bf16" tensor-core dense.
DEVICE_PEAKS = {
    "H200": {"bandwidth_gbps": 4800.0, "tflops": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}},
    "H100": {"bandwidth_gbps": 3350.0, "tflops": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}},
    "A100": {"bandwidth_gbps": 2039.0, "tflops": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}},
}
OPTIONAL_PACKAGES = ("diffusers", "nvidia-ml-py", "rich", "matplotlib", "jsonschema")


def parse_device(text: str) -> torch.device:
    """`--device`: auto (CUDA if present), cpu, cuda or cuda:N, by the `titok` command's one device parser
    (`titok.cli.options.device`); UsageError (one line, exit 2) for anything else."""
    from titok.cli.options import device

    try:
        return device(text)
    except TiTokInputError as exc:
        raise UsageError(str(exc)) from None


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


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from titok.cpu_info import cpu_label

    return cpu_label()


def device_slug(device: torch.device | str) -> str:
    """Folder name for profiles/: 'h200', 'a100-sxm4-80gb', or 'cpu'."""
    device = torch.device(device)
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower().replace("nvidia", "").strip()
    return "-".join(part for part in name.replace("_", " ").split() if part)


GIT_SHA_VARIABLE = "TITOK_GIT_SHA"


def git_sha() -> str | None:
    """The commit a result was made from: $TITOK_GIT_SHA when set (a copy of the project without `.git`,
    e.g. an unpacked archive; bench/gpu_check.sh passes it to every tool), else `git rev-parse HEAD` of this
    checkout, else None."""
    given = os.environ.get(GIT_SHA_VARIABLE, "").strip()
    if given:
        return given
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


CODE_PATHS = ("titok", "kernels", "bench", "setup.py", "pyproject.toml")   # what a figure depends on (not docs)


def git_dirty() -> bool | None:
    """True when this checkout's tracked code (`CODE_PATHS`) differs from `git_sha`'s commit (the figures come
    from uncommitted code), False when it does not, None when unknown ($TITOK_GIT_SHA given, or no git)."""
    if os.environ.get(GIT_SHA_VARIABLE, "").strip():
        return None
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS], cwd=root,
                             capture_output=True, text=True, timeout=10)
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def extra_packages() -> dict:
    """Versions of the optional packages the harness uses (read from metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in OPTIONAL_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def environment(device: torch.device | str) -> dict:
    """Versions, device and provenance of a run: recorded in every result file."""
    device = torch.device(device)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "git_dirty": git_dirty(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "device_type": device.type,
        "device_name": device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "peaks": device_peaks(device),
    }


# ---- out-of-memory handling and peak memory -----------------------------------------------------------

def is_out_of_memory(exc: BaseException) -> bool:
    """The project's one out-of-memory rule (`titok.errors.is_out_of_memory`): an "oom" row, not an error."""
    return _oom_rule(exc)


def free_device_memory(device: torch.device | str) -> None:
    """After an out-of-memory error or a finished model: collect garbage, return cached blocks to the driver."""
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


# ---- how busy the machine was ---------------------------------------------------------------------------

BUSY_CPU_SHARE = 0.75      # below this share of its threads' CPU time, this process was starved


@dataclasses.dataclass
class CpuWindow:
    """Process CPU time and wall time over a region (`start()`, then `stop()` -> a dict)."""

    device_type: str
    wall0: float
    cpu0: float

    @classmethod
    def start(cls, device: torch.device | str) -> "CpuWindow":
        return cls(torch.device(device).type, time.perf_counter(), time.process_time())

    def stop(self) -> dict:
        """wall_s, process_cpu_s, threads, cpu_share (process CPU / (wall x threads)), load_avg_1m, cores."""
        wall, cpu = time.perf_counter() - self.wall0, time.process_time() - self.cpu0
        threads = torch.get_num_threads()
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = None
        return {"wall_s": wall, "process_cpu_s": cpu, "threads": threads,
                "cpu_share": cpu / (wall * threads) if wall > 0 else None,
                "load_avg_1m": load, "cores": os.cpu_count(), "device_type": self.device_type}


def busy_warnings(usage: dict) -> list[str]:
    """Warnings when the machine was busy over a `CpuWindow` (empty when it looked idle)."""
    out = []
    share, load, cores = usage.get("cpu_share"), usage.get("load_avg_1m"), usage.get("cores") or 1
    if usage.get("device_type") == "cpu" and share is not None and share < BUSY_CPU_SHARE:
        out.append(f"busy CPU: this process got {100 * share:.0f}% of the {usage['threads']} threads it runs")
    own = usage["threads"] if usage.get("device_type") == "cpu" else 1
    if load is not None and load - own >= max(1.0, 0.25 * cores):
        out.append(f"busy machine: load average {load:.1f} on {cores} cores (this run accounts for ~{own})")
    return out
