"""What every bench tool's command line shares: errors as one line, exit statuses, argument checks.

The error layer is the `titok` command's (`titok.cli.options.run_command`; `UsageError`, `Interrupted` and
the parser are its own, named here for the tools). Exit statuses: 0 done; 1 a benchmark row failed or an
output could not be made; 2 a usage or input error (one line on stderr, found before any work); 130
interrupted (Ctrl-C: one line on stderr; what was written is complete, never half a file).
"""
from __future__ import annotations

import os
import sys

from titok.cli import options
from titok.cli.options import Interrupted, UsageError  # noqa: F401 - the tools raise cli.UsageError, ...

EXIT_USAGE, EXIT_INTERRUPTED = options.EXIT_ERROR, options.EXIT_INTERRUPTED


class ArgumentParser(options.Parser):
    """The `titok` command's parser (`titok.cli.options.Parser`) with a bench tool's error line: the message
    alone, which `run_tool` names by the tool (`sampling.py: error: ...`, no `--help` pointer)."""

    see_help = False


def run_tool(main, argv=None, prog: str | None = None) -> int:
    """Run a tool's `main(argv) -> status` through the CLI's one error layer (`titok.cli.options.run_command`):
    usage and input errors (text as raised) and Ctrl-C become one stderr line; any other exception keeps its
    traceback."""
    return options.run_command(main, argv, prog, flatten=False, bugs=False)


def parse_list(text: str, flag: str) -> list[str]:
    """A comma-separated option: its non-empty items (UsageError when there are none)."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise UsageError(f"{flag} is empty")
    return items


def parse_sizes(text: str, flag: str) -> list[int]:
    """A comma-separated list of positive integers (batch sizes)."""
    out = []
    for item in parse_list(text, flag):
        try:
            value = int(item)
        except ValueError:
            raise UsageError(f"{flag} takes comma-separated positive integers, got {item!r}") from None
        if value < 1:
            raise UsageError(f"{flag} takes positive integers, got {value}")
        out.append(value)
    return out


def check_choice(value: str, choices, flag: str) -> str:
    if value not in choices:
        raise UsageError(f"{flag} must be one of {', '.join(choices)}; got {value!r}")
    return value


PLOT_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
RESULTS_DIR = "results"  # default output folder of the tools (ignored by git), relative to the working folder


def add_overwrite_flag(parser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace output files that exist (never a file "
                        "this run reads)")


def add_thread_flags(parser, *, extra_policies=()) -> None:
    """--threads and --omp-wait-policy (the CPU thread policy: titok_bench.harness.threads)."""
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads on CPU (default: PyTorch's, one "
                        "per allowed CPU)")
    parser.add_argument("--omp-wait-policy", choices=("auto", "active", "passive", *extra_policies), default="auto",
                        help="how OpenMP threads wait (default auto: active on an idle machine, passive on a busy "
                        "one, where spinning threads lose their time slices); the tool restarts itself to set it")


def source_folders() -> list[str]:
    """The folders of this project's code (titok, titok_kernels, titok_bench): files every run reads."""
    import importlib.util

    found = []
    for name in ("titok", "titok_kernels", "titok_bench"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            found.extend(spec.submodule_search_locations)
    return found


class Outputs:
    """A bench tool's output files under the `titok` CLI's rules (`titok.outputs.OutputFiles`), all checked
    before any work: an existing file is replaced only with `overwrite`; an output is never a file the run
    reads (an input file, anything inside an input folder or this project's code), with or without
    `overwrite`; a path that is a folder, lies under a file or in a folder that cannot be written is
    refused; two outputs of one run never share a path; the kind of file goes by its extension (results
    `.json`, plots `.png`/`.svg`/`.pdf`). The tools then write each file whole or not at all
    (`titok_bench.harness.results`). Errors are TiTokInputError: one line, exit status 2 (`run_tool`)."""

    def __init__(self, overwrite: bool = False, inputs=()):
        from titok.outputs import OutputFiles

        self.inputs = [os.path.realpath(p) for p in [*inputs, *source_folders()] if p]
        self._files = OutputFiles(overwrite=overwrite)
        self._claimed: dict[str, str] = {}

    def file(self, path: str | None, flag: str, suffixes=(".json",)) -> str | None:
        """An output file path (None: not asked for); `suffixes`: the extensions allowed."""
        from titok.errors import TiTokInputError

        if path is None:
            return None
        suffix = os.path.splitext(str(path))[1].lower()
        if suffixes and suffix not in suffixes:
            raise TiTokInputError(f"{flag} {path}: the file name must end in {' or '.join(suffixes)}")
        real = os.path.realpath(path)
        for source in self.inputs:
            if real == source or real.startswith(source.rstrip(os.sep) + os.sep):
                raise TiTokInputError(f"{flag} {path} is a file this run reads ({source}): an output never "
                                      "replaces an input")
        if real in self._claimed:
            raise TiTokInputError(f"{flag} {path} is also the output of {self._claimed[real]}: give each its own file")
        self._claimed[real] = flag
        self._files.check_file(path, flag)
        return str(path)

    def plot(self, path: str | None, flag: str = "--plot") -> str | None:
        return self.file(path, flag, tuple(PLOT_FORMATS))

    def folder(self, path: str, flag: str) -> str:
        self._files.check_folder(path, flag)
        return str(path)


def plot_format(path: str) -> str:
    """matplotlib's format name for a plot path checked by `Outputs.plot` (png when the extension is unknown)."""
    return PLOT_FORMATS.get(os.path.splitext(str(path))[1].lower(), "png")


def console(wide: bool = False):
    """A rich console: the terminal's width, or 80 columns (`wide`: 200) when the output is not a terminal."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else (200 if wide else 80), highlight=False)


def add_device_flag(p) -> None:
    """`--device`, declared once for the titok command and the bench tools (`titok.cli.options`); parse it with
    `titok_bench.harness.env.parse_device`."""
    options.add_device_option(p)
