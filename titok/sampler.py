"""The reference MaskGIT sampler: the official `ImageBert.generate`, quirks and random-number order included.

Pure torch on every device: the eager runtime's loop (`titok.runtimes.EagerRuntime.sample`), each
step the reference step of `titok.scheduler` (never a Triton kernel). Random-number order per step, as the official sampler: one `torch.rand(B)` per
generator forward (the class-drop mask; two forwards with guidance), then uniform noise over
(B, K, V) for the sampled ids, then over (B, K) for the confidence.
"""
from __future__ import annotations

import torch

from titok.configs import SamplerConfig
from titok.errors import TiTokInputError
from titok.runtimes import EagerRuntime
from titok.scheduler import MaskGITScheduler, sampling_schedule

__all__ = ["check_class_ids", "generate", "sampling_schedule"]


def check_class_ids(condition: torch.Tensor, num_classes: int) -> None:
    """Class ids must be an integer tensor (B,) within [0, num_classes): a clear error otherwise.

    One device-to-host copy for a CUDA tensor (the bounds check), none for a CPU tensor."""
    if not isinstance(condition, torch.Tensor) or condition.dim() != 1:
        raise TiTokInputError(f"class ids must be a 1-D tensor, got {getattr(condition, 'shape', type(condition))}")
    if condition.dtype.is_floating_point or condition.dtype == torch.bool or condition.is_complex():
        raise TiTokInputError(f"class ids must be integers, got dtype {condition.dtype}")
    if condition.numel() == 0:
        raise TiTokInputError("class ids are empty: give at least one class")
    lo, hi = torch.stack([condition.min(), condition.max()]).tolist()
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise TiTokInputError(f"class id {bad} is outside 0..{num_classes - 1}")


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
