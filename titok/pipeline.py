"""Class ids -> images and images -> tokens, in three modes behind one API.

- `reference`: the official math, eager: the official sampler (two generator calls
  per guided step, its random-number order) and the official decode.
- `compile`: the reference under `torch.compile` (what a user would try first).
- `fast`: this project's path:
    * guidance as ONE generator forward over 2B rows (cond and uncond class tokens
      stacked) instead of two calls;
    * `titok_kernels.maskgit_step` with in-kernel noise from a seed (or given noise for
      parity), no host synchronisation inside the sampling loop;
    * the shared-prefix precompute + `titok_kernels.concat_attention` in the ViT decoder
      and encoder, last-layer row pruning (titok/fast.py); `titok_kernels.nearest_code`;
    * on CUDA: bf16 weights and activations by default (the quantizer and the
      sampling arithmetic stay fp32), `channels_last` for (a copy of) the MaskGIT-VQGAN decoder,
      and the whole sampling loop + decode captured once per batch size in a CUDA
      graph and replayed.
  On CPU every op runs its torch backend.

Randomness: `reference`/`compile` with `seed` call `torch.manual_seed(seed)` and
then draw exactly as the official sampler; `fast` with `seed` draws in-kernel (a
different stream: same seed -> same images within `fast`). With `noise` (from
`draw_noise`) every mode uses the given uniforms, which makes them comparable.
"""
from __future__ import annotations

import copy
import dataclasses

import torch

from titok_kernels.maskgit_step import maskgit_step
from titok.configs import SamplerConfig
from titok.errors import TiTokInputError
from titok.fast import decoder_prefix_cache, encoder_latent_cache, fast_decoder_forward, fast_encoder_forward
from titok.images import check_images
from titok.loading import check_compatible
from titok.sampler import check_class_ids, generate, sampling_schedule

MODES = ("reference", "compile", "fast")


def draw_noise(batch: int, seq_len: int, vocab: int, steps: int, *, seed: int = 0,
               device: torch.device | str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-step uniform noise (sample noise (B, K, V), confidence noise (B, K)) for parity runs."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for _ in range(steps):
        u_sample = torch.rand(batch, seq_len, vocab, generator=gen)
        u_conf = torch.rand(batch, seq_len, generator=gen)
        out.append((u_sample.to(device), u_conf.to(device)))
    return out


class Pipeline:
    """TiTok generation and tokenization in one of MODES (see the module docstring)."""

    def __init__(self, tokenizer, generator=None, *, mode: str = "reference", dtype: torch.dtype | None = None,
                 sampler: SamplerConfig | None = None, cuda_graph: bool = True):
        if mode not in MODES:
            raise TiTokInputError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.device = tokenizer.latent_tokens.device
        on_cuda = self.device.type == "cuda"
        self.dtype = dtype or (torch.bfloat16 if mode == "fast" and on_cuda else torch.float32)
        if generator is not None:
            check_compatible(tokenizer, generator)
        self.tokenizer = self._cast(tokenizer)
        self.generator = self._cast(generator) if generator is not None else None
        self.sampler = sampler or (getattr(generator, "sampler", None) or SamplerConfig())
        self.cuda_graph = cuda_graph and on_cuda and mode == "fast"
        self._graphs: dict[int, tuple] = {}
        if mode == "compile":
            self._compiled_generator = torch.compile(self.generator) if generator is not None else None
            self._compiled_decode = torch.compile(self.tokenizer.decode)
            self._compiled_encode = torch.compile(self.tokenizer.encoder_out)
        if mode == "fast":
            self._decoder_cache = decoder_prefix_cache(self.tokenizer.decoder)
            self._encoder_cache = encoder_latent_cache(self.tokenizer)
        self._pixel_decoder = getattr(self.tokenizer, "pixel_decoder", None)
        if mode == "fast" and on_cuda and self._pixel_decoder is not None:
            # Own channels_last copy (cuDNN's preferred layout); the caller's module is left as it was.
            self._pixel_decoder = copy.deepcopy(self._pixel_decoder).to(memory_format=torch.channels_last)

    def _cast(self, module):
        if next(module.parameters()).dtype == self.dtype:
            return module
        clone = copy.deepcopy(module).to(self.dtype)
        if hasattr(module, "sampler"):
            clone.sampler = module.sampler
        return clone

    # ---- public API ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, class_ids, *, seed: int | None = None, noise=None) -> torch.Tensor:
        """Class ids -> images (B, 3, H, W) float32 in [0, 1]."""
        ids = self.generate_tokens(class_ids, seed=seed, noise=noise, _decode=self.cuda_graph and noise is None)
        if ids.dim() == 4:  # the CUDA-graph path returns decoded images directly
            return ids
        return self.decode_tokens(ids)

    @torch.no_grad()
    def generate_tokens(self, class_ids, *, seed: int | None = None, noise=None, _decode: bool = False):
        """Class ids (B,) -> token ids (B, K)."""
        if self.generator is None:
            raise TiTokInputError("this pipeline has no generator")
        cls = self._class_ids(class_ids)
        if noise is not None:
            self._check_noise(noise, cls.shape[0])
        if self.mode in ("reference", "compile"):
            gen = self._compiled_generator if self.mode == "compile" else self.generator
            if noise is None and seed is not None:
                torch.manual_seed(seed)
            return generate(gen, cls, self.sampler, noise=noise)
        if self.cuda_graph and noise is None:
            return self._graph_replay(cls, 0 if seed is None else seed, decode=_decode)
        return self._sample_fast(cls, seed=0 if seed is None else seed, noise=noise)

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, K) -> images (B, 3, H, W) float32 in [0, 1]."""
        tokens = self.tokenizer.check_tokens(tokens.to(self.device))
        if self.mode == "reference":
            images = self.tokenizer.decode(self.tokenizer.tokens_to_latents(tokens))
        elif self.mode == "compile":
            images = self._compiled_decode(self.tokenizer.tokens_to_latents(tokens))
        else:
            images = self._decode_fast(tokens)
        return images.float().clamp(0.0, 1.0)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (float [0, 1] or uint8) -> token ids (B, K) (or VAE mean tokens)."""
        images = check_images(images, self.tokenizer.cfg.image_size).to(self.device, self.dtype)
        if self.mode == "reference":
            z = self.tokenizer.encoder_out(images)
        elif self.mode == "compile":
            z = self._compiled_encode(images)
        else:
            z = fast_encoder_forward(self.tokenizer, images, self._encoder_cache)
        z_q, ids = self.tokenizer.quantize_latents(z)
        return ids if ids is not None else z_q

    # ---- stages, for benchmarks and profiles ------------------------------------------------------
    def stage_functions(self, batch: int) -> dict:
        """Callables that run each stage of one generation alone at this batch size, on fixed inputs.

        generator_forwards: every generator forward of one sampling run; sampling_steps: every
        sampling step on fixed logits; vit_decoder: tokens -> decoder output; pixel_decoder: proxy
        logits -> pixels (two-stage models only).
        """
        gen, tok = self.generator, self.tokenizer
        k, v = gen.cfg.image_seq_len, gen.cfg.codebook_size
        schedule = sampling_schedule(self.sampler, k)
        ids = torch.randint(0, v, (batch, k), device=self.device)
        cls = torch.randint(0, gen.cfg.num_classes, (batch,), device=self.device)
        logits = torch.randn(batch, k, v, device=self.device, dtype=self.dtype)
        tokens = torch.randint(0, tok.cfg.codebook_size or 1, (batch, k), device=self.device)
        z_q = tok.tokens_to_latents(tokens) if tok.cfg.quantize_mode == "vq" else \
            torch.randn(batch, tok.cfg.token_size, 1, k, device=self.device, dtype=self.dtype)

        def forwards():
            for s in schedule:
                self._logits(ids, cls, guided=s.guidance_scale is not None)

        def steps():
            for s in schedule:
                self._step(logits, logits if s.guidance_scale is not None else None, ids, s, seed=0, noise=None)

        def vit_decoder():
            if self.mode == "fast":
                return fast_decoder_forward(tok.decoder, z_q, self._decoder_cache)
            return tok.decoder(z_q)

        stages = {"generator_forwards": forwards, "sampling_steps": steps, "vit_decoder": vit_decoder}
        if tok.cfg.two_stage:
            proxy = vit_decoder()

            def pixel_decoder():
                latents = tok.proxy_latents(proxy)
                if self.mode == "fast" and self.device.type == "cuda":
                    latents = latents.contiguous(memory_format=torch.channels_last)
                return self._pixel_decoder(latents)

            stages["pixel_decoder"] = pixel_decoder
        return stages

    # ---- internals ----------------------------------------------------------------------------------
    def _class_ids(self, class_ids) -> torch.Tensor:
        cls = class_ids if isinstance(class_ids, torch.Tensor) else torch.tensor(class_ids)
        check_class_ids(cls, self.generator.cfg.num_classes)
        return cls.to(self.device, torch.long)

    def _check_noise(self, noise, batch: int) -> None:
        k, v = self.generator.cfg.image_seq_len, self.generator.cfg.codebook_size
        if len(noise) != self.sampler.num_steps:
            raise TiTokInputError(f"noise has {len(noise)} steps, the sampler runs {self.sampler.num_steps}")
        for u_sample, u_conf in noise:
            if tuple(u_sample.shape) != (batch, k, v) or tuple(u_conf.shape) != (batch, k):
                raise TiTokInputError(f"noise shapes {tuple(u_sample.shape)}, {tuple(u_conf.shape)} do not match "
                                      f"({batch}, {k}, {v}) and ({batch}, {k})")

    def _logits(self, ids, cls, guided: bool):
        """Fast path: (cond, uncond or None) logits; guidance as one forward over 2B rows."""
        gen = self.generator
        if self.mode != "fast":
            cond = gen(ids, cls, cond_drop_prob=0.0)
            return cond, (gen(ids, cls, cond_drop_prob=1.0) if guided else None)
        cond_tokens = gen.class_tokens(cls, False)
        if not guided:
            return gen.logits(ids, cond_tokens), None
        both = gen.logits(torch.cat([ids, ids]), torch.cat([cond_tokens, gen.class_tokens(cls, True)]))
        return both[: ids.shape[0]], both[ids.shape[0]:]

    def _step(self, cond, uncond, ids, s, *, seed, noise):
        kwargs = dict(noise=noise) if noise is not None else dict(seed=seed, offset=s.step)
        return maskgit_step(cond, uncond, ids, mask_id=self.generator.mask_token_id,
                            guidance_scale=s.guidance_scale or 0.0, guidance_anchor=s.guidance_anchor,
                            softmax_temperature=s.softmax_temperature, gumbel_temperature=s.gumbel_temperature,
                            schedule_mask_len=s.schedule_mask_len, last_step=s.last_step, **kwargs)

    def _sample_fast(self, cls: torch.Tensor, *, seed, noise=None) -> torch.Tensor:
        k = self.generator.cfg.image_seq_len
        ids = torch.full((cls.shape[0], k), self.generator.mask_token_id, device=self.device, dtype=torch.long)
        for s in sampling_schedule(self.sampler, k):
            cond, uncond = self._logits(ids, cls, guided=s.guidance_scale is not None)
            ids = self._step(cond, uncond, ids, s, seed=seed, noise=None if noise is None else noise[s.step])
        return ids

    def _decode_fast(self, tokens: torch.Tensor) -> torch.Tensor:
        tok = self.tokenizer
        z_q = tok.tokens_to_latents(tokens)
        out = fast_decoder_forward(tok.decoder, z_q.to(self.dtype), self._decoder_cache)
        if not tok.cfg.two_stage:
            return out
        latents = tok.proxy_latents(out)
        if self.device.type == "cuda":
            latents = latents.contiguous(memory_format=torch.channels_last)
        return self._pixel_decoder(latents)

    def _graph_replay(self, cls: torch.Tensor, seed: int, *, decode: bool) -> torch.Tensor:
        """Capture sampling (+ decode) once per batch size in a CUDA graph; replay with new inputs."""
        b = cls.shape[0]
        if b not in self._graphs:
            static_cls = cls.clone()
            static_seed = torch.zeros(1, dtype=torch.int64, device=self.device)
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):  # warm-up: autotuning and lazy initialisation outside the capture
                for _ in range(2):
                    self._decode_fast(self._sample_fast(static_cls, seed=static_seed))
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_ids = self._sample_fast(static_cls, seed=static_seed)
                static_images = self._decode_fast(static_ids).float().clamp(0.0, 1.0)
            self._graphs[b] = (graph, static_cls, static_seed, static_ids, static_images)
        graph, static_cls, static_seed, static_ids, static_images = self._graphs[b]
        static_cls.copy_(cls)
        static_seed.fill_(seed)
        graph.replay()
        return (static_images if decode else static_ids).clone()


def describe(pipeline: Pipeline) -> dict:
    """What a pipeline runs: mode, dtype, device, sampler settings (for result files)."""
    return {"mode": pipeline.mode, "dtype": str(pipeline.dtype).replace("torch.", ""),
            "device": str(pipeline.device), "cuda_graph": pipeline.cuda_graph,
            "sampler": dataclasses.asdict(pipeline.sampler)}
