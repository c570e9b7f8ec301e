"""Benchmark of titok_kernels.maskgit_step: the one-launch Triton step against the eager torch step.

Case: B = 256, K = 32, V = 4096 (TiTok-L-32 generator, a batch of 256 images), fp32 logits,
guidance on (cond-anchored, scale 2.0), softmax temperature 0.9, Gumbel temperature 1.0, first
step (every token masked, so every logit is read; schedule_mask_len = 31). With quick=True (and
always on CPU) B is cut to 8.

Providers (the `shape` field also names the noise source):
    triton      `maskgit_step(..., backend="triton")`, the whole launcher; CUDA only. Two rows:
                noise="seed" (drawn in-kernel from a seed tensor: the fast path) and noise="given"
                (uniform tensors drawn before the timed region: the parity path).
    torch_step  `maskgit_step_torch` with its uniforms drawn by `torch.rand` inside the timed
                call, as the eager official step draws them each step (noise="torch.rand").

Derived throughput (documented formula, the same for every row so that GB/s compares times):
    bytes = 2 * B * K * V * 4   (reading the cond and uncond fp32 logits once)
          + B * K * 8 * 2       (int64 ids in and out).
    The given-noise row reads B * K * V * 4 + B * K * 4 bytes of noise on top (not counted), and
    the torch step moves several more (B, K, V) tensors; both are judged against the same minimum.
    gbps = bytes / p50 time; frac_peak_bandwidth = gbps / the device's HBM peak (None when the
    device's peak is unknown: CPU, unlisted GPU).
"""
from __future__ import annotations

import torch

from titok_bench.harness import device_peaks, micro_settings, time_fn

OP = "maskgit_step"
B, K, V, QUICK_B = 256, 32, 4096, 8
STEP = dict(guidance_scale=2.0, guidance_anchor="cond", softmax_temperature=0.9, gumbel_temperature=1.0,
            schedule_mask_len=31, last_step=False)


def _row(provider: str, shape: dict, dtype: torch.dtype, timing, peaks) -> dict:
    b, k, v = shape["B"], shape["K"], shape["V"]
    nbytes = 2 * b * k * v * torch.finfo(dtype).bits // 8 + b * k * 8 * 2
    gbps = nbytes / (timing.p50_ms * 1e-3) / 1e9
    return {
        "op": OP, "provider": provider, "shape": dict(shape), "dtype": str(dtype).replace("torch.", ""),
        "p50_ms": timing.p50_ms, "p20_ms": timing.p20_ms, "p80_ms": timing.p80_ms, "iters": timing.iters,
        "bytes": nbytes, "gbps": gbps,
        "frac_peak_bandwidth": gbps / peaks["bandwidth_gbps"] if peaks else None,
    }


def run(device, *, quick: bool = False) -> list[dict]:
    """Time every provider; one result row per provider (and noise source)."""
    from titok_kernels.maskgit_step import maskgit_step
    from titok_kernels.reference import maskgit_step_torch

    settings = micro_settings(device, quick)
    device, quick, warmup, iters = settings.device, settings.quick, settings.warmup, settings.iters
    peaks = device_peaks(device)
    dtype = torch.float32
    b = QUICK_B if quick else B
    gen = torch.Generator(device="cpu").manual_seed(0)
    cond = (3 * torch.randn(b, K, V, generator=gen)).to(device=device, dtype=dtype)
    uncond = (3 * torch.randn(b, K, V, generator=gen)).to(device=device, dtype=dtype)
    ids = torch.full((b, K), V, dtype=torch.int64, device=device)
    shape = {"B": b, "K": K, "V": V}

    def torch_step():
        u_sample = torch.rand(b, K, V, device=device)
        u_conf = torch.rand(b, K, device=device)
        return maskgit_step_torch(cond, uncond, ids, u_sample, u_conf, mask_id=V, **STEP)

    providers = []
    if device.type == "cuda":
        seed = torch.tensor([1], dtype=torch.int64, device=device)
        noise = (torch.rand(b, K, V, device=device), torch.rand(b, K, device=device))
        providers.append(("triton", "seed", lambda: maskgit_step(cond, uncond, ids, mask_id=V, seed=seed, offset=0,
                                                                 backend="triton", **STEP)))
        providers.append(("triton", "given", lambda: maskgit_step(cond, uncond, ids, mask_id=V, noise=noise,
                                                                  backend="triton", **STEP)))
    providers.append(("torch_step", "torch.rand", torch_step))
    rows = []
    for name, noise_source, fn in providers:
        timing = time_fn(fn, device=device, warmup=warmup, iters=iters)
        rows.append(_row(name, {**shape, "noise": noise_source}, dtype, timing, peaks))
    return rows
