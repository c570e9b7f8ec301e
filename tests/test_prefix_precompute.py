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


def test_fast_pixel_decoder_copy_matches_reference_and_shares_weights():
    """The fast runtime's own pixel decoder (padding folded into the convolutions, in-place SiLU and adds,
    channels_last) gives the reference's values; on CPU it shares the caller's weights (follows in-place
    changes) and leaves the caller's module as it was."""
    from titok.fast import FastPixelDecoder, fast_pixel_decoder
    from titok.maskgit_vqgan import PixelDecoder

    tok, _ = golden_tokenizer("tiny_legacy")
    pixel = tok.pixel_decoder
    fast = fast_pixel_decoder(pixel, share_weights=True)
    assert type(fast) is FastPixelDecoder and type(pixel) is PixelDecoder
    latents = torch.randn(2, 256, 4, 4)
    with torch.no_grad():
        expected = pixel(latents)
        got = fast(latents.contiguous(memory_format=torch.channels_last))
        # oneDNN's channels_last convolutions round differently (1.8e-5 seen): the fast path's 1e-4 image bound
        assert (got - expected).abs().max() <= 1e-4
        pixel.conv_in.weight.mul_(0.5)
        assert (fast(latents) - pixel(latents)).abs().max() <= 1e-4
    copied = fast_pixel_decoder(pixel, share_weights=False)
    assert copied.conv_in.weight.data_ptr() != pixel.conv_in.weight.data_ptr()


def test_folded_padding_keeps_the_explicit_pad_where_it_is_asymmetric():
    from titok.fast import FoldedConv2dSame
    from titok.maskgit_vqgan import Conv2dSame

    for kernel, stride in ((3, 1), (4, 1), (3, 2)):
        ref = Conv2dSame(3, 5, kernel, stride=stride)
        folded = Conv2dSame(3, 5, kernel, stride=stride)
        folded.load_state_dict(ref.state_dict())
        folded.__class__ = FoldedConv2dSame
        x = torch.randn(2, 3, 9, 9)
        with torch.no_grad():
            assert (folded(x) - ref(x)).abs().max() <= 1e-6, (kernel, stride)
