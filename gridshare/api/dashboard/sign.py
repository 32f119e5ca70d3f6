"""``python -m gridshare.api.dashboard.sign``: sign a member's read proof for the dashboard.

For a member without a browser wallet: prints the three values the dashboard's "paste a
signature" form (and any private API read) needs, an EIP-712 ``ReadAccess{member, expires}``
signature in the deployment's read domain (:mod:`gridshare.api.auth`). No node is needed: the
domain is the deployment file's chain id and market contract. The key is the key-ring role's
(``--role prosumer_0``: on a devnet the well-known development key, elsewhere the key set in the
role's environment variable, ``gridshare.chain.config.KeyRing``)::

    python -m gridshare.api.dashboard.sign --deployment out/deployment.json --role prosumer_0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from eth_account import Account

from gridshare.api.auth import (
    DEFAULT_MAX_LIFETIME_S,
    HEADER_EXPIRES,
    HEADER_MEMBER,
    HEADER_SIGNATURE,
    ReadVerifier,
)
from gridshare.chain.config import KeyRing
from gridshare.chain.deploy import Deployment
from market.orders import MarketDomain


def read_proof(deployment: Deployment, key: bytes, expires_unix_s: int) -> dict[str, str]:
    """The signed-read headers (member, expires in unix s, signature) of the key's account."""
    domain = MarketDomain(int(deployment.chain_id), deployment.contracts["GridMarket"])
    verifier = ReadVerifier.for_market(domain, DEFAULT_MAX_LIFETIME_S)
    member = Account.from_key(key).address
    digest = verifier.digest(member, int(expires_unix_s))
    signature = Account.unsafe_sign_hash(digest, key).signature
    return {HEADER_MEMBER: member, HEADER_EXPIRES: str(int(expires_unix_s)),
            HEADER_SIGNATURE: "0x" + bytes(signature).hex()}


def main(argv: list[str] | None = None) -> int:
    """Print the read proof as JSON (header name -> value)."""
    p = argparse.ArgumentParser(prog="python -m gridshare.api.dashboard.sign",
                                description=__doc__.split("\n\n")[1])
    p.add_argument("--deployment", type=Path, default=Path("deployment.json"),
                   help="deployment file (default deployment.json)")
    p.add_argument("--role", required=True, help="key-ring role of the member, e.g. prosumer_0")
    p.add_argument("--expires-in", type=int, default=600,
                   help=f"seconds the proof is valid (default 600, at most "
                   f"{DEFAULT_MAX_LIFETIME_S})")
    args = p.parse_args(argv)
    if not 0 < args.expires_in <= DEFAULT_MAX_LIFETIME_S:
        p.error(f"--expires-in must lie in 1..{DEFAULT_MAX_LIFETIME_S}")
    deployment = Deployment.load(args.deployment)
    key = bytes(KeyRing(int(deployment.chain_id)).account(args.role).key)
    proof = read_proof(deployment, key, int(time.time()) + args.expires_in)
    print(json.dumps(proof, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
