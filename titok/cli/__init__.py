"""The `titok` command: reconstruct, tokenize, generate, sample, decode, info.

Layout: `options` (the shared flags, one device parser, one out-of-memory rule, console and progress, the
exit statuses and `run_command`, the one mapping from errors to them, which the bench tools share),
`dispatch` (the parser), one module per
command (`images`: reconstruct and tokenize; `generate`; `sample`; `decode`; `info`). The logic of
`titok sample` is the library `titok.evalset`.

Every command runs through `titok.pipeline.Pipeline` (`--mode reference|compile|fast`, `--dtype`); the
defaults of reconstruct, tokenize and generate (reference, float32) give the official computation; sample and
decode default to fast (an evaluation set is made for speed; their help says so).

Exit status: 0 done; 2 an error in what was given (a missing or unreadable file, a bad option value, a
checkpoint of another model, an output that would replace a file, ...): one line on stderr, nothing written;
3 done, but some inputs were skipped (`--skip-errors`, reconstruct and tokenize; they are listed); 130
interrupted (nothing written); 1 an unexpected failure (a bug: one line on stderr; TITOK_TRACEBACK=1 shows
the traceback).

Outputs (see `titok.images.OutputFiles`): every output location is checked before any work starts; an output
never replaces an input, two inputs never share an output, an existing file is replaced only with
`--overwrite`; all outputs are written under temporary names and renamed when the whole run has succeeded,
with the permissions the umask gives a new file.

Importing this package imports neither torch nor Triton: `titok --help` stays fast; the commands import what
they need.
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """The `titok` command (see `titok.cli.dispatch.main`)."""
    from titok.cli.dispatch import main as run

    return run(argv)


def build_parser():
    """The `titok` argument parser (see `titok.cli.dispatch.build_parser`)."""
    from titok.cli.dispatch import build_parser as build

    return build()


if __name__ == "__main__":
    import sys

    sys.exit(main())
