"""Profiling report: where the time of one generation (TiTok, or the MaskGIT baseline) goes.

    python bench/profiling.py --model titok-l-32 --pipeline fast --batch-size 64

writes results/<device>/<model>-<pipeline>-b<batch>.md (or --out-dir) and a .json beside it with:
- provenance: command, versions, device, date, git SHA;
- the per-stage breakdown (generator forwards, sampling steps, ViT decoder, pixel
  decoder), each stage timed alone, and its share;
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
from titok_bench.harness.env import device_peaks, device_slug, environment, parse_device
from titok_bench.harness.models import PIPELINE_MODELS as MODELS
from titok_bench.harness.models import SPECS
from titok_bench.harness.nvml import NvmlMonitor
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
    from torch.profiler import ProfilerActivity, profile

    cuda = pipe.device.type == "cuda"
    cls = torch.arange(batch, device=pipe.device) % pipe.generator.cfg.num_classes
    pipe.generate(cls, seed=0, batch_size=batch)  # warm-up: autotuning, lazy init
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=True, with_flops=True) as prof:
        pipe.generate(cls, seed=1, batch_size=batch)
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

def stage_breakdown(pipe, batch: int, iters: int) -> list[dict]:
    rows = []
    with torch.no_grad():
        for name, fn in pipe.stage_functions(batch).items():
            t = time_fn(fn, device=pipe.device, warmup=1, iters=iters)
            rows.append({"stage": name, "p50_ms": t.p50_ms, "p20_ms": t.p20_ms, "p80_ms": t.p80_ms})
    total = sum(r["p50_ms"] for r in rows) or 1.0
    for r in rows:
        r["share"] = r["p50_ms"] / total
    return rows


def make_report(model: str, mode: str, batch: int, device: torch.device, dtype: torch.dtype | None,
                iters: int = 3, trace_path: str | None = None, checkpoint_dir: str | None = None,
                say=print) -> dict:
    say(f"profiling: building {model} ({'checkpoints' if checkpoint_dir else 'random weights'}), {mode} pipeline")
    pipe, flops = build_pipeline(model, mode, device, dtype, checkpoint_dir)
    cls = torch.arange(batch, device=device) % pipe.generator.cfg.num_classes
    graph = pipe.graphs is not None
    with torch.no_grad():
        say("profiling: timing each stage alone")
        stages = stage_breakdown(pipe, batch, iters)
        say("profiling: timing end to end" + (" (CUDA graph replay)" if graph else ""))
        e2e, telemetry = NvmlMonitor(device).telemetry(
            lambda: time_fn(lambda: pipe.generate(cls, seed=0, batch_size=batch), device=device, warmup=1,
                            iters=iters))
        eager = eager_pipeline(pipe)
        eager_e2e = None
        if graph:
            say("profiling: timing end to end without the CUDA graph (the profiled mode)")
            eager_e2e = time_fn(lambda: eager.generate(cls, seed=0, batch_size=batch), device=device, warmup=1,
                                iters=iters)
        say("profiling: torch.profiler over one eager generation")
        top, roofline = profile_generation(eager, batch, trace_path=trace_path)
    end_to_end = _e2e_block(e2e, batch, flops)
    end_to_end["cuda_graph"] = graph
    end_to_end["eager"] = None if eager_e2e is None else _e2e_block(eager_e2e, batch, flops)
    return {
        "schema": SCHEMA,
        "environment": environment(device),
        "config": {"model": model, "batch_size": batch, "iters": iters, "random_weights": checkpoint_dir is None,
                   **pipe.describe()},
        "end_to_end": end_to_end,
        "profiled": {"cuda_graph": False, "eager_copy": eager is not pipe, "batch_size": batch,
                     "why": PROFILED_WHY if graph else "the pipeline replays no CUDA graph: profiled as timed"},
        "stages": stages,
        "top_kernels": top[:25],
        "autotune": autotune_choices(),
        "roofline": roofline[:40],
        "telemetry": telemetry,
    }


def _e2e_block(t, batch: int, flops: dict) -> dict:
    return {"p50_ms": t.p50_ms, "p20_ms": t.p20_ms, "p80_ms": t.p80_ms, "samples_per_s": batch / (t.p50_ms / 1e3),
            "gflop_per_image": flops["total"] / 1e9,
            "achieved_tflops": flops["total"] * batch / (t.p50_ms / 1e3) / 1e12}


def _e2e_line(e2e: dict) -> str:
    return (f"{e2e['samples_per_s']:.2f} samples/s (p50 {e2e['p50_ms']:.1f} ms per batch, p20-p80 "
            f"{e2e['p20_ms']:.1f}-{e2e['p80_ms']:.1f} ms); {e2e['gflop_per_image']:.1f} GFLOP per image -> "
            f"{e2e['achieved_tflops']:.3f} TFLOP/s achieved")


def _f(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def _pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def to_markdown(report: dict) -> str:
    env, cfg, e2e, prof = report["environment"], report["config"], report["end_to_end"], report["profiled"]
    lines = [f"# Profile: {cfg['model']}, {cfg['mode']} pipeline, batch {cfg['batch_size']}", "",
             f"- command: `{env['command']}`", f"- device: {env['device_name']} ({env['device_type']})",
             f"- torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, python {env['python']}",
             f"- date: {env['timestamp']}, git SHA: {env['git_sha']}",
             f"- dtype {cfg['dtype']}, CUDA graph {cfg['cuda_graph']}, random weights {cfg['random_weights']}",
             f"- profiled: one eager generation (no CUDA graph), batch {prof['batch_size']} in one call: "
             f"{prof['why']}", "",
             "## End to end", "",
             ("CUDA graph replay: " if e2e["cuda_graph"] else "Eager (no CUDA graph): ") + _e2e_line(e2e) + "."]
    if e2e.get("eager"):
        lines += ["", "Eager, without the CUDA graph (the profiled mode): " + _e2e_line(e2e["eager"]) + "."]
    lines += ["", "## Stages (each timed alone)", "", "| stage | p50 ms | p20-p80 ms | share |", "|---|---:|---:|---:|"]
    lines += [f"| {r['stage']} | {r['p50_ms']:.2f} | {r['p20_ms']:.2f}-{r['p80_ms']:.2f} | {100 * r['share']:.1f}% |"
              for r in report["stages"]]
    lines += ["", "## Top kernels and operators (self time, torch.profiler, one eager generation)", "",
              "| name | calls | total ms | mean ms | share | project / Triton |", "|---|---:|---:|---:|---:|---|"]
    for r in report["top_kernels"]:
        mark = ("project" if r["project_kernel"] else "") + (" triton" if r["triton"] else "")
        lines.append(f"| `{r['name'][:80]}` | {r['calls']} | {r['total_ms']:.3f} | {r['mean_ms']:.4f} | "
                     f"{100 * r['share']:.1f}% | {mark.strip() or '-'} |")
    lines += ["", "## Autotune choices", ""]
    if report["autotune"]:
        for kernel, choices in report["autotune"].items():
            lines += [f"- `{kernel}`: " + "; ".join(f"{k} -> {v}" for k, v in choices.items())]
    else:
        lines.append("None recorded (no autotuned Triton kernel ran on this device).")
    lines += ["", "## Roofline (project ops and large GEMMs / convolutions, one eager generation)", "",
              "| op | calls | total ms | TFLOP/s | GB/s | FLOP/byte | of peak |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["roofline"]:
        lines.append(f"| `{r['name']}` {r['shapes'][:60]} | {r['calls']} | {r['total_ms']:.3f} | {_f(r['tflops'])} | "
                     f"{_f(r['gbps'], '.1f')} | {_f(r['intensity_flop_per_byte'], '.1f')} | "
                     f"{_pct(r['fraction_of_peak'])} |")
    if env.get("peaks") is None:
        lines += ["", "No device peaks are known for this device: fractions of peak are not shown."]
    lines += ["", "## Telemetry (NVML)", ""]
    tel = report["telemetry"]
    if tel:
        lines += [f"- {k}: {v}" for k, v in tel.items()]
    else:
        lines.append("Not available (no NVIDIA GPU or no nvidia-ml-py).")
    return "\n".join(lines) + "\n"


def write_roofline_png(report: dict, path: str) -> bool:
    """The roofline PNG (atomically); False when matplotlib is missing. Its title says what produced it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    env, cfg = report["environment"], report["config"]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for r in (r for r in report["roofline"] if r["intensity_flop_per_byte"] and r["tflops"]):
        ax.scatter(r["intensity_flop_per_byte"], r["tflops"], s=20 + 200 * min(r["total_ms"] / 100, 1))
        ax.annotate(r["name"].split("::")[-1], (r["intensity_flop_per_byte"], r["tflops"]), fontsize=7)
    peaks = env.get("peaks")
    if peaks:
        xs = [0.1, 10000]
        peak_t = peaks["tflops"].get("bf16" if cfg["dtype"] == "bfloat16" else "tf32")
        ax.plot(xs, [min(peak_t, x * peaks["bandwidth_gbps"] / 1e3) for x in xs], "k--", label="roofline")
        ax.legend()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved TFLOP/s")
    weights = "random weights" if cfg["random_weights"] else "checkpoint weights"
    ax.set_title(f"{cfg['model']} {cfg['mode']} b{cfg['batch_size']}, {cfg['dtype']}, {weights}\n"
                 f"{env['device_name']} ({env['device_type']}), {env['timestamp'][:10]}\n{env['command']}",
                 fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return True


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="bench/profiling.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="titok-l-32", help=f"one of {', '.join(MODELS)} (default titok-l-32)")
    parser.add_argument("--pipeline", default="fast", choices=("reference", "compile", "fast"))
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 on GPU, 1 on CPU")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="default: the pipeline's own")
    cli.add_device_flag(parser)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--checkpoint-dir", help="folder with the released checkpoints (official Hugging Face "
                        "folders, or tokenizer/ and generator/); default: random weights")
    parser.add_argument("--out-dir", help="folder of the report files <model>-<pipeline>-b<batch>.{md,json,"
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
    out_dir = args.out_dir or os.path.join(cli.RESULTS_DIR, device_slug(device))
    outputs = cli.Outputs(args.overwrite, inputs=[args.checkpoint_dir])
    outputs.folder(out_dir, "--out-dir")
    stem = os.path.join(out_dir, f"{args.model}-{args.pipeline}-b{batch}")
    for suffix in (".json", ".md", ".roofline.png") + ((".trace.json",) if args.trace else ()):
        outputs.file(stem + suffix, "--out-dir", suffixes=())
    dtype = getattr(torch, args.dtype) if args.dtype else None
    report = make_report(args.model, args.pipeline, batch, device, dtype, iters=args.iters,
                         trace_path=stem + ".trace.json" if args.trace else None, checkpoint_dir=args.checkpoint_dir)
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
