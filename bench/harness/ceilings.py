"""Measured ceilings of the device a benchmark runs on: dense matmul TFLOP/s per math mode, copy GB/s.

The datasheet peaks (`env.device_peaks`) are what a part could do at its boost clock; what this one does
today (its clocks, power limit, the installed cuBLAS) is measured here in a few seconds, so that a row's
fraction of peak can be read against both (`fraction_of_measured` beside `fraction_of_peak`).

Protocol. Square matmuls C = A @ B (N x N, inputs randn, `out=` preallocated: nothing is allocated in the
timed region) and one device-to-device copy, each after WARMUP untimed calls, then up to `reps` timed
calls, each bracketed by CUDA events (GPU) or perf_counter (CPU); a measurement stops early once its
timed calls pass `budget_s` (at least one timed call). Figures come from the median call:
TFLOP/s = 2 N^3 / t; copy GB/s = 2 x bytes / t (the bytes read plus the bytes written, the traffic a
datasheet bandwidth counts).

- CUDA: bf16, fp16 and TF32 at N = 8192 (the tensor-core rates), fp32 with TF32 off at N = 8192 (the
  CUDA-core rate), a 1 GiB copy; about 0.1 s of GPU work plus warm-up on an H100 / H200.
- CPU: the CPU's own fp32 and bf16 matmul rate at N = 2048 (about 1 s on 2 cores: fp32 ran at ~87 and
  bf16 at ~360 GFLOP/s on a 2-core AVX-512-BF16 EPYC) and a 256 MiB memory copy, labelled `device_type: cpu`.
  Where a dtype is emulated (bf16 on an AVX2-only CPU ran at 0.3 GFLOP/s: one 2048^3 call would take a
  minute), probe calls from 256^3 up, doubling while the next size is estimated within the budget, choose N;
  the entry then records `n_asked` and `n_reason` beside the `n` it measured.

`ceilings(device)` measures once per process and device (later calls return the cached result);
`measure_ceilings` always measures. A measurement that fails (out of memory, an unsupported dtype) is
recorded as {"error": ...} for that entry; the others stand. `measured_tflops(ceilings, key)` is the rate
for a math-mode key of `measure.peak_key` ("bf16", "fp16", "tf32", "fp32"), or None.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch

WARMUP = 2
# (math-mode key, dtype, TF32 allowed) measured per device type; the key is measure.peak_key's.
MODES = {
    "cuda": (("bf16", torch.bfloat16, False), ("fp16", torch.float16, False), ("tf32", torch.float32, True),
             ("fp32", torch.float32, False)),
    "cpu": (("fp32", torch.float32, False), ("bf16", torch.bfloat16, False)),
}
SIZES = {"cuda": {"matmul_n": 8192, "copy_bytes": 1 << 30, "reps": 10, "budget_s": 1.0},
         "cpu": {"matmul_n": 2048, "copy_bytes": 256 << 20, "reps": 3, "budget_s": 1.0}}

_CACHE: dict[str, dict] = {}


def ceilings(device: torch.device | str) -> dict:
    """`measure_ceilings(device)`, measured on the first call per process and device, then cached."""
    key = str(torch.device(device))
    if key not in _CACHE:
        _CACHE[key] = measure_ceilings(device)
    return _CACHE[key]


def measured_tflops(measured: dict | None, key: str) -> float | None:
    """The measured matmul TFLOP/s for math mode `key`, or None (not measured, or it failed)."""
    entry = ((measured or {}).get("matmul") or {}).get(key) or {}
    return entry.get("tflops")


@contextlib.contextmanager
def _matmul_tf32(enabled: bool):
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def time_calls(fn: Callable[[], object], device: torch.device, reps: int, budget_s: float,
               warmup: int = WARMUP) -> list[float]:
    """Milliseconds of up to `reps` timed calls of `fn` after `warmup` untimed ones (CUDA events on CUDA,
    perf_counter on CPU); stops once the timed calls took `budget_s` (at least one call)."""
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    times, spent = [], 0.0
    while len(times) < reps and (not times or spent < budget_s):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            fn()
            ms = (time.perf_counter() - t0) * 1e3
        times.append(ms)
        spent += ms / 1e3
    return times


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _error(exc: BaseException) -> dict:
    text = str(exc).strip()
    return {"error": f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"}


PROBE_N = 256  # the CPU probe's matmul size (below it a rate says little)


def fitted_n(n: int, seconds_at: Callable[[int], float], call_budget_s: float, probe_n: int = PROBE_N) -> int:
    """The matmul size to measure, at most `n`: probe sizes probe_n, 2 probe_n, ... (`seconds_at(size)`: one
    call's seconds) while the next size is estimated (cubic scaling from the last probe) within
    `call_budget_s`; the first size estimated over it stops the growth. A native dtype reaches `n`."""
    size, seconds = probe_n, seconds_at(probe_n)
    while size < n and seconds * 8 <= call_budget_s:
        size *= 2
        if size >= n:
            return n
        seconds = seconds_at(size)
    return min(size, n)


def _probe_seconds(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """One untimed warm call, then one timed call of an n x n matmul in `dtype` on the CPU."""
    a = torch.randn(n, n, device=device).to(dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    torch.matmul(a, a, out=c)
    t0 = time.perf_counter()
    torch.matmul(a, a, out=c)
    return time.perf_counter() - t0


def _matmul(device: torch.device, dtype: torch.dtype, tf32: bool, n: int, reps: int, budget_s: float,
            timer) -> dict:
    asked, fitted_note = n, {}
    try:
        if device.type == "cpu" and n > PROBE_N:
            # A CPU without native units for a dtype emulates it (bf16 on an AVX2-only CPU: ~0.3 GFLOP/s,
            # 500x below fp32): shrink N until one call is estimated within the budget.
            n = fitted_n(n, lambda size: _probe_seconds(device, dtype, size), budget_s)
            if n != asked:
                fitted_note = {"n_asked": asked, "n_reason": f"a {2 * n}^3 call was estimated over {budget_s:g} s "
                               f"from a {n}^3 probe call"}
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        c = torch.empty(n, n, device=device, dtype=dtype)
        with _matmul_tf32(tf32):
            times = timer(lambda: torch.matmul(a, b, out=c), device, reps, budget_s)
    except Exception as exc:  # noqa: BLE001 - one failed ceiling leaves the others
        return {"n": n, "dtype": str(dtype).replace("torch.", ""), "tf32": tf32, **_error(exc)}
    finally:
        a = b = c = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    p50 = _median(times)
    return {"n": n, **fitted_note, "dtype": str(dtype).replace("torch.", ""), "tf32": tf32, "reps": len(times),
            "p50_ms": p50, "min_ms": min(times), "tflops": 2 * n ** 3 / (p50 / 1e3) / 1e12}


def _copy(device: torch.device, nbytes: int, reps: int, budget_s: float, timer) -> dict:
    try:
        src = torch.ones(nbytes // 4, device=device)
        dst = torch.empty_like(src)
        times = timer(lambda: dst.copy_(src), device, reps, budget_s)
    except Exception as exc:  # noqa: BLE001
        return {"bytes": nbytes, **_error(exc)}
    finally:
        src = dst = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    p50 = _median(times)
    return {"bytes": nbytes, "counted": "read + write", "reps": len(times), "p50_ms": p50, "min_ms": min(times),
            "gbps": 2 * nbytes / (p50 / 1e3) / 1e9}


def measure_ceilings(device: torch.device | str, *, sizes: dict | None = None, timer=time_calls) -> dict:
    """Measure the matmul and copy ceilings of `device` now (see the module docstring); `sizes` overrides
    SIZES[device type] entries (tests), `timer` the timing loop (tests)."""
    device = torch.device(device)
    kind = "cuda" if device.type == "cuda" else "cpu"
    cfg = {**SIZES[kind], **(sizes or {})}
    t0 = time.perf_counter()
    matmul = {key: _matmul(device, dtype, tf32, cfg["matmul_n"], cfg["reps"], cfg["budget_s"], timer)
              for key, dtype, tf32 in MODES[kind]}
    copy = _copy(device, cfg["copy_bytes"], cfg["reps"], cfg["budget_s"], timer)
    what = "device-to-device copy" if kind == "cuda" else "memory copy"
    return {"device_type": kind, "matmul": matmul, "copy": copy, "seconds": time.perf_counter() - t0,
            "threads": torch.get_num_threads() if kind == "cpu" else None,
            "method": f"median of up to {cfg['reps']} timed calls after {WARMUP} warm-up calls: "
                      f"{cfg['matmul_n']}^3 matmuls (TFLOP/s = 2 N^3 / t) and a {cfg['copy_bytes'] >> 20} MiB "
                      f"{what} (GB/s = 2 x bytes / t)"}


# ---- a matrix rate timed beside other work (in its round-robin: `timing.interleave`) ----------------------

def gemm_fns(n: int, dtypes) -> dict:
    """{"gemm_<dtype>": one n^3 torch.mm on fixed random CPU operands} for each dtype (none when n == 0): put
    in the same round-robin as the work they are a ceiling for, so both see the machine alike."""
    fns = {}
    for dtype in dict.fromkeys(dtypes):
        g = torch.Generator().manual_seed(0)
        a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
        fns[f"gemm_{str(dtype).replace('torch.', '')}"] = lambda a=a, b=b: torch.mm(a, b)
    return fns if n > 0 else {}


def gemm_rates(times: dict, n: int) -> dict:
    """{dtype name: {"gflops", "n", "calls"}} from the gemm_* entries of round-robin seconds (median call)."""
    import statistics

    return {name[len("gemm_"):]: {"gflops": 2 * n ** 3 / statistics.median(secs) / 1e9, "n": n, "calls": len(secs)}
            for name, secs in times.items() if name.startswith("gemm_")}


def gemm_rate(n: int, dtype, calls: int) -> dict | None:
    """{"gflops", "n", "calls"} of an n^3 torch.mm in `dtype` timed alone: the median of `calls` calls after one
    warm-up (None when n is 0). For a ceiling timed apart from the work; beside it, use `gemm_fns`."""
    from titok_bench.harness.timing import interleave

    fns = gemm_fns(n, (dtype,))
    if not fns:
        return None
    interleave(fns, 1)
    return next(iter(gemm_rates(interleave(fns, calls), n).values()))
