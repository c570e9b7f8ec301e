"""`titok sample` (evaluation sets at scale) and `titok decode`: the sample set does not depend on how it was
computed (batch size, one or two processes under torchrun, a crash and a resume), restarts with other
settings are refused, the .npz is what the evaluation suite reads, and decode closes the loop."""
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from titok.cli import main
from titok.configs import TINY_GENERATOR, TINY_TOKENIZER, SamplerConfig
from titok.errors import TiTokInputError
from titok.evalset import EvalPlan, parse_classes, read_npz_header
from titok.noise import SampleNoise, noise_counter, step_noise, uniform_at
from titok.loading import build_generator_model, build_tokenizer, init_random_weights, save_pretrained

N_CLASSES, PER_CLASS = 10, 2          # the tiny generator has 10 classes: N = 20 samples of 64x64
STEPS = 3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tok = init_random_weights(build_tokenizer(TINY_TOKENIZER), seed=1).eval()
    gcfg = dataclasses.replace(TINY_GENERATOR, sampler=SamplerConfig(num_steps=STEPS))
    gen = init_random_weights(build_generator_model(gcfg), seed=2).eval()
    save_pretrained(tok, root / "tok", tokenizer_cfg=TINY_TOKENIZER)
    save_pretrained(gen, root / "gen", tokenizer_cfg=TINY_TOKENIZER, generator_cfg=gcfg)
    return root


def _sample_args(models, out, *extra):
    return ["sample", "--tokenizer", str(models / "tok"), "--generator", str(models / "gen"), "--out", str(out),
            "--num-per-class", str(PER_CLASS), "--shard-size", "4", "--decode-batch-size", "4", "--device", "cpu",
            "--dtype", "float32", *extra]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _torchrun(args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    env.pop("OMP_NUM_THREADS", None)  # torchrun sets 1 per process, the usual multi-process setting
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "titok", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


# ---- the noise: a function of (seed, sample index, step) only ---------------------------------------------

def test_noise_is_the_documented_stream_and_per_sample():
    u_s, u_c = step_noise(7, [5, 2], 1, 3, 4)
    assert u_s.shape == (2, 3, 4) and u_c.shape == (2, 3) and u_s.dtype == torch.float32
    assert u_s[0, 2, 1].item() == uniform_at(7, noise_counter(5, 1, 0, 2 * 4 + 1))
    assert u_c[1, 2].item() == uniform_at(7, noise_counter(2, 1, 1, 2))
    whole = SampleNoise(7, torch.arange(6), 2, 3, 4)
    for step in range(2):  # a sample's noise does not depend on the other samples of its batch
        assert torch.equal(whole[step][0][[5, 2]], step_noise(7, [5, 2], step, 3, 4)[0])
        assert torch.equal(whole[step][1][[5, 2]], step_noise(7, [5, 2], step, 3, 4)[1])
    assert not torch.equal(whole[0][0], whole[1][0])
    assert not torch.equal(whole[0][0], step_noise(8, range(6), 0, 3, 4)[0])  # another seed
    big = step_noise(0, torch.arange(64), 0, 32, 64)[0]
    assert 0.0 <= big.min() and big.max() < 1.0 and abs(big.mean().item() - 0.5) < 0.01
    assert abs(big.var().item() - 1 / 12) < 0.002


def test_parse_classes_and_plan():
    assert parse_classes(["all"], 4) == [0, 1, 2, 3]
    assert parse_classes(["0-2,7", "9"], 10) == [0, 1, 2, 7, 9]
    for bad, match in ((["10"], "outside 0..9"), (["3-1"], "empty range"), (["x"], "give all"), ([","], "no class")):
        with pytest.raises(TiTokInputError, match=match):
            parse_classes(bad, 10)
    plan = EvalPlan((3, 5), 3, 4)
    assert plan.num_samples == 6 and plan.num_shards == 2 and plan.shard_range(1) == (4, 6)
    assert plan.labels().tolist() == [3, 5, 3, 5, 3, 5]


# ---- the acceptance test: one process, another batch size, two processes killed and resumed -------------

def test_sample_set_does_not_depend_on_batch_size_processes_or_resume(models, tmp_path, capsys):
    one, other, two = tmp_path / "one", tmp_path / "other", tmp_path / "two"
    assert main(_sample_args(models, one, "--batch-size", "3")) == 0
    assert main(_sample_args(models, other, "--batch-size", "8", "--keep-shards")) == 0
    assert "20 samples" in capsys.readouterr().out

    # Two processes (gloo); rank 1 dies right after its first shard: torchrun stops rank 0 too.
    crashed = _torchrun(_sample_args(models, two, "--batch-size", "3"), {"TITOK_SAMPLE_TEST_EXIT": "1:1"})
    assert crashed.returncode != 0, crashed.stderr[-2000:]
    assert not (two / "samples.npz").exists()
    left = sorted(p.name for p in (two / "shards").iterdir())
    assert 1 <= len(left) < 5 and not [n for n in left if n.startswith(".")], left
    resumed = _torchrun(_sample_args(models, two, "--batch-size", "3"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # Byte-identical archives (fixed zip timestamps), hence identical arr_0, labels and tokens.
    assert _digest(one / "samples.npz") == _digest(other / "samples.npz") == _digest(two / "samples.npz")
    assert _digest(one / "tokens.npy") == _digest(two / "tokens.npy")
    with np.load(two / "samples.npz") as z:
        assert z.files == ["arr_0", "labels"]
        arr, labels = z["arr_0"], z["labels"]
    assert arr.shape == (N_CLASSES * PER_CLASS, 64, 64, 3) and arr.dtype == np.uint8
    assert labels.tolist() == [i % N_CLASSES for i in range(20)] and np.bincount(labels).tolist() == [2] * 10
    assert read_npz_header(two / "samples.npz") == ((20, 64, 64, 3), np.dtype(np.uint8))  # the suite's reader
    assert arr.std() > 0 and len({arr[i].tobytes() for i in range(20)}) == 20
    pngs = sorted((two / "samples").iterdir())
    assert [p.name for p in pngs[:2]] == ["000000_c0000.png", "000001_c0001.png"] and len(pngs) == 20
    assert np.array_equal(np.asarray(Image.open(two / "samples" / "000013_c0003.png")), arr[13])
    assert not (two / "shards").exists() and (other / "shards").is_dir()
    summary = json.loads((two / "summary.json").read_text())
    first, last = summary["runs"] if len(summary["runs"]) == 2 else (None, summary["runs"][-1])
    assert last["world_size"] == 2 and last["samples_made"] + last["samples_before"] == 20
    assert 0 < last["samples_made"] < 20 and last["samples_per_s"] > 0
    assert summary["settings"]["seed"] == 0 and summary["settings"]["dtype"] == "float32"

    # The same command on a finished folder does nothing; other settings are refused (one line, exit 2).
    assert main(_sample_args(models, one, "--batch-size", "5")) == 0
    assert "nothing to do" in capsys.readouterr().err
    for extra, word in ((["--seed", "1"], "seed 0 there, 1 now"), (["--steps", "2"], "sampler.num_steps"),
                        (["--dtype", "bfloat16"], "dtype"), (["--classes", "0-4"], "classes")):
        args = _sample_args(models, other, *extra)
        if "--dtype" in extra:
            args.remove("float32"), args.remove("--dtype")
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and word in err[0] and "other settings" in err[0], err
    assert _digest(other / "samples.npz") == _digest(one / "samples.npz")


def test_bf16_fast_and_reference_do_not_depend_on_batch_size(models, tmp_path):
    """The default dtype of fast mode on a bf16 CPU, and the reference runtime: batch 1 vs 7."""
    for mode, dtype in (("fast", "bfloat16"), ("reference", "float32")):
        digests = []
        for batch in ("1", "7"):
            out = tmp_path / f"{mode}{batch}"
            args = _sample_args(models, out, "--batch-size", batch, "--mode", mode, "--classes", "0-4", "--no-png")
            args[args.index("--dtype") + 1] = dtype
            assert main(args) == 0
            digests.append(_digest(out / "samples.npz"))
            assert not (out / "samples").exists()
        assert digests[0] == digests[1], mode


@pytest.fixture
def restore_threads():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def test_sample_set_does_not_depend_on_the_thread_count(models, tmp_path, restore_threads):
    """One process, torch's intra-op thread count 1 vs 2 (1: the items run one after another; 2: two at once on
    the pool), reference and fast, fp32 and bf16: the same tokens.npy and samples.npz bytes, and titok decode
    gives the same pixels at either count. The guarantee comes from every work item running on ONE intra-op
    thread (next test), which is what makes it hold on CPUs whose kernels round by thread count (Intel/AMX)."""
    for mode, dtype in (("reference", "float32"), ("fast", "float32"), ("fast", "bfloat16")):
        digests = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = tmp_path / f"{mode}_{dtype}_{threads}"
            args = _sample_args(models, out, "--batch-size", "3", "--mode", mode, "--classes", "0-5", "--no-png")
            args[args.index("--dtype") + 1] = dtype
            assert main(args) == 0
            assert torch.get_num_threads() == threads  # the caller's count is restored
            manifest = json.loads((out / "manifest.json").read_text())
            assert manifest["pixels_depend_on"]["intra_op_threads_per_item"] == 1
            digests.append((_digest(out / "tokens.npy"), _digest(out / "samples.npz")))
        assert digests[0] == digests[1], (mode, dtype)
    decoded = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        dec = tmp_path / f"dec{threads}"
        assert main(["decode", str(tmp_path / "fast_float32_1" / "tokens.npy"), "--checkpoint", str(models / "tok"),
                     "--out", str(dec), "--dtype", "float32", "--mode", "fast", "--batch-size", "4",
                     "--device", "cpu"]) == 0
        decoded.append([p.read_bytes() for p in sorted(dec.iterdir())])
    assert decoded[0] == decoded[1] and len(decoded[0]) == 12


def test_every_work_item_runs_on_one_intra_op_thread(models, restore_threads):
    """generate_shard on a CPU: each generation batch and each decode chunk sees torch.get_num_threads() == 1,
    two pool threads share the work, results come back in order, and the caller's thread count is restored."""
    import threading

    from titok.evalset import generate_shard
    from titok.pipeline import Pipeline
    from titok.loading import load_generator, load_tokenizer

    pipe = Pipeline(load_tokenizer(str(models / "tok")), load_generator(str(models / "gen")), mode="fast",
                    dtype=torch.float32)
    seen = []
    for name in ("generate_tokens", "decode_tokens"):
        real = getattr(pipe, name)

        def spy(*a, _real=real, _name=name, **kw):
            seen.append((_name, torch.get_num_threads(), threading.get_ident()))
            return _real(*a, **kw)
        setattr(pipe, name, spy)
    torch.set_num_threads(2)
    plan = EvalPlan(tuple(range(10)), 1, 10)
    images, labels, tokens = generate_shard(pipe, plan, 0, 0, batch_size=3, decode_batch=4)
    assert torch.get_num_threads() == 2
    assert [n for n, _, _ in seen].count("generate_tokens") == 4 and [n for n, _, _ in seen].count("decode_tokens") == 3
    assert {t for _, t, _ in seen} == {1}
    assert len({ident for _, _, ident in seen}) == 2 and threading.get_ident() not in {i for _, _, i in seen}
    alone, _, tokens_alone = generate_shard(pipe, plan, 0, 0, batch_size=3, decode_batch=4, workers=1)
    assert np.array_equal(tokens, tokens_alone) and np.array_equal(images, alone) and labels.tolist() == list(range(10))


def test_item_runner_contract(restore_threads):
    from titok.cpu_threads import ItemRunner

    torch.set_num_threads(2)
    with ItemRunner("cpu") as runner:
        assert runner.workers == 2 and torch.get_num_threads() == 1
        assert list(runner.map(lambda x: (x * x, torch.get_num_threads()), range(5))) == [(x * x, 1) for x in range(5)]

        def boom(x):
            if x == 3:
                raise ValueError("item 3")
            return x
        with pytest.raises(ValueError, match="item 3"):
            list(runner.map(boom, range(5)))
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="inside"):
        list(ItemRunner("cpu").map(abs, [1]))
    with pytest.raises(ValueError, match="workers"):
        ItemRunner("cpu", workers=0)
    with ItemRunner("meta") as other:  # not a CPU: items run in the caller's thread, the thread count untouched
        assert torch.get_num_threads() == 2 and list(other.map(abs, [-1, -2])) == [1, 2]


def test_old_format_folder_is_refused_with_one_line(models, tmp_path, capsys):
    out = tmp_path / "old"
    assert main(_sample_args(models, out, "--classes", "0-1", "--num-per-class", "1", "--no-png")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format"] = "titok-sample/1"
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "samples.npz").unlink()
    capsys.readouterr()
    assert main(_sample_args(models, out, "--classes", "0-1", "--num-per-class", "1", "--no-png")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "titok-sample/1" in err[0] and "thread count" in err[0], err


# ---- errors, and decode ------------------------------------------------------------------------------------

def test_sample_errors_are_one_line(models, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    cases = [(["sample", "--tokenizer", str(models / "tok"), "--out", str(tmp_path / "x")], "--generator"),
             (_sample_args(models, tmp_path / "y", "--classes", "3-12"), "outside 0..9"),
             (_sample_args(models, tmp_path / "z", "--num-per-class", "0"), "--num-per-class"),
             (_sample_args(models, tmp_path / "afile"), "is a file")]
    for argv, match in cases:
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and match in lines[0] and "Traceback" not in lines[0], lines
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_decode_closes_the_loop_with_sample_and_tokenize(models, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(_sample_args(models, out, "--batch-size", "4", "--classes", "0-5", "--no-png")) == 0
    dec = tmp_path / "dec"
    argv = ["decode", str(out / "tokens.npy"), "--checkpoint", str(models / "tok"), "--out", str(dec),
            "--dtype", "float32", "--batch-size", "4", "--device", "cpu"]
    assert main(argv) == 0
    with np.load(out / "samples.npz") as z:
        arr = z["arr_0"]
    names = sorted(p.name for p in dec.iterdir())
    assert names[0] == "000000.png" and len(names) == 12
    for i in (0, 11):  # decode pads every batch like sample does: the very same pixels
        assert np.array_equal(np.asarray(Image.open(dec / f"{i:06d}.png")), arr[i])
    capsys.readouterr()
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err  # outputs exist
    assert main([*argv, "--overwrite"]) == 0

    # tokenize -> decode: names carry the images' names (from <tokens>.files.json)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(imgs / f"{name}.png")
    assert main(["tokenize", str(imgs), "--checkpoint", str(models / "tok"), "--out", str(tmp_path / "t.npy")]) == 0
    assert main(["decode", str(tmp_path / "t.npy"), "--checkpoint", str(models / "tok"), "--out",
                 str(tmp_path / "back"), "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["000000_cat.png", "000001_dog.png"]
    np.save(tmp_path / "bad.npy", np.full((2, 8), 64))
    capsys.readouterr()
    assert main(["decode", str(tmp_path / "bad.npy"), "--checkpoint", str(models / "tok"), "--out",
                 str(tmp_path / "bad")]) == 2
    assert "outside the codebook" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_stale_temporaries_of_a_killed_run_are_removed_and_only_those(tmp_path):
    from titok.evalset import Layout
    from titok.evalset.manifest import _remove_stale_temporaries

    for name in ("shards/.shard_00001.npz.0a1b2c3d.tmp", "samples/.000001_c0001.png.deadbeef.tmp",
                 ".samples.npz.01234567.tmp", ".notes.txt.01234567.tmp", "keep.tmp"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    _remove_stale_temporaries(Layout(tmp_path, EvalPlan((0,), 1, 1), 10))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [".notes.txt.01234567.tmp", "keep.tmp"]


# ---- the output folder answers before any model loads -----------------------------------------------------

def test_finished_run_and_changed_settings_are_answered_before_any_model_loads(models, tmp_path, capsys,
                                                                               monkeypatch):
    from titok.cli import options

    out = tmp_path / "done"
    small = ("--classes", "0-1", "--num-per-class", "1", "--no-png")
    assert main(_sample_args(models, out, *small)) == 0
    files = json.loads((out / "manifest.json").read_text())["sources"]["files"]
    assert [Path(f[0]).name for f in files] == ["config.json", "model.safetensors"] * 2
    capsys.readouterr()
    real, loads = options.load_generation, []

    def spy(*a, **kw):
        loads.append(a)
        return real(*a, **kw)
    monkeypatch.setattr(options, "load_generation", spy)
    assert main(_sample_args(models, out, *small, "--batch-size", "5")) == 0
    assert "is complete (2 samples in" in capsys.readouterr().err and loads == []
    for extra, word in ((["--seed", "1"], "seed 0 there, 1 now"), (["--steps", "2"], "sampler.num_steps 3 there"),
                        (["--classes", "0-2"], "classes"), (["--mode", "reference"], "mode"),
                        (["--decode-batch-size", "2"], "decode_batch_size")):
        assert main(_sample_args(models, out, *small, *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and word in err[0] and "other settings" in err[0], err
    assert loads == []
    # A weights file touched since: the models are loaded and compared by their digest (still the same run).
    weights = models / "gen" / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert main(_sample_args(models, out, *small)) == 0
    finally:
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "nothing to do" in capsys.readouterr().err and len(loads) == 1


def test_steps_limit_is_the_noise_counter_s(models, tmp_path, capsys):
    from titok.evalset import MAX_STEPS

    assert MAX_STEPS == 1024
    step_noise(0, [0], MAX_STEPS - 1, 3, 4)  # the last step the counter's 10-bit field holds
    with pytest.raises(ValueError, match="step must lie in"):
        step_noise(0, [0], MAX_STEPS, 3, 4)
    helps = {}
    for command in ("generate", "sample"):
        assert main([command, "--help"]) == 0
        helps[command] = [line for line in capsys.readouterr().out.splitlines() if "--steps N" in line][-1]
    assert helps["generate"] == helps["sample"] and "(1..1024)" in helps["sample"]
    assert main(_sample_args(models, tmp_path / "x", "--steps", "1025")) == 2
    assert "outside 1..1024" in capsys.readouterr().err


# ---- the library: a run from Python ------------------------------------------------------------------------

def test_a_run_from_python_gives_the_command_lines_bytes(models, tmp_path, capsys):
    from titok.evalset import SampleSettings, run_sample

    assert main(_sample_args(models, tmp_path / "cli", "--no-png")) == 0
    settings = SampleSettings(out=tmp_path / "lib", tokenizer=str(models / "tok"), generator=str(models / "gen"),
                              num_per_class=PER_CLASS, shard_size=4, decode_batch_size=4, device="cpu",
                              dtype="float32", no_png=True)
    assert run_sample(settings) == 0
    for name in ("samples.npz", "tokens.npy"):
        assert _digest(tmp_path / "lib" / name) == _digest(tmp_path / "cli" / name), name
    capsys.readouterr()


@pytest.mark.parametrize("field, value", [("num_per_class", 0), ("mode", "turbo"), ("dtype", "fp8"), ("seed", -1),
                                          ("steps", 2000), ("guidance_scale", float("nan")), ("batch_size", 1.5)])
def test_bad_settings_name_the_field(field, value):
    from titok.evalset import SampleSettings

    with pytest.raises(TiTokInputError, match=field):
        SampleSettings(out="x", **{field: value})
