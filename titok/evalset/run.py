"""`titok sample`: the run (plan, manifest, shards dealt to the ranks, assembly, summary)."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from titok.errors import TiTokInputError
from titok.evalset.archive import assemble, read_npz_header
from titok.evalset.dist import DistContext, init_distributed
from titok.evalset.manifest import _flatten, _other_settings, _remove_stale_temporaries, prepare_output, read_manifest, settings_differences, weights_digest
from titok.evalset.plan import EvalPlan, Layout, parse_classes
from titok.evalset.progress import Reporter, _test_exit_after
from titok.evalset.shards import _save_shard, generate_shard
from titok.noise import MAX_ELEMENTS, MAX_INDEX, MAX_STEPS, NOISE_SCHEME


def run_sample(request) -> int:
    """Make (or resume) the evaluation set `request` (a `SampleSettings`) asks for: the `titok sample` command,
    callable from Python; returns the exit status (0 done, 130 interrupted); bad input raises TiTokInputError."""
    import signal

    ctx = None
    previous = None
    try:
        if _is_main_thread():
            def on_term(signum, frame):  # torchrun stops the other ranks with SIGTERM: clean up, then exit
                raise SystemExit(128 + signum)
            previous = signal.signal(signal.SIGTERM, on_term)
        ctx, device = init_distributed(request.device)
        return _sample(request, ctx, device)
    except TiTokInputError:
        if ctx is not None and ctx.rank != 0:
            raise SystemExit(2)  # rank 0 says it; the others exit quietly
        raise
    except KeyboardInterrupt:
        if ctx is not None and ctx.rank != 0:
            raise SystemExit(130)
        print("titok: interrupted; the finished shards are kept: run the same command to resume", file=sys.stderr)
        return 130
    finally:
        if ctx is not None:
            ctx.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _sample(request, ctx: DistContext, device) -> int:
    """One rank's part of `titok sample`: agree on the work left, make my shards, rank 0 assembles."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from titok.images import save_png

    t_start = time.perf_counter()
    if ctx.rank != 0:
        warnings.simplefilter("ignore")  # one voice: rank 0's
    # The output folder first: a finished run of the same command, or other settings, are answered before any
    # model loads (a model load takes tens of seconds); the full comparison follows once the models are loaded.
    verdict = ctx.broadcast(_early_verdict(request, device) if ctx.rank == 0 else None)
    if verdict is None:
        job = _build_job(request, device)
        verdict = ctx.broadcast(_verdict(job, request) if ctx.rank == 0 else None)
    status, message, pending, settings = verdict
    if status == "error":
        raise TiTokInputError(message)
    if status == "complete":
        if ctx.rank == 0:
            print(f"titok sample: {message}; nothing to do", file=sys.stderr)
        return 0
    plan, layout = job.plan, job.layout
    done_before = plan.num_samples - sum(plan.shard_range(j)[1] - plan.shard_range(j)[0] for j in pending)
    reporter = Reporter(ctx, plan.num_samples, done_before, _console_if_main(ctx))
    t_gen = time.perf_counter()
    # PNG encoding overlaps the generation; on a CPU device it competes with it for the cores: one thread.
    pool = ThreadPoolExecutor(max_workers=4 if device.type == "cuda" else 1) if not request.no_png else None
    try:
        _make_shards(job, request, ctx, pending[ctx.rank::ctx.world_size], reporter, pool)
        if ctx.rank != 0:
            return 0
        _wait_for_shards(job, ctx, pending, done_before, reporter)
        t_assemble = time.perf_counter()
        written = assemble(layout, image_shape=(job.tok.image_size, job.tok.image_size, 3),
                           seq_len=job.gen.cfg.image_seq_len,
                           write_png=(lambda i, c, im: save_png(layout.png(i, c), im)) if pool else None)
    finally:
        reporter.close()
        if pool is not None:
            pool.shutdown(wait=True)
    run = _run_record(job, ctx, device, plan.num_samples - done_before, done_before,
                      t_start, t_gen, t_assemble, time.perf_counter())
    _finish(job, request, ctx, settings, written, run)
    return 0


@dataclasses.dataclass
class _Job:
    """What one `titok sample` run works with (models, pipeline, plan, output layout)."""

    tok: object
    gen: object
    pipe: object
    plan: "EvalPlan"
    layout: "Layout"
    classes: list
    batch_size: int


def _build_job(request, device) -> _Job:
    """Load the models, build the pipeline and the plan; every input error before any work."""
    from titok.cli import options

    tok, gen, pipe = options.load_generation(request, device)
    classes = parse_classes(request.classes, gen.cfg.num_classes)
    plan = EvalPlan(tuple(classes), request.num_per_class, request.shard_size)
    if plan.num_samples >= MAX_INDEX:
        raise TiTokInputError(f"{plan.num_samples} samples: at most {MAX_INDEX - 1} per run")
    if gen.cfg.image_seq_len * gen.cfg.codebook_size >= MAX_ELEMENTS:
        raise TiTokInputError("this generator's K x V is too large for the sampling noise counters")
    if len(pipe.scheduler) > MAX_STEPS:  # steps 0..MAX_STEPS-1: the counter's step field
        raise TiTokInputError(f"{len(pipe.scheduler)} sampling steps: titok sample takes at most {MAX_STEPS} "
                              "(--steps)")
    batch_size = request.batch_size or (64 if device.type == "cuda" else 8)
    return _Job(tok, gen, pipe, plan, Layout(Path(request.out), plan, gen.cfg.num_classes), classes, batch_size)


def _verdict(job: _Job, request):
    """Rank 0: (status, message, pending shards, settings) of the output folder against these settings."""
    tok, gen, pipe, plan, layout = job.tok, job.gen, job.pipe, job.plan, job.layout
    settings = {
        "model": {"tokenizer_config": dataclasses.asdict(tok.cfg), "generator_config": dataclasses.asdict(gen.cfg),
                  "weights_sha256": weights_digest(tok, gen)},
        "sampler": dataclasses.asdict(pipe.sampler),
        "classes": _compact_ranges(job.classes), "num_per_class": plan.num_per_class,
        "num_samples": plan.num_samples, "order": "sample i has class classes[i % len(classes)]",
        "seed": request.seed, "noise": NOISE_SCHEME, "mode": pipe.mode,
        "dtype": str(pipe.dtype).replace("torch.", ""), "device_type": pipe.device.type,
        "compute": "one intra-op thread per work item" if pipe.device.type == "cpu" else "device default",
        "decode_batch_size": request.decode_batch_size, "shard_size": plan.shard_size,
        "image_size": tok.image_size, "png": not request.no_png,
    }
    status, message = prepare_output(layout, settings, _sources(request))
    pending = []
    if status in ("new", "resume"):
        _remove_stale_temporaries(layout)
        done = layout.done_shards()
        pending = [j for j in range(plan.num_shards) if j not in done]
    if status == "complete":
        message = _complete(layout, plan.num_samples)
    return status, message, pending, settings


def _complete(layout: Layout, num_samples: int) -> str:
    return f"{layout.out} is complete ({num_samples} samples in {layout.npz})"


def _sources(request) -> dict:
    """Where the weights come from (recorded in the manifest): the sources as given and, under "files", [path,
    size, mtime_ns] of each file they resolve to now (None when one cannot be resolved)."""
    from titok.loading import source_files

    files = []
    try:
        for src in (getattr(request, "tokenizer", None), request.generator):
            if src is not None:
                for path in source_files(src):
                    st = path.stat()
                    files.append([str(path), st.st_size, st.st_mtime_ns])
    except (TiTokInputError, OSError):
        files = None
    return {"tokenizer": getattr(request, "tokenizer", None), "generator": request.generator,
            "variant": request.model, "random_weights": bool(request.random_weights), "files": files}


def _early_verdict(request, device):
    """Rank 0, before any model loads: the verdict (as `_verdict`'s) when the output folder answers alone:
    ("error", ...) when a setting the command line fixes differs from the manifest's (seed, classes, sizes,
    mode, dtype, device type, sampler overrides, ...) or the manifest cannot be resumed; ("complete", ...)
    when samples.npz exists and the sources resolve to the same files, unchanged (size, mtime) as recorded.
    None otherwise (no manifest, a resume, changed files): `_verdict` decides once the models are loaded."""
    from titok.runtimes import default_dtype

    out = Path(request.out)
    manifest = out / "manifest.json"  # Layout.manifest (a Layout needs the classes, which need the manifest)
    if not manifest.is_file():
        return None
    old, error = read_manifest(manifest, out)
    if old is None:
        return "error", error, [], None
    old_settings = _flatten(old["settings"])
    try:
        num_classes = int(old_settings["model.generator_config.num_classes"])
        classes = parse_classes(request.classes, num_classes)
    except (TiTokInputError, KeyError, TypeError, ValueError):
        return None  # the full path names the error
    layout = Layout(out, EvalPlan(tuple(classes), request.num_per_class, request.shard_size), num_classes)
    dtype = request.dtype or str(default_dtype(request.mode, device)[0]).replace("torch.", "")
    here = {
        "classes": _compact_ranges(classes), "num_per_class": request.num_per_class,
        "num_samples": len(classes) * request.num_per_class, "order": "sample i has class classes[i % len(classes)]",
        "seed": request.seed, "noise": NOISE_SCHEME, "mode": request.mode, "dtype": dtype, "device_type": device.type,
        "compute": "one intra-op thread per work item" if device.type == "cpu" else "device default",
        "decode_batch_size": request.decode_batch_size, "shard_size": request.shard_size, "png": not request.no_png,
    }
    for key, value in (("guidance_scale", request.guidance_scale), ("randomize_temperature", request.temperature),
                       ("num_steps", request.steps)):
        if value is not None:
            here[f"sampler.{key}"] = value
    here = json.loads(json.dumps(here))
    diffs = settings_differences({k: old_settings.get(k, "<unset>") for k in here}, here)
    if diffs:
        return "error", _other_settings(out, diffs), [], None
    sources = json.loads(json.dumps(_sources(request)))
    if layout.npz.is_file() and sources["files"] is not None and old.get("sources") == sources:
        return "complete", _complete(layout, layout.plan.num_samples), [], old["settings"]
    return None


def _console_if_main(ctx):
    from titok.cli import options

    return options.console(stderr=True) if ctx.rank == 0 else None


def _make_shards(job: _Job, request, ctx, mine: list, reporter, pool) -> None:
    """Generate and save this rank's shards (PNGs written by the pool as they come)."""
    import torch

    from titok.cli import options
    from titok.images import save_png

    futures = []
    exit_after = _test_exit_after()

    def write_png(index, label, image):
        futures.append(pool.submit(save_png, job.layout.png(index, label), image.copy()))

    with torch.no_grad():
        for count, j in enumerate(mine, 1):
            images, labels, tokens = generate_shard(
                job.pipe, job.plan, request.seed, j, batch_size=job.batch_size, decode_batch=request.decode_batch_size,
                on_done=reporter.advance, write_png=write_png if pool else None,
                check=lambda x: options.check_finite(x, "pixels", request))
            for f in futures:
                f.result()
            futures.clear()
            _save_shard(job.layout.shard(j), images, labels, tokens, job.plan.shard_range(j)[0])
            if exit_after is not None and exit_after == (ctx.rank, count):
                os._exit(3)  # the test hook: a crash right after a shard


def _wait_for_shards(job: _Job, ctx, pending: list, done_before: int, reporter) -> None:
    """Rank 0 waits for every shard (the other ranks may still work), showing the job's progress."""
    plan, layout = job.plan, job.layout
    for poll in range(10**12):
        remaining = [j for j in pending if not layout.shard(j).is_file()]
        if not remaining:
            break
        count = ctx.add_done(0)
        reporter.refresh(count, shard_count=sum(plan.shard_range(j)[1] - plan.shard_range(j)[0]
                                                for j in pending if j not in remaining))
        time.sleep(0.02 if poll < 100 else 0.5)
    reporter.refresh(plan.num_samples - done_before)


def _run_record(job: _Job, ctx, device, made: int, done_before: int, t_start, t_gen, t_assemble, t_end) -> dict:
    import torch

    gen_time = t_assemble - t_gen
    return {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "samples_made": made, "samples_before": done_before,
        "world_size": ctx.world_size, "batch_size": job.batch_size, "threads_per_process": torch.get_num_threads(),
        "device": _device_name(device), "wall_time_s": round(t_end - t_start, 3),
        "generation_time_s": round(gen_time, 3), "assembly_time_s": round(t_end - t_assemble, 3),
        "samples_per_s": round(made / gen_time, 4) if gen_time > 0 else None,
        "samples_per_s_per_device": round(made / gen_time / ctx.world_size, 4) if gen_time > 0 else None,
    }


def _finish(job: _Job, request, ctx, settings: dict, written: dict, run: dict) -> None:
    """Rank 0: the summary beside the outputs, shards removed (unless kept), one closing line."""
    from titok.cli import options
    from titok.images import save_json

    plan, layout = job.plan, job.layout
    previous_runs = []
    if layout.summary.is_file():
        try:
            previous_runs = json.loads(layout.summary.read_text()).get("runs", [])
        except (OSError, ValueError, AttributeError):
            previous_runs = []
    save_json(layout.summary, {"samples": plan.num_samples, **written, "last_run": run,
                               "runs": previous_runs + [run], "settings": settings})
    if not request.keep_shards:
        import shutil

        shutil.rmtree(layout.shards, ignore_errors=True)
    shape, _ = read_npz_header(layout.npz)
    rate = f"{run['samples_per_s']:.3g} samples/s ({run['samples_per_s_per_device']:.3g} per device x " \
           f"{ctx.world_size})" if run["samples_per_s"] else "no new samples"
    options.console().print(f"{plan.num_samples} samples ({len(job.classes)} classes x {plan.num_per_class}, seed "
                     f"{request.seed}, {job.pipe.mode} {settings['dtype']}, {len(job.pipe.scheduler)} steps) -> "
                     f"{layout.npz} {shape} uint8\n{run['samples_made']} made in this run: {rate}; summary in "
                     f"{layout.summary}", markup=False, soft_wrap=True)


def _compact_ranges(ids: list[int]) -> list:
    """[0, 1, 2, 7] -> ["0-2", 7] (the manifest stays short for 1000 classes); order kept."""
    out, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(f"{ids[i]}-{ids[j]}" if j > i else ids[i])
        i = j + 1
    return out


def _device_name(device) -> str:
    import torch

    from titok.cpu_info import cpu_label

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_label()})"
