"""Helpers of the REST API tests: a deployment, signed order bodies, bands and readings."""

from __future__ import annotations

import itertools
import time
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from gridshare.api.auth import (
    DEFAULT_MAX_LIFETIME_S,
    HEADER_EXPIRES,
    HEADER_MEMBER,
    HEADER_SIGNATURE,
    ReadVerifier,
)
from gridshare.chain.deploy import Deployment, DeployParams, deploy
from market.orders import Order, Side, sign_order
from oracle.ingest import encode_readings

N_PROSUMERS = 6
MIN_PRICE = 50_000
MAX_PRICE = 400_000
DEPLOY_PARAMS = DeployParams(min_price_eur_per_kwh=0.05, max_price_eur_per_kwh=0.40)


def deploy_market(chain: Any) -> Deployment:
    """The default feeder deployed with price bounds 0.05..0.40 EUR/kWh."""
    deployment = deploy(chain, DEPLOY_PARAMS)
    assert len(deployment.prosumers) >= N_PROSUMERS
    return deployment


class Signer:
    """Signs order bodies for the deployment's prosumers, counting their nonces."""

    def __init__(self, chain: Any, deployment: Deployment, domain: Any, first: int = 0,
                 ahead: int = 1) -> None:
        """Prosumers ``first`` .. ``first + N_PROSUMERS - 1`` of the deployment, intervals
        from ``ahead`` after the chain's current one (test modules sharing a chain use disjoint
        prosumers and intervals)."""
        self.chain = chain
        self.deployment = deployment
        self.domain = domain
        self.prosumers: list[LocalAccount] = [
            chain.keys.account(f"prosumer_{first + i}") for i in range(N_PROSUMERS)]
        self.nonces = dict.fromkeys(range(N_PROSUMERS), 0)
        # from the chain's next interval on: the contracts take bands and orders only from the
        # current interval to maxIntervalsAhead after it
        now_s = int(chain.w3.eth.get_block("latest")["timestamp"])
        self.intervals = itertools.count(now_s // deployment.interval_s + ahead)

    def body(self, who: int, interval: int, side: str = "sell", energy_wh: int = 500,
             price: int = 100_000, *, nonce: int | None = None, deadline: int | None = None,
             key: bytes | None = None, advance: bool = True) -> dict[str, Any]:
        """A signed request body; ``key`` signs instead of the prosumer's own key. The default
        deadline is an hour from now, and not before the interval's end."""
        account = self.prosumers[who]
        n = self.nonces[who] if nonce is None else nonce
        if deadline is None:
            deadline = max(int(time.time()) + 3600,
                           (interval + 1) * self.deployment.interval_s)
        order = Order(account.address, interval, Side.SELL if side == "sell" else Side.BUY,
                      energy_wh, price, n, deadline)
        sig = sign_order(order, self.domain, key if key is not None else account.key)
        if advance and nonce is None:
            self.nonces[who] += 1
        return {"prosumer": account.address, "interval": interval, "side": side,
                "energy_wh": energy_wh, "price_micro_eur_per_kwh": price, "nonce": n,
                "deadline_unix_s": deadline, "signature": "0x" + sig.hex()}

    def reads(self, who: int, **kwargs: Any) -> dict[str, str]:
        """Signed-read headers of prosumer ``who`` (see :func:`read_headers`)."""
        return read_headers(self.domain, self.prosumers[who], **kwargs)


def read_headers(domain: Any, account: LocalAccount, expires: int | None = None,
                 member: str | None = None) -> dict[str, str]:
    """The signed-read headers of ``account`` (for ``member``, default its own address)."""
    verifier = ReadVerifier.for_market(domain, DEFAULT_MAX_LIFETIME_S)
    member = member or account.address
    expires = int(time.time()) + 600 if expires is None else expires
    digest = verifier.digest(member, expires)
    sig = Account.unsafe_sign_hash(digest, account.key).signature  # what eth_signTypedData_v4 gives
    return {HEADER_MEMBER: member, HEADER_EXPIRES: str(expires),
            HEADER_SIGNATURE: "0x" + bytes(sig).hex()}


def write_bands(chain: Any, capacity: Any, interval: int,
                bands_w: dict[int, tuple[int, int]]) -> Any:
    """``writeBands`` by the oracle key; returns the receipt."""
    ids = sorted(bands_w)
    return chain.transact(
        capacity.functions.writeBands(interval, keccak(text=f"inputs {interval}"), ids,
                                      [bands_w[i][0] for i in ids],
                                      [bands_w[i][1] for i in ids]), "oracle")


def post_readings(chain: Any, capacity: Any, deployment: Deployment,
                  rows: list[tuple[int, int, int]]) -> None:
    """Post ``(device_id, timestamp, p_w)`` readings, each by its device's meter key."""
    roles = {int(d["device_id"]): d["meter_role"] for d in deployment.devices}
    by_role: dict[str, list[tuple[int, ...]]] = {}
    for device_id, ts, p_w in rows:
        by_role.setdefault(roles[device_id], []).append((device_id, ts, p_w, 0, 1_000_000, 0))
    for role, records in by_role.items():
        chain.transact(capacity.functions.postReadings(encode_readings(records)), role)
