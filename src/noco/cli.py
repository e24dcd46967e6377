"""The ``noco`` command line. Each sub-command lives in ``noco.commands.<name>`` and exposes
``register(subparsers)``; user errors (NocoError) become one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import NocoError

COMMANDS = ["synth", "eval", "wtal", "detector", "run", "infer", "bench", "viz"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="noco",
        description="NoCo: weakly-supervised temporal action localization by pseudo-label noise correction.",
    )
    p.add_argument("--version", action="version", version=f"noco {__version__}")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=LEVELS,
                   help="logging verbosity (default INFO); also accepted after the command")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"noco.commands.{name}").register(sub)
    _add_log_level(sub)
    return p


LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def _add_log_level(sub: argparse._SubParsersAction) -> None:
    """``--log-level`` on every (nested) sub-command too, e.g. ``noco run --log-level warning ...``."""
    for parser in set(sub.choices.values()):
        if not any("--log-level" in a.option_strings for a in parser._actions):
            parser.add_argument("--log-level", default=argparse.SUPPRESS, type=str.upper, choices=LEVELS,
                                help="logging verbosity (default INFO)")
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                _add_log_level(a)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), format="%(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except NocoError as e:
        print(f"noco: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("noco: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
