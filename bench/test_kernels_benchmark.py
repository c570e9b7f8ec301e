"""Kernel micro-benchmarks as pytest-benchmark tests, for regression tracking:

    pytest bench --benchmark-only            # torch references on CPU; Triton kernels too on a GPU
"""
import pytest
import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BACKENDS = ["torch"] + (["triton"] if DEVICE.type == "cuda" else [])


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nearest_code(benchmark, backend):
    from titok_kernels.nearest_code import nearest_code

    m = 32768 if DEVICE.type == "cuda" else 2048
    z, codebook = torch.randn(m, 12, device=DEVICE), torch.randn(4096, 12, device=DEVICE)
    benchmark(lambda: (nearest_code(z, codebook, l2_normalize=True, backend=backend), _sync()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_maskgit_step(benchmark, backend):
    from titok_kernels.maskgit_step import maskgit_step

    b = 256 if DEVICE.type == "cuda" else 8
    cond, uncond = torch.randn(b, 32, 4096, device=DEVICE), torch.randn(b, 32, 4096, device=DEVICE)
    ids = torch.full((b, 32), 4096, device=DEVICE)
    benchmark(lambda: (maskgit_step(cond, uncond, ids, mask_id=4096, guidance_scale=2.0, gumbel_temperature=1.0,
                                    schedule_mask_len=16, seed=0, offset=0, backend=backend), _sync()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_concat_attention(benchmark, backend):
    from titok_kernels.concat_attention import concat_attention

    b, dtype = (64, torch.bfloat16) if DEVICE.type == "cuda" else (2, torch.float32)
    qkv = torch.randn(b, 32, 3 * 1024, device=DEVICE, dtype=dtype)
    shared = torch.randn(257, 3 * 1024, device=DEVICE, dtype=dtype)
    benchmark(lambda: (concat_attention(qkv, shared, num_heads=16, backend=backend), _sync()))
