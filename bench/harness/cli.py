"""What every bench tool's command line shares: errors as one line, exit statuses, argument checks.

Exit statuses: 0 done; 1 a benchmark row failed or an output could not be made; 2 a usage or input
error (one line on stderr, found before any work); 130 interrupted (Ctrl-C: one line on stderr;
what was written is complete, never half a file).
"""
from __future__ import annotations

import argparse
import os
import sys

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


class Interrupted(Exception):
    """Ctrl-C, after the tool kept (or wrote) its partial results: the message says what was kept."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are UsageErrors (one line, no usage dump)."""

    def error(self, message):
        raise UsageError(message)


def run_tool(main, argv=None, prog: str | None = None) -> int:
    """Run a tool's `main(argv) -> status`; map usage errors, input errors and Ctrl-C to one stderr line."""
    from titok.errors import TiTokInputError

    prog = prog or os.path.basename(sys.argv[0])
    try:
        return main(argv)
    except (UsageError, TiTokInputError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as exc:
        print(f"{prog}: interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (nothing written)", file=sys.stderr)
        return EXIT_INTERRUPTED


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


def check_output_path(path: str | None, flag: str, *, directory: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written (titok's rules: a file path that is a folder,
    a folder path that is a file, a path under a file, a folder this process cannot write in); results of
    earlier runs are replaced. Raises titok's TiTokInputError (one line, exit status 2 through `run_tool`)."""
    if not path:
        return
    from titok.images import OutputFiles

    outputs = OutputFiles(overwrite=True)
    (outputs.check_folder if directory else outputs.check_file)(path, flag)


def console(wide: bool = False):
    """A rich console: the terminal's width, or 80 columns (`wide`: 200) when the output is not a terminal."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else (200 if wide else 80), highlight=False)
