"""The profiling report's renderings: the Markdown report and the roofline PNG of a `bench/profiling.py` result
(schema titok-kernels/profile/v1; files without `task` are generation profiles, from before encode was profiled)."""
from __future__ import annotations

from titok_bench.harness.results import write_atomic


def _e2e_line(e2e: dict, unit: str = "samples") -> str:
    of_gemm = f" ({_pct(e2e['of_gemm'])} of the GEMM rate)" if e2e.get("of_gemm") else ""
    return (f"{e2e['samples_per_s']:.2f} {unit}/s (p50 {e2e['p50_ms']:.1f} ms per batch, p20-p80 "
            f"{e2e['p20_ms']:.1f}-{e2e['p80_ms']:.1f} ms); {e2e['gflop_per_image']:.1f} GFLOP per image -> "
            f"{e2e['achieved_tflops']:.3f} TFLOP/s achieved{of_gemm}")


def _f(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def _pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def to_markdown(report: dict) -> str:
    env, cfg, e2e, prof = report["environment"], report["config"], report["end_to_end"], report["profiled"]
    task = cfg.get("task", "generate")
    what, unit = ("encode", "images") if task == "encode" else ("generation", "samples")
    lines = [f"# Profile: {cfg['model']}, {cfg['mode']} pipeline, {task}, batch {cfg['batch_size']}", "",
             f"- command: `{env['command']}`", f"- device: {env['device_name']} ({env['device_type']})",
             f"- torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, python {env['python']}",
             f"- date: {env['timestamp']}, git SHA: {env['git_sha']}",
             f"- dtype {cfg['dtype']}, CUDA graph {cfg['cuda_graph']}, random weights {cfg['random_weights']}",
             f"- profiled: one eager {what} (no CUDA graph), batch {prof['batch_size']} in one call: "
             f"{prof['why']}"]
    gemm = report.get("gemm")
    if gemm:
        calls = f"{gemm['calls']} call" + ("s" if gemm["calls"] != 1 else "")
        lines.append(f"- the machine's matrix rate: {gemm['n']}^3 torch.mm in {gemm['dtype']}, {gemm['gflops']:.0f} "
                     f"GFLOP/s (median of {calls}, timed before the stages)")
    lines += ["", "## End to end", "",
              ("CUDA graph replay: " if e2e["cuda_graph"] else "Eager (no CUDA graph): ") + _e2e_line(e2e, unit) + "."]
    if e2e.get("eager"):
        lines += ["", "Eager, without the CUDA graph (the profiled mode): " + _e2e_line(e2e["eager"], unit) + "."]
    lines += ["", "## Stages (each timed alone)", "",
              "| stage | p50 ms | p20-p80 ms | share | GFLOP per image | GFLOP/s | of GEMM rate |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['stage']} | {r['p50_ms']:.2f} | {r['p20_ms']:.2f}-{r['p80_ms']:.2f} | {100 * r['share']:.1f}% | "
              f"{_f(r.get('gflop_per_image'), '.4g')} | {_f(r.get('gflops'), '.0f')} | {_pct(r.get('of_gemm'))} |"
              for r in report["stages"]]
    lines += ["", f"## Top kernels and operators (self time, torch.profiler, one eager {what})", "",
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
    lines += ["", f"## Roofline (project ops and large GEMMs / convolutions, one eager {what})", "",
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
    task = cfg.get("task", "generate")
    ax.set_title(f"{cfg['model']} {cfg['mode']} {task} b{cfg['batch_size']}, {cfg['dtype']}, {weights}\n"
                 f"{env['device_name']} ({env['device_type']}), {env['timestamp'][:10]}\n{env['command']}",
                 fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return True
