"""Benchmark of titok_kernels.nearest_code: the fused Triton lookup against the official quantizer math in torch.

Cases (fp32 inputs, as the TiTok quantizer runs in fp32):
    M = 32768, N = 4096, D = 12, l2_normalize  (TiTok-L-32 style codebook, a batch of 1024 images)
    M = 2048,  N = 8192, D = 64, no l2         (VQ-8k codebook, a batch of 64 images)
With quick=True (and always on CPU) M is cut to 512 and 128 rows.

Providers:
    triton          `nearest_code(..., backend="triton")`, the whole launcher (prepare pass, main
                    kernel, split combine when used, output allocation); CUDA only.
    official_torch  `nearest_code_torch`: the official quantizer code verbatim (normalize, the
                    einsum distance matrix, argmin). A separate "plain torch" provider would be
                    the same code, so there is one torch provider.

Derived throughput (documented formulas):
    bytes = ideal minimum traffic = M*D*sizeof(z) + N*D*sizeof(codebook) + M*8 (int64 indices);
            the kernels move more (the fp32 prepared copies, the codebook re-read by every row block).
    flops = 2*M*N*D (the distance dot products; normalisation and argmin not counted).
    frac_peak_bandwidth = gbps / the device's HBM peak; frac_peak_flops = tflops / its CUDA-core
    fp32 peak (the kernel's tl.dot runs with input_precision="ieee": fp32 FMA, no tensor cores).
    Both None when the device's peaks are unknown (CPU, unlisted GPU).
"""
from __future__ import annotations

import torch

from titok_bench.harness import device_peaks, micro_settings, time_fn

OP = "nearest_code"
CASES = [  # (M, N, D, l2_normalize, quick M)
    (32768, 4096, 12, True, 512),
    (2048, 8192, 64, False, 128),
]


def _row(provider: str, shape: dict, dtype: torch.dtype, timing, peaks) -> dict:
    m, n, d = shape["M"], shape["N"], shape["D"]
    size = torch.finfo(dtype).bits // 8
    nbytes = m * d * size + n * d * size + m * 8
    flops = 2 * m * n * d
    seconds = timing.p50_ms * 1e-3
    gbps = nbytes / seconds / 1e9
    tflops = flops / seconds / 1e12
    return {
        "op": OP, "provider": provider, "shape": dict(shape), "dtype": str(dtype).replace("torch.", ""),
        "p50_ms": timing.p50_ms, "p20_ms": timing.p20_ms, "p80_ms": timing.p80_ms, "iters": timing.iters,
        "bytes": nbytes, "gbps": gbps,
        "frac_peak_bandwidth": gbps / peaks["bandwidth_gbps"] if peaks else None,
        "flops": flops, "tflops": tflops,
        "frac_peak_flops": tflops / peaks["tflops"]["fp32"] if peaks else None,
    }


def run(device, *, quick: bool = False) -> list[dict]:
    """Time every provider on every case; one result row per (case, provider)."""
    from titok_kernels.nearest_code import nearest_code
    from titok_kernels.reference import nearest_code_torch

    settings = micro_settings(device, quick)
    device, quick, warmup, iters = settings.device, settings.quick, settings.warmup, settings.iters
    peaks = device_peaks(device)
    dtype = torch.float32
    rows = []
    for m, n, d, l2, quick_m in CASES:
        m = quick_m if quick else m
        gen = torch.Generator(device="cpu").manual_seed(0)
        z = torch.randn(m, d, generator=gen).to(device=device, dtype=dtype)
        codebook = torch.randn(n, d, generator=gen).to(device=device, dtype=dtype)
        shape = {"M": m, "N": n, "D": d, "l2_normalize": l2}
        providers = {"official_torch": lambda: nearest_code_torch(z, codebook, l2_normalize=l2)}
        if device.type == "cuda":
            providers["triton"] = lambda: nearest_code(z, codebook, l2_normalize=l2, backend="triton")
        for name, fn in providers.items():
            rows.append(_row(name, shape, dtype, time_fn(fn, device=device, warmup=warmup, iters=iters), peaks))
    return rows
