"""Kernel micro-benchmarks: each project op against its torch reference (and official-style torch code).

    python bench/kernels.py                       # all ops, JSON to profiles/<device>/kernels.json
    python bench/kernels.py --ops maskgit_step --out my.json

Each op's cases live in bench/ops/<op>.py (`run(device, quick=...) -> rows`); rows carry
op, provider, shape, dtype, p50/p20/p80 ms and the derived throughput (GB/s or TFLOP/s
from the byte/FLOP formula documented in that file) with the fraction of the device's
peak when the device is known. On a machine without a GPU only the torch providers
run (at small "quick" shapes), and the output says so.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

if __package__ in (None, ""):
    # Run as a script: import from the repository root, not from bench/ (whose profile.py would
    # otherwise shadow the standard library's `profile` module).
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from titok_bench.common import device_slug, environment, write_json  # noqa: E402

OPS = ("nearest_code", "maskgit_step", "concat_attention")
SCHEMA = "titok-kernels/kernels/v1"


def run_ops(ops, device: torch.device, quick: bool) -> list[dict]:
    rows = []
    for op in ops:
        module = importlib.import_module(f"titok_bench.ops.{op}")
        rows += module.run(device, quick=quick)
    return rows


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("op", "provider", "shape", "dtype", "p50 ms", "p20-p80 ms", "GB/s", "TFLOP/s", "of peak"):
        table.add_column(col, justify="right" if col.endswith(("ms", "s", "peak")) else "left")
    for r in rows:
        frac = r.get("frac_peak_bandwidth") if r.get("frac_peak_bandwidth") is not None else r.get("frac_peak_flops")
        shape = " ".join(f"{k}={v}" for k, v in r["shape"].items())
        table.add_row(r["op"], r["provider"], shape, r["dtype"], _fmt(r["p50_ms"], ".4f"),
                      f"{_fmt(r['p20_ms'], '.4f')}-{_fmt(r['p80_ms'], '.4f')}", _fmt(r.get("gbps"), ".1f"),
                      _fmt(r.get("tflops"), ".2f"), "-" if frac is None else f"{100 * frac:.0f}%")
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    parser.add_argument("--quick", action="store_true", help="small shapes (the default on CPU)")
    parser.add_argument("--out", help="JSON result file (default: profiles/<device>/kernels.json)")
    args = parser.parse_args(argv)
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = sorted(set(ops) - set(OPS))
    if unknown:
        parser.error(f"unknown ops {unknown}; choose from {list(OPS)}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    quick = args.quick or device.type != "cuda"
    if device.type != "cuda":
        print("No GPU: running the torch providers only, at small shapes. These CPU timings say nothing about "
              "the Triton kernels' GPU speed.")
    rows = run_ops(ops, device, quick)
    env = environment(device)
    print_table(rows, f"kernel micro-benchmarks on {env['device_name']} ({'quick' if quick else 'full'} shapes)")
    out = args.out or os.path.join("profiles", device_slug(device), "kernels.json")
    write_json(out, {"schema": SCHEMA, "environment": env, "quick": quick, "rows": rows})
    print(f"results -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
