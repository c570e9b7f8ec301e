"""One MaskGIT generator training step, the official `train_one_epoch_generator` computation.

Contract (the why is in docs/training.md):
- `mask_tokens(tokens, mask_token_id)`: the official arccos masking, drawing from torch's global RNG in
  the official order (`uniform_(0, 1)` of B timesteps, then `rand(B, K)`), so that after the same
  `torch.manual_seed` it returns the official masked tokens and mask.
- `masked_lm_loss(logits, targets, masks)`: the official MLM loss (cross-entropy with label smoothing
  over every position, unmasked positions weighted `unmasked_weight`, normalised by the weight sum + 1e-8).
- `param_groups(model, weight_decay)`: the official AdamW grouping (no decay for 1-D parameters and
  for names holding ln / bias / latent_tokens / mask_token / embedding / norm / gamma / embed).
- `TrainStep(model, settings)`: mask -> forward (`cond_drop_prob = class_label_dropout`, the class-drop
  draw after the masking draws, as the official) -> loss -> backward -> clip at `max_grad_norm` ->
  AdamW step -> zero grads. `runtime="reference"` is the official fp32 computation; `runtime="fast"`
  runs the trunk under bf16 autocast, the projection + loss through the fused, row-chunked
  `titok_kernels.masked_lm_loss` (bf16; Triton on CUDA) and AdamW fused (torch's `fused=True`).
The learning rate is constant (`settings.lr`): the official warm-up schedule is not part of a step.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

RUNTIMES = ("reference", "fast")
_NO_DECAY_NAME_PARTS = ("ln", "bias", "latent_tokens", "mask_token", "embedding", "norm", "gamma", "embed")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """The official generator training settings (configs/training/generator/maskgit.yaml)."""

    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.96)
    weight_decay: float = 0.03
    max_grad_norm: float | None = 1.0
    class_label_dropout: float = 0.1
    label_smoothing: float = 0.1
    unmasked_weight: float = 0.1


def mask_tokens(tokens: torch.Tensor, mask_token_id: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K) token ids -> (masked ids, bool mask (B, K)); arccos schedule, at least one masked per row."""
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (batch, num_tokens), got shape {tuple(tokens.shape)}")
    batch, seq = tokens.shape
    t = torch.zeros(batch, device=tokens.device).uniform_(0.0, 1.0, generator=generator)
    ratio = (torch.acos(t) / (math.pi * 0.5)).clamp(min=1e-6, max=1.0)
    num_masked = (seq * ratio).round().clamp(min=1)
    order = torch.rand(batch, seq, device=tokens.device, generator=generator).argsort(dim=-1)
    masks = order < num_masked[:, None]
    return torch.where(masks, mask_token_id, tokens), masks


def loss_weights(masks: torch.Tensor, unmasked_weight: float, dtype: torch.dtype) -> torch.Tensor:
    """Per-position weights: 1 where masked, `unmasked_weight` elsewhere (the official formula)."""
    m = masks.to(dtype)
    return (1.0 - m) * unmasked_weight + m


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor, *,
                   label_smoothing: float = 0.1, unmasked_weight: float = 0.1) -> torch.Tensor:
    """Logits (B, K, V), targets (B, K), masks (B, K) -> the official weighted, smoothed mean (a scalar)."""
    per_position = F.cross_entropy(logits.transpose(1, 2), targets, label_smoothing=label_smoothing,
                                   reduction="none")
    weights = loss_weights(masks, unmasked_weight, per_position.dtype)
    return (per_position * weights).sum() / (weights.sum() + 1e-8)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """The official two AdamW groups: [no-decay (gains, biases, embeddings), decayed (the rest)]."""
    def no_decay(name: str, p: torch.Tensor) -> bool:
        return p.ndim < 2 or any(part in name for part in _NO_DECAY_NAME_PARTS)

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": weight_decay}]


def make_optimizer(model: torch.nn.Module, settings: TrainSettings, runtime: str = "reference"):
    """AdamW over the official groups; `fast` asks for torch's fused implementation (CPU and CUDA)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    extra = {"fused": True} if runtime == "fast" else {}
    return torch.optim.AdamW(param_groups(model, settings.weight_decay), lr=settings.lr,
                             betas=settings.betas, **extra)


def head_features(model: torch.nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.nn.Linear]:
    """(the K image rows that enter the vocabulary projection, that projection) of a generator's trunk output."""
    if hasattr(model, "norm"):  # U-ViT: final LayerNorm, then lm_head
        return model.norm(hidden)[:, 1:], model.lm_head
    return hidden[:, 1:], model.model.lm_head


class TrainStep:
    """Callable training step of a MaskGIT generator (`titok.generator`), one optimizer per instance."""

    def __init__(self, model: torch.nn.Module, settings: TrainSettings = TrainSettings(),
                 runtime: str = "reference"):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.model, self.settings, self.runtime = model, settings, runtime
        self.optimizer = make_optimizer(model, settings, runtime)

    def loss(self, tokens: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask, forward in train mode, loss: returns (loss, masks); draws from the global RNG."""
        s = self.settings
        masked, masks = mask_tokens(tokens, self.model.mask_token_id)
        self.model.train()
        if self.runtime == "fast":
            loss = self._fast_loss(masked, tokens, condition, masks)
        else:
            logits = self.model(masked, condition, cond_drop_prob=s.class_label_dropout)
            loss = masked_lm_loss(logits, tokens, masks, label_smoothing=s.label_smoothing,
                                  unmasked_weight=s.unmasked_weight)
        return loss, masks

    def _fast_loss(self, masked, tokens, condition, masks) -> torch.Tensor:
        """bf16-autocast trunk, then the fused projection + loss (titok_kernels.masked_lm_loss), bf16."""
        from titok_kernels.masked_lm_loss import masked_lm_loss as fused_masked_lm_loss

        s, model = self.settings, self.model
        drop = torch.rand_like(condition, dtype=torch.float) < s.class_label_dropout  # the official draw
        ids = torch.cat([model.class_tokens(condition, drop)[:, None], masked], dim=1)
        with torch.autocast(tokens.device.type, dtype=torch.bfloat16):
            features, head = head_features(model, model.hidden_states(ids))
        features = features.to(torch.bfloat16).reshape(-1, features.shape[-1])
        weights = loss_weights(masks, s.unmasked_weight, torch.float32).reshape(-1)
        return fused_masked_lm_loss(features, head.weight.to(torch.bfloat16), head.bias.to(torch.bfloat16),
                                    tokens.reshape(-1), weights, label_smoothing=s.label_smoothing)

    def backward(self, loss: torch.Tensor) -> torch.Tensor | None:
        """Backward and clipping; returns the total gradient norm before clipping (None without clipping)."""
        loss.backward()
        if self.settings.max_grad_norm is None:
            return None
        return torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)

    def __call__(self, tokens: torch.Tensor, condition: torch.Tensor) -> dict:
        """One full step on pre-tokenized data: tokens (B, K) int64, condition (B,) class ids."""
        loss, masks = self.loss(tokens, condition)
        grad_norm = self.backward(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.detach(), "masks": masks, "grad_norm": grad_norm}
