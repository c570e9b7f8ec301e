"""Benchmark of titok_kernels.nearest_code: the fused Triton lookup against the official quantizer math in torch.

Cases: `cases.CASES["nearest_code"]` (fp32 inputs, as the TiTok quantizer runs in fp32): a TiTok-L-32 style
codebook at a batch of 1024 images, a VQ-8k codebook at 64 images (both in L2), and a 128 MiB codebook read
by 32 rows (past L2: the bandwidth-bound case). Quick (CPU) sizes cut M, or N for the large codebook.

Providers:
    triton          `nearest_code(..., backend="triton")`, the whole launcher (prepare pass, main
                    kernel, split combine when used, output allocation); CUDA only.
    official_torch  `nearest_code_torch`: the official quantizer code verbatim (normalize, the
                    einsum distance matrix, argmin). A separate "plain torch" provider would be
                    the same code, so there is one torch provider.

Cost (bench/harness/micro.py `Cost`; the same for every provider):
    bytes = working_set_bytes = ideal minimum traffic = M*D*sizeof(z) + N*D*sizeof(codebook) + M*8 (int64
            indices); the kernels move more (the fp32 prepared copies, the codebook re-read by every row block).
    flops = 2*M*N*D (the distance dot products; normalisation and argmin not counted); the FLOP peak is the
            CUDA-core fp32 one (the kernel's tl.dot runs with input_precision="ieee": fp32 FMA, no tensor cores).
"""
from __future__ import annotations

import torch

from titok_bench.harness.micro import Cost, MicroRun, ident
from titok_bench.ops.cases import cases

OP = "nearest_code"


def cost(shape: dict, dtype: torch.dtype) -> Cost:
    m, n, d = shape["M"], shape["N"], shape["D"]
    size = torch.finfo(dtype).bits // 8
    nbytes = m * d * size + n * d * size + m * 8
    return Cost(bytes=nbytes, flops=2 * m * n * d, working_set_bytes=nbytes, peak="fp32")


def _case_rows(micro: MicroRun, case: str, shape: dict, dtype: torch.dtype) -> list[dict]:
    from titok_kernels.nearest_code import nearest_code
    from titok_kernels.reference import nearest_code_torch

    device = micro.device
    m, n, d, l2 = shape["M"], shape["N"], shape["D"], shape["l2_normalize"]
    gen = torch.Generator(device="cpu").manual_seed(0)
    z = torch.randn(m, d, generator=gen).to(device=device, dtype=dtype)
    codebook = torch.randn(n, d, generator=gen).to(device=device, dtype=dtype)
    providers = {"official_torch": lambda: nearest_code_torch(z, codebook, l2_normalize=l2)}
    if device.type == "cuda":
        providers["triton"] = lambda: nearest_code(z, codebook, l2_normalize=l2, backend="triton")
    rows = []
    for name, fn in providers.items():
        identity = ident(OP, name, case, shape, dtype)
        rows += micro.guarded(identity, lambda: micro.measure(identity, fn, cost(shape, dtype)))
    return rows


def run(device, *, quick: bool = False, micro: MicroRun | None = None) -> list[dict]:
    """One row per (case, provider); a failing case or provider gives an error row, the others still run."""
    micro = micro or MicroRun.create(device, quick)
    dtype = torch.float32
    return micro.per_case(OP, dtype, cases(OP, micro.settings.quick), lambda case, shape: _case_rows(micro, case, shape, dtype))
