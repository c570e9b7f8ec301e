"""Profiling report: where the time of one generation (TiTok, or the MaskGIT baseline), or one encode, goes.

    python bench/profiling.py --model titok-l-32 --pipeline fast --batch-size 64
    python bench/profiling.py --model titok-l-32 --task encode --batch-size 4 --device cpu

writes results/<device>/<model>-<pipeline>[-encode]-b<batch>.md (or --out-dir) and a .json beside it with:
- provenance: command, versions, device, date, git SHA;
- the per-stage breakdown (generator forwards, sampling steps, ViT decoder, pixel
  decoder; for encode: ViT encoder, quantize), each stage timed alone, its share, its
  per-image FLOPs and achieved GFLOP/s; on a CPU also the fraction of the machine's
  matrix rate (an N^3 torch.mm in the pipeline's dtype, `--gemm-n`), for each stage
  and the end to end;
- the top kernels / operators by total time from torch.profiler over one end-to-end
  generation (name, calls, total and mean time, share), the project's Triton kernels
  marked, and the configs their autotuners chose. The profiled generation runs EAGERLY (no
  CUDA graph) even when the pipeline replays one: a graph replay dispatches no operators,
  so torch.profiler would see no operator events and the roofline rows (built from them)
  would be empty. `profiled` in the report says so; the end-to-end section gives the
  graph-replay time and, beside it, the eager time of the profiled mode;
- a roofline table for the project's ops and the large GEMMs/convolutions: achieved
  TFLOP/s and GB/s from their FLOP/byte counts, arithmetic intensity and fraction of
  the device's peak, plus a roofline PNG (when matplotlib is installed);
- NVML telemetry over the run (clocks, power, temperature, memory) on NVIDIA GPUs.
`--trace` also writes a Chrome trace (not committed: *.trace.json is git-ignored).

On CPU the report has the same sections, for the CPU: no NVML, no device peaks, no
kernel rows for ops that did not run. `--model tiny` is the test-size model (ViT
width 64, 2 layers) that checks the report format in seconds. Exit status: 0 done, 2 usage
error (one line), 130 interrupted; every file is written whole (temporary name, then rename).
"""
from __future__ import annotations

import os
import sys
import warnings

import torch

from titok_bench.harness import cli
from titok_bench.harness.ceilings import gemm_rate
from titok_bench.harness.env import device_peaks, device_slug, environment, parse_device
from titok_bench.harness.models import PIPELINE_MODELS as MODELS
from titok_bench.harness.models import SPECS
from titok_bench.harness.nvml import NvmlMonitor
from titok_bench.harness.profile_report import to_markdown, write_roofline_png
from titok_bench.harness.results import write_atomic, write_json, write_text
from titok_bench.harness.roofline import GEMM_OPS, PROJECT_OPS, SHAPE_FLOPS_OPS, roofline_row
from titok_bench.harness.timing import time_fn

SCHEMA = "titok-kernels/profile/v1"


PROFILED_WHY = ("a CUDA graph replay dispatches no operators: torch.profiler would record no operator events "
                "and the roofline rows, built from them, would be empty; so the profiled generation runs eagerly "
                "(the same runtime, kernels and dtype, launched one by one)")


def build_pipeline(model: str, mode: str, device: torch.device, dtype: torch.dtype | None,
                   checkpoint_dir: str | None = None):
    """(Pipeline, per-image FLOPs) for `model` (a key of MODELS), random weights unless checkpoints are given."""
    spec = SPECS[MODELS[model]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RandomWeightsWarning: the report says "random weights" itself
        models = spec.build(device, checkpoint_dir)
    runner = spec.runner(models, mode, dtype, None, True)
    return runner.pipeline, runner.flops()


def eager_pipeline(pipe):
    """`pipe` itself when it replays no CUDA graph, else a pipeline over the same decoder, generator,
    scheduler, mode and dtype with cuda_graph=False (what `profile_generation` runs)."""
    if pipe.graphs is None:
        return pipe
    from titok.pipeline import Pipeline

    return Pipeline(pipe.decoder, pipe.generator, mode=pipe.mode, scheduler=pipe.scheduler, dtype=pipe.dtype,
                    cuda_graph=False, max_batch=pipe.max_batch)


# ---- profiler aggregation -------------------------------------------------------------------------------

def _project_kernel_names() -> set[str]:
    """Names of the @triton.jit kernels in kernels/ (how they appear in a CUDA profile)."""
    import importlib

    names = set()
    for op in ("nearest_code", "maskgit_step", "concat_attention"):
        module = importlib.import_module(f"titok_kernels.{op}")
        names |= {n for n in dir(module) if n.startswith("_") and n.endswith("_kernel")}
    return names


def autotune_choices() -> dict:
    """The configs chosen by the project's Triton autotuners so far: {kernel: {key: config}}."""
    import importlib

    out = {}
    try:
        from triton.runtime.autotuner import Autotuner
    except ImportError:
        return out
    for op in ("nearest_code", "maskgit_step", "concat_attention"):
        module = importlib.import_module(f"titok_kernels.{op}")
        for name in dir(module):
            obj = getattr(module, name)
            if isinstance(obj, Autotuner) and obj.cache:
                out[name] = {str(k): str(v) for k, v in obj.cache.items()}
    return out


def _event_time_us(evt, cuda: bool) -> float:
    if cuda:
        return float(getattr(evt, "self_device_time_total", 0.0) or getattr(evt, "self_cuda_time_total", 0.0))
    return float(evt.self_cpu_time_total)


def profile_generation(pipe, batch: int, *, trace_path: str | None = None) -> tuple[list[dict], list[dict]]:
    """Run torch.profiler over one end-to-end generation of `pipe` as it is (the caller passes an eager
    pipeline, `eager_pipeline`: see PROFILED_WHY) in one call of the whole batch; return (top ops, roofline rows)."""
    cls = torch.arange(batch, device=pipe.device) % pipe.generator.cfg.num_classes
    return profile_run(pipe, lambda seed: pipe.generate(cls, seed=seed, batch_size=batch), trace_path)


def profile_encode(pipe, images: torch.Tensor, *, trace_path: str | None = None) -> tuple[list[dict], list[dict]]:
    """`profile_generation` for one encode of `images` in one call (no CUDA graph: encode never replays one)."""
    return profile_run(pipe, lambda seed: pipe.encode(images, batch_size=len(images)), trace_path)


def profile_run(pipe, run, trace_path: str | None) -> tuple[list[dict], list[dict]]:
    """torch.profiler over `run(1)` after a warm-up `run(0)` (autotuning, lazy init): (top ops, roofline rows)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = pipe.device.type == "cuda"
    run(0)
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=True, with_flops=True) as prof:
        run(1)
        if cuda:
            torch.cuda.synchronize()
    if trace_path:
        write_atomic(trace_path, prof.export_chrome_trace)
    kernel_names, peaks = _project_kernel_names(), device_peaks(pipe.device)
    grouped: dict[str, dict] = {}
    roofline: list[dict] = []
    for evt in prof.key_averages(group_by_input_shape=True):
        name = evt.key
        row = grouped.setdefault(name, {"name": name, "calls": 0, "total_us": 0.0,
                                        "project_kernel": name in kernel_names or name in PROJECT_OPS,
                                        "triton": name in kernel_names or name.startswith("triton_")})
        row["calls"] += evt.count
        row["total_us"] += _event_time_us(evt, cuda)
        if name in SHAPE_FLOPS_OPS or name in GEMM_OPS:
            entry = roofline_row(evt, name, cuda, pipe.dtype, peaks)
            if entry is not None:
                roofline.append(entry)
    total = sum(r["total_us"] for r in grouped.values()) or 1.0
    top = sorted(grouped.values(), key=lambda r: -r["total_us"])
    for r in top:
        r["total_ms"] = r.pop("total_us") / 1e3
        r["mean_ms"] = r["total_ms"] / max(r["calls"], 1)
        r["share"] = r["total_ms"] * 1e3 / total
    roofline.sort(key=lambda r: -r["total_ms"])
    return top, roofline


# ---- the report ---------------------------------------------------------------------------------------------

TASKS = ("generate", "encode")
# which entry of the per-image FLOP count (titok.flops) each stage computes; sampling_steps: none counted
STAGE_FLOPS = {"generator_forwards": "generator", "vit_decoder": "vit_decoder", "pixel_decoder": "pixel_decoder",
               "vit_encoder": "vit_encoder", "quantize": "quantize"}


def encode_flops_by_stage(tokenizer_cfg) -> dict:
    """Per-image FLOPs of one encode, by stage (vit_encoder, quantize), plus the total."""
    from titok.flops import quantizer_flops, vit_encoder_flops

    stages = {"vit_encoder": vit_encoder_flops(tokenizer_cfg), "quantize": quantizer_flops(tokenizer_cfg)}
    return {**stages, "total": sum(stages.values())}


def stage_breakdown(stage_fns: dict, device: torch.device, batch: int, iters: int, flops: dict,
                    gemm_gflops: float | None = None) -> list[dict]:
    """Each stage timed alone: p50/p20/p80 ms, share of their sum, per-image GFLOP (None where none is counted),
    achieved GFLOP/s and its fraction of `gemm_gflops` (the machine's matrix rate, when measured)."""
    rows = []
    with torch.no_grad():
        for name, fn in stage_fns.items():
            t = time_fn(fn, device=device, warmup=1, iters=iters)
            counted = flops.get(STAGE_FLOPS.get(name, ""))
            gflops = counted * batch / (t.p50_ms / 1e3) / 1e9 if counted else None
            rows.append({"stage": name, "p50_ms": t.p50_ms, "p20_ms": t.p20_ms, "p80_ms": t.p80_ms,
                         "gflop_per_image": counted / 1e9 if counted else None, "gflops": gflops,
                         "of_gemm": gflops / gemm_gflops if gflops and gemm_gflops else None})
    total = sum(r["p50_ms"] for r in rows) or 1.0
    for r in rows:
        r["share"] = r["p50_ms"] / total
    return rows


def make_report(model: str, mode: str, batch: int, device: torch.device, dtype: torch.dtype | None,
                iters: int = 3, trace_path: str | None = None, checkpoint_dir: str | None = None,
                say=print, task: str = "generate", gemm_n: int = 4096) -> dict:
    if task == "encode" and SPECS[MODELS[model]].family != "titok":
        raise cli.UsageError(f"--task encode profiles a TiTok tokenizer's encoder; {model} has no encoder")
    say(f"profiling: building {model} ({'checkpoints' if checkpoint_dir else 'random weights'}), {mode} pipeline")
    pipe, flops = build_pipeline(model, mode, device, dtype, checkpoint_dir)
    if task == "encode":
        flops = encode_flops_by_stage(pipe.decoder.cfg)
        size = pipe.decoder.image_size
        images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
        run, stage_fns = (lambda p: p.encode(images, batch_size=batch)), pipe.encode_stage_functions(batch)
    else:
        cls = torch.arange(batch, device=device) % pipe.generator.cfg.num_classes
        run, stage_fns = (lambda p: p.generate(cls, seed=0, batch_size=batch)), pipe.stage_functions(batch)
    graph = pipe.graphs is not None and task == "generate"
    with torch.no_grad():
        gemm = None
        if gemm_n and device.type == "cpu":
            say(f"profiling: the {gemm_n}^3 torch.mm rate in {str(pipe.dtype).replace('torch.', '')}")
            gemm = gemm_rate(gemm_n, pipe.dtype, iters)
        say("profiling: timing each stage alone")
        stages = stage_breakdown(stage_fns, device, batch, iters, flops, gemm and gemm["gflops"])
        say("profiling: timing end to end" + (" (CUDA graph replay)" if graph else ""))
        e2e, telemetry = NvmlMonitor(device).telemetry(
            lambda: time_fn(lambda: run(pipe), device=device, warmup=1, iters=iters))
        eager = eager_pipeline(pipe) if graph else pipe
        eager_e2e = None
        if graph:
            say("profiling: timing end to end without the CUDA graph (the profiled mode)")
            eager_e2e = time_fn(lambda: run(eager), device=device, warmup=1, iters=iters)
        say(f"profiling: torch.profiler over one eager {'encode' if task == 'encode' else 'generation'}")
        top, roofline = profile_encode(eager, images, trace_path=trace_path) if task == "encode" else \
            profile_generation(eager, batch, trace_path=trace_path)
    end_to_end = _e2e_block(e2e, batch, flops, gemm)
    end_to_end["cuda_graph"] = graph
    end_to_end["eager"] = None if eager_e2e is None else _e2e_block(eager_e2e, batch, flops, gemm)
    why = PROFILED_WHY if graph else \
        f"the pipeline {'replays no CUDA graph' if task == 'generate' else 'encodes eagerly'}: profiled as timed"
    return {
        "schema": SCHEMA,
        "environment": environment(device),
        "config": {"model": model, "task": task, "batch_size": batch, "iters": iters,
                   "random_weights": checkpoint_dir is None, **pipe.describe()},
        "gemm": None if gemm is None else {**gemm, "dtype": str(pipe.dtype).replace("torch.", "")},
        "end_to_end": end_to_end,
        "profiled": {"cuda_graph": False, "eager_copy": eager is not pipe, "batch_size": batch, "why": why},
        "stages": stages,
        "top_kernels": top[:25],
        "autotune": autotune_choices(),
        "roofline": roofline[:40],
        "telemetry": telemetry,
    }


def _e2e_block(t, batch: int, flops: dict, gemm: dict | None = None) -> dict:
    achieved = flops["total"] * batch / (t.p50_ms / 1e3) / 1e12
    return {"p50_ms": t.p50_ms, "p20_ms": t.p20_ms, "p80_ms": t.p80_ms, "samples_per_s": batch / (t.p50_ms / 1e3),
            "gflop_per_image": flops["total"] / 1e9, "achieved_tflops": achieved,
            "of_gemm": achieved * 1e3 / gemm["gflops"] if gemm else None}


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="bench/profiling.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="titok-l-32", help=f"one of {', '.join(MODELS)} (default titok-l-32)")
    parser.add_argument("--pipeline", default="fast", choices=("reference", "compile", "fast"))
    parser.add_argument("--task", default="generate", choices=TASKS,
                        help="what to profile: generate (class ids -> images; default) or encode (images -> token "
                        "ids, TiTok tokenizers)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 on GPU, 1 on CPU")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="default: the pipeline's own")
    cli.add_device_flag(parser)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--gemm-n", type=int, default=4096,
                        help="on a CPU, time an N^3 torch.mm in the pipeline's dtype and give every stage's and the "
                        "end to end's fraction of its rate (default 4096; 0: skip)")
    parser.add_argument("--checkpoint-dir", help="folder with the released checkpoints (official Hugging Face "
                        "folders, or tokenizer/ and generator/); default: random weights")
    parser.add_argument("--out-dir", help="folder of the report files <model>-<pipeline>[-encode]-b<batch>.{md,json,"
                        "roofline.png[,trace.json]} (default: results/<device> under the working folder; results/ "
                        "is ignored by git)")
    cli.add_overwrite_flag(parser)
    parser.add_argument("--trace", action="store_true", help="also write a Chrome trace (*.trace.json)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cli.check_choice(args.model, MODELS, "--model")
    device = parse_device(args.device)
    batch = args.batch_size if args.batch_size is not None else (64 if device.type == "cuda" else 1)
    if batch < 1 or args.iters < 1:
        raise cli.UsageError("--batch-size and --iters must be >= 1")
    if args.gemm_n < 0:
        raise cli.UsageError("--gemm-n must be >= 0")
    out_dir = args.out_dir or os.path.join(cli.RESULTS_DIR, device_slug(device))
    outputs = cli.Outputs(args.overwrite, inputs=[args.checkpoint_dir])
    outputs.folder(out_dir, "--out-dir")
    task = "" if args.task == "generate" else f"-{args.task}"
    stem = os.path.join(out_dir, f"{args.model}-{args.pipeline}{task}-b{batch}")
    for suffix in (".json", ".md", ".roofline.png") + ((".trace.json",) if args.trace else ()):
        outputs.file(stem + suffix, "--out-dir", suffixes=())
    dtype = getattr(torch, args.dtype) if args.dtype else None
    report = make_report(args.model, args.pipeline, batch, device, dtype, iters=args.iters,
                         trace_path=stem + ".trace.json" if args.trace else None, checkpoint_dir=args.checkpoint_dir,
                         task=args.task, gemm_n=args.gemm_n)
    png = write_roofline_png(report, stem + ".roofline.png")
    report["roofline_png"] = os.path.basename(stem + ".roofline.png") if png else None
    write_json(stem + ".json", report)
    md = to_markdown(report)
    write_text(stem + ".md", md)
    print(md)
    print(f"report -> {stem}.md, {stem}.json" + (f", {stem}.roofline.png" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_tool(main, prog="profiling.py"))
