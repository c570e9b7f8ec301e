"""The reference MaskGIT sampler: the official `ImageBert.generate`, quirks and random-number order included.

Pure torch on every device: the eager runtime's loop (`titok.runtimes.EagerRuntime.sample`), each
step the reference step of `titok.scheduler` (never a Triton kernel). Random-number order per step, as the official sampler: one `torch.rand(B)` per
generator forward (the class-drop mask; two forwards with guidance), then uniform noise over
(B, K, V) for the sampled ids, then over (B, K) for the confidence.
"""
from __future__ import annotations

import torch

from titok.checks import check_class_ids  # re-exported: the class-id check lives in titok.checks
from titok.configs import SamplerConfig
from titok.runtimes import EagerRuntime
from titok.scheduler import MaskGITScheduler, sampling_schedule

__all__ = ["check_class_ids", "generate", "sampling_schedule"]


@torch.no_grad()
def generate(generator, condition: torch.Tensor, cfg: SamplerConfig | MaskGITScheduler | None = None, *,
             noise=None) -> torch.Tensor:
    """Official MaskGIT sampling: class ids (B,) -> token ids (B, K).

    cfg: the sampler settings (default: the generator's own, `generator.cfg.sampler`) or a scheduler.
    With `noise=None` the global torch RNG is used in the official order: after
    `torch.manual_seed(s)` on CPU this returns exactly the official sampler's ids.
    `noise` may instead give each step's (sample noise (B, K, V), confidence noise (B, K)).
    """
    check_class_ids(condition, generator.cfg.num_classes)
    scheduler = cfg if isinstance(cfg, MaskGITScheduler) else MaskGITScheduler.for_generator(generator, cfg)
    return EagerRuntime(None, generator, scheduler, dtype=torch.float32, device=condition.device).sample(
        condition, noise=noise)
