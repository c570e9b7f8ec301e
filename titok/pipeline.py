"""Class ids -> images and images -> tokens: a token decoder + a generator + a scheduler + a runtime.

- decoder: a TiTok tokenizer (`titok.tokenizer.TiTokTokenizer`), or the MaskGIT-VQGAN token
  decoder of the MaskGIT baseline (`titok.maskgit_vqgan.VQGANTokenDecoder`). Either gives
  `num_tokens`, `codebook_size`, `check_tokens`, `tokens_to_latents`, `decode`, `decode_stages`.
- generator: a MaskGIT generator (`titok.generator`); its sampling defaults are `generator.cfg.sampler`.
- scheduler: `titok.scheduler.MaskGITScheduler` (default: the generator's sampler settings).
- runtime: "reference" (eager, the official math, pure torch), "compile", or "fast" (see
  `titok.runtimes`); on CUDA a `CUDAGraphs` wrapper captures the fast runtime's sampling + decode.

Randomness: "reference"/"compile" with `seed` call `torch.manual_seed(seed)` and then draw
exactly as the official sampler; "fast" with `seed` draws in-kernel (a different stream: same
seed -> same images within "fast"); without a seed it draws one from torch's generator. With
`noise` (from `draw_noise`) every runtime uses the given uniforms, which makes them comparable.
"""
from __future__ import annotations

import dataclasses

import torch

from titok.checks import check_class_ids, check_compatible, check_images
from titok.configs import SamplerConfig
from titok.errors import TiTokInputError
from titok.noise import chunk_seeds, draw_noise  # noqa: F401 - draw_noise: the parity noise, re-exported
from titok.runtimes import RUNTIMES, CUDAGraphs, default_dtype
from titok.scheduler import MaskGITScheduler

MODES = tuple(RUNTIMES)
__all__ = ["MODES", "Pipeline", "draw_noise"]


class Pipeline:
    """Generation and tokenization with one runtime (see the module docstring).

    mode: a runtime name in MODES; runtime_options: keyword arguments of its runtime class
    (e.g. `{"compile_backend": "eager"}` for "compile").
    dtype: default (`titok.runtimes.default_dtype`) bf16 for "fast" on CUDA and on CPUs with native bf16
    matrix units, fp32 otherwise; the quantizer and the sampling math stay fp32. `dtype_reason` says why.
    max_batch: requests larger than this run in chunks of it (memory stays bounded: the sampler holds
    (B, K, V) logits); each call's `batch_size` overrides it. A request within one chunk is unchanged;
    across chunks, reference/compile with a seed draw on from one `torch.manual_seed(seed)` (as the
    official sampler run batch after batch), and fast uses `seed` for the first chunk and seeds drawn
    from a generator seeded with it for the others.
    """

    def __init__(self, decoder, generator=None, *, mode="reference", scheduler: MaskGITScheduler | None = None,
                 sampler: SamplerConfig | None = None, dtype: torch.dtype | None = None, cuda_graph: bool = True,
                 max_graphs: int = 4, max_batch: int = 64, runtime_options: dict | None = None):
        if max_batch < 1:
            raise TiTokInputError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        runtime_cls = RUNTIMES.get(mode) if isinstance(mode, str) else None
        if runtime_cls is None:
            raise TiTokInputError(f"mode must be one of {MODES}, got {mode!r}")
        if generator is not None:
            check_compatible(decoder, generator)
        self.device = next(decoder.parameters()).device
        on_cuda = self.device.type == "cuda"
        self.dtype, self.dtype_reason = (dtype, "given") if dtype else default_dtype(runtime_cls.name, self.device)
        self.decoder = _cast(decoder, self.dtype)
        self.generator = _cast(generator, self.dtype) if generator is not None else None
        if scheduler is None and generator is not None:
            scheduler = MaskGITScheduler.for_generator(generator, sampler)
        self.scheduler = scheduler
        self.runtime = runtime_cls(self.decoder, self.generator, scheduler, dtype=self.dtype, device=self.device,
                                   **(runtime_options or {}))
        self.graphs = CUDAGraphs(self.runtime, max_graphs) if cuda_graph and on_cuda and self.mode == "fast" else None

    @classmethod
    def from_variant(cls, name: str, *, device: torch.device | str = "cpu", seed: int = 0, **kwargs) -> "Pipeline":
        """A registry variant (`titok info`) with RANDOM weights (for speed: it does not depend on weights)."""
        from titok.loading import load_generator, load_tokenizer

        tokenizer = load_tokenizer(variant=name, random_weights=True, device=device, seed=seed)
        generator = load_generator(variant=name, random_weights=True, device=device, seed=seed + 1) \
            if _has_generator(name) else None
        return cls(tokenizer, generator, **kwargs)

    @classmethod
    def from_pretrained(cls, tokenizer, generator=None, *, variant: str | None = None,
                        device: torch.device | str = "cpu", **kwargs) -> "Pipeline":
        """Checkpoints (folder, weights file or cached Hugging Face repo id; see `titok.loading`)."""
        from titok.loading import load_generator, load_tokenizer

        tok = load_tokenizer(tokenizer, variant, device=device)
        gen = load_generator(generator, variant, device=device) if generator is not None else None
        return cls(tok, gen, **kwargs)

    @property
    def mode(self) -> str:
        return self.runtime.name

    @property
    def sampler(self) -> SamplerConfig | None:
        return self.scheduler.config if self.scheduler is not None else None

    # ---- public API ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, class_ids, *, seed: int | None = None, noise=None,
                 batch_size: int | None = None) -> torch.Tensor:
        """Class ids -> images (B, 3, H, W) float32 in [0, 1]."""
        return self._sample(class_ids, seed, noise, batch_size, images=True)

    @torch.no_grad()
    def generate_tokens(self, class_ids, *, seed: int | None = None, noise=None,
                        batch_size: int | None = None) -> torch.Tensor:
        """Class ids (B,) -> token ids (B, K)."""
        return self._sample(class_ids, seed, noise, batch_size, images=False)

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
        """Token ids (B, K) (or VAE tokens) -> images (B, 3, H, W) float32 in [0, 1]."""
        tokens = self.decoder.check_tokens(tokens)
        return torch.cat([self._images(tokens[i:j].to(self.device)) for i, j in self._chunks(len(tokens), batch_size)])

    @torch.no_grad()
    def encode(self, images: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
        """Images (float [0, 1] or uint8) -> token ids (B, K) (or VAE mean tokens)."""
        self._require_encoder()
        images = check_images(images, self.decoder.image_size)
        return torch.cat([self.runtime.encode(images[i:j].to(self.device, self.dtype))
                          for i, j in self._chunks(len(images), batch_size)])

    def release_graphs(self) -> None:
        """Free the captured CUDA graphs and their memory pools (they are captured again on demand)."""
        if self.graphs is not None:
            self.graphs.release()

    # ---- stages, for benchmarks and profiles ------------------------------------------------------
    def stage_functions(self, batch: int) -> dict:
        """Callables that run each stage of one generation alone at this batch size, on fixed inputs.

        generator_forwards: every generator forward of one sampling run; sampling_steps: every
        sampling step on fixed logits; then the decode stages (vit_decoder for TiTok, pixel_decoder
        for two-stage models and the MaskGIT-VQGAN).
        """
        gen, run = self.generator, self.runtime
        k, v = gen.cfg.image_seq_len, gen.cfg.codebook_size
        ids = torch.randint(0, v, (batch, k), device=self.device)
        cls = torch.randint(0, gen.cfg.num_classes, (batch,), device=self.device)
        logits = torch.randn(batch, k, v, device=self.device, dtype=self.dtype)

        @torch.no_grad()
        def generator_forwards():
            for s in self.scheduler:
                run.logits(ids, cls, s.guided)

        @torch.no_grad()
        def sampling_steps():
            seed = run.start(0, None)
            for s in self.scheduler:
                run.step(s, logits, logits if s.guided else None, ids, seed=seed)

        stages = {"generator_forwards": generator_forwards, "sampling_steps": sampling_steps}
        for name, fn in run.decode_stages(ids).items():
            stages[name] = torch.no_grad()(fn)
        return stages

    def encode_stage_functions(self, batch: int) -> dict:
        """Callables that run each stage of one encode of `batch` fixed random images alone: vit_encoder, quantize.
        Raises TiTokInputError when the decoder has no encoder."""
        self._require_encoder()
        size = self.decoder.image_size
        images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            stages = self.runtime.encode_stages(images.to(self.device, self.dtype))
        return {name: torch.no_grad()(fn) for name, fn in stages.items()}

    def describe(self) -> dict:
        """What this pipeline runs: mode, dtype, device, sampler settings (for result files)."""
        return {"mode": self.mode, "dtype": str(self.dtype).replace("torch.", ""), "dtype_reason": self.dtype_reason,
                "device": str(self.device),
                "cuda_graph": self.graphs is not None,
                "sampler": dataclasses.asdict(self.sampler) if self.sampler is not None else None}

    # ---- internals ----------------------------------------------------------------------------------
    def _require_encoder(self) -> None:
        if not hasattr(self.decoder, "encoder_out"):
            raise TiTokInputError("this pipeline's decoder has no encoder")

    def _images(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.runtime.decode(tokens).float().clamp(0.0, 1.0)

    def _chunks(self, n: int, batch_size: int | None) -> list[tuple[int, int]]:
        step = batch_size or self.max_batch
        if step < 1:
            raise TiTokInputError(f"batch_size must be >= 1, got {step}")
        return [(i, min(i + step, n)) for i in range(0, n, step)]

    def _sample(self, class_ids, seed, noise, batch_size, *, images: bool) -> torch.Tensor:
        cls = self._class_ids(class_ids, noise)
        chunks = self._chunks(len(cls), batch_size)
        # fast: each chunk its own kernel seed; reference/compile: later chunks draw on from the global generator
        seeds = chunk_seeds(seed, len(chunks)) if self.mode == "fast" else [seed] + [None] * (len(chunks) - 1)
        out = []
        for (i, j), chunk_seed in zip(chunks, seeds):
            part = None if noise is None else [(u[i:j], c[i:j]) for u, c in noise]
            if self.graphs is not None and part is None:
                out.append(self.graphs.run(cls[i:j], chunk_seed, images=images))
                continue
            ids = self.runtime.sample(cls[i:j], seed=chunk_seed, noise=part)
            out.append(self._images(ids) if images else ids)
        return torch.cat(out)

    def _class_ids(self, class_ids, noise) -> torch.Tensor:
        if self.generator is None:
            raise TiTokInputError("this pipeline has no generator")
        cls = class_ids if isinstance(class_ids, torch.Tensor) else torch.tensor(class_ids)
        check_class_ids(cls, self.generator.cfg.num_classes)
        if noise is not None:
            self.scheduler.check_noise(noise, cls.shape[0], self.generator.cfg.codebook_size)
        return cls.to(self.device, torch.long)


def _cast(module, dtype: torch.dtype):
    """The module in `dtype`: itself when it already is, else a converted copy (the caller's is left as it was)."""
    import copy

    if next(module.parameters()).dtype == dtype:
        return module
    clone = copy.deepcopy(module).to(dtype)
    if getattr(clone, "quantize", None) is not None:
        clone.quantize.float()  # the vector quantizer (codebook and distances) stays fp32
    return clone


def _has_generator(name: str) -> bool:
    from titok.configs import get_variant

    return get_variant(name).generator is not None

