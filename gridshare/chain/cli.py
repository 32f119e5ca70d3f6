"""``gridshare deploy`` and ``gridshare devnet generate``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gridshare.chain.config import (
    DEFAULT_DEPLOYMENT_FILE,
    DEFAULT_FEEDER,
    ENV_CHAIN,
    ENV_DEPLOYMENT,
    GRIDSHARE_DEVNET_CHAIN_ID,
    ChainConfig,
)
from gridshare.chain.errors import ChainError


def _deploy(args: argparse.Namespace) -> int:
    from gridshare.chain.client import connect, wait_for_chain
    from gridshare.chain.deploy import Deployment, DeployParams, deploy

    out = Path(args.out)
    config = ChainConfig.from_env(rpc=args.rpc)
    try:
        chain = wait_for_chain(config, args.wait_s) if args.wait_s > 0 else connect(config)
        if args.if_missing and out.is_file():
            existing = Deployment.load(out)
            if existing.is_live(chain):
                print(f"{out}: contracts already deployed on chain {chain.chain_id}; nothing to do")
                return 0
        params = DeployParams(
            feeder=args.feeder,
            interval_s=args.interval_s,
            heartbeat_s=args.heartbeat_s,
        )
        deployment = deploy(chain, params, log=lambda msg: print(msg, file=sys.stderr))
    except ChainError as exc:
        print(f"gridshare deploy: chain error: {exc}", file=sys.stderr)
        return 1
    deployment.save(out)
    for note in deployment.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {out} (chain id {deployment.chain_id}, block {deployment.deploy_block})")
    return 0


def _devnet_generate(args: argparse.Namespace) -> int:
    from gridshare.chain.devnet import generate

    out = Path(args.out)
    if args.keep_existing and (out / "genesis.json").exists():
        print(f"{out}: devnet files exist; kept")
        return 0
    try:
        summary = generate(
            out, n_validators=args.validators, chain_id=args.chain_id, seed=args.seed,
            force=args.force,
        )
    except FileExistsError as exc:
        print(f"gridshare devnet generate: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote Besu QBFT devnet to {out}: chain id {summary['chain_id']}, "
          f"{len(summary['validators'])} validators, RPC {summary['rpc']['url_on_host']}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``deploy`` and ``devnet generate``."""
    deploy_parser = subparsers.add_parser(
        "deploy",
        help="deploy the contracts, grant roles, register a feeder; write a deployment file",
        description=f"Chain: --rpc URL, else ${ENV_CHAIN}, else the in-process embedded chain. "
        "Keys: see docs/chain.md.",
    )
    deploy_parser.add_argument("--rpc", default=None,
                               help="JSON-RPC URL (anvil, Besu); default: $GRIDSHARE_CHAIN "
                               "or 'embedded'")
    deploy_parser.add_argument("--feeder", default=DEFAULT_FEEDER,
                               help=f"built-in feeder whose devices to register "
                               f"(default {DEFAULT_FEEDER})")
    deploy_parser.add_argument(
        "--out", default=os.environ.get(ENV_DEPLOYMENT, DEFAULT_DEPLOYMENT_FILE),
        help=f"deployment file to write (default ${ENV_DEPLOYMENT} or {DEFAULT_DEPLOYMENT_FILE})",
    )
    deploy_parser.add_argument("--interval-s", "--interval-seconds", type=int, default=900,
                               help="market/band interval length in s (default 900)")
    deploy_parser.add_argument("--heartbeat-s", "--heartbeat-seconds", type=int, default=3600,
                               help="band staleness limit in s (default 3600)")
    deploy_parser.add_argument("--if-missing", action="store_true",
                               help="do nothing when --out names a live deployment on this chain")
    deploy_parser.add_argument("--wait-s", type=float, default=0.0,
                               help="wait up to this many seconds for the node to answer and "
                               "produce blocks (docker compose); default 0: fail at once")
    deploy_parser.set_defaults(func=_deploy)

    devnet = subparsers.add_parser("devnet", help="Besu QBFT devnet files for docker-compose")
    sub = devnet.add_subparsers(dest="devnet_command", metavar="ACTION", required=True)
    gen = sub.add_parser("generate", help="write genesis, node keys and static nodes")
    gen.add_argument("--out", default="devnet", help="output directory (default devnet/)")
    gen.add_argument("--validators", type=int, default=4, help="number of validators (1..9)")
    gen.add_argument("--chain-id", type=int, default=GRIDSHARE_DEVNET_CHAIN_ID,
                     help=f"chain id (default {GRIDSHARE_DEVNET_CHAIN_ID})")
    gen.add_argument("--seed", type=int, default=None,
                     help="derive node keys from this seed (reproducible); default random")
    gen.add_argument("--force", action="store_true", help="replace an existing devnet")
    gen.add_argument("--keep-existing", action="store_true",
                     help="exit 0 without writing when the devnet already exists")
    gen.set_defaults(func=_devnet_generate)
