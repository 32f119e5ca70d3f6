"""REST API with FastAPI's TestClient on the embedded chain (one deployment per module).

Relaying is driven by the tests (``relay=False``, ``gateway.relay_once()``) so every step is
deterministic; ``test_background_relay`` runs the app's own relayer thread.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from fastapi.testclient import TestClient

from gridshare.api import create_app
from market.gateway.store import OrderStore
from market.orders import MarketDomain, Order, Side, sign_order

from .api_helpers import Signer, post_readings, write_bands


@pytest.fixture(scope="module")
def env(tmp_path_factory, api_market):
    chain, deployment = api_market
    db = tmp_path_factory.mktemp("api") / "orders.sqlite"
    app = create_app(chain, deployment, db_path=db, relay=False)
    api = app.state.api
    with TestClient(app) as client:
        yield SimpleNamespace(chain=chain, deployment=deployment, app=app, api=api,
                              gw=api.gateway, client=client, db=db,
                              signer=Signer(chain, deployment, api.gateway.domain))


def _stored(env) -> int:
    return sum(env.gw.store.counts().values())


def test_schema_lets_a_wallet_sign_an_accepted_order(env):
    schema = env.client.get("/v1/orders/schema").json()
    assert schema["domain"] == {"name": "gridshare-market", "version": "1",
                                "chainId": env.chain.chain_id,
                                "verifyingContract": env.deployment.contracts["GridMarket"]}
    assert schema["price_bounds_micro_eur_per_kwh"] == {"min": 50_000, "max": 400_000}
    # sign exactly as a wallet would, from the published document only
    account = env.signer.prosumers[3]
    interval = next(env.signer.intervals)
    body = {"prosumer": account.address, "interval": interval, "side": "buy",
            "energy_wh": 700, "price_micro_eur_per_kwh": 120_000,
            "nonce": env.signer.nonces[3],
            "deadline_unix_s": (interval + 1) * env.deployment.interval_s}
    message = {schema["field_map"][k]: v for k, v in body.items()}
    message["side"] = schema["side_codes"][body["side"]]
    typed = {"types": schema["types"], "primaryType": schema["primary_type"],
             "domain": schema["domain"], "message": message}
    signature = Account.sign_message(encode_typed_data(full_message=typed), account.key).signature
    r = env.client.post("/v1/orders", json=body | {"signature": "0x" + bytes(signature).hex()})
    assert r.status_code == 201, r.text
    env.signer.nonces[3] += 1
    domain = MarketDomain(env.chain.chain_id, env.deployment.contracts["GridMarket"])
    order = Order(account.address, interval, Side.BUY, 700, 120_000, body["nonce"],
                  body["deadline_unix_s"])
    assert r.json()["order_hash"] == "0x" + domain.digest(order).hex()
    assert r.headers["location"] == r.json()["status_url"]


def test_accepted_order_is_relayed_and_placed_on_chain(env):
    interval = next(env.signer.intervals)
    r = env.client.post("/v1/orders", json=env.signer.body(0, interval, "sell", 400, 90_000))
    assert r.status_code == 201, r.text
    url, digest = r.json()["status_url"], r.json()["order_hash"]
    reads = env.signer.reads(0)
    assert env.client.get(url, headers=reads).json()["status"] == "pending"
    report = env.gw.relay_once()
    assert report.sent >= 1 and report.failed == 0
    env.gw.relay_once()  # the next round sees OrderPlaced in its block
    status = env.client.get(url, headers=reads).json()
    assert status["status"] == "relayed" and status["block_number"] > 0
    placed = env.api.mc.placed_orders(interval)
    assert ["0x" + p.digest.hex() for p in placed] == [digest]
    got = env.client.get(f"/v1/intervals/{interval}").json()
    assert got["orders_on_chain"] == 1 and got["orders_accepted_by_api"] == 1
    assert got["open_for_orders"] and not got["committed"]


def test_orders_enter_commitment_clearing_settlement_and_statements(env):
    s, client = env.signer, env.client
    interval = next(s.intervals)
    battery = env.deployment.battery_device_id
    write_bands(env.chain, env.api.mc.capacity, interval, {battery: (-5_000, 5_000)})
    P = [a.address for a in s.prosumers]
    before = {a: int(env.chain.call(env.api.mc.market.functions.balanceOf(a))) for a in P[:3]}
    bodies = [s.body(0, interval, "sell", 1000, 80_000), s.body(1, interval, "sell", 600, 150_000),
              s.body(2, interval, "buy", 1200, 300_000)]
    hashes = []
    for body in bodies:
        r = client.post("/v1/orders", json=body)
        assert r.status_code == 201, r.text
        hashes.append(bytes.fromhex(r.json()["order_hash"][2:]))
    result, receipt = env.gw.settle_interval(interval)  # close, relay, commit, clear, settle
    assert receipt["status"] == 1
    assert sorted(p.digest for p in result.placed) == sorted(hashes)
    got = client.get(f"/v1/intervals/{interval}").json()
    assert got["settled"] and got["committed"] and not got["open_for_orders"]
    assert got["book_hash"] == "0x" + result.book_hash.hex()
    assert got["clearing_price_micro_eur_per_kwh"] == result.clearing_price_micro_eur_per_kwh
    assert got["battery_power_w"] == result.battery_power_w
    assert got["settlement_tx"] == receipt["transactionHash"].to_0x_hex()
    assert [(t["buyer"], t["seller"], t["energy_wh"]) for t in got["trades"]] == \
        [(t.buyer, t.seller, t.energy_wh) for t in result.trades]
    assert env.api.mc.replay(interval).equal
    for i in range(3):
        st = client.get(f"/v1/members/{P[i]}/statement", headers=s.reads(i),
                        params={"from": interval, "to": interval}).json()
        assert st["intervals"] == [interval]
        assert st["net_nano_eur"] == st["onchain_balance_nano_eur"] - before[P[i]]
    assert st["bought_local_wh"] + st["from_battery_wh"] + st["from_grid_wh"] == 1200
    # the interval is closed now: a late order is refused and not stored
    n = _stored(env)
    late = client.post("/v1/orders", json=s.body(3, interval, advance=False))
    assert late.status_code == 409 and late.json()["error"]["code"] == "interval_closed"
    assert _stored(env) == n


BAD_CASES = ["malformed_json", "not_json_object", "wrong_type", "missing_field", "extra_field",
             "bad_side", "negative_energy", "uint64_overflow", "short_signature", "other_key",
             "tampered", "replayed_nonce", "skipped_nonce", "expired", "unknown_prosumer",
             "zero_energy", "price_out_of_bounds", "closed_interval", "oversized",
             "oversized_chunked", "interval_past", "interval_too_far", "interval_uint64_max",
             "deadline_before_interval", "energy_above_contract_bound", "energy_uint64_max",
             "price_uint64_max", "signature_v_2", "signature_s_zero"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_refused_with_a_named_error_and_nothing_stored(env, case):
    s, client = env.signer, env.client
    interval = next(s.intervals)
    good = s.body(4, interval, advance=False)
    stranger = Account.from_key(b"\x07" * 32)
    kwargs: dict = {}
    if case == "malformed_json":
        kwargs = {"content": b'{"prosumer": "0x12', "headers": {"content-type": "application/json"}}
        expect = (400, "malformed_json", None)
    elif case == "not_json_object":
        kwargs = {"content": b"hello"}
        expect = (400, "malformed_json", None)
    elif case == "wrong_type":
        kwargs = {"json": good | {"energy_wh": "500"}}
        expect = (422, "invalid_request", "energy_wh")
    elif case == "missing_field":
        kwargs = {"json": {k: v for k, v in good.items() if k != "nonce"}}
        expect = (422, "invalid_request", "nonce")
    elif case == "extra_field":
        kwargs = {"json": good | {"bonus": 1}}
        expect = (422, "invalid_request", "bonus")
    elif case == "bad_side":
        kwargs = {"json": good | {"side": "hold"}}
        expect = (422, "invalid_request", "side")
    elif case == "negative_energy":
        kwargs = {"json": good | {"energy_wh": -5}}
        expect = (422, "invalid_request", "energy_wh")
    elif case == "uint64_overflow":
        kwargs = {"json": good | {"nonce": 2**64}}
        expect = (422, "invalid_request", "nonce")
    elif case == "short_signature":
        kwargs = {"json": good | {"signature": "0x1234"}}
        expect = (422, "invalid_request", "signature")
    elif case == "other_key":
        kwargs = {"json": s.body(4, interval, key=stranger.key, advance=False)}
        expect = (422, "invalid_signature", "signature")
    elif case == "tampered":
        kwargs = {"json": good | {"energy_wh": good["energy_wh"] + 1}}
        expect = (422, "invalid_signature", "signature")
    elif case == "replayed_nonce":
        first = client.post("/v1/orders", json=s.body(4, interval))
        assert first.status_code == 201
        kwargs = {"json": s.body(4, interval, nonce=s.nonces[4] - 1)}
        expect = (409, "bad_nonce", "nonce")
    elif case == "skipped_nonce":
        kwargs = {"json": s.body(4, interval, nonce=s.nonces[4] + 5)}
        expect = (409, "bad_nonce", "nonce")
    elif case == "expired":
        kwargs = {"json": s.body(4, interval, deadline=int(time.time()) - 10, advance=False)}
        expect = (422, "expired", "deadline_unix_s")
    elif case == "unknown_prosumer":
        order = Order(stranger.address, interval, Side.BUY, 100, 100_000, 0,
                      good["deadline_unix_s"])
        sig = sign_order(order, env.gw.domain, stranger.key)
        kwargs = {"json": good | {"prosumer": stranger.address, "nonce": 0, "side": "buy",
                                  "energy_wh": 100, "deadline_unix_s": order.deadline_unix_s,
                                  "signature": "0x" + sig.hex()}}
        expect = (403, "unknown_prosumer", "prosumer")
    elif case == "zero_energy":
        kwargs = {"json": s.body(4, interval, energy_wh=0, advance=False)}
        expect = (422, "non_positive_energy", "energy_wh")
    elif case == "price_out_of_bounds":
        kwargs = {"json": s.body(4, interval, price=500_000, advance=False)}
        expect = (422, "price_out_of_bounds", "price_micro_eur_per_kwh")
    elif case == "closed_interval":
        env.gw.close_interval(interval)
        kwargs = {"json": good}
        expect = (409, "interval_closed", "interval")
    elif case in HOSTILE:
        kwargs, expect = HOSTILE[case](env, interval)
    elif case == "oversized":
        kwargs = {"json": good | {"signature": good["signature"] + "00" * 20_000}}
        expect = (413, "payload_too_large", None)
    else:  # oversized_chunked: no Content-Length, the body streams past the limit

        def chunks():
            yield b'{"prosumer": "'
            for _ in range(40):
                yield b"a" * 1024

        kwargs = {"content": chunks(), "headers": {"content-type": "application/json"}}
        expect = (413, "payload_too_large", None)
    n_before = _stored(env)
    r = client.post("/v1/orders", **kwargs)
    status, code, field = expect
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert error["message"]
    if field is not None:
        assert error["field"] == field
    assert _stored(env) == n_before  # nothing stored
    # the server keeps serving: the good order (with the next nonce) is accepted and relayed
    ok = client.post("/v1/orders", json=s.body(5, next(s.intervals)))
    assert ok.status_code == 201, ok.text
    env.gw.flush()
    assert client.get("/healthz").status_code == 200


def _hostile_body(env, interval: int, **over) -> dict:
    """A body of prosumer 4 signed after ``over`` changed its fields (nonce not advanced)."""
    s = env.signer
    fields = {"interval": interval, "energy_wh": 500, "price": 100_000, "deadline": None} | over
    return s.body(4, fields["interval"], energy_wh=fields["energy_wh"], price=fields["price"],
                  deadline=fields["deadline"], advance=False)


def _window(env) -> tuple[int, int]:
    return env.gw.window()


def _resigned(env, interval: int, mutate) -> dict:
    """A good body whose 65-byte signature ``mutate(r, s, v)`` changed."""
    body = _hostile_body(env, interval)
    sig = bytes.fromhex(body["signature"][2:])
    r, s_, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    r, s_, v = mutate(r, s_, v)
    return body | {"signature": "0x" + (r.to_bytes(32, "big") + s_.to_bytes(32, "big")
                                        + bytes([v])).hex()}


U64 = 2**64 - 1
HOSTILE = {  # case -> (env, interval) -> (request kwargs, (status, code, field))
    "interval_past": lambda env, i: (
        {"json": _hostile_body(env, _window(env)[0] - 1, deadline=U64)},
        (422, "interval_out_of_window", "interval")),
    "interval_too_far": lambda env, i: (
        {"json": _hostile_body(env, _window(env)[1] + 1, deadline=U64)},
        (422, "interval_out_of_window", "interval")),
    "interval_uint64_max": lambda env, i: (
        {"json": _hostile_body(env, U64, deadline=U64)},
        (422, "interval_out_of_window", "interval")),
    "deadline_before_interval": lambda env, i: (
        {"json": _hostile_body(env, _window(env)[0] + 3,
                               deadline=(_window(env)[0] + 3) * 900 - 1)},
        (422, "deadline_before_interval", "deadline_unix_s")),
    "energy_above_contract_bound": lambda env, i: (
        {"json": _hostile_body(env, i, energy_wh=env.gw.bounds().max_energy_wh + 1)},
        (422, "energy_too_large", "energy_wh")),
    "energy_uint64_max": lambda env, i: (
        {"json": _hostile_body(env, i, energy_wh=U64)}, (422, "energy_too_large", "energy_wh")),
    "price_uint64_max": lambda env, i: (
        {"json": _hostile_body(env, i, price=U64)},
        (422, "price_out_of_bounds", "price_micro_eur_per_kwh")),
    "signature_v_2": lambda env, i: (
        {"json": _resigned(env, i, lambda r, s, v: (r, s, 2))},
        (422, "invalid_signature", "signature")),
    "signature_s_zero": lambda env, i: (
        {"json": _resigned(env, i, lambda r, s, v: (r, 0, v))},
        (422, "invalid_signature", "signature")),
}


def test_reads_reject_bad_parameters(env):
    c = env.client
    addr = env.signer.prosumers[0].address
    cases = [
        (c.get("/v1/intervals/-1"), 422, "invalid_request"),
        (c.get("/v1/intervals/abc"), 422, "invalid_request"),
        (c.get(f"/v1/members/{addr}/statement", params={"from": 5, "to": 4},
               headers=env.signer.reads(0)), 422, "invalid_range"),
        (c.get("/v1/members/0x1234/statement", headers=env.signer.reads(0)), 422,
         "invalid_request"),
        (c.get("/v1/bands", params={"from": 1}), 422, "invalid_request"),
        (c.get("/v1/bands", params={"from": 0, "to": 10**6}), 422, "range_too_large"),
        (c.get("/v1/bands", params={"from": 0, "to": 5, "device": 999}), 404, "unknown_device"),
        (c.get("/v1/audit/compliance", params={"from": 9, "to": 2}), 422, "invalid_range"),
        (c.get("/v1/orders/0x" + "00" * 32, headers=env.signer.reads(0)), 404,
         "unknown_order"),
        (c.get("/v1/nothing"), 404, "not_found"),
        (c.delete("/v1/orders/schema"), 405, "method_not_allowed"),
    ]
    for r, status, code in cases:
        assert r.status_code == status, (r.request.url, r.text)
        assert r.json()["error"]["code"] == code, r.text


def test_bands_and_compliance_audit(env):
    s = env.signer
    interval = next(s.intervals)
    cap = env.api.mc.capacity
    devices = [int(d["device_id"]) for d in env.deployment.devices]
    dev_a, dev_b = devices[0], devices[1]
    receipt = write_bands(env.chain, cap, interval, {dev_a: (-4000, 3000), dev_b: (0, 2000)})
    T = env.deployment.interval_s
    t0 = interval * T
    post_readings(env.chain, cap, env.deployment, [
        (dev_a, t0 + 60, 2500), (dev_a, t0 + 120, 3400),      # second one 400 W above
        (dev_b, t0 + 60, 1000), (dev_b, t0 + 120, -250),      # 250 W below
        (dev_b, t0 + T + 60, 5000),                           # next interval: no band
    ])
    r = env.client.get("/v1/bands", params={"from": interval, "to": interval, "device": dev_a})
    assert r.status_code == 200
    bands = r.json()["bands"]
    assert [(b["device_id"], b["p_min_w"], b["p_max_w"]) for b in bands] == [(dev_a, -4000, 3000)]
    assert bands[0]["block_number"] == receipt["blockNumber"]
    assert bands[0]["tx_hash"] == receipt["transactionHash"].to_0x_hex()
    record = env.chain.call(cap.functions.intervalRecord(interval))
    assert bands[0]["inputs_hash"] == "0x" + bytes(record[0]).hex()
    both = env.client.get("/v1/bands", params={"from": interval, "to": interval}).json()
    assert {b["device_id"] for b in both["bands"]} == {dev_a, dev_b}
    audit = env.client.get("/v1/audit/compliance",
                           params={"from": interval, "to": interval + 1}).json()
    assert not audit["compliant"]
    assert audit["n_readings_checked"] == 4 and audit["n_readings_without_band"] == 1
    assert sorted((v["device_id"], v["p_w"], v["excess_w"]) for v in audit["violations"]) == \
        sorted([(dev_a, 3400, 400), (dev_b, -250, 250)])
    rows = {r["device_id"]: r for r in audit["rows"]}
    assert rows[dev_a]["metered_p_max_w"] == 3400 and rows[dev_a]["n_violations"] == 1
    assert rows[dev_b]["metered_p_mean_w"] == pytest.approx(375.0)
    clean = env.client.get("/v1/audit/compliance",
                           params={"from": interval + 1, "to": interval + 1}).json()
    assert clean["compliant"] and clean["n_readings_checked"] == 0
    # only these readings in this deployment: no loading figure, and why
    assert not audit["loading_complete"]
    assert {r["missing_transformer_readings"] for r in audit["loading"]} == {15}
    assert audit["loading_within_limits"] is None and audit["n_loading_violations"] == 0
    assert [(r["n_minutes_computed"], r["max_line_loading_pct"]) for r in audit["loading"]] == \
        [(0, None), (0, None)]
    # the readings above lie ahead of their blocks' time: the oracle's window rejects them, so
    # the loading counts none of them (compliance judges every posted reading)
    assert audit["loading"][0]["missing_readings"][str(dev_a)] == 15
    # the helper's band hashes no oracle inputs: stale, with the reason
    assert [s["interval"] for s in audit["stale_bands"]] == [interval]
    assert {r["stale"] for r in audit["rows"]} == {True} and bands[0]["stale"] is True
    assert "do not trust it" in bands[0]["stale_reason"]


def test_audit_judges_the_new_branch_after_a_reorg(env):
    """A band and a reading that a reorg drops leave the audit; the new branch's band and
    readings are judged (the audit reads its logs through the reorg-aware EventReader)."""
    interval = next(env.signer.intervals)
    cap = env.api.mc.capacity
    dev = int(env.deployment.devices[0]["device_id"])
    t0 = interval * env.deployment.interval_s
    params = {"from": interval, "to": interval}
    snapshot = env.chain.snapshot()
    write_bands(env.chain, cap, interval, {dev: (-1000, 1000)})
    post_readings(env.chain, cap, env.deployment, [(dev, t0 + 60, 1500)])
    before = env.client.get("/v1/audit/compliance", params=params).json()
    assert before["n_violations"] == 1 and before["n_readings_checked"] == 1
    env.chain.revert(snapshot)
    receipt = write_bands(env.chain, cap, interval, {dev: (-2000, 2000)})
    post_readings(env.chain, cap, env.deployment, [(dev, t0 + 60, 1500), (dev, t0 + 120, 500)])
    bands = env.client.get("/v1/bands", params=params).json()["bands"]
    assert [(b["p_min_w"], b["p_max_w"], b["block_number"]) for b in bands] == [
        (-2000, 2000, receipt["blockNumber"])]
    after = env.client.get("/v1/audit/compliance", params=params).json()
    assert after["compliant"] and after["n_readings_checked"] == 2


def test_healthz_reports_chain_and_oracle_lag(env):
    h = env.client.get("/healthz")
    assert h.status_code == 200
    body = h.json()
    assert body["status"] == "ok" and body["chain_reachable"]
    assert body["last_block"] == env.chain.block_number
    last_band = int(env.chain.call(env.api.mc.capacity.functions.lastInterval()))
    assert body["oracle_last_band_interval"] == last_band
    assert body["oracle_lag_intervals"] == body["current_interval"] - last_band


def test_openapi_is_served(env):
    spec = env.client.get("/openapi.json").json()
    for path in ("/v1/orders", "/v1/orders/schema", "/v1/intervals/{interval}",
                 "/v1/members/{address}/statement", "/v1/bands", "/v1/audit/compliance",
                 "/healthz"):
        assert path in spec["paths"], path
    props = spec["components"]["schemas"]["OrderIn"]["properties"]
    assert {"energy_wh", "price_micro_eur_per_kwh", "deadline_unix_s"} <= set(props)


def test_stored_orders_survive_a_restart_and_are_relayed(env, tmp_path):
    """Accepted = committed to SQLite: a new app on the same file relays what the old one
    accepted but never sent."""
    db = tmp_path / "restart.sqlite"
    s = env.signer
    interval = next(s.intervals)
    app1 = create_app(env.chain, env.deployment, db_path=db, relay=False)
    with TestClient(app1) as c1:
        r = c1.post("/v1/orders", json=s.body(1, interval, "buy", 300, 200_000))
        assert r.status_code == 201
    app1.state.api.gateway.store.close()
    app2 = create_app(env.chain, env.deployment, db_path=db, relay=False)
    gw2 = app2.state.api.gateway
    assert gw2.store.counts()["pending"] == 1
    # the nonce the old app handed out is still taken
    replay = s.body(1, interval, "buy", 300, 200_000, nonce=s.nonces[1] - 1)
    with TestClient(app2) as c2:
        assert c2.post("/v1/orders", json=replay).status_code == 409
        gw2.flush()
        assert c2.get(r.json()["status_url"], headers=s.reads(1)).json()["status"] == \
            "relayed"
    assert [p.digest.hex() for p in env.api.mc.placed_orders(interval)] == \
        [r.json()["order_hash"][2:]]


def test_order_that_expires_before_relay_is_marked_failed(env):
    """An order whose deadline passes before it is relayed is failed, with the reason, and no
    transaction is spent on it."""
    s = env.signer
    interval = env.gw.window()[0]  # the current interval: it has started already
    deadline = env.gw.watch.now_unix_s() + 2
    r = env.client.post("/v1/orders", json=s.body(2, interval, deadline=deadline))
    assert r.status_code == 201, r.text
    env.chain.advance_time(30)
    env.gw.relay_once()
    status = env.client.get(r.json()["status_url"], headers=s.reads(2)).json()
    assert status["status"] == "failed" and "expired before it could be relayed" in \
        status["error"] and status["tx_hash"] is None
    # the nonce is free again: the next order of this prosumer reuses it
    s.nonces[2] -= 1
    again = env.client.post("/v1/orders", json=s.body(2, next(s.intervals)))
    assert again.status_code == 201, again.text


def test_background_relay(env, tmp_path):
    app = create_app(env.chain, env.deployment, db_path=tmp_path / "bg.sqlite")
    s = env.signer
    interval = next(s.intervals)
    with TestClient(app) as client:
        r = client.post("/v1/orders", json=s.body(3, interval))
        assert r.status_code == 201
        deadline = time.monotonic() + 30
        while client.get(r.json()["status_url"], headers=s.reads(3)).json()["status"] != \
                "relayed":
            assert time.monotonic() < deadline, "relayer thread did not relay the order"
            time.sleep(0.05)


def test_store_refuses_a_second_live_order_with_the_same_nonce(tmp_path):
    store = OrderStore(tmp_path / "s.sqlite")
    a = Order("0x" + "11" * 20, 5, Side.BUY, 10, 10, 0, 10)
    b = Order("0x" + "11" * 20, 5, Side.BUY, 11, 10, 0, 10)
    store.insert(a, b"\x01" * 32, b"sig", 0.0)
    with pytest.raises(ValueError, match="already stored"):
        store.insert(b, b"\x02" * 32, b"sig", 0.0)
    store.mark(1, "failed", error="test")
    store.insert(b, b"\x02" * 32, b"sig", 0.0)  # a failed order frees its nonce
    store.mark(2, "failed", error="test")
    assert store.insert(b, b"\x02" * 32, b"sig", 1.0) == 2  # the same order again: revived
    assert store.by_digest(b"\x02" * 32).error is None
    with pytest.raises(ValueError, match="unknown order status"):
        store.mark(1, "lost")
    assert store.counts() == {"pending": 1, "sent": 0, "relayed": 0, "failed": 1}


def test_gateway_submit_is_the_path_of_post_orders(env):
    """In-process callers (the day simulation) use ``OrderGateway.submit``: same checks."""
    s = env.signer
    account = s.prosumers[5]
    interval = next(s.intervals)
    order = Order(account.address, interval, Side.SELL, 100, 90_000,
                  env.gw.expected_nonce(account.address),
                  (interval + 1) * env.deployment.interval_s)
    sig = sign_order(order, env.gw.domain, account.key)
    n = _stored(env)
    accepted = env.gw.submit(order, sig)
    s.nonces[5] += 1
    assert accepted.digest == env.gw.domain.digest(order)
    assert _stored(env) == n + 1
    with pytest.raises(ValueError, match="replayed"):
        env.gw.submit(order, sig)
    assert env.gw.expected_nonce(account.address) == order.nonce + 1
    assert env.client.get("/v1/orders/0x" + accepted.digest.hex(),
                          headers=s.reads(5)).json()["status"] == "pending"


def test_failed_chain_read_is_503_chain_unavailable_and_stores_nothing(env, monkeypatch):
    """A chain read that fails (not a revert) marks the node down: that order and the next one
    (refused without a read while the failure is recent) get 503 ``chain_unavailable``."""

    def broken_call(*_args, **_kwargs):
        raise OSError("connection reset by peer")

    monkeypatch.setattr(env.chain, "call", broken_call)
    n = _stored(env)
    for _ in range(2):
        body = env.signer.body(0, next(env.signer.intervals), advance=False)  # uncached read
        refused = env.client.post("/v1/orders", json=body)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"
        error = refused.json()["error"]
        assert error["code"] == "chain_unavailable"
        assert "OSError: connection reset by peer" in error["message"]
    assert "known down" in error["message"]
    assert _stored(env) == n and not env.gw.chain_ok
    monkeypatch.undo()
    assert env.gw.probe() and env.gw.chain_ok


def test_serve_reports_a_dead_node(unused_tcp_port, tmp_path, capsys):
    from gridshare.cli import main

    code = main(["serve", "--rpc", f"http://127.0.0.1:{unused_tcp_port}", "--deployment",
                 str(tmp_path / "missing.json")])
    assert code == 1
    assert "unavailable" in capsys.readouterr().err
