"""The reference MaskGIT sampler: the official `ImageBert.generate`, quirks and random-number order included.

A sampling run is split in two parts so that the fast path can reuse it:
- `sampling_schedule(...)`: every per-step scalar (temperatures, guidance scale,
  re-mask count), computed on the host from the step index alone, with the
  official arithmetic (the power-cosine scale in fp32 torch ops, as the official
  code computes it): nothing in it reads a device value;
- the step itself: `titok_kernels.maskgit_step`, a pure function of
  (logits, ids, noise, schedule values).

Random-number order per step (shared/reference/README.md): one `torch.rand(B)`
per generator forward (the class-drop mask; two forwards with guidance), then
uniform noise over (B, K, V) for the sampled ids, then over (B, K) for the
confidence.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from titok_kernels.maskgit_step import maskgit_step
from titok.configs import GUIDANCE_DECAYS, SamplerConfig
from titok.errors import TiTokInputError


@dataclasses.dataclass(frozen=True)
class StepSchedule:
    """The host-side scalars of one sampling step."""

    step: int
    gumbel_temperature: float        # randomize_temperature annealed linearly to 0
    guidance_scale: float | None     # None: no guidance this step (one conditional forward)
    guidance_anchor: str             # "cond" (constant / linear) or "uncond" (power-cosine)
    softmax_temperature: float | None
    schedule_mask_len: int           # floor(K * arccos(ratio) / (pi / 2))
    last_step: bool


def sampling_schedule(cfg: SamplerConfig, seq_len: int) -> list[StepSchedule]:
    """Per-step scalars of the official sampler, for `cfg.num_steps` steps over `seq_len` tokens."""
    if cfg.guidance_decay not in GUIDANCE_DECAYS:
        raise ValueError(f"guidance_decay must be one of {GUIDANCE_DECAYS}, got {cfg.guidance_decay!r}")
    n = cfg.num_steps
    cfg_scale = cfg.guidance_scale if cfg.guidance_decay == "constant" else 0.0
    steps = []
    for step in range(n):
        ratio = 1.0 * (step + 1) / n
        if cfg.guidance_decay == "power-cosine":
            # Official: fp32 torch arithmetic with the exponent as a 1-element tensor.
            pow_t = torch.ones(1) * cfg.guidance_scale_pow
            scale_step = (1 - torch.cos(((step / n) ** pow_t) * torch.pi)) * 1 / 2
            cfg_scale = float(((cfg.guidance_scale - 1) * scale_step + 1).item())
        mask_ratio = np.arccos(ratio) / (math.pi * 0.5)
        steps.append(StepSchedule(
            step=step,
            gumbel_temperature=cfg.randomize_temperature * (1.0 - ratio),
            guidance_scale=cfg_scale if cfg_scale != 0 else None,
            guidance_anchor="uncond" if cfg.guidance_decay == "power-cosine" else "cond",
            softmax_temperature=(0.5 + 0.8 * (1 - ratio)) if cfg.softmax_temperature_annealing else None,
            schedule_mask_len=int(np.floor(seq_len * mask_ratio)),
            last_step=step == n - 1,
        ))
        if cfg.guidance_decay == "linear":
            cfg_scale = ratio * cfg.guidance_scale
    return steps


def check_class_ids(condition: torch.Tensor, num_classes: int) -> None:
    """Class ids must be an integer tensor (B,) within [0, num_classes): a clear error otherwise."""
    if not isinstance(condition, torch.Tensor) or condition.dim() != 1:
        raise TiTokInputError(f"class ids must be a 1-D tensor, got {getattr(condition, 'shape', type(condition))}")
    if condition.dtype.is_floating_point or condition.dtype == torch.bool:
        raise TiTokInputError(f"class ids must be integers, got dtype {condition.dtype}")
    if condition.numel() == 0:
        raise TiTokInputError("class ids are empty: give at least one class")
    lo, hi = int(condition.min()), int(condition.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise TiTokInputError(f"class id {bad} is outside 0..{num_classes - 1}")


@torch.no_grad()
def generate(generator, condition: torch.Tensor, cfg: SamplerConfig, *, noise=None,
             backend: str = "auto") -> torch.Tensor:
    """Official MaskGIT sampling: class ids (B,) -> token ids (B, K).

    With `noise=None` the global torch RNG is used in the official order: after
    `torch.manual_seed(s)` on CPU this returns exactly the official sampler's ids.
    `noise` may instead give each step's (sample noise (B, K, V), confidence noise (B, K)).
    """
    check_class_ids(condition, generator.cfg.num_classes)
    seq_len, mask_id = generator.cfg.image_seq_len, generator.mask_token_id
    ids = torch.full((condition.shape[0], seq_len), mask_id, device=condition.device, dtype=torch.long)
    for s in sampling_schedule(cfg, seq_len):
        cond_logits = generator(ids, condition, cond_drop_prob=0.0)
        uncond_logits = generator(ids, condition, cond_drop_prob=1.0) if s.guidance_scale is not None else None
        if noise is None:
            sample_noise = torch.empty_like(cond_logits, dtype=torch.float).uniform_(0, 1)
            confidence_noise = torch.empty(ids.shape, device=ids.device, dtype=torch.float).uniform_(0, 1)
        else:
            sample_noise, confidence_noise = noise[s.step]
        ids = maskgit_step(cond_logits, uncond_logits, ids, mask_id=mask_id,
                           guidance_scale=s.guidance_scale or 0.0, guidance_anchor=s.guidance_anchor,
                           softmax_temperature=s.softmax_temperature, gumbel_temperature=s.gumbel_temperature,
                           schedule_mask_len=s.schedule_mask_len, last_step=s.last_step,
                           noise=(sample_noise, confidence_noise), backend=backend)
    return ids
