"""The ops `bench/cpu_ops.py` times at titok-l-32's shapes for a batch B: what the fast runtime runs on a CPU in bf16
beside the plain PyTorch op it replaces, and candidates not taken yet beside what runs today.

The fast path's choices (`fast_path_cases`; plain -> chosen):
- `linear`: F.linear -> `titok.cpu_linear.linear` (weights packed once), the generator's (2B x 33 rows) and the
  ViT decoder's (B x 289 rows) layers;
- `linear+gelu` (the MLPs' first layer): F.gelu(F.linear) -> `linear_gelu` (oneDNN's GELU post-op);
- `linear+add` (out-projections and the MLPs' second layer, with their residual): + F.linear -> `linear_add`;
- `qkv` (the generator's query, key and value): three F.linear -> one product on the concatenated weight;
- `attention` generator (2B x 12 heads x 33 x 64): bf16 SDPA -> SDPA in fp32 (`titok.fast.sdpa`).
The candidates (`candidate_cases`; today -> candidate): `attention` in the ViT decoder (B x 16 x 289 x 64) and the
generator as two bf16 matrix products with the softmax in fp32 (`matmul_attention`), against bf16 SDPA (CPU flash
attention) and fp32 SDPA, what runs today.

`case_fns(case)` gives (flops, first, second, reference): the two callables on fixed random bf16 inputs (each
returning what the fast path goes on with: the QKV case three tensors, as three products or as views of one)
and the same computation in float64 on those inputs, so that each result's error is reported beside its speed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

BF16 = torch.bfloat16


def fast_path_cases(batch: int) -> list[dict]:
    """The fast path's choices at titok-l-32's shapes for `batch` images (guided: 2B generator rows)."""
    gen_rows, dec_rows = 2 * batch * 33, batch * 289
    out = [{"kind": "linear", "where": "generator", "m": gen_rows, "k": k, "n": n}
           for k, n in ((768, 768), (768, 3072), (3072, 768), (768, 4096))]
    out += [{"kind": "linear", "where": "vit_decoder", "m": dec_rows, "k": k, "n": n}
            for k, n in ((1024, 3072), (1024, 1024), (1024, 4096), (4096, 1024))]
    out += [{"kind": "linear+gelu", "where": w, "m": m, "k": k, "n": 4 * k}
            for w, m, k in (("generator", gen_rows, 768), ("vit_decoder", dec_rows, 1024))]
    out += [{"kind": "linear+add", "where": w, "m": m, "k": k, "n": n}
            for w, m, k, n in (("generator", gen_rows, 768, 768), ("generator", gen_rows, 3072, 768),
                               ("vit_decoder", dec_rows, 1024, 1024), ("vit_decoder", dec_rows, 4096, 1024))]
    out.append({"kind": "qkv", "where": "generator", "m": gen_rows, "k": 768, "n": 3 * 768})
    out.append(_attention("generator", 2 * batch, 33, 12))
    return out


def candidate_cases(batch: int) -> list[dict]:
    """The candidates not taken, at titok-l-32's shapes for `batch` images."""
    return [_attention("vit_decoder", batch, 289, 16), _attention("generator", 2 * batch, 33, 12)]


def _attention(where: str, batch: int, seq: int, heads: int) -> dict:
    return {"kind": "attention", "where": where, "batch": batch, "seq": seq, "heads": heads, "head_dim": 64}


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v as two matrix products in q's dtype, the softmax computed in fp32."""
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
    return torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype), v)


def case_fns(case: dict, candidate: bool = False):
    """(flops, plain or today, chosen or candidate, float64 reference) of one case; `candidate` picks the
    candidate pair of an attention case. The packed weights are made on the first call."""
    from titok.cpu_linear import linear, linear_add, linear_gelu
    from titok.fast import sdpa
    from titok_kernels.reference import split_packed_qkv

    g = torch.Generator().manual_seed(0)
    if case["kind"] == "attention":
        width = case["heads"] * case["head_dim"]
        qkv = torch.randn(case["batch"], case["seq"], 3 * width, generator=g).to(BF16)
        q, k, v = split_packed_qkv(qkv, case["heads"])   # strided head views, as the fast path sees them
        flops = 4 * case["batch"] * case["heads"] * case["seq"] ** 2 * case["head_dim"]
        today = sdpa if case["where"] == "generator" else F.scaled_dot_product_attention
        first, second = (today, matmul_attention) if candidate else (F.scaled_dot_product_attention, sdpa)
        return (flops, lambda: first(q, k, v), lambda: second(q, k, v),
                lambda: F.scaled_dot_product_attention(q.double(), k.double(), v.double()))
    m, k, n = case["m"], case["k"], case["n"]
    x = torch.randn(m, k, generator=g).to(BF16)
    w = (torch.randn(n, k, generator=g) / k ** 0.5).to(BF16)
    b = torch.randn(n, generator=g).to(BF16)
    flops, x64, w64, b64 = 2 * m * k * n, x.double(), w.double(), b.double()
    if case["kind"] == "linear":
        return flops, lambda: F.linear(x, w, b), lambda: linear(x, w, b), lambda: F.linear(x64, w64, b64)
    if case["kind"] == "linear+gelu":
        return (flops, lambda: F.gelu(F.linear(x, w, b)), lambda: linear_gelu(x, w, b),
                lambda: F.gelu(F.linear(x64, w64, b64)))
    if case["kind"] == "linear+add":
        residual = torch.randn(m, n, generator=g).to(BF16)
        return (flops, lambda: residual + F.linear(x, w, b), lambda: linear_add(x, w, b, residual),
                lambda: residual.double() + F.linear(x64, w64, b64))
    if case["kind"] == "qkv":
        third = n // 3
        parts = [(w[i * third:(i + 1) * third].clone(), b[i * third:(i + 1) * third].clone()) for i in range(3)]
        return (flops, lambda: [F.linear(x, wi, bi) for wi, bi in parts], lambda: linear(x, w, b).chunk(3, dim=-1),
                lambda: F.linear(x64, w64, b64))
    raise ValueError(f"unknown case kind {case['kind']!r}")


def max_error(result, reference: torch.Tensor) -> float:
    """Largest absolute difference of a bf16 result (a tensor, or the parts of one along its last dim: the QKV
    case's three products) from its float64 reference."""
    if isinstance(result, (list, tuple)):
        result = torch.cat(result, dim=-1)
    return float((result.double() - reference).abs().max())
