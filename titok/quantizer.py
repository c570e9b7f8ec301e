"""TiTok's quantizers: the vector quantizer (discrete tokens) and the diagonal Gaussian (VAE tokens).

The vector quantizer always runs in fp32 (autocast off), as the official one:
optional l2 normalisation of z and of the codebook, distance |z|^2 + |e|^2 - 2 z.e,
argmin (first index on ties), and the looked-up entry re-normalised. The nearest-code search
is the pure-torch reference (`titok_kernels.reference.nearest_code_torch`, the official
arithmetic) unless a caller passes another search (the fast runtime passes the fused op).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from titok_kernels.reference import nearest_code_torch


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, token_size: int, use_l2_norm: bool):
        super().__init__()
        self.codebook_size, self.token_size, self.use_l2_norm = codebook_size, token_size, use_l2_norm
        self.embedding = nn.Embedding(codebook_size, token_size)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Token ids (any shape) -> codebook vectors (..., token_size), re-normalised when l2."""
        z = self.embedding(indices)
        return F.normalize(z, dim=-1) if self.use_l2_norm else z

    @torch.autocast("cuda", enabled=False)
    def forward(self, z: torch.Tensor, nearest=nearest_code_torch) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, C, 1, K) -> (z_quantized (B, C, 1, K) fp32, indices (B, K) int64).

        nearest(rows, codebook, l2_normalize=...) -> indices: the nearest-code search."""
        z = z.float()
        b, c, h, w = z.shape
        rows = z.permute(0, 2, 3, 1).reshape(-1, c)
        indices = nearest(rows, self.embedding.weight, l2_normalize=self.use_l2_norm)
        z_q = self.lookup(indices).view(b, h, w, c)
        z = z.permute(0, 2, 3, 1)
        if self.use_l2_norm:
            z = F.normalize(z, dim=-1)
        # The official straight-through form z + (z_q - z), kept for bit-exact outputs.
        z_q = z + (z_q - z)
        return z_q.permute(0, 3, 1, 2).contiguous(), indices.view(b, h * w)


def gaussian_tokens(moments: torch.Tensor, *, sample: bool = False,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """VAE encoder output (B, 2C, 1, K) -> tokens (B, C, 1, K): the mean, or a sample mean + std * eps.

    Official DiagonalGaussianDistribution: channels split [mean | logvar], logvar clamped to [-30, 20].
    """
    mean, logvar = torch.chunk(moments.float(), 2, dim=1)
    if not sample:
        return mean
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + std * eps
