"""Benchmark of titok_kernels.maskgit_step: the one-launch Triton step against the eager torch step.

Cases: `cases.CASES["maskgit_step"]`: K = 32, V = 4096 (TiTok-L-32 generator) at B = 1 (a launch-bound
decode step), B = 32 (logits in L2) and B = 256 (past L2); quick (CPU) size B = 8. fp32 logits, guidance on
(cond-anchored, scale 2.0), softmax temperature 0.9, Gumbel temperature 1.0, first step (every token masked,
so every logit is read; schedule_mask_len = 31).

Providers (the `shape` field also names the noise source):
    triton      `maskgit_step(..., backend="triton")`, the whole launcher; CUDA only. Two rows:
                noise="seed" (drawn in-kernel from a seed tensor: the fast path) and noise="given"
                (uniform tensors drawn before the timed region: the parity path).
    torch_step  `maskgit_step_torch` with its uniforms drawn by `torch.rand` inside the timed
                call, as the eager official step draws them each step (noise="torch.rand").

Cost (the same formula for every row so that GB/s compares times; bench/harness/micro.py `Cost`):
    bytes = working_set_bytes = 2 * B * K * V * 4   (reading the cond and uncond fp32 logits once)
                              + B * K * 8 * 2       (int64 ids in and out).
    The given-noise row reads B * K * V * 4 + B * K * 4 bytes of noise on top (not counted), and
    the torch step moves several more (B, K, V) tensors; both are judged against the same minimum.
    flops: None (a bandwidth-bound op).
"""
from __future__ import annotations

import torch

from titok_bench.harness.micro import Cost, MicroRun, ident
from titok_bench.ops.cases import cases

OP = "maskgit_step"
STEP = dict(guidance_scale=2.0, guidance_anchor="cond", softmax_temperature=0.9, gumbel_temperature=1.0,
            schedule_mask_len=31, last_step=False)


def cost(shape: dict, dtype: torch.dtype) -> Cost:
    b, k, v = shape["B"], shape["K"], shape["V"]
    nbytes = 2 * b * k * v * torch.finfo(dtype).bits // 8 + b * k * 8 * 2
    return Cost(bytes=nbytes, flops=None, working_set_bytes=nbytes)


def _case_rows(micro: MicroRun, case: str, shape: dict, dtype: torch.dtype) -> list[dict]:
    from titok_kernels.maskgit_step import maskgit_step
    from titok_kernels.reference import maskgit_step_torch

    device = micro.device
    b, k, v = shape["B"], shape["K"], shape["V"]
    gen = torch.Generator(device="cpu").manual_seed(0)
    cond = (3 * torch.randn(b, k, v, generator=gen)).to(device=device, dtype=dtype)
    uncond = (3 * torch.randn(b, k, v, generator=gen)).to(device=device, dtype=dtype)
    ids = torch.full((b, k), v, dtype=torch.int64, device=device)

    def torch_step():
        u_sample = torch.rand(b, k, v, device=device)
        u_conf = torch.rand(b, k, device=device)
        return maskgit_step_torch(cond, uncond, ids, u_sample, u_conf, mask_id=v, **STEP)

    providers = []
    if device.type == "cuda":
        seed = torch.tensor([1], dtype=torch.int64, device=device)
        noise = (torch.rand(b, k, v, device=device), torch.rand(b, k, device=device))
        providers.append(("triton", "seed", lambda: maskgit_step(cond, uncond, ids, mask_id=v, seed=seed, offset=0,
                                                                 backend="triton", **STEP)))
        providers.append(("triton", "given", lambda: maskgit_step(cond, uncond, ids, mask_id=v, noise=noise,
                                                                  backend="triton", **STEP)))
    providers.append(("torch_step", "torch.rand", torch_step))
    rows = []
    for name, noise_source, fn in providers:
        identity = ident(OP, name, case, {**shape, "noise": noise_source}, dtype)
        rows += micro.guarded(identity, lambda: micro.measure(identity, fn, cost(shape, dtype)))
    return rows


def run(device, *, quick: bool = False, micro: MicroRun | None = None) -> list[dict]:
    """One row per (case, provider, noise source); a failing one gives an error row, the others still run."""
    micro = micro or MicroRun.create(device, quick)
    dtype = torch.float32
    return micro.per_case(OP, dtype, cases(OP, micro.settings.quick), lambda case, shape: _case_rows(micro, case, shape, dtype))
