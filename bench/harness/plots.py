"""Plots of sampling results, made from the result rows: throughput vs batch size, and speed-up bars.

Every figure says what produced it (conventions.md): the device, the date, the dtypes, whether the
weights were random, the command; a CPU figure also says that it is not the paper's GPU figures.
Speed-up bars carry the p20-p80 spread of the interleaved per-iteration ratios as error bars. A
run with no speed-up to show (no baseline row measured) gets a panel that says so.
"""
from __future__ import annotations

from titok_bench.harness.cli import plot_format
from titok_bench.harness.report import short_dtype
from titok_bench.harness.results import write_atomic

CPU_LABEL = "CPU figures: NOT comparable with the paper's GPU (A100) figures"


def provenance(env: dict, rows: list[dict], weights: str) -> str:
    """Two or three title lines: device, date, dtypes, weights; the command; the CPU label."""
    dtypes = sorted({short_dtype(r) for r in rows if r["dtype"]}) or ["-"]
    weights_text = "random weights" if weights == "random" else f"weights: {weights}"
    lines = [f"{env['device_name']} ({env['device_type']}), {env['timestamp'][:10]}, dtype {', '.join(dtypes)}, "
             f"{weights_text}", env["command"]]
    if env["device_type"] == "cpu":
        lines.append(CPU_LABEL)
    if any(w.startswith("busy") for r in rows for w in r.get("warnings") or []):
        lines.append("WARNING: the machine was busy during this run (figures pessimistic and noisy)")
    return "\n".join(lines)


def _throughput(ax, rows: list[dict]) -> None:
    series: dict[tuple, list] = {}
    for r in rows:
        if r["samples_per_s"]:
            key = (r["label"], r["resolution"], r["pipeline"], r["protocol"])
            series.setdefault(key, []).append((r["batch_size"], r["samples_per_s"]))
    for (label, res, mode, protocol), pts in sorted(series.items(), key=lambda kv: str(kv[0])):
        pts.sort()
        name = f"{label} {res}px {mode}" + (f" ({protocol})" if protocol else "")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("samples/s (p50)")
    ax.set_title("end-to-end throughput")
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=7)


def _bars(ax, bars: list[tuple], ylabel: str, paper: list | None = None) -> None:
    """bars: (name, p50, p20, p80); paper: the paper's value per bar (or None)."""
    if not bars:
        ax.text(0.5, 0.5, "no speed-up to show\n(no baseline row was measured)", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    xs = range(len(bars))
    mid = [b[1] for b in bars]
    err = [[m - b[2] for m, b in zip(mid, bars)], [b[3] - m for m, b in zip(mid, bars)]]
    ax.bar(xs, mid, yerr=err, capsize=3, label="measured (p20-p80)")
    if paper and any(paper):
        ax.scatter(xs, [p or float("nan") for p in paper], color="black", marker="_", s=300, label="paper",
                   zorder=3)
        ax.set_yscale("log")
    ax.set_xticks(list(xs), [b[0] for b in bars], rotation=60, ha="right", fontsize=7)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def plot(rows: list[dict], path: str, *, env: dict, weights: str, claims: list[dict] | None = None) -> str:
    """Write the PNG (atomically); returns its title text (the provenance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.5))
    _throughput(ax1, rows)
    if claims is not None:
        ok = [c for c in claims if c["speedup_vs_dit"]]
        bars = [(f"{c['label']} {c['resolution']} ({c['protocol']})", c["speedup_vs_dit"], c["speedup_vs_dit_p20"],
                 c["speedup_vs_dit_p80"]) for c in ok]
        _bars(ax2, bars, "speed-up over DiT-XL/2 (same resolution)", [c["paper_speedup_vs_dit"] for c in ok])
    else:
        ok = [r for r in rows if r["speedup"]]
        bars = [(f"{r['model']} {r['pipeline']} b{r['batch_size']}", r["speedup"]["p50"], r["speedup"]["p20"],
                 r["speedup"]["p80"]) for r in ok]
        _bars(ax2, bars, "speed-up over the reference pipeline (same batch)")
    ax2.set_title("speed-up (median of interleaved per-iteration ratios)")
    title = provenance(env, rows, weights)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format=plot_format(path), dpi=120))
    plt.close(fig)
    return title


def plot_tokens(rows: list[dict], path: str, *, env: dict, ratios: list[dict]) -> str:
    """--compare tokens: samples/s against K, one panel per task (measured series, the paper's two points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from titok_bench.harness.token_sweep import PAPER, TASKS

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, task in zip(axes, TASKS):
        mine = [r for r in rows if r["task"] == task and r["samples_per_s"]]
        for pipeline in dict.fromkeys(r["pipeline"] for r in mine):
            pts = sorted((r["num_tokens"], r["samples_per_s"]) for r in mine if r["pipeline"] == pipeline)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"measured: {pipeline}")
        paper = sorted(PAPER[task].items())
        ax.plot([p[0] for p in paper], [p[1] for p in paper], "k--", marker="s", label="paper (A100)")
        for r in (r for r in ratios if r["task"] == task and r["ratio"]):
            ax.plot([], [], " ", label=f"{r['pipeline']}: K=32/K=256 = {r['ratio']:.1f}x "
                                       f"(paper {r['paper_ratio']:.1f}x)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("number of tokens K")
        ax.set_ylabel("samples/s (p50)")
        ax.set_title(task + (" (class ids -> pixels)" if task == "sampling" else " (one generator step)"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    title = provenance(env, rows, "random")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format=plot_format(path), dpi=120))
    plt.close(fig)
    return title
