"""Kernel micro-benchmark rows: one (op, provider, case) timed eager and under a CUDA graph, its cost and L2 fit.

`MicroRun.create(device, quick)` holds what every row of a run shares (settings, device peaks, L2 size, the
graph backend); `MicroRun.measure(ident, fn, cost)` times `fn` both ways and returns an "ok" row;
`MicroRun.guarded(ident, produce)` runs a row (or a case's rows) and turns any exception into an "error"
row ("oom" for out-of-memory) so that the other providers, cases and ops still run.

Row fields (docs/benchmarks.md, "Kernel micro-benchmarks"):
  op, provider, case, shape, dtype, status ("ok" | "error" | "oom" | "unsupported"), message (first line or None);
  eager_p50_ms / eager_p20_ms / eager_p80_ms, eager_iters: each call between CUDA events in a loop without host
      synchronisation (perf_counter on CPU): the larger of the GPU time and the host's launch + dispatch +
      validation time per call, i.e. what a Python loop pays;
  graph_p50_ms / graph_p20_ms / graph_p80_ms, graph_calls, graph_replays, graph_note: GPU time per call from
      CUDA-graph replays (`graph_timing`); None with graph_note saying why (CPU, capture failed);
  bytes, flops: the op's documented ideal traffic and FLOP count (the op module's formula, the same for every
      provider); working_set_bytes: the op's inputs + outputs of one call; l2_bytes, fits_l2
      (working_set_bytes <= the device's L2; None on CPU or an unknown GPU);
  timed_by ("graph" when a graph time exists, else "eager"), gbps, tflops (bytes or flops / that p50),
  frac_peak_bandwidth, frac_peak_flops (against `env.device_peaks`; None when unknown).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from titok_bench.harness.env import device_peaks, free_device_memory, is_out_of_memory
from titok_bench.harness.graph_timing import calls_per_graph, time_graph
from titok_bench.harness.timing import MicroSettings, micro_settings, time_fn

STATUSES = ("ok", "error", "oom", "unsupported")
# Fallback L2 sizes (bytes) when torch does not report `L2_cache_size`: NVIDIA's architecture white papers.
L2_BYTES = {"H200": 60 * 2**20, "H100": 50 * 2**20, "A100": 40 * 2**20}
GRAPH_REPLAYS = 20
TIMING_FIELDS = ("eager_p50_ms", "eager_p20_ms", "eager_p80_ms", "eager_iters", "graph_p50_ms", "graph_p20_ms",
                 "graph_p80_ms", "graph_calls", "graph_replays", "graph_note", "bytes", "flops",
                 "working_set_bytes", "l2_bytes", "fits_l2", "timed_by", "gbps", "tflops", "frac_peak_bandwidth",
                 "frac_peak_flops")


@dataclasses.dataclass(frozen=True)
class Cost:
    """What one call moves and computes by the op's documented formula; `peak` names the TFLOP/s peak to
    compare against (a key of env.DEVICE_PEAKS' "tflops": "fp32", "bf16", ...), None for no FLOP peak."""

    bytes: int | None
    flops: int | None
    working_set_bytes: int
    peak: str | None = None


def l2_cache_bytes(device: torch.device | str) -> int | None:
    """The device's L2 size: torch's `L2_cache_size` where it exists, else the `L2_BYTES` table; None on CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    size = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", None)
    if size:
        return int(size)
    name = torch.cuda.get_device_name(device)
    return next((size for family, size in L2_BYTES.items() if family in name), None)


def ident(op: str, provider: str, case: str, shape: dict, dtype: torch.dtype | str | None) -> dict:
    """The identifying fields every row starts with (provider/case "all": a failure before any provider ran)."""
    return {"op": op, "provider": provider, "case": case, "shape": dict(shape),
            "dtype": None if dtype is None else str(dtype).replace("torch.", "")}


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def status_row(identity: dict, status: str, message: str) -> dict:
    """A row without measurements ("error", "oom", "unsupported"): every timing field present and None."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    return {**identity, "status": status, "message": message, **dict.fromkeys(TIMING_FIELDS)}


def error_row(identity: dict, exc: BaseException) -> dict:
    return status_row(identity, "oom" if is_out_of_memory(exc) else "error", first_line(exc))


@dataclasses.dataclass
class MicroRun:
    """What the rows of one run share; `graph_backend` None: the real CUDA pieces (tests inject a fake)."""

    settings: MicroSettings
    peaks: dict | None
    l2_bytes: int | None
    graph_backend: object | None = None
    graph_replays: int = GRAPH_REPLAYS

    @classmethod
    def create(cls, device, quick: bool = False) -> "MicroRun":
        settings = micro_settings(device, quick)
        return cls(settings, device_peaks(settings.device), l2_cache_bytes(settings.device))

    @property
    def device(self) -> torch.device:
        return self.settings.device

    def measure(self, identity: dict, fn: Callable[[], object], cost: Cost, *, warmup: int | None = None,
                iters: int | None = None, extra: dict | None = None) -> dict:
        """Time `fn()` eager and under a graph; the "ok" row with its cost, L2 fit and derived throughput."""
        warmup = self.settings.warmup if warmup is None else warmup
        iters = self.settings.iters if iters is None else iters
        eager = time_fn(fn, device=self.device, warmup=warmup, iters=iters)
        graph = time_graph(fn, device=self.device, calls=calls_per_graph(eager.p50_ms), replays=self.graph_replays,
                           warmup_calls=min(warmup, 3), backend=self.graph_backend)
        timed_by, p50 = ("graph", graph.timing.p50_ms) if graph.timing else ("eager", eager.p50_ms)
        seconds = p50 * 1e-3
        gbps = cost.bytes / seconds / 1e9 if cost.bytes is not None and seconds > 0 else None
        tflops = cost.flops / seconds / 1e12 if cost.flops is not None and seconds > 0 else None
        peaks = self.peaks
        peak_tflops = peaks["tflops"].get(cost.peak) if peaks and cost.peak else None
        return {
            **identity, "status": "ok", "message": None,
            "eager_p50_ms": eager.p50_ms, "eager_p20_ms": eager.p20_ms, "eager_p80_ms": eager.p80_ms,
            "eager_iters": eager.iters, **graph.fields(),
            "bytes": cost.bytes, "flops": cost.flops, "working_set_bytes": cost.working_set_bytes,
            "l2_bytes": self.l2_bytes,
            "fits_l2": cost.working_set_bytes <= self.l2_bytes if self.l2_bytes else None,
            "timed_by": timed_by, "gbps": gbps, "tflops": tflops,
            "frac_peak_bandwidth": gbps / peaks["bandwidth_gbps"] if peaks and gbps is not None else None,
            "frac_peak_flops": tflops / peak_tflops if peak_tflops and tflops is not None else None,
            **(extra or {}),
        }

    def guarded(self, identity: dict, produce: Callable[[], dict | list[dict]]) -> list[dict]:
        """`produce()`'s row(s), or one error/oom row for `identity` when it raises (Ctrl-C passes through)."""
        try:
            out = produce()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a row; the run goes on
            if is_out_of_memory(exc):
                free_device_memory(self.device)
            return [error_row(identity, exc)]
        return out if isinstance(out, list) else [out]

    def per_case(self, op: str, dtype, shapes, case_rows: Callable[[str, dict], list[dict]]) -> list[dict]:
        """The rows of every (case, shape) of `shapes` (an op's `bench/ops/cases.py` list): `case_rows(case,
        shape)` for each, guarded, so that a failing case gives one error row ("all" providers) and the other
        cases still run."""
        rows = []
        for case, shape in shapes:
            rows += self.guarded(ident(op, "all", case, shape, dtype), lambda: case_rows(case, shape))
        return rows
