"""Benchmark of titok_kernels.masked_lm_loss (fused projection + MLM loss, forward and gradients) against torch.

Case: the MaskGIT-ViT head at the paper's training batch, M = B*K rows (B = 64, K = 256 -> 16384),
D = 768, V = 4096; quick (and always on CPU): K = 256, B = 64 for memory, time taken on the same call.
Run: python -m titok_bench.ops.masked_lm_loss [--quick]   (or through bench/kernel_bench.py's op list).

Providers (each: loss + backward to hidden, weight and bias, fp32 on CPU, bf16 on CUDA):
    plain_torch   `masked_lm_loss_torch` + autograd: F.linear logits (M, V), F.cross_entropy, backward.
    fused_torch   `masked_lm_loss(..., backend="torch")`: row chunks, torch ops, never the whole logits.
    fused_triton  `masked_lm_loss(..., backend="triton")`: the same chunks through the Triton CE kernel; CUDA only.
Rows: p50 time and `peak_mem_bytes` (titok_bench.harness.memory: CUDA max_memory_allocated, CPU the
allocator's event log; memory above what was live before the call).
"""
from __future__ import annotations

import sys

import torch

from titok_bench.harness import micro_settings, time_fn
from titok_bench.harness.memory import peak_alloc_bytes

OP = "masked_lm_loss"
CASE = {"B": 64, "K": 256, "D": 768, "V": 4096}


def _inputs(device, dtype, B, K, D, V):
    b, k, d, v = B, K, D, V
    g = torch.Generator().manual_seed(0)
    m = b * k
    hidden = torch.randn(m, d, generator=g).to(device, dtype).requires_grad_(True)
    weight = (0.02 * torch.randn(v, d, generator=g)).to(device, dtype).requires_grad_(True)
    bias = torch.zeros(v).to(device, dtype).requires_grad_(True)
    targets = torch.randint(0, v, (m,), generator=g).to(device)
    weights = torch.where(torch.rand(m, generator=g) < 0.5, 1.0, 0.1).to(device, dtype)
    return hidden, weight, bias, targets, weights


def _step(loss_fn, inputs):
    hidden, weight, bias, targets, weights = inputs
    def call():
        for p in (hidden, weight, bias):
            p.grad = None
        loss = loss_fn(hidden, weight, bias, targets, weights)
        loss.backward()
        return loss.detach()
    return call


def run(device, *, quick: bool = False) -> list[dict]:
    """Time and peak memory of every provider on the case; one row per provider."""
    from titok_kernels.masked_lm_loss import masked_lm_loss
    from titok_kernels.reference import masked_lm_loss_torch

    settings = micro_settings(device, quick)
    device = settings.device
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    inputs = _inputs(device, dtype, **CASE)
    providers = {"plain_torch": masked_lm_loss_torch,
                 "fused_torch": lambda *a: masked_lm_loss(*a, backend="torch")}
    if device.type == "cuda":
        providers["fused_triton"] = lambda *a: masked_lm_loss(*a, backend="triton")
    rows = []
    for name, fn in providers.items():
        call = _step(fn, inputs)
        peak, loss = peak_alloc_bytes(call, device)
        timing = time_fn(call, device=device, warmup=min(settings.warmup, 1), iters=min(settings.iters, 2))
        rows.append({"op": OP, "provider": name, "shape": dict(CASE), "dtype": str(dtype).replace("torch.", ""),
                     "p50_ms": timing.p50_ms, "iters": timing.iters, "peak_mem_bytes": peak,
                     "loss": float(loss)})
    return rows


def main(argv=None) -> int:
    for row in run("cuda" if torch.cuda.is_available() else "cpu", quick="--quick" in (argv or sys.argv[1:])):
        print(f"{row['provider']:>13}: {row['p50_ms']:9.1f} ms  peak {row['peak_mem_bytes'] / 2**20:8.1f} MiB  "
              f"loss {row['loss']:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
