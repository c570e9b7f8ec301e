"""The fast ViT paths of the tokenizer: shared-prefix precompute + `titok_kernels.concat_attention`.

The decoder's first 1 + g*g rows (cls + mask tokens + positions) and the encoder's
K latent rows do not depend on the image. In the FIRST layer their ln_pre, ln_1 and
Q/K/V projection are constants of the weights: `PrefixCache` computes them once per
(weights version, dtype, device) and the first layer's attention reads them with
batch stride 0 (no repeat, no cat of Q/K/V). Later layers see image-dependent
values in every row and run plain attention through the same op. In the LAST layer
only the rows the head reads are computed (the g*g patch rows of the decoder, the
K latent rows of the encoder): attention queries, out-projection and MLP for those
rows alone.

These functions use the reference modules' own weights (no copies) and are the
same math as the reference forward; on CPU `concat_attention`'s torch backend is
used, on CUDA its Triton kernel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from titok_kernels.concat_attention import concat_attention


class PrefixCache:
    """First-layer constants of an image-independent block of rows, recomputed when the weights change."""

    def __init__(self, compute, params):
        self._compute, self._params = compute, list(params)
        self._key, self._value = None, None

    def get(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dtype, device, tuple((p.data_ptr(), p._version) for p in self._params))
        if key != self._key:
            with torch.no_grad():
                self._value = self._compute(dtype, device)
            self._key = key
        return self._value


def _qkv(block, x: torch.Tensor) -> torch.Tensor:
    return F.linear(block.ln_1(x), block.attn.in_proj_weight, block.attn.in_proj_bias)


def _finish_block(block, x_rows: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    x_rows = x_rows + block.attn.out_proj(attn)
    return x_rows + block.mlp(block.ln_2(x_rows))


def run_blocks(blocks, x_per: torch.Tensor, x_shared: torch.Tensor, qkv_shared: torch.Tensor, *,
               shared_first: bool, keep: tuple[int, int], backend: str = "auto") -> torch.Tensor:
    """Pre-LN blocks over the sequence cat(shared, per-sample) (or the reverse); returns rows keep[0]:keep[1].

    x_per: (B, Lp, W) after ln_pre; x_shared: (Ls, W) after ln_pre; qkv_shared: the first layer's
    packed Q/K/V of the shared rows (Ls, 3W).
    """
    n = x_per.shape[0]
    last = len(blocks) - 1
    x = None
    for i, block in enumerate(blocks):
        heads = block.attn.num_heads
        rows = keep if i == last else None
        if i == 0:
            attn = concat_attention(_qkv(block, x_per), qkv_shared, num_heads=heads, shared_first=shared_first,
                                    query_rows=rows, backend=backend)
            parts = [x_shared.expand(n, -1, -1), x_per]
            x = torch.cat(parts if shared_first else parts[::-1], dim=1)
        else:
            attn = concat_attention(_qkv(block, x), None, num_heads=heads, query_rows=rows, backend=backend)
        x = _finish_block(block, x if rows is None else x[:, rows[0]:rows[1]], attn)
    return x


def decoder_prefix_cache(decoder) -> PrefixCache:
    block = decoder.transformer[0]

    def compute(dtype, device):
        prefix = decoder.ln_pre(decoder.shared_prefix(dtype).to(device))
        return prefix, _qkv(block, prefix)

    params = [decoder.class_embedding, decoder.mask_token, decoder.positional_embedding,
              *decoder.ln_pre.parameters(), *block.ln_1.parameters(), block.attn.in_proj_weight,
              block.attn.in_proj_bias]
    return PrefixCache(compute, params)


def encoder_latent_cache(tokenizer) -> PrefixCache:
    encoder = tokenizer.encoder
    block = encoder.transformer[0]

    def compute(dtype, device):
        latents = encoder.ln_pre(encoder.latent_rows(tokenizer.latent_tokens, dtype).to(device))
        return latents, _qkv(block, latents)

    params = [tokenizer.latent_tokens, encoder.latent_token_positional_embedding, *encoder.ln_pre.parameters(),
              *block.ln_1.parameters(), block.attn.in_proj_weight, block.attn.in_proj_bias]
    return PrefixCache(compute, params)


def fast_decoder_forward(decoder, z_quantized: torch.Tensor, cache: PrefixCache,
                         backend: str = "auto") -> torch.Tensor:
    """Same output as `decoder(z_quantized)`, with the prefix precompute and last-layer row pruning."""
    x_per = decoder.ln_pre(decoder.embed_tokens(z_quantized))
    x_shared, qkv_shared = cache.get(x_per.dtype, x_per.device)
    g2 = decoder.grid ** 2
    rows = run_blocks(decoder.transformer, x_per, x_shared, qkv_shared, shared_first=True, keep=(1, 1 + g2),
                      backend=backend)
    return decoder.head_rows(rows)


def fast_encoder_forward(tokenizer, images: torch.Tensor, cache: PrefixCache, backend: str = "auto") -> torch.Tensor:
    """Same output as `tokenizer.encoder_out(images)`, with the latent-row precompute and row pruning."""
    encoder = tokenizer.encoder
    x_per = encoder.ln_pre(encoder.embed_image(images))
    x_shared, qkv_shared = cache.get(x_per.dtype, x_per.device)
    start = x_per.shape[1]
    rows = run_blocks(encoder.transformer, x_per, x_shared, qkv_shared, shared_first=False,
                      keep=(start, start + encoder.num_latent_tokens), backend=backend)
    return encoder.head_rows(rows)
