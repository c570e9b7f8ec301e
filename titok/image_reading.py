"""Reading an image file: the first frame, upright by its EXIF orientation, 8-bit RGB by its real range, resized.

Modes: 8-bit modes (1, L, P, RGB, RGBA, LA, PA, RGBX, RGBa, CMYK, YCbCr, LAB, HSV) by PIL's conversion to RGB, alpha
dropped; 16-bit integer modes (I;16*) scaled v * 255 / 65535, rounded; mode I with values in 0..65535 read as
16-bit (other values refused); mode F in [0, 1] as [0, 1], else in [0, 255] as 0..255 (negative, larger or
non-finite refused); any other mode refused, naming it. Images over MAX_IMAGE_PIXELS (PIL's decompression-bomb
limit) are refused, and so are images so elongated that the resized intermediate would pass MAX_RESIZED_PIXELS.
Resize rule (`load_image`): the SHORTER side to the model's resolution (PIL bicubic, antialiased), then the centre
square (offsets rounded down); values scaled to [0, 1].
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from titok.errors import TiTokInputError


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


MAX_IMAGE_PIXELS = 178_956_970        # PIL's DecompressionBombError limit (2 x Image.MAX_IMAGE_PIXELS)


MAX_RESIZED_PIXELS = 1 << 26          # the resized (short side = model size) image before the crop


_EIGHT_BIT_MODES = ("1", "L", "P", "RGB", "RGBA", "LA", "PA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV")


_ORIENTATION_TAG = 0x0112


def read_image(path: str | os.PathLike):
    """Read an image file -> an upright 8-bit RGB PIL image (see the module docstring for each mode)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise TiTokInputError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning and PIL's format warnings
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise _too_large(path, w, h)
                orientation = _orientation(img)
                img.load()
                rgb = _to_rgb(img, path)
    except TiTokInputError:
        raise
    except Image.DecompressionBombError:
        raise TiTokInputError(f"{path} is too large: more than {MAX_IMAGE_PIXELS:,} pixels") from None
    except MemoryError:
        raise TiTokInputError(f"{path} is too large to decode in the memory available") from None
    except Exception as exc:  # PIL raises many types for corrupt data (OSError, SyntaxError, struct.error, ...)
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise TiTokInputError(f"{path} is not a readable image ({reason})") from None
    return _upright(rgb, orientation)


def load_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """Read an image file -> float tensor (3, size, size) in [0, 1], by the module's resize rule."""
    from PIL import Image

    img = read_image(path)
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if new_w * new_h > MAX_RESIZED_PIXELS:
        raise TiTokInputError(f"{path} is {w}x{h} pixels: too elongated to resize (its short side to {size} "
                              f"would make it {new_w}x{new_h})")
    img = img.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def _too_large(path: Path, w: int, h: int) -> TiTokInputError:
    return TiTokInputError(f"{path} is too large: {w}x{h} = {w * h:,} pixels, more than {MAX_IMAGE_PIXELS:,}")


def _orientation(img) -> int:
    """The EXIF orientation tag (1..8), 1 when absent or unreadable (a broken EXIF block is not a broken image)."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - any EXIF parsing failure means "no orientation"
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright(img, orientation: int):
    from PIL import Image

    ops = {2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
           4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE], 6: [Image.Transpose.ROTATE_270],
           7: [Image.Transpose.TRANSVERSE], 8: [Image.Transpose.ROTATE_90]}
    for op in ops.get(orientation, []):
        img = img.transpose(op)
    return img


def _to_rgb(img, path: Path):
    """A loaded PIL image of any mode -> 8-bit RGB by the mode's real range (module docstring)."""
    mode = img.mode
    if mode in _EIGHT_BIT_MODES:
        return img.convert("RGB")
    if mode.startswith("I;16"):
        values = np.asarray(img).astype(np.float64)
        return _grey(values / 65535.0)
    if mode == "I":
        values = np.asarray(img)
        lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise TiTokInputError(f"{path} has 32-bit integer pixels in [{lo}, {hi}]: no known range (read are "
                                  "8-bit, 16-bit, or 32-bit integers within 0..65535); convert it to 8 or 16 bits")
        return _grey(values.astype(np.float64) / 65535.0)
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if values.size and not np.isfinite(values).all():
            raise TiTokInputError(f"{path} has float pixels with NaN or infinite values")
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            return _grey(values)
        if lo >= 0.0 and hi <= 255.0:
            return _grey(values / 255.0)
        raise TiTokInputError(f"{path} has float pixels in [{lo:.4g}, {hi:.4g}]: read are float images in [0, 1] "
                              "or [0, 255]; rescale it")
    try:
        return img.convert("RGB")
    except (ValueError, OSError):
        raise TiTokInputError(f"{path} has pixel mode {mode!r}, which cannot be converted to RGB") from None


def _grey(unit: np.ndarray):
    """Values in [0, 1] -> an 8-bit RGB PIL image (rounded)."""
    from PIL import Image

    grey = np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")
