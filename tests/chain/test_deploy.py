"""``gridshare deploy``: contracts, roles, devices, prosumers and the deployment file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from eth_utils import keccak

from capacity.feeders import feeder_case
from gridshare.chain import cli as chain_cli
from gridshare.chain.client import Chain, connect
from gridshare.chain.config import ChainConfig
from gridshare.chain.deploy import Deployment, DeployParams, deploy
from gridshare.units import eur_per_kwh_to_price, kw_to_w

ADMIN = b"\x00" * 32


@pytest.fixture(scope="module")
def deployed() -> tuple[Chain, Deployment]:
    chain = connect()
    return chain, deploy(chain, DeployParams(feeder="heimschuh-like", interval_s=600))


def test_roles_are_granted_to_the_configured_accounts(deployed) -> None:
    chain, dep = deployed
    capacity, market = dep.capacity(chain), dep.market(chain)
    has = lambda c, role, who: chain.call(c.functions.hasRole(role, who))  # noqa: E731
    keys = chain.keys
    assert has(capacity, ADMIN, keys.address("deployer"))
    assert has(capacity, keccak(text="ORACLE_ROLE"), keys.address("oracle"))
    assert not has(capacity, keccak(text="ORACLE_ROLE"), keys.address("settler"))
    for device in dep.devices:
        assert has(capacity, keccak(text="METER_ROLE"), device["meter"])
        assert device["meter"] == keys.address(device["meter_role"])
    assert has(market, ADMIN, keys.address("deployer"))
    assert has(market, keccak(text="COMMUNITY_ADMIN_ROLE"), keys.address("deployer"))
    assert has(market, keccak(text="SETTLER_ROLE"), keys.address("settler"))
    assert not has(market, keccak(text="SETTLER_ROLE"), keys.address("oracle"))
    assert has(market, keccak(text="PAUSER_ROLE"), keys.address("deployer"))
    for contract in (capacity, market):  # two-step admin hand-over with the configured delay
        assert chain.call(contract.functions.defaultAdmin()) == keys.address("deployer")
        assert chain.call(contract.functions.defaultAdminDelay()) == dep.admin_delay_s


def test_feeder_devices_registered_with_rated_ranges_in_w(deployed) -> None:
    chain, dep = deployed
    capacity = dep.capacity(chain)
    flexibilities = feeder_case("heimschuh-like").flexibilities
    n_customers = len(feeder_case("heimschuh-like").customers)
    assert len(flexibilities) == len(dep.devices)
    assert chain.call(capacity.functions.deviceCount()) == len(flexibilities) + n_customers
    assert chain.call(capacity.functions.maxIntervalsAhead()) == dep.max_intervals_ahead == 96
    for flex in flexibilities:
        device = chain.call(capacity.functions.deviceOf(dep.device_id(flex.name)))
        registered, kind, _, bus, p_min_w, p_max_w, _, meter = device
        assert registered and bus == flex.bus_id
        assert meter == chain.keys.address(f"meter_{dep.device_id(flex.name) - 1}")
        assert (p_min_w, p_max_w) == (kw_to_w(flex.p_low_kw), kw_to_w(flex.p_high_kw))
        assert kind == {"community_battery": 0, "charging_station": 1, "other": 2}[
            flex.kind.value]
    assert dep.battery_device_id == dep.device_id("CB")
    with pytest.raises(KeyError, match="CS99"):
        dep.device_id("CS99")


def test_market_parameters_and_prosumers(deployed) -> None:
    chain, dep = deployed
    market, capacity = dep.market(chain), dep.capacity(chain)
    assert chain.call(market.functions.batteryDeviceId()) == dep.battery_device_id
    assert chain.call(market.functions.batteryAccount()) == chain.keys.address("battery")
    assert chain.call(market.functions.capacity()) == capacity.address
    assert chain.call(market.functions.intervalSeconds()) == 600 == dep.interval_s
    assert chain.call(capacity.functions.intervalSeconds()) == 600
    assert chain.call(market.functions.retailTariffMicroEurPerKwh()) == eur_per_kwh_to_price(0.30)
    assert chain.call(market.functions.maxOrderEnergyWh()) == dep.max_order_energy_wh
    assert chain.call(market.functions.tariffs()) == tuple(
        dep.prices_micro_eur_per_kwh[k] for k in ("retail", "feed_in", "imbalance_buy",
                                                  "imbalance_sell"))
    customers = feeder_case("heimschuh-like").customers
    assert [p["name"] for p in dep.prosumers] == [c.name for c in customers]
    head_end = chain.keys.address(f"meter_{len(dep.devices)}")
    for j, (prosumer, customer) in enumerate(zip(dep.prosumers, customers, strict=True)):
        assert chain.call(market.functions.isProsumer(prosumer["address"]))
        # each member is bound to its own connection meter, after the transformer's id
        assert prosumer["device_id"] == len(dep.devices) + 2 + j
        assert chain.call(market.functions.memberOfDevice(prosumer["device_id"])) == \
            prosumer["address"]
        device = chain.call(capacity.functions.deviceOf(prosumer["device_id"]))
        assert (device[3], device[4], device[6], device[7]) == (
            customer.bus_id, kw_to_w(-customer.pv_kwp), prosumer["address"], head_end)
    assert dep.deploy_block >= 1 and dep.chain_id == chain.chain_id


def test_deployment_file_round_trip_and_errors(deployed, tmp_path: Path) -> None:
    chain, dep = deployed
    path = dep.save(tmp_path / "sub" / "deployment.json")
    loaded = Deployment.load(path)
    assert loaded == dep
    assert loaded.is_live(chain)
    assert not loaded.is_live(connect())  # a fresh embedded chain has no code there
    with pytest.raises(FileNotFoundError, match="gridshare deploy"):
        Deployment.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        Deployment.load(tmp_path / "bad.json")
    data = json.loads(path.read_text())
    with pytest.raises(ValueError, match="format"):
        Deployment.from_dict({**data, "format": "other/1"})
    del data["contracts"]
    with pytest.raises(ValueError, match="contracts"):
        Deployment.from_dict(data)


def test_deployment_file_with_the_old_seconds_keys_still_loads(deployed) -> None:
    """Files written before the ``*_s`` names keep working: same deployment, new keys on save."""
    _, dep = deployed
    data = json.loads(dep.to_json())
    old = {("interval_seconds" if k == "interval_s" else "heartbeat_seconds" if k == "heartbeat_s"
            else "admin_delay_seconds" if k == "admin_delay_s" else k): v for k, v in data.items()}
    assert "interval_s" not in old and old["interval_seconds"] == dep.interval_s
    loaded = Deployment.from_dict(old)
    assert loaded == dep
    assert '"interval_s"' in loaded.to_json() and "interval_seconds" not in loaded.to_json()


def test_deployment_refuses_another_chain(deployed) -> None:
    _, dep = deployed
    other = Deployment.from_dict({**json.loads(dep.to_json()), "chain_id": 31337})
    with pytest.raises(ValueError, match="chain id"):
        other.capacity(connect())


def test_feeder_without_battery_is_noted() -> None:
    dep = deploy(connect(), DeployParams(feeder="paper-test-feeder", register_prosumers=False))
    assert dep.battery_device_id is None and dep.prosumers == []
    assert any("no community battery" in note for note in dep.notes)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"interval_s": 0}, "positive"), ({"retail_eur_per_kwh": 2.0}, "prices"),
     ({"min_price_eur_per_kwh": 0.5, "feed_in_eur_per_kwh": 0.1}, "prices"),
     ({"imbalance_buy_eur_per_kwh": 1.5}, "prices"), ({"max_intervals_ahead": -1}, ">= 0"),
     ({"max_order_energy_wh": 0}, "max_order_energy_wh"),
     ({"max_order_energy_wh": 2**64 - 1, "max_price_eur_per_kwh": 10_000.0}, "2\\^96")],
)
def test_deploy_params_validation(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        DeployParams(**kwargs)


def test_unknown_feeder_rejected() -> None:
    with pytest.raises(ValueError, match="unknown feeder"):
        deploy(connect(), DeployParams(feeder="atlantis"))


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    chain_cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.anvil
def test_cli_deploys_to_anvil_once(anvil, tmp_path: Path, capsys) -> None:
    out = tmp_path / "deployment.json"
    assert _run_cli(["deploy", "--rpc", anvil.url, "--out", str(out),
                     "--interval-s", "300"]) == 0
    first = out.read_text()
    dep = Deployment.load(out)
    assert (dep.rpc, dep.chain_id, dep.interval_s) == (anvil.url, 31337, 300)
    chain = connect(ChainConfig(chain=anvil.url))
    assert dep.is_live(chain)
    capsys.readouterr()
    assert _run_cli(["deploy", "--rpc", anvil.url, "--out", str(out), "--if-missing"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert out.read_text() == first


def test_cli_dead_node_is_a_clean_error(tmp_path: Path, unused_tcp_port: int, capsys) -> None:
    out = tmp_path / "deployment.json"
    code = _run_cli(["deploy", "--rpc", f"http://127.0.0.1:{unused_tcp_port}", "--out", str(out)])
    assert code == 1
    assert "unavailable" in capsys.readouterr().err
    assert not out.exists()
