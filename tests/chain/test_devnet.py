"""The Besu QBFT devnet generator and docker-compose.yml."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import pytest
import rlp
import yaml
from eth_keys import keys

from gridshare.chain import cli as chain_cli
from gridshare.chain.config import (
    DEVNET_BALANCE_WEI,
    DEVNET_CHAIN_IDS,
    GRIDSHARE_DEVNET_CHAIN_ID,
    devnet_account,
)
from gridshare.chain.devnet import (
    P2P_PORT,
    RPC_IP,
    SUBNET,
    VALIDATOR_COUNT,
    decode_qbft_extra_data,
    generate,
    genesis,
    qbft_extra_data,
    validator_ip,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
VALIDATORS = [
    "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20, "0x" + "44" * 20,
]


# ----------------------------------------------------------------------------- extraData
def test_extra_data_matches_hand_encoded_rlp() -> None:
    """One validator, encoded by hand: list(58 bytes) = vanity | [addr] | [] | 0 | []."""
    address = "aa" * 20
    expected = "0xf83a" + "a0" + "00" * 32 + "d594" + address + "c0" + "80" + "c0"
    assert qbft_extra_data(["0x" + address]) == expected


def test_extra_data_rlp_decodes_to_validator_set() -> None:
    extra = qbft_extra_data(VALIDATORS)
    vanity, validators, vote, round_number, seals = rlp.decode(bytes.fromhex(extra[2:]))
    assert vanity == b"\x00" * 32
    assert ["0x" + v.hex() for v in validators] == VALIDATORS
    assert (vote, round_number, seals) == ([], b"", [])
    assert [v.lower() for v in decode_qbft_extra_data(extra)] == VALIDATORS


@pytest.mark.parametrize(
    ("validators", "vanity", "message"),
    [([], b"\0" * 32, "at least one"), (["0x1234"], b"\0" * 32, "20 bytes"),
     (VALIDATORS, b"\0" * 31, "vanity")],
)
def test_extra_data_rejects_bad_input(validators, vanity, message) -> None:
    with pytest.raises(ValueError, match=message):
        qbft_extra_data(validators, vanity)


def test_decode_rejects_non_qbft_extra_data() -> None:
    with pytest.raises(ValueError, match="5 fields"):
        decode_qbft_extra_data("0x" + rlp.encode([b"\0" * 32, []]).hex())
    with_seal = "0x" + rlp.encode([b"\0" * 32, [bytes(20)], [], 0, [b"\1" * 65]]).hex()
    with pytest.raises(ValueError, match="no seals"):
        decode_qbft_extra_data(with_seal)


# ----------------------------------------------------------------------------- genesis
def test_genesis_has_the_fields_besu_needs() -> None:
    doc = genesis(VALIDATORS, chain_id=4242)
    config = doc["config"]
    assert config["chainId"] == 4242
    assert config["qbft"] == {"blockperiodseconds": 2, "epochlength": 30000,
                              "requesttimeoutseconds": 4}
    assert config["zeroBaseFee"] is True
    assert (config["shanghaiTime"], config["cancunTime"], config["londonBlock"]) == (0, 0, 0)
    assert doc["difficulty"] == "0x1"
    assert int(doc["gasLimit"], 16) >= 30_000_000
    assert doc["mixHash"] == "0x63746963616c2062797a616e74696e65206661756c7420746f6c6572616e6365"
    assert [v.lower() for v in decode_qbft_extra_data(doc["extraData"])] == VALIDATORS
    deployer = devnet_account(0).address[2:].lower()
    assert int(doc["alloc"][deployer]["balance"], 16) == DEVNET_BALANCE_WEI
    with pytest.raises(ValueError, match="chain_id"):
        genesis(VALIDATORS, chain_id=0)


def test_devnet_chain_id_is_a_devnet() -> None:
    assert GRIDSHARE_DEVNET_CHAIN_ID in DEVNET_CHAIN_IDS


@pytest.fixture
def devnet_dir(tmp_path: Path) -> tuple[Path, dict]:
    out = tmp_path / "devnet"
    return out, generate(out, seed=7)


def test_generate_writes_consistent_keys_genesis_and_static_nodes(devnet_dir) -> None:
    out, summary = devnet_dir
    doc = json.loads((out / "genesis.json").read_text())
    addresses, enodes = [], []
    for i in range(1, VALIDATOR_COUNT + 1):
        node = out / f"validator-{i}"
        key = keys.PrivateKey(bytes.fromhex((node / "key").read_text().strip()[2:]))
        addresses.append(key.public_key.to_checksum_address())
        assert (node / "address").read_text() == addresses[-1]
        assert (node / "key.pub").read_text() == key.public_key.to_hex()
        assert (node / "key").stat().st_mode & 0o077 == 0
        enodes.append(f"enode://{key.public_key.to_hex()[2:]}@{validator_ip(i)}:{P2P_PORT}")
    assert decode_qbft_extra_data(doc["extraData"]) == addresses
    assert json.loads((out / "static-nodes.json").read_text()) == enodes
    assert (out / "bootnodes.txt").read_text().strip() == ",".join(enodes)
    rpc_key = keys.PrivateKey(bytes.fromhex((out / "rpc" / "key").read_text()[2:]))
    assert rpc_key.public_key.to_checksum_address() not in addresses  # not a validator
    assert summary["rpc"]["ip"] == RPC_IP
    assert json.loads((out / "devnet.json").read_text()) == summary
    assert devnet_account(0).address in summary["funded_accounts"]


def test_seeded_generation_is_reproducible(tmp_path: Path, devnet_dir) -> None:
    out, _ = devnet_dir
    again = tmp_path / "again"
    generate(again, seed=7)
    other = tmp_path / "other"
    generate(other, seed=8)
    random_dir = tmp_path / "random"
    generate(random_dir)
    key = (out / "validator-1" / "key").read_text()
    assert (again / "validator-1" / "key").read_text() == key
    assert (other / "validator-1" / "key").read_text() != key
    assert (random_dir / "validator-1" / "key").read_text() != key
    assert (again / "genesis.json").read_text() == (out / "genesis.json").read_text()


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    chain_cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_refuses_to_overwrite_and_keeps_existing(devnet_dir, capsys) -> None:
    out, _ = devnet_dir
    key = (out / "validator-1" / "key").read_text()
    assert _run_cli(["devnet", "generate", "--out", str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    assert _run_cli(["devnet", "generate", "--out", str(out), "--keep-existing"]) == 0
    assert (out / "validator-1" / "key").read_text() == key
    assert _run_cli(["devnet", "generate", "--out", str(out), "--force", "--seed", "9"]) == 0
    assert (out / "validator-1" / "key").read_text() != key


def test_cli_rejects_bad_validator_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_validators"):
        _run_cli(["devnet", "generate", "--out", str(tmp_path / "d"), "--validators", "0"])


# ----------------------------------------------------------------------------- compose
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_runs_four_validators_and_an_rpc_node_on_a_pinned_besu(compose) -> None:
    services = compose["services"]
    besu = {name: s for name, s in services.items() if s.get("image", "").startswith(
        "hyperledger/besu")}
    assert sorted(besu) == ["rpc", "validator-1", "validator-2", "validator-3", "validator-4"]
    for service in besu.values():
        tag = service["image"].split(":", 1)[1]
        assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"unpinned besu image {service['image']}"
        assert tuple(int(p) for p in tag.split(".")) >= (24, 1, 0)
        env = service["environment"]
        assert env["BESU_GENESIS_FILE"] == "/devnet/genesis.json"
        assert env["BESU_STATIC_NODES_FILE"] == "/devnet/static-nodes.json"
        assert env["BESU_MIN_GAS_PRICE"] == "0"  # zero base fee chain: free transactions
        assert "./devnet:/devnet:ro" in service["volumes"]
        assert service["depends_on"]["devnet-init"]["condition"] == (
            "service_completed_successfully")


def test_compose_ips_and_keys_match_the_generator(compose) -> None:
    services = compose["services"]
    assert compose["networks"]["gridshare"]["ipam"]["config"][0]["subnet"] == SUBNET
    expected = {f"validator-{i}": validator_ip(i) for i in range(1, VALIDATOR_COUNT + 1)}
    expected["rpc"] = RPC_IP
    for name, ip in expected.items():
        service = services[name]
        assert service["networks"]["gridshare"]["ipv4_address"] == ip
        assert f"--p2p-host={ip}" in service["command"]
        assert f"--node-private-key-file=/devnet/{name}/key" in service["command"]
    assert "127.0.0.1:8545:8545" in services["rpc"]["ports"]


def test_compose_gridshare_services_use_the_project_image(compose) -> None:
    services = compose["services"]
    init = services["devnet-init"]
    assert init["command"][:2] == ["devnet", "generate"] and "--keep-existing" in init["command"]
    for name in ("devnet-init", "deploy", "oracle", "api"):
        assert services[name]["build"] == "."
        assert services[name]["environment"]["GRIDSHARE_CHAIN"] == "http://rpc:8545"
    assert services["deploy"]["command"][0] == "deploy"
    for name in ("oracle", "api"):
        assert services[name]["depends_on"]["deploy"]["condition"] == (
            "service_completed_successfully")
    assert (REPO_ROOT / "Dockerfile").is_file()


def test_docker_compose_config_validates(require_tool) -> None:
    binary = require_tool("docker-compose")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True,
        cwd=REPO_ROOT, timeout=60,
    )
    assert result.returncode == 0, result.stderr
