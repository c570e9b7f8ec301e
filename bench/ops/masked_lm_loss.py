"""Benchmark of titok_kernels.masked_lm_loss (fused projection + MLM loss, forward and gradients) against torch.

Case: `cases.CASES["masked_lm_loss"]`: the MaskGIT-ViT head at the paper's training batch, M = B*K rows
(B = 64, K = 256 -> 16384), D = 768, V = 4096; --quick: B = 4 (kernel_bench.py's CPU runs).
Run: python -m titok_bench.ops.masked_lm_loss [--quick]   (or bench/kernel_bench.py --ops masked_lm_loss).

Providers (each: loss + backward to hidden, weight and bias, fp32 on CPU, bf16 on CUDA):
    plain_torch   `masked_lm_loss_torch` + autograd: F.linear logits (M, V), F.cross_entropy, backward.
    fused_torch   `masked_lm_loss(..., backend="torch")`: row chunks, torch ops, never the whole logits.
    fused_triton  `masked_lm_loss(..., backend="triton")`: the same chunks through the Triton CE kernel; CUDA only.
Rows (bench/harness/micro.py fields): eager and graph times, `loss` and `peak_mem_bytes`
(titok_bench.harness.memory: CUDA max_memory_allocated, CPU the allocator's event log; memory above what
was live before the call).
"""
from __future__ import annotations

import sys

import torch

from titok_bench.harness.memory import peak_alloc_bytes
from titok_bench.harness.micro import Cost, MicroRun, ident
from titok_bench.ops.cases import cases

OP = "masked_lm_loss"
_PEAK_KEY = {torch.bfloat16: "bf16", torch.float32: "fp32"}


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


def cost(shape: dict, dtype: torch.dtype) -> Cost:
    """flops = 3 * 2 * M * D * V (the logits matmul forward, then the hidden and weight gradients); bytes:
    None (compute-bound); working set = hidden, weight, bias, their gradients (2x), targets (int64) and
    weights: (2 * (M*D + V*D + V) + M) * sizeof(dtype) + 8 * M, never the (M, V) logits the fused op avoids."""
    m, d, v = shape["B"] * shape["K"], shape["D"], shape["V"]
    size = torch.finfo(dtype).bits // 8
    return Cost(bytes=None, flops=6 * m * d * v, working_set_bytes=(2 * (m * d + v * d + v) + m) * size + 8 * m,
                peak=_PEAK_KEY[dtype])


def _case_rows(micro: MicroRun, case: str, shape: dict, dtype: torch.dtype) -> list[dict]:
    from titok_kernels.masked_lm_loss import masked_lm_loss
    from titok_kernels.reference import masked_lm_loss_torch

    device = micro.device
    inputs = _inputs(device, dtype, **shape)
    providers = {"plain_torch": masked_lm_loss_torch,
                 "fused_torch": lambda *a: masked_lm_loss(*a, backend="torch")}
    if device.type == "cuda":
        providers["fused_triton"] = lambda *a: masked_lm_loss(*a, backend="triton")
    rows = []
    for name, fn in providers.items():
        identity = ident(OP, name, case, shape, dtype)

        def measured(call=_step(fn, inputs), identity=identity):
            peak, loss = peak_alloc_bytes(call, device)
            return micro.measure(identity, call, cost(shape, dtype), warmup=min(micro.settings.warmup, 1),
                                 iters=min(micro.settings.iters, 2),
                                 extra={"peak_mem_bytes": peak, "loss": float(loss)})
        rows += micro.guarded(identity, measured)
    return rows


def run(device, *, quick: bool = False, micro: MicroRun | None = None) -> list[dict]:
    """Time and peak memory of every provider on each case; one row per (case, provider), error rows for
    failures. `quick` picks the quick shape (given as asked, also on CPU: the full case is what docs/training.md
    reports); the graph timing captures the whole step, backward included."""
    micro = micro or MicroRun.create(device, quick)
    dtype = torch.bfloat16 if micro.device.type == "cuda" else torch.float32
    return micro.per_case(OP, dtype, cases(OP, quick), lambda case, shape: _case_rows(micro, case, shape, dtype))


def main(argv=None) -> int:
    for row in run("cuda" if torch.cuda.is_available() else "cpu", quick="--quick" in (argv or sys.argv[1:])):
        if row["status"] != "ok":
            print(f"{row['provider']:>13}: {row['status']}: {row['message']}")
            continue
        print(f"{row['provider']:>13}: {row['eager_p50_ms']:9.1f} ms  peak {row['peak_mem_bytes'] / 2**20:8.1f} MiB"
              f"  loss {row['loss']:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
