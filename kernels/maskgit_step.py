"""One MaskGIT sampling step: guidance combine, Gumbel-max sample, confidence, cut-off, re-mask.

Torch reference (this file's `maskgit_step_torch`): the exact arithmetic of the
official TiTok sampler (bytedance/1d-tokenizer, `ImageBert.generate`), one step,
as a pure function of (logits, ids, noise, schedule values):

    logits  = cond                                   (no guidance)
            | cond   + (cond - uncond) * s           (anchor "cond": constant / linear decay)
            | uncond + (cond - uncond) * s           (anchor "uncond": power-cosine decay)
    logits /= softmax_temperature                    (optional annealing)
    g(u)    = -log(max(-log(max(u, 1e-20)), 1e-20))  (Gumbel from uniform noise)
    sampled = argmax(logits + t * g(u_sample))       (first index on ties)
    conf    = logits[sampled] where masked else +inf, then + t * g(u_conf)
    n       = max(1, min(#masked in row 0 - 1, schedule_mask_len))   (row 0 for all rows)
    cut     = n-th smallest conf of each row
    next    = sampled if last step else (mask_id where conf <= cut else sampled)

Noise order: the official sampler draws `u_sample` (B, K, V) then `u_conf` (B, K)
with `uniform_(0, 1)` each step; passing them in reproduces it exactly.
"""
from __future__ import annotations

import torch

GUIDANCE_ANCHORS = ("cond", "uncond")


def _gumbel(u: torch.Tensor) -> torch.Tensor:
    """-log(-log(u)) with the official clamps at 1e-20 (so 0 and 1 give finite values)."""
    return -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))


def maskgit_step_torch(cond_logits: torch.Tensor, uncond_logits: torch.Tensor | None,
                       ids: torch.Tensor, sample_noise: torch.Tensor, confidence_noise: torch.Tensor, *,
                       mask_id: int, guidance_scale: float = 0.0, guidance_anchor: str = "cond",
                       softmax_temperature: float | None = None, gumbel_temperature: float = 0.0,
                       schedule_mask_len: int = 1, last_step: bool = False) -> torch.Tensor:
    """Reference step, numerically the official code (fp32 math). Returns the next ids (B, K) int64.

    `uncond_logits=None` means no guidance (the official `cfg_scale == 0` branch).
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
    sampled_ids = (logits + gumbel_temperature * _gumbel(sample_noise)).argmax(dim=-1)
    sampled_logits = torch.gather(logits, -1, sampled_ids.unsqueeze(-1)).squeeze(-1)
    sampled_ids = torch.where(is_mask, sampled_ids, ids)
    sampled_logits = torch.where(is_mask, sampled_logits, torch.inf)
    if last_step:
        return sampled_ids
    mask_len = torch.clamp(torch.minimum(is_mask[0].sum() - 1,
                                         torch.tensor(schedule_mask_len, device=ids.device)), min=1)
    confidence = sampled_logits + gumbel_temperature * _gumbel(confidence_noise)
    sorted_confidence = torch.sort(confidence, dim=-1).values
    cut_off = sorted_confidence.gather(-1, (mask_len - 1).view(1, 1).expand(ids.shape[0], 1))
    return torch.where(confidence <= cut_off, torch.full_like(ids, mask_id), sampled_ids)
