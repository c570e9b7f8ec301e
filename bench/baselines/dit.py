"""DiT-XL/2 baseline: diffusers' `DiTTransformer2DModel` + the sd-vae-ft-ema `AutoencoderKL` decoder.

What one generated image costs (the DiT paper's sampling protocol, as its official `sample.py`):
- 250 DDPM steps (a 1000-step linear beta schedule, 1e-4..0.02, respaced to 250);
- classifier-free guidance as ONE transformer call over a doubled batch (B conditional rows and B
  rows with the null class 1000), guidance scale 4.0 (speed does not depend on it);
- learned sigma: the transformer emits 8 channels; the first 4 are the noise prediction (eps)
  that the guidance combines and the scheduler (diffusers `DDPMScheduler`, its step cost
  included) consumes; the other 4 are dropped, as diffusers' DiT pipeline does;
- the VAE decoder on latents / 0.18215, images mapped from [-1, 1] to [0, 1].
The latents and the scheduler arithmetic stay fp32 in every mode; the transformer and the VAE run
in the runner's dtype.

Configuration (`dit_xl_2`): 28 layers, 16 heads x 72 = width 1152, patch 2, 4 latent channels in,
8 out, `ada_norm_zero`, 1000 classes; sample size 32 (256px) or 64 (512px). VAE: block channels
(128, 256, 512, 512), 2 layers per block, 4 latent channels. Random weights, built directly on the
target device (nothing is downloaded).

Parameters: diffusers' DiT keeps one copy of the timestep + class embedder in each of the 28
blocks (the official model shares one), so the module has 749.8M parameters; without the 27
duplicates it has the DiT paper's 675M (`parameter_counts`). The duplicates add 28 tiny
per-image MLPs, not per-token work (counted below).

FLOPs (2 per multiply-add; matmuls, convolutions and the two attention products; norms,
activations, softmax and elementwise work not counted), per image:
    transformer forward, one row, T = (latent / patch)^2 tokens, width W, depth L:
        patch embed 2*T*(C*p^2)*W
        + L * [ 2*T*W*3W + 4*T^2*W + 2*T*W*W + 2*2*T*W*4W          (qkv, attention, proj, MLP)
                + 2*(256*W + W*W) + 2*W*6W ]                         (per-block embedder, adaLN-zero)
        + 2*(256*W + W*W) + 2*W*2W + 2*T*W*(p^2*C_out)               (final embedder, modulation, head)
      = 237.3 GFLOP at 256px (the DiT paper's 118.6 "Gflops" are multiply-adds), 1049.2 at 512px;
    generator = steps * 2 rows (guidance) * forward;
    VAE decoder (`vae_decoder_flops`): post-quant 1x1 conv, conv_in, the mid block (2 resnets and a
    one-head attention), per up block (layers_per_block + 1) resnets (two 3x3 convs, a 1x1 shortcut
    when channels change) and a 3x3 conv after each 2x nearest upsampling, conv_out.
`tests/test_bench_sampling.py` checks both formulas against torch's FlopCounterMode on small
configurations of the same diffusers modules.
"""
from __future__ import annotations

import copy
import dataclasses

import torch

NULL_CLASS_NOTE = "the null class (index num_classes) is the unconditional row of the doubled batch"


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    image_size: int = 256
    num_layers: int = 28
    num_heads: int = 16
    head_dim: int = 72
    patch_size: int = 2
    latent_channels: int = 4
    num_classes: int = 1000
    vae_channels: tuple = (128, 256, 512, 512)
    vae_layers_per_block: int = 2
    num_train_timesteps: int = 1000
    steps: int = 250
    guidance_scale: float = 4.0
    latent_scale: float = 0.18215

    @property
    def width(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)

    @property
    def tokens(self) -> int:
        return (self.latent_size // self.patch_size) ** 2


def dit_xl_2(image_size: int = 256) -> DiTConfig:
    """DiT-XL/2 with the sd-vae-ft-ema VAE, at 256 or 512 pixels."""
    if image_size not in (256, 512):
        raise ValueError(f"DiT-XL/2 exists at 256 and 512 pixels, got {image_size}")
    return DiTConfig(image_size=image_size)


# A small configuration of the same modules, for tests.
TINY_DIT = DiTConfig(image_size=64, num_layers=2, num_heads=2, head_dim=16, num_classes=10,
                     vae_channels=(32, 32, 32), vae_layers_per_block=1, steps=4)


# ---- FLOPs ----------------------------------------------------------------------------------------

def transformer_forward_flops(cfg: DiTConfig) -> int:
    """One DiT forward for one row (see the module docstring)."""
    t, w, p = cfg.tokens, cfg.width, cfg.patch_size
    out_channels = 2 * cfg.latent_channels
    embedder = 2 * (256 * w + w * w)
    block = (2 * t * w * 3 * w + 4 * t * t * w + 2 * t * w * w + 2 * 2 * t * w * 4 * w
             + embedder + 2 * w * 6 * w)
    head = embedder + 2 * w * 2 * w + 2 * t * w * (p * p * out_channels)
    return 2 * t * (cfg.latent_channels * p * p) * w + cfg.num_layers * block + head


def vae_decoder_flops(cfg: DiTConfig) -> int:
    """The AutoencoderKL decoder (with its post-quant conv) for one image (see the module docstring)."""
    def conv(side, c_in, c_out, k):
        return 2 * side * side * c_in * c_out * k * k

    def resnet(side, c_in, c_out):
        return conv(side, c_in, c_out, 3) + conv(side, c_out, c_out, 3) + (conv(side, c_in, c_out, 1)
                                                                            if c_in != c_out else 0)

    side, lat = cfg.latent_size, cfg.latent_channels
    chans = list(reversed(cfg.vae_channels))
    top = chans[0]
    total = conv(side, lat, lat, 1) + conv(side, lat, top, 3)
    total += 2 * resnet(side, top, top) + 4 * 2 * side * side * top * top + 4 * (side * side) ** 2 * top
    prev = top
    for i, c in enumerate(chans):
        for j in range(cfg.vae_layers_per_block + 1):
            total += resnet(side, prev if j == 0 else c, c)
        prev = c
        if i != len(chans) - 1:
            side *= 2
            total += conv(side, c, c, 3)
    return total + conv(side, chans[-1], 3, 3)


def dit_flops(cfg: DiTConfig) -> dict:
    """Per-image FLOPs of class id -> image with `cfg.steps` guided steps, by stage, plus the total."""
    stages = {"generator": cfg.steps * 2 * transformer_forward_flops(cfg), "vit_decoder": 0,
              "pixel_decoder": vae_decoder_flops(cfg)}
    return {"generator_forwards": 2 * cfg.steps, **stages, "total": sum(stages.values())}


# ---- models ---------------------------------------------------------------------------------------

def build_dit(cfg: DiTConfig, device: torch.device | str = "cpu"):
    """(transformer, vae) with random weights (diffusers' own initialisation), built on `device`, eval."""
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    n = len(cfg.vae_channels)
    with torch.device(device):
        transformer = DiTTransformer2DModel(
            num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim, in_channels=cfg.latent_channels,
            out_channels=2 * cfg.latent_channels, num_layers=cfg.num_layers, patch_size=cfg.patch_size,
            sample_size=cfg.latent_size, norm_type="ada_norm_zero", num_embeds_ada_norm=cfg.num_classes)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(cfg.vae_channels),
            layers_per_block=cfg.vae_layers_per_block, latent_channels=cfg.latent_channels,
            sample_size=cfg.image_size, scaling_factor=cfg.latent_scale)
    for m in (transformer, vae):
        m.eval().requires_grad_(False)
    return transformer, vae


def parameter_counts(transformer) -> dict:
    """Total parameters, and without the per-block copies of the timestep/class embedder (DiT paper count)."""
    total = sum(p.numel() for p in transformer.parameters())
    blocks = transformer.transformer_blocks
    per_block = sum(p.numel() for p in blocks[0].norm1.emb.parameters())
    return {"total": total, "unique_embedder": total - (len(blocks) - 1) * per_block}


def make_scheduler(cfg: DiTConfig):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule="linear", beta_start=1e-4,
                          beta_end=0.02, clip_sample=False, variance_type="fixed_small",
                          prediction_type="epsilon")
    sched.set_timesteps(cfg.steps)
    return sched


class DiTRunner:
    """DiT-XL/2 class ids -> images, in mode "reference" (eager, as the official script) or "compile".

    `run_steps`: run only the first N of the `cfg.steps` timesteps (for projection; None = all).
    """

    family = "dit"
    MODES = ("reference", "compile")

    def __init__(self, transformer, vae, cfg: DiTConfig, *, mode: str = "reference",
                 dtype: torch.dtype = torch.float32, run_steps: int | None = None, seed: int = 0):
        if mode not in self.MODES:
            raise ValueError(f"DiT mode must be one of {self.MODES}, got {mode!r}")
        if run_steps is not None and not 1 <= run_steps <= cfg.steps:
            raise ValueError(f"run_steps must be in 1..{cfg.steps}, got {run_steps}")
        self.cfg, self.mode, self.dtype, self.seed = cfg, mode, dtype, seed
        self.device = next(transformer.parameters()).device
        self.cuda_graph = False
        self.transformer = self._cast(transformer)
        self.vae = self._cast(vae)
        self.scheduler = make_scheduler(cfg)
        self.timesteps = [int(t) for t in self.scheduler.timesteps][: run_steps or cfg.steps]
        self.steps = len(self.timesteps)
        self._forward, self._vae_decode = self.transformer, self.vae.decode
        if mode == "compile":
            self._forward = torch.compile(self.transformer)
            self._vae_decode = torch.compile(self.vae.decode)

    def _cast(self, module):
        if next(module.parameters()).dtype == self.dtype:
            return module
        return copy.deepcopy(module).to(self.dtype)

    # ---- the pieces of one generation -------------------------------------------------------------
    def _eps(self, latents: torch.Tensor, t: int, labels2: torch.Tensor) -> torch.Tensor:
        """Guided noise prediction: one transformer call over [cond rows; null-class rows]."""
        x2 = torch.cat([latents, latents]).to(self.dtype)
        t2 = torch.full((x2.shape[0],), t, device=self.device, dtype=torch.long)
        out = self._forward(x2, timestep=t2, class_labels=labels2, return_dict=False)[0]
        return self._combine(out)

    def _combine(self, out: torch.Tensor) -> torch.Tensor:
        eps = out[:, : self.cfg.latent_channels].float()   # learned sigma: keep the eps channels
        cond, uncond = eps.chunk(2)
        return uncond + self.cfg.guidance_scale * (cond - uncond)

    def _labels2(self, class_ids: torch.Tensor) -> torch.Tensor:
        cls = class_ids.to(self.device, torch.long)
        return torch.cat([cls, torch.full_like(cls, self.cfg.num_classes)])

    @torch.no_grad()
    def sample(self, class_ids: torch.Tensor) -> torch.Tensor:
        """Class ids (B,) -> latents (B, 4, s, s) after the steps."""
        labels2 = self._labels2(class_ids)
        b, s = labels2.shape[0] // 2, self.cfg.latent_size
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        latents = torch.randn(b, self.cfg.latent_channels, s, s, device=self.device, generator=gen)
        for t in self.timesteps:
            eps = self._eps(latents, t, labels2)
            latents = self.scheduler.step(eps, t, latents, generator=gen).prev_sample
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images (B, 3, H, W) float32 in [0, 1]."""
        images = self._vae_decode((latents / self.cfg.latent_scale).to(self.dtype), return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0.0, 1.0)

    def generate(self, class_ids: torch.Tensor) -> torch.Tensor:
        return self.decode(self.sample(class_ids))

    def units(self) -> int:
        """Projection units run: transformer calls (one doubled batch per step)."""
        return self.steps

    def full_units(self) -> int:
        return self.cfg.steps

    def flops(self) -> dict:
        return dit_flops(self.cfg)

    def stage_functions(self, batch: int) -> dict:
        """Each stage of one generation alone, on fixed inputs, over the runner's steps."""
        s, c = self.cfg.latent_size, self.cfg.latent_channels
        labels2 = self._labels2(torch.arange(batch, device=self.device) % self.cfg.num_classes)
        latents = torch.randn(batch, c, s, s, device=self.device)
        out = torch.randn(2 * batch, 2 * c, s, s, device=self.device, dtype=self.dtype)

        @torch.no_grad()
        def forwards():
            x2 = torch.cat([latents, latents]).to(self.dtype)
            for t in self.timesteps:
                t2 = torch.full((x2.shape[0],), t, device=self.device, dtype=torch.long)
                self._forward(x2, timestep=t2, class_labels=labels2, return_dict=False)

        @torch.no_grad()
        def steps():
            for t in self.timesteps:
                self.scheduler.step(self._combine(out), t, latents).prev_sample

        @torch.no_grad()
        def pixel_decoder():
            return self.decode(latents)

        return {"generator_forwards": forwards, "sampling_steps": steps, "pixel_decoder": pixel_decoder}

    def describe(self) -> dict:
        return {"family": self.family, "mode": self.mode, "dtype": str(self.dtype).replace("torch.", ""),
                "device": str(self.device), "cuda_graph": False, "steps": self.steps, "full_steps": self.cfg.steps,
                "guidance_scale": self.cfg.guidance_scale, "scheduler": "diffusers DDPMScheduler (linear betas, "
                f"{self.cfg.num_train_timesteps} -> {self.cfg.steps} steps, fixed_small variance)",
                "image_size": self.cfg.image_size}
