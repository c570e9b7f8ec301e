"""Timing: per-call milliseconds with CUDA events (GPU) or perf_counter (CPU), and their summaries.

Protocol (conventions.md): warm-up calls outside the timed region, then timed calls; on CUDA each
call is bracketed by CUDA events recorded on the current stream (created before the call: nothing
is allocated by the harness inside the timed region) and read after one synchronisation at the
end; on CPU by perf_counter. Reported: median (p50), p20 and p80.

`Stopwatch` times one chain of calls (fns[0](), fns[1](out0), ...) with a boundary per call;
`time_chain` repeats a chain; the sampling harness uses a `Stopwatch` directly to interleave the
chains of several pipelines (A B A B ...), and `pair_ratios` to turn two interleaved series into
a speed-up with its spread. `interleave` is the plain round-robin of named host callables (CPU tools:
official_cpu.py, cpu_ops.py).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch


@dataclasses.dataclass
class Timing:
    """Milliseconds per call over the timed iterations."""

    p50_ms: float
    p20_ms: float
    p80_ms: float
    iters: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of a non-empty list."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize_ms(samples: list[float]) -> Timing:
    """Median / p20 / p80 of per-iteration milliseconds."""
    if not samples:
        raise ValueError("no timing samples")
    return Timing(p50_ms=quantile(samples, 0.5), p20_ms=quantile(samples, 0.2), p80_ms=quantile(samples, 0.8),
                  iters=len(samples))


def pair_ratios(base_ms: list[float], other_ms: list[float]) -> dict | None:
    """Speed-up of `other` over `base` from interleaved iterations: the ratio base[i] / other[i] of each
    pair, summarised as median (p50), p20 and p80; None when there is no pair."""
    ratios = [b / o for b, o in zip(base_ms, other_ms) if o > 0]
    if not ratios:
        return None
    return {"p50": quantile(ratios, 0.5), "p20": quantile(ratios, 0.2), "p80": quantile(ratios, 0.8),
            "pairs": len(ratios)}


class Stopwatch:
    """Times chains of calls on one device; `read` turns what `run` returned into milliseconds per call."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def run(self, fns: list[Callable]):
        """Run fns[0](), fns[1](out0), ... once; a record of the boundaries (read it after `sync`)."""
        if self.cuda:
            events = [torch.cuda.Event(enable_timing=True) for _ in range(len(fns) + 1)]
            events[0].record()
            out = None
            for i, fn in enumerate(fns):
                out = fn() if i == 0 else fn(out)
                events[i + 1].record()
            return events
        stamps = [time.perf_counter()]
        out = None
        for i, fn in enumerate(fns):
            out = fn() if i == 0 else fn(out)
            stamps.append(time.perf_counter())
        return stamps

    def read(self, record) -> list[float]:
        """Milliseconds of each call of one `run` (CUDA: after `sync`)."""
        if self.cuda:
            return [record[i].elapsed_time(record[i + 1]) for i in range(len(record) - 1)]
        return [(record[i + 1] - record[i]) * 1e3 for i in range(len(record) - 1)]


def time_chain(fns: list[Callable], *, device: torch.device | str, warmup: int = 3,
               iters: int = 10) -> list[list[float]]:
    """Time a chain of calls per iteration: fns[0](), fns[1](out0), ...

    Returns one list of per-iteration milliseconds per call. On CUDA no host synchronisation
    between the calls or iterations, one at the end of all iterations.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    watch = Stopwatch(device)
    for _ in range(warmup):
        watch.run(fns)
    watch.sync()
    records = [watch.run(fns) for _ in range(iters)]
    watch.sync()
    per_iter = [watch.read(r) for r in records]
    return [[it[i] for it in per_iter] for i in range(len(fns))]


def time_samples(fn: Callable[[], object], *, device: torch.device | str, warmup: int = 3,
                 iters: int = 10) -> list[float]:
    """Per-iteration milliseconds of `fn()`."""
    return time_chain([fn], device=device, warmup=warmup, iters=iters)[0]


def time_fn(fn: Callable[[], object], *, device: torch.device | str, warmup: int = 3, iters: int = 10) -> Timing:
    """Time `fn()`: median / p20 / p80 milliseconds."""
    return summarize_ms(time_samples(fn, device=device, warmup=warmup, iters=iters))


@dataclasses.dataclass(frozen=True)
class MicroSettings:
    """How a kernel micro-benchmark runs on a device: full shapes and 5 + 50 calls on a GPU; quick shapes
    and 1 + 5 calls on a CPU (the interpreter or torch: a check that it runs, not a measurement)."""

    device: torch.device
    quick: bool
    warmup: int
    iters: int


def micro_settings(device, quick: bool = False) -> MicroSettings:
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    return MicroSettings(device, quick or not on_gpu, *((5, 50) if on_gpu else (1, 5)))


def interleave(fns: dict, iters: int) -> dict:
    """Per-iteration seconds of each named callable, timed round-robin (A B C A B C ...) by perf_counter."""
    times = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times
