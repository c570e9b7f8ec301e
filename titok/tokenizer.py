"""The TiTok tokenizer: image <-> K tokens, with the official state-dict layout.

Two-stage models (L-32, B-64, S-128) decode tokens to logits over the 1024
MaskGIT-VQGAN codes per 16x16 position, take softmax(logits) x VQGAN codebook,
and run the MaskGIT-VQGAN conv decoder. Single-stage models (vq8k, VAE) predict
pixels directly. VAE models emit continuous tokens (mean / log-variance split).
"""
from __future__ import annotations

import torch
from torch import nn

from titok.configs import TokenizerConfig
from titok.errors import TiTokInputError
from titok.checks import check_images, check_tokens
from titok.maskgit_vqgan import PixelDecoder, PixelQuantizer
from titok.quantizer import VectorQuantizer, gaussian_tokens
from titok.vit import TiTokDecoder, TiTokEncoder


class TiTokTokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = TiTokEncoder(cfg)
        self.decoder = TiTokDecoder(cfg)
        self.latent_tokens = nn.Parameter(torch.empty(cfg.num_latent_tokens, self.encoder.width))
        if cfg.quantize_mode == "vq":
            self.quantize = VectorQuantizer(cfg.codebook_size, cfg.token_size, cfg.use_l2_norm)
        if cfg.two_stage:
            self.pixel_quantize = PixelQuantizer()
            self.pixel_decoder = PixelDecoder(cfg.pixel_hidden_channels)

    @property
    def num_tokens(self) -> int:
        return self.cfg.num_latent_tokens

    @property
    def codebook_size(self) -> int:
        """Discrete codes of the token space; 0 for continuous (VAE) tokens."""
        return self.cfg.codebook_size if self.cfg.quantize_mode == "vq" else 0

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    # ---- encode ------------------------------------------------------------------------------
    def encoder_out(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> encoder output before quantization (B, C, 1, K)."""
        return self.encoder(images, self.latent_tokens)

    def quantize_latents(self, z: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None,
                         nearest=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoder output -> (z_quantized (B, C, 1, K), token ids (B, K) or None for VAE models).

        nearest: the nearest-code search (default: the pure-torch reference)."""
        if self.cfg.quantize_mode == "vq":
            return self.quantize(z) if nearest is None else self.quantize(z, nearest)
        return gaussian_tokens(z, sample=sample, generator=generator), None

    def encode(self, images: torch.Tensor, *, sample: bool = False,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images -> (z_quantized, token ids (B, K)); VAE models return their mean (or a sample) and None."""
        return self.quantize_latents(self.encoder_out(images), sample=sample, generator=generator)

    def encode_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Validated images (float [0, 1] or uint8) -> token ids (B, K) int64, or VAE mean tokens (B, C, 1, K)."""
        images = check_images(images, self.cfg.image_size).to(self.latent_tokens.device, self.latent_tokens.dtype)
        z_q, ids = self.encode(images)
        return ids if ids is not None else z_q

    # ---- decode ------------------------------------------------------------------------------
    def tokens_to_latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, K) or (B, 1, K) -> quantized latents (B, token_size, 1, K); VAE tokens pass through."""
        if self.cfg.quantize_mode == "vae":
            return tokens
        tokens = tokens.reshape(tokens.shape[0], -1)
        z_q = self.quantize.lookup(tokens)                    # (B, K, C)
        return z_q.transpose(1, 2).unsqueeze(2).contiguous()  # (B, C, 1, K)

    def proxy_latents(self, decoder_out: torch.Tensor) -> torch.Tensor:
        """Two-stage: proxy-code logits (B, 1024, h, w) -> softmax x VQGAN codebook -> latents (B, 256, h, w)."""
        return torch.einsum("nchw,cd->ndhw", decoder_out.softmax(1), self.pixel_quantize.embedding.weight)

    def decode(self, z_quantized: torch.Tensor) -> torch.Tensor:
        """Quantized latents -> images (B, 3, H, W), unclamped (as the official decode)."""
        decoded = self.decoder(z_quantized)
        if self.cfg.two_stage:
            decoded = self.pixel_decoder(self.proxy_latents(decoded))
        return decoded

    def decode_stages(self, z_quantized: torch.Tensor) -> dict:
        """Each stage of `decode` alone on fixed inputs (benchmarks): vit_decoder, and pixel_decoder when two-stage."""
        stages = {"vit_decoder": lambda: self.decoder(z_quantized)}
        if self.cfg.two_stage:
            proxy = self.decoder(z_quantized)
            stages["pixel_decoder"] = lambda: self.pixel_decoder(self.proxy_latents(proxy))
        return stages

    def check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Validate tokens for this model: ids in the codebook (B, K), or VAE tokens (B, C, 1, K) finite."""
        cfg = self.cfg
        if cfg.quantize_mode == "vq":
            return check_tokens(tokens, cfg.num_latent_tokens, cfg.codebook_size)
        want = (cfg.token_size, 1, cfg.num_latent_tokens)
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 4 or tuple(tokens.shape[1:]) != want:
            raise TiTokInputError(f"VAE tokens must have shape (B, {', '.join(map(str, want))}), "
                                  f"got {tuple(getattr(tokens, 'shape', ()))}")
        if not tokens.dtype.is_floating_point or not bool(torch.isfinite(tokens).all()):
            raise TiTokInputError("VAE tokens must be finite floating-point values")
        return tokens

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Validated tokens -> images (B, 3, H, W), unclamped (official); clamp to [0, 1] for display."""
        return self.decode(self.tokens_to_latents(self.check_tokens(tokens)))

    def save_pretrained(self, folder) -> None:
        """Write `config.json` (the official nested layout) + `model.safetensors` into `folder`."""
        from titok.saving import save_pretrained

        save_pretrained(self, folder, tokenizer_cfg=self.cfg)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruction: encode then decode."""
        z_q, _ = self.encode(images)
        return self.decode(z_q)
