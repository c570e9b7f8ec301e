"""Benchmark of the fused mask-token concat attention against cat + SDPA and flash-attn.

Cases: `cases.CASES["concat_attention"]`: TiTok-L-32 decoder, first layer: H=16 heads, d=64, 257 shared
rows (class + 256 mask tokens) before 32 per-sample latent rows, all L=289 query rows, bf16 on CUDA, at
B=64 (in L2) and B=256 (past it). quick=True (CPU smoke run): fp32, B=2 (no Triton provider on CPU).

Providers and what each timed call does:
  triton               concat_attention(qkv, shared_qkv, backend="triton") -> (B, L, H*d); CUDA only.
  cat_sdpa_<backend>   cat([shared.expand(B, ...), qkv]) + head-split views + SDPA under
                       sdpa_kernel(<backend>) + head merge to (B, L, H*d): the unfused path the
                       kernel replaces (output in the layout out_proj consumes, like the kernel's).
  sdpa_<backend>_precat  SDPA alone on head views of an already concatenated packed tensor (cat
                       and head merge not timed): the attention kernel's own cost.
  flash_attn_func      flash_attn.flash_attn_func on (B, L, H, d) views of the already
                       concatenated packed tensor (cat not timed; its (B, L, H, d) output already
                       is the (B, L, H*d) layout); only when flash_attn imports.
<backend> in flash / efficient / cudnn / math (torch.nn.attention.SDPBackend); a backend that
raises for this shape, dtype or device gives an "unsupported" row with its message.

FLOPs = 4 * B * H * Lq * L * d: QK^T and PV are two (Lq x d) @ (d x L)-sized matmuls per
(image, head), 2 FLOPs per multiply-add; softmax and the cat are not counted.
tflops = flops / p50; frac_peak_flops = tflops / the device's dense peak for the dtype (bf16/fp16
tensor-core peak; for fp32, the CUDA-core FP32 peak, since the Triton kernel uses ieee fp32 dots).
bytes: None (a compute-bound op); working_set_bytes = (B*Lp*3*H*d + Ls*3*H*d + B*Lq*H*d) * sizeof(dtype):
qkv, the shared rows and the (B, Lq, H*d) output.

Every provider's output is first checked against an fp32 torch reference with a gross-error
guard (not the parity test, which is tests/test_concat_attention.py); a mismatch gives an error row.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from titok_bench.harness.env import is_out_of_memory
from titok_bench.harness.micro import Cost, MicroRun, error_row, first_line, ident, status_row
from titok_bench.ops.cases import cases
from titok_kernels.concat_attention import concat_attention
from titok_kernels.reference import concat_attention_torch, split_packed_qkv

OP = "concat_attention"
_PEAK_KEY = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
# Gross-error guard: a fraction of the largest reference output (bf16 has ~3 significant digits).
_GUARD = {torch.bfloat16: 5e-2, torch.float16: 1e-2, torch.float32: 1e-4}


def _sdpa_backends() -> dict:
    from torch.nn.attention import SDPBackend

    return {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


def _providers(qkv, shared, heads, device):
    """name -> zero-argument callable returning a (B, L, H*d) result (or equivalent)."""
    from torch.nn.attention import sdpa_kernel

    batch, per_sample_len, width = qkv.shape
    seq_len = shared.shape[0] + per_sample_len
    head_dim = width // (3 * heads)
    precat = torch.cat([shared.expand(batch, -1, -1), qkv], dim=1).contiguous()
    pq, pk, pv = split_packed_qkv(precat, heads)
    providers = {}
    if device.type == "cuda":
        providers["triton"] = lambda: concat_attention(qkv, shared, num_heads=heads, backend="triton")

    for name, backend in _sdpa_backends().items():
        def cat_sdpa(backend=backend):
            with sdpa_kernel(backend):
                seq = torch.cat([shared.expand(batch, -1, -1), qkv], dim=1)
                q, k, v = split_packed_qkv(seq, heads)
                out = F.scaled_dot_product_attention(q, k, v)
                return out.transpose(1, 2).reshape(batch, seq_len, heads * head_dim)

        def sdpa_precat(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(pq, pk, pv)

        providers[f"cat_sdpa_{name}"] = cat_sdpa
        providers[f"sdpa_{name}_precat"] = sdpa_precat

    try:
        from flash_attn import flash_attn_func
    except ImportError:
        flash_attn_func = None
    if flash_attn_func is not None and device.type == "cuda":
        fq, fk, fv = precat.view(batch, seq_len, 3, heads, head_dim).unbind(2)  # (B, L, H, d) views
        providers["flash_attn_func"] = lambda: flash_attn_func(fq, fk, fv)
    return providers


def _as_rows_layout(out: torch.Tensor, batch: int, seq_len: int) -> torch.Tensor:
    """Bring a provider's output to (B, L, H*d) for the correctness guard (not timed)."""
    if out.dim() == 4 and out.shape[2] == seq_len and out.shape[1] != seq_len:  # (B, H, L, d)
        out = out.transpose(1, 2)
    return out.reshape(batch, seq_len, -1)


def cost(shape: dict, dtype: torch.dtype) -> Cost:
    b, h, d, ls, lp = shape["B"], shape["H"], shape["d"], shape["Ls"], shape["Lp"]
    lq, size = ls + lp, torch.finfo(dtype).bits // 8
    working_set = (b * lp * 3 * h * d + ls * 3 * h * d + b * lq * h * d) * size
    return Cost(bytes=None, flops=4 * b * h * lq * lq * d, working_set_bytes=working_set, peak=_PEAK_KEY[dtype])


def _check(provider: str, out, reference, batch: int, seq_len: int, tolerance: float) -> None:
    error = (_as_rows_layout(out, batch, seq_len).float() - reference).abs().max().item()
    if not error <= tolerance:
        raise RuntimeError(f"provider {provider}: max abs error {error:.3e} > guard {tolerance:.3e}")


def _case_rows(micro: MicroRun, case: str, shape: dict, dtype: torch.dtype) -> list[dict]:
    device = micro.device
    batch, heads, head_dim, shared_len, per_sample_len = (shape[k] for k in ("B", "H", "d", "Ls", "Lp"))
    seq_len = shared_len + per_sample_len
    width = 3 * heads * head_dim
    gen = torch.Generator(device="cpu").manual_seed(0)
    qkv = torch.randn(batch, per_sample_len, width, generator=gen).to(device=device, dtype=dtype)
    shared = torch.randn(shared_len, width, generator=gen).to(device=device, dtype=dtype)
    reference = concat_attention_torch(qkv.float(), shared.float(), num_heads=heads)
    tolerance = _GUARD[dtype] * reference.abs().max().item()
    row_shape = {**shape, "Lq": seq_len}
    rows = []
    for provider, fn in _providers(qkv, shared, heads, device).items():
        identity = ident(OP, provider, case, row_shape, dtype)
        try:
            out = fn()
        except RuntimeError as exc:  # an SDPA backend that does not take this shape/dtype/device
            if provider.startswith(("cat_sdpa_", "sdpa_")) and not is_out_of_memory(exc):
                rows.append(status_row(identity, "unsupported", first_line(exc)))
                continue
            rows.append(error_row(identity, exc))
            continue

        def measured(fn=fn, out=out, provider=provider, identity=identity):
            _check(provider, out, reference, batch, seq_len, tolerance)
            return micro.measure(identity, fn, cost(shape, dtype))
        rows += micro.guarded(identity, measured)
    return rows


def run(device, *, quick: bool = False, micro: MicroRun | None = None) -> list[dict]:
    """One row per (case, provider): "ok", "error"/"oom" (the others still run), or "unsupported" (an SDPA
    backend that refuses the shape, dtype or device)."""
    micro = micro or MicroRun.create(device, quick)
    quick = micro.settings.quick
    dtype = torch.float32 if quick else torch.bfloat16
    return micro.per_case(OP, dtype, cases(OP, quick), lambda case, shape: _case_rows(micro, case, shape, dtype))


if __name__ == "__main__":
    import json
    import sys

    dev = sys.argv[1] if len(sys.argv) > 1 else ("cuda" if torch.cuda.is_available() else "cpu")
    for row in run(dev, quick=dev == "cpu"):
        print(json.dumps(row))
