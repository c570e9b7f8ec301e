"""Markdown tables rendered from result files, so that no figure in the README or docs is typed in.

    python bench/render_results.py profiles/h200/*.json                        # Markdown on stdout
    python bench/render_results.py profiles/h200/*.json --out tables.md        # a new file (--overwrite)
    python bench/render_results.py profiles/h200/*.json --update README.md --block h200

Reads the JSON files the bench tools write: sampling.py (`titok-kernels/sampling/v1`, `v2`:
bench/schema_sampling.json; rows, and the claims and token-ratio tables when present),
kernel_bench.py (`kernels/v1`, `v2`), parity.py (`parity/v1`, `v2`), official_cpu.py
(`official-cpu/v1`), cpu_ops.py (`cpu-ops/v1`) and profiling.py (`profile/v1`: end to end and
stages). Each file gets a line with its device, date, command and commit (`environment`), then its
tables; figures are printed as the file holds them, rounded (`num`: 3 significant digits;
percentages to 0.1).
--update replaces the text between `<!-- results:NAME -->` and `<!-- /results:NAME -->` in a
Markdown file (each marker exactly once, in that order; else refused), written atomically and
only when it changes (a second run with the same files leaves the file as it is). --out follows
the tools' output rules (an existing file only with --overwrite, never an input file). Exit
status: 0 done, 2 a missing, unreadable or unknown result file, or a usage error (one line).
"""
from __future__ import annotations

import json
import os
import re
import sys

from titok_bench.harness import cli
from titok_bench.harness.results import write_text

GENERATED = "<!-- rendered by bench/render_results.py from the result files named below: edit those, not this -->"


# ---- formatting ------------------------------------------------------------------------------------------
def num(x) -> str:
    """A figure: integers as they are; floats to 3 significant digits, at least 0 decimals (3040.1 -> '3040',
    0.32893 -> '0.329'), with an exponent below 1e-3 (1.99e-05); '-' for None."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int) or not isinstance(x, float):
        return str(x)
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.2e}"
    if x == 0 or abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{max(0, 2 - int(f'{abs(x):e}'.split('e')[1]))}f}"


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def ratio(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def span(lo, hi, fmt=num) -> str:
    return "-" if lo is None or hi is None else f"{fmt(lo)}-{fmt(hi)}"


def cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: list[str], rows: list[list], right: set[str] = frozenset()) -> list[str]:
    """A Markdown table; columns named in `right` are right-aligned."""
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if h in right else "---" for h in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def status(row: dict) -> str:
    st = row.get("status", "ok")
    return st if st == "ok" or not row.get("message") else f"{st}: {row['message']}"


def shape_text(shape) -> str:
    return " ".join(f"{k}={v}" for k, v in shape.items()) if isinstance(shape, dict) else str(shape)


# ---- one renderer per result file kind -------------------------------------------------------------------
def sampling(payload: dict) -> list[str]:
    rows = payload["results"]
    sweep = any("num_tokens" in r for r in rows)
    headers = ["model", *(["K", "task"] if sweep else []), "pipeline", "dtype", "batch", "samples/s",
               "p20-p80", "p50 ms/batch", "vs baseline", "status"]
    body = [[r.get("label") or r["model"], *([r.get("num_tokens", "-"), r.get("task", "-")] if sweep else []),
             r["pipeline"], ("tf32" if r.get("tf32") and r["dtype"] == "float32" else r["dtype"]) or "-",
             r["batch_size"], num(r.get("samples_per_s")), span(r.get("samples_per_s_p20"), r.get("samples_per_s_p80")),
             num((r.get("latency_ms") or {}).get("p50_ms")), ratio((r.get("speedup") or {}).get("p50")), status(r)]
            for r in rows]
    lines = table(headers, body, {"K", "batch", "samples/s", "p20-p80", "p50 ms/batch", "vs baseline"})
    if payload.get("claims"):
        lines += ["", *table(["claim", "resolution", "pipeline", "dtype", "batch", "samples/s", "vs DiT-XL/2",
                              "paper samples/s", "paper vs DiT-XL/2", "status"],
                             [[c["label"], c["resolution"], c["pipeline"], c["dtype"], c["batch_size"],
                               num(c["samples_per_s"]), ratio(c["speedup_vs_dit"]), num(c["paper_samples_per_s"]),
                               ratio(c["paper_speedup_vs_dit"]), status(c)] for c in payload["claims"]],
                             {"resolution", "batch", "samples/s", "vs DiT-XL/2", "paper samples/s",
                              "paper vs DiT-XL/2"})]
    if payload.get("token_ratios"):
        lines += ["", *table(["task", "pipeline", "K", "samples/s", "ratio", "p20-p80", "paper ratio"],
                             [[t["task"], t["pipeline"], f"{t['k_small']} / {t['k_large']}",
                               f"{num(t['samples_per_s_small'])} / {num(t['samples_per_s_large'])}", ratio(t["ratio"]),
                               span(t.get("ratio_p20"), t.get("ratio_p80"), ratio), ratio(t.get("paper_ratio"))]
                              for t in payload["token_ratios"]], {"samples/s", "ratio", "p20-p80", "paper ratio"})]
    return lines


def kernels_v2(payload: dict) -> list[str]:
    """kernels/v2: eager per-call time and GPU time under a CUDA graph (null + note off CUDA), L2 fit."""
    headers = ["op", "provider", "case", "dtype", "eager ms", "graph ms", "GB/s", "TFLOP/s", "of peak", "L2",
               "status"]
    body = []
    for r in payload["rows"]:
        frac = r.get("frac_peak_bandwidth") if r.get("frac_peak_bandwidth") is not None else r.get("frac_peak_flops")
        fits = r.get("fits_l2")
        body.append([r["op"], r["provider"], r.get("case") or "-", r.get("dtype") or "-", num(r.get("eager_p50_ms")),
                     num(r.get("graph_p50_ms")), num(r.get("gbps")), num(r.get("tflops")),
                     "-" if frac is None else f"{100 * frac:.0f}%", "-" if fits is None else ("fits" if fits else "past"),
                     status(r)])
    done = "" if payload.get("complete", True) else " (incomplete: the run stopped early)"
    return [f"{'quick' if payload.get('quick') else 'full'} shapes{done}; throughput from the graph time where "
            "there is one", "", *table(headers, body, {"eager ms", "graph ms", "GB/s", "TFLOP/s", "of peak"})]


def kernels(payload: dict) -> list[str]:
    rows = payload["rows"]
    headers = ["op", "provider", "shape", "dtype", "p50 ms", "p20-p80 ms", "GB/s", "TFLOP/s", "of peak", "status"]
    body = []
    for r in rows:
        frac = r.get("frac_peak_bandwidth") if r.get("frac_peak_bandwidth") is not None else r.get("frac_peak_flops")
        body.append([r["op"], r["provider"], shape_text(r.get("shape", "-")), r.get("dtype", "-"), num(r.get("p50_ms")),
                     span(r.get("p20_ms"), r.get("p80_ms")), num(r.get("gbps")), num(r.get("tflops")),
                     "-" if frac is None else f"{100 * frac:.0f}%", status(r)])
    return [f"{'quick' if payload.get('quick') else 'full'} shapes", "",
            *table(headers, body, {"p50 ms", "p20-p80 ms", "GB/s", "TFLOP/s", "of peak"})]


_PARITY_SKIP = {"status", "message", "traceback", "tf32", "seconds", "images", "bound_rule", "same_noise",
                "fast_dtype_reason"}


def _figure(key: str, value) -> str:
    if key.startswith("psnr_db"):
        return f"{key} {'identical' if value is None else f'{value:.1f} dB'}"
    if key in ("token_agreement", "rows_identical"):
        return f"{key} {pct(value)}"
    return f"{key} {num(value)}"


def parity(payload: dict) -> list[str]:
    config = payload["config"]
    if payload["schema"].endswith("/v1"):
        f32, low = payload["fp32_given_noise"], payload["fast_default_dtype_vs_reference_fp32_temperature0"]
        encode = low.get("encode")
        parts = {"fp32_given_noise": f32, "fast_default_dtype_temperature0": {k: v for k, v in low.items()
                                                                              if k != "encode"}}
        if encode:
            parts["encode"] = encode
    else:
        parts = payload["parts"]
    body = [[name, status(e), "; ".join(_figure(k, v) for k, v in e.items() if k not in _PARITY_SKIP)]
            for name, e in parts.items()]
    head = f"{config['model']}, batch {config['batch_size']}, " \
           f"{'random weights' if config['random_weights'] else 'checkpoints'}"
    if payload.get("interrupted") or payload.get("finished") is False:
        head += " (interrupted: the parts finished before it)"
    return [head, "", *table(["part", "status", "figures"], body)]


def official_cpu(payload: dict) -> list[str]:
    """The rows of both tasks (those run); files with the matrix rate (--gemm-n) add GFLOP/s and its fraction."""
    config, body, rates = payload["config"], [], []
    tasks = [t for t in ("generate", "encode") if t in payload]
    with_rates = any(payload[t].get("gemm") for t in tasks)
    for task in tasks:
        for r in payload[task]["rows"]:
            row = [task, r["pipeline"], r["dtype"], num(r["s_per_batch"]), num(r["samples_per_s"]),
                   span(r["samples_per_s_p20"], r["samples_per_s_p80"]), ratio(r["vs_official"]["p50"]),
                   ratio(r["vs_reference"]["p50"])]
            body.append(row + ([num(r.get("gflops")), pct(r.get("fraction_of_gemm"))] if with_rates else []))
        gemm = payload[task].get("gemm") or {}
        if gemm:
            rates.append(f"{task}: " + ", ".join(f"{k} {num(v['gflops'])}" for k, v in gemm.items()))
    headers = ["task", "pipeline", "dtype", "s/batch", "samples/s", "p20-p80", "vs official", "vs reference"]
    headers += ["GFLOP/s", "of GEMM"] if with_rates else []
    head = [f"{config['model']}, batch {config['batch_size']}, {config['iters']} iterations interleaved, official "
            f"commit {config.get('official_commit') or '-'}"]
    if rates:
        head.append(f"GEMM rate in the same run ({config.get('gemm_n')}^3 torch.mm, GFLOP/s): " + "; ".join(rates))
    return [*head, "", *table(headers, body, set(headers[3:]))]


def cpu_ops(payload: dict) -> list[str]:
    config, gemm = payload["config"], payload["gemm"]
    from titok_bench.cpu_ops import end_to_end_line, shape_label

    def errors(r, names):
        return [num(r.get(f"{name}_max_err")) for name in names]

    body = [[r["kind"], r["where"], shape_label(r), num(r["plain_gflops"]), num(r["chosen_gflops"]),
             ratio((r.get("speedup") or {}).get("p50")), *errors(r, ("plain", "chosen"))] for r in payload["rows"]]
    lines = [f"{config['model']} shapes at batch {config['batch_size']}, bf16, {config['iters']} interleaved calls; "
             f"bf16 {gemm['n']}^3 torch.mm {num(gemm['gflops'])} GFLOP/s; errors: largest against float64", "",
             *table(["op", "where", "shape", "plain GFLOP/s", "chosen GFLOP/s", "speed-up", "plain error",
                     "chosen error"], body, {"plain GFLOP/s", "chosen GFLOP/s", "speed-up", "plain error",
                                             "chosen error"})]
    if payload.get("candidates"):
        body = [[r["kind"], r["where"], shape_label(r), "unavailable: " + r["unavailable"], "", "", "", ""]
                if r.get("unavailable") else
                [r["kind"], r["where"], shape_label(r), num(r["today_gflops"]), num(r["candidate_gflops"]),
                 ratio((r.get("speedup") or {}).get("p50")), *errors(r, ("today", "candidate"))]
                for r in payload["candidates"]]
        lines += ["", "Candidates, not taken (speed-up = today / candidate):", "",
                  *table(["op", "where", "shape", "today GFLOP/s", "candidate GFLOP/s", "speed-up", "today error",
                          "candidate error"], body, {"today GFLOP/s", "candidate GFLOP/s", "speed-up", "today error",
                                                     "candidate error"})]
    if payload.get("end_to_end"):
        lines += ["", end_to_end_line(payload["end_to_end"], num, ratio)]
    return lines


def profile(payload: dict) -> list[str]:
    config, e2e, gemm = payload["config"], payload["end_to_end"], payload.get("gemm")
    encode = config.get("task") == "encode"
    head = (f"{config['model']}, {'encode' if encode else 'generation'}, batch {config['batch_size']}: "
            f"{num(e2e['samples_per_s'])} {'images' if encode else 'samples'}/s end to end "
            f"(p50 {num(e2e['p50_ms'])} ms per batch")
    if gemm and e2e.get("of_gemm") is not None:
        head += (f"; {num(e2e['achieved_tflops'] * 1e3)} GFLOP/s, {pct(e2e['of_gemm'])} of the {gemm['dtype']} "
                 f"{gemm['n']}^3 torch.mm's {num(gemm['gflops'])}")
    rows = [[s["stage"], num(s["p50_ms"]), span(s["p20_ms"], s["p80_ms"]), pct(s["share"]),
             num(s.get("gflops")), pct(s.get("of_gemm"))] for s in payload["stages"]]
    return [head + ")", "",
            *table(["stage", "p50 ms", "p20-p80 ms", "share", "GFLOP/s", "of GEMM"], rows,
                   {"p50 ms", "p20-p80 ms", "share", "GFLOP/s", "of GEMM"})]


RENDERERS = {"titok-kernels/sampling/v1": sampling, "titok-kernels/sampling/v2": sampling,
             "titok-kernels/kernels/v1": kernels, "titok-kernels/kernels/v2": kernels_v2,
             "titok-kernels/parity/v1": parity,
             "titok-kernels/parity/v2": parity, "titok-kernels/official-cpu/v1": official_cpu,
             "titok-kernels/cpu-ops/v1": cpu_ops,
             "titok-kernels/profile/v1": profile}


def provenance(env: dict) -> str:
    """The line that says what produced a file's figures: device, date, command, commit."""
    device = (env.get("cpu") or {}).get("model_name") or env.get("device_name") or "-"
    sha = env.get("git_sha")
    return (f"device: {device} ({env.get('device_type', '-')}, torch {env.get('torch', '-')}) · date: "
            f"{env.get('timestamp', '-')} · commit: {sha[:12] if sha else 'unknown'} · command: "
            f"`{env.get('command', '-')}`")


def load(path: str) -> dict:
    """A result file's payload; UsageError (one line) when it is missing, not JSON or of an unknown kind."""
    try:
        with open(path) as f:
            payload = json.load(f)
    except FileNotFoundError:
        raise cli.UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise cli.UsageError(f"{path}: is a folder, not a result file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise cli.UsageError(f"{path}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise cli.UsageError(f"{path}: not JSON ({exc})") from None
    schema = payload.get("schema") if isinstance(payload, dict) else None
    if schema not in RENDERERS:
        raise cli.UsageError(f"{path}: not a result file of a known kind (schema {schema!r}; known: "
                             f"{', '.join(RENDERERS)})")
    if not isinstance(payload.get("environment"), dict):
        raise cli.UsageError(f"{path}: {schema} file without its environment block")
    return payload


def render(paths: list[str]) -> str:
    """The Markdown of these result files, in the order given."""
    out = [GENERATED]
    for path in paths:
        payload = load(path)
        try:
            body = RENDERERS[payload["schema"]](payload)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise cli.UsageError(f"{path}: {payload['schema']} file lacks or mistypes a field "
                                 f"({type(exc).__name__}: {exc})") from None
        out += ["", f"**`{path}`**", "", provenance(payload["environment"]), "", *body]
    return "\n".join(out) + "\n"


def replace_block(text: str, name: str, block: str, path: str) -> str:
    """`text` with the part between the markers of `name` replaced by `block` (UsageError without markers)."""
    begin, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    counts = (text.count(begin), text.count(end))
    if counts != (1, 1) or text.index(begin) > text.index(end):
        raise cli.UsageError(f"--update {path}: needs exactly one '{begin}' followed by one '{end}' (found "
                             f"{counts[0]} and {counts[1]}{', in the wrong order' if counts == (1, 1) else ''})")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{block}{end}{tail}"


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="bench/render_results.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="result JSON files, rendered in this order")
    parser.add_argument("--out", help="write the Markdown to this new file (.md; an existing one with --overwrite)")
    parser.add_argument("--update", metavar="DOC.md", help="replace the block between the markers of --block in "
                        "this Markdown file")
    parser.add_argument("--block", metavar="NAME", help="the marker name: <!-- results:NAME --> ... "
                        "<!-- /results:NAME -->")
    cli.add_overwrite_flag(parser)
    args = parser.parse_args(argv)
    if (args.update is None) != (args.block is None):
        raise cli.UsageError("--update and --block go together")
    if args.block is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", args.block):
        raise cli.UsageError(f"--block takes letters, digits, '_', '.' and '-', got {args.block!r}")
    out = cli.Outputs(args.overwrite, inputs=args.files).file(args.out, "--out", (".md",))
    if args.update is not None:
        if not os.path.isfile(args.update):
            raise cli.UsageError(f"--update {args.update}: no such file")
        if out and os.path.realpath(out) == os.path.realpath(args.update):
            raise cli.UsageError("--out and --update name the same file")
        cli.Outputs(True, inputs=args.files).file(args.update, "--update", (".md",))  # the file is meant to exist
    markdown = render(args.files)
    if args.update is not None:
        with open(args.update) as f:
            text = f.read()
        new = replace_block(text, args.block, markdown, args.update)
        if new == text:
            print(f"{args.update}: block {args.block!r} unchanged")
        else:
            write_text(args.update, new)
            print(f"{args.update}: block {args.block!r} updated from {len(args.files)} file(s)")
    if out:
        write_text(out, markdown)
        print(f"results -> {out}")
    if out is None and args.update is None:
        sys.stdout.write(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_tool(main, prog="render_results.py"))
