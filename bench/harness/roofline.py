"""The roofline rows of a profile: achieved TFLOP/s, GB/s, intensity and fraction of peak of one profiler entry.

`roofline_row(evt, name, cuda, dtype, peaks)` takes one `torch.profiler` key_averages entry (grouped by input
shape) of an op in GEMM_OPS (FLOPs counted by the profiler, `with_flops=True`) or SHAPE_FLOPS_OPS (FLOPs
computed here from the recorded input shapes) and returns the row `bench/profiling.py` reports: per-call FLOPs
and bytes, TFLOP/s and GB/s over the entry's total time, FLOP/byte, and the fraction of the device's peak
(None without peaks). The profiler's `evt.flops` of an entry is the SUM over its calls.
"""
from __future__ import annotations

import math

import torch

PROJECT_OPS = ("titok::nearest_code", "titok::maskgit_step", "titok::concat_attention")
# Leaf compute ops whose FLOPs torch.profiler counts (with_flops): the large GEMMs and convolutions.
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::conv2d")
# Compute ops whose FLOPs the profiler does not count: computed here from their input shapes (_op_flops).
# mkldnn::_linear_pointwise is the fast runtime's bf16 linear layer on a CPU (titok.cpu_linear).
SHAPE_FLOPS_OPS = PROJECT_OPS + ("mkldnn::_linear_pointwise",)


def _tensor_bytes(shapes, elem_bytes: int) -> int:
    """Ideal traffic: every input tensor read once (an estimate: elements x the pipeline dtype's size)."""
    return sum(math.prod(s) * elem_bytes for s in shapes or []
               if isinstance(s, (list, tuple)) and s and all(isinstance(x, int) for x in s))


def _op_flops(name: str, shapes) -> int | None:
    """FLOPs of the project's ops from their recorded input shapes (formulas of bench/ops/*.py)."""
    try:
        if name == "titok::nearest_code":
            (m, d), (n, _) = shapes[0], shapes[1]
            return 2 * m * n * d
        if name == "titok::concat_attention":
            b, lp, three_w = shapes[0]
            ls = shapes[1][0] if len(shapes) > 1 and shapes[1] else 0
            length = lp + ls
            return 4 * b * length * length * (three_w // 3)
        if name == "titok::maskgit_step":
            return None  # memory-bound: judged by bytes moved
        if name == "mkldnn::_linear_pointwise":  # x (..., K), packed weight (N, K)
            (*rows, k), (n, _) = shapes[0], shapes[1]
            return 2 * math.prod(rows) * k * n
    except (TypeError, ValueError, IndexError):
        return None
    return None


def roofline_row(evt, name: str, cuda: bool, dtype: torch.dtype, peaks: dict | None) -> dict | None:
    """Achieved TFLOP/s, GB/s, intensity and fraction of peak of one (op, input shapes) profiler entry."""
    total_us = float(evt.cpu_time_total if not cuda else
                     getattr(evt, "device_time_total", 0.0) or getattr(evt, "cuda_time_total", 0.0))
    if total_us <= 0 or evt.count == 0:
        return None
    # The profiler's evt.flops is the SUM over the entry's calls (FunctionEventAvg adds them up): per call here.
    flops = _op_flops(name, evt.input_shapes) if name in SHAPE_FLOPS_OPS else \
        (evt.flops / evt.count if evt.flops else None)
    nbytes = _tensor_bytes(evt.input_shapes, torch.empty((), dtype=dtype).element_size())
    seconds = total_us * 1e-6
    tflops = flops * evt.count / seconds / 1e12 if flops else None
    gbps = nbytes * evt.count / seconds / 1e9 if nbytes else None
    frac = None
    if peaks is not None:
        peak_t = peaks["tflops"].get("bf16" if dtype == torch.bfloat16 else "tf32")
        parts = [x for x in (tflops / peak_t if tflops and peak_t else None,
                             gbps / peaks["bandwidth_gbps"] if gbps else None) if x is not None]
        frac = max(parts) if parts else None
    return {"name": name, "shapes": str(evt.input_shapes), "calls": evt.count, "total_ms": total_us / 1e3,
            "flops_per_call": flops, "bytes_per_call": nbytes or None, "tflops": tflops, "gbps": gbps,
            "intensity_flop_per_byte": (flops / nbytes) if flops and nbytes else None, "fraction_of_peak": frac}
