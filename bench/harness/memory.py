"""Peak memory of a call: CUDA `max_memory_allocated`, or on a CPU the allocator's own event log.

`peak_alloc_bytes(fn, device)` runs `fn()` once and returns the largest amount of memory its
allocations held at any moment *above what was live before the call* (weights and inputs excluded):
- CUDA: `torch.cuda.max_memory_allocated` after a peak reset, minus `memory_allocated` before;
- CPU: every allocation and free of torch's CPU allocator is recorded by `torch.profiler`
  (`profile_memory=True`: `[memory]` events with signed byte counts); the peak is the maximum of
  their running sum in time order. Only torch tensors' memory is counted (not Python objects, not
  the oneDNN / BLAS scratch that bypasses torch's allocator).
"""
from __future__ import annotations

import os
from typing import Callable

import torch


def _cpu_peak(fn: Callable[[], object]) -> tuple[int, object]:
    from torch.profiler import ProfilerActivity, profile

    # Kineto prints a "profiler_start/stop" line per session at its default level; 6 silences it (read when a
    # profiling session starts; a value the user set is kept).
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak, out


def peak_alloc_bytes(fn: Callable[[], object], device) -> tuple[int, object]:
    """(peak bytes allocated by `fn()` above the memory live before it, fn's result); see the module doc."""
    device = torch.device(device)
    if device.type != "cuda":
        return _cpu_peak(fn)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before), out
