"""Kernel micro-benchmarks as pytest-benchmark tests, for regression tracking:

    pytest bench --benchmark-only            # torch references on CPU; Triton kernels too on a GPU

Shapes: each op's headline case in the one registry, bench/ops/cases.py (full on a GPU, quick on CPU).
"""
import pytest
import torch

from titok_bench.ops.cases import headline

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
QUICK = DEVICE.type != "cuda"
BACKENDS = ["torch"] + (["triton"] if DEVICE.type == "cuda" else [])


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nearest_code(benchmark, backend):
    from titok_kernels.nearest_code import nearest_code

    s = headline("nearest_code", QUICK)
    z, codebook = torch.randn(s["M"], s["D"], device=DEVICE), torch.randn(s["N"], s["D"], device=DEVICE)
    benchmark(lambda: (nearest_code(z, codebook, l2_normalize=s["l2_normalize"], backend=backend), _sync()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_maskgit_step(benchmark, backend):
    from titok_kernels.maskgit_step import maskgit_step

    s = headline("maskgit_step", QUICK)
    b, k, v = s["B"], s["K"], s["V"]
    cond, uncond = torch.randn(b, k, v, device=DEVICE), torch.randn(b, k, v, device=DEVICE)
    ids = torch.full((b, k), v, device=DEVICE)
    benchmark(lambda: (maskgit_step(cond, uncond, ids, mask_id=v, guidance_scale=2.0, gumbel_temperature=1.0,
                                    schedule_mask_len=k // 2, seed=0, offset=0, backend=backend), _sync()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_concat_attention(benchmark, backend):
    from titok_kernels.concat_attention import concat_attention

    s = headline("concat_attention", QUICK)
    dtype = torch.float32 if QUICK else torch.bfloat16
    width = s["H"] * s["d"]
    qkv = torch.randn(s["B"], s["Lp"], 3 * width, device=DEVICE, dtype=dtype)
    shared = torch.randn(s["Ls"], 3 * width, device=DEVICE, dtype=dtype)
    benchmark(lambda: (concat_attention(qkv, shared, num_heads=s["H"], backend=backend), _sync()))
