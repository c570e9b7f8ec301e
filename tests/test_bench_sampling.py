"""bench/sampling.py: FLOP counts, projection arithmetic, the result schema, OOM handling, the CPU notice.

Runs on CPU in well under a minute: the harness runs on the small "tiny-*" models (same code as
the real ones: TiTok pipeline, MaskGIT baseline, diffusers DiT + AutoencoderKL), and the real
models' FLOP counts are checked against hand arithmetic, not by running them.
"""
import json
import os

import pytest
import torch

from titok_bench import sampling
from titok_bench.common import ENVIRONMENT_SCHEMA, is_out_of_memory

jsonschema = pytest.importorskip("jsonschema")

with open(sampling.SCHEMA_PATH) as _f:
    SCHEMA = json.load(_f)

FAST = ["--iters", "1", "--warmup", "0", "--stage-iters", "1"]


def _validate(payload):
    jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(json.dumps(payload)))


# ---- FLOP counts -----------------------------------------------------------------------------------

def test_one_transformer_layer_by_hand():
    from titok.flops import transformer_block_flops

    # MaskGIT-ViT layer over 33 rows (class token + 32 tokens), width 768, MLP 3072; 2 FLOPs per multiply-add.
    qkv = 2 * 33 * 768 * 2304            # 116_785_152
    attention = 2 * 2 * 33 * 33 * 768    # QK^T and PV: 3_345_408
    out_proj = 2 * 33 * 768 * 768        # 38_928_384
    mlp = 2 * 2 * 33 * 768 * 3072        # 311_427_072
    assert qkv + attention + out_proj + mlp == 470_486_016
    assert transformer_block_flops(33, 768, 3072) == 470_486_016


def _pixel_decoder_by_hand(side: int, hidden: int = 128) -> int:
    """MaskGIT-VQGAN decoder from a side x side proxy grid, written out level by level."""
    c = lambda h, ci, co, k: 2 * h * h * ci * co * k * k  # noqa: E731
    total = 2 * side * side * 1024 * 256                  # softmax(logits) x VQGAN codebook
    total += c(side, 256, 4 * hidden, 3)                  # conv_in
    total += 4 * c(side, 4 * hidden, 4 * hidden, 3)       # mid: 2 res blocks x 2 convs
    # up level 4 (512 ch), 2 res blocks at `side`, then upsample conv at 2*side
    total += 4 * c(side, 512, 512, 3) + c(2 * side, 512, 512, 3)
    s = 2 * side                                          # level 3 (256 ch): 512 -> 256, nin on the output
    total += c(s, 512, 256, 3) + c(s, 256, 256, 3) + c(s, 256, 256, 1) + 2 * c(s, 256, 256, 3)
    total += c(2 * s, 256, 256, 3)
    s *= 2                                                # level 2 (256 ch)
    total += 4 * c(s, 256, 256, 3) + c(2 * s, 256, 256, 3)
    s *= 2                                                # level 1 (128 ch): 256 -> 128
    total += c(s, 256, 128, 3) + c(s, 128, 128, 3) + c(s, 128, 128, 1) + 2 * c(s, 128, 128, 3)
    total += c(2 * s, 128, 128, 3)
    s *= 2                                                # level 0 (128 ch), no upsampling
    total += 4 * c(s, 128, 128, 3)
    return total + c(s, 128, 3, 3)                        # conv_out


def test_titok_l32_generation_flops_by_hand():
    from titok.configs import get_variant
    from titok.flops import generation_flops

    # Generator: 8 steps, linear guidance decay -> step 0 unguided, 7 guided: 1 + 2 * 7 = 15 forwards.
    layer = 470_486_016
    forward = 24 * layer + 2 * 32 * 768 * 4096            # + lm_head over the 32 image rows
    generator = 15 * forward
    # ViT-L decoder over 1 + 256 + 32 = 289 rows, width 1024, MLP 4096, 24 layers.
    dec_layer = 2 * 289 * 1024 * 3072 + 4 * 289 * 289 * 1024 + 2 * 289 * 1024 * 1024 + 4 * 289 * 1024 * 4096
    vit_decoder = 2 * 32 * 12 * 1024 + 24 * dec_layer + 2 * 256 * 1024 * 2048 + 2 * 256 * 2048 * 1024
    pixel = _pixel_decoder_by_hand(16)
    total = generator + vit_decoder + pixel

    v = get_variant("titok-l-32")
    got = generation_flops(v.tokenizer, v.generator, v.sampler)
    assert got["generator_forwards"] == 15
    assert (got["generator"], got["vit_decoder"], got["pixel_decoder"]) == (generator, vit_decoder, pixel)
    assert got["total"] == total
    assert abs(total / 1e9 - 544.0) < 0.05            # "about 544 GFLOP per generated image"


def _counted_flops(fn) -> int:
    """FLOPs counted by torch (matmuls, convolutions; attention through the math backend so it is counted)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_baseline_flop_formulas_match_torch_counter():
    """The documented DiT / VAE / MaskGIT counts equal torch's FLOP counter on small configs of the same modules."""
    from titok_bench.baselines.dit import TINY_DIT, DiTConfig, build_dit, transformer_forward_flops, vae_decoder_flops
    from titok_bench.baselines.maskgit import TINY_MASKGIT, build_maskgit, maskgit_flops
    from titok.flops import generator_forward_flops

    other = DiTConfig(image_size=32, num_layers=3, num_heads=2, head_dim=16, num_classes=10, vae_channels=(32, 64),
                      vae_layers_per_block=2, steps=3)
    for cfg in (TINY_DIT, other):
        transformer, vae = build_dit(cfg)
        x = torch.randn(1, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        assert _counted_flops(lambda: transformer(x, timestep=torch.tensor([3]), class_labels=torch.tensor([1]))) \
            == transformer_forward_flops(cfg)
        assert _counted_flops(lambda: vae.decode(x)) == vae_decoder_flops(cfg)

    gen, quant, dec = build_maskgit(TINY_MASKGIT)
    ids = torch.randint(0, 64, (1, 16))
    assert _counted_flops(lambda: gen(ids, torch.tensor([3]), cond_drop_prob=0.0)) == \
        generator_forward_flops(TINY_MASKGIT.generator)
    assert _counted_flops(lambda: dec(quant.decode(ids.view(1, 4, 4)))) == maskgit_flops(TINY_MASKGIT)["pixel_decoder"]


def test_dit_xl2_flops_match_the_dit_paper():
    from titok_bench.baselines.dit import dit_flops, dit_xl_2, transformer_forward_flops

    # The DiT paper gives 118.6 "Gflops" (multiply-adds) per DiT-XL/2 forward at 256px, 524.6 at 512px.
    assert abs(transformer_forward_flops(dit_xl_2(256)) / 2 / 1e9 - 118.6) / 118.6 < 0.005
    assert abs(transformer_forward_flops(dit_xl_2(512)) / 2 / 1e9 - 524.6) / 524.6 < 0.005
    f = dit_flops(dit_xl_2(256))
    assert f["generator_forwards"] == 500            # 250 steps x (cond + uncond rows)
    assert f["generator"] == 500 * transformer_forward_flops(dit_xl_2(256))


# ---- projection ----------------------------------------------------------------------------------

def test_projection_arithmetic():
    from titok.configs import SamplerConfig
    from titok.flops import generator_forwards

    # DiT: 1 of 250 steps timed (2 s of sampling), decode 3 s -> 3 + 2 * 250 s.
    assert sampling.project_ms(2000.0, 3000.0, 1, 250) == pytest.approx(503_000.0)
    assert sampling.project_ms(10.0, 5.0, 2, 250) == pytest.approx(1255.0)
    assert sampling.project_ms(7.0, 1.0, 4, 4) == pytest.approx(8.0)        # nothing to project
    # MaskGIT samplers project in generator forwards: linear decay (step 0 unguided), power-cosine (all guided).
    linear = SamplerConfig(64, 4.5, "linear")
    assert generator_forwards(SamplerConfig(2, 4.5, "linear"), 128) == 3
    assert generator_forwards(linear, 128) == 127
    assert sampling.project_ms(30.0, 0.0, 3, 127) == pytest.approx(1270.0)
    cosine = SamplerConfig(64, 6.9, "power-cosine")
    assert generator_forwards(SamplerConfig(2, 6.9, "power-cosine"), 128) == 4
    assert generator_forwards(cosine, 128) == 128
    with pytest.raises(ValueError):
        sampling.project_ms(1.0, 1.0, 0, 10)
    with pytest.raises(ValueError):
        sampling.project_ms(1.0, 1.0, 5, 4)


def test_projected_row_wiring(monkeypatch):
    """A projected row: times of N steps + decode -> the projected latency, samples/s and labels."""
    spec = sampling.SPECS["tiny-dit"]
    models = spec.build("cpu")
    # 2 iterations: sampling 100 / 120 ms for 1 of 4 steps, decode 50 / 50 ms.
    monkeypatch.setattr(sampling, "time_chain", lambda fns, **kw: [[100.0, 120.0], [50.0, 50.0]])
    settings = sampling.Settings(device=torch.device("cpu"), iters=2, warmup=0, stages=False, stage_iters=1,
                                 stage_warmup=0, tf32=True)
    row = sampling.measure(spec, models, mode="reference", dtype=None, batch=2, settings=settings,
                           monitor=sampling.NvmlMonitor("cpu"), project_steps=1, protocol="paper")
    assert row["status"] == "ok", row["message"]
    assert row["projected_from_steps"] == 1 and row["full_steps"] == 4 and row["steps"] == 1
    assert row["latency_ms"]["p50_ms"] == pytest.approx(50.0 + 110.0 * 4)  # median of 450 and 530
    assert row["samples_per_s"] == pytest.approx(2 / 0.49)
    assert row["projection"]["measured_units"] == 1 and row["projection"]["full_units"] == 4
    assert row["tf32"] is False                                            # TF32 only applies on CUDA
    assert row["peak_memory_bytes"] is None and row["fraction_of_peak"] is None


# ---- runs of the harness: schema, CPU notice, OOM ---------------------------------------------------

@pytest.fixture(scope="module")
def oom_run(tmp_path_factory):
    """tiny-titok at batch 2 then 1, where batch 2 runs out of memory in the MaskGIT-VQGAN pixel decoder."""
    out = tmp_path_factory.mktemp("run") / "result.json"
    png = out.with_suffix(".png")
    original = sampling.SPECS["tiny-titok"].build

    def build(device, checkpoint_dir=None):
        tokenizer, generator = original(device, checkpoint_dir)
        pixel_decoder = tokenizer.pixel_decoder
        real = pixel_decoder.forward

        def forward(x):  # the MaskGIT-VQGAN decoder stage runs out of memory at batch 2
            if x.shape[0] == 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            return real(x)

        pixel_decoder.forward = forward
        return tokenizer, generator

    mp = pytest.MonkeyPatch()
    mp.setattr(sampling.SPECS["tiny-titok"], "build", build)
    try:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = sampling.main(["--model", "tiny-titok", "--pipelines", "fast", "--batch-sizes", "2,1", *FAST,
                                  "--out", str(out), "--plot", str(png), "--device", "cpu"])
    finally:
        mp.undo()
    return code, buf.getvalue(), json.loads(out.read_text()), png


def test_oom_is_recorded_and_the_run_goes_on(oom_run):
    code, text, payload, _ = oom_run
    rows = payload["results"]
    assert [r["batch_size"] for r in rows] == [2, 1]
    assert [r["status"] for r in rows] == ["oom", "ok"]
    assert "out of memory" in rows[0]["message"].lower() and rows[0]["samples_per_s"] is None
    assert rows[1]["samples_per_s"] > 0
    assert code == 0                                   # OOM is a result, not a failure of the harness
    assert "OOM" in text


class _FakeRunner:
    """A runner without a model: generate / a stage raise what they are given."""

    family, dtype, cuda_graph, steps = "titok", torch.float32, False, 4

    def __init__(self, fail=None, stage_fail=None):
        self.fail, self.stage_fail = fail, stage_fail

    def generate(self, class_ids):
        if self.fail is not None:
            raise self.fail
        return class_ids

    def flops(self):
        return {"generator_forwards": 7, "generator": 2e9, "vit_decoder": 1e9, "pixel_decoder": 1e9, "total": 4e9}

    def describe(self):
        return {"full_steps": 4}

    def stage_functions(self, batch):
        def broken():
            raise self.stage_fail
        return {"generator_forwards": lambda: None, "pixel_decoder": broken if self.stage_fail else (lambda: None)}


@pytest.mark.parametrize("fail, stage_fail, status", [
    (RuntimeError("CUDA error: out of memory"), None, "oom"),
    (ValueError("bad shape"), None, "error"),
    (None, torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)"), "ok"),
])
def test_measure_failure_rows(fail, stage_fail, status):
    spec = sampling.ModelSpec("fake", "fake", "titok", 64, build=lambda *a: None,
                              runner=lambda models, mode, dtype, steps, cuda_graph: _FakeRunner(fail, stage_fail),
                              full_steps=lambda models: 4)
    settings = sampling.Settings(device=torch.device("cpu"), iters=2, warmup=0, stages=True, stage_iters=1,
                                 stage_warmup=0, tf32=True)
    row = sampling.measure(spec, None, mode="reference", dtype=None, batch=1, settings=settings,
                           monitor=sampling.NvmlMonitor("cpu"))
    assert row["status"] == status
    if status == "ok":       # only a stage ran out of memory: the end-to-end figures are kept, the stages are not
        assert row["samples_per_s"] > 0 and row["stages"] is None and "out of memory" in row["message"]
    else:
        assert row["samples_per_s"] is None and row["message"].startswith(type(fail).__name__)
        assert ("traceback" in row) == (status == "error")
    _validate({"schema": SCHEMA["properties"]["schema"]["const"], "environment": _ENV, "config": _CONFIG,
               "results": [row]})


_ENV = {"command": "x", "timestamp": "t", "git_sha": None, "python": "3", "torch": "2", "triton": None, "cuda": None,
        "device_type": "cpu", "device_name": "cpu", "cpu_threads": 2, "peaks": None}
_CONFIG = {"job": "models", "models": ["fake"], "pipelines": ["reference"], "batch_sizes": [1], "dtype": "auto",
           "iters": 2, "warmup": 0, "stages": True, "tf32": False, "device": "cpu", "weights": "random",
           "wall_seconds": 1.0, "notes": []}


def test_out_of_memory_classification():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_main_run_json_validates_and_cpu_notice(oom_run):
    code, text, payload, png = oom_run
    _validate(payload)
    assert payload["schema"] == "titok-kernels/sampling/v1"
    assert "CPU figures are not the paper's GPU figures" in text
    assert "random (speed does not depend on weights)" in text
    ok = payload["results"][1]
    assert set(ok["stages"]) == {"generator_forwards", "sampling_steps", "vit_decoder", "pixel_decoder"}
    assert sum(s["share"] for s in ok["stages"].values()) == pytest.approx(1.0)
    from titok.configs import TINY_GENERATOR, TINY_TOKENIZER, SamplerConfig
    from titok.flops import generation_flops

    sampler = SamplerConfig(4, 4.5, "linear", randomize_temperature=9.5)
    expected = generation_flops(TINY_TOKENIZER, TINY_GENERATOR, sampler)
    assert ok["gflop_per_image"] == pytest.approx(expected["total"] / 1e9)
    assert ok["achieved_tflops"] == pytest.approx(expected["total"] * ok["samples_per_s"] / 1e12)
    assert ok["fraction_of_peak"] is None and ok["peak_memory_bytes"] is None       # CPU: unknown peak, no CUDA memory
    assert payload["environment"]["nvml"] is None
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_schema_has_teeth_and_shares_the_environment_block(oom_run):
    payload = json.loads(json.dumps(oom_run[2]))
    assert SCHEMA["$defs"]["environment"] == json.loads(json.dumps(ENVIRONMENT_SCHEMA))
    bad = json.loads(json.dumps(payload))
    bad["results"][1]["samples_per_s"] = None                      # status ok without a figure
    with pytest.raises(jsonschema.ValidationError):
        _validate(bad)
    bad = json.loads(json.dumps(payload))
    bad["results"][0]["status"] = "crashed"
    with pytest.raises(jsonschema.ValidationError):
        _validate(bad)
    bad = json.loads(json.dumps(payload))
    del bad["environment"]["torch"]
    with pytest.raises(jsonschema.ValidationError):
        _validate(bad)


def test_compare_run_claims_table(tmp_path, capsys):
    """--compare on the tiny set: TiTok, MaskGIT and DiT rows with projection, speed-ups over DiT, schema."""
    out = tmp_path / "compare.json"
    code = sampling.main(["--compare", "tiny", "--protocol", "paper", "--device", "cpu", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    payload = json.loads(out.read_text())
    _validate(payload)
    claims = payload["claims"]
    assert [c["model"] for c in claims] == ["tiny-titok", "tiny-maskgit", "tiny-dit"]
    assert all(c["status"] == "ok" and c["protocol"] == "paper" for c in claims)
    rows = {r["model"]: r for r in payload["results"]}
    assert all(r["pipeline"] == "reference" and r["dtype"] == "float32" for r in rows.values())
    for c in claims:                                   # the CPU defaults project every tiny model
        assert c["projected_from_steps"] == sampling.SPECS[c["model"]].cpu_project_steps
        assert c["speedup_vs_dit"] == pytest.approx(c["samples_per_s"] / rows["tiny-dit"]["samples_per_s"])
    assert payload["config"]["iters"] == 1 and payload["config"]["warmup"] == 0 and payload["config"]["primed"]
    assert "projected from 2 steps" in text and "projected from 1 steps" in text
    assert "CPU figures are not the paper's GPU figures" in text


def test_paper_figures_and_claimed_speedups():
    """The figures beside each row are the paper's (Tables 1 and 2), and so are the 169x and 410x claims."""
    rows = [{"protocol": "paper", "model": k, "label": sampling.SPECS[k].label, "family": sampling.SPECS[k].family,
             "resolution": sampling.SPECS[k].resolution, "pipeline": "reference", "dtype": "float32", "tf32": True,
             "batch_size": 1, "full_steps": 8, "samples_per_s": 1.0, "projected_from_steps": None, "status": "ok",
             "message": None} for k in sampling.COMPARE_SETS["paper"]]
    claims = {c["model"]: c for c in sampling.claims_rows(rows, ["paper"])}
    paper = {k: c["paper_samples_per_s"] for k, c in claims.items()}
    assert paper == {"titok-l-32": 101.6, "titok-b-64": 89.8, "titok-s-128": 7.8, "maskgit-256": 50.5,
                     "dit-xl-2-256": 0.6, "titok-l-64-512": 41.0, "titok-b-128-512": 7.4, "maskgit-512": 3.9,
                     "dit-xl-2-512": 0.1}
    assert round(claims["titok-l-32"]["paper_speedup_vs_dit"]) == 169
    assert round(claims["titok-l-64-512"]["paper_speedup_vs_dit"]) == 410
    assert round(claims["titok-s-128"]["paper_speedup_vs_dit"]) == 13
    assert round(claims["titok-b-128-512"]["paper_speedup_vs_dit"]) == 74


_AS_SCRIPT = """
import contextlib, io, os, runpy, sys
sys.argv = ["bench/sampling.py", "--help"]
sys.path.insert(0, os.path.abspath("bench"))          # what `python bench/sampling.py` puts first on sys.path
out = io.StringIO()
try:
    with contextlib.redirect_stdout(out):
        runpy.run_path("bench/sampling.py", run_name="__main__")
except SystemExit as exc:
    assert exc.code == 0, exc.code
import titok_kernels, profile
print(kernels.__file__)
print(hasattr(profile, "run"))
print(" ".join(out.getvalue().split()))
"""


def test_script_bootstrap_does_not_shadow_packages():
    """Run as `python bench/sampling.py`, sys.path[0] is bench/, whose kernels.py and profile.py would shadow the
    `kernels` package and the standard library's `profile`: the script's bootstrap removes it."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", _AS_SCRIPT], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kernels_file, profile_ok, help_text = proc.stdout.splitlines()[:3]
    assert kernels_file == os.path.join(root, "kernels", "__init__.py")
    assert profile_ok == "True"
    assert "--compare" in help_text and "CPU figures are not the paper's GPU figures" in help_text
