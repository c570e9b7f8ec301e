"""Runtimes: how a pipeline computes its generator forwards, sampling steps, decode and encode.

- `EagerRuntime` ("reference"): the official computation, pure torch on every device: two
  generator calls per guided step (each drawing its class-drop `torch.rand(B)`), the reference
  step with uniforms drawn in the official order, the reference decode and encode. Never
  reaches a Triton kernel.
- `CompiledRuntime` ("compile"): the eager runtime with its generator network, decode and
  encode under `torch.compile`. The generator network compiles once per dtype whatever the batch
  size (batch dimension marked unbacked-dynamic up front, so batch 1 is not specialised; the
  class-drop draw stays outside the compiled region, so guidance is no Python-float guard). The
  decode and encode mark the batch dynamic too but as a backed size (inductor's convolution
  layouts fail on an unbacked batch in torch 2.13): batch 1 and the other sizes compile apart.
- `FastRuntime` ("fast"): guidance as one generator forward over 2B rows, the fused step op
  (`titok_kernels.maskgit_step`: in-kernel noise from a seed, no host synchronisation in the
  loop), the prefix precompute with `titok_kernels.concat_attention`, `titok_kernels.nearest_code`;
  on a CPU in bf16, linear layers on packed weights with their GELU and residual adds as oneDNN
  post-ops (`titok.cpu_linear`), one Q/K/V product and fp32 attention in the MaskGIT-ViT generator.
  The kernels' `auto` backend picks Triton on CUDA and torch on CPU (TITOK_KERNEL_BACKEND=triton
  forces Triton, under TRITON_INTERPRET=1 on CPU).

A runtime is built for one (decoder, generator, scheduler, dtype, device); `titok.pipeline.Pipeline`
composes them. `CUDAGraphs` captures any runtime's sampling (+ decode) per batch size.
"""
from __future__ import annotations

import collections
import os

import torch

from titok.noise import kernel_seed, seed_global_generator
from titok.scheduler import MaskGITScheduler


class EagerRuntime:
    """The official computation (see the module docstring)."""

    name = "reference"
    seed_in_graph = False   # its randomness comes from torch's global generator

    def __init__(self, decoder, generator, scheduler: MaskGITScheduler | None, *, dtype: torch.dtype,
                 device: torch.device):
        self.decoder, self.generator, self.scheduler = decoder, generator, scheduler
        self.dtype, self.device = dtype, torch.device(device)
        self.forward = generator
        self.decode_latents = decoder.decode if decoder is not None else None
        self.encoder_out = getattr(decoder, "encoder_out", None)
        self.nearest = None   # the quantizer's nearest-code search (None: its pure-torch reference)

    # ---- sampling ------------------------------------------------------------------------------------
    def logits(self, ids: torch.Tensor, cls: torch.Tensor, guided: bool):
        """(cond, uncond or None) logits: the official two calls, each drawing its class-drop mask."""
        cond = self.forward(ids, cls, cond_drop_prob=0.0)
        return cond, (self.forward(ids, cls, cond_drop_prob=1.0) if guided else None)

    def start(self, seed, noise):
        """Before sampling: seed torch's global generator (the official way) when a seed is given."""
        if noise is None and seed is not None:
            seed_global_generator(seed)
        return None

    def step(self, s, cond, uncond, ids, *, seed=None, noise=None) -> torch.Tensor:
        """The reference step; uniforms drawn from the global generator in the official order unless given."""
        if noise is None:
            noise = (torch.empty_like(cond, dtype=torch.float).uniform_(0, 1),
                     torch.empty(ids.shape, device=ids.device, dtype=torch.float).uniform_(0, 1))
        return self.scheduler.step(s, cond, uncond, ids, noise=noise)

    def sample(self, cls: torch.Tensor, *, seed=None, noise=None) -> torch.Tensor:
        """Class ids (B,) on the device -> token ids (B, K)."""
        seed = self.start(seed, noise)
        ids = self.scheduler.initial_ids(cls.shape[0], cls.device)
        for s in self.scheduler:
            cond, uncond = self.logits(ids, cls, s.guided)
            ids = self.step(s, cond, uncond, ids, seed=seed, noise=None if noise is None else noise[s.step])
        return ids

    # ---- decode and encode --------------------------------------------------------------------------
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Validated token ids -> pixels, unclamped, in the runtime's dtype."""
        return self.decode_latents(self.decoder.tokens_to_latents(tokens).to(self.dtype))

    def decode_stages(self, tokens: torch.Tensor) -> dict:
        """Each decode stage alone on fixed inputs (benchmarks): vit_decoder and/or pixel_decoder."""
        return self.decoder.decode_stages(self.decoder.tokens_to_latents(tokens).to(self.dtype))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in the runtime's dtype -> token ids (B, K), or VAE tokens."""
        z_q, ids = self.decoder.quantize_latents(self.encoder_out(images), nearest=self.nearest)
        return ids if ids is not None else z_q

    def encode_stages(self, images: torch.Tensor) -> dict:
        """Each encode stage alone on fixed inputs (benchmarks): vit_encoder (images -> encoder output) and
        quantize (that output -> token ids, or VAE tokens)."""
        z = self.encoder_out(images)
        return {"vit_encoder": lambda: self.encoder_out(images),
                "quantize": lambda: self.decoder.quantize_latents(z, nearest=self.nearest)}

    def cache_key(self):
        """What a captured CUDA graph depends on besides the weights' storage (None: nothing)."""
        return None


class CompiledRuntime(EagerRuntime):
    """The eager runtime under `torch.compile` (see the module docstring)."""

    name = "compile"

    def __init__(self, decoder, generator, scheduler, *, dtype, device, compile_backend: str = "inductor"):
        super().__init__(decoder, generator, scheduler, dtype=dtype, device=device)
        self.compiled = []
        if generator is not None:
            network = self._compile(generator.logits, compile_backend, unbacked=True)

            def forward(ids, cls, cond_drop_prob):
                # The official forward: its class-drop draw (same RNG order), then the network, compiled.
                drop = torch.rand_like(cls, dtype=torch.float) < cond_drop_prob
                return network(ids, generator.class_tokens(cls, drop))

            self.forward = forward
        if decoder is not None:
            self.decode_latents = self._compile(decoder.decode, compile_backend)
            if self.encoder_out is not None:
                self.encoder_out = self._compile(self.encoder_out, compile_backend)

    def _compile(self, fn, backend, unbacked: bool = False):
        compiled = torch.compile(fn, backend=backend)
        mark = torch._dynamo.decorators.mark_unbacked if unbacked else torch._dynamo.maybe_mark_dynamic

        def call(*args):
            for a in args:  # batch size dynamic from the first call
                mark(a, 0)
            return compiled(*args)

        self.compiled.append(compiled)
        return call


class FastRuntime(EagerRuntime):
    """Batched guidance, fused kernels, prefix precompute (see the module docstring)."""

    name = "fast"
    seed_in_graph = True    # in-kernel noise from a seed tensor: the seed is a graph input

    def __init__(self, decoder, generator, scheduler, *, dtype, device):
        super().__init__(decoder, generator, scheduler, dtype=dtype, device=device)
        from titok.cpu_linear import packed_linears
        from titok.fast import FastDecode, FastEncode

        from titok_kernels.nearest_code import nearest_code

        self.fast_decode = FastDecode(decoder, self.device) if decoder is not None else None
        # encode: the eager runtime's, with the fast encoder and the nearest-code op
        self.encoder_out = FastEncode(decoder) if self.encoder_out is not None else None
        self.nearest = nearest_code
        # On a CPU in bf16 the generator's nn.Linear layers run titok.cpu_linear.linear (packed weights): a copy of
        # the module tree over the same parameters. Elsewhere the generator itself (linear would be F.linear).
        packs = generator is not None and self.device.type == "cpu" and dtype == torch.bfloat16
        self.network = packed_linears(generator) if packs else generator

    def logits(self, ids, cls, guided):
        """Guidance as ONE forward over 2B rows (cond and dropped-class tokens stacked); no random draw."""
        from titok.fast import generator_logits

        gen = self.network
        cond_tokens = gen.class_tokens(cls, False)
        if not guided:
            return generator_logits(gen, ids, cond_tokens), None
        both = generator_logits(gen, torch.cat([ids, ids]), torch.cat([cond_tokens, gen.class_tokens(cls, True)]))
        return both[: ids.shape[0]], both[ids.shape[0]:]

    def start(self, seed, noise):
        """The in-kernel noise seed; without one, drawn from torch's global generator (so that
        `torch.manual_seed` makes fast runs reproducible too, and two unseeded calls differ)."""
        return seed if noise is not None else kernel_seed(seed)

    def step(self, s, cond, uncond, ids, *, seed=None, noise=None) -> torch.Tensor:
        return self.scheduler.step(s, cond, uncond, ids, noise=noise, seed=seed, fused=True)

    def decode(self, tokens):
        return self.fast_decode(tokens, self.dtype)

    def decode_stages(self, tokens):
        return self.fast_decode.stages(tokens, self.dtype)

    def cache_key(self):
        prefix = self.fast_decode.prefix if self.fast_decode is not None else None
        return prefix.weights_key() if prefix is not None else None


RUNTIMES = {r.name: r for r in (EagerRuntime, CompiledRuntime, FastRuntime)}

CPU_BF16_ENV = "TITOK_CPU_BF16"


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU has native bf16 matrix units (AMX-BF16 or AVX512-BF16), as PyTorch's CPU dispatch sees it.

    oneDNN runs bf16 matrix products there about 4x faster than fp32 (measured on the 2-core AVX512-BF16
    development machine: 2048x1024x4096 matmul 62 GFLOP/s fp32, 265 bf16). TITOK_CPU_BF16=0/1 overrides.
    """
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        caps = torch._C._cpu._get_cpu_capability()
        return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))
    except (AttributeError, RuntimeError):
        return False


def default_dtype(mode: str, device: torch.device) -> tuple[torch.dtype, str]:
    """(dtype, why) a runtime runs in when the caller names none; the quantizer and sampling math stay fp32."""
    if mode != "fast":
        return torch.float32, "the reference math is fp32"
    if device.type == "cuda":
        return torch.bfloat16, "fast on CUDA: bf16 tensor cores"
    if device.type == "cpu" and cpu_has_bf16_matmul():
        return torch.bfloat16, "fast on a CPU with native bf16 matrix units (AMX/AVX512-BF16)"
    return torch.float32, f"fast on {device.type} without native bf16 matrix units"


class CUDAGraphs:
    """Capture a runtime's sampling (+ decode) once per (batch size, images or tokens) and replay it.

    At most `max_graphs` graphs are kept (least recently used dropped first, with its memory
    pool); `release()` frees them all. A graph is captured again when the runtime's prefix
    cache changed (weights changed in place). Token-only calls replay a graph without the decode.
    """

    def __init__(self, runtime: EagerRuntime, max_graphs: int = 4):
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
        self.runtime, self.max_graphs = runtime, max_graphs
        self.graphs: collections.OrderedDict = collections.OrderedDict()

    def release(self) -> None:
        self.graphs.clear()
        torch.cuda.empty_cache()

    def _body(self, cls, seed, images: bool):
        ids = self.runtime.sample(cls, seed=seed)
        return self.runtime.decode(ids).float().clamp(0.0, 1.0) if images else ids

    def _capture(self, cls: torch.Tensor, images: bool):
        device = cls.device
        static_cls = cls.clone()
        static_seed = torch.zeros(1, dtype=torch.int64, device=device) if self.runtime.seed_in_graph else None
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):  # warm-up: autotuning and lazy initialisation outside the capture
            for _ in range(2):
                self._body(static_cls, static_seed, images)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._body(static_cls, static_seed, images)
        return graph, static_cls, static_seed, out, self.runtime.cache_key()

    def run(self, cls: torch.Tensor, seed: int | None, *, images: bool) -> torch.Tensor:
        key = (cls.shape[0], images)
        entry = self.graphs.get(key)
        if entry is not None and entry[4] != self.runtime.cache_key():
            del self.graphs[key]
            entry = None
        if entry is None:
            while len(self.graphs) >= self.max_graphs:
                self.graphs.popitem(last=False)
            entry = self.graphs[key] = self._capture(cls, images)
        self.graphs.move_to_end(key)
        graph, static_cls, static_seed, out, _ = entry
        static_cls.copy_(cls)
        seed = self.runtime.start(seed, None)
        if static_seed is not None:
            static_seed.fill_(seed)
        graph.replay()
        return out.clone()
