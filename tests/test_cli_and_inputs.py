"""Bad input gets a clear error, never a wrong answer; and the `titok` command end to end (tiny models)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from titok.cli import main
from titok.configs import TINY_GENERATOR, TINY_TOKENIZER, GeneratorConfig, SamplerConfig
from titok.errors import CheckpointError, TiTokInputError
from titok.images import load_image
from titok.loading import (build_generator_model, build_tokenizer, check_compatible, init_random_weights,
                           save_pretrained)
from titok.sampler import generate


@pytest.fixture(scope="module")
def tiny():
    tok = init_random_weights(build_tokenizer(TINY_TOKENIZER), seed=1).eval()
    gen = init_random_weights(build_generator_model(TINY_GENERATOR), seed=2).eval()
    return tok, gen


@pytest.fixture()
def folders(tmp_path, tiny):
    tok, gen = tiny
    save_pretrained(tok, tmp_path / "tok", tokenizer_cfg=TINY_TOKENIZER)
    save_pretrained(gen, tmp_path / "gen", tokenizer_cfg=TINY_TOKENIZER, generator_cfg=TINY_GENERATOR,
                    sampler=SamplerConfig(num_steps=4))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(imgs / "a.png")
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(imgs / "b.jpg")  # greyscale
    return tmp_path


# ---- the library: each bad input has its own clear error --------------------------------------------

@pytest.mark.parametrize("images, match", [
    (torch.rand(2, 3, 32, 32), "must be 64x64"),
    (torch.rand(2, 1, 64, 64), "3 channels"),
    (torch.rand(3, 64, 64), r"shape \(B, 3, H, W\)"),
    (torch.randint(0, 3, (2, 3, 64, 64), dtype=torch.int32), "dtype torch.int32"),
    (torch.rand(2, 3, 64, 64) * 255, r"must lie in \[0, 1\]"),
    (torch.rand(2, 3, 64, 64) - 0.5, r"must lie in \[0, 1\]"),
    (torch.full((2, 3, 64, 64), float("nan")), "NaN or infinite"),
    (torch.full((2, 3, 64, 64), float("inf")), "NaN or infinite"),
    (torch.rand(0, 3, 64, 64), "empty"),
])
def test_bad_images(tiny, images, match):
    with pytest.raises(TiTokInputError, match=match):
        tiny[0].encode_tokens(images)


def test_uint8_images_are_taken_as_0_255(tiny):
    u8 = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(tiny[0].encode_tokens(u8), tiny[0].encode_tokens(u8.float() / 255))


@pytest.mark.parametrize("tokens, match", [
    (torch.tensor([[0, 1, 2, 3, 4, 5, 6, 64]]), "outside the codebook 0..63"),
    (torch.tensor([[0, 1, 2, 3, 4, 5, 6, -1]]), "outside the codebook"),
    (torch.zeros(1, 7, dtype=torch.long), r"shape \(B, 8\)"),
    (torch.zeros(1, 8), "must be integers"),
])
def test_bad_tokens(tiny, tokens, match):
    with pytest.raises(TiTokInputError, match=match):
        tiny[0].decode_tokens(tokens)


@pytest.mark.parametrize("classes, match", [
    (torch.tensor([0, 10]), "outside 0..9"),
    (torch.tensor([-1]), "outside 0..9"),
    (torch.tensor([1.0]), "integers"),
    (torch.tensor([[1]]), "1-D"),
])
def test_bad_class_ids(tiny, classes, match):
    with pytest.raises(TiTokInputError, match=match):
        generate(tiny[1], classes, SamplerConfig(num_steps=2))


def test_incompatible_pair(tiny):
    other = build_generator_model(GeneratorConfig("ViT", 64, 2, 4, 128, image_seq_len=16, codebook_size=64,
                                                  num_classes=10), "meta")
    with pytest.raises(CheckpointError, match="does not fit the tokenizer"):
        check_compatible(tiny[0], other)


def test_resize_rule_is_short_side_then_centre_crop(tmp_path):
    img = np.zeros((100, 200, 3), dtype=np.uint8)
    img[:, 50:150] = 255            # a white centre square of the resized image
    Image.fromarray(img).save(tmp_path / "x.png")
    out = load_image(tmp_path / "x.png", 64)
    assert out.shape == (3, 64, 64)
    assert out[:, :, 2:62].min() > 0.9  # the centre crop keeps the white middle, bar resampling edges


# ---- the command ----------------------------------------------------------------------------------

def test_cli_reconstruct_tokenize_generate_info(folders, capsys):
    out = folders / "out"
    assert main(["reconstruct", str(folders / "imgs"), "--checkpoint", str(folders / "tok"), "--out",
                 str(out), "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a.tokens.json", "b.png", "b.tokens.json"]
    rec = json.loads((out / "a.tokens.json").read_text())
    assert len(rec["tokens"]) == 8 and np.isfinite(rec["psnr_db"])
    assert "PSNR" in capsys.readouterr().out
    assert main(["tokenize", str(folders / "imgs"), "--checkpoint", str(folders / "tok"), "--out",
                 str(folders / "t.npy"), "--batch-size", "1"]) == 0
    arr = np.load(folders / "t.npy")
    assert arr.shape == (2, 8) and arr.dtype == np.int64
    assert arr[0].tolist() == rec["tokens"]
    assert main(["generate", "--tokenizer", str(folders / "tok"), "--generator", str(folders / "gen"),
                 "--classes", "1", "7", "3", "--seed", "0", "--out", str(folders / "grid.png")]) == 0
    assert Image.open(folders / "grid.png").size == (3 * 64, 64)
    assert main(["info", "--model", "titok-l-32"]) == 0
    assert "titok-l-32" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["generate", "--tokenizer", "{tok}", "--generator", "{gen}", "--classes", "1", "1000", "--out", "{o}"],
     "class id 1000 is outside 0..9"),
    (["reconstruct", "{d}/nope.png", "--checkpoint", "{tok}", "--out", "{o}"], "image not found"),
    (["reconstruct", "{d}/imgs/a.png", "--checkpoint", "{d}/missing", "--out", "{o}"], "checkpoint not found"),
    (["reconstruct", "{d}/imgs/a.png", "--out", "{o}"], "give a tokenizer checkpoint"),
    (["tokenize", "{d}/imgs", "--checkpoint", "{d}/evil.bin", "--model", "titok-l-32", "--out", "{o}"],
     "refused"),
])
def test_cli_errors_are_one_line_exit_2_and_write_nothing(folders, argv, match):
    class Evil:
        def __reduce__(self):
            return (print, ("pickle code ran",))
    torch.save({"w": Evil()}, folders / "evil.bin")
    out = folders / "should_not_exist.png"
    args = [a.format(tok=folders / "tok", gen=folders / "gen", d=folders, o=out) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "titok", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert "pickle code ran" not in proc.stdout + proc.stderr
    assert not out.exists()
