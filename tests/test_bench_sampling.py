"""bench/sampling.py and its harness: FLOP counts, projection, interleaved timing, speed-ups, warnings, the result
schema, OOM rows, tables and plots, and the command line's errors (one line, exit 2), Ctrl-C (exit 130).

Runs on CPU in about a minute: the harness runs the small "tiny-*" models (same code as the real ones: TiTok
pipeline, the MaskGIT baseline as a Pipeline, diffusers DiT + AutoencoderKL), and the real models' FLOP counts
are checked against hand arithmetic, not by running them.
"""
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from titok_bench import sampling
from titok_bench.harness import measure, report
from titok_bench.harness.env import busy_warnings, is_out_of_memory
from titok_bench.harness.models import SPECS, ModelSpec
from titok_bench.harness.nvml import NvmlMonitor
from titok_bench.harness.results import ENVIRONMENT_SCHEMA
from titok_bench.harness.timing import pair_ratios

jsonschema = pytest.importorskip("jsonschema")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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

    decoder, gen = build_maskgit(TINY_MASKGIT)
    ids = torch.randint(0, 64, (1, 16))
    assert _counted_flops(lambda: gen(ids, torch.tensor([3]), cond_drop_prob=0.0)) == \
        generator_forward_flops(TINY_MASKGIT.generator)
    assert _counted_flops(lambda: decoder.decode(decoder.tokens_to_latents(ids))) == \
        maskgit_flops(TINY_MASKGIT)["pixel_decoder"]


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
    assert measure.project_ms(2000.0, 3000.0, 1, 250) == pytest.approx(503_000.0)
    assert measure.project_ms(10.0, 5.0, 2, 250) == pytest.approx(1255.0)
    assert measure.project_ms(7.0, 1.0, 4, 4) == pytest.approx(8.0)        # nothing to project
    # MaskGIT samplers project in generator forwards: linear decay (step 0 unguided), power-cosine (all guided).
    linear = SamplerConfig(64, 4.5, "linear")
    assert generator_forwards(SamplerConfig(2, 4.5, "linear"), 128) == 3
    assert generator_forwards(linear, 128) == 127
    assert measure.project_ms(30.0, 0.0, 3, 127) == pytest.approx(1270.0)
    cosine = SamplerConfig(64, 6.9, "power-cosine")
    assert generator_forwards(SamplerConfig(2, 6.9, "power-cosine"), 128) == 4
    assert generator_forwards(cosine, 128) == 128
    with pytest.raises(ValueError):
        measure.project_ms(1.0, 1.0, 0, 10)
    with pytest.raises(ValueError):
        measure.project_ms(1.0, 1.0, 5, 4)


# ---- the row loop: interleaving, speed-ups, warnings --------------------------------------------------------

def _settings(**kw):
    base = dict(device=torch.device("cpu"), iters=2, warmup=0, stages=False, stage_iters=1, stage_warmup=0,
                tf32=True)
    return measure.Settings(**{**base, **kw})


class _FakeRunner:
    """A runner without a model: generate appends to `log` (or raises what it is given)."""

    dtype, cuda_graph, steps = torch.float32, False, 4

    def __init__(self, name="a", log=None, fail=None, stage_fail=None, sleep=0.0):
        self.name, self.log, self.fail, self.stage_fail, self.sleep = name, log, fail, stage_fail, sleep

    def generate(self, class_ids):
        if self.fail is not None:
            raise self.fail
        if self.log is not None:
            self.log.append(self.name)
        time.sleep(self.sleep)
        return class_ids

    def flops(self):
        return {"generator_forwards": 7, "generator": 2e9, "vit_decoder": 1e9, "pixel_decoder": 1e9, "total": 4e9}

    def describe(self):
        return {"full_steps": 4}

    def stage_functions(self, batch):
        def broken():
            raise self.stage_fail
        return {"generator_forwards": lambda: None, "pixel_decoder": broken if self.stage_fail else (lambda: None)}


def _fake_spec(make_runner):
    return ModelSpec("fake", "fake", "titok", 64, build=lambda *a: None,
                     runner=lambda models, mode, dtype, steps, cuda_graph: make_runner(mode))


def _group(spec, modes, settings, batch=1):
    jobs = [measure.Job(spec, m, None, batch) for m in modes]
    return measure.measure_group(jobs, {"fake": (4,)}, settings, NvmlMonitor("cpu"),
                                 lambda r: r["pipeline"] == "reference")


def test_pipelines_are_timed_interleaved_and_speedup_is_median_of_pair_ratios():
    log = []
    runners = {"reference": _FakeRunner("ref", log, sleep=0.004), "fast": _FakeRunner("fast", log, sleep=0.001)}
    rows = _group(_fake_spec(lambda mode: runners[mode]), ["reference", "fast"], _settings(iters=3, warmup=1))
    assert log == ["ref", "fast"] + ["ref", "fast"] * 3         # warm-ups (per job), then A B A B A B
    ref, fast = rows
    assert len(ref["iteration_ms"]) == len(fast["iteration_ms"]) == 3
    expected = pair_ratios(ref["iteration_ms"], fast["iteration_ms"])
    assert fast["speedup"] == {"baseline": "fake reference", **expected} and expected["pairs"] == 3
    assert fast["speedup"]["p20"] <= fast["speedup"]["p50"] <= fast["speedup"]["p80"]
    assert fast["speedup"]["p50"] > 1.5 and ref["speedup"]["p50"] == pytest.approx(1.0)
    assert ref["cpu_usage"]["wall_s"] > 0 and ref["cpu_usage"] is fast["cpu_usage"]


def test_pair_ratios():
    got = pair_ratios([10.0, 20.0, 30.0, 40.0, 50.0], [5.0, 5.0, 10.0, 10.0, 50.0])
    # ratios 2, 4, 3, 4, 1 -> sorted 1 2 3 4 4: median 3, p20 = 1 + 0.8 * 1, p80 = 4
    assert got == {"p50": 3.0, "p20": pytest.approx(1.8), "p80": 4.0, "pairs": 5}
    assert pair_ratios([], []) is None


def test_busy_and_stage_warnings():
    idle = {"device_type": "cpu", "cpu_share": 0.97, "threads": 2, "load_avg_1m": 2.1, "cores": 2}
    assert busy_warnings(idle) == []
    busy = {**idle, "cpu_share": 0.4, "load_avg_1m": 5.0}
    texts = busy_warnings(busy)
    assert len(texts) == 2 and "40%" in texts[0] and "load average 5.0" in texts[1]
    row = {"stages": {"a": {"ms": 40.0}, "b": {"ms": 30.0}}, "latency_ms": {"p50_ms": 100.0}, "cuda_graph": False}
    assert "-30%" in measure.stage_warning(row)
    row["stages"]["b"]["ms"] = 50.0
    assert measure.stage_warning(row) is None                 # within 25%


def test_projected_row_wiring(monkeypatch):
    """A projected row: times of N steps + decode -> the projected latency, samples/s and labels."""
    spec = SPECS["tiny-dit"]
    models = spec.build("cpu")

    class Watch:  # 2 iterations: sampling 100 / 120 ms for 1 of 4 steps, decode 50 / 50 ms
        records = iter([[100.0, 50.0], [120.0, 50.0]])

        def __init__(self, device):
            pass

        def run(self, fns):
            return next(self.records)

        def read(self, record):
            return record

        def sync(self):
            pass

    monkeypatch.setattr(measure, "Stopwatch", Watch)
    job = measure.Job(spec, "reference", None, 2, "paper", project_steps=1)
    row = measure.measure_group([job], {spec.key: models}, _settings(), NvmlMonitor("cpu"),
                                lambda r: r["family"] == "dit")[0]
    assert row["status"] == "ok", row["message"]
    assert row["projected_from_steps"] == 1 and row["full_steps"] == 4 and row["steps"] == 1
    assert row["iteration_ms"] == [450.0, 530.0]
    assert row["latency_ms"]["p50_ms"] == pytest.approx(50.0 + 110.0 * 4)  # median of 450 and 530
    assert row["samples_per_s"] == pytest.approx(2 / 0.49)
    assert row["projection"]["measured_units"] == 1 and row["projection"]["full_units"] == 4
    assert row["tf32"] is False                                            # TF32 only applies on CUDA
    assert row["peak_memory_bytes"] is None and row["fraction_of_peak"] is None


@pytest.mark.parametrize("fail, stage_fail, status", [
    (RuntimeError("CUDA error: out of memory"), None, "oom"),
    (ValueError("bad shape"), None, "error"),
    (None, torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)"), "ok"),
])
def test_measure_failure_rows(fail, stage_fail, status):
    spec = _fake_spec(lambda mode: _FakeRunner(fail=fail, stage_fail=stage_fail))
    row = _group(spec, ["reference"], _settings(stages=True))[0]
    assert row["status"] == status
    if status == "ok":       # only a stage ran out of memory: the end-to-end figures are kept, the stages are not
        assert row["samples_per_s"] > 0 and row["stages"] is None and "out of memory" in row["message"]
    else:
        assert row["samples_per_s"] is None and row["message"].startswith(type(fail).__name__)
        assert ("traceback" in row) == (status == "error")
    _validate({"schema": SCHEMA["properties"]["schema"]["const"], "schema_version": 2, "environment": _ENV,
               "config": _CONFIG, "results": [row]})


_ENV = {"command": "x", "timestamp": "2026-01-01T00:00:00+00:00", "git_sha": None, "python": "3", "torch": "2",
        "triton": None, "cuda": None, "device_type": "cpu", "device_name": "cpu", "cpu_threads": 2, "peaks": None}
_CONFIG = {"job": "models", "models": ["fake"], "pipelines": ["reference"], "batch_sizes": [1], "dtype": "auto",
           "iters": 2, "warmup": 0, "stages": True, "tf32": False, "device": "cpu", "weights": "random",
           "wall_seconds": 1.0, "notes": [], "interleaved": True, "interrupted": False, "warnings": []}


def test_out_of_memory_classification():
    """One rule for the harness and the `titok` command (titok.errors.is_out_of_memory)."""
    from titok.cli.options import is_out_of_memory as cli_rule

    cases = {torch.cuda.OutOfMemoryError("CUDA out of memory"): True, RuntimeError("CUDA error: out of memory"): True,
             MemoryError(): True, RuntimeError("shape mismatch"): False, ValueError("out of memory"): False}
    for exc, oom in cases.items():
        assert is_out_of_memory(exc) is oom and cli_rule(exc) is oom, exc


def test_maskgit_baseline_is_a_pipeline():
    from titok.maskgit_vqgan import VQGANTokenDecoder
    from titok.pipeline import Pipeline

    spec = SPECS["tiny-maskgit"]
    runner = spec.runner(spec.build("cpu"), "fast", torch.float32, 2, False)
    assert isinstance(runner.pipeline, Pipeline) and isinstance(runner.pipeline.decoder, VQGANTokenDecoder)
    assert runner.steps == 2 and runner.describe()["full_steps"] == 4
    assert runner.units() == 3 and runner.full_units() == 7           # linear decay: step 0 unguided
    images = runner.generate(torch.tensor([1, 2]))
    assert images.shape == (2, 3, 64, 64) and 0 <= float(images.min()) <= float(images.max()) <= 1


# ---- runs of the harness: schema, CPU notice, OOM ---------------------------------------------------

@pytest.fixture(scope="module")
def oom_run(tmp_path_factory):
    """tiny-titok at batch 2 then 1, where batch 2 runs out of memory in the MaskGIT-VQGAN pixel decoder."""
    out = tmp_path_factory.mktemp("run") / "result.json"
    png = out.with_suffix(".png")
    original = SPECS["tiny-titok"].build

    def build(device, checkpoint_dir=None):
        tokenizer, generator, *rest = original(device, checkpoint_dir)
        real = tokenizer.pixel_decoder.forward

        def forward(x):  # the MaskGIT-VQGAN decoder stage runs out of memory at batch 2
            if x.shape[0] == 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            return real(x)

        tokenizer.pixel_decoder.forward = forward
        return (tokenizer, generator, *rest)

    mp = pytest.MonkeyPatch()
    mp.setattr(SPECS["tiny-titok"], "build", build)
    try:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = sampling.main(["--model", "tiny-titok", "--pipelines", "reference,fast", "--dtype", "float32",
                                  "--batch-sizes", "2,1", *FAST, "--out", str(out), "--plot", str(png),
                                  "--device", "cpu"])
    finally:
        mp.undo()
    return code, buf.getvalue(), json.loads(out.read_text()), png


def test_oom_is_recorded_and_the_run_goes_on(oom_run):
    code, text, payload, _ = oom_run
    rows = payload["results"]
    assert [(r["batch_size"], r["pipeline"]) for r in rows] == [(2, "reference"), (2, "fast"), (1, "reference"),
                                                                (1, "fast")]
    assert [r["status"] for r in rows] == ["oom", "oom", "ok", "ok"]
    assert "out of memory" in rows[0]["message"].lower() and rows[0]["samples_per_s"] is None
    assert rows[3]["samples_per_s"] > 0 and rows[3]["speedup"]["pairs"] == 1
    assert code == 0                                   # OOM is a result, not a failure of the harness
    assert "OOM" in text


def test_main_run_json_validates_and_cpu_notice(oom_run):
    code, text, payload, png = oom_run
    _validate(payload)
    assert payload["schema"] == "titok-kernels/sampling/v2" and payload["schema_version"] == 2
    assert payload["config"]["interleaved"] and not payload["config"]["interrupted"]
    assert "CPU figures are not the paper's GPU figures" in text
    assert "random (speed does not depend on weights)" in text
    ok = payload["results"][3]
    assert ok["dtype"] == "float32" and ok["dtype_reason"] == "given"          # --dtype float32
    assert set(ok["stages"]) == {"generator_forwards", "sampling_steps", "vit_decoder", "pixel_decoder"}
    assert sum(s["share"] for s in ok["stages"].values()) == pytest.approx(1.0)
    from titok.configs import TINY_GENERATOR, TINY_TOKENIZER, SamplerConfig
    from titok.flops import generation_flops

    sampler = SamplerConfig(4, 4.5, "linear", randomize_temperature=9.5)
    expected = generation_flops(TINY_TOKENIZER, TINY_GENERATOR, sampler)
    assert ok["gflop_per_image"] == pytest.approx(expected["total"] / 1e9)
    assert ok["achieved_tflops"] == pytest.approx(expected["total"] * ok["samples_per_s"] / 1e12)
    assert ok["fraction_of_peak"] is None and ok["peak_memory_bytes"] is None       # CPU: unknown peak, no CUDA memory
    # The CPU's own ceilings, measured at the start: the fp32 row is read against the measured fp32 rate.
    measured = payload["environment"]["ceilings"]
    assert measured["device_type"] == "cpu" and set(measured["matmul"]) == {"fp32", "bf16"}
    assert ok["measured_tflops"] == measured["matmul"]["fp32"]["tflops"] > 0
    assert ok["fraction_of_measured"] == pytest.approx(ok["achieved_tflops"] / ok["measured_tflops"])
    assert payload["results"][0]["measured_tflops"] is None and payload["results"][0]["fraction_of_measured"] is None
    assert "measured ceilings: matmul TFLOP/s fp32 " in text
    assert payload["environment"]["nvml"] is None
    assert set(ok["cpu_usage"]) >= {"cpu_share", "load_avg_1m", "process_cpu_s", "wall_s"}
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_schema_has_teeth_and_shares_the_environment_block(oom_run):
    payload = json.loads(json.dumps(oom_run[2]))
    assert SCHEMA["$defs"]["environment"] == json.loads(json.dumps(ENVIRONMENT_SCHEMA))
    for path, value in ((("results", 3, "samples_per_s"), None),       # status ok without a figure
                        (("results", 0, "status"), "crashed"), (("schema_version",), 1)):
        bad = json.loads(json.dumps(payload))
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            _validate(bad)
    bad = json.loads(json.dumps(payload))
    del bad["environment"]["torch"]
    with pytest.raises(jsonschema.ValidationError):
        _validate(bad)
    for change in ({"device_type": "tpu"}, {"copy": {"gbps": 1.0}}, {"matmul": {"fp32": {"tflops": "fast"}}}):
        bad = json.loads(json.dumps(payload))
        bad["environment"]["ceilings"].update(change)
        with pytest.raises(jsonschema.ValidationError):
            _validate(bad)


def test_compare_run_claims_table(tmp_path, capsys):
    """--compare on the tiny set: TiTok, MaskGIT and DiT rows with projection, speed-ups over DiT, schema."""
    out = tmp_path / "compare.json"
    code = sampling.main(["--compare", "tiny", "--protocol", "paper", "--device", "cpu", "--out", str(out),
                          "--no-ceilings"])
    text = capsys.readouterr().out
    assert code == 0
    payload = json.loads(out.read_text())
    _validate(payload)
    assert payload["environment"]["ceilings"] is None and "measured ceilings" not in text          # --no-ceilings
    assert all(r["measured_tflops"] is None and r["fraction_of_measured"] is None for r in payload["results"])
    claims = payload["claims"]
    assert [c["model"] for c in claims] == ["tiny-titok", "tiny-maskgit", "tiny-dit"]
    assert all(c["status"] == "ok" and c["protocol"] == "paper" for c in claims)
    rows = {r["model"]: r for r in payload["results"]}
    assert all(r["pipeline"] == "reference" and r["dtype"] == "float32" for r in rows.values())
    for c in claims:                                   # the CPU defaults project every tiny model
        assert c["projected_from_steps"] == SPECS[c["model"]].cpu_project_steps
        # one interleaved iteration: the per-pair ratio is the ratio of the throughputs
        assert c["speedup_vs_dit"] == pytest.approx(c["samples_per_s"] / rows["tiny-dit"]["samples_per_s"])
    assert payload["config"]["iters"] == 1 and payload["config"]["warmup"] == 0 and payload["config"]["primed"]
    assert "projected from 2 of 4 steps" in text and "projected from 1 of 4 steps" in text
    assert "CPU figures are not the paper's GPU figures" in text


def test_paper_figures_and_claimed_speedups():
    """The figures beside each row are the paper's (Tables 1 and 2), and so are the 169x and 410x claims."""
    rows = [{"protocol": "paper", "model": k, "label": SPECS[k].label, "family": SPECS[k].family,
             "resolution": SPECS[k].resolution, "pipeline": "reference", "dtype": "float32", "tf32": True,
             "batch_size": 1, "full_steps": 8, "samples_per_s": 1.0, "projected_from_steps": None, "status": "ok",
             "message": None, "speedup": None} for k in sampling.COMPARE_SETS["paper"]]
    claims = {c["model"]: c for c in report.claims_rows(rows, ["paper"])}
    paper = {k: c["paper_samples_per_s"] for k, c in claims.items()}
    assert paper == {"titok-l-32": 101.6, "titok-b-64": 89.8, "titok-s-128": 7.8, "maskgit-256": 50.5,
                     "dit-xl-2-256": 0.6, "titok-l-64-512": 41.0, "titok-b-128-512": 7.4, "maskgit-512": 3.9,
                     "dit-xl-2-512": 0.1}
    assert round(claims["titok-l-32"]["paper_speedup_vs_dit"]) == 169
    assert round(claims["titok-l-64-512"]["paper_speedup_vs_dit"]) == 410
    assert round(claims["titok-s-128"]["paper_speedup_vs_dit"]) == 13
    assert round(claims["titok-b-128-512"]["paper_speedup_vs_dit"]) == 74


# ---- tables and plots --------------------------------------------------------------------------------------

def _render(table, width=80) -> list[str]:
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text().splitlines()


def test_results_table_fits_80_columns(oom_run):
    rows = oom_run[2]["results"]
    notes = report.Notes(rows)
    lines = _render(report.results_table(rows, "tiny-titok: samples/s on cpu", notes))
    assert max(map(len, lines)) <= 80
    text = "\n".join(lines)
    assert "…" not in text                                     # nothing cut
    for cell in ("reference", "fast", "OOM", f"{rows[3]['speedup']['p50']:.2f}x"):
        assert cell in text
    assert any("OOM: " in n for n in notes.lines())             # the message is a footnote, not a cell
    assert "of meas." not in text                               # the compact table has no fractions
    wide = "\n".join(_render(report.results_table(rows, "t", report.Notes(rows), wide=True), width=200))
    assert "GFLOP/img" in wide and "tiny-titok" in wide
    assert "of peak" in wide and "of meas." in wide and f"{100 * rows[3]['fraction_of_measured']:.1f}%" in wide
    env_text = "\n".join(_render(report.environment_table(oom_run[2]["environment"]), width=200))
    assert "ceilings" in env_text and "matmul TFLOP/s fp32" in env_text and "GB/s (CPU," in env_text


def test_plot_without_speedup_rows_and_its_provenance(tmp_path, oom_run):
    from titok_bench.harness.plots import plot

    payload = oom_run[2]
    rows = [dict(r, speedup=None) for r in payload["results"]]          # e.g. no reference row measured
    title = plot(rows, str(tmp_path / "a.png"), env=payload["environment"], weights="random")
    claims = [{**c, "speedup_vs_dit": None} for c in report.claims_rows(
        [dict(r, protocol="paper") for r in rows], ["paper"])]           # e.g. diffusers missing: no DiT row
    plot(rows, str(tmp_path / "b.png"), env=payload["environment"], weights="random", claims=claims)
    for name in ("a.png", "b.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    env = payload["environment"]
    for piece in (env["device_name"], env["timestamp"][:10], "random weights", "fp32", "NOT comparable"):
        assert piece in title


# ---- the command line: errors before work, Ctrl-C ---------------------------------------------------------

def _tool(*args, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _one_line_error(proc, code, *pieces):
    assert proc.returncode == code, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for piece in pieces:
        assert piece in lines[0]


def test_help_runs_as_a_script_from_the_repository_root():
    proc = _tool("bench/sampling.py", "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = " ".join(proc.stdout.split())
    assert "--compare" in text and "--wide" in text and "CPU figures are not the paper's GPU figures" in text


@pytest.mark.parametrize("args, pieces", [
    (["--batch-sizes", "abc"], ["--batch-sizes", "'abc'"]),
    (["--model", "nope"], ["unknown --model 'nope'"]),
    (["--iters", "x"], ["--iters"]),
    (["--pipelines", "fast,turbo"], ["--pipelines", "turbo"]),
    (["--device", "tpu"], ["--device"]),
])
def test_usage_errors_are_one_line_exit_2(args, pieces):
    _one_line_error(_tool("bench/sampling.py", *args), 2, *pieces)


def test_unwritable_outputs_are_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    cases = [("--out", str(tmp_path)), ("--plot", str(tmp_path)), ("--out", str(tmp_path / "file" / "r.json"))]
    if os.geteuid() != 0:                                       # root writes into read-only folders anyway
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        cases.append(("--out", str(ro / "r.json")))
    for flag, path in cases:
        t0 = time.perf_counter()
        proc = _tool("bench/sampling.py", "--model", "titok-l-32", "--device", "cpu", flag, path)
        _one_line_error(proc, 2, flag)
        assert "built" not in proc.stdout and time.perf_counter() - t0 < 60     # refused before building


def test_ctrl_c_keeps_finished_rows_and_exits_130(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "bench/sampling.py", "--model", "tiny-titok", "--device", "cpu",
                             "--pipelines", "reference", "--batch-sizes", "1,256", "--iters", "10", "--warmup", "0",
                             "--stages", "off", "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stdout:       # the first row is done (its group has finished); batch 256 takes far longer
            if "tiny-titok reference batch 1:" in line:
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in stderr, stderr[-2000:]
    payload = json.loads(out.read_text())                       # complete, never half written
    _validate(payload)
    assert payload["config"]["interrupted"] is True
    assert [r["batch_size"] for r in payload["results"]] == [1]
    assert not [p for p in tmp_path.iterdir() if p.name != "r.json"]   # no temporary file left behind
