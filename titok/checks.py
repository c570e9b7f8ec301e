"""Checks of the tensors a model is given: images (B, 3, H, W) in [0, 1] at the model's size, token ids in range."""
from __future__ import annotations

import torch

from titok.errors import TiTokInputError


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
