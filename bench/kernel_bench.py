"""Kernel micro-benchmarks: each project op against its torch reference (and official-style torch code).

    python bench/kernel_bench.py                       # the default ops, JSON to results/<device>/kernels.json
    python bench/kernel_bench.py --ops maskgit_step --out my.json

Cases come from the one registry, bench/ops/cases.py; each op's providers and byte/FLOP formulas live in
bench/ops/<op>.py (`run(device, quick=..., micro=...) -> rows`). Every row is timed eager (what a Python loop
pays per call) and, on a GPU, under a CUDA graph (the GPU's own time per call), with the working set against
the L2 and the derived GB/s or TFLOP/s (fields: bench/harness/micro.py, docs/benchmarks.md). On a machine
without a GPU only the torch providers run (at small "quick" shapes), and the output says so.
A failing op, case or provider gives an "error" row ("oom" for out-of-memory) and the others still run; the
JSON is rewritten (atomically) after each op, so an interruption keeps the finished ops' rows.
Exit status: 0 every row measured, 1 some row is an error or oom, 2 usage error, 130 interrupted.
"""
from __future__ import annotations

import importlib
import os
import sys

from titok_bench.harness import cli
from titok_bench.harness.env import device_slug, environment, parse_device
from titok_bench.harness.micro import MicroRun, error_row, ident
from titok_bench.harness.results import write_json
from titok_bench.ops.cases import DEFAULT_OPS, OPS

SCHEMA = "titok-kernels/kernels/v2"
FAILED = ("error", "oom")


def run_op(op: str, micro: MicroRun) -> list[dict]:
    """The op's rows, or one error row for the op when its module fails outside its own per-row guards."""
    try:
        module = importlib.import_module(f"titok_bench.ops.{op}")
        return module.run(micro.device, quick=micro.settings.quick, micro=micro)
    except Exception as exc:  # noqa: BLE001 - one failing op must not lose the others
        return [error_row(ident(op, "all", "all", {}, None), exc)]


def run_ops(ops, micro: MicroRun, on_op=None) -> list[dict]:
    """Rows of every op in order; `on_op(rows so far, finished ops)` after each op (the tool writes the file)."""
    rows, done = [], []
    for op in ops:
        rows += run_op(op, micro)
        done.append(op)
        if on_op is not None:
            on_op(rows, done)
    return rows


def shape_text(shape) -> str:
    """A row's shape for the table: the ops give a dict ({"M": 4096, ...}) or an already formatted string."""
    if isinstance(shape, dict):
        return " ".join(f"{k}={v}" for k, v in shape.items())
    return str(shape)


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _spread(r, kind):
    lo, hi = r.get(f"{kind}_p20_ms"), r.get(f"{kind}_p80_ms")
    return "-" if lo is None or hi is None else f"{lo:.4f}-{hi:.4f}"


def results_table(rows: list[dict], title: str):
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("op", "provider", "case", "shape", "dtype", "status", "eager p50 ms", "graph p50 ms",
                "graph p20-p80 ms", "GB/s", "TFLOP/s", "of peak", "in L2"):
        table.add_column(col, justify="right" if col.endswith(("ms", "s", "peak")) else "left")
    for r in rows:
        frac = r.get("frac_peak_bandwidth") if r.get("frac_peak_bandwidth") is not None else r.get("frac_peak_flops")
        fits = r.get("fits_l2")
        table.add_row(r["op"], r["provider"], str(r.get("case", "-")), shape_text(r["shape"]), str(r["dtype"]),
                      r.get("status", "ok"),
                      _fmt(r.get("eager_p50_ms"), ".4f"), _fmt(r.get("graph_p50_ms"), ".4f"), _spread(r, "graph"),
                      _fmt(r.get("gbps"), ".1f"), _fmt(r.get("tflops"), ".2f"),
                      "-" if frac is None else f"{100 * frac:.0f}%", "-" if fits is None else ("yes" if fits else "no"))
    return table


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="bench/kernel_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default=",".join(DEFAULT_OPS),
                        help=f"comma-separated subset of {','.join(OPS)} (default {','.join(DEFAULT_OPS)})")
    cli.add_device_flag(parser)
    parser.add_argument("--quick", action="store_true", help="small shapes (the default on CPU)")
    parser.add_argument("--out", help="JSON result file (default: results/<device>/kernels.json under the working "
                        "folder; results/ is ignored by git)")
    cli.add_overwrite_flag(parser)
    args = parser.parse_args(argv)
    ops = cli.parse_list(args.ops, "--ops")
    for op in ops:
        cli.check_choice(op, OPS, "--ops")
    device = parse_device(args.device)
    out = args.out or os.path.join(cli.RESULTS_DIR, device_slug(device), "kernels.json")
    cli.Outputs(args.overwrite).file(out, "--out")
    quick = args.quick or device.type != "cuda"
    if device.type != "cuda":
        print("No GPU: running the torch providers only, at small shapes, timed eager (no CUDA graphs). These CPU "
              "timings say nothing about the Triton kernels' GPU speed.")
    env = environment(device)
    micro = MicroRun.create(device, quick)
    finished: list[str] = []

    def write(rows, done):
        finished[:] = done
        write_json(out, {"schema": SCHEMA, "environment": env, "quick": quick, "l2_bytes": micro.l2_bytes,
                         "ops": list(ops), "finished_ops": list(done), "complete": len(done) == len(ops),
                         "rows": rows})

    try:
        rows = run_ops(ops, micro, on_op=write)
    except KeyboardInterrupt:
        if not finished:
            raise
        raise cli.Interrupted(f"the rows of the finished ops ({', '.join(finished)}) are in {out}") from None
    cli.console(wide=True).print(results_table(rows, f"kernel micro-benchmarks on {env['device_name']} "
                                                     f"({'quick' if quick else 'full'} shapes)"))
    for r in rows:
        if r["status"] != "ok":
            print(f"  {r['op']} {r['provider']} {r['case']}: {r['status']}: {r['message']}",
                  file=sys.stderr if r["status"] in FAILED else sys.stdout)
    notes = [r["graph_note"] for r in rows if r["status"] == "ok" and r.get("graph_note")]
    for note in dict.fromkeys(notes):
        print(f"  no graph time for {notes.count(note)} row(s): {note}")
    print(f"results -> {out}")
    failed = [r for r in rows if r["status"] in FAILED]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(cli.run_tool(main, prog="kernel_bench.py"))
