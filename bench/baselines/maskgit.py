"""MaskGIT baseline: the MaskGIT-ViT generator over 2D MaskGIT-VQGAN codes, decoded by the MaskGIT-VQGAN decoder.

The paper's MaskGIT rows (Table 1: 256x256, 256 tokens, 8 steps, 50.5 samples/s; Table 2:
512x512, 1024 tokens, 12 steps, 3.9 samples/s) use the same generator as TiTok-L-32 (BERT
layout, hidden 768, 24 layers, 16 heads, MLP 3072) over the 1024-code VQGAN codebook; only the
tokenizer differs. Here:
- generator: `GeneratorConfig("ViT", 768, 24, 16, 3072, image_seq_len=256 | 1024, codebook_size=1024)`;
- sampler: TiTok-L-32's settings (linear guidance decay, scale 4.5, Gumbel temperature 9.5,
  softmax-temperature annealing), 8 steps at 256px (15 generator forwards per image), 12 at
  512px (23 forwards). The original MaskGIT sampled without classifier-free guidance (8 / 12
  forwards): with these settings the generator costs about twice as much as in the MaskGIT
  paper, the price of running the same sampler as TiTok;
- decode: code ids (B, 16, 16) or (B, 32, 32) -> VQGAN codebook lookup -> `PixelDecoder` -> pixels
  (the MaskGIT-VQGAN decoder of `titok.maskgit_vqgan`, the one TiTok's two-stage models end with).

The baseline IS a `titok.pipeline.Pipeline`: `Pipeline(*build_maskgit(cfg), mode=...)` composes
`VQGANTokenDecoder(grid, hidden=...)` (codebook lookup + the MaskGIT-VQGAN decoder) with the
generator and its `MaskGITScheduler`, so it runs the same runtimes as TiTok ("reference",
"compile", "fast", CUDA graphs) and no sampling loop of its own.

FLOPs per image (the count of `titok.flops`): generator forwards x `generator_forward_flops`
(K + 1 rows each), plus the MaskGIT-VQGAN decoder's convolutions (`pixel_decoder_flops` without
its softmax x codebook product: MaskGIT decodes hard codes, an embedding lookup).
"""
from __future__ import annotations

import dataclasses
import math

import torch

from titok.configs import GeneratorConfig, SamplerConfig, TokenizerConfig
from titok.flops import generator_forward_flops, generator_forwards, linear_flops, pixel_decoder_flops
from titok.maskgit_vqgan import Z_CHANNELS, VQGANTokenDecoder


@dataclasses.dataclass(frozen=True)
class MaskGITConfig:
    generator: GeneratorConfig        # its `sampler` holds the baseline's sampling settings
    pixel_hidden_channels: int = 128

    @property
    def sampler(self) -> SamplerConfig:
        return self.generator.sampler

    @property
    def grid(self) -> int:
        side = math.isqrt(self.generator.image_seq_len)
        if side * side != self.generator.image_seq_len:
            raise ValueError(f"image_seq_len {self.generator.image_seq_len} is not a square grid")
        return side

    @property
    def image_size(self) -> int:
        return 16 * self.grid


_L32_SAMPLER = dict(guidance_scale=4.5, guidance_decay="linear", randomize_temperature=9.5)


def maskgit_config(image_size: int = 256) -> MaskGITConfig:
    """The paper's MaskGIT baseline at 256 (16x16 codes, 8 steps) or 512 (32x32 codes, 12 steps)."""
    if image_size not in (256, 512):
        raise ValueError(f"the MaskGIT baseline exists at 256 and 512 pixels, got {image_size}")
    grid, steps = (16, 8) if image_size == 256 else (32, 12)
    return MaskGITConfig(GeneratorConfig("ViT", 768, 24, 16, 3072, image_seq_len=grid * grid, codebook_size=1024,
                                         sampler=SamplerConfig(steps, **_L32_SAMPLER)))


# Small configuration for tests: 4x4 codes over a 64-code book, 64x64 pixels.
TINY_MASKGIT = MaskGITConfig(GeneratorConfig("ViT", 64, 2, 4, 128, image_seq_len=16, codebook_size=64, num_classes=10,
                                             sampler=SamplerConfig(4, **_L32_SAMPLER)), pixel_hidden_channels=32)


def maskgit_flops(cfg: MaskGITConfig) -> dict:
    """Per-image FLOPs by stage (see the module docstring)."""
    forwards = generator_forwards(cfg.sampler, cfg.generator.image_seq_len)
    pixel_cfg = TokenizerConfig(image_size=cfg.image_size, enc_size="tiny", dec_size="tiny",
                                pixel_hidden_channels=cfg.pixel_hidden_channels)  # only its proxy grid and width count
    side = pixel_cfg.proxy_grid
    pixel = pixel_decoder_flops(pixel_cfg) - linear_flops(side * side, 1024, Z_CHANNELS)
    stages = {"generator": forwards * generator_forward_flops(cfg.generator), "vit_decoder": 0, "pixel_decoder": pixel}
    return {"generator_forwards": forwards, **stages, "total": sum(stages.values())}


def build_maskgit(cfg: MaskGITConfig, device: torch.device | str = "cpu", seed: int = 0):
    """(decoder, generator) with random weights (titok's deterministic init), on `device`, eval: the decoder is
    a `VQGANTokenDecoder` (codebook + MaskGIT-VQGAN decoder), the generator a MaskGIT-ViT over its codes."""
    from titok.loading import build_generator_model, init_random_weights

    decoder = VQGANTokenDecoder(cfg.grid, num_codes=cfg.generator.codebook_size, hidden=cfg.pixel_hidden_channels)
    decoder = init_random_weights(decoder, seed + 1)
    generator = init_random_weights(build_generator_model(cfg.generator, "cpu"), seed)
    return tuple(m.to(device).eval().requires_grad_(False) for m in (decoder, generator))

