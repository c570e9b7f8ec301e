"""`bench/sampling.py --compare tokens`: the paper's token-count claims (Sec. 4.2, Fig. 4d), re-measured.

For each K (default 16, 32, 64, 96, 128, 192, 256), with random weights:
- the tokenizer is TiTok-B with K latent tokens (ViT-B encoder and decoder, 4096 codes, two-stage:
  the MaskGIT-VQGAN pixel decoder), the generator MaskGIT-ViT (24 layers, width 768) over K tokens;
- `sampling`: class ids -> pixels through `titok.pipeline.Pipeline` (8 steps, `SAMPLER`), the
  pipelines timed INTERLEAVED after their warm-up calls (`measure.measure_group`, one group per K);
- `training`: one generator training step (`titok.training.TrainStep`: masking, forward, loss,
  backward, clipping, AdamW) on pre-tokenized random data at the training batch; the runtimes
  (`reference`: the official fp32 step, plain loss; `fast`: bf16 autocast, the fused
  masked_lm_loss, fused AdamW) on their own copies of the same weights, timed interleaved.
Every row carries `num_tokens`, `task` and `peak_mem_bytes`: the allocation peak of one more call
after the timed ones, above what was live before it (weights, optimizer state and inputs excluded;
`memory.peak_alloc_bytes`: CUDA `max_memory_allocated`, on a CPU torch's allocator event log).
The ratios: after the sweep, one more group per task holds K=32 and K=256 (every pipeline of both) timed
interleaved (`measure_pairs`); `ratios` gives, per task and pipeline, the median (p20-p80) of the
per-iteration ratios of that group, the ratio of the sweep's own rows beside it, and the paper's pairs:
sampling 123.1 vs 27.5 samples/s/gpu (4.5x), training 2815.2 vs 219.7 (12.8x), A100.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch

from titok_bench.harness import cli
from titok_bench.harness.env import CpuWindow, busy_warnings, free_device_memory
from titok_bench.harness.measure import (Job, Settings, dtype_name, empty_row, fail_row, measure_group,
                                         run_interleaved)
from titok_bench.harness.memory import peak_alloc_bytes
from titok_bench.harness.models import ModelSpec, _pipeline_runner, _titok_models, class_ids
from titok_bench.harness.timing import Stopwatch, pair_ratios, summarize_ms

TOKEN_COUNTS = (16, 32, 64, 96, 128, 192, 256)
TASKS = ("sampling", "training")
RATIO_KS = (32, 256)
# Sec. 4.2 of the paper: K = 32 against K = 256, samples/s/gpu on A100 GPUs.
PAPER = {"sampling": {32: 123.1, 256: 27.5}, "training": {32: 2815.2, 256: 219.7}}
PAPER_SOURCE = ("Sec. 4.2 / Fig. 4d: MaskGIT-ViT generator, TiTok tokenizer, A100, samples/s/gpu; "
                "sampling includes de-tokenization with TiTok-B")
TRAIN_TOKEN_SEED, WEIGHT_SEED = 0, 1


def sampler_config():
    """The sampling settings of every K: 8 steps (the paper's), TiTok-B-64's released guidance (scale 3.0,
    linear decay: 15 generator forwards per image) and temperature 11.0."""
    from titok.configs import SamplerConfig

    return SamplerConfig(num_steps=8, guidance_scale=3.0, guidance_decay="linear", randomize_temperature=11.0)


def configs(k: int, scale: str = "paper"):
    """(TokenizerConfig, GeneratorConfig) of the sweep at K tokens; scale "tiny" is the test-size model."""
    from titok.configs import TINY_GENERATOR, TINY_TOKENIZER, GeneratorConfig, TokenizerConfig

    if k < 1:
        raise ValueError(f"the number of tokens must be >= 1, got {k}")
    if scale == "tiny":
        return (dataclasses.replace(TINY_TOKENIZER, num_latent_tokens=k),
                dataclasses.replace(TINY_GENERATOR, image_seq_len=k, sampler=sampler_config()))
    if scale != "paper":
        raise ValueError(f"scale must be 'paper' or 'tiny', got {scale!r}")
    tok = TokenizerConfig(enc_size="base", dec_size="base", num_latent_tokens=k)
    gen = GeneratorConfig("ViT", 768, 24, 16, 3072, image_seq_len=k, codebook_size=tok.codebook_size,
                          sampler=sampler_config())
    return tok, gen


def describe(scale: str = "paper") -> dict:
    """What the sweep runs at every K (for the result file)."""
    tok, gen = configs(32, scale)
    sampler = gen.sampler
    return {"tokenizer": f"{tok.dec_size} ViT decoder ({tok.enc_size} encoder), {tok.codebook_size} codes, "
                         f"{'two-stage (MaskGIT-VQGAN pixel decoder)' if tok.two_stage else 'single-stage'}, "
                         f"{tok.image_size}px",
            "generator": f"{gen.model_type} {gen.num_layers} layers x {gen.hidden_size}, K image tokens",
            "sampler": {"num_steps": sampler.num_steps, "guidance_scale": sampler.guidance_scale,
                        "guidance_decay": sampler.guidance_decay,
                        "randomize_temperature": sampler.randomize_temperature},
            "training": "titok.training.TrainStep: official masking, MLM loss, clipping 1.0, AdamW lr 2e-4; "
                        "no dropout (docs/training.md)",
            "weights": "random", "paper": PAPER, "paper_source": PAPER_SOURCE}


def _build_generator(k: int, scale: str, device, train: bool):
    from titok.loading import build_generator_model, init_random_weights

    gen = init_random_weights(build_generator_model(configs(k, scale)[1]), WEIGHT_SEED).to(device)
    return gen.train().requires_grad_(True) if train else gen.eval().requires_grad_(False)


def token_spec(k: int, scale: str = "paper") -> ModelSpec:
    """The sampling model of the sweep at K tokens (random weights)."""
    def build(device, checkpoint_dir=None):
        from titok.loading import build_tokenizer, init_random_weights

        tok = init_random_weights(build_tokenizer(configs(k, scale)[0])).to(device).eval().requires_grad_(False)
        return _titok_models(tok, _build_generator(k, scale, device, train=False))

    tiny = scale == "tiny"
    return ModelSpec(f"{'tiny-titok' if tiny else 'titok-b'}-k{k}", f"{'tiny TiTok' if tiny else 'TiTok-B'} K={k}",
                     "titok", 64 if tiny else 256, build, _pipeline_runner, num_classes=10 if tiny else 1000)


def _tag(row: dict, k: int, task: str) -> dict:
    row.update(num_tokens=k, task=task)
    row.setdefault("peak_mem_bytes", None)
    return row


# ---- training ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainJob:
    """One training row: a runtime's step at K tokens on its own copy of the weights, its data and records."""

    k: int
    runtime: str
    row: dict
    data: tuple = None
    step: object = None
    records: list = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.row["status"] == "ok"

    def run(self):
        return self.step(*self.data)

    def fail(self, exc: BaseException, device) -> None:
        fail_row(self.row, exc)
        self.step = None
        free_device_memory(device)


def training_data(k: int, scale: str, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-tokenized random data: (batch, K) token ids and (batch,) class ids, fixed by TRAIN_TOKEN_SEED."""
    g = torch.Generator().manual_seed(TRAIN_TOKEN_SEED)
    cfg = configs(k, scale)[1]
    tokens = torch.randint(0, cfg.codebook_size, (batch, k), generator=g)
    return tokens.to(device), torch.randint(0, cfg.num_classes, (batch,), generator=g).to(device)


def measure_training(cases: list[tuple[int, str]], scale: str, batch: int, settings: Settings, monitor, *,
                     memory: bool = True) -> list[dict]:
    """Time the training step of each (K, runtime) case, all interleaved; rows with samples/s, the speed-up
    over the reference at the same K and (with `memory`) the peak memory of one more step."""
    from titok.training import TrainStep

    device = settings.device
    jobs = [TrainJob(k, rt, _tag(empty_row(token_spec(k, scale), rt, None, batch, None), k, "training"))
            for k, rt in cases]
    watch = Stopwatch(device)
    warmup = max(1, settings.warmup)   # the first step allocates the optimizer state
    for job in jobs:
        try:
            job.data = training_data(job.k, scale, batch, device)
            job.step = TrainStep(_build_generator(job.k, scale, device, train=True), runtime=job.runtime)
            job.row.update(dtype=dtype_name(torch.bfloat16 if job.runtime == "fast" else torch.float32),
                           call_batch=batch, warmup=warmup,
                           dtype_reason="bf16 autocast, fused loss and AdamW" if job.runtime == "fast" else
                           "the official fp32 step")
            for _ in range(warmup):
                watch.run([job.run])
        except Exception as exc:  # noqa: BLE001 - a harness records the failure and goes on
            job.fail(exc, device)
    window, start = CpuWindow.start(device), monitor.mark()
    run_interleaved(jobs, settings.iters, watch, device, lambda job: [job.run])
    usage, nvml = window.stop(), monitor.summary(start, monitor.mark())
    for job in [j for j in jobs if j.ok]:
        _finish_training(job, watch, batch, usage, nvml)
        if not memory:
            continue
        try:
            job.row["peak_mem_bytes"], _ = peak_alloc_bytes(job.run, device)
        except Exception as exc:  # noqa: BLE001 - keep the timing when only the memory call fails
            job.row["message"] = f"peak memory not measured ({type(exc).__name__})"
    for job in jobs:
        base = next((j for j in jobs if j.k == job.k and j.runtime == "reference" and j.ok), None)
        ratios = pair_ratios(base.row["iteration_ms"], job.row["iteration_ms"]) if base and job.ok else None
        job.row["speedup"] = None if ratios is None else {"baseline": f"{base.row['model']} reference", **ratios}
        job.step = job.data = None
    free_device_memory(device)
    return [j.row for j in jobs]


def _finish_training(job: TrainJob, watch: Stopwatch, batch: int, usage: dict, nvml) -> None:
    row = job.row
    totals = [watch.read(r)[0] for r in job.records]
    timing = summarize_ms(totals)
    row.update(iteration_ms=totals, latency_ms=timing.as_dict(), samples_per_s=batch / (timing.p50_ms / 1e3),
               samples_per_s_p20=batch / (timing.p80_ms / 1e3), samples_per_s_p80=batch / (timing.p20_ms / 1e3),
               cpu_usage=usage, nvml=nvml, warnings=busy_warnings(usage))


# ---- sampling ---------------------------------------------------------------------------------------------

def measure_sampling(spec: ModelSpec, models, modes: list[str], batch: int, settings: Settings,
                     monitor) -> list[dict]:
    """The sampling rows of one K: `measure_group` (interleaved), then one more generate call per pipeline for
    its allocation peak."""
    k = models[0].cfg.num_latent_tokens
    jobs = [Job(spec, m, None, batch) for m in modes]
    rows = measure_group(jobs, {spec.key: models}, settings, monitor, lambda r: r["pipeline"] == "reference")
    cls = class_ids(batch, spec.num_classes, settings.device)
    for mode, row in zip(modes, rows):
        _tag(row, k, "sampling")
        if row["status"] != "ok":
            continue
        try:
            with torch.no_grad():
                runner = spec.runner(models, mode, None, None, False)
                row["peak_mem_bytes"], _ = peak_alloc_bytes(lambda: runner.generate(cls), settings.device)
        except Exception as exc:  # noqa: BLE001 - keep the timing when only the memory call fails
            row["message"] = f"peak memory not measured ({type(exc).__name__})"
        finally:
            runner = None
            free_device_memory(settings.device)
    return rows


# ---- the sweep ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SweepPlan:
    token_counts: list
    tasks: list
    pipelines: list
    sampling_batch: int
    training_batch: int
    scale: str = "paper"


def plan_from_args(args, on_gpu: bool, batch_sizes, notes: list, compares: dict) -> SweepPlan:
    """`bench/sampling.py --compare tokens`'s options -> the sweep (cli.UsageError on a bad value); `compares` maps
    the --compare name to the sweep scale."""
    counts = cli.parse_sizes(args.token_counts, "--token-counts") if args.token_counts else \
        list(TOKEN_COUNTS)
    tasks = cli.parse_list(args.tasks, "--tasks") if args.tasks else list(TASKS)
    for t in tasks:
        cli.check_choice(t, TASKS, "--tasks")
    pipelines = cli.parse_list(args.pipelines or "reference,fast", "--pipelines")
    for m in pipelines:
        cli.check_choice(m, ("reference", "fast"), "--pipelines (with --compare tokens)")
    if len(batch_sizes) != 1:
        raise cli.UsageError("--compare tokens takes one sampling batch size (--batch-sizes N)")
    train_batch = args.train_batch_size if args.train_batch_size is not None else (64 if on_gpu else 4)
    if train_batch < 1:
        raise cli.UsageError("--train-batch-size must be >= 1")
    if args.checkpoint_dir:
        raise cli.UsageError("--compare tokens runs random weights (no released model has K = 16..256 at TiTok-B); "
                             "drop --checkpoint-dir")
    if args.dtype != "auto":
        raise cli.UsageError("--compare tokens runs each pipeline in its own dtype (reference fp32, fast bf16 "
                             "where the device has it); drop --dtype")
    missing = [k for k in RATIO_KS if k not in counts]
    if missing:
        notes.append(f"--token-counts has no {' or '.join(map(str, missing))}: no K=32 / K=256 ratio.")
    if not on_gpu:
        notes.append("CPU: small batches and few iterations; the paper's figures are A100 samples/s/gpu, only the "
                     "K=32 / K=256 ratios compare.")
    return SweepPlan(counts, tasks, pipelines, batch_sizes[0], train_batch,
                                 compares[args.compare])


def run_sweep(sweep: SweepPlan, settings: Settings, monitor, say: Callable[[str], None]) -> tuple[list, list, bool]:
    """Every K: sampling rows, then training rows (models built per K and freed after it); then the ratio
    groups (`measure_pairs`) when K=32 and K=256 are both swept. Returns (rows, pair rows, interrupted):
    Ctrl-C stops the sweep and keeps the rows already measured."""
    rows: list = []
    pairs: list = []
    try:
        for k in sweep.token_counts:
            spec = token_spec(k, sweep.scale)
            t0 = time.perf_counter()
            if "sampling" in sweep.tasks:
                try:
                    models = spec.build(settings.device)
                except Exception as exc:  # noqa: BLE001 - every sampling row of this K becomes an error row
                    new = [_tag(fail_row(empty_row(spec, m, None, sweep.sampling_batch, None), exc), k, "sampling")
                           for m in sweep.pipelines]
                else:
                    say(f"K={k}: built the sampling models in {time.perf_counter() - t0:.1f} s")
                    new = measure_sampling(spec, models, sweep.pipelines, sweep.sampling_batch, settings, monitor)
                    del models
                    free_device_memory(settings.device)
                _report(rows, new, say)
            if "training" in sweep.tasks:
                new = measure_training([(k, rt) for rt in sweep.pipelines], sweep.scale, sweep.training_batch,
                                       settings, monitor)
                _report(rows, new, say)
            for row in rows[-len(sweep.pipelines) * len(sweep.tasks):]:
                row["wall_seconds"] = time.perf_counter() - t0
        if all(k in sweep.token_counts for k in RATIO_KS):
            pairs = measure_pairs(sweep, settings, monitor, say)
    except KeyboardInterrupt:
        return rows, pairs, True
    return rows, pairs, False


def _report(rows: list, new: list, say) -> None:
    for r in new:
        rows.append(r)
        what = f"  K={r['num_tokens']} {r['task']} {r['pipeline']} batch {r['batch_size']}"
        if r["status"] != "ok":
            say(f"{what}: {r['status'].upper()} - {r['message']}")
        else:
            mem = "" if r["peak_mem_bytes"] is None else f", peak {r['peak_mem_bytes'] / 2**20:.0f} MiB"
            say(f"{what}: {r['samples_per_s']:.3g} samples/s{mem}")


def measure_pairs(sweep: SweepPlan, settings: Settings, monitor, say: Callable[[str], None]) -> list[dict]:
    """The ratio groups: per task, K=32 and K=256 in ONE group, every pipeline of both timed interleaved (so
    the K=32 / K=256 ratio is a median of per-iteration ratios, as the speed-ups are); no peak-memory call."""
    small, large = RATIO_KS
    settings = dataclasses.replace(settings, stages=False)
    rows: list = []
    if "sampling" in sweep.tasks:
        specs = [token_spec(k, sweep.scale) for k in RATIO_KS]
        try:
            models = {spec.key: spec.build(settings.device) for spec in specs}
        except Exception as exc:  # noqa: BLE001 - the ratio rows become error rows
            rows += [_tag(fail_row(empty_row(spec, m, None, sweep.sampling_batch, None), exc), k, "sampling")
                     for spec, k in zip(specs, RATIO_KS) for m in sweep.pipelines]
        else:
            jobs = [Job(spec, m, None, sweep.sampling_batch) for spec in specs for m in sweep.pipelines]
            new = measure_group(jobs, models, settings, monitor, lambda r: False)
            rows += [_tag(r, k, "sampling") for r, (k, _) in
                     zip(new, [(k, m) for k in RATIO_KS for m in sweep.pipelines])]
            del models
            free_device_memory(settings.device)
    if "training" in sweep.tasks:
        rows += measure_training([(k, rt) for k in RATIO_KS for rt in sweep.pipelines], sweep.scale,
                                 sweep.training_batch, settings, monitor, memory=False)
    for r in rows:
        what = f"  pair K={small}/K={large}: K={r['num_tokens']} {r['task']} {r['pipeline']}"
        say(f"{what}: " + (f"{r['samples_per_s']:.3g} samples/s" if r["status"] == "ok" else r["status"].upper()))
    return rows


def ratios(pair_rows: list[dict], sweep_rows: list[dict] = ()) -> list[dict]:
    """Per (task, pipeline): samples/s at K=32 and K=256 in the ratio group, the median (p20-p80) of their
    per-iteration ratios, the ratio of the sweep's own rows (timed in separate groups), the paper's pair."""
    small, large = RATIO_KS
    out = []

    def pick(rows, task, pipeline, k):
        return next((r for r in rows if (r["task"], r["pipeline"], r["num_tokens"]) == (task, pipeline, k)
                     and r["status"] == "ok"), None)

    for task in TASKS:
        for pipeline in dict.fromkeys(r["pipeline"] for r in pair_rows if r["task"] == task):
            a, b = pick(pair_rows, task, pipeline, small), pick(pair_rows, task, pipeline, large)
            both = pair_ratios(b["iteration_ms"], a["iteration_ms"]) if a and b else None
            sa, sb = pick(sweep_rows, task, pipeline, small), pick(sweep_rows, task, pipeline, large)
            paper = PAPER[task]
            out.append({"task": task, "pipeline": pipeline, "k_small": small, "k_large": large,
                        "samples_per_s_small": a and a["samples_per_s"], "samples_per_s_large": b and b["samples_per_s"],
                        "ratio": both and both["p50"], "ratio_p20": both and both["p20"],
                        "ratio_p80": both and both["p80"], "pairs": both["pairs"] if both else 0,
                        "sweep_ratio": sa["samples_per_s"] / sb["samples_per_s"] if sa and sb else None,
                        "paper_samples_per_s_small": paper[small], "paper_samples_per_s_large": paper[large],
                        "paper_ratio": paper[small] / paper[large], "paper_source": PAPER_SOURCE})
    return out
