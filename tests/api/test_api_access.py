"""Who may read what, how often, from where; hostile orders that must still be relayed.

On the embedded chain shared by the API tests (prosumers 6..11, intervals from 80 ahead):
member-private reads need a signed, expiring proof (the schema a wallet signs from is
published); per-IP and per-address rate limits answer 429 with Retry-After; CORS only for
configured origins; a prosumer's order quota per interval; signatures in every form the
contract would refuse are normalised or refused before 201, and the normalised ones reach the
chain; a uint64 "never expires" deadline is stored, read back and relayed exactly; health is
degraded while orders wait too long.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from fastapi.testclient import TestClient

from gridshare.api import create_app
from gridshare.api.app import ApiSettings
from market.gateway import GatewaySettings
from market.orders import SECP256K1_N

from .api_helpers import Signer, read_headers

U64 = 2**64 - 1


@pytest.fixture(scope="module")
def env(api_market, tmp_path_factory):
    chain, deployment = api_market
    app = create_app(chain, deployment, db_path=tmp_path_factory.mktemp("acc") / "o.sqlite",
                     relay=False, settings=GatewaySettings(max_orders_per_interval=3))
    with TestClient(app) as client:
        gw = app.state.api.gateway
        yield SimpleNamespace(chain=chain, deployment=deployment, app=app, gw=gw,
                              client=client, signer=Signer(chain, deployment, gw.domain, 6, 80))


def _post(env, body) -> dict:
    r = env.client.post("/v1/orders", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _status(env, who: int, url: str) -> dict:
    r = env.client.get(url, headers=env.signer.reads(who))
    assert r.status_code == 200, r.text
    return r.json()


def test_a_wallet_signs_a_read_from_the_published_schema(env):
    schema = env.client.get("/v1/auth/schema").json()
    account = env.signer.prosumers[0]
    expires = int(time.time()) + 300
    typed = {"types": schema["types"], "primaryType": schema["primary_type"],
             "domain": schema["domain"], "message": {"member": account.address,
                                                      "expires": expires}}
    sig = Account.sign_message(encode_typed_data(full_message=typed), account.key).signature
    h = schema["headers"]
    headers = {h["member"]: account.address, h["expires"]: str(expires),
               h["signature"]: "0x" + bytes(sig).hex()}
    r = env.client.get(f"/v1/members/{account.address}/orders", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"member": account.address, "orders": []}


def test_private_reads_need_the_members_own_fresh_proof(env):
    s = env.signer
    order = _post(env, s.body(0, next(s.intervals)))
    url = order["status_url"]
    mine, other = s.prosumers[0], s.prosumers[1]
    now = int(time.time())
    cases = [
        ({}, 401, "auth_required"),
        (read_headers(s.domain, mine, expires=now - 1), 401, "auth_invalid"),
        (read_headers(s.domain, mine, expires=now + 10 * 3600), 401, "auth_invalid"),
        (read_headers(s.domain, other, member=mine.address), 401, "auth_invalid"),  # forged
        (read_headers(s.domain, other), 404, "unknown_order"),  # another member's order
    ]
    for headers, status, code in cases:
        r = env.client.get(url, headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert _status(env, 0, url)["order_hash"] == order["order_hash"]
    listing = f"/v1/members/{mine.address}/orders"
    assert env.client.get(listing, headers=s.reads(1)).status_code == 403
    assert env.client.get(listing).status_code == 401
    statement = f"/v1/members/{mine.address}/statement"
    assert env.client.get(statement, headers=s.reads(1)).json()["error"]["code"] == \
        "not_your_data"
    assert env.client.get(statement, headers=s.reads(0)).status_code == 200
    # public aggregates stay open
    assert env.client.get(f"/v1/intervals/{order['interval']}").status_code == 200


def test_signature_forms_the_contract_refuses_are_normalised_and_relayed(env):
    """v 0/1 and the high-s twin of a valid signature are stored in the contract's form
    (v 27/28, low s), answered 201 and placed on-chain; the same order in another form is the
    same order (a replay)."""
    s = env.signer
    interval = next(s.intervals)
    bodies = []
    for twin in (False, True):
        body = s.body(2, interval)
        sig = bytes.fromhex(body["signature"][2:])
        r, s_, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
        form = r + ((SECP256K1_N - s_) if twin else s_).to_bytes(32, "big") + bytes(
            [(55 - v) if twin else v - 27])
        bodies.append((body, body | {"signature": "0x" + form.hex()}))
    accepted = [_post(env, odd) for _, odd in bodies]
    replay = env.client.post("/v1/orders", json=bodies[0][0])
    assert replay.status_code == 409 and replay.json()["error"]["field"] == "nonce"
    for (canonical, _), got in zip(bodies, accepted, strict=True):
        row = env.gw.store.by_digest(bytes.fromhex(got["order_hash"][2:]))
        assert row.signature.hex() == canonical["signature"][2:]
    env.gw.flush()
    placed = {"0x" + p.digest.hex() for p in env.app.state.api.mc.placed_orders(interval)}
    assert placed == {a["order_hash"] for a in accepted}


def test_a_never_expiring_deadline_round_trips_and_is_relayed(env):
    s = env.signer
    interval = next(s.intervals)
    got = _post(env, s.body(3, interval, deadline=U64))
    status = _status(env, 3, got["status_url"])
    assert status["deadline_unix_s"] == U64 and status["status"] == "pending"
    env.gw.flush()
    assert _status(env, 3, got["status_url"])["status"] == "relayed"


def test_order_quota_per_prosumer_and_interval(env):
    """The fourth order of one prosumer for one interval is refused (409, field interval):
    the settler's gas per prosumer and interval is bounded."""
    s = env.signer
    interval = next(s.intervals)
    for _ in range(3):
        _post(env, s.body(4, interval))
    r = env.client.post("/v1/orders", json=s.body(4, interval, advance=False))
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "too_many_orders"
    assert r.json()["error"]["field"] == "interval"
    _post(env, s.body(4, next(s.intervals)))  # another interval is fine


def test_rate_limits_answer_429_with_retry_after(api_market, tmp_path):
    chain, deployment = api_market
    limits = ApiSettings(rate_per_ip_s=1.0, burst_per_ip=4, rate_per_address_s=0.5,
                         burst_per_address=2)
    app = create_app(chain, deployment, db_path=tmp_path / "rl.sqlite", relay=False,
                     api_settings=limits)
    s = Signer(chain, deployment, app.state.api.gateway.domain, 6)
    with TestClient(app) as client:
        reads = s.reads(5)
        url = f"/v1/members/{s.prosumers[5].address}/orders"
        assert [client.get(url, headers=reads).status_code for _ in range(3)] == [200, 200, 429]
        r = client.get(url, headers=reads)  # the address bucket is empty: 429 by address
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert "address" in r.json()["error"]["message"]
        r = client.get("/healthz")  # 5th request of this IP
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert "IP" in r.json()["error"]["message"]


def test_cors_only_for_configured_origins(api_market, tmp_path):
    chain, deployment = api_market
    origin = "https://community.example"
    closed = create_app(chain, deployment, db_path=tmp_path / "c1.sqlite", relay=False)
    with TestClient(closed) as client:
        r = client.get("/v1/auth/schema", headers={"Origin": origin})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    app = create_app(chain, deployment, db_path=tmp_path / "c2.sqlite", relay=False,
                     api_settings=ApiSettings(cors_origins=(origin,)))
    with TestClient(app) as client:
        r = client.get("/v1/auth/schema", headers={"Origin": origin})
        assert r.headers["access-control-allow-origin"] == origin
        pre = client.options("/v1/orders", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-gridshare-signature"})
        assert pre.status_code == 200
        other = client.get("/v1/auth/schema", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_health_is_degraded_while_orders_wait_too_long(api_market, tmp_path):
    """No relay runs: an order waiting longer than max_waiting_age_s makes /healthz 503 with
    the reasons; once relayed, ok again."""
    chain, deployment = api_market
    now = [time.time()]
    app = create_app(chain, deployment, db_path=tmp_path / "h.sqlite", relay=False,
                     clock=lambda: now[0], settings=GatewaySettings(max_waiting_age_s=30))
    gw = app.state.api.gateway
    s = Signer(chain, deployment, gw.domain, 6, 90)
    s.nonces[5] = gw.expected_nonce(s.prosumers[5].address)
    with TestClient(app) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        _post(SimpleNamespace(client=client), s.body(5, next(s.intervals)))
        now[0] += 45
        h = client.get("/healthz")
        assert h.status_code == 503, h.text
        body = h.json()
        assert body["orders_waiting_for_chain"] == 1 and body["oldest_waiting_order_age_s"] >= 45
        assert any("relay is behind" in p for p in body["problems"])
        assert any("no relay is running" in p for p in body["problems"])
        gw.flush()
        h = client.get("/healthz").json()
        assert h["status"] == "ok" and h["relay"]["state"] == "running" and h["relay"]["relayed"]
