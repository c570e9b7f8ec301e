"""FLOPs per image, counted analytically.

Convention: 2 FLOPs per multiply-add, counting every matrix product (linear
layers, 1x1 and kxk convolutions, the two attention products QK^T and PV, the
softmax x codebook einsum). Normalisations, activations, softmax, residual adds
and the sampler's elementwise work are not counted (they are < 1% here).

For titok-l-32 (8 steps, linear guidance: 15 generator forwards) this gives
about 544 GFLOP per generated image: ~172 generator, ~185 ViT decoder, ~187
MaskGIT-VQGAN pixel decoder.
"""
from __future__ import annotations

from titok.configs import VIT_SIZES, GeneratorConfig, SamplerConfig, TokenizerConfig
from titok.maskgit_vqgan import CHANNEL_MULT, NUM_RES_BLOCKS, Z_CHANNELS


def linear_flops(rows: int, fan_in: int, fan_out: int) -> int:
    return 2 * rows * fan_in * fan_out


def attention_flops(q_rows: int, kv_rows: int, width: int) -> int:
    """QK^T and PV over all heads (head dims sum to `width`)."""
    return 2 * 2 * q_rows * kv_rows * width


def transformer_block_flops(seq: int, width: int, mlp_hidden: int) -> int:
    """One transformer block over `seq` rows: QKV, attention, output projection, 2-layer MLP."""
    return (linear_flops(seq, width, 3 * width) + attention_flops(seq, seq, width)
            + linear_flops(seq, width, width) + 2 * linear_flops(seq, width, mlp_hidden))


def conv_flops(h: int, w: int, c_in: int, c_out: int, k: int) -> int:
    return 2 * h * w * c_in * c_out * k * k


def vit_encoder_flops(cfg: TokenizerConfig) -> int:
    width, layers, _ = VIT_SIZES[cfg.enc_size]
    g, k = cfg.enc_grid, cfg.num_latent_tokens
    seq = 1 + g * g + k
    out_channels = cfg.token_size * (2 if cfg.quantize_mode == "vae" else 1)
    patch = conv_flops(g, g, 3, width, cfg.enc_patch_size)
    return patch + layers * transformer_block_flops(seq, width, 4 * width) + linear_flops(k, width, out_channels)


def quantizer_flops(cfg: TokenizerConfig) -> int:
    """Distances to every code (the z.e product)."""
    return linear_flops(cfg.num_latent_tokens, cfg.token_size, cfg.codebook_size) if cfg.quantize_mode == "vq" else 0


def vit_decoder_flops(cfg: TokenizerConfig) -> int:
    width, layers, _ = VIT_SIZES[cfg.dec_size]
    g, k = cfg.dec_grid, cfg.num_latent_tokens
    seq = 1 + g * g + k
    embed = linear_flops(k, cfg.token_size, width)
    if cfg.two_stage:
        head = (linear_flops(g * g, width, 2 * width)
                + linear_flops(g * g, 2 * width, 1024 * cfg.proxy_codes_per_patch))
    else:
        p = cfg.dec_patch_size
        head = linear_flops(g * g, width, p * p * 3) + conv_flops(cfg.image_size, cfg.image_size, 3, 3, 3)
    return embed + layers * transformer_block_flops(seq, width, 4 * width) + head


def pixel_decoder_flops(cfg: TokenizerConfig) -> int:
    """Two-stage only: softmax x VQGAN codebook, then the MaskGIT-VQGAN conv decoder."""
    if not cfg.two_stage:
        return 0
    hidden, side = cfg.pixel_hidden_channels, cfg.proxy_grid
    total = linear_flops(side * side, 1024, Z_CHANNELS)
    c = hidden * CHANNEL_MULT[-1]
    total += conv_flops(side, side, Z_CHANNELS, c, 3)
    total += NUM_RES_BLOCKS * 2 * conv_flops(side, side, c, c, 3)                   # mid blocks
    for level in reversed(range(len(CHANNEL_MULT))):
        c_out = hidden * CHANNEL_MULT[level]
        for i in range(NUM_RES_BLOCKS):
            c_in = c if i == 0 else c_out
            total += conv_flops(side, side, c_in, c_out, 3) + conv_flops(side, side, c_out, c_out, 3)
            if c_in != c_out:
                total += conv_flops(side, side, c_out, c_out, 1)                    # nin_shortcut
        c = c_out
        if level != 0:
            side *= 2
            total += conv_flops(side, side, c, c, 3)                                # upsample_conv
    return total + conv_flops(side, side, c, 3, 3)                                  # conv_out


def generator_forward_flops(cfg: GeneratorConfig) -> int:
    """One generator forward for one image: K + 1 rows (class token + image tokens)."""
    seq = cfg.image_seq_len + 1
    blocks = cfg.num_layers + (1 if cfg.model_type == "UViT" else 0)  # U-ViT: in + mid + out blocks
    total = blocks * transformer_block_flops(seq, cfg.hidden_size, cfg.intermediate_size)
    if cfg.model_type == "UViT":
        total += (cfg.num_layers // 2) * linear_flops(seq, 2 * cfg.hidden_size, cfg.hidden_size)  # skip_linear
    return total + linear_flops(cfg.image_seq_len, cfg.hidden_size, cfg.codebook_size)


def generator_forwards(sampler: SamplerConfig, seq_len: int) -> int:
    """Number of generator forwards per image for a sampling run (2 on guided steps)."""
    from titok.sampler import sampling_schedule

    return sum(2 if s.guidance_scale is not None else 1 for s in sampling_schedule(sampler, seq_len))


def generation_flops(tokenizer: TokenizerConfig, generator: GeneratorConfig, sampler: SamplerConfig) -> dict:
    """Per-image FLOPs of class id -> image, by stage, plus the total."""
    forwards = generator_forwards(sampler, generator.image_seq_len)
    stages = {
        "generator": forwards * generator_forward_flops(generator),
        "vit_decoder": vit_decoder_flops(tokenizer),
        "pixel_decoder": pixel_decoder_flops(tokenizer),
    }
    return {"generator_forwards": forwards, **stages, "total": sum(stages.values())}


def encode_flops(tokenizer: TokenizerConfig) -> int:
    return vit_encoder_flops(tokenizer) + quantizer_flops(tokenizer)
