"""Kernel micro-benchmarks: each project op against its torch reference (and official-style torch code).

    python bench/kernel_bench.py                       # all ops, JSON to results/<device>/kernels.json
    python bench/kernel_bench.py --ops maskgit_step --out my.json

Each op's cases live in bench/ops/<op>.py (`run(device, quick=...) -> rows`); rows carry
op, provider, shape, dtype, p50/p20/p80 ms and the derived throughput (GB/s or TFLOP/s
from the byte/FLOP formula documented in that file) with the fraction of the device's
peak when the device is known. On a machine without a GPU only the torch providers
run (at small "quick" shapes), and the output says so. Exit status: 0 done, 2 usage error,
130 interrupted (nothing written).
"""
from __future__ import annotations

import importlib
import os
import sys

from titok_bench.harness import cli
from titok_bench.harness.env import device_slug, environment, parse_device
from titok_bench.harness.results import write_json

OPS = ("nearest_code", "maskgit_step", "concat_attention")
SCHEMA = "titok-kernels/kernels/v1"


def run_ops(ops, device, quick: bool) -> list[dict]:
    rows = []
    for op in ops:
        module = importlib.import_module(f"titok_bench.ops.{op}")
        rows += module.run(device, quick=quick)
    return rows


def shape_text(shape) -> str:
    """A row's shape for the table: the ops give a dict ({"M": 4096, ...}) or an already formatted string."""
    if isinstance(shape, dict):
        return " ".join(f"{k}={v}" for k, v in shape.items())
    return str(shape)


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def results_table(rows: list[dict], title: str):
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("op", "provider", "shape", "dtype", "p50 ms", "p20-p80 ms", "GB/s", "TFLOP/s", "of peak"):
        table.add_column(col, justify="right" if col.endswith(("ms", "s", "peak")) else "left")
    for r in rows:
        frac = r.get("frac_peak_bandwidth") if r.get("frac_peak_bandwidth") is not None else r.get("frac_peak_flops")
        table.add_row(r["op"], r["provider"], shape_text(r["shape"]), r["dtype"], _fmt(r["p50_ms"], ".4f"),
                      f"{_fmt(r['p20_ms'], '.4f')}-{_fmt(r['p80_ms'], '.4f')}", _fmt(r.get("gbps"), ".1f"),
                      _fmt(r.get("tflops"), ".2f"), "-" if frac is None else f"{100 * frac:.0f}%")
    return table


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="bench/kernel_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
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
        print("No GPU: running the torch providers only, at small shapes. These CPU timings say nothing about "
              "the Triton kernels' GPU speed.")
    rows = run_ops(ops, device, quick)
    env = environment(device)
    cli.console(wide=True).print(results_table(rows, f"kernel micro-benchmarks on {env['device_name']} "
                                                     f"({'quick' if quick else 'full'} shapes)"))
    write_json(out, {"schema": SCHEMA, "environment": env, "quick": quick, "rows": rows})
    print(f"results -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_tool(main, prog="kernel_bench.py"))
