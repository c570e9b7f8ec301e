"""The fast path's CPU choices, re-measured on this CPU at titok-l-32's shapes: packed linears with their GELU and
residual adds as post-ops, one QKV product in the generator, fp32 attention in the generator; and candidates.

    python bench/cpu_ops.py [--batch-size 4] [--iters 5] [--candidates] [--end-to-end] [--out cpu_ops.json]

On a CPU in bf16 the fast runtime runs its linear layers on weights packed once for oneDNN
(`titok.cpu_linear`) instead of `F.linear`, with the GELU and the residual adds as oneDNN post-ops, the
generator's query, key and value as one product, and the generator's attention in fp32 instead of bf16
(`titok.fast`). On a 2-core AMD EPYC Zen 4 (AVX512-BF16, no AMX) the packing and the fp32 attention measured
faster, the post-ops and the QKV product more accurate and as fast end to end (docs/benchmarks.md); not yet
measured on an AMX Xeon. This tool times each choice beside the plain PyTorch op at the shapes of one titok-l-32
generation at the given batch (the generator over 2B guided rows of 33 tokens, the ViT decoder over B x 289
rows; `bench/harness/cpu_op_cases.py`), interleaved, with both results' largest error against float64, and a
4096^3 bf16 `torch.mm` as the machine's matrix rate, so that an owner of another CPU (an AMX Xeon, say) can see
whether the choices hold there. `--candidates` adds ops not taken yet beside what runs today (attention as two
bf16 matrix products). Each figure is the median of `--iters` timed calls after one warm-up; the speed-up is the
median of the per-iteration ratios (plain / chosen). `--end-to-end` adds titok-l-32's whole fast generation
(random weights) at the batch, the packed route on and off (TITOK_CPU_PACKED_LINEAR: packing, post-ops and the
QKV product together) in turn in one process, `--iters` pairs after one warm-up each: its end-to-end effect,
free of run-to-run drift.

On a CPU without native bf16 matrix units the fast path runs fp32 and the tool refuses (exit 2) unless
TITOK_CPU_BF16=1. Exit status: 0 done, 2 usage error, 130 interrupted.
"""
from __future__ import annotations

import sys

from titok_bench.harness import cli

SCHEMA = "titok-kernels/cpu-ops/v1"
GEMM_N = 4096


def cases(batch: int) -> list[dict]:
    """The fast path's choices at titok-l-32's shapes (`bench/harness/cpu_op_cases.fast_path_cases`)."""
    from titok_bench.harness.cpu_op_cases import fast_path_cases

    return fast_path_cases(batch)


def shape_label(case: dict) -> str:
    """'MxKxN' of a linear case (linear, linear+gelu, linear+add, qkv), 'BxHxLxD' of an attention case."""
    if case["kind"] != "attention":
        return f"{case['m']}x{case['k']}x{case['n']}"
    return f"{case['batch']}x{case['heads']}x{case['seq']}x{case['head_dim']}"


def case_fns(case: dict):
    """(flops, plain callable, chosen callable, float64 reference) of one case, on fixed random bf16 inputs."""
    from titok_bench.harness.cpu_op_cases import case_fns as fns

    return fns(case)


def measure(batch: int, iters: int, say, gemm_n: int = GEMM_N) -> dict:
    """Every case of `cases(batch)` timed plain vs chosen, interleaved; a gemm_n^3 bf16 torch.mm's rate.
    Runs under torch.no_grad() (the packed route is for inference); grad mode is left as it was."""
    import torch

    with torch.no_grad():
        return _measure(batch, iters, say, gemm_n)


def _measure(batch: int, iters: int, say, gemm_n: int) -> dict:
    import torch

    from titok.cpu_linear import packing_enabled
    from titok_bench.harness.ceilings import gemm_rate

    rows = []
    for case in cases(batch):
        row = _timed_row(case, case_fns(case), ("plain", "chosen"), iters)
        rows.append(row)
        say(f"{case['kind']} {case['where']}: plain {row['plain_ms']:.2f} ms, chosen {row['chosen_ms']:.2f} ms")
    rate = gemm_rate(gemm_n, torch.bfloat16, min(iters, 3))
    return {"rows": rows, "gemm": {"n": gemm_n, "dtype": "bfloat16", "gflops": rate["gflops"]},
            "packing_enabled": packing_enabled()}


def _timed_row(case: dict, fns, names: tuple, iters: int) -> dict:
    """One case's row: both callables' largest error against the float64 reference (their first calls: the
    warm-up, and the one packing of a weight), then `iters` interleaved calls of each (`_compare`)."""
    from titok_bench.harness.cpu_op_cases import max_error
    from titok_bench.harness.timing import interleave, pair_ratios

    flops, first, second, reference = fns
    expected = reference()
    errors = {f"{names[0]}_max_err": max_error(first(), expected), f"{names[1]}_max_err": max_error(second(), expected)}
    seconds = interleave({names[0]: first, names[1]: second}, iters)
    return {**case, "flops": flops, **_compare(seconds, flops, pair_ratios, names), **errors}


def _compare(seconds: dict, flops: float, pair_ratios, names=("plain", "chosen")) -> dict:
    """{a,b}_ms (median), {a,b}_gflops and the speed-up (a / b per pair) of the two `names` (a, b)."""
    import statistics

    ms = {name: [t * 1e3 for t in secs] for name, secs in seconds.items()}
    out = {}
    for name in names:
        out[f"{name}_ms"] = statistics.median(ms[name])
        out[f"{name}_gflops"] = flops / out[f"{name}_ms"] / 1e6
    out["speedup"] = pair_ratios(ms[names[0]], ms[names[1]])
    return out


def measure_candidates(batch: int, iters: int, say) -> list[dict]:
    """Every candidate (`bench/harness/cpu_op_cases.candidate_cases`) timed today vs candidate, interleaved, with
    both results' largest error against float64; one this oneDNN cannot run gets `unavailable` (the reason)."""
    import torch

    from titok_bench.harness.cpu_op_cases import candidate_cases, case_fns

    rows = []
    with torch.no_grad():
        for case in candidate_cases(batch):
            try:
                row = _timed_row(case, case_fns(case, candidate=True), ("today", "candidate"), iters)
            except (RuntimeError, NotImplementedError, AttributeError) as exc:
                reason = (str(exc).strip().splitlines() or [""])[0][:200]
                rows.append({**case, "unavailable": f"{type(exc).__name__}: {reason}"})
                say(f"candidate {case['kind']} {case['where']}: unavailable here ({rows[-1]['unavailable']})")
                continue
            rows.append(row)
            say(f"candidate {case['kind']} {case['where']}: today {row['today_ms']:.2f} ms, candidate "
                f"{row['candidate_ms']:.2f} ms")
    return rows


def end_to_end(batch: int, iters: int, say) -> dict:
    """titok-l-32 fast generation at `batch`, the packed route on / off interleaved (the env switch, read per call)."""
    import os
    import warnings

    import torch

    from titok.cpu_linear import PACKED_LINEAR_ENV
    from titok.flops import generation_flops
    from titok.pipeline import Pipeline
    from titok_bench.harness.models import SPECS
    from titok_bench.harness.timing import interleave, pair_ratios

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RandomWeightsWarning: the report says "random weights"
        tok, gen, *_ = SPECS["titok-l-32"].build(torch.device("cpu"))
    pipe = Pipeline(tok, gen, mode="fast")
    labels = torch.arange(batch) % gen.cfg.num_classes
    saved = os.environ.get(PACKED_LINEAR_ENV)

    def generate_with(flag):
        def run():
            os.environ[PACKED_LINEAR_ENV] = flag
            pipe.generate(labels, seed=0)
        return run

    fns = {"plain": generate_with("0"), "chosen": generate_with("1")}
    say(f"end to end: titok-l-32 fast generation at batch {batch}, the packed route off / on, 1 + {iters} pairs")
    try:
        interleave(fns, 1)  # warm-up pair
        seconds = interleave(fns, iters)
    finally:
        if saved is None:
            os.environ.pop(PACKED_LINEAR_ENV, None)
        else:
            os.environ[PACKED_LINEAR_ENV] = saved
    flop = generation_flops(tok.cfg, gen.cfg, pipe.sampler)["total"] * batch
    cmp = _compare(seconds, flop, pair_ratios)
    say(f"end to end: plain {cmp['plain_ms']:.0f} ms, packed {cmp['chosen_ms']:.0f} ms (median of {iters})")
    return {"dtype": str(pipe.dtype).replace("torch.", ""), "batch_size": batch,
            "ms": {"plain": [t * 1e3 for t in seconds["plain"]], "packed": [t * 1e3 for t in seconds["chosen"]]},
            "plain_gflops": cmp["plain_gflops"], "packed_gflops": cmp["chosen_gflops"], "speedup": cmp["speedup"]}


def report(payload: dict) -> str:
    cfg = payload["config"]
    lines = [f"titok-l-32 shapes at batch {cfg['batch_size']}, bf16, {cfg['iters']} interleaved calls each "
             f"(median); {payload['environment']['device_name']}",
             f"bf16 {payload['gemm']['n']}^3 torch.mm: {payload['gemm']['gflops']:.0f} GFLOP/s",
             "plain: PyTorch's op (F.linear, F.gelu, +, bf16 SDPA); chosen: the fast path's (titok.cpu_linear, "
             "one QKV product, SDPA in fp32); errors: largest against float64"
             + ("" if payload["packing_enabled"] else "  [packing is OFF here: chosen linear = F.linear]"), ""]
    header = (f"{'op':12s}{'where':12s}{'shape':>22s}{'plain GF/s':>11s}{'chosen':>8s}{'speed-up':>10s}"
              f"{'err plain':>11s}{'err chosen':>11s}")
    lines += [header, "-" * len(header)]
    for r in payload["rows"]:
        speed = "-" if not r["speedup"] else f"{r['speedup']['p50']:.2f}x"
        errs = "".join(f"{r[key]:11.3g}" if key in r else f"{'-':>11s}" for key in ("plain_max_err", "chosen_max_err"))
        lines.append(f"{r['kind']:12s}{r['where']:12s}{shape_label(r):>22s}{r['plain_gflops']:11.0f}"
                     f"{r['chosen_gflops']:8.0f}{speed:>10s}{errs}")
    if payload.get("candidates"):
        lines += ["", "candidates, not taken (speed-up = today / candidate; max error against float64):"]
        header = (f"{'op':12s}{'where':12s}{'shape':>22s}{'today GF/s':>11s}{'cand.':>8s}{'speed-up':>10s}"
                  f"{'err today':>11s}{'err cand.':>11s}")
        lines += [header, "-" * len(header)]
        for r in payload["candidates"]:
            if r.get("unavailable"):
                lines.append(f"{r['kind']:12s}{r['where']:12s}{shape_label(r):>22s}  unavailable: {r['unavailable']}")
                continue
            speed = "-" if not r["speedup"] else f"{r['speedup']['p50']:.2f}x"
            lines.append(f"{r['kind']:12s}{r['where']:12s}{shape_label(r):>22s}{r['today_gflops']:11.0f}"
                         f"{r['candidate_gflops']:8.0f}{speed:>10s}{r['today_max_err']:11.3g}"
                         f"{r['candidate_max_err']:11.3g}")
    if payload.get("end_to_end"):
        lines += ["", end_to_end_line(payload["end_to_end"])]
    return "\n".join(lines)


def end_to_end_line(e2e: dict, num=lambda x: f"{x:.0f}", ratio=lambda x: f"{x:.2f}x") -> str:
    """The --end-to-end result in one sentence (`num`, `ratio`: how figures are written)."""
    s = e2e["speedup"]
    return (f"Fast generation end to end ({e2e['dtype']}, batch {e2e['batch_size']}, {s['pairs']} interleaved "
            f"pairs): packed route off (PyTorch's ops) {num(e2e['plain_gflops'])} GFLOP/s, on "
            f"{num(e2e['packed_gflops'])} GFLOP/s: "
            f"{ratio(s['p50'])} (p20-p80 {ratio(s['p20'])}-{ratio(s['p80'])})")


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog="bench/cpu_ops.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=4, help="titok-l-32 batch whose shapes are timed (default 4)")
    p.add_argument("--iters", type=int, default=5, help="timed calls of each, interleaved (default 5)")
    p.add_argument("--end-to-end", action="store_true", help="also time titok-l-32's fast generation with the packed "
                   "route on and off, interleaved (--iters pairs: about 1.5 minutes at batch 4 on 2 cores)")
    p.add_argument("--candidates", action="store_true", help="also time ops not taken yet beside what the fast path "
                   "runs today, with both errors against float64: attention as two bf16 matrix products "
                   "(bench/harness/cpu_op_cases.py)")
    p.add_argument("--out", help="JSON result file (.json)")
    cli.add_overwrite_flag(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or args.iters < 1:
        raise cli.UsageError("--batch-size and --iters must be >= 1")
    out = cli.Outputs(args.overwrite).file(args.out, "--out")
    from titok.runtimes import cpu_has_bf16_matmul

    if not cpu_has_bf16_matmul():  # bf16 is emulated there (0.3 GFLOP/s on an AVX2 EPYC): minutes per 4096^3 product
        raise cli.UsageError("this CPU has no native bf16 matrix units (AMX-BF16 / AVX512-BF16): the fast path runs "
                             "fp32 here and makes neither choice (TITOK_CPU_BF16=1 forces the comparison)")
    from titok_bench.harness.env import environment

    def say(text):
        print(f"cpu_ops: {text}", file=sys.stderr, flush=True)

    payload = {"schema": SCHEMA, "environment": environment("cpu"),
               "config": {"model": "titok-l-32", "batch_size": args.batch_size, "iters": args.iters},
               **measure(args.batch_size, args.iters, say)}
    if args.candidates:
        payload["candidates"] = measure_candidates(args.batch_size, args.iters, say)
    if args.end_to_end:
        payload["end_to_end"] = end_to_end(args.batch_size, args.iters, say)
    print(report(payload))
    if out:
        from titok_bench.harness.results import write_json

        write_json(out, payload)
        print(f"results -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_tool(main, prog="cpu_ops.py"))
