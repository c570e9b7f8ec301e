"""Human tables (rich) of sampling results: compact enough for an 80-column terminal, `wide` for every column.

Long texts (projections, failures, warnings) are not cells: a row carries a footnote mark [n] and
the notes are printed under the tables, identical notes sharing one number.
"""
from __future__ import annotations

from titok_bench.harness.measure import STAGES

CPU_NOTICE = ("CPU run: CPU figures are not the paper's GPU figures (the paper measured samples/s on an A100 GPU "
              "in float32); they show relative costs on this machine only.")
SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
STAGE_TITLES = {"generator_forwards": "gen fwd", "sampling_steps": "steps", "vit_decoder": "ViT dec",
                "pixel_decoder": "pixel dec"}


def fmt(value, spec=".2f", none="-"):
    return none if value is None else format(value, spec)


def fmt_rate(value):
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def fmt_ratio(value, spec=".2f"):
    return "-" if value is None else f"{value:{spec}}x"


def fmt_pct(fraction):
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def fmt_spread(low, high, f=fmt_rate):
    return "-" if low is None or high is None else f"{f(low)}-{f(high)}"


def short_dtype(row: dict) -> str:
    if row["dtype"] == "float32" and row["tf32"]:
        return "tf32"
    return SHORT_DTYPE.get(row["dtype"], row["dtype"] or "-")


class Notes:
    """Numbered footnotes: `mark(row)` gives a row's marks, `lines()` the notes to print. A warning that every
    measured row carries (a busy machine) is printed once as a WARNING line instead of a mark on each row."""

    def __init__(self, rows: list[dict], run_warnings: list[str] = ()):
        measured = [set(r.get("warnings") or []) for r in rows if r["status"] == "ok"]
        common = set.intersection(*measured) if measured else set()
        self.warnings = [w for r in rows for w in (r.get("warnings") or []) if w in common]
        self.warnings = list(dict.fromkeys(self.warnings + list(run_warnings)))
        self.texts: list[str] = []

    def _number(self, text: str) -> int:
        if text not in self.texts:
            self.texts.append(text)
        return self.texts.index(text) + 1

    def mark(self, row: dict) -> str:
        texts = []
        if row["status"] != "ok":
            texts.append(f"{row['status'].upper()}: {row['message']}")
        elif row.get("projected_from_steps"):
            full = row.get("full_steps") or row.get("steps")
            texts.append(f"projected from {row['projected_from_steps']} of {full} steps")
        if row["status"] == "ok" and row.get("message"):
            texts.append(row["message"])
        texts += [w for w in row.get("warnings") or [] if w not in self.warnings]
        return "".join(f"[{self._number(t)}]" for t in texts)

    def caption(self) -> str | None:
        return "WARNING: the machine was busy (see below): figures pessimistic and noisy" if self.warnings else None

    def lines(self) -> list[str]:
        return [f"[{i + 1}] {t}" for i, t in enumerate(self.texts)] + [f"WARNING: {w}" for w in self.warnings]


def _table(title: str, columns: list[str], left: tuple = (), caption: str | None = None):
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, 1, 0, 0))
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right", no_wrap=col not in ("note", "status"))
    return table


def results_table(rows: list[dict], title: str, notes: Notes, wide: bool = False):
    """samples/s per (pipeline, batch), its p20-p80 spread, the speed-up over the reference (median of
    interleaved per-iteration ratios) and its spread; `wide` adds model, latency, memory, FLOPs, and the
    achieved TFLOP/s as a fraction of the datasheet peak ("of peak") and of the measured ceiling ("of meas.")."""
    cols = ["pipeline", "dtype", "batch", "samples/s", "p20-p80", "vs ref", "p20-p80 ", "note"]
    if wide:
        cols = ["model", *cols[:5], "ms/batch", *cols[5:7], "peak mem", "GFLOP/img", "TFLOP/s", "of peak", "of meas.",
                "note"]
    table = _table(title, cols, left=("model", "pipeline", "dtype", "note"), caption=notes.caption())
    for r in rows:
        sp, lat = r.get("speedup") or {}, r["latency_ms"]
        cells = {"model": r["model"], "pipeline": r["pipeline"], "dtype": short_dtype(r),
                 "batch": str(r["batch_size"]),
                 "samples/s": fmt_rate(r["samples_per_s"]) if r["status"] == "ok" else r["status"].upper(),
                 "p20-p80": fmt_spread(r["samples_per_s_p20"], r["samples_per_s_p80"]),
                 "vs ref": fmt_ratio(sp.get("p50")), "p20-p80 ": fmt_spread(sp.get("p20"), sp.get("p80"), fmt),
                 "ms/batch": "-" if lat is None else f"{lat['p50_ms']:.1f}",
                 "peak mem": "-" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**30:.2f} GiB",
                 "GFLOP/img": fmt(r["gflop_per_image"], ".1f"), "TFLOP/s": fmt(r["achieved_tflops"], ".3f"),
                 "of peak": fmt_pct(r["fraction_of_peak"]), "of meas.": fmt_pct(r.get("fraction_of_measured")),
                 "note": notes.mark(r)}
        table.add_row(*(cells[c] for c in cols))
    return table


def stages_table(rows: list[dict], title: str, wide: bool = False):
    """Each stage's ms (wide: with its share of the stage sum); * marks a projected stage."""
    cols = ["pipeline", "batch", *[STAGE_TITLES[s] for s in STAGES], "sum", "e2e"]
    table = _table(title, (["model"] if wide else []) + cols, left=("model", "pipeline"))
    for r in rows:
        if not r["stages"]:
            continue
        cells = []
        for s in STAGES:
            st = r["stages"].get(s)
            text = "-" if st is None else f"{st['ms']:.1f}" + (f" ({100 * st['share']:.0f}%)" if wide else "")
            cells.append(text + ("*" if st is not None and st["projected"] else ""))
        total = sum(st["ms"] for st in r["stages"].values())
        e2e = f"{r['latency_ms']['p50_ms']:.1f}" if r["latency_ms"] else "-"
        label = [r["model"]] if wide else []
        table.add_row(*label, r["pipeline"], str(r["batch_size"]), *cells, f"{total:.1f}", e2e)
    return table


def claims_table(claims: list[dict], title: str, notes: Notes, wide: bool = False):
    """--compare: samples/s, speed-up over DiT-XL/2 (median of interleaved ratios), the paper's speed-up."""
    cols = ["protocol", "model", "res", "samples/s", "vs DiT", "paper", "note"]
    if wide:
        cols = ["protocol", "model", "res", "steps", "pipeline", "batch", "samples/s", "vs DiT", "p20-p80",
                "paper samples/s", "paper", "note"]
    table = _table(title, cols, left=("protocol", "model", "pipeline", "note"), caption=notes.caption())
    for c in claims:
        cells = {"protocol": c["protocol"], "model": c["label"], "res": str(c["resolution"]),
                 "steps": str(c["steps"] or "-"), "batch": str(c["batch_size"]),
                 "pipeline": f"{c['pipeline']} {short_dtype(c)}",
                 "samples/s": fmt_rate(c["samples_per_s"]) if c["status"] == "ok" else c["status"].upper(),
                 "vs DiT": fmt_ratio(c["speedup_vs_dit"], ".1f"),
                 "p20-p80": fmt_spread(c["speedup_vs_dit_p20"], c["speedup_vs_dit_p80"], lambda v: f"{v:.1f}"),
                 "paper samples/s": fmt(c["paper_samples_per_s"], ".1f"),
                 "paper": fmt_ratio(c["paper_speedup_vs_dit"], ".0f"), "note": notes.mark(c)}
        table.add_row(*(cells[k] for k in cols))
    return table


def environment_table(env: dict, usage: dict | None = None):
    from rich.table import Table

    table = Table(title="environment", title_justify="left", show_header=False, box=None, padding=(0, 1))
    table.add_column("key", no_wrap=True)
    table.add_column("value")
    for key in ("device_name", "torch", "triton", "cuda", "cpu_threads", "git_sha", "timestamp"):
        dirty = " + uncommitted changes" if key == "git_sha" and env.get("git_dirty") else ""
        table.add_row(key, str(env.get(key)) + dirty)
    if env.get("extra_packages"):
        table.add_row("packages", ", ".join(f"{k} {v}" for k, v in env["extra_packages"].items()))
    if usage:
        load = "-" if usage["load_avg_1m"] is None else f"{usage['load_avg_1m']:.1f}"
        table.add_row("cpu share", f"{100 * (usage['cpu_share'] or 0):.0f}% of {usage['threads']} threads; load "
                                   f"average {load} on {usage['cores']} cores")
    if env.get("ceilings"):
        table.add_row("ceilings", ceilings_summary(env["ceilings"]).removeprefix("measured ceilings: "))
    for key, value in _nvml_lines(env):
        table.add_row(key, value)
    return table


def ceilings_summary(ceilings: dict) -> str:
    """One line: the measured matmul TFLOP/s per math mode and the copy GB/s (titok_bench.harness.ceilings)."""
    parts = []
    for key, entry in ceilings["matmul"].items():
        parts.append(f"{key} {entry['tflops']:.3g}" if entry.get("tflops") else f"{key} failed")
    copy = ceilings["copy"]
    copy_text = f"copy {copy['gbps']:.0f} GB/s" if copy.get("gbps") else "copy failed"
    where = "CPU, " if ceilings["device_type"] == "cpu" else ""
    return (f"measured ceilings: matmul TFLOP/s {', '.join(parts)}; {copy_text} ({where}"
            f"{ceilings['seconds']:.1f} s)")


def _nvml_lines(env: dict) -> list[tuple[str, str]]:
    nvml, out = env.get("nvml"), []
    if nvml and nvml.get("static"):
        st = nvml["static"]
        out.append(("nvml", f"driver {st.get('driver')}, max SM {st.get('max_sm_clock_mhz')} MHz, max mem "
                            f"{st.get('max_mem_clock_mhz')} MHz, power limit {st.get('power_limit_w')} W"))
    run = (nvml or {}).get("during_run")
    if run:
        for field, unit, scale in (("sm_clock_mhz", "MHz", 1), ("mem_clock_mhz", "MHz", 1), ("power_w", "W", 1),
                                   ("temperature_c", "C", 1), ("memory_used_bytes", "GiB", 2**30)):
            s = run.get(field)
            if s:
                out.append((f"{field} (run)", f"min {s['min'] / scale:.0f} / median {s['p50'] / scale:.0f} / "
                                              f"max {s['max'] / scale:.0f} {unit}"))
    elif env.get("device_type") == "cuda":
        out.append(("nvml", "not available (no pynvml, or NVML did not answer)"))
    return out


def claims_rows(rows: list[dict], protocols: list[str]) -> list[dict]:
    """The claims table: each measured row with its speed-up over DiT-XL/2 (same resolution, protocol and batch:
    the median of the interleaved per-iteration ratios) and the paper's figures."""
    from titok_bench.harness.models import SPECS

    out = []
    for protocol in protocols:
        mine = [r for r in rows if r["protocol"] == protocol]
        dit_paper = {r["resolution"]: SPECS[r["model"]].paper_samples_per_s for r in mine if r["family"] == "dit"}
        for r in mine:
            spec, sp = SPECS[r["model"]], r.get("speedup") or {}
            ref_paper = dit_paper.get(r["resolution"])
            out.append({"protocol": protocol, "label": r["label"], "model": r["model"], "resolution": r["resolution"],
                        "pipeline": r["pipeline"], "dtype": r["dtype"], "tf32": r["tf32"],
                        "batch_size": r["batch_size"], "steps": r["full_steps"], "samples_per_s": r["samples_per_s"],
                        "speedup_vs_dit": sp.get("p50"), "speedup_vs_dit_p20": sp.get("p20"),
                        "speedup_vs_dit_p80": sp.get("p80"), "paper_samples_per_s": spec.paper_samples_per_s,
                        "paper_speedup_vs_dit": (spec.paper_samples_per_s / ref_paper
                                                 if spec.paper_samples_per_s and ref_paper else None),
                        "paper_source": spec.paper_source, "projected_from_steps": r["projected_from_steps"],
                        "status": r["status"], "message": r["message"], "warnings": r.get("warnings") or []})
    return out


def print_report(console, payload: dict, *, stages: bool, notes: list[str], wide: bool = False) -> None:
    """A sampling result file as tables: environment, results (or claims), stages, footnotes, notes."""
    env, rows, claims = payload["environment"], payload["results"], payload.get("claims")
    measured = any(r["status"] == "ok" for r in rows)   # else the run's own busy warnings stand for the rows'
    marks = Notes(rows, [] if measured else payload["config"]["warnings"])
    console.print(environment_table(env, payload["config"]["cpu_usage"]))
    cpu = env["device_type"] == "cpu"
    where = env["device_name"] + (" (CPU: not the paper's GPU figures)" if cpu else "")
    if claims is not None:
        console.print(claims_table(claims, f"speed claims on {where}; paper: A100, float32", marks, wide))
    else:
        title = f"{rows[0]['model'] if rows else ''}: samples/s on {where}"
        console.print(results_table(rows, title, marks, wide))
    if stages and any(r["stages"] for r in rows):
        console.print(stages_table(rows, "ms per stage, each alone (* projected)", wide))
    reasons = dict.fromkeys(f"{r['pipeline']} {r['dtype']}: {r['dtype_reason']}" for r in rows
                            if r.get("dtype_reason") and r.get("dtype_reason") != "given")
    for line in marks.lines() + [f"dtype: {n}" for n in reasons] + [f"note: {n}" for n in notes]:
        console.print(line, markup=False)
    if cpu:
        console.print(f"[bold yellow]{CPU_NOTICE}[/]")


def tokens_table(rows: list[dict], title: str, notes: Notes, wide: bool = False):
    """--compare tokens: samples/s per (task, K, pipeline), the speed-up over the reference, the peak memory."""
    cols = ["task", "K", "pipeline", "batch", "samples/s", "vs ref", "peak mem", "note"]
    if wide:
        cols = [*cols[:5], "p20-p80", "ms/call", "vs ref", "p20-p80 ", "peak mem", "GFLOP/img", "note"]
    table = _table(title, cols, left=("task", "pipeline", "note"), caption=notes.caption())
    for r in rows:
        sp, lat, mem = r.get("speedup") or {}, r["latency_ms"], r.get("peak_mem_bytes")
        cells = {"task": r["task"], "K": str(r["num_tokens"]), "pipeline": f"{r['pipeline']} {short_dtype(r)}",
                 "batch": str(r["batch_size"]),
                 "samples/s": fmt_rate(r["samples_per_s"]) if r["status"] == "ok" else r["status"].upper(),
                 "p20-p80": fmt_spread(r["samples_per_s_p20"], r["samples_per_s_p80"]),
                 "ms/call": "-" if lat is None else f"{lat['p50_ms']:.1f}",
                 "vs ref": fmt_ratio(sp.get("p50")), "p20-p80 ": fmt_spread(sp.get("p20"), sp.get("p80"), fmt),
                 "peak mem": "-" if mem is None else f"{mem / 2**20:.0f} MiB",
                 "GFLOP/img": fmt(r.get("gflop_per_image"), ".1f"), "note": notes.mark(r)}
        table.add_row(*(cells[c] for c in cols))
    return table


def token_ratio_table(ratios: list[dict], title: str):
    """K=32 over K=256: the interleaved pair group's rates and median ratio (p20-p80), the sweep's ratio, the
    paper's pair."""
    pairs = "; ".join(dict.fromkeys(f"{r['task']} {r['paper_samples_per_s_small']:g} / "
                                    f"{r['paper_samples_per_s_large']:g}" for r in ratios))
    table = _table(title, ["task", "pipeline", "K=32", "K=256", "ratio", "p20-p80", "sweep", "paper"],
                   left=("task", "pipeline"), caption=f"paper (K=32 / K=256 samples/s/gpu): {pairs}")
    for r in ratios:
        table.add_row(r["task"], r["pipeline"], fmt_rate(r["samples_per_s_small"]), fmt_rate(r["samples_per_s_large"]),
                      fmt_ratio(r["ratio"], ".1f"), fmt_spread(r["ratio_p20"], r["ratio_p80"], lambda v: f"{v:.1f}"),
                      fmt_ratio(r["sweep_ratio"], ".1f"), fmt_ratio(r["paper_ratio"], ".1f"))
    return table


def print_tokens_report(console, payload: dict, *, notes: list[str], wide: bool = False) -> None:
    """A --compare tokens result file as tables: environment, rows per K, the K=32 / K=256 ratios, notes."""
    env, rows, cfg = payload["environment"], payload["results"], payload["config"]
    measured = any(r["status"] == "ok" for r in rows)
    marks = Notes(rows, [] if measured else cfg["warnings"])
    console.print(environment_table(env, cfg["cpu_usage"]))
    cpu = env["device_type"] == "cpu"
    where = env["device_name"] + (" (CPU: not the paper's GPU figures)" if cpu else "")
    console.print(tokens_table(rows, f"samples/s against the number of tokens K on {where}", marks, wide))
    if payload.get("token_ratios"):
        console.print(token_ratio_table(payload["token_ratios"], "K=32 over K=256 (both timed interleaved; sweep: "
                                        "the rows above); paper: A100, samples/s/gpu"))
    sweep = cfg.get("sweep") or {}
    models = sweep.get("models") or {}
    if models:
        s = models["sampler"]
        console.print(f"models: tokenizer {models['tokenizer']}; generator {models['generator']}; sampling "
                      f"{s['num_steps']} steps, guidance {s['guidance_scale']} ({s['guidance_decay']} decay), "
                      f"temperature {s['randomize_temperature']}; random weights", markup=False, highlight=False)
    console.print("peak mem: the allocation peak of one more call above what was live before it (weights, "
                  "optimizer state, inputs excluded)", markup=False, highlight=False)
    for line in marks.lines() + [f"note: {n}" for n in notes]:
        console.print(line, markup=False)
    if cpu:
        console.print(f"[bold yellow]{CPU_NOTICE}[/]")
