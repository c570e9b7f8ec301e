"""The row loop: time the pipelines of a group INTERLEAVED, record failures as rows, time the stages.

A group is what one comparison needs side by side (the pipelines of one model at one batch size;
with --compare, the models of one resolution, protocol and batch size). For each job of a group:
build its runner, run its warm-up calls (outside the timed region; they also absorb torch.compile
compilation and CUDA-graph capture; peak memory is read over them). Then the timed iterations go
round the jobs, A B C A B C ..., so that a change in the machine's speed (clocks, other load)
falls on all of them alike; each job's row gets its per-iteration times, and a speed-up over the
group's baseline is the median of the per-iteration ratios (p20-p80 beside it). Achieved TFLOP/s is
read against the datasheet peak (`fraction_of_peak`) and, when the run measured them
(`Settings.ceilings`, titok_bench.harness.ceilings), against this device's measured matmul rate in
the same math mode (`fraction_of_measured`). The group's CPU share and load average (and NVML
readings on a GPU) are recorded on its rows, with warnings when the machine was busy or when the
stage times (each stage alone, after the interleaved loop) sum to more than STAGE_DISAGREEMENT away
from the end-to-end time.

Out-of-memory in a job makes an "oom" row (the others go on); other exceptions "error" rows.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
import traceback
import warnings
from typing import Callable

import torch

from titok_bench.harness.ceilings import measured_tflops
from titok_bench.harness.env import (CpuWindow, busy_warnings, device_peaks, free_device_memory, is_out_of_memory,
                                     peak_memory_bytes, peak_memory_reset)
from titok_bench.harness.models import SPECS, TINY_OF_FAMILY, ModelSpec, class_ids
from titok_bench.harness.timing import Stopwatch, pair_ratios, summarize_ms, time_fn

STAGES = ("generator_forwards", "sampling_steps", "vit_decoder", "pixel_decoder")
STAGE_DISAGREEMENT = 0.25
ROW_FIGURES = ("samples_per_s", "samples_per_s_p20", "samples_per_s_p80", "latency_ms", "iteration_ms", "speedup",
               "stages", "peak_memory_bytes", "gflop_per_image", "gflop_by_stage", "achieved_tflops", "peak_tflops",
               "fraction_of_peak", "measured_tflops", "fraction_of_measured", "projected_from_steps", "projection",
               "nvml", "cpu_usage")


@dataclasses.dataclass
class Settings:
    device: torch.device
    iters: int
    warmup: int
    stages: bool
    stage_iters: int
    stage_warmup: int
    tf32: bool
    ceilings: dict | None = None    # measured ceilings (titok_bench.harness.ceilings), None: not measured


def project_ms(sampling_ms: float, decode_ms: float, measured_units: int, full_units: int) -> float:
    """Projected end-to-end time: the decode as measured + the sampling part scaled linearly.

    `units` are what the sampling cost is linear in: generator forwards per image for MaskGIT
    samplers (a guided step runs two, an unguided one), transformer calls (one doubled batch per
    step) for DiT.
    """
    if measured_units < 1 or full_units < measured_units:
        raise ValueError(f"cannot project {measured_units} measured units to {full_units}")
    return decode_ms + sampling_ms * (full_units / measured_units)


def peak_key(dtype: torch.dtype, tf32: bool) -> str:
    """Which of the device's dense peaks applies to a run in this dtype."""
    if dtype == torch.float32:
        return "tf32" if tf32 else "fp32"
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


@contextlib.contextmanager
def tf32_mode(enabled: bool):
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def dtype_name(dtype) -> str | None:
    return None if dtype is None else str(dtype).replace("torch.", "")


def empty_row(spec: ModelSpec, mode: str, dtype, batch: int, protocol: str | None) -> dict:
    """A result row with every field present and no figures yet."""
    row = {"model": spec.key, "label": spec.label, "family": spec.family, "resolution": spec.resolution,
           "protocol": protocol, "pipeline": mode, "dtype": dtype_name(dtype), "dtype_reason": None, "tf32": False,
           "cuda_graph": False,
           "batch_size": batch, "call_batch": None, "warmup": None, "steps": None, "full_steps": None, "generator_forwards": None,
           "status": "ok", "message": None, "warnings": []}
    row.update({key: None for key in ROW_FIGURES})
    return row


def fail_row(row: dict, exc: BaseException | None, message: str | None = None) -> dict:
    """Mark a row "oom" or "error" (with the exception's first line, and a short traceback for errors)."""
    oom = exc is not None and is_out_of_memory(exc)
    row["status"] = "oom" if oom else "error"
    if message is None:
        text = str(exc).strip()
        message = f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"
    row["message"] = message
    if exc is not None and not oom:
        row["traceback"] = traceback.format_exc(limit=8)
    row.update({key: None for key in ROW_FIGURES if key not in ("gflop_per_image", "gflop_by_stage")})
    return row


@dataclasses.dataclass
class Job:
    """One row of a group: a (model, mode, dtype, batch) and what timing it needs."""

    spec: ModelSpec
    mode: str
    dtype: torch.dtype | None
    batch: int
    protocol: str | None = None
    project_steps: int | None = None
    row: dict = None
    runner: object = None
    chain: list = None
    records: list = dataclasses.field(default_factory=list)
    projected: bool = False

    def __post_init__(self):
        self.row = empty_row(self.spec, self.mode, self.dtype, self.batch, self.protocol)

    @property
    def ok(self) -> bool:
        return self.row["status"] == "ok"

    def fail(self, exc: BaseException, device) -> None:
        fail_row(self.row, exc)
        self.runner = self.chain = None
        free_device_memory(device)


def prepare(job: Job, models, settings: Settings) -> None:
    """Build the job's runner, fill its row's static figures, run its warm-up calls (peak memory over them)."""
    spec, row, device = job.spec, job.row, settings.device
    job.projected = job.project_steps is not None and job.project_steps < spec.full_steps(models)
    # A projected run uses no CUDA graph: the graph would fold the decode into the sampling part.
    runner = job.runner = spec.runner(models, job.mode, job.dtype, job.project_steps if job.projected else None,
                                      not job.projected)
    flops = runner.flops()
    # Every runner runs the row's whole batch in one call (PipelineRunner turns the pipeline's chunking off;
    # DiTRunner never chunks): the row records the batch of one call.
    call_batch = getattr(runner, "call_batch", None)
    row.update(call_batch=call_batch(job.batch) if call_batch else job.batch,
               dtype=dtype_name(runner.dtype), dtype_reason=runner.describe().get("dtype_reason"),
               cuda_graph=bool(runner.cuda_graph), steps=runner.steps,
               full_steps=runner.describe()["full_steps"], generator_forwards=flops["generator_forwards"],
               gflop_per_image=flops["total"] / 1e9,
               gflop_by_stage={k: flops[k] / 1e9 for k in ("generator", "vit_decoder", "pixel_decoder")})
    cls = class_ids(job.batch, spec.num_classes, device)
    first = runner.sample if job.projected else runner.generate
    job.chain = [lambda: first(cls)] + ([runner.decode] if job.projected else [])
    # torch.compile compiles and a CUDA graph is captured on the first call: never inside the timed region.
    row["warmup"] = warmup = settings.warmup if job.mode != "compile" and not runner.cuda_graph else \
        max(1, settings.warmup)
    watch = Stopwatch(device)
    peak_memory_reset(device)
    for _ in range(warmup):
        watch.run(job.chain)
    row["peak_memory_bytes"] = peak_memory_bytes(device) if warmup else None


def finish(job: Job, watch: Stopwatch, settings: Settings) -> tuple[float, float]:
    """Per-iteration times -> the row's figures; returns the stage scales (units ratio, steps ratio)."""
    row, runner, batch = job.row, job.runner, job.batch
    parts = [watch.read(r) for r in job.records]
    ratio_units = ratio_steps = 1.0
    if not job.projected:
        totals = [p[0] for p in parts]
    else:
        units, full_units = runner.units(), runner.full_units()
        totals = [project_ms(s, d, units, full_units) for s, d in parts]
        ratio_units, ratio_steps = full_units / units, row["full_steps"] / runner.steps
        row["projected_from_steps"] = runner.steps
        row["projection"] = {
            "measured_steps": runner.steps, "full_steps": row["full_steps"], "measured_units": units,
            "full_units": full_units,
            "units": "transformer calls" if job.spec.family == "dit" else "generator forwards per image",
            "sampling_ms_measured": summarize_ms([p[0] for p in parts]).p50_ms,
            "decode_ms": summarize_ms([p[1] for p in parts]).p50_ms}
    timing = summarize_ms(totals)
    row["iteration_ms"] = totals
    row["latency_ms"] = timing.as_dict()
    row["samples_per_s"] = batch / (timing.p50_ms / 1e3)
    row["samples_per_s_p20"] = batch / (timing.p80_ms / 1e3)   # slower iterations -> lower throughput
    row["samples_per_s_p80"] = batch / (timing.p20_ms / 1e3)
    row["achieved_tflops"] = row["gflop_per_image"] * 1e9 * batch / (timing.p50_ms / 1e3) / 1e12
    peaks = device_peaks(settings.device)
    if peaks is not None:
        row["peak_tflops"] = peaks["tflops"][peak_key(runner.dtype, row["tf32"])]
        row["fraction_of_peak"] = row["achieved_tflops"] / row["peak_tflops"]
    measured = measured_tflops(settings.ceilings, peak_key(runner.dtype, row["tf32"]))
    if measured:
        row["measured_tflops"] = measured
        row["fraction_of_measured"] = row["achieved_tflops"] / measured
    return ratio_units, ratio_steps


def time_stages(job: Job, settings: Settings, scales: tuple[float, float]) -> None:
    """Each stage alone on fixed inputs (`stage_functions`); projected rows scale the sampling stages."""
    ratio_units, ratio_steps = scales
    stage_ms = {}
    try:
        for name, fn in job.runner.stage_functions(job.batch).items():
            t = time_fn(fn, device=settings.device, warmup=settings.stage_warmup, iters=settings.stage_iters)
            scale = {"generator_forwards": ratio_units, "sampling_steps": ratio_steps}.get(name, 1.0)
            stage_ms[name] = (t.p50_ms * scale, job.projected and name in ("generator_forwards", "sampling_steps"))
    except Exception as exc:  # noqa: BLE001 - keep the end-to-end figures when only a stage runs out
        if not is_out_of_memory(exc):
            raise
        job.row["message"] = f"stage timing ran out of memory ({type(exc).__name__}); end-to-end figures kept"
        free_device_memory(settings.device)
        return
    total = sum(ms for ms, _ in stage_ms.values()) or 1.0
    job.row["stages"] = {k: {"ms": ms, "share": ms / total, "projected": p} for k, (ms, p) in stage_ms.items()}


def stage_warning(row: dict) -> str | None:
    """A warning when the summed stage times and the end-to-end time are more than STAGE_DISAGREEMENT apart."""
    if not row["stages"] or not row["latency_ms"]:
        return None
    total, e2e = sum(s["ms"] for s in row["stages"].values()), row["latency_ms"]["p50_ms"]
    gap = (total - e2e) / e2e
    if abs(gap) <= STAGE_DISAGREEMENT:
        return None
    why = " (stages run eagerly; end-to-end replays a CUDA graph)" if row["cuda_graph"] else ""
    return f"stage sum {total:.1f} ms vs end-to-end {e2e:.1f} ms ({100 * gap:+.0f}%){why}"


def _finish_job(job: Job, watch: Stopwatch, settings: Settings, usage: dict, nvml: dict | None) -> None:
    row = job.row
    scales = finish(job, watch, settings)
    row["cpu_usage"], row["nvml"] = usage, nvml
    row["warnings"] = busy_warnings(usage)
    if settings.stages:
        time_stages(job, settings, scales)
        warning = stage_warning(row)
        if warning:
            row["warnings"].append(warning)


def measure_group(jobs: list[Job], models_of: dict, settings: Settings, monitor,
                  is_baseline: Callable[[dict], bool]) -> list[dict]:
    """Warm up every job, time them interleaved, then their stages; speed-ups over the baseline row."""
    device = settings.device
    tf32 = settings.tf32 and device.type == "cuda"
    watch = Stopwatch(device)
    with tf32_mode(tf32), torch.no_grad():
        for job in jobs:
            job.row["tf32"] = tf32
            try:
                prepare(job, models_of[job.spec.key], settings)
            except Exception as exc:  # noqa: BLE001 - a harness records the failure and goes on
                job.fail(exc, device)
        window, start = CpuWindow.start(device), monitor.mark()
        run_interleaved(jobs, settings.iters, watch, device, lambda job: job.chain)
        usage, nvml = window.stop(), monitor.summary(start, monitor.mark())
        for job in [j for j in jobs if j.ok]:
            try:
                _finish_job(job, watch, settings, usage, nvml)
            except Exception as exc:  # noqa: BLE001
                job.fail(exc, device)
    add_speedups([j.row for j in jobs], is_baseline)
    for job in jobs:
        job.runner = job.chain = job.records = None
    free_device_memory(device)
    return [j.row for j in jobs]


def run_interleaved(jobs: list, iters: int, watch: Stopwatch, device, chain_of: Callable) -> None:
    """The timed loop: `iters` rounds over the jobs still ok (A B C A B C ...), each round's record appended to
    the job's `records`; a job that raises is failed (`job.fail(exc, device)`) and leaves the later rounds."""
    for _ in range(iters):
        for job in [j for j in jobs if j.ok]:
            try:
                job.records.append(watch.run(chain_of(job)))
            except Exception as exc:  # noqa: BLE001 - a harness records the failure and goes on
                job.fail(exc, device)
    watch.sync()


def add_speedups(rows: list[dict], is_baseline: Callable[[dict], bool]) -> None:
    """Each ok row's speed-up over the group's baseline row: median (p20, p80) of per-iteration ratios."""
    base = next((r for r in rows if is_baseline(r) and r["status"] == "ok"), None)
    for r in rows:
        ratios = pair_ratios(base["iteration_ms"], r["iteration_ms"]) if base and r["status"] == "ok" else None
        r["speedup"] = None if ratios is None else {"baseline": f"{base['model']} {base['pipeline']}", **ratios}


def prime_process(jobs: list[Job], device: torch.device, say: Callable[[str], None]) -> bool:
    """Run the tiny model of each family in the plan once, in each non-compile mode it will run in.

    With no warm-up call per row (the CPU --compare default), one-time process initialisation
    would otherwise be timed in the first row that meets it: lazy imports, the first call of a
    custom op (about 2.6 s for the maskgit_step op on a 2-core CPU), oneDNN / cuBLAS set-up.
    """
    t0, done = time.perf_counter(), True
    for family in dict.fromkeys(j.spec.family for j in jobs):
        tiny = SPECS[TINY_OF_FAMILY[family]]
        modes = sorted({j.mode for j in jobs if j.spec.family == family} - {"compile"}) or ["reference"]
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                models = tiny.build(device)
                cls = class_ids(1, tiny.num_classes, device)
                for mode in modes:
                    runner = tiny.runner(models, mode, None, None, True)
                    runner.decode(runner.sample(cls))
                    runner.generate(cls)
        except Exception as exc:  # noqa: BLE001 - the real rows will report the problem
            done = False
            say(f"note: priming with {tiny.key} failed ({type(exc).__name__}); the first row may include "
                "one-time initialisation")
    free_device_memory(device)
    say(f"primed the process with the tiny models in {time.perf_counter() - t0:.1f} s (no per-row warm-up)")
    return done
