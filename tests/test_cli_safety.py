"""The `titok` command never loses data, never writes silent garbage, and never shows a traceback (issue 12);
and it runs through `titok.pipeline.Pipeline` with outputs identical to the reference computation (issue 10).

Most cases call `titok.cli.main` in-process (fast); the ones where the process itself matters (exit status,
stderr, umask, imports) run `python -m titok` in a subprocess.
"""
import dataclasses
import io
import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import titok.cli as cli
from titok.cli import options
from conftest import snapshot
from titok.cli import main
from titok.configs import TINY_GENERATOR, TINY_TOKENIZER, SamplerConfig
from titok.images import load_image, to_uint8
from titok.loading import build_generator_model, build_tokenizer, init_random_weights, load_generator, \
    load_tokenizer

STEPS = 2
TINY_VAE = dataclasses.replace(TINY_TOKENIZER, quantize_mode="vae", codebook_size=0, two_stage=False,
                               use_l2_norm=False, is_legacy=False, token_size=16)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny tokenizer, generator (2 sampling steps) and VAE tokenizer folders with random weights."""
    root = tmp_path_factory.mktemp("models")
    init_random_weights(build_tokenizer(TINY_TOKENIZER), seed=1).save_pretrained(root / "tok")
    gen_cfg = dataclasses.replace(TINY_GENERATOR, sampler=SamplerConfig(num_steps=STEPS))
    init_random_weights(build_generator_model(gen_cfg), seed=2).save_pretrained(root / "gen",
                                                                                tokenizer_cfg=TINY_TOKENIZER)
    init_random_weights(build_tokenizer(TINY_VAE), seed=3).save_pretrained(root / "vae")
    return root


def _rgb(path, size=(80, 60), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def cli_run(capsys, *argv):
    """main(argv) in-process -> (exit status, stdout, stderr lines)."""
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def run(*argv, **kwargs):
    """`python -m titok ARGV` -> (exit status, stdout, stderr lines)."""
    proc = subprocess.run([sys.executable, "-m", "titok", *map(str, argv)], capture_output=True, text=True,
                          timeout=300, **kwargs)
    return proc.returncode, proc.stdout, [line for line in proc.stderr.splitlines() if line.strip()]


def _png_header_only(path, width, height):
    """A PNG that says it is width x height (no pixel data): enough to be refused as too large."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def assert_one_line_error(rc, err, match):
    assert rc == 2, err
    assert len(err) == 1 and match in err[0] and err[0].startswith("titok"), err


def _unwritable_dir(tmp_path):
    """A folder no file can be created in: a read-only mode bit for a normal user; /sys for root."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        (d / "probe").touch()
    except OSError:
        return d
    (d / "probe").unlink()
    try:
        open("/sys/titok-probe", "w").close()
    except OSError:
        return __import__("pathlib").Path("/sys")
    pytest.skip("no unwritable folder on this machine")


# ---- data loss ----------------------------------------------------------------------------------------

def test_an_output_never_replaces_an_input(tmp_path, models):
    photos = tmp_path / "photos"
    _rgb(photos / "a.png", (300, 200))
    _rgb(photos / "b.jpg", seed=1)
    before = snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):   # not even with --overwrite
        rc, _, err = run("reconstruct", photos, "--checkpoint", models / "tok", "--out", photos, *extra)
        assert_one_line_error(rc, err, "is an input file: an output never replaces an input")
        assert "Traceback" not in "\n".join(err)
        assert snapshot(tmp_path) == before


def test_inputs_sharing_a_name_get_distinct_outputs(tmp_path, models, capsys):
    for i, ext in enumerate(("bmp", "webp", "tiff")):
        _rgb(tmp_path / "in" / f"x.{ext}", seed=i)
    _rgb(tmp_path / "in" / "y.png", seed=9)
    rc, out, _ = cli_run(capsys, "reconstruct", tmp_path / "in", "--checkpoint", models / "tok", "--out",
                         tmp_path / "o")
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "x.bmp.png", "x.bmp.tokens.json", "x.tiff.png", "x.tiff.tokens.json", "x.webp.png", "x.webp.tokens.json",
        "y.png", "y.tokens.json"]
    for ext in ("bmp", "webp", "tiff"):
        assert json.loads((tmp_path / "o" / f"x.{ext}.tokens.json").read_text())["image"].endswith(f"x.{ext}")
    rc, _, err = cli_run(capsys, "reconstruct", tmp_path / "in" / "y.png", tmp_path / "in" / "y.png",
                         "--checkpoint", models / "tok", "--out", tmp_path / "o2")
    assert_one_line_error(rc, err, "is given twice")


def test_existing_outputs_are_replaced_only_with_overwrite(tmp_path, models, capsys):
    _rgb(tmp_path / "in" / "a.png")
    _rgb(tmp_path / "in" / "b.png", seed=1)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "b.tokens.json").write_text("mine")
    (tmp_path / "t.npy").write_text("mine")
    (tmp_path / "g.png").write_text("mine")
    tok, gen = ["--checkpoint", models / "tok"], ["--tokenizer", models / "tok", "--generator", models / "gen"]
    for argv in (["reconstruct", tmp_path / "in", *tok, "--out", tmp_path / "o"],
                 ["tokenize", tmp_path / "in", *tok, "--out", tmp_path / "t.npy"],
                 ["generate", *gen, "--classes", "1", "--out", tmp_path / "g.png"]):
        before = snapshot(tmp_path)
        rc, _, err = cli_run(capsys, *argv)
        assert_one_line_error(rc, err, "exists; pass --overwrite to replace it")
        assert snapshot(tmp_path) == before      # nothing replaced, nothing else written (no a.png either)
        rc, _, _ = cli_run(capsys, *argv, "--overwrite")
        assert rc == 0
    assert json.loads((tmp_path / "o" / "b.tokens.json").read_text())["image"].endswith("b.png")
    assert np.load(tmp_path / "t.npy").shape == (2, 8)
    assert Image.open(tmp_path / "g.png").format == "PNG"


# ---- silent garbage -----------------------------------------------------------------------------------

def test_16_bit_and_float_images_through_the_command(tmp_path, models, capsys):
    ramp = np.linspace(0.0, 1.0, 64 * 64).reshape(64, 64)
    Image.fromarray(np.rint(ramp * 65535).astype(np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(ramp.astype(np.float32), mode="F").save(tmp_path / "f.tiff")
    Image.fromarray(np.rint(ramp * 255).astype(np.uint8)).save(tmp_path / "g8.png")
    Image.fromarray((ramp * 1000).astype(np.float32), mode="F").save(tmp_path / "bad.tiff")
    g8 = load_image(tmp_path / "g8.png", 64)
    for name in ("g16.png", "f.tiff"):
        assert (load_image(tmp_path / name, 64) - g8).abs().max() <= 1 / 255 + 1e-6   # not white, not black
    rc, _, _ = cli_run(capsys, "tokenize", tmp_path / "g16.png", tmp_path / "f.tiff", "--checkpoint",
                       models / "tok", "--out", tmp_path / "t.npy")
    assert rc == 0 and np.load(tmp_path / "t.npy").shape == (2, 8)
    rc, _, err = cli_run(capsys, "tokenize", tmp_path / "g16.png", tmp_path / "bad.tiff", "--checkpoint",
                         models / "tok", "--out", tmp_path / "t2.npy")
    assert_one_line_error(rc, err, "bad.tiff has float pixels in [0, 1000]")
    assert not (tmp_path / "t2.npy").exists()


def test_nan_weights_are_refused_and_json_never_holds_nan(tmp_path, models, capsys, monkeypatch):
    from safetensors.torch import load_file, save_file

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_bytes((models / "tok" / "config.json").read_bytes())
    sd = load_file(str(models / "tok" / "model.safetensors"))
    sd["latent_tokens"] = torch.full_like(sd["latent_tokens"], float("nan"))
    save_file(sd, str(tmp_path / "bad" / "model.safetensors"))
    _rgb(tmp_path / "a.png")
    rc, _, err = cli_run(capsys, "reconstruct", tmp_path / "a.png", "--checkpoint", tmp_path / "bad", "--out",
                         tmp_path / "o")
    assert_one_line_error(rc, err, "tensor 'latent_tokens' holds 512 NaN or infinite value(s)")
    assert not (tmp_path / "o").exists()
    # An identical reconstruction has an infinite PSNR: written as null (JSON has no Infinity).
    import titok.images

    monkeypatch.setattr(titok.images, "psnr", lambda a, b: torch.full((a.shape[0],), float("inf")))
    rc, _, _ = cli_run(capsys, "reconstruct", tmp_path / "a.png", "--checkpoint", models / "tok", "--out",
                       tmp_path / "o")
    record = json.loads((tmp_path / "o" / "a.tokens.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert rc == 0 and record["psnr_db"] is None


def test_the_extension_names_the_format_and_columns_are_bounded(tmp_path, models, capsys):
    gen = ["--tokenizer", models / "tok", "--generator", models / "gen", "--classes", "1", "2"]
    for name, fmt in (("g.jpg", "JPEG"), ("g.JPEG", "JPEG"), ("g.webp", "WEBP"), ("g.tiff", "TIFF"),
                      ("g.bmp", "BMP")):
        rc, _, _ = cli_run(capsys, "generate", *gen, "--columns", "100", "--out", tmp_path / name)
        with Image.open(tmp_path / name) as img:
            assert rc == 0 and img.format == fmt and img.size == (2 * 64, 64)   # 2 columns, not 100
    for name in ("g.gif", "g", "g.npy"):
        rc, _, err = cli_run(capsys, "generate", *gen, "--out", tmp_path / name)
        assert_one_line_error(rc, err, "cannot tell the image format from the extension")
        assert not (tmp_path / name).exists()


def test_vae_tokens_shape_is_what_the_help_says(tmp_path, models, capsys):
    _rgb(tmp_path / "in" / "a.png")
    _rgb(tmp_path / "in" / "b.png", seed=1)
    for dtype in ("float32", "bfloat16"):
        rc, out, _ = cli_run(capsys, "tokenize", tmp_path / "in", "--checkpoint", models / "vae", "--dtype", dtype,
                             "--out", tmp_path / f"v-{dtype}.npy")
        arr = np.load(tmp_path / f"v-{dtype}.npy")
        assert rc == 0 and arr.shape == (2, 16, 1, 8) and arr.dtype == np.float32
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["tokenize"].format_help().split())
    assert "(N, K) int64 token ids, or (N, C, 1, K) float32 mean tokens for the continuous-token (VAE)" in help_text


# ---- one line, exit status 2, never a traceback -------------------------------------------------------

@pytest.mark.parametrize("case", ["steps-0", "device-tpu", "binary-config", "read-only-out"])
def test_errors_in_a_real_process_are_one_line(tmp_path, models, case):
    gen = ["--tokenizer", models / "tok", "--generator", models / "gen", "--classes", "1"]
    if case == "steps-0":
        argv, match = ["generate", *gen, "--steps", "0", "--out", tmp_path / "g.png"], "--steps: 0 is outside"
    elif case == "device-tpu":
        argv, match = ["generate", *gen, "--device", "tpu", "--out", tmp_path / "g.png"], "'tpu' is not a device"
    elif case == "binary-config":
        (tmp_path / "t").mkdir()
        (tmp_path / "t" / "model.safetensors").write_bytes((models / "tok" / "model.safetensors").read_bytes())
        (tmp_path / "t" / "config.json").write_bytes(bytes(range(256)) * 4)
        argv, match = ["reconstruct", _rgb(tmp_path / "a.png"), "--checkpoint", tmp_path / "t", "--out",
                       tmp_path / "o"], "config.json is not a text file"
    else:
        argv, match = ["generate", *gen, "--out", _unwritable_dir(tmp_path) / "sub" / "g.png"], "cannot write in"
    before = snapshot(tmp_path)
    rc, out, err = run(*argv)
    assert_one_line_error(rc, err, match)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, match", [
    (["generate", "{gen}", "--columns", "-1", "--out", "{d}/g.png"], "--columns: -1 is not >= 1"),
    (["generate", "{gen}", "--guidance-scale", "nan", "--out", "{d}/g.png"], "--guidance-scale: nan is not a finite"),
    (["generate", "{gen}", "--temperature=-inf", "--out", "{d}/g.png"], "--temperature: -inf is not a finite"),
    (["generate", "{gen}", "--seed", str(2**64), "--out", "{d}/g.png"], "is outside 0..18446744073709551615"),
    (["generate", "{gen}", "--seed", "-1", "--out", "{d}/g.png"], "--seed: -1 is outside"),
    (["generate", "--tokenizer", "{m}/tok", "--generator", "{m}/gen", "--classes", str(2**63), "--out",
      "{d}/g.png"], "is outside 0..9223372036854775807"),
    (["generate", "--tokenizer", "{m}/tok", "--generator", "{m}/gen", "--classes", "10", "--out", "{d}/g.png"],
     "class id 10 is outside 0..9"),
    (["generate", "--tokenizer", "{m}/tok", "--generator", "{m}/tok", "--classes", "1", "--out", "{d}/g.png"],
     "describes a tokenizer, not a generator"),
    (["generate", "{gen}", "--out", "{d}/dir.png"], "is a folder; give a file name"),
    (["generate", "{gen}", "--device", "cuda:7", "--out", "{d}/g.png"], "cuda"),
    (["generate", "{gen}", "--batch-size", "0", "--out", "{d}/g.png"], "--batch-size: 0 is not >= 1"),
    (["generate", "{gen}", "--mode", "turbo", "--out", "{d}/g.png"], "--mode: invalid choice: 'turbo'"),
    (["generate", "{gen}", "--dtype", "int8", "--out", "{d}/g.png"], "--dtype: invalid choice: 'int8'"),
    (["reconstruct", "{d}/a.png", "--checkpoint", "{d}/empty_cfg", "--out", "{d}/o"],
     "config.json is not a TiTok config"),
    (["reconstruct", "{d}/a.png", "--checkpoint", "{m}/tok", "--out", "{d}/file"], "is a file; give a folder"),
    (["reconstruct", "{d}/a.png", "--checkpoint", "{m}/tok", "--out", "{d}/file/sub"], "is a file, so"),
    (["reconstruct", "{d}/huge.png", "--checkpoint", "{m}/tok", "--out", "{d}/o"], "too large"),
    (["tokenize", "{d}/a.png", "--checkpoint", "{m}/tok", "--out", "{d}/t.txt"], "give a name ending in .npy"),
    (["tokenize", "--list", "{d}/missing.txt", "--checkpoint", "{m}/tok", "--out", "{d}/t.npy"],
     "--list file not found"),
    (["tokenize", "--checkpoint", "{m}/tok", "--out", "{d}/t.npy"], "no images given"),
    (["tokenize", "/dev/null", "--checkpoint", "{m}/tok", "--out", "{d}/t.npy"], "neither an image file nor a folder"),
    (["reconstruct", "{d}/a.png", "--checkpoint", "{m}/tok", "--out", ""], "--out is empty"),
    (["tokenize", "{d}", "--checkpoint", "{m}/tok", "--out", "{d}/t.npy", "--bogus"], "unrecognized arguments"),
], ids=lambda v: v if isinstance(v, str) and not v.startswith(("generate", "reconstruct", "tokenize")) else None)
def test_bad_values_are_one_line_errors(tmp_path, models, capsys, argv, match):
    _rgb(tmp_path / "a.png")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty_cfg").mkdir()
    (tmp_path / "empty_cfg" / "config.json").write_text("{}")
    (tmp_path / "empty_cfg" / "model.safetensors").write_bytes((models / "tok" / "model.safetensors").read_bytes())
    _png_header_only(tmp_path / "huge.png", 20000, 20000)
    before = snapshot(tmp_path)
    args = []
    for a in argv:
        if a == "{gen}":
            args += ["--tokenizer", models / "tok", "--generator", models / "gen", "--classes", "1"]
        else:
            args.append(a.format(m=models, d=tmp_path))
    rc, _, err = cli_run(capsys, *args)
    assert_one_line_error(rc, err, match)
    assert snapshot(tmp_path) == before


# ---- errors before any work ---------------------------------------------------------------------------

def test_outputs_are_checked_before_the_model_is_loaded(tmp_path, models, capsys, monkeypatch):
    monkeypatch.setattr(options, "load_tokenizer", lambda *a: pytest.fail("the model was loaded"))
    _rgb(tmp_path / "a.png")
    ro = _unwritable_dir(tmp_path)
    for argv in (["reconstruct", tmp_path / "a.png", "--checkpoint", models / "tok", "--out", ro / "o"],
                 ["tokenize", tmp_path / "a.png", "--checkpoint", models / "tok", "--out", ro / "t.npy"],
                 ["generate", "--tokenizer", models / "tok", "--generator", models / "gen", "--classes", "1",
                  "--out", ro / "g.png"]):
        rc, _, err = cli_run(capsys, *argv)
        assert_one_line_error(rc, err, "cannot write in")


def _folder_with_a_corrupt_image(tmp_path):
    for i in range(9):
        _rgb(tmp_path / "p" / f"{i}.png", seed=i)
    data = (tmp_path / "p" / "8.png").read_bytes()
    (tmp_path / "p" / "8.png").write_bytes(data[: len(data) // 2])
    return tmp_path / "p"


def test_a_corrupt_image_stops_the_run_before_the_model_runs(tmp_path, models, capsys, monkeypatch):
    from titok.pipeline import Pipeline

    folder = _folder_with_a_corrupt_image(tmp_path)
    monkeypatch.setattr(Pipeline, "encode", lambda *a: pytest.fail("the model ran"))
    before = snapshot(tmp_path)
    for cmd, out in (("tokenize", tmp_path / "t.npy"), ("reconstruct", tmp_path / "o")):
        rc, _, err = cli_run(capsys, cmd, folder, "--checkpoint", models / "tok", "--out", out, "--batch-size", "4")
        assert_one_line_error(rc, err, "1 of 9 images cannot be read (first: ")
        assert "8.png is not a readable image" in err[0] and "--skip-errors" in err[0]
        assert snapshot(tmp_path) == before


def test_skip_errors_lists_the_skipped_files_and_exits_3(tmp_path, models, capsys):
    folder = _folder_with_a_corrupt_image(tmp_path)
    rc, out, err = run("tokenize", folder, "--checkpoint", models / "tok", "--out", tmp_path / "t.npy",
                       "--skip-errors", "--batch-size", "4")
    assert rc == 3 and "Traceback" not in "\n".join(err)
    assert err == [f"titok: warning: 1 of 9 images were skipped (listed above and in {tmp_path / 't.files.json'})"]
    assert "8.png" in out
    listing = json.loads((tmp_path / "t.files.json").read_text())
    assert [os.path.basename(f) for f in listing["files"]] == [f"{i}.png" for i in range(8)]
    assert [os.path.basename(s["file"]) for s in listing["skipped"]] == ["8.png"]
    assert "truncated" in listing["skipped"][0]["error"]
    assert np.load(tmp_path / "t.npy").shape == (8, 8)
    rc, out, err = cli_run(capsys, "reconstruct", folder, "--checkpoint", models / "tok", "--out", tmp_path / "o",
                           "--skip-errors")
    assert rc == 3 and "skipped" in out and len(err) == 1
    assert sorted(p.name for p in (tmp_path / "o").glob("*.png")) == [f"{i}.png" for i in range(8)]
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "x.png").write_bytes(b"not an image")
    rc, _, err = cli_run(capsys, "tokenize", tmp_path / "only", "--checkpoint", models / "tok", "--out",
                         tmp_path / "n.npy", "--skip-errors")
    assert_one_line_error(rc, err, "none of the 1 images could be read")
    assert not (tmp_path / "n.npy").exists()


# ---- file modes, batches, the pipeline ----------------------------------------------------------------

def test_outputs_get_the_umask_permissions(tmp_path, models, capsys):
    _rgb(tmp_path / "a.png")
    old = os.umask(0o027)
    try:
        assert cli_run(capsys, "reconstruct", tmp_path / "a.png", "--checkpoint", models / "tok", "--out",
                       tmp_path / "o")[0] == 0
        assert cli_run(capsys, "tokenize", tmp_path / "a.png", "--checkpoint", models / "tok", "--out",
                       tmp_path / "t.npy")[0] == 0
    finally:
        os.umask(old)
    for p in (tmp_path / "o" / "a.png", tmp_path / "o" / "a.tokens.json", tmp_path / "t.npy",
              tmp_path / "t.files.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p
    assert stat.S_IMODE((tmp_path / "o").stat().st_mode) == 0o750
    # and in a real process with its own umask, a JPEG because the name says .jpg
    rc, _, _ = run("generate", "--tokenizer", models / "tok", "--generator", models / "gen", "--classes", "1",
                   "--out", tmp_path / "g.jpg", preexec_fn=lambda: os.umask(0o022))
    assert rc == 0 and stat.S_IMODE((tmp_path / "g.jpg").stat().st_mode) == 0o644
    assert Image.open(tmp_path / "g.jpg").format == "JPEG"


def test_cli_outputs_equal_the_reference_computation(tmp_path, models, capsys, monkeypatch):
    """Default flags: what `titok.sampler.generate` after one manual_seed gave, batch after batch (the CLI's
    output before it went through Pipeline), and the tokenizer's own encode/decode."""
    from titok.pipeline import Pipeline
    from titok.sampler import generate

    sizes = []
    original = Pipeline.generate
    monkeypatch.setattr(Pipeline, "generate", lambda self, cls, **kw: sizes.append(len(cls)) or original(self, cls,
                                                                                                         **kw))
    classes = [1, 7, 3, 9, 0, 2, 2]
    rc, _, _ = cli_run(capsys, "generate", "--tokenizer", models / "tok", "--generator", models / "gen",
                       "--classes", *classes, "--seed", "5", "--batch-size", "3", "--out", tmp_path / "g.png")
    assert rc == 0 and sizes == [3, 3, 1]                       # memory bounded by --batch-size
    tok, gen = load_tokenizer(models / "tok"), load_generator(models / "gen")
    torch.manual_seed(5)
    images = []
    with torch.no_grad():
        for i in range(0, len(classes), 3):
            ids = generate(gen, torch.tensor(classes[i:i + 3]), gen.cfg.sampler)
            images.append(to_uint8(tok.decode_tokens(ids).clamp(0.0, 1.0)))
    from titok.images import image_grid

    assert np.array_equal(np.asarray(Image.open(tmp_path / "g.png")), image_grid(np.concatenate(images)))
    _rgb(tmp_path / "in" / "a.png")
    _rgb(tmp_path / "in" / "b.png", (50, 90), seed=1)
    assert cli_run(capsys, "reconstruct", tmp_path / "in", "--checkpoint", models / "tok", "--out",
                   tmp_path / "o")[0] == 0
    with torch.no_grad():
        x = torch.stack([load_image(tmp_path / "in" / n, 64) for n in ("a.png", "b.png")])
        ids = tok.encode_tokens(x)
        recon = to_uint8(tok.decode_tokens(ids).clamp(0.0, 1.0))
    for i, n in enumerate(("a", "b")):
        assert json.loads((tmp_path / "o" / f"{n}.tokens.json").read_text())["tokens"] == ids[i].tolist()
        assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / f"{n}.png")), recon[i])


def test_mode_and_dtype_reach_the_pipeline(tmp_path, models, capsys, monkeypatch):
    from titok.pipeline import MODES, Pipeline

    assert options.MODES == MODES
    seen = []
    original = Pipeline.__init__

    def spy(self, *args, mode="reference", dtype=None, **kw):
        seen.append((mode, dtype))
        original(self, *args, mode="reference" if mode == "compile" else mode, dtype=dtype, **kw)  # compile: slow

    monkeypatch.setattr(Pipeline, "__init__", spy)
    _rgb(tmp_path / "a.png")
    assert cli_run(capsys, "tokenize", tmp_path / "a.png", "--checkpoint", models / "tok", "--mode", "compile",
                   "--dtype", "bfloat16", "--out", tmp_path / "t.npy")[0] == 0
    assert cli_run(capsys, "generate", "--tokenizer", models / "tok", "--generator", models / "gen", "--classes",
                   "1", "--mode", "fast", "--out", tmp_path / "g.png")[0] == 0
    assert cli_run(capsys, "reconstruct", tmp_path / "a.png", "--checkpoint", models / "tok", "--out",
                   tmp_path / "o")[0] == 0
    assert seen == [("compile", torch.bfloat16), ("fast", None), ("reference", None)]


# ---- --version, --recursive, --list, ETA --------------------------------------------------------------

def test_version_imports_neither_torch_nor_triton():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "titok", "--version"], capture_output=True,
                          text=True, timeout=120)
    import titok

    assert proc.returncode == 0 and proc.stdout.strip() == f"titok {titok.__version__}"
    modules = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not [m for m in modules if m.split(".")[0] in ("torch", "triton", "numpy")]


def test_recursive_folders_and_list_files(tmp_path, models, capsys, monkeypatch):
    for c in ("n01", "n02"):
        _rgb(tmp_path / "train" / c / "img.png", seed=len(c))
    rc, _, err = cli_run(capsys, "tokenize", tmp_path / "train", "--checkpoint", models / "tok", "--out",
                         tmp_path / "t.npy")
    assert_one_line_error(rc, err, "it has subfolders: add --recursive")
    rc, _, _ = cli_run(capsys, "tokenize", tmp_path / "train", "-r", "--checkpoint", models / "tok", "--out",
                       tmp_path / "t.npy")
    files = json.loads((tmp_path / "t.files.json").read_text())["files"]
    assert rc == 0 and [os.path.relpath(f, tmp_path) for f in files] == ["train/n01/img.png", "train/n02/img.png"]
    rc, _, _ = cli_run(capsys, "reconstruct", tmp_path / "train", "--recursive", "--checkpoint", models / "tok",
                       "--out", tmp_path / "o")
    assert rc == 0 and sorted(str(p.relative_to(tmp_path / "o")) for p in (tmp_path / "o").rglob("*.png")) == [
        "n01/img.png", "n02/img.png"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.txt").write_text("# two images\ntrain/n02/img.png\n\ntrain/n01/img.png\n")
    rc, _, _ = cli_run(capsys, "tokenize", "--list", "list.txt", "--checkpoint", models / "tok", "--out", "l.npy")
    assert rc == 0 and json.loads((tmp_path / "l.files.json").read_text())["files"] == [
        "train/n02/img.png", "train/n01/img.png"]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_on_a_terminal_plain_lines_every_10_s_in_logs(monkeypatch):
    from rich.progress import Progress, TimeRemainingColumn

    monkeypatch.setattr(sys, "stderr", _Terminal())
    bars = options.progress()
    assert isinstance(bars, Progress) and any(isinstance(c, TimeRemainingColumn) for c in bars.columns)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    progress = options.progress()   # not a terminal: no bars, a plain line every PROGRESS_INTERVAL_S
    assert isinstance(progress, options.LineProgress) and progress.interval == options.PROGRESS_INTERVAL_S == 10
    with progress:
        task = progress.add_task("generating", total=8)
        progress.advance(task, 2)
    assert log.getvalue() == ""  # a run shorter than the interval prints nothing
    fast = options.LineProgress(log, interval=0.02)
    with fast:
        fast.add_task("checking images", total=4)
        task = fast.add_task("reconstructing", total=8)
        fast.advance(task, 2)
        time.sleep(0.2)
        fast.advance(task, 1)
    lines = log.getvalue().splitlines()
    assert 2 <= len(lines) <= 11, lines  # one per interval, not one per advance
    assert lines[0] == "titok: reconstructing 2/8 (25%), 0 s elapsed", lines
    assert all(line.startswith("titok: reconstructing ") and line.endswith(" s elapsed") for line in lines)


def test_info_is_whole_names_in_80_columns_plain_when_piped(capsys, monkeypatch):
    import re

    from titok.configs import VARIANTS

    assert main(["info"]) == 0   # stdout is not a terminal under capsys
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert out.isascii() and max(map(len, lines)) <= 80 and all(line == line.rstrip() for line in lines)
    for name, v in VARIANTS.items():
        assert sum(line.split()[:1] == [name] for line in lines) == 2, name   # its table row and its weights
        if v.tokenizer_repo:
            assert any(line.split()[-1:] == [v.tokenizer_repo] for line in lines), name
    assert "hf download REPO" in out
    monkeypatch.setenv("COLUMNS", "80")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["info"]) == 0
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.getvalue()).splitlines()
    assert max(map(len, shown)) <= 80 and "…" not in "".join(shown)
    assert all(any(line.split()[:1] == [name] for line in shown) for name in VARIANTS)


def test_each_help_lists_only_the_exit_statuses_its_command_returns(capsys):
    helps = {}
    for command in ("reconstruct", "tokenize", "generate", "sample", "decode"):
        assert main([command, "--help"]) == 0
        helps[command] = " ".join(capsys.readouterr().out.split())
    for command, text in helps.items():
        assert "Exit status: 0 done, 2 error" in text and "130 interrupted" in text, command
        assert ("3 done with skipped inputs (--skip-errors)" in text) == ("--skip-errors" in text), command
    assert "--skip-errors" not in helps["generate"] and "--skip-errors" in helps["tokenize"]
    # tokenize names the file list it writes as it is named: --out tokens.npy -> tokens.files.json
    assert "NAME.files.json beside NAME.npy (--out tokens.npy: tokens.files.json)" in helps["tokenize"]
    assert "<out>.files.json" not in helps["tokenize"]


def test_a_released_checkpoint_not_in_the_cache_says_how_to_download_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    repo = "yucornetto/tokenizer_titok_b64_imagenet"
    rc, _, err = cli_run(capsys, "reconstruct", tmp_path / "a.png", "--checkpoint", repo, "--out", tmp_path / "o")
    assert rc == 2 and len(err) == 1 and f"`hf download {repo}`" in err[0], err
    assert f"huggingface_hub.snapshot_download('{repo}')" in err[0]
    rc, _, err = cli_run(capsys, "generate", "--model", "titok-l-32", "--classes", "1", "--out", tmp_path / "g.png")
    assert rc == 2 and len(err) == 1 and "`hf download yucornetto/generator_titok_l32_imagenet`" in err[0], err
    assert not (tmp_path / "o").exists() and not (tmp_path / "g.png").exists()
