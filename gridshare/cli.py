"""The ``gridshare`` command line.

Each package contributes its sub-commands through a module with
``add_commands(subparsers) -> None``; the modules are listed in ``COMMAND_MODULES``. Every
sub-command parser sets ``func`` (called with the parsed namespace, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gridshare import __version__

COMMAND_MODULES: tuple[str, ...] = (
    "capacity.cli",
    "capacity.ocm_cli",
    "gridshare.chain.contracts_cli",
    "gridshare.chain.cli",
    "oracle.cli",
    "market.aggregator_cli",
    "market.cli",
    "gridshare.api.cli",
    "gridshare.sim.cli",
    "gridshare.sim.meters_cli",
    "gridshare.fleet.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every package's sub-commands registered."""
    parser = argparse.ArgumentParser(
        prog="gridshare",
        description="Grid-safe settlement backend for local energy communities.",
    )
    parser.add_argument("--version", action="version", version=f"gridshare {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"gridshare {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
