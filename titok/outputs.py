"""Writing outputs safely: `atomic_write` (a temporary file beside the target, renamed when complete), the `save_*`
writers, output image formats by extension, and `OutputFiles`, which stages every output of a run under a
temporary name and renames them all at the end (`commit`) or removes them (`abort`): a failed run leaves no
output, an existing file is replaced only when asked, an output never replaces an input. Files get the
permissions the user's umask gives a new file.
"""
from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path

import numpy as np

from titok.errors import TiTokInputError
from titok.inputs import _same_file


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


def image_format(path: str | os.PathLike) -> tuple[str, dict, int]:
    """(PIL format, save options, largest side) for an output image path, by its extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in SAVE_FORMATS:
        raise TiTokInputError(f"{path}: cannot tell the image format from the extension {suffix or '(none)'!r}; "
                              f"use one of {', '.join(SAVE_FORMATS)}")
    return SAVE_FORMATS[suffix]


def create_temp(folder: Path, name: str) -> Path:
    """A new empty file beside `folder/name`, created with mode 0666 minus the umask (as any new file)."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {folder / name}")


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it to `path` (replacing it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp(path.parent, path.name)
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
    atomic_write(Path(path), _png_writer(image))


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array in the format its extension names (SAVE_FORMATS), atomically."""
    atomic_write(Path(path), _image_writer(image, Path(path)))


def save_json(path: str | os.PathLike, payload) -> None:
    """Write JSON atomically. NaN and infinity are refused (they are not JSON): pass None instead."""
    atomic_write(Path(path), _json_writer(payload))


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    atomic_write(Path(path), _npy_writer(array))


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
            os.unlink(create_temp(existing, "titok-write-test"))
        except OSError as exc:
            raise TiTokInputError(f"{flag}: cannot write in {existing} ({exc.strerror or type(exc).__name__})"
                                  ) from None
        self._probed.add(existing)

    # -- writing
    def stage(self, path: Path, write) -> None:
        path = Path(path)
        self._make_dirs(path.parent)
        tmp = create_temp(path.parent, path.name)
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
