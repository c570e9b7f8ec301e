"""The decoder's mask-token prefix and the encoder's latent rows precomputed once: same outputs as the reference."""
import warnings

import pytest
import torch

from conftest import golden_tokenizer
from titok.fast import decoder_prefix_cache, encoder_latent_cache, fast_decoder_forward, fast_encoder_forward
from titok.loading import load_tokenizer


def _check(tok, images, z_q):
    dec_cache, enc_cache = decoder_prefix_cache(tok.decoder), encoder_latent_cache(tok)
    with torch.no_grad():
        assert (fast_decoder_forward(tok.decoder, z_q, dec_cache) - tok.decoder(z_q)).abs().max() <= 1e-5
        assert (fast_encoder_forward(tok, images, enc_cache) - tok.encoder_out(images)).abs().max() <= 1e-5
    return dec_cache, enc_cache


@pytest.mark.parametrize("name", ["tiny_legacy", "tiny_single_stage"])
def test_precompute_matches_reference_on_goldens(name):
    tok, io = golden_tokenizer(name)
    _check(tok, io["image"], io["z_quantized"])


def test_precompute_follows_weight_changes():
    tok, io = golden_tokenizer("tiny_legacy")
    dec_cache, enc_cache = _check(tok, io["image"], io["z_quantized"])
    with torch.no_grad():
        tok.decoder.mask_token.add_(0.5)
        tok.decoder.transformer[0].attn.in_proj_weight.mul_(1.5)
        tok.latent_tokens.sub_(0.25)
        assert (fast_decoder_forward(tok.decoder, io["z_quantized"], dec_cache)
                - tok.decoder(io["z_quantized"])).abs().max() <= 1e-5
        assert (fast_encoder_forward(tok, io["image"], enc_cache) - tok.encoder_out(io["image"])).abs().max() <= 1e-5


@pytest.mark.slow
def test_precompute_matches_reference_random_titok_l_32():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = load_tokenizer(None, "titok-l-32", random_weights=True)
    images = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        z_q, _ = tok.encode(images)
    _check(tok, images, z_q)
