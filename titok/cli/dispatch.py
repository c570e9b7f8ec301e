"""`titok`: the dispatch (one subcommand module each); errors become exit statuses in `options.run_command`."""
from __future__ import annotations

import argparse
import warnings

from titok.cli import decode, generate, images, info, options, sample
from titok.errors import RandomWeightsWarning


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
    """Run `titok ARGV`; the exit status. What goes wrong is one line on stderr (`options.run_command`)."""
    parser, args = build_parser(), None

    def run(argv):
        nonlocal args
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else 0

        def show(message, category, *rest, **kw):
            if issubclass(category, RandomWeightsWarning):
                options.console(stderr=True).print(f"[bold yellow]warning:[/] {message}")
            else:
                default_show(message, category, *rest, **kw)

        default_show = warnings.showwarning
        with warnings.catch_warnings():
            warnings.simplefilter("always", RandomWeightsWarning)
            warnings.showwarning = show
            return args.func(args)

    return options.run_command(run, argv, "titok", batch_size=lambda: getattr(args, "batch_size", "?"))
