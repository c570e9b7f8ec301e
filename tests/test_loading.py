"""Checkpoint loading: official folder layout, .bin files, the local HF cache, and refusals."""
import os
import pickle

import pytest
import torch

from titok.configs import TINY_GENERATOR, TINY_TOKENIZER, VARIANTS
from titok.errors import CheckpointError, RandomWeightsWarning
from titok.loading import (build_tokenizer, init_random_weights, load_generator, load_tokenizer,
                           read_state_dict, save_pretrained, build_generator_model)


@pytest.fixture()
def tiny_tokenizer():
    return init_random_weights(build_tokenizer(TINY_TOKENIZER), seed=1).eval()


@pytest.fixture()
def tiny_generator():
    return init_random_weights(build_generator_model(TINY_GENERATOR), seed=2).eval()


def _reconstruct(tok):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return tok.encode_tokens(images), tok(images)


def test_round_trip_hf_folder_and_bin(tmp_path, tiny_tokenizer):
    save_pretrained(tiny_tokenizer, tmp_path / "hf", tokenizer_cfg=TINY_TOKENIZER)
    assert sorted(os.listdir(tmp_path / "hf")) == ["config.json", "model.safetensors"]
    # The .bin layout: the same config.json beside a pickled state dict.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    torch.save(tiny_tokenizer.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    ids0, rec0 = _reconstruct(tiny_tokenizer)
    for folder in ("hf", "bin"):
        model = load_tokenizer(tmp_path / folder)
        assert model.cfg == TINY_TOKENIZER
        ids, rec = _reconstruct(model)
        assert torch.equal(ids, ids0) and torch.equal(rec, rec0), folder


def test_generator_round_trip_resolves_interpolation(tmp_path, tiny_generator):
    save_pretrained(tiny_generator, tmp_path, tokenizer_cfg=TINY_TOKENIZER, generator_cfg=TINY_GENERATOR)
    text = (tmp_path / "config.json").read_text()
    assert "${model.vq_model.num_latent_tokens}" in text  # written as the official release has it
    loaded = load_generator(tmp_path)
    assert loaded.cfg == TINY_GENERATOR
    ids = torch.full((2, 8), 64)
    cls = torch.tensor([1, 3])
    assert torch.equal(loaded(ids, cls, 0.0), tiny_generator(ids, cls, 0.0))


def test_bare_file_with_variant_and_manifest_detection(tmp_path):
    v = VARIANTS["titok-bl-64-vq8k"]
    model = build_tokenizer(v.tokenizer, "meta")
    sd = {k: torch.zeros(t.shape) for k, t in model.state_dict().items()}
    from safetensors.torch import save_file
    save_file(sd, str(tmp_path / "w.safetensors"))
    assert load_tokenizer(tmp_path / "w.safetensors").cfg == v.tokenizer             # recognised by its keys
    assert load_tokenizer(tmp_path / "w.safetensors", "titok-bl-64-vq8k").cfg == v.tokenizer
    with pytest.raises(CheckpointError, match=r"matches the released variant 'titok-bl-64-vq8k'"):
        load_tokenizer(tmp_path / "w.safetensors", "titok-bl-128-vq8k")


def test_mis_shaped_and_missing_keys_are_listed(tmp_path, tiny_tokenizer):
    sd = dict(tiny_tokenizer.state_dict())
    sd.pop("latent_tokens")
    sd["quantize.embedding.weight"] = torch.zeros(65, 12)
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    save_pretrained(tiny_tokenizer, tmp_path / "ref", tokenizer_cfg=TINY_TOKENIZER)
    os.replace(tmp_path / "ref" / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError) as err:
        load_tokenizer(tmp_path)
    msg = str(err.value)
    assert "1 missing keys: latent_tokens" in msg and "1 unexpected keys: extra.weight" in msg
    assert "quantize.embedding.weight [65, 12] (expected [64, 12])" in msg


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.bin", "wb") as f:
        pickle.dump({"latent_tokens": _Evil()}, f)
    torch.save({"w": _Evil()}, tmp_path / "evil_zip.bin")
    for name in ("evil.bin", "evil_zip.bin"):
        with pytest.raises(CheckpointError, match="refused"):
            read_state_dict(tmp_path / name)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_truncated_and_corrupt_checkpoints(tmp_path, tiny_tokenizer):
    save_pretrained(tiny_tokenizer, tmp_path / "hf", tokenizer_cfg=TINY_TOKENIZER)
    data = (tmp_path / "hf" / "model.safetensors").read_bytes()
    (tmp_path / "hf" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_tokenizer(tmp_path / "hf")
    torch.save(tiny_tokenizer.state_dict(), tmp_path / "t.bin")
    raw = (tmp_path / "t.bin").read_bytes()
    (tmp_path / "t.bin").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(tmp_path / "t.bin")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_tokenizer(tmp_path / "missing.safetensors")


def test_random_weights_only_when_asked():
    with pytest.raises(CheckpointError, match="random"):
        load_tokenizer(None, "titok-l-64-512")
    with pytest.warns(RandomWeightsWarning):
        model = load_generator(None, "titok-s-128", random_weights=True, device="meta")
    assert model.cfg.sampler.num_steps == 64 and model.cfg.sampler.guidance_decay == "power-cosine"


def test_hf_repo_id_from_local_cache(tmp_path, monkeypatch, tiny_tokenizer):
    pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hub"
    snap = cache / "models--someone--tiny_titok" / "snapshots" / "0123456789abcdef"
    save_pretrained(tiny_tokenizer, snap, tokenizer_cfg=TINY_TOKENIZER)
    (cache / "models--someone--tiny_titok" / "refs").mkdir(parents=True)
    (cache / "models--someone--tiny_titok" / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    model = load_tokenizer("someone/tiny_titok")
    ids0, _ = _reconstruct(tiny_tokenizer)
    assert torch.equal(_reconstruct(model)[0], ids0)
    with pytest.raises(CheckpointError, match="not in the local cache"):
        load_tokenizer("someone/not_downloaded")


# ---- weights and configs that would give silent garbage or a traceback --------------------------

def _folder_with(tmp_path, tiny_tokenizer, change):
    """A saved tiny tokenizer folder with `change(state_dict)` applied to its weights."""
    from safetensors.torch import save_file

    folder = tmp_path / "bad"
    save_pretrained(tiny_tokenizer, folder, tokenizer_cfg=TINY_TOKENIZER)
    sd = {k: v.clone() for k, v in tiny_tokenizer.state_dict().items()}
    change(sd)
    save_file(sd, str(folder / "model.safetensors"))
    return folder


def _set(key, fn):
    def change(sd):
        sd[key] = fn(sd[key])
    return change


@pytest.mark.parametrize("change, match", [
    (_set("latent_tokens", lambda t: torch.full_like(t, float("nan"))), r"'latent_tokens' holds 512 NaN or infinite"),
    (_set("decoder.ln_post.weight", lambda t: t.index_fill(0, torch.tensor([3]), float("inf"))),
     r"'decoder.ln_post.weight' holds 1 NaN or infinite"),
    (_set("latent_tokens", lambda t: t.to(torch.int32)), r"'latent_tokens' has dtype int32"),
    (_set("quantize.embedding.weight", lambda t: t > 0), r"'quantize.embedding.weight' has dtype bool"),
], ids=["nan", "inf", "int32", "bool"])
def test_non_finite_and_non_float_weights_are_refused_naming_the_tensor(tmp_path, tiny_tokenizer, change, match):
    folder = _folder_with(tmp_path, tiny_tokenizer, change)
    with pytest.raises(CheckpointError, match=match):
        load_tokenizer(folder)


def test_half_precision_weights_still_load(tmp_path, tiny_tokenizer):
    folder = _folder_with(tmp_path, tiny_tokenizer, lambda sd: sd.update({k: v.half() for k, v in sd.items()}))
    assert load_tokenizer(folder).latent_tokens.dtype == torch.float32


@pytest.mark.parametrize("content, match", [
    (b"{}", "is not a TiTok config .it has no model.vq_model section"),
    (bytes(range(256)) * 4, "is not a text file"),
    (b"[1, 2, 3]", "holds a JSON list, not an object"),
    (b'{"model": {"vq_model": {"vit_enc_model_size": "huge"}}}', "is not a valid TiTok tokenizer config"),
    (b'{"model": {"vq_model": 7}}', "is not a valid TiTok tokenizer config"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply|is not valid JSON"),
], ids=["empty-object", "binary", "list", "bad-size", "bad-section", "deep"])
def test_bad_config_json_is_one_clear_error(tmp_path, tiny_tokenizer, content, match):
    save_pretrained(tiny_tokenizer, tmp_path / "t", tokenizer_cfg=TINY_TOKENIZER)
    (tmp_path / "t" / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_tokenizer(tmp_path / "t")


def test_tokenizer_folder_given_as_generator_and_the_reverse(tmp_path, tiny_tokenizer, tiny_generator):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    tiny_generator.save_pretrained(tmp_path / "gen", tokenizer_cfg=TINY_TOKENIZER)
    with pytest.raises(CheckpointError, match="describes a tokenizer, not a generator"):
        load_generator(tmp_path / "tok")
    with pytest.raises(CheckpointError, match="none of its tensors belongs to a TiTok tokenizer"):
        load_tokenizer(tmp_path / "gen")


def test_a_config_of_a_huge_model_allocates_nothing(tmp_path, tiny_tokenizer):
    import json

    tiny_tokenizer.save_pretrained(tmp_path / "t")
    doc = json.loads((tmp_path / "t" / "config.json").read_text())
    doc["model"]["vq_model"]["num_latent_tokens"] = 10**11  # 25 TB of fp32 latent tokens if materialised
    (tmp_path / "t" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"latent_tokens \[8, 64\] \(expected \[100000000000, 64\]\)"):
        load_tokenizer(tmp_path / "t")


def test_save_pretrained_methods_round_trip(tmp_path, tiny_tokenizer, tiny_generator):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    tiny_generator.save_pretrained(tmp_path / "gen", tokenizer_cfg=TINY_TOKENIZER)
    tok, gen = load_tokenizer(tmp_path / "tok"), load_generator(tmp_path / "gen")
    assert tok.cfg == TINY_TOKENIZER and gen.cfg == TINY_GENERATOR
    for a, b in ((tok, tiny_tokenizer), (gen, tiny_generator)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_bin_with_non_string_keys_is_refused(tmp_path):
    torch.save({1: torch.zeros(2)}, tmp_path / "w.bin")
    with pytest.raises(CheckpointError, match="does not hold a state dict of tensors"):
        read_state_dict(tmp_path / "w.bin")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_save_pretrained_writes_with_the_permissions_the_umask_gives(tmp_path, tiny_tokenizer, umask):
    old = os.umask(umask)
    try:
        tiny_tokenizer.save_pretrained(tmp_path / "tok")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "tok").iterdir()}
    assert modes == {"config.json": 0o666 & ~umask, "model.safetensors": 0o666 & ~umask}  # no temporaries left
