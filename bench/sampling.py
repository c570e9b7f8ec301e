"""End-to-end sampling speed: class ids in, decoded images out (the main job of titok-kernels).

    python bench/sampling.py --model titok-l-32                       # this machine's defaults
    python bench/sampling.py --model titok-l-32 --pipelines reference,compile,fast \\
        --batch-sizes 1,8,32,128 --out profiles/h200/sampling.json --plot profiles/h200/sampling.png
    python bench/sampling.py --compare paper                         # the paper's speed claims, re-measured
    python bench/sampling.py --compare tokens --out tokens.json      # the paper's token-count claims (Fig. 4d)

One sample is one generated image (the paper's T column): MaskGIT sampling, the ViT decoder and the
MaskGIT-VQGAN pixel decoder. The pipelines compared (with --compare: the models of one resolution)
are timed INTERLEAVED after their warm-up calls; samples/s is the median iteration (p20-p80 beside
it), a speed-up the median of per-iteration ratios (p20-p80 beside it); each stage is then timed
alone. At the start the device's own matmul and copy ceilings are measured (a few seconds,
titok_bench.harness.ceilings; --no-ceilings skips it): rows give achieved TFLOP/s as a fraction of
the datasheet peak and of the measured rate. The run warns when the machine was busy (its CPU
share, the load average) or when the stage sum and the end-to-end time disagree by more than 25%. `--compare paper` re-measures Tables 1 and 2
(TiTok, the MaskGIT baseline, DiT-XL/2) in the `paper` (fp32 + TF32, eager) and `best` (bf16, each
model's fastest mode) protocols; long samplers on CPU are projected from a few steps. `--compare tokens`
re-measures Sec. 4.2 / Fig. 4d: sampling and generator-training throughput from K = 16 to 256 tokens
(titok_bench.harness.token_sweep), with the K=32 over K=256 ratios beside the paper's. Random weights
unless --checkpoint-dir (speed does not depend on weights). Protocol in full: titok_bench.harness.measure;
result file: bench/schema_sampling.json (v2). CPU figures are not the paper's GPU figures.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings

import torch

from titok.errors import RandomWeightsWarning
from titok_bench.harness import cli
from titok_bench.harness import threads as thread_policy
from titok_bench.harness import token_sweep
from titok_bench.harness.ceilings import ceilings
from titok_bench.harness.env import CpuWindow, busy_warnings, environment, extra_packages, parse_device
from titok_bench.harness.measure import Job, Settings, fail_row, measure_group, prime_process
from titok_bench.harness.models import COMPARE_SETS, MODES, PUBLIC_MODELS, SPECS, checkpoint_paths, weights_of
from titok_bench.harness.nvml import NvmlMonitor
from titok_bench.harness.report import CPU_NOTICE, ceilings_summary, claims_rows, print_report, print_tokens_report
from titok_bench.harness.results import validate_json, write_json

SCHEMA_ID, SCHEMA_VERSION = "titok-kernels/sampling/v2", 2
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema_sampling.json")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
EPILOG = ("Defaults differ by device. GPU: pipelines reference,compile,fast, batch sizes 1,8,32,128, 10 iterations "
          "after 3 warm-up calls. CPU: pipelines reference,fast (compile is left out on CPU: inductor compiles "
          "titok-l-32 for about 4 minutes on a 2-core CPU; add it with --pipelines), batch size 1, 2 iterations "
          "after 1 warm-up. --compare on GPU: batch 32, 3 iterations after 1 warm-up, both protocols; on CPU: batch "
          "1, 1 iteration, no warm-up, the paper protocol, long samplers projected from a few steps. --compare tokens "
          "on GPU: sampling batch 32, training batch 64 (the paper's per-GPU batch), 5 iterations after 2 warm-up "
          "calls; on CPU: sampling batch 1, training batch 4, 2 iterations after 1 warm-up (about 10 minutes on 2 "
          "cores). Exit status: 0 "
          "done, 1 a row failed, 2 usage error, 130 interrupted. CPU figures are not the paper's GPU figures.")


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog="bench/sampling.py", description=__doc__.split("\n\n")[0], epilog=EPILOG)
    p.add_argument("--model", default="titok-l-32",
                   help=f"model to time (default titok-l-32): {', '.join(PUBLIC_MODELS)}")
    p.add_argument("--pipelines", help="comma-separated subset of reference,compile,fast (see defaults below)")
    p.add_argument("--batch-sizes", help="comma-separated batch sizes")
    p.add_argument("--dtype", default="auto", help="auto (each pipeline's default: float32 for reference/compile; "
                   "fast: bfloat16 on CUDA and on CPUs with bf16 matrix units, else float32), float32, bfloat16 or "
                   "float16 for every pipeline")
    p.add_argument("--iters", type=int, help="timed iterations per row")
    p.add_argument("--warmup", type=int, help="warm-up calls per row, outside the timed region")
    p.add_argument("--stage-iters", type=int, help="timed calls per stage (default: --iters on GPU, 1 on CPU)")
    p.add_argument("--stages", choices=("auto", "on", "off"), default="auto",
                   help="time each stage alone (auto: on, except with --compare)")
    p.add_argument("--no-tf32", action="store_true", help="keep float32 matmuls and convolutions in full fp32 on "
                   "CUDA (default: TF32 on, as the official sampling script)")
    p.add_argument("--checkpoint-dir", help="folder with the released checkpoints (official Hugging Face folders "
                   "named after their repos, or tokenizer/ and generator/); default: random weights")
    p.add_argument("--out", help="write the JSON result file here (.json; schema: bench/schema_sampling.json)")
    p.add_argument("--plot", help="write a plot here (.png, .svg or .pdf): samples/s vs batch size per mode, and "
                   "speed-up bars")
    cli.add_overwrite_flag(p)
    cli.add_thread_flags(p)
    cli.add_device_flag(p)
    p.add_argument("--compare", metavar="{paper,tokens}", help="'paper': the claims table (TiTok vs MaskGIT vs "
                   "DiT-XL/2, 256 and 512px) on this device; 'tokens': sampling and training throughput against the "
                   "number of tokens K (the paper's Fig. 4d, K=32 vs K=256)")
    p.add_argument("--token-counts", help="--compare tokens: comma-separated K values (default "
                   f"{','.join(map(str, token_sweep.TOKEN_COUNTS))}; the ratios need 32 and 256)")
    p.add_argument("--tasks", help="--compare tokens: comma-separated subset of sampling,training (default both)")
    p.add_argument("--train-batch-size", type=int, help="--compare tokens: batch of one training step (default 64 "
                   "on GPU, 4 on CPU); the sampling batch is --batch-sizes (one value)")
    p.add_argument("--resolutions", help="--compare paper: comma-separated subset of the resolutions (256,512; "
                   "default both)")
    p.add_argument("--protocol", choices=("paper", "best", "both"),
                   help="--compare protocols (default: both on GPU, paper on CPU)")
    p.add_argument("--project-steps", type=int, help="time this many sampling steps and project to the full "
                   "count (0: never; default: never on GPU, per model with --compare on CPU)")
    p.add_argument("--no-ceilings", action="store_true", help="skip measuring this device's matmul and copy "
                   "ceilings at the start (a few seconds; without them rows carry no fraction_of_measured)")
    p.add_argument("--wide", action="store_true", help="every column in the tables (default: fits 80 columns)")
    return p


@dataclasses.dataclass
class Plan:
    device: torch.device
    settings: Settings
    batch_sizes: list
    groups: list            # [(jobs, is_baseline)]
    protocols: list
    notes: list
    sweep: token_sweep.SweepPlan | None = None


TOKEN_COMPARES = {"tokens": "paper", "tiny-tokens": "tiny"}   # --compare name -> sweep scale ("tiny": tests)


def _defaults(args, on_gpu: bool, compare: bool) -> tuple[list, int, int, bool]:
    job = "tokens" if args.compare in TOKEN_COMPARES else compare
    sizes, iters, warmup = {(True, False): ((1, 8, 32, 128), 10, 3), (False, False): ((1,), 2, 1),
                            (True, True): ((32,), 3, 1), (False, True): ((1,), 1, 0),
                            (True, "tokens"): ((32,), 5, 2), (False, "tokens"): ((1,), 2, 1)}[(on_gpu, job)]
    batch_sizes = cli.parse_sizes(args.batch_sizes, "--batch-sizes") if args.batch_sizes else list(sizes)
    iters = iters if args.iters is None else args.iters
    warmup = warmup if args.warmup is None else args.warmup
    if iters < 1 or warmup < 0 or (args.stage_iters is not None and args.stage_iters < 1):
        raise cli.UsageError("--iters and --stage-iters must be >= 1, --warmup >= 0")
    if args.project_steps is not None and args.project_steps < 0:
        raise cli.UsageError("--project-steps must be >= 0")
    stages = args.stages == "on" if compare else args.stages != "off"
    return batch_sizes, iters, warmup, stages


def _compare_groups(args, on_gpu: bool, batch_sizes, notes) -> tuple[list, list]:
    protocols = {"paper": ["paper"], "best": ["best"], "both": ["paper", "best"]}[
        args.protocol or ("both" if on_gpu else "paper")]
    if not on_gpu and "best" not in protocols:
        notes.append("--compare on CPU runs the paper protocol only (add --protocol both for 'best', in each "
                     "pipeline's default dtype on CPU).")
    specs = [SPECS[k] for k in COMPARE_SETS[args.compare]]
    if args.resolutions:
        wanted = cli.parse_sizes(args.resolutions, "--resolutions")
        have = sorted({s.resolution for s in specs})
        for r in wanted:
            if r not in have:
                raise cli.UsageError(f"--resolutions: {r} is not one of {', '.join(map(str, have))}")
        specs = [s for s in specs if s.resolution in wanted]
    groups = []
    for res in dict.fromkeys(s.resolution for s in specs):
        for protocol, b in ((p, b) for p in protocols for b in batch_sizes):
            jobs = []
            for spec in (s for s in specs if s.resolution == res):
                proj = spec.cpu_project_steps if args.project_steps is None and not on_gpu else args.project_steps
                mode, dtype = ("reference", torch.float32) if protocol == "paper" else \
                    (spec.best_mode, torch.bfloat16 if on_gpu else None)
                jobs.append(Job(spec, mode, dtype, b, protocol, proj or None))
            groups.append((jobs, lambda r: r["family"] == "dit"))
    return groups, protocols


def _model_groups(args, on_gpu: bool, batch_sizes, notes) -> list:
    spec = SPECS[args.model]
    default = "reference,compile,fast" if on_gpu else "reference,fast"
    modes = cli.parse_list(args.pipelines or default, "--pipelines")
    for m in modes:
        cli.check_choice(m, MODES, "--pipelines")
    if args.pipelines is None and not on_gpu:
        notes.append("compile is left out of the CPU default: inductor compiles titok-l-32 for about 4 minutes on "
                     "a 2-core CPU; add it with --pipelines reference,compile,fast.")
    kept = [m for m in modes if m in spec.modes]
    if not kept:
        raise cli.UsageError(f"{spec.key} has no {', '.join(modes)} pipeline; it has {', '.join(spec.modes)}")
    if len(kept) < len(modes):
        notes.append(f"{spec.key} has no {', '.join(m for m in modes if m not in kept)} pipeline: skipped.")
    dtype = None if args.dtype == "auto" else DTYPES[args.dtype]
    return [([Job(spec, m, dtype, b, None, args.project_steps or None) for m in kept],
             lambda r: r["pipeline"] == "reference") for b in batch_sizes]


def make_plan(args) -> Plan:
    """Everything the run needs, checked before any work (UsageError otherwise)."""
    device = parse_device(args.device)
    on_gpu, notes = device.type == "cuda", []
    if args.compare is not None and args.compare not in COMPARE_SETS and args.compare not in TOKEN_COMPARES:
        raise cli.UsageError(f"--compare must be 'paper' or 'tokens', got {args.compare!r}")
    sweep_only = ("--token-counts", args.token_counts), ("--tasks", args.tasks), \
        ("--train-batch-size", args.train_batch_size)
    if args.resolutions and args.compare not in COMPARE_SETS:
        raise cli.UsageError("--resolutions only with --compare paper")
    if args.compare not in TOKEN_COMPARES and any(v is not None for _, v in sweep_only):
        raise cli.UsageError(f"{', '.join(f for f, v in sweep_only if v is not None)} only with --compare tokens")
    if args.compare is None and args.model not in SPECS:
        raise cli.UsageError(f"unknown --model {args.model!r}; choose from {', '.join(PUBLIC_MODELS)}")
    if args.dtype != "auto":
        cli.check_choice(args.dtype, DTYPES, "--dtype")
        if not on_gpu and DTYPES[args.dtype] != torch.float32:
            notes.append("bf16/fp16 on this CPU: such math is often emulated on CPUs and much slower than fp32.")
    batch_sizes, iters, warmup, stages = _defaults(args, on_gpu, args.compare is not None)
    outputs = cli.Outputs(args.overwrite, inputs=[args.checkpoint_dir])
    outputs.file(args.out, "--out")
    outputs.plot(args.plot)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise cli.UsageError("--plot needs matplotlib (pip install matplotlib)") from None
    sweep = None
    if args.compare in TOKEN_COMPARES:
        sweep, groups, protocols = token_sweep.plan_from_args(args, on_gpu, batch_sizes, notes, TOKEN_COMPARES), [], []
    elif args.compare:
        groups, protocols = _compare_groups(args, on_gpu, batch_sizes, notes)
    else:
        groups, protocols = _model_groups(args, on_gpu, batch_sizes, notes), []
    if args.checkpoint_dir:
        for spec in dict.fromkeys(j.spec for jobs, _ in groups for j in jobs):
            if weights_of(spec, args.checkpoint_dir) == "checkpoint":
                from titok.configs import get_variant

                checkpoint_paths(args.checkpoint_dir, get_variant(spec.key))
    settings = Settings(device=device, iters=iters, warmup=warmup, stages=stages,
                        stage_iters=args.stage_iters or (iters if on_gpu else 1), stage_warmup=1 if on_gpu else 0,
                        tf32=not args.no_tf32)
    return Plan(device, settings, batch_sizes, groups, protocols, notes, sweep)


def _build(spec, device, checkpoint_dir, say):
    """(models, None) or (None, failure message)."""
    t0 = time.perf_counter()
    try:
        models = spec.build(device, checkpoint_dir)
    except Exception as exc:  # noqa: BLE001 - every row of this model becomes an error row
        why = f"building the model failed: {type(exc).__name__}: {exc}"
        if isinstance(exc, ImportError):
            why += f" (install it: pip install {exc.name or 'the missing package'}, or pip install -e .[bench])"
        say(f"{spec.key}: {why}")
        return None, why
    say(f"built {spec.key} in {time.perf_counter() - t0:.1f} s ({weights_of(spec, checkpoint_dir)} weights)")
    return models, None


def run_groups(plan: Plan, args, monitor, say) -> tuple[list, bool]:
    """Measure every group (models built on first use, freed after their last group); Ctrl-C stops the run
    and keeps the rows of the groups already done."""
    rows, models, failed = [], {}, {}
    last_use = {j.spec.key: i for i, (jobs, _) in enumerate(plan.groups) for j in jobs}
    try:
        for i, (jobs, is_baseline) in enumerate(plan.groups):
            for spec in dict.fromkeys(j.spec for j in jobs):
                if spec.key not in models and spec.key not in failed:
                    models[spec.key], why = _build(spec, plan.device, args.checkpoint_dir, say)
                    if why:
                        failed[spec.key] = why
            todo = [j for j in jobs if j.spec.key not in failed]
            t0 = time.perf_counter()
            if todo:
                measure_group(todo, models, plan.settings, monitor, is_baseline)
            for job in jobs:
                row = job.row if job in todo else fail_row(job.row, None, failed[job.spec.key])
                row["wall_seconds"] = time.perf_counter() - t0
                rows.append(row)
                _say_row(row, say)
            for key in [k for k, last in last_use.items() if last == i and k in models]:
                del models[key]
    except KeyboardInterrupt:
        return rows, True
    return rows, False


def _say_row(row: dict, say) -> None:
    what = f"  {row['model']} {row['pipeline']}{' (' + row['protocol'] + ')' if row['protocol'] else ''} " \
           f"batch {row['batch_size']}"
    if row["status"] != "ok":
        say(f"{what}: {row['status'].upper()} - {row['message']}")
        return
    proj = f" (projected from {row['projected_from_steps']} steps)" if row["projected_from_steps"] else ""
    say(f"{what}: {row['samples_per_s']:.3g} samples/s{proj}")


def write_outputs(args, payload: dict, console) -> list[str]:
    """The JSON file (validated against the schema) and the plot; returns the problems met."""
    from titok_bench.harness.plots import plot, plot_tokens

    problems = []
    if args.out:
        write_json(args.out, payload)
        console.print(f"results -> {args.out}")
        try:
            validate_json(payload, SCHEMA_PATH)
        except ImportError:
            console.print("note: jsonschema is not installed: the result file was not validated (pip install "
                          "jsonschema)")
        except ValueError as exc:
            problems.append(f"the result file does not follow the schema: {exc}")
    if args.plot and "token_ratios" in payload:
        plot_tokens(payload["results"], args.plot, env=payload["environment"], ratios=payload["token_ratios"])
        console.print(f"plot -> {args.plot}")
    elif args.plot:
        plot(payload["results"], args.plot, env=payload["environment"], weights=payload["config"]["weights"],
             claims=payload.get("claims"))
        console.print(f"plot -> {args.plot}")
    return problems


def run(argv: list[str] | None = None) -> tuple[dict, list[str], str | None]:
    """Plan (all checks before work), measure, print, write: (payload, problems, what an interruption kept)."""
    args = build_parser().parse_args(argv)
    plan = make_plan(args)
    try:
        threads = thread_policy.configure(args.threads, args.omp_wait_policy, plan.device.type,
                                          script_entry=argv is None)
    except ValueError as exc:
        raise cli.UsageError(str(exc)) from None
    console, t_start = cli.console(args.wide), time.perf_counter()
    say = lambda text: console.print(text, markup=False, highlight=False)  # noqa: E731
    if plan.device.type == "cpu":
        console.print(f"[bold yellow]{CPU_NOTICE}[/]")
        say(thread_policy.summary(threads))
    say("weights: " + (f"checkpoints from {args.checkpoint_dir}" if args.checkpoint_dir else
                       "random (speed does not depend on weights)"))
    env = {**environment(plan.device), "extra_packages": extra_packages(), "ceilings": None}
    if not args.no_ceilings:
        env["ceilings"] = plan.settings.ceilings = ceilings(plan.device)
        say(ceilings_summary(env["ceilings"]))
    monitor, window = NvmlMonitor(plan.device).start(), CpuWindow.start(plan.device)
    all_jobs = [j for jobs, _ in plan.groups for j in jobs]
    primed = prime_process(all_jobs, plan.device, say) if plan.settings.warmup == 0 and all_jobs else False
    run_start = monitor.mark()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)   # the run says "random weights" itself
        pair_rows = []
        if plan.sweep:
            rows, pair_rows, interrupted = token_sweep.run_sweep(plan.sweep, plan.settings, monitor, say)
        else:
            rows, interrupted = run_groups(plan, args, monitor, say)
    env["nvml"] = None if not monitor.available else {"static": monitor.static_info(),
                                                      "during_run": monitor.summary(run_start, monitor.mark())}
    monitor.stop()
    usage = window.stop()
    s = plan.settings
    sweep = plan.sweep
    config = {"job": "compare" if args.compare else "models", "compare": args.compare,
              "models": list(dict.fromkeys(j.spec.key for j in all_jobs)) if not sweep else
              list(dict.fromkeys(r["model"] for r in rows)),
              "pipelines": [m for m in MODES if any(j.mode == m for j in all_jobs)] if not sweep else sweep.pipelines,
              "protocols": plan.protocols or None,
              "batch_sizes": plan.batch_sizes, "dtype": args.dtype, "iters": s.iters, "warmup": s.warmup,
              "primed": primed, "stages": s.stages, "stage_iters": s.stage_iters, "stage_warmup": s.stage_warmup,
              "tf32": s.tf32 and plan.device.type == "cuda", "project_steps": args.project_steps,
              "device": str(plan.device), "weights": args.checkpoint_dir or "random",
              "weights_by_model": {r["model"]: weights_of(SPECS[r["model"]], args.checkpoint_dir) if r["model"] in SPECS
                                   else "random" for r in rows},
              "interleaved": True, "interrupted": interrupted, "cpu_usage": usage, "warnings": busy_warnings(usage),
              "wall_seconds": time.perf_counter() - t_start, "notes": plan.notes, "threads": threads}
    payload = {"schema": SCHEMA_ID, "schema_version": SCHEMA_VERSION, "environment": env, "config": config,
               "results": rows}
    if sweep:
        config["sweep"] = {"token_counts": sweep.token_counts, "tasks": sweep.tasks,
                           "sampling_batch_size": sweep.sampling_batch, "training_batch_size": sweep.training_batch,
                           "scale": sweep.scale, "models": token_sweep.describe(sweep.scale)}
        payload["token_ratios"] = token_sweep.ratios(pair_rows, rows)
        print_tokens_report(console, payload, notes=plan.notes, wide=args.wide)
    else:
        if args.compare:
            payload["claims"] = claims_rows(rows, plan.protocols)
        print_report(console, payload, stages=plan.settings.stages, notes=plan.notes, wide=args.wide)
    problems = write_outputs(args, payload, console) if rows or not interrupted else []
    console.print(f"wall time {config['wall_seconds']:.0f} s")
    for problem in problems:
        console.print(problem, style="red", markup=False)
    kept = None
    if interrupted:
        written = [p for p in (args.out, args.plot) if p and rows]
        kept = f"{len(rows)} finished row(s) kept" + (f" in {', '.join(written)}" if written else
                                                      ", nothing written")
    return payload, problems, kept


def main(argv: list[str] | None = None) -> int:
    """0, or 1 when a row failed with an error (not out-of-memory) or an output could not be made; see EPILOG."""
    payload, problems, interrupted = run(argv)
    if interrupted:
        raise cli.Interrupted(interrupted)
    return 1 if problems or any(r["status"] == "error" for r in payload["results"]) else 0


if __name__ == "__main__":
    sys.exit(cli.run_tool(main, prog="sampling.py"))
