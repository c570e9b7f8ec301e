"""The official TiTok code beside this project's pipelines on a CPU: generate and encode, interleaved, one process.

    PYTHONPATH=/path/to/official_deps python bench/official_cpu.py --official /path/to/1d-tokenizer \\
        [--batch-size 4] [--iters 3] [--threads N] [--omp-wait-policy passive] [--out official_cpu.json]

`--official` is a checkout of bytedance/1d-tokenizer (or an extract of its `modeling/` and `configs/`; this
project follows commit 942a96f). Its modules are imported from that path, in memory: its
`modeling/modules/__init__.py` (which imports the training losses and torchvision) is not run; nothing is
copied or edited. Its imports (omegaconf, einops, transformers, huggingface_hub) must be importable, e.g. from
a folder on PYTHONPATH; they are not dependencies of this project.

What runs, at one batch size, after one warm-up call each, INTERLEAVED (official, reference, fast, official, ...)
so that a change in the machine's speed falls on all three alike:
- generate: the official sampling as its sampling script (`demo_util.sample_fn` as `sample_imagenet_titok.py`
  calls it): `ImageBert.generate` with the TiTok-L-32 config's sampler settings (8 steps, guidance 4.5 linear,
  randomize_temperature 9.5, softmax temperature annealing) + `TiTok.decode_tokens`, clamped to [0, 1], fp32,
  eager, torch.no_grad; this project's `reference` (fp32) and `fast` (its default dtype: bf16 on CPUs with
  native bf16 matrix units, else fp32; `dtype_reason` says why) `Pipeline.generate`.
- encode: the official `TiTok.encode` (fp32) beside `reference` and `fast` `Pipeline.encode`, same images.
- the machine's matrix rate, in the same round-robin: one N^3 `torch.mm` (N = `--gemm-n`, default 4096) in fp32
  and in fast's dtype per iteration. Each row's achieved GFLOP/s on the model's FLOPs per sample
  (`titok.flops`: what `titok info` prints) is shown as a fraction of the GEMM rate of its dtype.
The weights are RANDOM: drawn once by this project (`load_tokenizer/load_generator(random_weights=True)`) and
loaded strictly into the official modules (the state-dict keys are the official ones), so every side computes
with the same weights. The warm-up calls double as a check: with the same seed the official sampler and
`reference` give the same tokens, and the two encoders the same token ids.

Each figure is the median iteration (p20-p80 beside it); a speed-up is the median of the per-iteration ratios.
Threads: `--threads` and `--omp-wait-policy` (default auto: PyTorch's defaults on an idle machine; on a busy
one passive OpenMP waiting with the same threads, the tool starting itself again to set the policy; see
titok_bench.harness.threads). The run records what was in force and why.
Exit status: 0 done, 1 a check failed, 2 usage error, 130 interrupted.
"""
from __future__ import annotations

import importlib
import os
import sys
import time
import types
import warnings
from pathlib import Path

from titok_bench.harness import cli
from titok_bench.harness import threads as thread_policy

SCHEMA = "titok-kernels/official-cpu/v1"
CONFIG = Path("configs") / "infer" / "TiTok" / "titok_l32.yaml"


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog="bench/official_cpu.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--official", required=True, help="checkout (or extract of modeling/ and configs/) of "
                   "bytedance/1d-tokenizer")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--iters", type=int, default=3, help="timed iterations of each (default 3)")
    cli.add_thread_flags(p, extra_policies=("inherit",))
    p.add_argument("--official-commit", help="the commit an extract (not a git checkout) was made from, for the "
                   "record")
    p.add_argument("--skip-encode", action="store_true", help="time generate only")
    p.add_argument("--gemm-n", type=int, default=4096, help="size N of the N^3 matrix products timed beside the "
                   "pipelines, in fp32 and fast's dtype (default 4096; 0: none)")
    p.add_argument("--out", help="JSON result file (.json)")
    cli.add_overwrite_flag(p)
    return p


# ---- the machine ----------------------------------------------------------------------------------------------

def cpu_facts() -> dict:
    """CPU model and the flags that matter for bf16, what PyTorch's dispatch sees, threads, affinity, load."""
    import torch

    from titok.cpu_info import cpu_identity

    try:
        caps = {k: v for k, v in torch._C._cpu._get_cpu_capability().items() if v and ("bf16" in k or "amx" in k)}
    except (AttributeError, RuntimeError):
        caps = {}
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {**cpu_identity(),
            "torch_cpu_capability_bf16": caps, "torch_threads": torch.get_num_threads(), "affinity_cpus": affinity,
            "os_cpu_count": os.cpu_count(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "load_avg": load}


# ---- the official code, imported from its path ------------------------------------------------------------------

def import_official(root: Path) -> types.SimpleNamespace:
    """The official TiTok and ImageBert classes, imported from `root` without running modeling/modules/__init__."""
    modules_dir = root / "modeling" / "modules"
    if not (modules_dir / "blocks.py").is_file() or not (root / CONFIG).is_file():
        raise cli.UsageError(f"--official {root}: not a checkout of bytedance/1d-tokenizer ({modules_dir / 'blocks.py'}"
                             f" or {root / CONFIG} is missing)")
    if "modeling" in sys.modules:
        raise cli.UsageError("a module named `modeling` is already imported; run this tool in a fresh interpreter")
    sys.path.insert(0, str(root))
    try:
        modeling = importlib.import_module("modeling")
        if Path(modeling.__file__).resolve().parent != (root / "modeling").resolve():
            raise cli.UsageError(f"`modeling` was imported from {modeling.__file__}, not from {root}")
        package = types.ModuleType("modeling.modules")   # the package, without its __init__ (training losses)
        package.__path__, package.__package__ = [str(modules_dir)], "modeling.modules"
        sys.modules["modeling.modules"] = modeling.modules = package
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)   # its torch.cuda.amp.autocast decorators
            titok = importlib.import_module("modeling.titok")
            maskgit = importlib.import_module("modeling.maskgit")
    except ImportError as exc:
        raise cli.UsageError(f"importing the official code failed: {exc} (its dependencies omegaconf, einops, "
                             "transformers, huggingface_hub must be importable, e.g. PYTHONPATH=/path/to/deps)") \
            from None
    from omegaconf import OmegaConf

    return types.SimpleNamespace(TiTok=titok.TiTok, ImageBert=maskgit.ImageBert,
                                 config=OmegaConf.load(root / CONFIG), commit=_git_commit(root))


def _git_commit(root: Path) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def build_models(official, say):
    """(official tokenizer, official generator, this project's tokenizer, generator): the same random weights."""
    import torch

    from titok_bench.harness.models import SPECS

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # RandomWeightsWarning: the run says "random weights" itself
        tok, gen, *_ = SPECS["titok-l-32"].build(torch.device("cpu"))
    off_tok, off_gen = official.TiTok(official.config), official.ImageBert(official.config)
    for mine, theirs in ((tok, off_tok), (gen, off_gen)):
        theirs.load_state_dict(mine.state_dict(), strict=True)
        theirs.eval().requires_grad_(False)
    say(f"built TiTok-L-32 + generator (random weights), official and this project's, in "
        f"{time.perf_counter() - t0:.0f} s")
    return off_tok, off_gen, tok, gen


# ---- the runs ---------------------------------------------------------------------------------------------------

def official_sample(off_gen, off_tok, sampler, labels):
    """The official sampling, as `demo_util.sample_fn` (return_tensor path) + the clamp it applies."""
    import torch

    with torch.no_grad():
        tokens = off_gen.generate(condition=labels, guidance_scale=sampler.guidance_scale,
                                  guidance_decay=sampler.guidance_decay,
                                  guidance_scale_pow=sampler.guidance_scale_pow,
                                  randomize_temperature=sampler.randomize_temperature,
                                  softmax_temperature_annealing=sampler.softmax_temperature_annealing,
                                  num_sample_steps=sampler.num_steps)
        return tokens, torch.clamp(off_tok.decode_tokens(tokens.view(tokens.shape[0], -1)), 0.0, 1.0)


def add_rates(rows: list[dict], flop_per_sample: float, gemm: dict) -> None:
    """Each row's GFLOP/s on the model's FLOPs per sample, and its fraction of the GEMM rate of its dtype."""
    for r in rows:
        rate = gemm.get(r["dtype"], {}).get("gflops")
        r["gflop_per_sample"] = flop_per_sample / 1e9
        r["gflops"] = flop_per_sample * r["samples_per_s"] / 1e9
        r["fraction_of_gemm"] = r["gflops"] / rate if rate else None


def summarise(times: dict, batch: int, dtypes: dict) -> list[dict]:
    from titok_bench.harness.timing import pair_ratios, summarize_ms

    rows = []
    for name, secs in times.items():
        ms = [s * 1e3 for s in secs]
        t = summarize_ms(ms)
        row = {"pipeline": name, "dtype": dtypes[name], "iteration_s": secs, "s_per_batch": t.p50_ms / 1e3,
               "samples_per_s": batch / (t.p50_ms / 1e3), "samples_per_s_p20": batch / (t.p80_ms / 1e3),
               "samples_per_s_p80": batch / (t.p20_ms / 1e3)}
        for base in ("official", "reference"):
            row[f"vs_{base}"] = pair_ratios([s * 1e3 for s in times[base]], ms) if base in times else None
        rows.append(row)
    return rows


def run(args, say) -> tuple[dict, bool]:
    import torch

    from titok.flops import encode_flops, generation_flops
    from titok.pipeline import Pipeline
    from titok_bench.harness.ceilings import gemm_fns, gemm_rates
    from titok_bench.harness.env import CpuWindow, busy_warnings, environment
    from titok_bench.harness.timing import interleave

    official = import_official(Path(args.official).resolve())
    torch.set_grad_enabled(False)
    off_tok, off_gen, tok, gen = build_models(official, say)
    ref, fast = Pipeline(tok, gen, mode="reference"), Pipeline(tok, gen, mode="fast")
    sampler, batch = ref.sampler, args.batch_size
    say(f"fast runs in {str(fast.dtype).replace('torch.', '')}: {fast.dtype_reason}")
    labels = (torch.arange(batch) * 7 + 1) % 1000
    dtypes = {"official": "float32", "reference": "float32", "fast": str(fast.dtype).replace("torch.", "")}
    result, ok = {}, True

    # warm-up calls, which are also the checks: same seed -> the official sampler and `reference` agree
    torch.manual_seed(0)
    off_tokens, _ = official_sample(off_gen, off_tok, sampler, labels)
    ref_tokens = ref.generate_tokens(labels, seed=0)
    fast.generate(labels, seed=0)
    same = bool(torch.equal(off_tokens.view(batch, -1), ref_tokens))
    ok &= same
    say(f"check: official and reference sample the same tokens with the same seed: {same}")
    gemms = gemm_fns(args.gemm_n, (torch.float32, fast.dtype))
    for fn in gemms.values():
        fn()  # warm-up
    gen_fns = {"official": lambda: official_sample(off_gen, off_tok, sampler, labels),
               "reference": lambda: ref.generate(labels, seed=0), "fast": lambda: fast.generate(labels, seed=0)}
    window = CpuWindow.start("cpu")
    times = interleave({**gen_fns, **gemms}, args.iters)
    usage = window.stop()
    gemm = gemm_rates(times, args.gemm_n)
    rows = summarise({k: times[k] for k in gen_fns}, batch, dtypes)
    add_rates(rows, generation_flops(tok.cfg, gen.cfg, sampler)["total"], gemm)
    result["generate"] = {"rows": rows, "gemm": gemm, "cpu_usage": usage,
                          "warnings": busy_warnings(usage), "official_reference_same_tokens": same}
    say("generate: " + ", ".join(f"{r['pipeline']} {r['samples_per_s']:.3g}/s" for r in rows))

    if not args.skip_encode:
        gen_images = torch.Generator().manual_seed(1)
        images = torch.rand(batch, 3, 256, 256, generator=gen_images)
        off_ids = off_tok.encode(images)[1]["min_encoding_indices"].view(batch, -1)
        ref_ids = ref.encode(images)
        fast_ids = fast.encode(images)
        same_ids = bool(torch.equal(off_ids, ref_ids))
        ok &= same_ids
        agreement = float((fast_ids == ref_ids).float().mean())
        say(f"check: official and reference encode to the same ids: {same_ids}; fast agrees on {100 * agreement:.1f}%")
        enc_fns = {"official": lambda: off_tok.encode(images), "reference": lambda: ref.encode(images),
                   "fast": lambda: fast.encode(images)}
        window = CpuWindow.start("cpu")
        times = interleave({**enc_fns, **gemms}, args.iters)
        usage = window.stop()
        gemm = gemm_rates(times, args.gemm_n)
        rows = summarise({k: times[k] for k in enc_fns}, batch, dtypes)
        add_rates(rows, encode_flops(tok.cfg), gemm)
        result["encode"] = {"rows": rows, "gemm": gemm, "cpu_usage": usage,
                            "warnings": busy_warnings(usage), "official_reference_same_ids": same_ids,
                            "fast_token_agreement_vs_reference": agreement,
                            "images": "uniform random pixels (torch.Generator seed 1)"}
        say("encode: " + ", ".join(f"{r['pipeline']} {r['samples_per_s']:.3g}/s" for r in rows))

    try:
        from importlib.metadata import version
        transformers_version = version("transformers")
    except Exception:  # noqa: BLE001 - only recorded
        transformers_version = None
    payload = {"schema": SCHEMA, "environment": {**environment("cpu"), "cpu": cpu_facts()},
               "config": {"model": "titok-l-32", "weights": "random", "batch_size": batch, "iters": args.iters,
                          "warmup": 1, "interleaved": True, "official_path": str(Path(args.official).resolve()),
                          "official_commit": official.commit or args.official_commit,
                          "official_transformers": transformers_version,
                          "fast_dtype": dtypes["fast"], "fast_dtype_reason": fast.dtype_reason, "gemm_n": args.gemm_n,
                          "omp_wait_policy_arg": args.omp_wait_policy, "threads": args.thread_record},
               **result}
    return payload, ok


def report(payload: dict) -> str:
    cpu, cfg = payload["environment"]["cpu"], payload["config"]
    lines = [f"TiTok-L-32 on CPU, batch {cfg['batch_size']}, random weights, {cfg['iters']} iterations interleaved "
             f"after 1 warm-up",
             f"cpu: {cpu['model_name']} (family {cpu.get('cpu family')} model {cpu.get('model')}), flags "
             f"{' '.join(cpu['flags']) or '-'}; torch sees "
             f"{', '.join(cpu['torch_cpu_capability_bf16']) or 'no bf16 units'}",
             f"threads {cpu['torch_threads']} (CPUs this process may use: {cpu['affinity_cpus']}), OMP_WAIT_POLICY "
             f"{cpu['OMP_WAIT_POLICY'] or 'unset'}; fast dtype {cfg['fast_dtype']}: {cfg['fast_dtype_reason']}",
             f"official code: {cfg['official_path']} (commit {cfg['official_commit'] or 'unknown: not a git checkout'},"
             f" transformers {cfg['official_transformers']})", ""]
    header = f"{'task':9s}{'pipeline':11s}{'dtype':6s}{'s/batch':>9s}{'samples/s':>11s}{'p20-p80':>15s}" \
             f"{'vs official':>13s}{'vs reference':>14s}"
    lines += [header, "-" * len(header)]
    short = {"float32": "fp32", "bfloat16": "bf16"}
    for task in ("generate", "encode"):
        if task not in payload:
            continue
        for r in payload[task]["rows"]:
            ratio = lambda key: "-" if not r[key] else f"{r[key]['p50']:.2f}x"  # noqa: E731
            spread = f"{r['samples_per_s_p20']:.3g}-{r['samples_per_s_p80']:.3g}"
            lines.append(f"{task:9s}{r['pipeline']:11s}{short.get(r['dtype'], r['dtype']):6s}"
                         f"{r['s_per_batch']:9.2f}{r['samples_per_s']:11.3g}{spread:>15s}"
                         f"{ratio('vs_official'):>13s}{ratio('vs_reference'):>14s}")
        lines += rate_lines(task, payload[task])
        usage = payload[task]["cpu_usage"]
        lines.append(f"{'':9s}({task}: cpu share {100 * (usage['cpu_share'] or 0):.0f}% of {usage['threads']} threads,"
                     f" load average {usage['load_avg_1m']:.1f} on {usage['cores']} cores)")
        lines += [f"WARNING: {w}" for w in payload[task]["warnings"]]
    gen = payload.get("generate", {})
    lines.append(f"check: official and reference sample the same tokens (same seed): "
                 f"{gen.get('official_reference_same_tokens')}")
    if "encode" in payload:
        enc = payload["encode"]
        lines.append(f"check: official and reference encode to the same ids: {enc['official_reference_same_ids']}; "
                     f"fast ({cfg['fast_dtype']}) agrees with them on "
                     f"{100 * enc['fast_token_agreement_vs_reference']:.1f}% of the tokens")
    return "\n".join(lines)


def rate_lines(task: str, block: dict) -> list[str]:
    """'<task>: <pipeline> <GFLOP/s> = <x>% of the <dtype> GEMM rate', one line per pipeline, and the rates."""
    short = {"float32": "fp32", "bfloat16": "bf16"}
    gemm = block.get("gemm") or {}
    if not gemm:
        return []
    n = next(iter(gemm.values()))["n"]
    rates = ", ".join(f"{short.get(k, k)} {v['gflops']:.0f} GFLOP/s" for k, v in gemm.items())
    lines = [f"{'':9s}matrix rate in this run ({n}^3 torch.mm, median of {next(iter(gemm.values()))['calls']} "
             f"interleaved calls): {rates}"]
    for r in block["rows"]:
        frac = "" if r["fraction_of_gemm"] is None else \
            f" = {100 * r['fraction_of_gemm']:.0f}% of the {short.get(r['dtype'], r['dtype'])} rate"
        lines.append(f"{'':9s}{r['pipeline']}: {r['gflops']:.0f} GFLOP/s on {r['gflop_per_sample']:.0f} GFLOP a "
                     f"sample{frac}")
    return lines


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or args.iters < 1 or (args.threads is not None and args.threads < 1):
        raise cli.UsageError("--batch-size, --iters and --threads must be >= 1")
    if args.gemm_n < 0:
        raise cli.UsageError("--gemm-n must be >= 0 (0: no matrix-rate measurement)")
    # "inherit" (the old default) is auto: a user's OMP_WAIT_POLICY wins there too
    policy = "auto" if args.omp_wait_policy == "inherit" else args.omp_wait_policy
    try:
        args.thread_record = thread_policy.configure(args.threads, policy, "cpu", script_entry=argv is None)
    except ValueError as exc:
        raise cli.UsageError(str(exc)) from None
    cli.Outputs(args.overwrite, inputs=[args.official]).file(args.out, "--out")

    def say(text):
        print(f"official_cpu: {text}", file=sys.stderr, flush=True)

    payload, ok = run(args, say)
    print(report(payload))
    if args.out:
        from titok_bench.harness.results import write_json

        write_json(args.out, payload)
        print(f"results -> {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(cli.run_tool(main, prog="official_cpu.py"))
