"""The reference model against the official release: state-dict manifests and golden outputs.

The manifests (titok/manifests/, packaged: the loader names variants with them) are
the official checkpoints' keys and shapes; tests/data/manifests.sha256 pins their
bytes, so that they cannot be edited to fit the model. The goldens are in tests/data/.
"""
import hashlib

import pytest
import torch

import titok
from conftest import DATA_DIR, golden_generator, golden_tokenizer
from titok.configs import VARIANTS, SamplerConfig
from titok.loading import MANIFEST_DIR, build_generator_model, build_tokenizer, manifest

RELEASED = [v for v in VARIANTS.values() if v.manifest is not None]


def _manifest(stem: str, part: str) -> list:
    return list(manifest(stem, part).items())


@pytest.mark.parametrize("variant", RELEASED, ids=lambda v: v.name)
def test_tokenizer_state_dict_matches_manifest(variant):
    model = build_tokenizer(variant.tokenizer, "meta")
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == _manifest(variant.manifest, "tokenizer")


@pytest.mark.parametrize("variant", [v for v in RELEASED if v.generator is not None], ids=lambda v: v.name)
def test_generator_state_dict_matches_manifest(variant):
    model = build_generator_model(variant.generator, "meta")
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == _manifest(variant.manifest, "generator")


def test_packaged_manifests_match_checksums():
    pinned = dict(reversed(line.split()) for line in (DATA_DIR / "manifests.sha256").read_text().splitlines())
    assert sorted(p.name for p in MANIFEST_DIR.glob("*.json")) == sorted(pinned)
    for name, digest in pinned.items():
        assert hashlib.sha256((MANIFEST_DIR / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("name", ["titok-l-64-512", "titok-b-128-512"])
def test_512_architectures_reach_32x32_proxy_grid(name):
    v = VARIANTS[name]
    assert v.architecture_only and v.tokenizer.proxy_grid == 32 and v.tokenizer.dec_grid == 16
    tok = build_tokenizer(v.tokenizer, "meta")
    out = tok.decoder(torch.empty(2, v.tokenizer.token_size, 1, v.tokenizer.num_latent_tokens, device="meta"))
    assert tuple(out.shape) == (2, 1024, 32, 32)
    assert tuple(tok.pixel_decoder(torch.empty(2, 256, 32, 32, device="meta")).shape) == (2, 3, 512, 512)


@pytest.mark.parametrize("name", ["tiny_legacy", "tiny_single_stage"])
def test_tokenizer_goldens(name):
    tok, io = golden_tokenizer(name)
    with torch.no_grad():
        enc = tok.encoder_out(io["image"])
        z_q, ids = tok.quantize_latents(enc)
        dec = tok.decoder(io["z_quantized"])
        rec = tok.decode_tokens(io["indices"])
    assert (enc - io["encoder_out"]).abs().max() <= 1e-5
    assert torch.equal(ids, io["indices"].reshape(ids.shape))
    assert (z_q - io["z_quantized"]).abs().max() <= 1e-5
    assert (dec - io["decoder_out"]).abs().max() <= 1e-5
    assert (rec - io["reconstruction"]).abs().max() <= 1e-4


@pytest.mark.parametrize("name", ["tiny_vit", "tiny_uvit"])
def test_generator_logit_goldens(name):
    gen, _, io = golden_generator(name)
    with torch.no_grad():
        cond = gen(io["input_ids"], io["condition"], cond_drop_prob=0.0)
        uncond = gen(io["input_ids"], io["condition"], cond_drop_prob=1.0)
    assert (cond - io["logits_cond"]).abs().max() <= 1e-5
    assert (uncond - io["logits_uncond"]).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["tiny_vit", "tiny_uvit"])
def test_seeded_generation_goldens(name):
    gen, scfg, io = golden_generator(name)
    keys = sorted(k for k in io if k.startswith("generate_"))
    assert len(keys) == 3
    for key in keys:
        _, seed, temp, scale = key.split("_")
        scale_value = float(scale[len("scale"):])
        cfg = SamplerConfig(num_steps=8, guidance_scale=scale_value,
                            guidance_decay=scfg.guidance_decay if scale_value != 0 else "constant",
                            randomize_temperature=float(temp[len("temp"):]), softmax_temperature_annealing=False)
        torch.manual_seed(int(seed[len("seed"):]))
        ids = titok.generate(gen, io["condition"], cfg)
        assert torch.equal(ids, io[key]), key
