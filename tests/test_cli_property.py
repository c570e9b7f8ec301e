"""Property: whatever the arguments and whatever the files, `titok` either succeeds or prints ONE line on stderr
with exit status 2 (3 when --skip-errors skipped files), never a traceback, never a partial or replaced output.

Hypothesis draws the command, option values (valid, out of range, non-numbers, NaN), the input files (good
images of several modes, truncated, random bytes, empty, folders, missing, huge headers), the checkpoint (the
right one, another model's, a broken config.json, missing) and the output location (new, existing file or
folder, under a file, an input, unwritable). `main()` runs in-process (a fresh process costs seconds).
Derandomized, so that CI runs the same 25 examples every time.
"""
import contextlib
import dataclasses
import io
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import snapshot
from titok.cli import main
from titok.configs import TINY_GENERATOR, TINY_TOKENIZER, SamplerConfig
from titok.loading import build_generator_model, build_tokenizer, init_random_weights

GOOD_FILES = ("rgb", "grey_jpg", "i16", "float01", "rgba_gif", "folder")
BAD_FILES = ("float_bad", "truncated", "random_bytes", "empty", "missing", "huge_header")
IMAGE_FAULTS = ("bad_file", "no_files", "checkpoint", "out_existing_file", "out_existing_dir", "out_under_file",
                "out_input", "out_unwritable", "bad_ext", "bad_batch", "bad_mode", "bad_dtype", "bad_device", "bogus")
GENERATE_FAULTS = ("bad_class", "bad_steps", "bad_guidance", "bad_temperature", "bad_columns", "bad_seed",
                   "checkpoint", "generator", "out_existing_file", "out_existing_dir", "out_under_file",
                   "out_unwritable", "bad_ext", "bad_batch", "bad_mode", "bad_dtype", "bad_device", "bogus")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    init_random_weights(build_tokenizer(TINY_TOKENIZER), seed=1).save_pretrained(root / "tok")
    vae = dataclasses.replace(TINY_TOKENIZER, quantize_mode="vae", codebook_size=0, two_stage=False,
                              use_l2_norm=False, is_legacy=False, token_size=16)
    init_random_weights(build_tokenizer(vae), seed=3).save_pretrained(root / "vae")
    gen_cfg = dataclasses.replace(TINY_GENERATOR, sampler=SamplerConfig(num_steps=2))
    init_random_weights(build_generator_model(gen_cfg), seed=2).save_pretrained(root / "gen",
                                                                                tokenizer_cfg=TINY_TOKENIZER)
    (root / "bad_config").mkdir()
    shutil.copy(root / "tok" / "model.safetensors", root / "bad_config")
    (root / "bad_config" / "config.json").write_bytes(b'{"model": {"vq_model": {"token_size": "twelve"}}}')
    return root


def _make_input(folder: Path, kind: str, i: int, noise: bytes) -> Path:
    path = folder / f"in{i}.png"
    rng = np.random.default_rng(i)
    if kind == "rgb":
        Image.fromarray(rng.integers(0, 255, (30 + i, 50, 3), dtype=np.uint8)).save(path)
    elif kind == "grey_jpg":
        path = path.with_suffix(".jpg")
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(path)
    elif kind == "i16":
        Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)).save(path)
    elif kind in ("float01", "float_bad"):
        path = path.with_suffix(".tiff")
        scale = 1.0 if kind == "float01" else -500.0
        Image.fromarray((rng.random((40, 40)) * scale).astype(np.float32), mode="F").save(path)
    elif kind == "rgba_gif":
        path = path.with_suffix(".gif")
        Image.fromarray(rng.integers(0, 255, (40, 40, 4), dtype=np.uint8)).save(path)
    elif kind == "truncated":
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[: 40 + len(noise)])
    elif kind == "random_bytes":
        path.write_bytes(noise)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path = folder / f"dir{i}"
        path.mkdir()
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path / "a.png")
        (path / "sub").mkdir()
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path / "sub" / "b.bmp")
    elif kind == "huge_header":
        import struct
        import zlib

        def chunk(tag, data):
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
                         + chunk(b"IEND", b""))
    return path  # "missing": a path that is never created


bad_number = st.one_of(st.integers(-3, 0).map(str), st.integers(2**63, 2**66).map(str),
                       st.sampled_from(["x", "", "1e3", "nan", "-inf", "inf"]))


@st.composite
def scenarios(draw):
    """A valid command line and files, with 0 to 2 faults (a bad value, a bad file, a bad output, ...) put in."""
    command = draw(st.sampled_from(["reconstruct", "tokenize", "generate", "generate", "info"]))
    kinds = GENERATE_FAULTS if command == "generate" else IMAGE_FAULTS
    faults = set(draw(st.lists(st.sampled_from(kinds + ("none",) * (len(kinds) // 2)), min_size=1, max_size=2)))
    s = {"command": command, "options": [], "files": [], "noise": draw(st.binary(max_size=48)), "out": "new"}
    opts = s["options"]
    if command == "info":
        if draw(st.booleans()):
            opts += ["--model", draw(st.sampled_from(["titok-l-32", "titok-b-64", "titok-xl-1"]))]
        return s
    if command == "generate":
        s["checkpoint"] = draw(st.sampled_from(["vae", "missing"])) if "checkpoint" in faults else "tok"
        s["generator"] = draw(st.sampled_from(["tok", "missing"])) if "generator" in faults else "gen"
        s["ext"] = draw(st.sampled_from([".gif", "", ".npy"] if "bad_ext" in faults else
                                        [".png", ".png", ".jpg", ".webp", ".bmp", ".tiff"]))
        classes = draw(st.lists(st.integers(0, 9), min_size=1, max_size=3))
        if "bad_class" in faults:
            classes[draw(st.integers(0, len(classes) - 1))] = draw(st.sampled_from([-1, 10, 2**63, 2**64]))
        opts += ["--classes", *map(str, classes)]
        good = {"--steps": st.integers(1, 3), "--guidance-scale": st.floats(0, 10), "--temperature": st.floats(0, 10),
                "--columns": st.integers(1, 5), "--seed": st.integers(0, 2**64 - 1)}
        for flag, values in good.items():
            if f"bad_{flag[2:].split('-')[0]}" in faults:
                opts.append(f"{flag}={draw(bad_number)}")
            elif draw(st.booleans()):
                opts.append(f"{flag}={draw(values)}")
    else:
        kinds = draw(st.lists(st.sampled_from(GOOD_FILES), min_size=1, max_size=3))
        if "bad_file" in faults:
            kinds[draw(st.integers(0, len(kinds) - 1))] = draw(st.sampled_from(BAD_FILES))
        s["files"] = [] if "no_files" in faults else kinds
        s["checkpoint"] = draw(st.sampled_from(["gen", "bad_config", "missing"])) if "checkpoint" in faults else \
            draw(st.sampled_from(["tok", "tok", "vae"]))
        s["ext"] = ".txt" if "bad_ext" in faults else ".npy"
        for flag in ("--skip-errors", "--recursive"):
            if draw(st.booleans()):
                opts.append(flag)
    outs = [f for f in faults if f.startswith("out_")]
    if outs:
        s["out"] = outs[0][4:]
    for flag, good, bad in (("--mode", ["reference", "fast"], ["turbo", "REFERENCE"]),
                            ("--dtype", ["float32", "bfloat16"], ["int8", "fp32"]),
                            ("--device", ["cpu", "auto"], ["tpu", "cuda:3", "", "cpu:x"]),
                            ("--batch-size", ["1", "2", "8"], ["0", "-1", "x", str(2**70)])):
        if f"bad_{flag[2:].split('-')[0]}" in faults:
            opts += [flag, draw(st.sampled_from(bad))]
        elif draw(st.booleans()):
            opts += [flag, draw(st.sampled_from(good))]
    if draw(st.integers(0, 3)) == 0:
        opts.append("--overwrite")
    if "bogus" in faults:
        opts.append(draw(st.sampled_from(["--bogus", "--out-dir=x"])))
    return s


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario=scenarios())
def test_any_arguments_and_files_give_success_or_one_line_exit_2(models, scenario):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        work = root / "work"
        work.mkdir()
        inputs = [_make_input(work, kind, i, scenario["noise"]) for i, kind in enumerate(scenario["files"])]
        argv = [scenario["command"], *map(str, inputs)]
        if scenario["command"] in ("reconstruct", "tokenize"):
            argv += ["--checkpoint", str(models / scenario["checkpoint"])]
        elif scenario["command"] == "generate":
            argv += ["--tokenizer", str(models / scenario["checkpoint"]),
                     "--generator", str(models / scenario["generator"])]
        if scenario["command"] != "info":
            argv += ["--out", str(_out_path(root, work, scenario, inputs))]
        argv += scenario["options"]
        before = snapshot(root)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
        after = snapshot(root)
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
        allowed = {0, 2, 3} if "--skip-errors" in argv else {0, 2}
        assert rc in allowed, (argv, rc, lines)
        if rc == 2:
            assert len(lines) == 1 and lines[0].startswith("titok"), (argv, lines)
            assert after == before, (argv, "a failed run changed files", set(after) ^ set(before))
        else:
            assert not [p for p in after if re.search(r"(^|/)\.[^/]*\.tmp$", p)], (argv, "temporary files left")
            for p in inputs:                          # inputs are never changed, --overwrite or not
                rel = str(p.relative_to(root))
                if rel in before:
                    assert after.get(rel) == before[rel], (argv, rel)
            if "--overwrite" not in argv:             # and nothing that existed is replaced without it
                assert all(after.get(k) == v for k, v in before.items()), argv


def _out_path(root: Path, work: Path, scenario: dict, inputs: list) -> Path:
    kind, ext = scenario["out"], scenario.get("ext", "")
    reconstruct = scenario["command"] == "reconstruct"
    name = "out" if reconstruct else f"out{ext}"
    if kind == "existing_file":
        (root / name).write_bytes(b"keep me")
    elif kind == "existing_dir":
        (root / name).mkdir()
        (root / name / "keep.txt").write_text("keep me")
    elif kind == "under_file":
        (root / "afile").write_text("x")
        return root / "afile" / name
    elif kind == "input" and inputs and inputs[0].exists():
        return inputs[0] if not reconstruct else inputs[0].parent
    elif kind == "unwritable":
        ro = root / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro / name
    return root / name
