"""TiTok's ViT encoder and decoder, with the official module tree and state-dict names.

Blocks are pre-LN with `nn.MultiheadAttention`-style packed projections
(`attn.in_proj_weight` [3W, W] laid out [q | k | v]); this code runs them
batch-first, which is the same math as the official sequence-first layout.

Encoder input:  [cls + pos0, patches + pos(1..g*g), latent_tokens + latent_pos] -> ln_pre -> blocks
                -> last K rows -> ln_post -> 1x1 conv to token_size.
Decoder input:  [cls + pos0, mask_token x g*g + pos(1..g*g), embed(z_q) + latent_pos] -> ln_pre -> blocks
                -> rows 1..g*g -> ln_post -> head (two-stage: proxy-code logits; single-stage: pixels).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from titok.configs import VIT_SIZES, TokenizerConfig


class PackedSelfAttention(nn.Module):
    """Self-attention with the parameter names of nn.MultiheadAttention (in_proj_weight/bias, out_proj)."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Packed (B, L, 3W) -> attention output (B, L, W) before out_proj."""
        b, seq, three_w = qkv.shape
        h = self.num_heads
        q, k, v = qkv.view(b, seq, 3, h, three_w // (3 * h)).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(b, seq, three_w // 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        return self.out_proj(self.attend(qkv))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); MLP ratio 4, exact GELU."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = PackedSelfAttention(width, num_heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def _transformer(width: int, layers: int, heads: int) -> nn.ModuleList:
    return nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])


class TiTokEncoder(nn.Module):
    """Image (B, 3, H, W) + learned latent tokens -> latent features (B, token_size[*2 for vae], 1, K)."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        width, layers, heads = VIT_SIZES[cfg.enc_size]
        self.width, self.grid = width, cfg.enc_grid
        self.num_latent_tokens = cfg.num_latent_tokens
        self.out_channels = cfg.token_size * (2 if cfg.quantize_mode == "vae" else 1)
        # Parameters first, then modules, in the official order (it fixes the state-dict key order).
        self.class_embedding = nn.Parameter(torch.empty(1, width))
        self.positional_embedding = nn.Parameter(torch.empty(self.grid ** 2 + 1, width))
        self.latent_token_positional_embedding = nn.Parameter(torch.empty(cfg.num_latent_tokens, width))
        self.patch_embed = nn.Conv2d(3, width, kernel_size=cfg.enc_patch_size, stride=cfg.enc_patch_size)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = _transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.conv_out = nn.Conv2d(width, self.out_channels, kernel_size=1)

    def embed_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The per-image rows before ln_pre: [cls + pos0, patches + pos(1..g*g)] (B, 1 + g*g, W)."""
        b = pixel_values.shape[0]
        x = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.to(x.dtype).expand(b, -1, -1), x], dim=1)
        return x + self.positional_embedding.to(x.dtype)

    def latent_rows(self, latent_tokens: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The image-independent latent rows before ln_pre: (K, W)."""
        return latent_tokens.to(dtype) + self.latent_token_positional_embedding.to(dtype)

    def embed(self, pixel_values: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        """The input sequence before ln_pre: (B, 1 + g*g + K, W)."""
        x = self.embed_image(pixel_values)
        latents = self.latent_rows(latent_tokens, x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([x, latents], dim=1)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Transformer output (B, L, W) -> (B, C, 1, K) through ln_post and the 1x1 conv."""
        return self.head_rows(x[:, 1 + self.grid ** 2:])

    def head_rows(self, latents: torch.Tensor) -> torch.Tensor:
        """The K latent rows of the transformer output (B, K, W) -> (B, C, 1, K)."""
        b = latents.shape[0]
        latents = self.ln_post(latents)
        if self.cfg.is_legacy:
            # Official legacy quirk: a plain reshape of (B, K, W) to (B, W, K, 1), no permute.
            latents = latents.reshape(b, self.width, self.num_latent_tokens, 1)
        else:
            latents = latents.reshape(b, self.num_latent_tokens, self.width, 1).permute(0, 2, 1, 3)
        out = self.conv_out(latents)
        return out.reshape(b, self.out_channels, 1, self.num_latent_tokens)

    def forward(self, pixel_values: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        x = self.ln_pre(self.embed(pixel_values, latent_tokens))
        for block in self.transformer:
            x = block(x)
        return self.head(x)


class TiTokDecoder(nn.Module):
    """Quantized tokens (B, token_size, 1, K) -> proxy-code logits (B, 1024, g', g') or pixels (B, 3, H, W)."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        width, layers, heads = VIT_SIZES[cfg.dec_size]
        self.width, self.grid = width, cfg.dec_grid
        self.num_latent_tokens = cfg.num_latent_tokens
        self.class_embedding = nn.Parameter(torch.empty(1, width))
        self.positional_embedding = nn.Parameter(torch.empty(self.grid ** 2 + 1, width))
        self.mask_token = nn.Parameter(torch.empty(1, 1, width))
        self.latent_token_positional_embedding = nn.Parameter(torch.empty(cfg.num_latent_tokens, width))
        self.decoder_embed = nn.Linear(cfg.token_size, width)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = _transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        p = cfg.dec_patch_size
        if cfg.two_stage:
            # 1024 MaskGIT-VQGAN code logits per proxy-code position; 4 positions per patch (2x2) at 512px.
            self.ffn = nn.Sequential(nn.Conv2d(width, 2 * width, 1), nn.Tanh(),
                                     nn.Conv2d(2 * width, 1024 * cfg.proxy_codes_per_patch, 1))
            self.conv_out = nn.Identity()
        else:
            self.ffn = nn.Sequential(nn.Conv2d(width, p * p * 3, 1))
            self.conv_out = nn.Conv2d(3, 3, 3, padding=1)

    def shared_prefix(self, dtype: torch.dtype) -> torch.Tensor:
        """The image-independent first 1 + g*g rows (cls and mask tokens + positions): (1 + g*g, W)."""
        mask = self.mask_token.to(dtype).reshape(1, self.width).expand(self.grid ** 2, -1)
        prefix = torch.cat([self.class_embedding.to(dtype), mask], dim=0)
        return prefix + self.positional_embedding.to(dtype)

    def embed_tokens(self, z_quantized: torch.Tensor) -> torch.Tensor:
        """The per-image rows before ln_pre: embed(z_q) + latent positions (B, K, W)."""
        n, c, h, w = z_quantized.shape
        if h != 1 or w != self.num_latent_tokens:
            raise ValueError(f"decoder expects tokens of shape (B, C, 1, {self.num_latent_tokens}), "
                             f"got {tuple(z_quantized.shape)}")
        x = self.decoder_embed(z_quantized.reshape(n, c * h, w).transpose(1, 2))
        return x + self.latent_token_positional_embedding[:w]

    def embed(self, z_quantized: torch.Tensor) -> torch.Tensor:
        """The input sequence before ln_pre: (B, 1 + g*g + K, W)."""
        x = self.embed_tokens(z_quantized)
        prefix = self.shared_prefix(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([prefix, x], dim=1)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Transformer output (B, L, W) -> decoder output (proxy-code logits or pixels)."""
        return self.head_rows(x[:, 1:1 + self.grid ** 2])

    def head_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The g*g patch rows of the transformer output (B, g*g, W) -> decoder output."""
        b, g = x.shape[0], self.grid
        x = self.ln_post(x)
        x = x.transpose(1, 2).reshape(b, self.width, g, g)
        x = self.ffn(x.contiguous())
        if self.cfg.two_stage:
            if self.cfg.proxy_codes_per_patch == 4:
                x = F.pixel_shuffle(x, 2)  # (B, 4*1024, g, g) -> (B, 1024, 2g, 2g): 2x2 codes per patch
            return x
        # Official Rearrange 'b (p1 p2 c) h w -> b c (h p1) (w p2)': colour is the fastest channel index,
        # unlike F.pixel_shuffle (which expects 'b (c p1 p2) h w').
        p = self.cfg.dec_patch_size
        x = x.view(b, p, p, 3, g, g).permute(0, 3, 4, 1, 5, 2).reshape(b, 3, g * p, g * p)
        return self.conv_out(x)

    def forward(self, z_quantized: torch.Tensor) -> torch.Tensor:
        x = self.ln_pre(self.embed(z_quantized))
        for block in self.transformer:
            x = block(x)
        return self.head(x)
