"""`titok`: the dispatch (one subcommand module each) and the one mapping from errors to exit statuses."""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from titok.cli import decode, generate, images, info, options, sample
from titok.errors import RandomWeightsWarning, TiTokInputError


def build_parser() -> argparse.ArgumentParser:
    from titok import __version__
    from titok.configs import VARIANTS

    parser = options.Parser(
        prog="titok", description="TiTok: 1D image tokenization (32 tokens per image) and MaskGIT generation.",
        epilog="Run `titok COMMAND --help` for each command's options.")
    parser.add_argument("--version", action="version", version=f"titok {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    models = list(VARIANTS)

    for command in (images, generate, sample, decode, info):   # one module per command (images: two)
        command.add_parser(sub, models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except options.UsageError as exc:
        print(exc, file=sys.stderr)
        return options.EXIT_ERROR
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0

    def show(message, category, *rest, **kw):
        if issubclass(category, RandomWeightsWarning):
            options.console(stderr=True).print(f"[bold yellow]warning:[/] {message}")
        else:
            default_show(message, category, *rest, **kw)

    default_show = warnings.showwarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", RandomWeightsWarning)
            warnings.showwarning = show
            return args.func(args) or 0
    except TiTokInputError as exc:
        print(f"titok: error: {options.one_line(exc)}", file=sys.stderr)
        return options.EXIT_ERROR
    except KeyboardInterrupt:
        print("titok: interrupted (nothing written)", file=sys.stderr)
        return options.EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if os.environ.get("TITOK_TRACEBACK"):
            raise
        if options.is_out_of_memory(exc):
            print(f"titok: error: out of memory (batch size {getattr(args, 'batch_size', '?')}); lower "
                  "--batch-size (nothing written)", file=sys.stderr)
            return options.EXIT_ERROR
        print(f"titok: error: unexpected {type(exc).__name__}: {options.one_line(exc)} (nothing written; this is a bug: "
              "run with TITOK_TRACEBACK=1 to see where)", file=sys.stderr)
        return options.EXIT_BUG
