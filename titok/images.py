"""Images as arrays: 8-bit conversion, PSNR, grids; and, for the callers of the old single module, the names
of `titok.image_reading` (reading files), `titok.inputs` (input discovery), `titok.checks` (tensor checks) and
`titok.outputs` (atomic writes, `OutputFiles`), re-exported.
"""
from __future__ import annotations

import numpy as np
import torch

from titok.checks import check_images, check_tokens
from titok.image_reading import (IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, MAX_RESIZED_PIXELS, load_image,
                                 read_image)
from titok.inputs import ImageInput, collect_images, list_images, output_names
from titok.outputs import (SAVE_FORMATS, OutputFiles, atomic_write, create_temp, image_format,
                           json_number, save_image, save_json, save_npy, save_png)
from titok.errors import TiTokInputError

__all__ = ["IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS", "MAX_RESIZED_PIXELS", "SAVE_FORMATS", "ImageInput", "OutputFiles",
           "atomic_write", "check_images", "check_tokens", "collect_images", "create_temp", "grid_layout",
           "image_format", "image_grid", "json_number", "list_images", "load_image", "output_names", "place_in_grid",
           "psnr", "read_image", "save_image", "save_json", "save_npy", "save_png", "to_uint8"]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float -> (B, H, W, 3) uint8, as the official sampler: clamp to [0, 1], x255, truncate."""
    return (images.detach().float().clamp(0.0, 1.0) * 255.0).permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of two batches in [0, 1] (clamped first); inf where identical."""
    mse = (a.float().clamp(0, 1) - b.float().clamp(0, 1)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)


def grid_layout(count: int, columns: int | None = None) -> tuple[int, int]:
    """(rows, columns) of a grid of `count` images: `columns` (default up to 8), at most `count`."""
    if count < 1:
        raise TiTokInputError("a grid needs at least one image")
    if columns is not None and columns < 1:
        raise TiTokInputError(f"grid columns must be >= 1, got {columns}")
    cols = min(columns or 8, count)
    return -(-count // cols), cols


def place_in_grid(grid: np.ndarray, index: int, image: np.ndarray, columns: int) -> None:
    """Copy one (H, W, 3) image into cell `index` (row-major) of a grid."""
    h, w = image.shape[:2]
    r, q = divmod(index, columns)
    grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = image


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """(B, H, W, 3) uint8 -> one (rows*H, cols*W, 3) grid image (cols: `columns`, default up to 8, at most B)."""
    b, h, w, c = images.shape
    rows, cols = grid_layout(b, columns)
    grid = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i in range(b):
        place_in_grid(grid, i, images[i], cols)
    return grid
