"""Checks of what a model is given: images (B, 3, H, W) in [0, 1] at the model's size, token ids in range, class
ids, per-step noise, and whether a generator fits a token decoder. Every failure is a `TiTokInputError` (or its
`CheckpointError`) that names what was received."""
from __future__ import annotations

import torch

from titok.errors import CheckpointError, TiTokInputError


def check_images(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Validate a batch for the tokenizer; returns float images (B, 3, S, S) in [0, 1].

    Accepted: float tensors in [0, 1], or uint8 tensors taken as 0..255. Anything
    else (wrong rank, channels or size, other dtypes, NaN/inf, values outside
    [0, 1]) raises TiTokInputError naming the problem.
    """
    if not isinstance(images, torch.Tensor):
        raise TiTokInputError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise TiTokInputError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[1] != 3:
        raise TiTokInputError(f"images must have 3 channels (RGB), got {images.shape[1]} "
                              f"(shape {tuple(images.shape)})")
    if tuple(images.shape[2:]) != (image_size, image_size):
        raise TiTokInputError(f"images must be {image_size}x{image_size} for this model, got "
                              f"{images.shape[2]}x{images.shape[3]} (resize with titok.image_reading.load_image's rule)")
    if images.shape[0] == 0:
        raise TiTokInputError("images batch is empty")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.dtype.is_floating_point:
        raise TiTokInputError(f"images must be float in [0, 1] or uint8 in 0..255, got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise TiTokInputError("images contain NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise TiTokInputError(f"float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
                              "(pass uint8 for 0..255 data)")
    return images


def check_tokens(tokens: torch.Tensor, num_tokens: int, codebook_size: int) -> torch.Tensor:
    """Validate discrete token ids -> (B, K) int64; ids outside the codebook raise TiTokInputError."""
    if not isinstance(tokens, torch.Tensor):
        raise TiTokInputError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise TiTokInputError(f"token ids must be integers, got dtype {tokens.dtype}")
    if tokens.dim() == 3 and tokens.shape[1] == 1:
        tokens = tokens[:, 0]
    if tokens.dim() != 2 or tokens.shape[1] != num_tokens:
        raise TiTokInputError(f"tokens must have shape (B, {num_tokens}), got {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= codebook_size):
        bad = int(tokens.min()) if int(tokens.min()) < 0 else int(tokens.max())
        raise TiTokInputError(f"token id {bad} is outside the codebook 0..{codebook_size - 1}")
    return tokens.long()


def check_class_ids(condition: torch.Tensor, num_classes: int) -> None:
    """Class ids must be an integer tensor (B,) within [0, num_classes): a clear error otherwise.

    One device-to-host copy for a CUDA tensor (the bounds check), none for a CPU tensor."""
    if not isinstance(condition, torch.Tensor) or condition.dim() != 1:
        raise TiTokInputError(f"class ids must be a 1-D tensor, got {getattr(condition, 'shape', type(condition))}")
    if condition.dtype.is_floating_point or condition.dtype == torch.bool or condition.is_complex():
        raise TiTokInputError(f"class ids must be integers, got dtype {condition.dtype}")
    if condition.numel() == 0:
        raise TiTokInputError("class ids are empty: give at least one class")
    lo, hi = torch.stack([condition.min(), condition.max()]).tolist()
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise TiTokInputError(f"class id {bad} is outside 0..{num_classes - 1}")


def check_noise(noise, steps: int, batch: int, seq_len: int, vocab: int) -> None:
    """Given noise must hold one (sample (B, K, V), confidence (B, K)) pair per sampling step."""
    if len(noise) != steps:
        raise TiTokInputError(f"noise has {len(noise)} steps, the sampler runs {steps}")
    for u_sample, u_conf in noise:
        if tuple(u_sample.shape) != (batch, seq_len, vocab) or tuple(u_conf.shape) != (batch, seq_len):
            raise TiTokInputError(f"noise shapes {tuple(u_sample.shape)}, {tuple(u_conf.shape)} do not match "
                                  f"({batch}, {seq_len}, {vocab}) and ({batch}, {seq_len})")


def check_compatible(decoder, generator) -> None:
    """A generator fits a token decoder (a TiTok tokenizer, or the MaskGIT-VQGAN for the baseline) when its
    token count and codebook size are the decoder's."""
    g = generator.cfg
    codebook = decoder.codebook_size
    if not codebook:
        raise CheckpointError("this tokenizer has continuous (VAE) tokens; the MaskGIT generators need a "
                              "discrete-token tokenizer")
    if g.image_seq_len != decoder.num_tokens or g.codebook_size != codebook:
        raise CheckpointError(f"generator ({g.image_seq_len} tokens, codebook {g.codebook_size}) does not fit the "
                              f"tokenizer ({decoder.num_tokens} tokens, codebook {codebook})")
