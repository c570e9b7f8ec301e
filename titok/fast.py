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
same math as the reference forward; `concat_attention`'s `auto` backend picks its
Triton kernel on CUDA (and on CPU under TITOK_KERNEL_BACKEND=triton), torch otherwise.

`FastDecode` / `FastEncode` are the fast runtime's decode and encode of a token decoder:
a TiTok tokenizer (the paths above, then its pixel decoder) or the MaskGIT-VQGAN of the
baseline (codebook lookup, then the pixel decoder). The MaskGIT-VQGAN pixel decoder runs
on an own copy (`fast_pixel_decoder`), in `channels_last` (cuDNN's and oneDNN's preferred
layout), with Conv2dSame's symmetric "same" padding done by the convolution itself (no
F.pad copy of every activation) and SiLU / the residual add in place. On CUDA the copy
holds channels_last copies of the weights; on CPU it shares the caller's weights (oneDNN
reorders them per call either way), so in-place weight changes are seen. The caller's
modules are left as they were (the reference path and its goldens do not change).

`generator_logits` is the generator's `logits` with its head on contiguous rows: the
reference slices `hidden[:, 1:]` before the head, which `F.linear` runs on CPU as a
bmm over a batch-expanded copy of the head's weight.

On a CPU in bf16 the ViT blocks' linear layers run `titok.cpu_linear.linear` (weights packed
once for oneDNN), their GELU and residual adds as oneDNN post-ops of the linear before them
(`linear_gelu`, `linear_add`), and the MaskGIT-ViT generator runs its layers the same way with
its query, key and value as ONE product (`fused_qkv`, cached per weights version) and its
attention in fp32 (`attention_dtype`). On an AMD EPYC Zen 4 the packing and the fp32 attention
measured faster; the post-ops and the QKV product more accurate (one rounding to bf16 instead of
two) and as fast end to end (docs/benchmarks.md, "The fast path against the machine's matrix
rate"; not yet measured on an AMX Xeon).
In fp32, and on CUDA, all of these are the plain ops: fp32 `fast` stays bit-equal to the
reference in tokens.
"""
from __future__ import annotations

import copy
import itertools
import math
import threading
import weakref

import torch
import torch.nn.functional as F

from titok.cpu_linear import linear, linear_add, linear_gelu, packing_applies
from titok.maskgit_vqgan import Conv2dSame, PixelDecoder, ResnetBlock
from titok_kernels.concat_attention import concat_attention


class PrefixCache:
    """First-layer constants of an image-independent block of rows, recomputed when the weights change."""

    def __init__(self, compute, params):
        self._compute, self._params = compute, list(params)
        self._key, self._value = None, None
        self._lock = threading.Lock()  # pipelines run from several threads at once (titok.cpu_threads)

    def weights_key(self) -> tuple:
        """Identity and in-place version of every weight the cache reads: a change means recompute."""
        return tuple((p.data_ptr(), p._version) for p in self._params)

    def get(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dtype, device, self.weights_key())
        with self._lock:
            if key != self._key:
                with torch.no_grad():
                    self._value = self._compute(dtype, device)
                self._key = key
            return self._value


def attention_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the generator's attention runs in on the fast path: fp32 for bf16 activations on a CPU
    (PyTorch's CPU flash attention ran 1.3-1.5x faster in fp32 at its 33-row sequences on an AMD EPYC Zen 4,
    docs/benchmarks.md), else x's own. The ViT blocks keep bf16 attention: no faster in fp32 at their 289-row
    sequences there, and 0.3 dB further from the fp32 reference's decode in one parity run."""
    return torch.float32 if x.device.type == "cpu" and x.dtype == torch.bfloat16 else x.dtype


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """F.scaled_dot_product_attention computed in `attention_dtype(q)`, returned in q's dtype."""
    dtype = attention_dtype(q)
    if dtype == q.dtype:
        return F.scaled_dot_product_attention(q, k, v)
    return F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype)).to(q.dtype)


def _qkv(block, x: torch.Tensor) -> torch.Tensor:
    return linear(block.ln_1(x), block.attn.in_proj_weight, block.attn.in_proj_bias)


def _finish_block(block, x_rows: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """x + out_proj(attn), then x + c_proj(gelu(c_fc(ln_2(x)))), through `titok.cpu_linear` (fp32: the plain ops)."""
    out_proj, c_fc, c_proj = block.attn.out_proj, block.mlp.c_fc, block.mlp.c_proj
    x_rows = linear_add(attn, out_proj.weight, out_proj.bias, x_rows)
    hidden = linear_gelu(block.ln_2(x_rows), c_fc.weight, c_fc.bias)
    return linear_add(hidden, c_proj.weight, c_proj.bias, x_rows)


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


# ---- the generator's logits ---------------------------------------------------------------------------------

_qkv_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # BERT self-attention -> PrefixCache
_qkv_lock = threading.Lock()


def fused_qkv(att_self) -> tuple[torch.Tensor, torch.Tensor]:
    """A BERT self-attention's query, key and value as one (3W, W) weight and (3W,) bias in their dtype and device,
    concatenated once per weights version (recomputed when one changes in place; dropped with the module)."""
    with _qkv_lock:
        cache = _qkv_caches.get(att_self)
        if cache is None:
            parts = [att_self.query, att_self.key, att_self.value]

            def compute(dtype, device):
                return (torch.cat([p.weight for p in parts]).to(device, dtype),
                        torch.cat([p.bias for p in parts]).to(device, dtype))

            cache = _qkv_caches[att_self] = PrefixCache(compute, [t for p in parts for t in (p.weight, p.bias)])
    weight = att_self.query.weight
    return cache.get(weight.dtype, weight.device)


def _bert_layer_packed(gen, layer, x: torch.Tensor) -> torch.Tensor:
    """`MaskGITViT.layer_forward(layer, x, sdpa)` on the packed route (CPU, bf16): the same math with one QKV
    product and the GELU and residual adds as post-ops (one rounding to bf16 where the reference has two)."""
    att, heads = layer.attention, gen.cfg.num_heads
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in linear(x, *fused_qkv(att.self)).chunk(3, -1))
    ctx = sdpa(q, k, v).transpose(1, 2).flatten(2)
    x = att.output.LayerNorm(linear_add(ctx, att.output.dense.weight, att.output.dense.bias, x))
    hidden = linear_gelu(x, layer.intermediate.dense.weight, layer.intermediate.dense.bias)
    return layer.output.LayerNorm(linear_add(hidden, layer.output.dense.weight, layer.output.dense.bias, x))


def generator_logits(gen, input_ids: torch.Tensor, class_tokens: torch.Tensor) -> torch.Tensor:
    """Same output as `gen.logits(input_ids, class_tokens)`; the head runs on the K token rows made contiguous.

    MaskGIT-ViT: lm_head(hidden[:, 1:]), its attention through `sdpa` (fp32 for bf16 on a CPU), its layers as
    `_bert_layer_packed` where the packed route applies (bf16 on a CPU); U-ViT:
    lm_head(norm(hidden)[:, 1:]) = lm_head(norm(hidden[:, 1:])) (LayerNorm is per row; its attention is fp32
    already, as the official). Other generators: their own `logits`.
    """
    from titok.generator import MaskGITViT, UViT

    if type(gen) not in (MaskGITViT, UViT):
        return gen.logits(input_ids, class_tokens)
    ids = torch.cat([class_tokens.view(-1, 1), input_ids.view(input_ids.shape[0], -1)], dim=1)
    if type(gen) is MaskGITViT:
        x, layers = gen.embed(ids), gen.model.encoder.layer
        packed = packing_applies(x, layers[0].attention.self.query.weight)
        for layer in layers:  # gen.hidden_states(ids, attend=sdpa), layer by layer
            x = _bert_layer_packed(gen, layer, x) if packed else gen.layer_forward(layer, x, sdpa)
        return gen.model.lm_head(x[:, 1:].contiguous())
    rows = gen.hidden_states(ids)[:, 1:]
    return gen.lm_head(gen.norm(rows))


# ---- the MaskGIT-VQGAN pixel decoder: own copy, channels_last, padding folded into the convolutions --------

def same_pads(conv: Conv2dSame, x: torch.Tensor) -> list[int]:
    """Conv2dSame's explicit padding for input x, in F.pad order [left, right, top, bottom]."""
    pads = []
    for size, k, s, d in zip(reversed(x.shape[-2:]), reversed(conv.kernel_size), reversed(conv.stride),
                             reversed(conv.dilation)):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return pads


class FoldedConv2dSame(Conv2dSame):
    """Conv2dSame whose symmetric 'same' padding (odd kernels at stride 1: every conv of the MaskGIT-VQGAN) is
    the convolution's own zero padding instead of an F.pad copy of the input; the same sums. Asymmetric padding
    (even kernels, strides) keeps the explicit pad."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right, top, bottom = same_pads(self, x)
        if left != right or top != bottom or self.padding_mode != "zeros" or any(self.padding):
            return super().forward(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)


class FastResnetBlock(ResnetBlock):
    """ResnetBlock with SiLU and the residual add in place (on fresh GroupNorm / conv outputs); same values."""

    inplace_activations = True


class FastPixelDecoder(PixelDecoder):
    """PixelDecoder with the final SiLU in place; same values."""

    inplace_activations = True


FAST_CLASSES = {Conv2dSame: FoldedConv2dSame, ResnetBlock: FastResnetBlock, PixelDecoder: FastPixelDecoder}


def fast_pixel_decoder(pixel: torch.nn.Module, *, share_weights: bool) -> torch.nn.Module:
    """An own copy of a MaskGIT-VQGAN pixel decoder with the fast forwards (FAST_CLASSES), in channels_last.

    share_weights: the copy holds the caller's parameters and buffers themselves (CPU: no memory, follows
    in-place changes); otherwise channels_last copies of them (CUDA: cuDNN reads its weights in the input's
    layout). A forward overridden on the caller's instance stays in force in the copy.
    """
    memo = {id(t): t for t in itertools.chain(pixel.parameters(), pixel.buffers())} if share_weights else {}
    fast = copy.deepcopy(pixel, memo)
    for module in fast.modules():
        module.__class__ = FAST_CLASSES.get(type(module), type(module))
    return fast if share_weights else fast.to(memory_format=torch.channels_last)


class FastDecode:
    """Token ids -> pixels for the fast runtime, by stage (see the module docstring)."""

    def __init__(self, decoder, device: torch.device):
        from titok.tokenizer import TiTokTokenizer

        self.decoder, self.device = decoder, torch.device(device)
        self.titok = isinstance(decoder, TiTokTokenizer)
        self.prefix = decoder_prefix_cache(decoder.decoder) if self.titok else None
        pixel = getattr(decoder, "pixel_decoder", None)
        self.pixel_decoder = None if pixel is None else \
            fast_pixel_decoder(pixel, share_weights=self.device.type != "cuda")

    def vit_decoder(self, latents: torch.Tensor) -> torch.Tensor:
        """TiTok's ViT decoder (prefix precompute, row pruning); other decoders pass their latents on."""
        return fast_decoder_forward(self.decoder.decoder, latents, self.prefix) if self.titok else latents

    def pixels(self, vit_out: torch.Tensor) -> torch.Tensor:
        """The pixel stage: proxy codes -> MaskGIT-VQGAN decoder (single-stage TiTok: already pixels)."""
        if self.titok:
            if not self.decoder.cfg.two_stage:
                return vit_out
            vit_out = self.decoder.proxy_latents(vit_out)
        # channels_last in, and the images back in the reference's (contiguous) layout: (B, 3, H, W) is small
        return self.pixel_decoder(vit_out.contiguous(memory_format=torch.channels_last)).contiguous()

    def __call__(self, tokens: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        latents = self.decoder.tokens_to_latents(tokens).to(dtype)
        return self.pixels(self.vit_decoder(latents))

    def stages(self, tokens: torch.Tensor, dtype: torch.dtype) -> dict:
        """Each decode stage alone on fixed inputs (for benchmarks): vit_decoder (TiTok), pixel_decoder."""
        latents = self.decoder.tokens_to_latents(tokens).to(dtype)
        stages = {"vit_decoder": lambda: self.vit_decoder(latents)} if self.titok else {}
        if not self.titok or self.decoder.cfg.two_stage:
            vit_out = self.vit_decoder(latents)
            stages["pixel_decoder"] = lambda: self.pixels(vit_out)
        return stages


class FastEncode:
    """Images -> encoder output of a TiTok tokenizer with the latent-row precompute and row pruning."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache = encoder_latent_cache(tokenizer)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return fast_encoder_forward(self.tokenizer, images, self.cache)
