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
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="logging verbosity (default INFO)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"noco.commands.{name}").register(sub)
    return p


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
