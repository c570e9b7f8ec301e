"""MaskGIT-VQGAN decoder: turns TiTok's proxy codes (the 2D VQGAN's code ids, or soft codes) into pixels.

Same module tree and state-dict names as the official code (itself from open-muse),
including its quirks, which the released weights depend on:
- convs are "same"-padded (TF style: extra padding goes right/bottom);
- a ResnetBlock whose channel count changes applies its 1x1 `nin_shortcut` to the
  block's *output*, not to its input (so the shortcut maps out->out channels);
- no attention layers; GroupNorm(32, eps 1e-6) + SiLU; nearest-neighbour 2x upsampling.
Only the codebook and the decoder are here: TiTok's two-stage models and the
MaskGIT baseline (titok_bench.baselines.maskgit) use nothing else of the VQGAN.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CHANNEL_MULT = (1, 1, 2, 2, 4)
NUM_RES_BLOCKS = 2
Z_CHANNELS = 256
NUM_CODES = 1024


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (stride 1 everywhere here, so it pads k-1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride),
                                 reversed(self.dilation)):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


class ResnetBlock(nn.Module):
    inplace_activations = False  # the fast runtime's copy sets it: SiLU and the residual add in place, same values

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = nn.GroupNorm(32, in_channels, eps=1e-6)
        self.conv1 = Conv2dSame(in_channels, out_channels, kernel_size=3, bias=False)
        self.norm2 = nn.GroupNorm(32, out_channels, eps=1e-6)
        self.conv2 = Conv2dSame(out_channels, out_channels, kernel_size=3, bias=False)
        if in_channels != out_channels:
            self.nin_shortcut = Conv2dSame(out_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        h = self.conv1(F.silu(self.norm1(x), inplace=self.inplace_activations))
        h = self.conv2(F.silu(self.norm2(h), inplace=self.inplace_activations))
        if self.in_channels != self.out_channels:
            residual = self.nin_shortcut(h)  # official quirk: shortcut of the output, not of x
        return h.add_(residual) if self.inplace_activations else h + residual


class UpsamplingBlock(nn.Module):
    def __init__(self, hidden: int, level: int):
        super().__init__()
        last = len(CHANNEL_MULT) - 1
        block_in = hidden * CHANNEL_MULT[level if level == last else level + 1]
        block_out = hidden * CHANNEL_MULT[level]
        self.block = nn.ModuleList(
            [ResnetBlock(block_in if i == 0 else block_out, block_out) for i in range(NUM_RES_BLOCKS)])
        self.add_upsample = level != 0
        if self.add_upsample:
            self.upsample_conv = Conv2dSame(block_out, block_out, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for res in self.block:
            x = res(x)
        if self.add_upsample:
            x = self.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class PixelDecoder(nn.Module):
    """Latents (B, 256, h, w) -> images (B, 3, 16h, 16w), unclamped."""

    inplace_activations = False  # as ResnetBlock's

    def __init__(self, hidden: int = 128):
        super().__init__()
        block_in = hidden * CHANNEL_MULT[-1]
        self.conv_in = Conv2dSame(Z_CHANNELS, block_in, kernel_size=3)
        self.mid = nn.ModuleList([ResnetBlock(block_in, block_in) for _ in range(NUM_RES_BLOCKS)])
        # Stored by level (up.0 = full resolution), run from the coarsest level up.
        self.up = nn.ModuleList([UpsamplingBlock(hidden, i) for i in range(len(CHANNEL_MULT))])
        self.norm_out = nn.GroupNorm(32, hidden * CHANNEL_MULT[0], eps=1e-6)
        self.conv_out = Conv2dSame(hidden * CHANNEL_MULT[0], 3, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.mid:
            x = block(x)
        for block in reversed(self.up):
            x = block(x)
        return self.conv_out(F.silu(self.norm_out(x), inplace=self.inplace_activations))


class PixelQuantizer(nn.Module):
    """The VQGAN codebook (1024 x 256): code -> latent."""

    def __init__(self, num_codes: int = NUM_CODES, dim: int = Z_CHANNELS):
        super().__init__()
        self.embedding = nn.Embedding(num_codes, dim)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (B, h, w) -> latents (B, 256, h, w)."""
        return self.embedding(indices).permute(0, 3, 1, 2)


class VQGANTokenDecoder(nn.Module):
    """MaskGIT-VQGAN codes on a square grid (B, g*g) -> pixels: the token decoder of the MaskGIT baseline.

    Gives what `titok.pipeline.Pipeline` needs of a decoder, like a TiTok tokenizer does, so the
    baseline is a `Pipeline` (MaskGIT-ViT generator over these codes) and not a second sampling loop.
    """

    def __init__(self, grid: int, num_codes: int = NUM_CODES, hidden: int = 128):
        super().__init__()
        self.grid = grid
        self.quantize = PixelQuantizer(num_codes, Z_CHANNELS)
        self.pixel_decoder = PixelDecoder(hidden)

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def codebook_size(self) -> int:
        return self.quantize.embedding.num_embeddings

    @property
    def image_size(self) -> int:
        return 16 * self.grid  # the decoder upsamples 16x

    def check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        from titok.checks import check_tokens

        return check_tokens(tokens, self.num_tokens, self.codebook_size)

    def tokens_to_latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """Code ids (B, g*g) -> latents (B, 256, g, g): a codebook lookup (MaskGIT decodes hard codes)."""
        return self.quantize.decode(tokens.reshape(tokens.shape[0], self.grid, self.grid))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.pixel_decoder(latents)

    def decode_stages(self, latents: torch.Tensor) -> dict:
        return {"pixel_decoder": lambda: self.pixel_decoder(latents)}
