"""What a benchmark row runs: model specs (TiTok variants, the MaskGIT baseline, DiT-XL/2) and their runners.

A runner is one (model, mode, dtype, steps) ready to time, with this interface:
    sample(class_ids) -> latents or token ids       decode(latents) -> images
    generate(class_ids) -> images                   stage_functions(batch) -> {stage: callable}
    units() / full_units(): what the sampling cost is linear in (generator forwards per image, or
        DiT transformer calls), for this runner's steps and the model's full step count
    flops() -> per-image FLOPs by stage          describe() -> dict (with "full_steps")
    attributes: dtype, cuda_graph, steps
TiTok and the MaskGIT baseline both run through `PipelineRunner`, i.e. a `titok.pipeline.Pipeline`
(the MaskGIT baseline's decoder is a `VQGANTokenDecoder`); DiT-XL/2 has its own runner (diffusers).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Callable

import torch

from titok.configs import MODES  # the one declaration of the pipelines' modes
from titok_bench.harness.cli import UsageError

__all__ = ["MODES", "PipelineRunner", "ModelSpec", "SPECS", "COMPARE_SETS", "PUBLIC_MODELS", "PIPELINE_MODELS",
           "TINY_OF_FAMILY", "class_ids", "checkpoint_paths", "tiny_titok", "weights_of"]


class PipelineRunner:
    """A `titok.pipeline.Pipeline` over (decoder, generator); `steps` replaces the sampler's step count
    (projection); `flops` is the per-image count of the full generation.

    Every call runs the whole batch it is given as ONE pipeline call (`batch_size=len(batch)`: the
    pipeline's `max_batch` chunking is off), so a row of batch 256 measures batch 256, as the stage
    table does; `call_batch(batch)` says so for the result row."""

    def __init__(self, decoder, generator, flops: dict, *, mode: str, dtype: torch.dtype | None,
                 steps: int | None = None, cuda_graph: bool = True, seed: int = 0):
        from titok.pipeline import Pipeline
        from titok.scheduler import MaskGITScheduler

        self.full_scheduler = MaskGITScheduler.for_generator(generator)
        scheduler = self.full_scheduler.with_config(num_steps=steps) if steps else self.full_scheduler
        self.pipeline = Pipeline(decoder, generator, mode=mode, dtype=dtype, scheduler=scheduler,
                                 cuda_graph=cuda_graph)
        self._flops, self.seed = flops, seed
        self.dtype, self.steps = self.pipeline.dtype, len(scheduler)
        self.cuda_graph = self.pipeline.graphs is not None

    def sample(self, class_ids):
        return self.pipeline.generate_tokens(class_ids, seed=self.seed, batch_size=len(class_ids))

    def decode(self, tokens):
        return self.pipeline.decode_tokens(tokens, batch_size=len(tokens))

    def generate(self, class_ids):
        return self.pipeline.generate(class_ids, seed=self.seed, batch_size=len(class_ids))

    @staticmethod
    def call_batch(batch: int) -> int:
        """The batch of one pipeline call when a row runs `batch` images: all of them."""
        return batch

    def units(self) -> int:
        return self.pipeline.scheduler.generator_forwards

    def full_units(self) -> int:
        return self.full_scheduler.generator_forwards

    def flops(self) -> dict:
        return self._flops

    def stage_functions(self, batch: int) -> dict:
        return self.pipeline.stage_functions(batch)

    def describe(self) -> dict:
        return {**self.pipeline.describe(), "steps": self.steps, "full_steps": len(self.full_scheduler)}


@dataclasses.dataclass(eq=False)   # hashed by identity: one spec per model
class ModelSpec:
    """A model the harness can build and time."""

    key: str                      # CLI name
    label: str                    # table name
    family: str                   # titok | maskgit | dit
    resolution: int
    build: Callable               # (device, checkpoint_dir) -> models (tuple)
    runner: Callable              # (models, mode, dtype, steps, cuda_graph) -> runner
    modes: tuple = MODES
    best_mode: str = "fast"
    num_classes: int = 1000
    cpu_project_steps: int | None = None   # --compare on CPU: time this many steps and project
    paper_samples_per_s: float | None = None
    paper_source: str | None = None

    def full_steps(self, models) -> int:
        return models[-1]


# ---- builders: each returns (..., full step count) ------------------------------------------------------

def checkpoint_paths(root: str, variant) -> tuple[str, str]:
    """DIR/<tokenizer repo name> and DIR/<generator repo name> (official HF folders), or DIR/{tokenizer,generator}."""
    pairs = [(os.path.join(root, variant.tokenizer_repo.split("/")[-1]),
              os.path.join(root, variant.generator_repo.split("/")[-1])),
             (os.path.join(root, "tokenizer"), os.path.join(root, "generator"))]
    for tok, gen in pairs:
        if os.path.exists(tok) and os.path.exists(gen):
            return tok, gen
    raise UsageError(f"--checkpoint-dir {root}: expected {pairs[0][0]} and {pairs[0][1]} (official Hugging Face "
                     "folders), or tokenizer/ and generator/ inside it")


def _titok_models(tok, gen):
    from titok.flops import generation_flops

    return tok, gen, generation_flops(tok.cfg, gen.cfg, gen.cfg.sampler), gen.cfg.sampler.num_steps


def _titok_build(name: str):
    def build(device, checkpoint_dir=None):
        from titok.configs import get_variant
        from titok.loading import load_generator, load_tokenizer

        variant = get_variant(name)
        if checkpoint_dir and not variant.architecture_only:  # the 512px models have no released weights
            tok_src, gen_src = checkpoint_paths(checkpoint_dir, variant)
            return _titok_models(load_tokenizer(tok_src, name, device=device),
                                 load_generator(gen_src, name, device=device))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # RandomWeightsWarning: the harness says "random weights" itself
            return _titok_models(load_tokenizer(None, name, random_weights=True, device=device),
                                 load_generator(None, name, random_weights=True, device=device, seed=1))
    return build


def tiny_titok(device, checkpoint_dir=None):
    """The test-size TiTok (ViT width 64, 2 layers) with random weights, 4 sampling steps."""
    from titok.configs import TINY_GENERATOR, TINY_TOKENIZER, SamplerConfig
    from titok.loading import build_generator_model, build_tokenizer, init_random_weights

    gen_cfg = dataclasses.replace(TINY_GENERATOR, sampler=SamplerConfig(4, 4.5, "linear", randomize_temperature=9.5))
    tok = init_random_weights(build_tokenizer(TINY_TOKENIZER)).to(device).eval().requires_grad_(False)
    gen = init_random_weights(build_generator_model(gen_cfg), 1).to(device).eval().requires_grad_(False)
    return _titok_models(tok, gen)


def _pipeline_runner(models, mode, dtype, steps=None, cuda_graph=True):
    decoder, generator, flops, _ = models
    return PipelineRunner(decoder, generator, flops, mode=mode, dtype=dtype, steps=steps, cuda_graph=cuda_graph)


def _maskgit_build(cfg_fn):
    def build(device, checkpoint_dir=None):
        from titok_bench.baselines.maskgit import build_maskgit, maskgit_flops

        cfg = cfg_fn()
        return (*build_maskgit(cfg, device), maskgit_flops(cfg), cfg.sampler.num_steps)
    return build


def _dit_build(cfg_fn):
    def build(device, checkpoint_dir=None):
        from titok_bench.baselines.dit import build_dit

        cfg = cfg_fn()
        return (cfg, *build_dit(cfg, device), cfg.steps)
    return build


def _dit_runner(models, mode, dtype, steps=None, cuda_graph=True):
    from titok_bench.baselines.dit import DiTRunner

    cfg, transformer, vae, _ = models
    return DiTRunner(transformer, vae, cfg, mode=mode, dtype=dtype or torch.float32, run_steps=steps)


def weights_of(spec: ModelSpec, checkpoint_dir: str | None) -> str:
    """'checkpoint' where --checkpoint-dir supplied this model's weights, else 'random'."""
    if not checkpoint_dir or spec.family != "titok" or spec.key.startswith("tiny"):
        return "random"
    from titok.configs import get_variant

    return "random" if get_variant(spec.key).architecture_only else "checkpoint"


# ---- the registry -----------------------------------------------------------------------------------------

def _specs() -> dict[str, ModelSpec]:
    from titok_bench.baselines.dit import TINY_DIT, dit_xl_2
    from titok_bench.baselines.maskgit import TINY_MASKGIT, maskgit_config

    def titok(key, label, res, build=None, **kw):
        return ModelSpec(key, label, "titok", res, build or _titok_build(key), _pipeline_runner, **kw)

    def maskgit(key, res, cfg_fn, **kw):
        label = "tiny MaskGIT" if key.startswith("tiny") else "MaskGIT"
        return ModelSpec(key, label, "maskgit", res, _maskgit_build(cfg_fn), _pipeline_runner, cpu_project_steps=2,
                         **kw)

    def dit(key, res, cfg_fn, **kw):
        label = "tiny DiT" if key.startswith("tiny") else "DiT-XL/2"
        return ModelSpec(key, label, "dit", res, _dit_build(cfg_fn), _dit_runner, modes=("reference", "compile"),
                         best_mode="compile", cpu_project_steps=1, **kw)

    t1, t2 = "Table 1 (256x256, A100, float32)", "Table 2 (512x512, A100, float32)"
    specs = [
        titok("titok-l-32", "TiTok-L-32", 256, paper_samples_per_s=101.6, paper_source=t1),
        titok("titok-b-64", "TiTok-B-64", 256, paper_samples_per_s=89.8, paper_source=t1),
        titok("titok-s-128", "TiTok-S-128", 256, cpu_project_steps=2, paper_samples_per_s=7.8,
              paper_source=t1 + ", 64 steps"),
        maskgit("maskgit-256", 256, lambda: maskgit_config(256), paper_samples_per_s=50.5, paper_source=t1),
        dit("dit-xl-2-256", 256, lambda: dit_xl_2(256), paper_samples_per_s=0.6, paper_source=t1),
        titok("titok-l-64-512", "TiTok-L-64", 512, paper_samples_per_s=41.0, paper_source=t2),
        titok("titok-b-128-512", "TiTok-B-128", 512, cpu_project_steps=2, paper_samples_per_s=7.4,
              paper_source=t2 + ", 64 steps"),
        maskgit("maskgit-512", 512, lambda: maskgit_config(512), paper_samples_per_s=3.9, paper_source=t2),
        dit("dit-xl-2-512", 512, lambda: dit_xl_2(512), paper_samples_per_s=0.1, paper_source=t2),
        # Small models of the same code, for tests (not listed in --help).
        titok("tiny-titok", "tiny TiTok", 64, build=tiny_titok, num_classes=10, cpu_project_steps=2),
        maskgit("tiny-maskgit", 64, lambda: TINY_MASKGIT, num_classes=10),
        dit("tiny-dit", 64, lambda: TINY_DIT, num_classes=10),
    ]
    return {s.key: s for s in specs}


SPECS = _specs()
COMPARE_SETS = {
    "paper": ("titok-l-32", "titok-b-64", "titok-s-128", "maskgit-256", "dit-xl-2-256",
              "titok-l-64-512", "titok-b-128-512", "maskgit-512", "dit-xl-2-512"),
    "tiny": ("tiny-titok", "tiny-maskgit", "tiny-dit"),   # tests only
}
PUBLIC_MODELS = tuple(k for k in SPECS if not k.startswith("tiny-"))
# The models whose generation is a titok Pipeline (profiling, parity); "tiny" is the test-size TiTok.
PIPELINE_MODELS = {"tiny": "tiny-titok", **{k: k for k in PUBLIC_MODELS if SPECS[k].family != "dit"}}
TINY_OF_FAMILY = {"titok": "tiny-titok", "maskgit": "tiny-maskgit", "dit": "tiny-dit"}


def class_ids(batch: int, num_classes: int, device) -> torch.Tensor:
    """The class ids a benchmark row generates: fixed, spread over the classes."""
    return ((torch.arange(batch) * 7 + 1) % num_classes).to(device)
