"""The dashboard's server side on the embedded chain (the browser test on anvil is
``test_dashboard_browser.py``): the feeder graph of every built-in feeder, the page and its files,
the snapshot (read-only, on the API tests' shared deployment) and its per-block cache, the
transaction lookup, and the read-proof helper for members without a browser wallet."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from capacity.feeders import FEEDER_NAMES
from gridshare.api import create_app
from gridshare.api.auth import HEADER_EXPIRES, HEADER_MEMBER, HEADER_SIGNATURE
from gridshare.api.dashboard.feeder import feeder_graph
from gridshare.api.dashboard.routes import STATIC, STATIC_FILES
from gridshare.api.dashboard.sign import main as sign_main
from gridshare.api.dashboard.sign import read_proof


@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_feeder_graph_has_every_bus_and_branch_laid_out_from_the_slack(name):
    from oracle.state import feeder_model

    feeder = feeder_model(name)
    g = feeder_graph(name)
    ids = [b["id"] for b in g["buses"]]
    assert sorted(ids) == sorted(int(b) for b in feeder.bus_ids)
    kinds = [br["kind"] for br in g["branches"]]
    assert kinds.count("line") == len(feeder.lines.from_bus)
    assert kinds.count("trafo") == len(feeder.trafos.hv_bus)
    for br in g["branches"]:
        assert br["from"] in ids and br["to"] in ids
    for b in g["buses"]:
        assert 0.0 <= b["x"] <= 1.0 and 0.0 <= b["y"] <= 1.0
    slack = next(b for b in g["buses"] if b["id"] == g["slack_bus"])
    assert slack["x"] == 0.0 and all(b["x"] > 0 for b in g["buses"] if b is not slack)
    assert {f["name"] for f in g["flexibilities"]} == {f.name for f in feeder.flexibilities}
    assert {n for b in g["buses"] for n in b["flex"]} == {f.name for f in feeder.flexibilities}
    positions = {(b["x"], b["y"]) for b in g["buses"]}
    assert len(positions) == len(ids)  # no two buses drawn on top of each other
    assert g["n_leaves"] >= 1


@pytest.fixture(scope="module")
def client(api_market):
    chain, deployment = api_market
    app = create_app(chain, deployment, relay=False)
    with TestClient(app) as c:
        yield c
    app.state.dashboard.stop()


def test_page_and_its_two_files_are_served_from_the_package(client):
    r = client.get("/dashboard", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/dashboard/"
    page = client.get("/dashboard/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/dashboard/static/dashboard.js" in page.text
    assert "://" not in page.text  # nothing from another origin (no CDN)
    for name, media in STATIC_FILES.items():
        r = client.get(f"/dashboard/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(media)
        assert r.content == (STATIC / name).read_bytes()
    assert client.get("/dashboard/static/index.htm").status_code == 404
    assert client.get("/dashboard/static/..%2Fdata.py").status_code in (404, 422)
    assert sum((STATIC / n).stat().st_size for n in STATIC_FILES) < 60_000  # small


def test_snapshot_reads_the_deployment_and_is_cached_per_block(client, api_market):
    _, deployment = api_market
    r = client.get("/dashboard/api/snapshot", params={"hours": 2})
    assert r.status_code == 200, r.text
    assert r.headers["server-timing"].startswith("snapshot;dur=")
    s = r.json()
    assert set(s) >= {"deployment", "window", "health", "buses", "flexibilities",
                      "compliance", "intervals", "server_ms"}
    assert s["deployment"]["feeder"] == deployment.feeder
    assert [f["device_id"] for f in s["flexibilities"]] == [
        int(d["device_id"]) for d in deployment.devices]
    w = s["window"]
    assert w["to_interval"] == w["current_interval"] + 1
    assert w["to_interval"] - w["from_interval"] + 1 == 2 * 3600 // w["interval_s"] + 1
    assert s["health"]["chain"]["chain_id"] == deployment.chain_id
    assert {"orders_waiting", "oldest_waiting_age_s", "state"} <= set(s["health"]["relay"])
    json.dumps(s)  # plain JSON
    # the same block again: the cached snapshot (no chain read but the head's)
    t0 = time.perf_counter()
    again = client.get("/dashboard/api/snapshot", params={"hours": 2}).json()
    assert (time.perf_counter() - t0) < 0.5
    assert again["window"] == s["window"] and again["intervals"] == s["intervals"]
    assert client.get("/dashboard/api/snapshot", params={"hours": 25}).status_code == 422


def test_feeder_and_transaction_lookups(client, api_market):
    chain, deployment = api_market
    g = client.get("/dashboard/api/feeder").json()
    assert g["name"] == deployment.feeder and g["buses"]
    tx = chain.w3.eth.get_block(deployment.deploy_block, full_transactions=True)[
        "transactions"][0]["hash"].to_0x_hex()
    got = client.get(f"/dashboard/api/tx/{tx}").json()
    assert got["block_number"] == deployment.deploy_block and got["status"] in (0, 1)
    r = client.get("/dashboard/api/tx/0x" + "ab" * 32)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_read_proof_helper_is_accepted_by_the_private_reads(client, api_market):
    chain, deployment = api_market
    member = chain.keys.account("prosumer_20")
    proof = read_proof(deployment, bytes(member.key), int(time.time()) + 300)
    assert proof[HEADER_MEMBER] == member.address
    r = client.get(f"/v1/members/{member.address}/orders", headers=proof)
    assert r.status_code == 200 and r.json()["member"] == member.address
    other = chain.keys.account("prosumer_21").address
    assert client.get(f"/v1/members/{other}/orders", headers=proof).status_code == 403


def test_sign_command_prints_the_three_headers(tmp_path, api_market, capsys):
    _, deployment = api_market
    deployment.save(tmp_path / "deployment.json")
    assert sign_main(["--deployment", str(tmp_path / "deployment.json"), "--role",
                      "prosumer_3", "--expires-in", "120"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {HEADER_MEMBER, HEADER_EXPIRES, HEADER_SIGNATURE}
    assert 0 < int(out[HEADER_EXPIRES]) - time.time() <= 120
    with pytest.raises(SystemExit):
        sign_main(["--deployment", str(tmp_path / "deployment.json"), "--role", "prosumer_3",
                   "--expires-in", "999999"])
