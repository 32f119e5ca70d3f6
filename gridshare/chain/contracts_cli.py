"""``gridshare contracts build [--check]``: compile the contracts into ``artifacts/``."""

from __future__ import annotations

import argparse
import sys

from gridshare.chain import build


def _build(args: argparse.Namespace) -> int:
    """Compile; write the artifacts, or with --check only compare them (exit 1 on a difference)."""
    artifacts = build.build()
    if args.check:
        problems = build.artifact_differences(artifacts)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("artifacts are stale: run `gridshare contracts build`", file=sys.stderr)
            return 1
        print(f"artifacts up to date ({', '.join(sorted(artifacts))})")
        return 0
    for path in build.write_artifacts(artifacts):
        print(f"wrote {path}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``contracts build``."""
    contracts = subparsers.add_parser("contracts", help="Solidity contracts: build the artifacts")
    sub = contracts.add_subparsers(dest="contracts_command", metavar="ACTION", required=True)
    build_parser = sub.add_parser(
        "build", help="compile with npm solc 0.8.28 and write gridshare/chain/artifacts/*.json"
    )
    build_parser.add_argument(
        "--check", action="store_true", help="compare with the committed artifacts, write nothing"
    )
    build_parser.set_defaults(func=_build)
