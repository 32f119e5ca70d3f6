"""Chain selection and key resolution (gridshare/chain/config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account

from gridshare.chain.config import (
    EMBEDDED,
    ENV_CHAIN,
    ChainConfig,
    ConfigError,
    KeyRing,
    devnet_account,
    devnet_private_key,
    devnet_role_index,
    is_devnet,
    write_keystore,
)

MAINNET = 1
FAST_KDF = {"kdf": "pbkdf2", "iterations": 16}  # test speed only; real keystores use scrypt


def test_chain_config_from_flag_env_and_default() -> None:
    assert ChainConfig.from_env(env={}).chain == EMBEDDED
    assert ChainConfig.from_env(env={ENV_CHAIN: "http://node:8545"}).chain == "http://node:8545"
    flag = ChainConfig.from_env(rpc="http://127.0.0.1:1", env={ENV_CHAIN: "http://node:8545"})
    assert flag.chain == "http://127.0.0.1:1" and not flag.is_embedded


@pytest.mark.parametrize("chain", ["ws://node:8546", "node:8545", "", "Embedded"])
def test_chain_config_rejects_other_strings(chain: str) -> None:
    with pytest.raises(ConfigError, match="embedded"):
        ChainConfig(chain=chain)


def test_chain_config_rejects_negative_retries() -> None:
    with pytest.raises(ConfigError, match="retries"):
        ChainConfig(retries=-1)


def test_devnet_detection_and_extension() -> None:
    assert is_devnet(31337, env={})
    assert not is_devnet(MAINNET, env={})
    assert is_devnet(4242, env={"GRIDSHARE_DEVNET_CHAIN_IDS": "77, 4242"})
    with pytest.raises(ConfigError, match="GRIDSHARE_DEVNET_CHAIN_IDS"):
        is_devnet(1, env={"GRIDSHARE_DEVNET_CHAIN_IDS": "abc"})


def test_devnet_roles_have_distinct_accounts() -> None:
    roles = ["deployer", "oracle", "settler", "battery", "meter_0", "meter_1", "prosumer_0"]
    indices = [devnet_role_index(r) for r in roles]
    assert len(set(indices)) == len(roles)
    addresses = {devnet_account(i).address for i in indices}
    assert len(addresses) == len(roles)


@pytest.mark.parametrize("index", [0, 1, 17, 139])
def test_fast_devnet_derivation_matches_full_bip32_path(index: int) -> None:
    from eth_account.hdaccount import key_from_seed, seed_from_mnemonic

    from gridshare.chain.config import DEVNET_HD_PATH, DEVNET_MNEMONIC

    seed = seed_from_mnemonic(DEVNET_MNEMONIC, "")
    assert devnet_private_key(index) == key_from_seed(seed, f"{DEVNET_HD_PATH}/{index}")


def test_devnet_keys_match_anvils_accounts(anvil) -> None:
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(anvil.url))
    assert w3.eth.accounts[:4] == [devnet_account(i).address for i in range(4)]


def test_env_key_wins_over_devnet_key() -> None:
    own = Account.create()
    ring = KeyRing(31337, env={"GRIDSHARE_KEY_ORACLE": own.key.hex()})
    assert ring.address("oracle") == own.address
    assert ring.address("settler") == devnet_account(devnet_role_index("settler")).address


def test_invalid_env_key_names_the_variable() -> None:
    ring = KeyRing(31337, env={"GRIDSHARE_KEY_METER_3": "0x1234"})
    with pytest.raises(ConfigError, match="GRIDSHARE_KEY_METER_3"):
        ring.account("meter_3")


def test_missing_key_off_devnet_names_what_to_set() -> None:
    ring = KeyRing(MAINNET, env={})
    with pytest.raises(ConfigError, match="GRIDSHARE_KEY_ORACLE"):
        ring.account("oracle")


def test_well_known_key_refused_off_devnet() -> None:
    ring = KeyRing(MAINNET, env={"GRIDSHARE_KEY_DEPLOYER": devnet_private_key(0).hex()})
    with pytest.raises(ConfigError, match="well-known"):
        ring.account("deployer")


@pytest.mark.parametrize("role", ["admin", "meter", "meter_x", "prosumer-1", ""])
def test_unknown_roles_rejected(role: str) -> None:
    with pytest.raises(ConfigError, match="role"):
        KeyRing(31337, env={}).account(role)


def test_keystore_with_password_env_and_file(tmp_path: Path) -> None:
    own = Account.create()
    write_keystore(tmp_path / "keys" / "oracle.json", own.key, "s3cret", **FAST_KDF)
    env = {"GRIDSHARE_KEYSTORE_DIR": str(tmp_path / "keys"),
           "GRIDSHARE_KEYSTORE_PASSWORD": "s3cret"}
    assert KeyRing(MAINNET, env=env).address("oracle") == own.address
    (tmp_path / "pw").write_text("s3cret\n")
    env_file = {"GRIDSHARE_KEYSTORE_DIR": str(tmp_path / "keys"),
                "GRIDSHARE_KEYSTORE_PASSWORD_FILE": str(tmp_path / "pw")}
    assert KeyRing(MAINNET, env=env_file).address("oracle") == own.address
    # a role without a keystore file still has no key off a devnet
    with pytest.raises(ConfigError, match=r"settler\.json"):
        KeyRing(MAINNET, env=env).account("settler")


def test_keystore_wrong_or_missing_password(tmp_path: Path) -> None:
    write_keystore(tmp_path / "oracle.json", Account.create().key, "right", **FAST_KDF)
    wrong = {"GRIDSHARE_KEYSTORE_DIR": str(tmp_path), "GRIDSHARE_KEYSTORE_PASSWORD": "wrong"}
    with pytest.raises(ConfigError, match="decrypt"):
        KeyRing(MAINNET, env=wrong).account("oracle")
    with pytest.raises(ConfigError, match="GRIDSHARE_KEYSTORE_PASSWORD"):
        KeyRing(MAINNET, env={"GRIDSHARE_KEYSTORE_DIR": str(tmp_path)}).account("oracle")
