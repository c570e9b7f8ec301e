"""The pure-torch references of the ops: the official TiTok / MaskGIT arithmetic, written plainly.

This module imports torch and nothing else (no Triton, no op module), so code built on it is pure
torch by construction: the reference model uses these functions, and each op's
`backend="torch"` runs them. They validate nothing beyond what torch itself checks: the op
launchers (`titok_kernels.<op>`) validate their inputs first.

* `nearest_code_torch`: the official quantizer's distance + argmin (materialises M x N).
* `concat_attention_torch`: attention over an explicitly concatenated (shared, per-sample)
  packed-QKV sequence (expand + cat + SDPA), and `split_packed_qkv`, the packed layout.
* `masked_lm_loss_torch`: the official MLM loss (label smoothing, row weights) over `F.linear`
  logits (materialises M x V).
* `maskgit_step_torch`: one step of the official MaskGIT sampler, given its uniform noise;
  `gumbel` is its Gumbel transform; `torch_noise` draws that noise from (seed, offset) in the
  official order from a `torch.Generator` seeded with `torch_noise_seed(seed, offset)`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


# ---- nearest_code --------------------------------------------------------------------------------------

def nearest_code_torch(z: torch.Tensor, codebook: torch.Tensor, *, l2_normalize: bool,
                       return_distance: bool = False):
    """The official TiTok quantizer math verbatim, in fp32 whatever the input dtypes.

    z (M, D), codebook (N, D). Returns int64 indices (M,) (first index on ties; NaN counts as the
    smallest, as in torch.argmin), and the fp32 distances (M,) when `return_distance`.
    """
    z = z.float()
    e = codebook.float()
    if l2_normalize:
        z = F.normalize(z, dim=-1)
        e = F.normalize(e, dim=-1)
    d = torch.sum(z ** 2, dim=1, keepdim=True) + torch.sum(e ** 2, dim=1) - 2 * torch.einsum("bd,dn->bn", z, e.T)
    indices = torch.argmin(d, dim=1)
    if return_distance:
        return indices, d.gather(1, indices.unsqueeze(1)).squeeze(1)
    return indices


# ---- concat_attention ----------------------------------------------------------------------------------

def split_packed_qkv(qkv: torch.Tensor, num_heads: int):
    """Split packed (B, L, 3*H*d) (nn.MultiheadAttention's in_proj layout: [q | k | v], head h in
    columns h*d:(h+1)*d of each part) into q, k, v of shape (B, H, L, d) (views, no copy)."""
    batch, length, width = qkv.shape
    head_dim = width // (3 * num_heads)
    parts = qkv.view(batch, length, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    return parts[0], parts[1], parts[2]


def concat_attention_torch(qkv: torch.Tensor, shared_qkv: Optional[torch.Tensor] = None, *, num_heads: int,
                           shared_first: bool = True, query_rows: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """Attention over cat([shared, per-sample]) (or the reverse): materialise the concatenated
    sequence (expand + cat), split heads, SDPA (scale 1/sqrt(d)), merge heads.

    qkv (B, Lp, 3*H*d), shared_qkv (Ls, 3*H*d) or None; query_rows (start, stop) of the logical
    sequence (default all). Returns (B, stop - start, H*d).
    """
    batch = qkv.shape[0]
    if shared_qkv is not None and shared_qkv.shape[0] > 0:
        shared = shared_qkv.unsqueeze(0).expand(batch, -1, -1)
        seq = torch.cat([shared, qkv] if shared_first else [qkv, shared], dim=1)
    else:
        seq = qkv
    start, stop = (0, seq.shape[1]) if query_rows is None else query_rows
    q, k, v = split_packed_qkv(seq, num_heads)
    out = F.scaled_dot_product_attention(q[:, :, start:stop], k, v)
    return out.transpose(1, 2).reshape(batch, stop - start, qkv.shape[2] // 3)


# ---- maskgit_step --------------------------------------------------------------------------------------

def gumbel(u: torch.Tensor) -> torch.Tensor:
    """-log(-log(u)) with the official clamps at 1e-20 (so 0 and 1 give finite values)."""
    return -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))


def maskgit_step_torch(cond_logits: torch.Tensor, uncond_logits: Optional[torch.Tensor],
                       ids: torch.Tensor, sample_noise: torch.Tensor, confidence_noise: torch.Tensor, *,
                       mask_id: int, guidance_scale: float = 0.0, guidance_anchor: str = "cond",
                       softmax_temperature: Optional[float] = None, gumbel_temperature: float = 0.0,
                       schedule_mask_len: int = 1, last_step: bool = False) -> torch.Tensor:
    """One step of the official sampler (bytedance/1d-tokenizer `ImageBert.generate`), fp32 math.

    cond / uncond logits (B, K, V) (uncond None: no guidance, the official `cfg_scale == 0`
    branch; anchor "cond": cond + (cond - uncond) * s, "uncond": uncond + (cond - uncond) * s);
    ids (B, K) with mask_id marking masked tokens; uniform noise (B, K, V) and (B, K).
    Returns the next ids (B, K) int64.
    """
    logits = cond_logits.float()
    if uncond_logits is not None:
        uncond = uncond_logits.float()
        if guidance_anchor == "cond":
            logits = logits + (logits - uncond) * guidance_scale
        else:
            logits = uncond + (logits - uncond) * guidance_scale
    if softmax_temperature is not None:
        logits = logits / softmax_temperature
    is_mask = ids == mask_id
    sampled_ids = (logits + gumbel_temperature * gumbel(sample_noise)).argmax(dim=-1)
    sampled_logits = torch.gather(logits, -1, sampled_ids.unsqueeze(-1)).squeeze(-1)
    sampled_ids = torch.where(is_mask, sampled_ids, ids)
    sampled_logits = torch.where(is_mask, sampled_logits, torch.inf)
    if last_step:
        return sampled_ids
    mask_len = torch.clamp(torch.minimum(is_mask[0].sum() - 1,
                                         torch.tensor(schedule_mask_len, device=ids.device)), min=1)
    confidence = sampled_logits + gumbel_temperature * gumbel(confidence_noise)
    sorted_confidence = torch.sort(confidence, dim=-1).values
    cut_off = sorted_confidence.gather(-1, (mask_len - 1).view(1, 1).expand(ids.shape[0], 1))
    return torch.where(confidence <= cut_off, torch.full_like(ids, mask_id), sampled_ids)


_MASK64 = 0xFFFFFFFFFFFFFFFF
SPLITMIX64_GAMMA = 0x9E3779B97F4A7C15


def splitmix64(z: int) -> int:
    """The splitmix64 output function (a bijection of 64-bit integers) on a Python int: the project's one
    splitmix64 (titok.noise builds the sample stream on it)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def torch_noise_seed(seed: int, offset: int) -> int:
    """The torch.Generator seed for (seed, offset): two splitmix64 steps (state += gamma, then the output
    function), below 2^63."""
    first = splitmix64((seed & _MASK64) + SPLITMIX64_GAMMA)
    return splitmix64((first ^ offset) + SPLITMIX64_GAMMA) >> 1


def torch_noise(cond_logits: torch.Tensor, seed: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample_noise (B, K, V), confidence_noise (B, K)) fp32 uniforms drawn in the official order
    (`uniform` over the logits' shape, then over (B, K)) from a generator on the logits' device
    seeded with `torch_noise_seed(seed, offset)`."""
    gen = torch.Generator(device=cond_logits.device)
    gen.manual_seed(torch_noise_seed(seed, offset))
    u_sample = torch.rand(cond_logits.shape, generator=gen, device=cond_logits.device, dtype=torch.float32)
    u_conf = torch.rand(cond_logits.shape[:2], generator=gen, device=cond_logits.device, dtype=torch.float32)
    return u_sample, u_conf


# ---- masked_lm_loss ------------------------------------------------------------------------------------

def masked_lm_loss_torch(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                         targets: torch.Tensor, weights: torch.Tensor, label_smoothing: float = 0.1) -> torch.Tensor:
    """The official MLM loss over the generator's final projection, materialising the (M, V) logits.

    hidden (M, D), weight (V, D), bias (V,) or None, targets (M,) int, weights (M,) per-row weights.
    Returns sum_m weights_m * CE_m / (sum_m weights_m + 1e-8), CE with label smoothing (torch's rule:
    (1 - s) * nll + s * mean over classes of -log p), computed in the logits' dtype as the official is.
    """
    logits = F.linear(hidden, weight, bias)
    per_row = F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction="none")
    weights = weights.to(per_row)
    return (per_row * weights).sum() / (weights.sum() + 1e-8)
