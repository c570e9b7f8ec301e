"""End-to-end sampling speed: class ids in, decoded images out (the main job of titok-kernels).

    python bench/sampling.py --model titok-l-32                       # this machine's defaults
    python bench/sampling.py --model titok-l-32 --pipelines reference,compile,fast \\
        --batch-sizes 1,8,32,128 --out profiles/h200/sampling.json --plot profiles/h200/sampling.png
    python bench/sampling.py --compare paper                         # the paper's speed claims, re-measured

What is timed (one "sample" = one generated image, as the paper's T column, "de-tokenization
included"): MaskGIT sampling (every generator forward and sampling step), the ViT decoder (tokens ->
proxy-code logits), and the MaskGIT-VQGAN pixel decoder, for a batch of class ids. Each iteration is
timed as a whole (CUDA events on GPU, perf_counter on CPU) after warm-up calls (which also
absorb torch.compile compilation and CUDA-graph capture); reported: samples/s at the median
(p50) iteration and the p20..p80 spread. Each stage is then timed alone on fixed inputs
(`Pipeline.stage_functions`): generator forwards, sampling steps, ViT decoder, pixel decoder. Their
shares are fractions of the summed stage times; stages run eagerly even where the end-to-end
run replays a CUDA graph, so their sum is not the end-to-end time.

Derived: per-image FLOPs from the analytic count of `titok.flops` (2 per multiply-add: matmuls,
convolutions, attention products; for titok-l-32 about 544 GFLOP with 15 generator forwards),
achieved TFLOP/s = FLOPs x batch / p50 time, and its fraction of the device's dense peak for the
run's math mode (fp32 with TF32 -> the TF32 tensor-core peak; bf16 -> the bf16 peak; unknown
devices and CPUs: none). Peak memory: torch.cuda.max_memory_allocated over a row's warm-up and
timed end-to-end iterations, weights included. On NVIDIA GPUs NVML readings (SM / memory clocks,
power, temperature, memory used) are sampled every 0.1 s during the run (per row and overall).
Out-of-memory at a batch size is caught, recorded as a row with status "oom", and the run goes on;
other failures become "error" rows (exit status 1).

Pipelines (titok.pipeline): reference (official math, eager fp32), compile (torch.compile of it),
fast (batched guidance, kernels, prefix precompute, CUDA graph, bf16 on CUDA). Random weights
unless --checkpoint-dir is given: speed does not depend on weights.

`--compare paper` re-measures Tables 1 and 2 of the paper on this device: TiTok-L-32, B-64, S-128
(256px), L-64, B-128 (512px), the MaskGIT baseline and DiT-XL/2 (bench/baselines), in two
protocols: `paper` (fp32 weights and activations, TF32 enabled for matmul and cuDNN, eager: the
official sampling scripts) and `best` (bf16, each model's fastest mode: fast for TiTok and
MaskGIT, torch.compile for DiT). Where the full step count would take too long (the CPU
defaults, or --project-steps N), each timed iteration runs an N-step sampler then the decode,
timed as two parts; the sampling part is projected linearly in generator forwards per image
(transformer calls for DiT, one per step) to the full count and the measured decode is added:
such rows say "projected from N steps" (JSON: projected_from_steps, projection). Their stage times
for generator forwards / sampling steps are scaled the same way, and they run without a CUDA graph
(it would fold the decode into the sampling part).

GPU defaults: pipelines reference,compile,fast, batch sizes 1,8,32,128, 10 timed iterations after 3
warm-up calls; --compare: batch 32, 3 iterations after 1 warm-up, both protocols, no projection.
CPU defaults: batch 1, 2 timed iterations after 1 warm-up, pipelines reference,fast (compile is
left out: inductor compiles titok-l-32 for about 4 minutes on a 2-core CPU; ask for it with
--pipelines).
`--compare` on CPU: batch 1, 1 timed iteration, no warm-up call per row (the process is primed
once with tiny models of each family instead, so that one-time initialisation is not timed),
projection for the long samplers (S-128, B-128: 2 of 64 steps; MaskGIT: 2 steps; DiT: 1 of 250),
the `paper` protocol only (bf16 math is emulated on most CPUs). CPU figures are not the paper's
GPU figures.

The JSON result file follows bench/schema_sampling.json (schema id titok-kernels/sampling/v1).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
import traceback
import warnings
from typing import Callable

if __package__ in (None, ""):  # run as a script: `python bench/sampling.py`
    # sys.path[0] is then bench/ itself, whose kernels.py and profile.py would shadow the `kernels`
    # package and the standard library's `profile`: drop it, and make the repository importable.
    import importlib.util

    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    if importlib.util.find_spec("bench") is None:
        sys.path.insert(0, os.path.dirname(_here))

import torch  # noqa: E402

from titok_bench.common import (NvmlMonitor, device_peaks, environment, free_device_memory, is_out_of_memory,  # noqa: E402
                          peak_memory_bytes, peak_memory_reset, summarize_ms, time_chain, time_fn, validate_json,
                          write_json)

SCHEMA_ID = "titok-kernels/sampling/v1"
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema_sampling.json")
CPU_NOTICE = ("CPU run: CPU figures are not the paper's GPU figures (the paper measured samples/s on an A100 GPU "
              "in float32); they show relative costs on this machine only.")
STAGES = ("generator_forwards", "sampling_steps", "vit_decoder", "pixel_decoder")
STAGE_TITLES = {"generator_forwards": "gen fwd", "sampling_steps": "steps", "vit_decoder": "ViT dec",
                "pixel_decoder": "pixel dec"}
MODES = ("reference", "compile", "fast")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
TITOK_MODELS = ("titok-l-32", "titok-b-64", "titok-s-128", "titok-l-64-512", "titok-b-128-512")


# ---- runners: one interface over TiTok pipelines, the MaskGIT baseline and DiT ----------------------

class TiTokRunner:
    """A `titok.pipeline.Pipeline` behind the harness's runner interface.

    `steps`: run a sampler with this many steps instead of the model's (for projection).
    """

    family = "titok"

    def __init__(self, tokenizer, generator, *, mode: str, dtype: torch.dtype | None, steps: int | None = None,
                 cuda_graph: bool = True, seed: int = 0):
        from titok.pipeline import Pipeline

        self.full_sampler = generator.sampler
        sampler = dataclasses.replace(self.full_sampler, num_steps=steps) if steps else self.full_sampler
        self.pipeline = Pipeline(tokenizer, generator, mode=mode, dtype=dtype, sampler=sampler, cuda_graph=cuda_graph)
        self.mode, self.dtype, self.seed = mode, self.pipeline.dtype, seed
        self.cuda_graph = self.pipeline.cuda_graph
        self.steps = sampler.num_steps
        self.tok_cfg, self.gen_cfg = tokenizer.cfg, generator.cfg

    def sample(self, class_ids):
        return self.pipeline.generate_tokens(class_ids, seed=self.seed)

    def decode(self, tokens):
        return self.pipeline.decode_tokens(tokens)

    def generate(self, class_ids):
        return self.pipeline.generate(class_ids, seed=self.seed)

    def units(self) -> int:
        from titok.flops import generator_forwards

        return generator_forwards(self.pipeline.sampler, self.gen_cfg.image_seq_len)

    def full_units(self) -> int:
        from titok.flops import generator_forwards

        return generator_forwards(self.full_sampler, self.gen_cfg.image_seq_len)

    def flops(self) -> dict:
        from titok.flops import generation_flops

        return generation_flops(self.tok_cfg, self.gen_cfg, self.full_sampler)

    def stage_functions(self, batch: int) -> dict:
        return self.pipeline.stage_functions(batch)

    def describe(self) -> dict:
        from titok.pipeline import describe

        return {"family": self.family, **describe(self.pipeline), "steps": self.steps,
                "full_steps": self.full_sampler.num_steps}


@dataclasses.dataclass
class ModelSpec:
    """A model the harness can build and time."""

    key: str                      # CLI name
    label: str                    # table name
    family: str                   # titok | maskgit | dit
    resolution: int
    build: Callable               # (device, checkpoint_dir) -> models (tuple)
    runner: Callable              # (models, mode, dtype, steps, cuda_graph) -> runner
    modes: tuple = MODES
    best_mode: str = "fast"
    num_classes: int = 1000
    full_steps: Callable = None   # models -> the model's sampling steps
    cpu_project_steps: int | None = None   # --compare on CPU: time this many steps and project
    paper_samples_per_s: float | None = None
    paper_source: str | None = None


def _titok_build(name: str):
    def build(device, checkpoint_dir=None):
        from titok.configs import get_variant
        from titok.loading import load_generator, load_tokenizer

        variant = get_variant(name)
        if checkpoint_dir and not variant.architecture_only:  # the 512px models have no released weights
            tok_src, gen_src = _checkpoint_paths(checkpoint_dir, variant)
            return load_tokenizer(tok_src, name, device=device), load_generator(gen_src, name, device=device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # RandomWeightsWarning: the harness says "random weights" itself
            return (load_tokenizer(None, name, random_weights=True, device=device),
                    load_generator(None, name, random_weights=True, device=device))
    return build


def _checkpoint_paths(root: str, variant) -> tuple[str, str]:
    """DIR/<tokenizer repo name> and DIR/<generator repo name> (official HF folders), or DIR/{tokenizer,generator}."""
    pairs = [(os.path.join(root, variant.tokenizer_repo.split("/")[-1]),
              os.path.join(root, variant.generator_repo.split("/")[-1])),
             (os.path.join(root, "tokenizer"), os.path.join(root, "generator"))]
    for tok, gen in pairs:
        if os.path.exists(tok) and os.path.exists(gen):
            return tok, gen
    raise SystemExit(f"--checkpoint-dir {root}: expected {pairs[0][0]} and {pairs[0][1]} (official Hugging Face "
                     "folders), or tokenizer/ and generator/ inside it")


def _weights_of(spec: ModelSpec, checkpoint_dir: str | None) -> str:
    """'checkpoint' where --checkpoint-dir supplied this model's weights, else 'random'."""
    if not checkpoint_dir or spec.family != "titok" or spec.key.startswith("tiny"):
        return "random"
    from titok.configs import get_variant

    return "random" if get_variant(spec.key).architecture_only else "checkpoint"


def _titok_runner(models, mode, dtype, steps=None, cuda_graph=True):
    return TiTokRunner(models[0], models[1], mode=mode, dtype=dtype, steps=steps, cuda_graph=cuda_graph)


def _tiny_titok_build(device, checkpoint_dir=None):
    from titok.configs import TINY_GENERATOR, TINY_TOKENIZER, SamplerConfig
    from titok.loading import build_generator_model, build_tokenizer, init_random_weights

    tok = init_random_weights(build_tokenizer(TINY_TOKENIZER)).to(device).eval().requires_grad_(False)
    gen = init_random_weights(build_generator_model(TINY_GENERATOR)).to(device).eval().requires_grad_(False)
    gen.sampler = SamplerConfig(4, 4.5, "linear", randomize_temperature=9.5)
    return tok, gen


def _maskgit_build(cfg_fn):
    def build(device, checkpoint_dir=None):
        from titok_bench.baselines.maskgit import build_maskgit

        cfg = cfg_fn()
        return (cfg, *build_maskgit(cfg, device))
    return build


def _maskgit_runner(models, mode, dtype, steps=None, cuda_graph=True):
    from titok_bench.baselines.maskgit import MaskGITRunner

    cfg, gen, quant, dec = models
    return MaskGITRunner(gen, quant, dec, cfg, mode=mode, dtype=dtype, steps=steps, cuda_graph=cuda_graph)


def _dit_build(cfg_fn):
    def build(device, checkpoint_dir=None):
        from titok_bench.baselines.dit import build_dit

        cfg = cfg_fn()
        return (cfg, *build_dit(cfg, device))
    return build


def _dit_runner(models, mode, dtype, steps=None, cuda_graph=True):
    from titok_bench.baselines.dit import DiTRunner

    cfg, transformer, vae = models
    return DiTRunner(transformer, vae, cfg, mode=mode, dtype=dtype or torch.float32, run_steps=steps)


def _titok_steps(models) -> int:
    return models[1].sampler.num_steps


def _maskgit_steps(models) -> int:
    return models[0].sampler.num_steps


def _dit_steps(models) -> int:
    return models[0].steps


def _specs() -> dict[str, ModelSpec]:
    from titok_bench.baselines.dit import TINY_DIT, dit_xl_2
    from titok_bench.baselines.maskgit import TINY_MASKGIT, maskgit_config

    def titok(key, label, res, build=None, **kw):
        return ModelSpec(key, label, "titok", res, build or _titok_build(key), _titok_runner, full_steps=_titok_steps,
                         **kw)

    def maskgit(key, res, cfg_fn, **kw):
        label = "tiny MaskGIT" if key.startswith("tiny") else "MaskGIT"
        return ModelSpec(key, label, "maskgit", res, _maskgit_build(cfg_fn), _maskgit_runner,
                         full_steps=_maskgit_steps, cpu_project_steps=2, **kw)

    def dit(key, res, cfg_fn, **kw):
        label = "tiny DiT" if key.startswith("tiny") else "DiT-XL/2"
        return ModelSpec(key, label, "dit", res, _dit_build(cfg_fn), _dit_runner, modes=("reference", "compile"),
                         best_mode="compile", full_steps=_dit_steps, cpu_project_steps=1, **kw)

    t1, t2 = "Table 1 (256x256, A100, float32)", "Table 2 (512x512, A100, float32)"
    specs = [
        titok("titok-l-32", "TiTok-L-32", 256, paper_samples_per_s=101.6, paper_source=t1),
        titok("titok-b-64", "TiTok-B-64", 256, paper_samples_per_s=89.8, paper_source=t1),
        titok("titok-s-128", "TiTok-S-128", 256, cpu_project_steps=2, paper_samples_per_s=7.8,
              paper_source=t1 + ", 64 steps"),
        maskgit("maskgit-256", 256, lambda: maskgit_config(256), paper_samples_per_s=50.5, paper_source=t1),
        dit("dit-xl-2-256", 256, lambda: dit_xl_2(256), paper_samples_per_s=0.6, paper_source=t1),
        titok("titok-l-64-512", "TiTok-L-64", 512, paper_samples_per_s=41.0, paper_source=t2),
        titok("titok-b-128-512", "TiTok-B-128", 512, cpu_project_steps=2, paper_samples_per_s=7.4,
              paper_source=t2 + ", 64 steps"),
        maskgit("maskgit-512", 512, lambda: maskgit_config(512), paper_samples_per_s=3.9, paper_source=t2),
        dit("dit-xl-2-512", 512, lambda: dit_xl_2(512), paper_samples_per_s=0.1, paper_source=t2),
        # Small models of the same code, for tests (not listed in --help).
        titok("tiny-titok", "tiny TiTok", 64, build=_tiny_titok_build, num_classes=10, cpu_project_steps=2),
        maskgit("tiny-maskgit", 64, lambda: TINY_MASKGIT, num_classes=10),
        dit("tiny-dit", 64, lambda: TINY_DIT, num_classes=10),
    ]
    return {s.key: s for s in specs}


SPECS = _specs()
COMPARE_SETS = {
    "paper": ("titok-l-32", "titok-b-64", "titok-s-128", "maskgit-256", "dit-xl-2-256",
              "titok-l-64-512", "titok-b-128-512", "maskgit-512", "dit-xl-2-512"),
    "tiny": ("tiny-titok", "tiny-maskgit", "tiny-dit"),   # tests only
}
PUBLIC_MODELS = tuple(k for k in SPECS if not k.startswith("tiny-"))


# ---- measurement --------------------------------------------------------------------------------

@dataclasses.dataclass
class Settings:
    device: torch.device
    iters: int
    warmup: int
    stages: bool
    stage_iters: int
    stage_warmup: int
    tf32: bool


def project_ms(sampling_ms: float, decode_ms: float, measured_units: int, full_units: int) -> float:
    """Projected end-to-end time: the decode as measured + the sampling part scaled linearly.

    `units` are what the sampling cost is linear in: generator forwards per image for MaskGIT
    samplers (a guided step runs two, an unguided one), transformer calls (one doubled batch per
    step) for DiT.
    """
    if measured_units < 1 or full_units < measured_units:
        raise ValueError(f"cannot project {measured_units} measured units to {full_units}")
    return decode_ms + sampling_ms * (full_units / measured_units)


def peak_key(dtype: torch.dtype, tf32: bool) -> str:
    """Which of the device's dense peaks applies to a run in this dtype."""
    if dtype == torch.float32:
        return "tf32" if tf32 else "fp32"
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


@contextlib.contextmanager
def tf32_mode(enabled: bool):
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _class_ids(batch: int, num_classes: int, device) -> torch.Tensor:
    return ((torch.arange(batch) * 7 + 1) % num_classes).to(device)


def _dtype_name(dtype) -> str | None:
    return None if dtype is None else str(dtype).replace("torch.", "")


def measure(spec: ModelSpec, models, *, mode: str, dtype: torch.dtype | None, batch: int, settings: Settings,
            monitor: NvmlMonitor, project_steps: int | None = None, protocol: str | None = None) -> dict:
    """Time one (model, mode, dtype, batch): a result row. Out-of-memory and other errors become rows too."""
    device = settings.device
    tf32 = settings.tf32 and device.type == "cuda"
    row = _empty_row(spec, mode, dtype, batch, protocol)
    row["tf32"] = tf32
    runner = None
    try:
        with tf32_mode(tf32), torch.no_grad():
            project = project_steps is not None and project_steps < spec.full_steps(models)
            # A projected run uses no CUDA graph: the graph would fold the decode into the sampling part.
            runner = spec.runner(models, mode, dtype, project_steps if project else None, not project)
            flops = runner.flops()
            row.update(dtype=_dtype_name(runner.dtype), cuda_graph=bool(runner.cuda_graph),
                       steps=runner.steps, full_steps=runner.describe()["full_steps"],
                       generator_forwards=flops["generator_forwards"], gflop_per_image=flops["total"] / 1e9,
                       gflop_by_stage={k: flops[k] / 1e9 for k in ("generator", "vit_decoder", "pixel_decoder")})
            # torch.compile compiles and a CUDA graph is captured on the first call: never inside the timed region.
            warmup = settings.warmup if mode != "compile" and not runner.cuda_graph else max(1, settings.warmup)
            row["warmup"] = warmup
            cls = _class_ids(batch, spec.num_classes, device)
            peak_memory_reset(device)
            start = monitor.mark()
            if not project:
                totals = time_chain([lambda: runner.generate(cls)], device=device, warmup=warmup,
                                    iters=settings.iters)[0]
                ratio_units = ratio_steps = 1.0
            else:
                sampling, decode = time_chain([lambda: runner.sample(cls), runner.decode], device=device,
                                              warmup=warmup, iters=settings.iters)
                units, full_units = runner.units(), runner.full_units()
                totals = [project_ms(s, d, units, full_units) for s, d in zip(sampling, decode)]
                ratio_units, ratio_steps = full_units / units, row["full_steps"] / runner.steps
                row["projected_from_steps"] = runner.steps
                row["projection"] = {
                    "measured_steps": runner.steps, "full_steps": row["full_steps"], "measured_units": units,
                    "full_units": full_units, "units": "transformer calls" if spec.family == "dit"
                    else "generator forwards per image",
                    "sampling_ms_measured": summarize_ms(sampling).p50_ms, "decode_ms": summarize_ms(decode).p50_ms}
            end = monitor.mark()
            row["nvml"] = monitor.summary(start, end)
            row["peak_memory_bytes"] = peak_memory_bytes(device)
            timing = summarize_ms(totals)
            row["latency_ms"] = timing.as_dict()
            row["samples_per_s"] = batch / (timing.p50_ms / 1e3)
            row["samples_per_s_p20"] = batch / (timing.p80_ms / 1e3)   # slower iterations -> lower throughput
            row["samples_per_s_p80"] = batch / (timing.p20_ms / 1e3)
            row["achieved_tflops"] = flops["total"] * batch / (timing.p50_ms / 1e3) / 1e12
            peaks = device_peaks(device)
            if peaks is not None:
                row["peak_tflops"] = peaks["tflops"][peak_key(runner.dtype, tf32)]
                row["fraction_of_peak"] = row["achieved_tflops"] / row["peak_tflops"]
            if settings.stages:
                try:
                    stage_ms = {}
                    for name, fn in runner.stage_functions(batch).items():
                        t = time_fn(fn, device=device, warmup=settings.stage_warmup, iters=settings.stage_iters)
                        scale = {"generator_forwards": ratio_units, "sampling_steps": ratio_steps}.get(name, 1.0)
                        stage_ms[name] = (t.p50_ms * scale, project and name in ("generator_forwards",
                                                                                 "sampling_steps"))
                    total = sum(ms for ms, _ in stage_ms.values()) or 1.0
                    row["stages"] = {k: {"ms": ms, "share": ms / total, "projected": p}
                                     for k, (ms, p) in stage_ms.items()}
                except Exception as exc:  # noqa: BLE001 - keep the end-to-end figures when only a stage runs out
                    if not is_out_of_memory(exc):
                        raise
                    row["message"] = f"stage timing ran out of memory ({type(exc).__name__}); end-to-end figures kept"
                    free_device_memory(device)
    except Exception as exc:  # noqa: BLE001 - a harness records the failure and goes on
        oom = is_out_of_memory(exc)
        row["status"] = "oom" if oom else "error"
        row["message"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
        if not oom:
            row["traceback"] = traceback.format_exc(limit=8)
        for key in ("samples_per_s", "samples_per_s_p20", "samples_per_s_p80", "latency_ms", "stages",
                    "achieved_tflops", "fraction_of_peak", "peak_memory_bytes", "nvml"):
            row[key] = None
    finally:
        runner = None
        free_device_memory(device)
    return row


TINY_OF_FAMILY = {"titok": "tiny-titok", "maskgit": "tiny-maskgit", "dit": "tiny-dit"}


def prime_process(plan, device: torch.device, console) -> bool:
    """Run the tiny model of each family in the plan once, in each non-compile mode it will run in.

    With no warm-up call per row (the CPU --compare default), one-time process initialisation
    would otherwise be timed in the first row that meets it: lazy imports, the first call of a
    custom op (about 2.6 s for kernels.maskgit_step on a 2-core CPU), oneDNN / cuBLAS set-up.
    """
    t0 = time.perf_counter()
    done = True
    for family in dict.fromkeys(spec.family for spec, _ in plan):
        tiny = SPECS[TINY_OF_FAMILY[family]]
        modes = {mode for spec, jobs in plan if spec.family == family for mode, *_ in jobs} - {"compile"}
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                models = tiny.build(device)
                for mode in sorted(modes or {"reference"}):
                    runner = tiny.runner(models, mode, None, None, True)
                    cls = _class_ids(1, tiny.num_classes, device)
                    runner.generate(cls)
                    runner.decode(runner.sample(cls))
        except Exception as exc:  # noqa: BLE001 - the real rows will report the problem
            done = False
            console.print(f"note: priming with {tiny.key} failed ({type(exc).__name__}); the first row may include "
                          "one-time initialisation", markup=False)
    free_device_memory(device)
    console.print(f"primed the process with the tiny models in {time.perf_counter() - t0:.1f} s (no per-row warm-up)")
    return done


# ---- output ---------------------------------------------------------------------------------------

def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 170, highlight=False)


def _fmt(value, spec=".2f", none="-"):
    return none if value is None else format(value, spec)


def _fmt_rate(value):
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def _fmt_bytes(n):
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def _status_text(row) -> str:
    if row["status"] == "ok":
        return "projected from %d steps" % row["projected_from_steps"] if row["projected_from_steps"] else "ok"
    from rich.markup import escape

    return escape(f"{row['status'].upper()}: {row['message']}")


def results_table(rows: list[dict], title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("model", "pipeline", "dtype", "batch", "samples/s", "p20-p80", "ms/batch", "vs ref",
                "peak mem", "GFLOP/img", "TFLOP/s", "of peak", "status"):
        table.add_column(col, justify="left" if col in ("model", "pipeline", "dtype", "status") else "right")
    ref = {(r["model"], r["batch_size"]): r["samples_per_s"] for r in rows
           if r["pipeline"] == "reference" and r["samples_per_s"]}
    for r in rows:
        base = ref.get((r["model"], r["batch_size"]))
        speed = f"{r['samples_per_s'] / base:.2f}x" if base and r["samples_per_s"] else "-"
        lat = r["latency_ms"]
        table.add_row(r["model"], r["pipeline"], (r["dtype"] or "-") + ("+tf32" if r["tf32"] else ""),
                      str(r["batch_size"]), _fmt_rate(r["samples_per_s"]),
                      "-" if r["samples_per_s"] is None else
                      f"{_fmt_rate(r['samples_per_s_p20'])}-{_fmt_rate(r['samples_per_s_p80'])}",
                      "-" if lat is None else f"{lat['p50_ms']:.1f}", speed, _fmt_bytes(r["peak_memory_bytes"]),
                      _fmt(r["gflop_per_image"], ".1f"), _fmt(r["achieved_tflops"], ".3f"),
                      _fmt(None if r["fraction_of_peak"] is None else 100 * r["fraction_of_peak"], ".1f") +
                      ("%" if r["fraction_of_peak"] is not None else ""), _status_text(r))
    return table


def stages_table(rows: list[dict], title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("model", "pipeline", "batch", *[STAGE_TITLES[s] + " ms (share)" for s in STAGES], "stage sum ms",
                "end-to-end ms"):
        table.add_column(col, justify="left" if col in ("model", "pipeline") else "right")
    for r in rows:
        if not r["stages"]:
            continue
        cells = []
        for s in STAGES:
            st = r["stages"].get(s)
            cells.append("-" if st is None else f"{st['ms']:.1f} ({100 * st['share']:.0f}%)" + ("*" if st["projected"]
                                                                                                 else ""))
        total = sum(st["ms"] for st in r["stages"].values())
        table.add_row(r["model"], r["pipeline"], str(r["batch_size"]), *cells, f"{total:.1f}",
                      f"{r['latency_ms']['p50_ms']:.1f}" if r["latency_ms"] else "-")
    return table


def claims_rows(rows: list[dict], protocols: list[str]) -> list[dict]:
    """The claims table: each measured row with its speed-up over DiT-XL/2 at the same resolution and protocol."""
    out = []
    for protocol in protocols:
        mine = [r for r in rows if r["protocol"] == protocol]
        dit = {r["resolution"]: r for r in mine if r["family"] == "dit"}
        for r in mine:
            spec = SPECS[r["model"]]
            ref = dit.get(r["resolution"])
            ref_paper = SPECS[ref["model"]].paper_samples_per_s if ref else None
            speedup = (r["samples_per_s"] / ref["samples_per_s"]
                       if ref and ref["samples_per_s"] and r["samples_per_s"] else None)
            paper_speedup = (spec.paper_samples_per_s / ref_paper if spec.paper_samples_per_s and ref_paper else None)
            out.append({"protocol": protocol, "label": r["label"], "model": r["model"], "resolution": r["resolution"],
                        "pipeline": r["pipeline"], "dtype": r["dtype"], "tf32": r["tf32"],
                        "batch_size": r["batch_size"], "steps": r["full_steps"],
                        "samples_per_s": r["samples_per_s"], "speedup_vs_dit": speedup,
                        "paper_samples_per_s": spec.paper_samples_per_s, "paper_speedup_vs_dit": paper_speedup,
                        "paper_source": spec.paper_source, "projected_from_steps": r["projected_from_steps"],
                        "status": r["status"], "message": r["message"]})
    return out


def claims_table(claims: list[dict], title: str):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("protocol", "model", "res", "steps", "pipeline", "batch", "samples/s", "speed-up vs DiT-XL/2",
                "paper samples/s", "paper speed-up", "note"):
        table.add_column(col, justify="left" if col in ("protocol", "model", "pipeline", "note") else "right")
    for c in claims:
        note = ("projected from %d steps" % c["projected_from_steps"]) if c["projected_from_steps"] else ""
        if c["status"] != "ok":
            note = escape(f"{c['status'].upper()}: {c['message']}")
        mode = f"{c['pipeline']} {c['dtype'] or ''}{'+tf32' if c['tf32'] else ''}"
        table.add_row(c["protocol"], c["label"], str(c["resolution"]), str(c["steps"] or "-"), mode,
                      str(c["batch_size"]), _fmt_rate(c["samples_per_s"]),
                      _fmt(c["speedup_vs_dit"], ".1f") + ("x" if c["speedup_vs_dit"] is not None else ""),
                      _fmt(c["paper_samples_per_s"], ".1f"),
                      _fmt(c["paper_speedup_vs_dit"], ".0f") + ("x" if c["paper_speedup_vs_dit"] is not None else ""),
                      note)
    return table


def environment_table(env: dict):
    from rich.table import Table

    table = Table(title="environment", title_justify="left", show_header=False)
    table.add_column("key")
    table.add_column("value")
    for key in ("device_name", "torch", "triton", "cuda", "cpu_threads", "git_sha", "timestamp"):
        table.add_row(key, str(env.get(key)))
    if env.get("extra_packages"):
        table.add_row("packages", ", ".join(f"{k} {v}" for k, v in env["extra_packages"].items()))
    nvml = env.get("nvml")
    if nvml and nvml.get("static"):
        st = nvml["static"]
        table.add_row("nvml", f"driver {st.get('driver')}, max SM {st.get('max_sm_clock_mhz')} MHz, max mem "
                              f"{st.get('max_mem_clock_mhz')} MHz, power limit {st.get('power_limit_w')} W")
    run = (nvml or {}).get("during_run")
    if run:
        for field, unit, scale in (("sm_clock_mhz", "MHz", 1), ("mem_clock_mhz", "MHz", 1), ("power_w", "W", 1),
                                   ("temperature_c", "C", 1), ("memory_used_bytes", "GiB", 2**30)):
            s = run.get(field)
            if s:
                table.add_row(f"{field} (run)", f"min {s['min'] / scale:.0f} / median {s['p50'] / scale:.0f} / "
                                                f"max {s['max'] / scale:.0f} {unit}")
    elif env.get("device_type") == "cuda":
        table.add_row("nvml", "not available (no pynvml, or NVML did not answer)")
    return table


def plot(rows: list[dict], path: str, *, compare: bool, claims: list[dict] | None = None) -> None:
    """Two panels: samples/s vs batch size per (model, mode) on a log scale; speed-up bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    series: dict[tuple, list] = {}
    for r in rows:
        if r["samples_per_s"]:
            series.setdefault((r["label"], r["resolution"], r["pipeline"], r["protocol"]), []).append(
                (r["batch_size"], r["samples_per_s"]))
    for (label, res, mode, protocol), pts in sorted(series.items(), key=lambda kv: str(kv[0])):
        pts.sort()
        name = f"{label} {res}px {mode}" + (f" ({protocol})" if protocol else "")
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("batch size")
    ax1.set_ylabel("samples/s (p50)")
    ax1.set_title("end-to-end throughput")
    ax1.grid(True, which="both", alpha=0.3)
    if series:
        ax1.legend(fontsize=7)
    if compare and claims:
        ok = [c for c in claims if c["speedup_vs_dit"]]
        names = [f"{c['label']} {c['resolution']} ({c['protocol']})" for c in ok]
        ax2.bar(range(len(ok)), [c["speedup_vs_dit"] for c in ok], label="measured")
        paper = [c["paper_speedup_vs_dit"] or 0 for c in ok]
        ax2.scatter(range(len(ok)), paper, color="black", marker="_", s=300, label="paper", zorder=3)
        ax2.set_xticks(range(len(ok)), names, rotation=60, ha="right", fontsize=7)
        ax2.set_yscale("log")
        ax2.set_ylabel("speed-up over DiT-XL/2 (same resolution)")
        ax2.legend(fontsize=7)
    else:
        ref = {(r["model"], r["batch_size"]): r["samples_per_s"] for r in rows
               if r["pipeline"] == "reference" and r["samples_per_s"]}
        bars = [(f"{r['model']} {r['pipeline']} b{r['batch_size']}", r["samples_per_s"] / ref[(r["model"],
                                                                                                r["batch_size"])])
                for r in rows if r["samples_per_s"] and (r["model"], r["batch_size"]) in ref]
        ax2.bar(range(len(bars)), [b[1] for b in bars])
        ax2.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=60, ha="right", fontsize=7)
        ax2.axhline(1.0, color="black", lw=0.8)
        ax2.set_ylabel("speed-up over the reference pipeline (same batch)")
    ax2.set_title("speed-up")
    fig.suptitle(os.path.basename(sys.argv[0]) + " " + " ".join(sys.argv[1:]), fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- the two jobs -----------------------------------------------------------------------------------

def _parse_list(text: str, what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise SystemExit(f"--{what} is empty")
    return items


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/sampling.py", description=__doc__.split("\n\n")[0],
        epilog="Defaults differ by device. GPU: pipelines reference,compile,fast, batch sizes 1,8,32,128, 10 "
               "iterations after 3 warm-up calls. CPU: pipelines reference,fast (compile is left out on CPU: "
               "inductor compiles titok-l-32 for about 4 minutes on a 2-core CPU; add it with --pipelines), "
               "batch size 1, 2 iterations after 1 warm-up. --compare on GPU: batch 32, 3 iterations after 1 "
               "warm-up, both protocols; on CPU: batch 1, 1 iteration, no warm-up, the paper protocol, long samplers "
               "projected from a few steps. CPU figures are not the paper's GPU figures.")
    p.add_argument("--model", default="titok-l-32",
                   help=f"model to time (default titok-l-32): {', '.join(PUBLIC_MODELS)}")
    p.add_argument("--pipelines", help="comma-separated subset of reference,compile,fast (see defaults below)")
    p.add_argument("--batch-sizes", help="comma-separated batch sizes")
    p.add_argument("--dtype", default="auto",
                   help="auto (reference/compile float32, fast bfloat16 on CUDA and float32 on CPU), float32, "
                        "bfloat16 or float16 for every pipeline")
    p.add_argument("--iters", type=int, help="timed iterations per row")
    p.add_argument("--warmup", type=int, help="warm-up calls per row, outside the timed region")
    p.add_argument("--stage-iters", type=int, help="timed calls per stage (default: --iters on GPU, 1 on CPU)")
    p.add_argument("--stages", choices=("auto", "on", "off"), default="auto",
                   help="time each stage alone (auto: on, except with --compare)")
    p.add_argument("--no-tf32", action="store_true",
                   help="keep float32 matmuls and convolutions in full fp32 on CUDA (default: TF32 on, as the "
                        "official sampling script)")
    p.add_argument("--checkpoint-dir",
                   help="folder with the released checkpoints (official Hugging Face folders named after their "
                        "repos, e.g. tokenizer_titok_l32_imagenet/ and generator_titok_l32_imagenet/); default: "
                        "random weights (speed does not depend on weights)")
    p.add_argument("--out", help="write the JSON result file here (schema: bench/schema_sampling.json)")
    p.add_argument("--plot", help="write a PNG: samples/s vs batch size per mode, and speed-up bars")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--compare", metavar="paper",
                   help="'paper': the claims table (TiTok vs MaskGIT vs DiT-XL/2, 256 and 512px) on this device")
    p.add_argument("--protocol", choices=("paper", "best", "both"),
                   help="--compare protocols (default: both on GPU, paper on CPU)")
    p.add_argument("--project-steps", type=int,
                   help="time this many sampling steps and project to the full count (0: never; default: never on "
                        "GPU, per model with --compare on CPU)")
    return p


def _device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(text)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return device


def _extra_packages() -> dict:
    """Versions of the optional packages the harness uses (read from metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("diffusers", "nvidia-ml-py", "rich", "matplotlib", "jsonschema"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _dtype_arg(text: str) -> torch.dtype | None:
    if text == "auto":
        return None
    if text not in DTYPES:
        raise SystemExit(f"--dtype must be auto, {', '.join(DTYPES)}; got {text!r}")
    return DTYPES[text]


def run(argv: list[str] | None = None) -> tuple[dict, list[str]]:
    """Parse arguments, measure, print, write: returns the result payload and any output problems."""
    args = build_parser().parse_args(argv)
    t_start = time.perf_counter()
    device = _device(args.device)
    on_gpu = device.type == "cuda"
    compare = args.compare
    if compare is not None and compare not in COMPARE_SETS:
        raise SystemExit(f"--compare must be 'paper', got {compare!r}")
    if compare is None and args.model not in SPECS:
        raise SystemExit(f"unknown --model {args.model!r}; choose from {', '.join(PUBLIC_MODELS)}")
    console = _console()
    notes: list[str] = []

    if compare:
        batch_sizes = [int(x) for x in _parse_list(args.batch_sizes, "batch-sizes")] if args.batch_sizes else \
            ([32] if on_gpu else [1])
        iters = args.iters if args.iters is not None else (3 if on_gpu else 1)
        warmup = args.warmup if args.warmup is not None else (1 if on_gpu else 0)
        stages = args.stages == "on"
    else:
        batch_sizes = [int(x) for x in _parse_list(args.batch_sizes, "batch-sizes")] if args.batch_sizes else \
            ([1, 8, 32, 128] if on_gpu else [1])
        iters = args.iters if args.iters is not None else (10 if on_gpu else 2)
        warmup = args.warmup if args.warmup is not None else (3 if on_gpu else 1)
        stages = args.stages != "off"
    if iters < 1 or warmup < 0 or any(b < 1 for b in batch_sizes):
        raise SystemExit("--iters must be >= 1, --warmup >= 0, batch sizes >= 1")
    settings = Settings(device=device, iters=iters, warmup=warmup, stages=stages,
                        stage_iters=args.stage_iters or (iters if on_gpu else 1), stage_warmup=1 if on_gpu else 0,
                        tf32=not args.no_tf32)
    dtype_override = _dtype_arg(args.dtype)
    if not on_gpu and dtype_override in (torch.bfloat16, torch.float16):
        notes.append("bf16/fp16 on this CPU: such math is often emulated on CPUs and much slower than fp32.")

    # The plan: (spec, [(mode, dtype, protocol, project_steps)])
    plan: list[tuple[ModelSpec, list[tuple]]] = []
    protocols: list[str] = []
    if compare:
        protocols = {"paper": ["paper"], "best": ["best"], "both": ["paper", "best"]}[
            args.protocol or ("both" if on_gpu else "paper")]
        if not on_gpu and "best" not in protocols:
            notes.append("--compare on CPU runs the paper protocol only (add --protocol both for 'best': on CPU "
                         "it keeps float32, bf16 math being emulated on most CPUs).")
        for key in COMPARE_SETS[compare]:
            spec = SPECS[key]
            if args.project_steps is not None:
                proj = args.project_steps or None
            else:
                proj = None if on_gpu else spec.cpu_project_steps
            jobs = []
            for protocol in protocols:
                if protocol == "paper":
                    jobs.append(("reference", torch.float32, "paper", proj))
                else:
                    jobs.append((spec.best_mode, torch.bfloat16 if on_gpu else torch.float32, "best", proj))
            plan.append((spec, jobs))
    else:
        spec = SPECS[args.model]
        default_modes = "reference,compile,fast" if on_gpu else "reference,fast"
        modes = _parse_list(args.pipelines or default_modes, "pipelines")
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise SystemExit(f"unknown pipelines {bad}; choose from {', '.join(MODES)}")
        if not on_gpu and args.pipelines is None:
            notes.append("compile is left out of the CPU default: inductor compiles titok-l-32 for about 4 "
                         "minutes on a 2-core CPU; add it with --pipelines reference,compile,fast.")
        skipped = [m for m in modes if m not in spec.modes]
        if len(skipped) == len(modes):
            raise SystemExit(f"{spec.key} has no {', '.join(skipped)} pipeline; it has {', '.join(spec.modes)}")
        if skipped:
            notes.append(f"{spec.key} has no {', '.join(skipped)} pipeline: skipped.")
        proj = args.project_steps or None
        plan.append((spec, [(m, dtype_override, None, proj) for m in modes if m in spec.modes]))
    n_rows = sum(len(jobs) for _, jobs in plan) * len(batch_sizes)
    if not on_gpu:
        console.print(f"[bold yellow]{CPU_NOTICE}[/]")
    console.print("weights: " + (f"checkpoints from {args.checkpoint_dir}" if args.checkpoint_dir else
                                 "random (speed does not depend on weights)"))

    env = environment(device)
    env["extra_packages"] = _extra_packages()
    monitor = NvmlMonitor(device).start()
    rows: list[dict] = []
    build_seconds: dict[str, float] = {}
    weights: dict[str, str] = {}
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal)
    primed = False
    if warmup == 0:  # one-time process initialisation must not land in the first timed iteration
        primed = prime_process(plan, device, console)
    run_start = monitor.mark()
    with progress:
        task = progress.add_task("sampling", total=n_rows)
        for spec, jobs in plan:
            progress.update(task, description=f"building {spec.key}")
            t0 = time.perf_counter()
            try:
                models = spec.build(device, args.checkpoint_dir)
            except SystemExit:
                raise
            except Exception as exc:  # noqa: BLE001
                oom = is_out_of_memory(exc)
                why = f"building the model failed: {type(exc).__name__}: {exc}"
                if isinstance(exc, ImportError):
                    why += f" (install it: pip install {exc.name or 'the missing package'}, or pip install -e .[bench])"
                console.print(f"{spec.key}: {why}", style="red", markup=False)
                for mode, dtype, protocol, _ in jobs:
                    for b in batch_sizes:
                        rows.append(_failed_row(spec, mode, dtype, b, protocol, "oom" if oom else "error", why))
                        progress.advance(task)
                free_device_memory(device)
                continue
            build_seconds[spec.key] = time.perf_counter() - t0
            weights[spec.key] = _weights_of(spec, args.checkpoint_dir)
            console.print(f"built {spec.key} in {build_seconds[spec.key]:.1f} s ({weights[spec.key]} weights)")
            for mode, dtype, protocol, proj in jobs:
                for b in batch_sizes:
                    progress.update(task, description=f"{spec.key} {mode} batch {b}")
                    t0 = time.perf_counter()
                    row = measure(spec, models, mode=mode, dtype=dtype, batch=b, settings=settings, monitor=monitor,
                                  project_steps=proj, protocol=protocol)
                    row["wall_seconds"] = time.perf_counter() - t0
                    rows.append(row)
                    progress.advance(task)
                    what = f"{spec.key} {mode}{' (' + protocol + ')' if protocol else ''} batch {b}"
                    if row["status"] == "ok":
                        console.print(f"  {what}: {_fmt_rate(row['samples_per_s'])} samples/s"
                                      + (f" (projected from {row['projected_from_steps']} steps)"
                                         if row["projected_from_steps"] else "")
                                      + f"  [{row['wall_seconds']:.0f} s]")
                    else:
                        console.print(f"  {what}: {row['status'].upper()} - {row['message']}", style="red",
                                      markup=False)
            models = None
            free_device_memory(device)
    run_end = monitor.mark()
    env["nvml"] = None if not monitor.available else {"static": monitor.static_info(),
                                                      "during_run": monitor.summary(run_start, run_end)}
    monitor.stop()

    claims = claims_rows(rows, protocols) if compare else None
    wall = time.perf_counter() - t_start
    config = {"job": "compare" if compare else "models", "compare": compare, "models": [s.key for s, _ in plan],
              "pipelines": sorted({j[0] for _, jobs in plan for j in jobs}, key=MODES.index),
              "protocols": protocols or None, "batch_sizes": batch_sizes, "dtype": args.dtype, "iters": iters,
              "warmup": warmup, "primed": primed, "stages": stages, "stage_iters": settings.stage_iters,
              "stage_warmup": settings.stage_warmup, "tf32": settings.tf32 and on_gpu,
              "project_steps": args.project_steps, "device": str(device),
              "weights": args.checkpoint_dir or "random", "weights_by_model": weights,
              "build_seconds": build_seconds,
              "wall_seconds": wall, "notes": notes}
    payload = {"schema": SCHEMA_ID, "environment": env, "config": config, "results": rows}
    if compare:
        payload["claims"] = claims

    console.print(environment_table(env))
    if compare:
        console.print(claims_table(claims, f"speed claims re-measured on {env['device_name']} (batch "
                                           f"{', '.join(map(str, batch_sizes))}; paper: A100, float32)"))
    else:
        console.print(results_table(rows, f"{plan[0][0].key}: end-to-end samples/s on {env['device_name']}"))
    if stages and any(r["stages"] for r in rows):
        console.print(stages_table(rows, "per-stage time, each stage alone (share of the stage sum; * projected)"))
    for note in notes:
        console.print(f"note: {note}", markup=False)
    if not on_gpu:
        console.print(f"[bold yellow]{CPU_NOTICE}[/]")
    console.print(f"wall time {wall:.0f} s")
    problems: list[str] = []
    if args.out:
        write_json(args.out, payload)
        console.print(f"results -> {args.out}")
        try:
            validate_json(_jsonable(payload), SCHEMA_PATH)
        except ImportError:
            console.print("note: jsonschema is not installed: the result file was not validated against "
                          "bench/schema_sampling.json (pip install jsonschema)")
        except ValueError as exc:
            problems.append(f"the result file does not follow the schema: {exc}")
    if args.plot:
        try:
            plot(rows, args.plot, compare=bool(compare), claims=claims)
            console.print(f"plot -> {args.plot}")
        except ImportError as exc:
            problems.append(f"no plot: {exc} (pip install matplotlib)")
    for problem in problems:
        console.print(problem, style="red", markup=False)
    return payload, problems


ROW_FIGURES = ("samples_per_s", "samples_per_s_p20", "samples_per_s_p80", "latency_ms", "stages", "peak_memory_bytes",
               "gflop_per_image", "gflop_by_stage", "achieved_tflops", "peak_tflops", "fraction_of_peak",
               "projected_from_steps", "projection", "nvml")


def _empty_row(spec, mode, dtype, batch, protocol) -> dict:
    """A result row with every field present and no figures yet."""
    row = {"model": spec.key, "label": spec.label, "family": spec.family, "resolution": spec.resolution,
           "protocol": protocol, "pipeline": mode, "dtype": _dtype_name(dtype), "tf32": False, "cuda_graph": False,
           "batch_size": batch, "warmup": None, "steps": None, "full_steps": None, "generator_forwards": None,
           "status": "ok", "message": None}
    row.update({key: None for key in ROW_FIGURES})
    return row


def _failed_row(spec, mode, dtype, batch, protocol, status, message) -> dict:
    row = _empty_row(spec, mode, dtype, batch, protocol)
    row.update(status=status, message=message)
    return row


def _jsonable(payload: dict) -> dict:
    import json

    return json.loads(json.dumps(payload))


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 1 when a row failed with an error (not out-of-memory) or an output could not be written."""
    payload, problems = run(argv)
    return 1 if problems or any(r["status"] == "error" for r in payload["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
