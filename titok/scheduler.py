"""The MaskGIT scheduler: the official per-step schedule, and the one place that maps a step to the step op.

`sampling_schedule` computes every per-step scalar (temperatures, guidance scale, re-mask
count) on the host from the step index alone, with the official arithmetic (the
power-cosine scale in fp32 torch ops, as the official code computes it): nothing in it
reads a device value, so a sampling loop built on it has no host synchronisation.

`MaskGITScheduler.step` turns one `StepSchedule` into a call of the step op: the pure-torch
reference (`titok_kernels.reference.maskgit_step_torch`, the official math) for the eager
runtimes, or the fused op (`titok_kernels.maskgit_step.maskgit_step`, Triton where it
applies) for the fast runtime. Every runtime and benchmark goes through it.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from titok.configs import GUIDANCE_DECAYS, SamplerConfig


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

    @property
    def guided(self) -> bool:
        return self.guidance_scale is not None


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


class MaskGITScheduler:
    """The schedule of one sampler configuration over `seq_len` tokens, and its step."""

    def __init__(self, config: SamplerConfig, seq_len: int, mask_token_id: int):
        self.config, self.seq_len, self.mask_token_id = config, seq_len, mask_token_id
        self.steps = sampling_schedule(config, seq_len)

    @classmethod
    def for_generator(cls, generator, config: SamplerConfig | None = None) -> "MaskGITScheduler":
        """The generator's own sampling defaults (`generator.cfg.sampler`) unless `config` is given."""
        return cls(config or generator.cfg.sampler, generator.cfg.image_seq_len, generator.cfg.mask_token_id)

    def with_config(self, **changes) -> "MaskGITScheduler":
        """The same scheduler with some sampler settings changed (e.g. num_steps=2 for a projection)."""
        return MaskGITScheduler(dataclasses.replace(self.config, **changes), self.seq_len, self.mask_token_id)

    def __iter__(self):
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def generator_forwards(self) -> int:
        """Generator forwards per image of the official loop: two on a guided step, one otherwise."""
        return sum(2 if s.guided else 1 for s in self.steps)

    def initial_ids(self, batch: int, device) -> torch.Tensor:
        """Every token masked: the start of sampling."""
        return torch.full((batch, self.seq_len), self.mask_token_id, device=device, dtype=torch.long)

    def step_arguments(self, s: StepSchedule) -> dict:
        """The step op's scalar arguments for step `s` (the only place this mapping is written)."""
        return dict(mask_id=self.mask_token_id, guidance_scale=s.guidance_scale or 0.0,
                    guidance_anchor=s.guidance_anchor, softmax_temperature=s.softmax_temperature,
                    gumbel_temperature=s.gumbel_temperature, schedule_mask_len=s.schedule_mask_len,
                    last_step=s.last_step)

    def step(self, s: StepSchedule, cond: torch.Tensor, uncond: torch.Tensor | None, ids: torch.Tensor, *,
             noise: tuple[torch.Tensor, torch.Tensor] | None = None, seed=None, fused: bool = False) -> torch.Tensor:
        """Next ids after step `s`.

        fused=False: the pure-torch reference step with the given uniforms `noise` (required).
        fused=True: `titok_kernels.maskgit_step` (Triton where it applies) with `noise`, or with in-kernel
        noise from `seed` (an int or a 1-element int64 device tensor) and the step index as offset.
        """
        args = self.step_arguments(s)
        if not fused:
            from titok_kernels.reference import maskgit_step_torch

            if noise is None:
                raise ValueError("the reference step needs its uniform noise (sample noise, confidence noise)")
            return maskgit_step_torch(cond, uncond, ids, *noise, **args)
        from titok_kernels.maskgit_step import maskgit_step

        draw = dict(noise=noise) if noise is not None else dict(seed=seed, offset=s.step)
        return maskgit_step(cond, uncond, ids, **args, **draw)

    def check_noise(self, noise, batch: int, vocab: int) -> None:
        """Given noise must hold one (sample (B, K, V), confidence (B, K)) pair per step (`titok.checks`)."""
        from titok.checks import check_noise

        check_noise(noise, len(self.steps), batch, self.seq_len, vocab)
