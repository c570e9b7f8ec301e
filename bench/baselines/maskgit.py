"""MaskGIT baseline: the MaskGIT-ViT generator over 2D MaskGIT-VQGAN codes, decoded by the MaskGIT-VQGAN decoder.

The paper's MaskGIT rows (Table 1: 256x256, 256 tokens, 8 steps, 50.5 samples/s; Table 2:
512x512, 1024 tokens, 12 steps, 3.9 samples/s) use the same generator as TiTok-L-32 (BERT
layout, hidden 768, 24 layers, 16 heads, MLP 3072) over the 1024-code VQGAN codebook; only the
tokenizer differs. Here:
- generator: `GeneratorConfig("ViT", 768, 24, 16, 3072, image_seq_len=256 | 1024, codebook_size=1024)`;
- sampler: TiTok-L-32's settings (linear guidance decay, scale 4.5, Gumbel temperature 9.5,
  softmax-temperature annealing), 8 steps at 256px (15 generator forwards per image), 12 at
  512px (23 forwards). The original MaskGIT sampled without classifier-free guidance (8 / 12
  forwards): with these settings the generator costs about twice as much as in the MaskGIT
  paper, the price of running the same sampler as TiTok;
- decode: code ids (B, 16, 16) or (B, 32, 32) -> VQGAN codebook lookup -> `PixelDecoder` -> pixels
  (the MaskGIT-VQGAN decoder of `titok.maskgit_vqgan`, the one TiTok's two-stage models end with).

Modes, as `titok.pipeline.Pipeline`: "reference" (the reference sampler `titok.sampler.generate`,
two generator calls per guided step, eager), "compile" (the same under `torch.compile`), "fast"
(guidance as one generator call over 2B rows, `titok_kernels.maskgit_step` with in-kernel noise, no host
synchronisation in the loop; on CUDA bf16 weights, channels_last decoder and the whole sampling +
decode captured in a CUDA graph per batch size).

FLOPs per image (the count of `titok.flops`): generator forwards x `generator_forward_flops`
(K + 1 rows each), plus the MaskGIT-VQGAN decoder's convolutions (`pixel_decoder_flops` without
its softmax x codebook product: MaskGIT decodes hard codes, an embedding lookup).
"""
from __future__ import annotations

import copy
import dataclasses
import math

import torch

from titok.configs import GeneratorConfig, SamplerConfig, TokenizerConfig
from titok.flops import generator_forward_flops, generator_forwards, linear_flops, pixel_decoder_flops
from titok.maskgit_vqgan import Z_CHANNELS, PixelDecoder, PixelQuantizer


@dataclasses.dataclass(frozen=True)
class MaskGITConfig:
    generator: GeneratorConfig
    sampler: SamplerConfig
    pixel_hidden_channels: int = 128

    @property
    def grid(self) -> int:
        side = math.isqrt(self.generator.image_seq_len)
        if side * side != self.generator.image_seq_len:
            raise ValueError(f"image_seq_len {self.generator.image_seq_len} is not a square grid")
        return side

    @property
    def image_size(self) -> int:
        return 16 * self.grid


_L32_SAMPLER = dict(guidance_scale=4.5, guidance_decay="linear", randomize_temperature=9.5)


def maskgit_config(image_size: int = 256) -> MaskGITConfig:
    """The paper's MaskGIT baseline at 256 (16x16 codes, 8 steps) or 512 (32x32 codes, 12 steps)."""
    if image_size not in (256, 512):
        raise ValueError(f"the MaskGIT baseline exists at 256 and 512 pixels, got {image_size}")
    grid, steps = (16, 8) if image_size == 256 else (32, 12)
    return MaskGITConfig(GeneratorConfig("ViT", 768, 24, 16, 3072, image_seq_len=grid * grid, codebook_size=1024),
                         SamplerConfig(steps, **_L32_SAMPLER))


# Small configuration for tests: 4x4 codes over a 64-code book, 64x64 pixels.
TINY_MASKGIT = MaskGITConfig(GeneratorConfig("ViT", 64, 2, 4, 128, image_seq_len=16, codebook_size=64, num_classes=10),
                             SamplerConfig(4, **_L32_SAMPLER), pixel_hidden_channels=32)


def maskgit_flops(cfg: MaskGITConfig) -> dict:
    """Per-image FLOPs by stage (see the module docstring)."""
    forwards = generator_forwards(cfg.sampler, cfg.generator.image_seq_len)
    pixel_cfg = TokenizerConfig(image_size=cfg.image_size, enc_size="tiny", dec_size="tiny",
                                pixel_hidden_channels=cfg.pixel_hidden_channels)  # only its proxy grid and width count
    side = pixel_cfg.proxy_grid
    pixel = pixel_decoder_flops(pixel_cfg) - linear_flops(side * side, 1024, Z_CHANNELS)
    stages = {"generator": forwards * generator_forward_flops(cfg.generator), "vit_decoder": 0, "pixel_decoder": pixel}
    return {"generator_forwards": forwards, **stages, "total": sum(stages.values())}


def build_maskgit(cfg: MaskGITConfig, device: torch.device | str = "cpu", seed: int = 0):
    """(generator, quantizer, decoder) with random weights (titok's deterministic init), on `device`, eval."""
    from titok.loading import build_generator_model, init_random_weights

    generator = init_random_weights(build_generator_model(cfg.generator, "cpu"), seed)
    quantizer = init_random_weights(PixelQuantizer(cfg.generator.codebook_size, Z_CHANNELS), seed + 1)
    decoder = init_random_weights(PixelDecoder(cfg.pixel_hidden_channels), seed + 2)
    out = []
    for m in (generator, quantizer, decoder):
        out.append(m.to(device).eval().requires_grad_(False))
    return tuple(out)


class MaskGITRunner:
    """MaskGIT class ids -> images in one of MODES (see the module docstring).

    `steps`: run a sampler with this many steps instead of the configuration's (for projection).
    """

    family = "maskgit"
    MODES = ("reference", "compile", "fast")

    def __init__(self, generator, quantizer, decoder, cfg: MaskGITConfig, *, mode: str = "reference",
                 dtype: torch.dtype | None = None, steps: int | None = None, cuda_graph: bool = True,
                 seed: int = 0):
        if mode not in self.MODES:
            raise ValueError(f"MaskGIT mode must be one of {self.MODES}, got {mode!r}")
        self.cfg, self.mode, self.seed = cfg, mode, seed
        self.device = next(generator.parameters()).device
        on_cuda = self.device.type == "cuda"
        self.dtype = dtype or (torch.bfloat16 if mode == "fast" and on_cuda else torch.float32)
        self.sampler = dataclasses.replace(cfg.sampler, num_steps=steps) if steps else cfg.sampler
        self.steps = self.sampler.num_steps
        self.generator = self._cast(generator)
        self.quantizer = self._cast(quantizer)
        self.decoder = self._cast(decoder)
        self.cuda_graph = cuda_graph and on_cuda and mode == "fast"
        self._graphs: dict[int, tuple] = {}
        self._gen_call, self._decode_call = self.generator, self._decode_latents
        if mode == "compile":
            self._gen_call = torch.compile(self.generator)
            self._decode_call = torch.compile(self._decode_latents)
        if mode == "fast" and on_cuda:
            if self.decoder is decoder:  # never change the memory format of a module other runners share
                self.decoder = copy.deepcopy(decoder)
            self.decoder.to(memory_format=torch.channels_last)

    def _cast(self, module):
        if next(module.parameters()).dtype == self.dtype:
            return module
        return copy.deepcopy(module).to(self.dtype)

    # ---- decode -----------------------------------------------------------------------------------
    def _decode_latents(self, ids: torch.Tensor) -> torch.Tensor:
        g = self.cfg.grid
        latents = self.quantizer.decode(ids.view(ids.shape[0], g, g))
        if self.mode == "fast" and self.device.type == "cuda":
            latents = latents.contiguous(memory_format=torch.channels_last)
        return self.decoder(latents)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids (B, K) -> images (B, 3, H, W) float32 in [0, 1]."""
        return self._decode_call(ids).float().clamp(0.0, 1.0)

    # ---- sample -----------------------------------------------------------------------------------
    def _logits_fast(self, ids, cls, guided: bool):
        gen = self.generator
        cond_tokens = gen.class_tokens(cls, False)
        if not guided:
            return gen.logits(ids, cond_tokens), None
        both = gen.logits(torch.cat([ids, ids]), torch.cat([cond_tokens, gen.class_tokens(cls, True)]))
        return both[: ids.shape[0]], both[ids.shape[0]:]

    def _sample_fast(self, cls: torch.Tensor, seed) -> torch.Tensor:
        from titok_kernels.maskgit_step import maskgit_step
        from titok.sampler import sampling_schedule

        k = self.cfg.generator.image_seq_len
        mask_id = self.generator.mask_token_id
        ids = torch.full((cls.shape[0], k), mask_id, device=self.device, dtype=torch.long)
        for s in sampling_schedule(self.sampler, k):
            cond, uncond = self._logits_fast(ids, cls, guided=s.guidance_scale is not None)
            ids = maskgit_step(cond, uncond, ids, mask_id=mask_id, guidance_scale=s.guidance_scale or 0.0,
                               guidance_anchor=s.guidance_anchor, softmax_temperature=s.softmax_temperature,
                               gumbel_temperature=s.gumbel_temperature, schedule_mask_len=s.schedule_mask_len,
                               last_step=s.last_step, seed=seed, offset=s.step)
        return ids

    @torch.no_grad()
    def sample(self, class_ids: torch.Tensor) -> torch.Tensor:
        """Class ids (B,) -> code ids (B, K) (never through the CUDA graph: for split timing)."""
        from titok.sampler import generate

        cls = class_ids.to(self.device, torch.long)
        if self.mode == "fast":
            return self._sample_fast(cls, self.seed)
        torch.manual_seed(self.seed)
        return generate(self._gen_call, cls, self.sampler)

    @torch.no_grad()
    def generate(self, class_ids: torch.Tensor) -> torch.Tensor:
        """Class ids (B,) -> images (B, 3, H, W) float32 in [0, 1]."""
        if self.cuda_graph:
            return self._graph_replay(class_ids.to(self.device, torch.long))
        return self.decode(self.sample(class_ids))

    def _graph_replay(self, cls: torch.Tensor) -> torch.Tensor:
        """Sampling + decode captured once per batch size in a CUDA graph, then replayed."""
        b = cls.shape[0]
        if b not in self._graphs:
            static_cls = cls.clone()
            static_seed = torch.full((1,), self.seed, dtype=torch.int64, device=self.device)
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):  # warm-up (kernel compilation, lazy init) outside the capture
                for _ in range(2):
                    self._decode_latents(self._sample_fast(static_cls, static_seed))
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_images = self._decode_latents(self._sample_fast(static_cls, static_seed)).float().clamp(0, 1)
            self._graphs[b] = (graph, static_cls, static_images)
        graph, static_cls, static_images = self._graphs[b]
        static_cls.copy_(cls)
        graph.replay()
        return static_images.clone()

    # ---- for the harness --------------------------------------------------------------------------
    def units(self) -> int:
        """Projection units run: generator forwards per image of this runner's sampler."""
        return generator_forwards(self.sampler, self.cfg.generator.image_seq_len)

    def full_units(self) -> int:
        return generator_forwards(self.cfg.sampler, self.cfg.generator.image_seq_len)

    def flops(self) -> dict:
        return maskgit_flops(self.cfg)

    def stage_functions(self, batch: int) -> dict:
        """Each stage of one generation alone on fixed inputs: the generator forwards and the
        sampling steps of this runner's sampler, and the decode (codebook lookup + VQGAN decoder)."""
        from titok_kernels.maskgit_step import maskgit_step
        from titok.sampler import sampling_schedule

        gcfg = self.cfg.generator
        k, v = gcfg.image_seq_len, gcfg.codebook_size
        schedule = sampling_schedule(self.sampler, k)
        ids = torch.randint(0, v, (batch, k), device=self.device)
        cls = torch.randint(0, gcfg.num_classes, (batch,), device=self.device)
        logits = torch.randn(batch, k, v, device=self.device, dtype=self.dtype)
        gen = self.generator

        @torch.no_grad()
        def forwards():
            for s in schedule:
                guided = s.guidance_scale is not None
                if self.mode == "fast":
                    self._logits_fast(ids, cls, guided)
                else:
                    self._gen_call(ids, cls, cond_drop_prob=0.0)
                    if guided:
                        self._gen_call(ids, cls, cond_drop_prob=1.0)

        @torch.no_grad()
        def steps():
            for s in schedule:
                uncond = logits if s.guidance_scale is not None else None
                if self.mode == "fast":
                    kw = dict(seed=self.seed, offset=s.step)
                else:  # the reference sampler draws its uniforms every step
                    kw = dict(noise=(torch.rand(batch, k, v, device=self.device),
                                     torch.rand(batch, k, device=self.device)))
                maskgit_step(logits, uncond, ids, mask_id=gen.mask_token_id, guidance_scale=s.guidance_scale or 0.0,
                             guidance_anchor=s.guidance_anchor, softmax_temperature=s.softmax_temperature,
                             gumbel_temperature=s.gumbel_temperature, schedule_mask_len=s.schedule_mask_len,
                             last_step=s.last_step, **kw)

        @torch.no_grad()
        def pixel_decoder():
            return self.decode(ids)

        return {"generator_forwards": forwards, "sampling_steps": steps, "pixel_decoder": pixel_decoder}

    def describe(self) -> dict:
        return {"family": self.family, "mode": self.mode, "dtype": str(self.dtype).replace("torch.", ""),
                "device": str(self.device), "cuda_graph": self.cuda_graph, "steps": self.steps,
                "full_steps": self.cfg.sampler.num_steps, "sampler": dataclasses.asdict(self.sampler),
                "image_size": self.cfg.image_size, "tokens": self.cfg.generator.image_seq_len}
