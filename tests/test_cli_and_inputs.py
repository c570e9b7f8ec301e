"""Bad input gets a clear error, never a wrong answer; and the `titok` command end to end (tiny models)."""
import dataclasses
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
    save_pretrained(gen, tmp_path / "gen", tokenizer_cfg=TINY_TOKENIZER,
                    generator_cfg=dataclasses.replace(TINY_GENERATOR, sampler=SamplerConfig(num_steps=4)))
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
    (["tokenize", "{d}/imgs", "--checkpoint", "{d}/evil.bin", "--model", "titok-l-32", "--out", "{npy}"],
     "refused"),
])
def test_cli_errors_are_one_line_exit_2_and_write_nothing(folders, argv, match):
    class Evil:
        def __reduce__(self):
            return (print, ("pickle code ran",))
    torch.save({"w": Evil()}, folders / "evil.bin")
    out, npy = folders / "should_not_exist.png", folders / "should_not_exist.npy"
    args = [a.format(tok=folders / "tok", gen=folders / "gen", d=folders, o=out, npy=npy) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "titok", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert "pickle code ran" not in proc.stdout + proc.stderr
    assert not out.exists() and not npy.exists() and not npy.with_suffix(".files.json").exists()


# ---- reading every pixel mode with its real range -----------------------------------------------------

RAMP = np.linspace(0.0, 1.0, 64 * 64).reshape(64, 64)   # a grey ramp: mean 0.5


def _save_mode(path, mode):
    """Save RAMP in PIL mode `mode` (by its real range); returns the path."""
    if mode == "I;16":
        Image.fromarray(np.rint(RAMP * 65535).astype(np.uint16)).save(path)
    elif mode == "I;16-tiff":
        Image.fromarray(np.rint(RAMP * 65535).astype(np.uint16)).save(path)
    elif mode == "I-pgm":  # PIL reads 16-bit PGM as mode I, scaled to 0..65535
        path.write_bytes(b"P5\n64 64\n1023\n" + np.rint(RAMP * 1023).astype(">u2").tobytes())
    elif mode == "F01":
        Image.fromarray(RAMP.astype(np.float32), mode="F").save(path)
    elif mode == "F255":
        Image.fromarray((RAMP * 255).astype(np.float32), mode="F").save(path)
    elif mode == "CMYK":
        Image.fromarray(np.rint(RAMP * 255).astype(np.uint8)).convert("CMYK").save(path)
    else:
        Image.fromarray(np.rint(RAMP * 255).astype(np.uint8)).convert(mode).save(path)
    return path


@pytest.mark.parametrize("mode, name", [
    ("I;16", "g.png"), ("I;16-tiff", "g.tiff"), ("I-pgm", "g.pgm"), ("F01", "g.tiff"), ("F255", "g.tiff"),
    ("L", "g.png"), ("LA", "g.png"), ("P", "g.png"), ("RGBA", "g.png"), ("CMYK", "g.jpg"), ("1", "g.png"),
])
def test_every_mode_is_read_with_its_real_range(tmp_path, mode, name):
    path = _save_mode(tmp_path / name, mode)
    x = load_image(path, 64)
    assert x.shape == (3, 64, 64)
    tol = 0.08 if mode in ("CMYK", "1") else 0.01   # JPEG's loss; 1-bit dithering of the ramp
    assert abs(float(x.mean()) - 0.5) < tol, (mode, float(x.mean()))
    # and the values rise along the ramp (not clipped white or black)
    assert float(x[:, :8].mean()) < 0.2 and float(x[:, -8:].mean()) > 0.8


@pytest.mark.parametrize("array, match", [
    (np.full((8, 8), -1.0, np.float32), r"float pixels in \[-1, -1\]"),
    (np.full((8, 8), 300.0, np.float32), r"float pixels in \[300, 300\]"),
    (np.full((8, 8), np.nan, np.float32), "NaN or infinite"),
    (np.full((8, 8), 70000, np.int32), r"32-bit integer pixels in \[70000, 70000\]"),
], ids=["float-negative", "float-300", "float-nan", "int-over-16-bit"])
def test_pixel_ranges_without_a_known_scale_are_refused(tmp_path, array, match):
    Image.fromarray(array).save(tmp_path / "x.tiff")
    with pytest.raises(TiTokInputError, match=match):
        load_image(tmp_path / "x.tiff", 64)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = 255                       # stored: white left half
    exif = Image.Exif()
    exif[0x0112] = 6                           # "rotate 90 clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "r.jpg", exif=exif)
    x = load_image(tmp_path / "r.jpg", 64)
    assert float(x[:, :28].mean()) > 0.9 and float(x[:, 36:].mean()) < 0.1   # displayed: white TOP half


def _png_header_only(path, width, height):
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_huge_elongated_truncated_and_non_images_are_refused(tmp_path):
    _png_header_only(tmp_path / "huge.png", 20000, 20000)
    with pytest.raises(TiTokInputError, match="too large"):
        load_image(tmp_path / "huge.png", 64)
    Image.new("RGB", (20000, 1)).save(tmp_path / "line.png")
    with pytest.raises(TiTokInputError, match="too elongated"):
        load_image(tmp_path / "line.png", 64)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(TiTokInputError, match="not a readable image"):
        load_image(tmp_path / "t.png", 64)
    (tmp_path / "n.png").write_bytes(b"hello")
    with pytest.raises(TiTokInputError, match="not a readable image"):
        load_image(tmp_path / "n.png", 64)


# ---- listing inputs and naming outputs --------------------------------------------------------------

def test_collect_recursive_list_and_output_names(tmp_path, monkeypatch):
    from titok.images import collect_images, output_names

    for rel in ("n01/a.png", "n02/a.png", "n02/.hidden.png", "top.png", "x.bmp", "x.webp"):
        (tmp_path / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "in" / rel)
    (tmp_path / "classes" / "n01").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "classes" / "n01" / "a.png")
    with pytest.raises(TiTokInputError, match="holds no images .* it has subfolders: add --recursive"):
        collect_images([str(tmp_path / "classes")])
    flat = collect_images([str(tmp_path / "in")])
    assert [str(x.rel) for x in flat] == ["top.png", "x.bmp", "x.webp"]
    deep = collect_images([str(tmp_path / "in")], recursive=True)
    assert [str(x.rel) for x in deep] == ["n01/a.png", "n02/a.png", "top.png", "x.bmp", "x.webp"]
    assert [str(n) for n in output_names(deep)] == ["n01/a", "n02/a", "top", "x.bmp", "x.webp"]
    with pytest.raises(TiTokInputError, match="would both be written as a"):
        output_names(collect_images([str(tmp_path / "in" / "n01"), str(tmp_path / "in" / "n02")]))
    with pytest.raises(TiTokInputError, match="is given twice"):
        output_names(collect_images([str(tmp_path / "in" / "top.png")] * 2))
    monkeypatch.chdir(tmp_path / "in")
    (tmp_path / "list.txt").write_text("# a comment\n\nn01/a.png\n  top.png  \n")
    assert [str(x.path) for x in collect_images([], list_file=str(tmp_path / "list.txt"))] == ["n01/a.png",
                                                                                               "top.png"]
    (tmp_path / "list.txt").write_text("missing.png\n")
    with pytest.raises(TiTokInputError, match=r"image not found: missing.png \(line 1 of"):
        collect_images([], list_file=str(tmp_path / "list.txt"))
