"""Image input/output: validation, the resize rule, PSNR, and atomic file writes.

Resize rule (explicit and documented): an image of any size is resized so that
its SHORTER side equals the model's resolution (PIL bicubic, with antialiasing),
then the centre square of that size is cropped (left/top offsets rounded down).
Pixel values are scaled to [0, 1] from 8-bit RGB; greyscale and RGBA are
converted to RGB (alpha dropped).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from titok.errors import TiTokInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def load_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """Read an image file -> float tensor (3, size, size) in [0, 1], by the module's resize rule."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise TiTokInputError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = size / min(w, h)
            new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
            img = img.resize((new_w, new_h), Image.BICUBIC)
            left, top = (new_w - size) // 2, (new_h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise TiTokInputError(f"{path} is not a readable image ({type(exc).__name__})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def list_images(items: list[str]) -> list[Path]:
    """Expand folders to the image files in them (sorted); keep files as given."""
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise TiTokInputError(f"folder {p} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise TiTokInputError(f"image not found: {p}")
    return paths


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
                              f"{images.shape[2]}x{images.shape[3]} (resize with titok.images.load_image's rule)")
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


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float -> (B, H, W, 3) uint8, as the official sampler: clamp to [0, 1], x255, truncate."""
    return (images.detach().float().clamp(0.0, 1.0) * 255.0).permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of two batches in [0, 1] (clamped first); inf where identical."""
    mse = (a.float().clamp(0, 1) - b.float().clamp(0, 1)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """(B, H, W, 3) uint8 -> one (rows*H, cols*W, 3) grid image."""
    b, h, w, c = images.shape
    cols = columns or min(b, 8)
    rows = -(-b // cols)
    grid = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i in range(b):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i]
    return grid


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array as PNG, atomically (temporary name, then rename)."""
    from PIL import Image

    _atomic_write(Path(path), lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def save_json(path: str | os.PathLike, payload) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
    _atomic_write(Path(path), write)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, array)
    _atomic_write(Path(path), write)
