"""Image input/output: reading every pixel mode, the resize rule, PSNR, and safe file writes.

Reading (`read_image`, `load_image`): the file's first frame, turned upright by its EXIF
orientation tag (as phones store rotated pixels and every viewer shows them upright), then
converted to 8-bit RGB by its real range:
- 8-bit modes (1, L, P, RGB, RGBA, LA, PA, RGBX, RGBa, CMYK, YCbCr, LAB, HSV): PIL's conversion
  to RGB; alpha is dropped (no compositing), as before.
- 16-bit integer modes (I;16, I;16B, I;16L, I;16N): scaled to 8 bits, v * 255 / 65535, rounded.
- 32-bit integer mode (I): PIL's mode for 16-bit PGM/PPM and some TIFFs; values in 0..65535 are
  read as 16-bit; other values have no known range and are refused.
- 32-bit float mode (F): values in [0, 1] are read as [0, 1]; otherwise values in [0, 255] are
  read as 0..255 (PIL's own convention for F); negative, larger or non-finite values are refused.
- any other mode PIL reads but cannot convert to RGB is refused, naming the mode.
Images over MAX_IMAGE_PIXELS pixels (PIL's decompression-bomb limit) are refused, and so are
images so elongated that the resized intermediate would pass MAX_RESIZED_PIXELS.

Resize rule: the image is resized so that its SHORTER side equals the model's resolution
(PIL bicubic, with antialiasing), then the centre square of that size is cropped (left/top
offsets rounded down). Pixel values are scaled to [0, 1] from 8-bit RGB.

Writing: `OutputFiles` stages every output under a temporary name beside its final path and
renames them all at the end (`commit`), or removes them (`abort`): a failed run leaves no
output, and an existing file is replaced only when asked. Files get the permissions the
user's umask gives a new file.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from titok.errors import TiTokInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_IMAGE_PIXELS = 178_956_970        # PIL's DecompressionBombError limit (2 x Image.MAX_IMAGE_PIXELS)
MAX_RESIZED_PIXELS = 1 << 26          # the resized (short side = model size) image before the crop
# Formats an output image is written in, by its file extension: (PIL format, save options, max side).
SAVE_FORMATS = {
    ".png": ("PNG", {}, 2**31 - 1),
    ".jpg": ("JPEG", {"quality": 95}, 65535),
    ".jpeg": ("JPEG", {"quality": 95}, 65535),
    ".webp": ("WEBP", {"lossless": True}, 16383),
    ".bmp": ("BMP", {}, 2**31 - 1),
    ".tif": ("TIFF", {}, 2**31 - 1),
    ".tiff": ("TIFF", {}, 2**31 - 1),
}
_EIGHT_BIT_MODES = ("1", "L", "P", "RGB", "RGBA", "LA", "PA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV")
_ORIENTATION_TAG = 0x0112


# ---- reading ---------------------------------------------------------------------------------------

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


# ---- listing inputs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageInput:
    """An input image: its path, and the name its outputs take (`rel`: the file name for a file given
    directly, its path relative to the folder given for a file found in a folder)."""

    path: Path
    rel: Path


def list_images(items: list[str], *, recursive: bool = False) -> list[Path]:
    """Expand folders to the image files in them (sorted); keep files as given."""
    return [x.path for x in collect_images(items, recursive=recursive)]


def collect_images(items: list[str], *, recursive: bool = False, list_file: str | None = None) -> list[ImageInput]:
    """Files as given, folders expanded to their image files (sorted; with `recursive`, subfolders too,
    symbolic links to folders not followed; hidden files and folders skipped), then the entries of
    `list_file` (one path per line, relative to the current folder; blank lines and lines starting
    with '#' skipped; '-' reads the list from standard input)."""
    entries = [(item, None) for item in items]
    if list_file is not None:
        entries += [(line, where) for line, where in _read_list(list_file)]
    if not entries:
        raise TiTokInputError("no images given: name image files or folders, or --list FILE")
    found: list[ImageInput] = []
    for item, where in entries:
        p = Path(item)
        suffix = f" ({where})" if where else ""
        if p.is_dir():
            in_folder = _images_in(p, recursive)
            if not in_folder:
                hint = "" if recursive or not _has_subfolders(p) else "; it has subfolders: add --recursive"
                raise TiTokInputError(f"folder {p}{suffix} holds no images ({', '.join(IMAGE_SUFFIXES)}){hint}")
            found += [ImageInput(q, q.relative_to(p)) for q in in_folder]
        elif p.is_file():
            found.append(ImageInput(p, Path(p.name)))
        elif p.exists():
            raise TiTokInputError(f"{p}{suffix} is neither an image file nor a folder")
        else:
            raise TiTokInputError(f"image not found: {p}{suffix}")
    return found


def _read_list(list_file: str) -> list[tuple[str, str]]:
    import sys

    try:
        if list_file == "-":
            text = sys.stdin.read()
        else:
            text = Path(list_file).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise TiTokInputError(f"--list file not found: {list_file}") from None
    except IsADirectoryError:
        raise TiTokInputError(f"--list {list_file} is a folder; give a text file with one path per line") from None
    except UnicodeDecodeError:
        raise TiTokInputError(f"--list {list_file} is not a UTF-8 text file") from None
    except OSError as exc:
        raise TiTokInputError(f"--list {list_file} cannot be read ({exc.strerror or type(exc).__name__})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            if "\x00" in line:
                raise TiTokInputError(f"--list {list_file} line {n} holds a NUL character: not a path list")
            out.append((line, f"line {n} of {list_file}"))
    return out


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    def unreadable(exc: OSError):
        raise TiTokInputError(f"cannot read folder {exc.filename or folder} ({exc.strerror or type(exc).__name__})")

    if not recursive:
        try:
            return sorted(q for q in folder.iterdir()
                          if not q.name.startswith(".") and q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        except OSError as exc:
            unreadable(exc)
    found = []
    for root, dirs, files in os.walk(folder, onerror=unreadable, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES
                  and (Path(root) / f).is_file()]
    return sorted(found, key=lambda q: q.relative_to(folder).parts)


def _has_subfolders(folder: Path) -> bool:
    return any(q.is_dir() and not q.name.startswith(".") for q in folder.iterdir())


def output_names(inputs: list[ImageInput]) -> list[Path]:
    """The output name (without extension) of each input: its `rel` without extension, or with it
    (`x.bmp`, `x.webp`) where several inputs share a name without extension. Raises when two inputs
    would still share a name (the same file twice, or the same name in two folders)."""
    def key(p: Path) -> str:
        return str(p).casefold()  # case-insensitive file systems (macOS, Windows) see x.png and X.png as one

    stems: dict[str, int] = {}
    for x in inputs:
        stems[key(x.rel.with_suffix(""))] = stems.get(key(x.rel.with_suffix("")), 0) + 1
    names = [x.rel.with_suffix("") if stems[key(x.rel.with_suffix(""))] == 1 else x.rel for x in inputs]
    seen: dict[str, ImageInput] = {}
    for x, name in zip(inputs, names):
        other = seen.setdefault(key(name), x)
        if other is not x:
            if _same_file(other.path, x.path):
                raise TiTokInputError(f"{x.path} is given twice")
            raise TiTokInputError(f"{other.path} and {x.path} would both be written as {name}: give them in "
                                  "separate runs, or give their parent folder with --recursive")
    return names


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# ---- validating tensors ----------------------------------------------------------------------------

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


# ---- pixels ----------------------------------------------------------------------------------------

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


def image_format(path: str | os.PathLike) -> tuple[str, dict, int]:
    """(PIL format, save options, largest side) for an output image path, by its extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in SAVE_FORMATS:
        raise TiTokInputError(f"{path}: cannot tell the image format from the extension {suffix or '(none)'!r}; "
                              f"use one of {', '.join(SAVE_FORMATS)}")
    return SAVE_FORMATS[suffix]


# ---- writing ---------------------------------------------------------------------------------------

def _create_temp(folder: Path, name: str) -> Path:
    """A new empty file beside `folder/name`, created with mode 0666 minus the umask (as any new file)."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {folder / name}")


def _atomic_write(path: Path, write) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it to `path` (replacing it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path.parent, path.name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _png_writer(image: np.ndarray):
    from PIL import Image

    return lambda tmp: Image.fromarray(image).save(tmp, format="PNG")


def _image_writer(image: np.ndarray, path: Path):
    from PIL import Image

    fmt, options, _ = image_format(path)
    return lambda tmp: Image.fromarray(image).save(tmp, format=fmt, **options)


def _json_writer(payload):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, allow_nan=False)
            f.write("\n")
    return write


def _npy_writer(array: np.ndarray):
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, array)
    return write


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array as PNG, atomically (temporary name, then rename)."""
    _atomic_write(Path(path), _png_writer(image))


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array in the format its extension names (SAVE_FORMATS), atomically."""
    _atomic_write(Path(path), _image_writer(image, Path(path)))


def save_json(path: str | os.PathLike, payload) -> None:
    """Write JSON atomically. NaN and infinity are refused (they are not JSON): pass None instead."""
    _atomic_write(Path(path), _json_writer(payload))


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    _atomic_write(Path(path), _npy_writer(array))


def json_number(value: float) -> float | None:
    """A float for JSON: None where it is NaN or infinite (which JSON cannot hold)."""
    return value if math.isfinite(value) else None


class OutputFiles:
    """A run's output files: checked before any work, written under temporary names, renamed together.

    Rules: an output never replaces an input file (whatever `overwrite` says); an existing
    file is replaced only with `overwrite`; an output path that is a folder, or lies under a
    file, or in a folder that cannot be written, is refused. `check` raises TiTokInputError
    for all of this before any work; `stage` writes a file under a temporary name; `commit`
    renames every staged file to its name; `abort` removes the staged files and the folders
    this run created. Use as a context manager: leaving it by an exception aborts.
    """

    def __init__(self, *, overwrite: bool = False, inputs: list[Path] = ()):
        self.overwrite = overwrite
        self._inputs = [Path(p) for p in inputs]
        self._staged: list[tuple[Path, Path]] = []
        self._created_dirs: list[Path] = []
        self._probed: set[Path] = set()

    # -- before any work
    def check_folder(self, folder: str | os.PathLike, flag: str = "--out") -> Path:
        """An output folder: an existing folder, or a new one under a writable folder."""
        if not str(folder).strip():
            raise TiTokInputError(f"{flag} is empty; give a folder")
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise TiTokInputError(f"{flag} {folder} is a file; give a folder (it is created if missing)")
        self._check_writable(folder, flag)
        return folder

    def check_file(self, path: str | os.PathLike, flag: str = "--out") -> Path:
        """An output file path: not a folder, not an input, not an existing file unless overwriting."""
        if not str(path).strip():
            raise TiTokInputError(f"{flag} is empty; give a file name")
        path = Path(path)
        if path.is_dir():
            raise TiTokInputError(f"{flag} {path} is a folder; give a file name")
        if path.exists():
            if any(_same_file(path, p) for p in self._inputs):
                raise TiTokInputError(f"{flag} {path} is an input file: an output never replaces an input")
            if not path.is_file():
                raise TiTokInputError(f"{flag} {path} exists and is not a regular file")
            if not self.overwrite:
                raise TiTokInputError(f"{path} exists; pass --overwrite to replace it (or choose another {flag})")
        self._check_writable(path.parent, flag)
        return path

    def _check_writable(self, folder: Path, flag: str) -> None:
        existing = folder
        while not existing.exists():
            if existing.is_symlink():
                raise TiTokInputError(f"{flag}: {existing} is a broken symbolic link")
            existing = existing.parent
        if not existing.is_dir():
            raise TiTokInputError(f"{flag}: {existing} is a file, so {folder} cannot be created")
        if existing in self._probed:
            return
        try:
            os.unlink(_create_temp(existing, "titok-write-test"))
        except OSError as exc:
            raise TiTokInputError(f"{flag}: cannot write in {existing} ({exc.strerror or type(exc).__name__})"
                                  ) from None
        self._probed.add(existing)

    # -- writing
    def stage(self, path: Path, write) -> None:
        path = Path(path)
        self._make_dirs(path.parent)
        tmp = _create_temp(path.parent, path.name)
        self._staged.append((tmp, path))
        write(tmp)

    def stage_png(self, path: Path, image: np.ndarray) -> None:
        self.stage(path, _png_writer(image))

    def stage_image(self, path: Path, image: np.ndarray) -> None:
        self.stage(path, _image_writer(image, Path(path)))

    def stage_json(self, path: Path, payload) -> None:
        self.stage(path, _json_writer(payload))

    def stage_npy(self, path: Path, array: np.ndarray) -> None:
        self.stage(path, _npy_writer(array))

    def commit(self) -> None:
        """Rename every staged file to its name; without `overwrite`, an existing name (made meanwhile by
        another program) is not replaced: TiTokInputError, and nothing of this run is left."""
        if not self.overwrite:
            for tmp, final in self._staged:
                if final.exists():
                    raise TiTokInputError(f"{final} was created while this run worked; nothing was written "
                                          "(pass --overwrite to replace it)")
        for i, (tmp, final) in enumerate(self._staged):
            os.replace(tmp, final)
            self._staged[i] = (final, final)
        self._staged.clear()
        self._created_dirs.clear()

    def abort(self) -> None:
        for tmp, final in self._staged:
            if tmp != final and os.path.lexists(tmp):
                os.unlink(tmp)
        self._staged.clear()
        for d in reversed(self._created_dirs):
            try:
                d.rmdir()
            except OSError:
                pass
        self._created_dirs.clear()

    def _make_dirs(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            d.mkdir()
            self._created_dirs.append(d)

    def __enter__(self) -> "OutputFiles":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._staged:
            self.abort()
