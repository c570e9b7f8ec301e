"""The inputs of an image command: files, folders (sorted, hidden files skipped; `recursive` for subfolders),
list files (one path a line, `#` comments, `-` for standard input), and the output name of each input.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from titok.errors import TiTokInputError
from titok.image_reading import IMAGE_SUFFIXES


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
