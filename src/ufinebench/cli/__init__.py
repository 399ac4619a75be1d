"""The ``ufinebench`` command line: one module per command, each with ``add_parser`` and ``run``.

A command module parses its arguments and calls the library; nothing here computes. Every
user-facing failure is a :class:`~ufinebench.errors.UFineBenchError`, printed as one line on
stderr with exit code 2 (never a traceback). A new command: a module here with ``add_parser(sub)``
(which sets ``func=run``) and ``run(args) -> int``, listed in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ufinebench import __version__
from ufinebench.cli import (
    build_3c,
    compare,
    demo,
    evaluate,
    import_clip,
    index,
    metrics,
    search,
    serve,
    stats,
    synth,
    train,
    validate,
)
from ufinebench.cli.common import EXIT_USAGE, Parser, one_line
from ufinebench.errors import UFineBenchError

COMMANDS = (metrics, validate, stats, synth, train, import_clip, evaluate, compare, build_3c, index, search, serve, demo)  # in --help order


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (also used to render --help in the docs)."""
    parser = Parser(
        prog="ufinebench",
        description="Ultra-fine-grained text-based person retrieval (UFineBench): data, UFine-Synth, metrics "
        "(R@K, mAP, mINP, mSD), CFAM and baselines, training, evaluation, 3C-style sets, search.",
    )
    parser.add_argument("--version", action="version", version=f"ufinebench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return func(args)
    except UFineBenchError as exc:
        print(f"ufinebench {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # disk full, permission denied, a file vanishing mid-run: the system's reason, in one line
        if isinstance(exc, BrokenPipeError):  # output piped into `head` and the like: not an error
            sys.stderr.close()
            return 0
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"ufinebench {args.command}: error: {one_line(where + (exc.strerror or str(exc)))}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"ufinebench {args.command}: error: out of memory (try a smaller --batch-size or input)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ufinebench {args.command}: interrupted", file=sys.stderr)
        return 130


__all__ = ["EXIT_USAGE", "build_parser", "main", "one_line"]
