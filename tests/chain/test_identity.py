"""Chain identity (gridshare.chain.identity): recorded once, checked against the node; every
difference named in one line."""

from __future__ import annotations

import dataclasses

import pytest

from gridshare.chain.client import connect
from gridshare.chain.deploy import DeployParams, deploy
from gridshare.chain.identity import (
    NO_CODE,
    ChainIdentity,
    ChainResetError,
    check_identity,
    client_name,
    read_identity,
)


@pytest.fixture(scope="module")
def deployed():
    chain = connect()
    deployment = deploy(chain, DeployParams(register_prosumers=False))
    return chain, deployment


def test_the_same_chain_passes_and_round_trips_through_meta(deployed) -> None:
    chain, deployment = deployed
    capacity = deployment.contracts["GridCapacity"]
    identity = read_identity(chain, [capacity], deployment.deploy_block)
    assert identity.code_hashes[capacity] != NO_CODE and identity.anchor_hash.startswith("0x")
    assert ChainIdentity.from_meta(identity.as_meta()) == identity
    assert ChainIdentity.from_meta({"feeder": "x"}) is None
    check_identity(chain, identity)
    assert client_name(chain) == "embedded"


@pytest.mark.parametrize(("change", "message"), [
    ({"chain_id": 1}, "chain id 131277322940537, recorded 1"),
    ({"genesis_hash": "0x" + "ab" * 32}, "genesis block 0x"),
    ({"anchor_hash": "0x" + "cd" * 32}, "recorded 0xcdcdcdcd"),
    ({"anchor_block": 10**6}, "is missing, recorded"),
])
def test_a_different_chain_is_refused_in_one_line(deployed, change, message) -> None:
    chain, deployment = deployed
    capacity = deployment.contracts["GridCapacity"]
    recorded = dataclasses.replace(read_identity(chain, [capacity], deployment.deploy_block),
                                   **change)
    with pytest.raises(ChainResetError) as info:
        check_identity(chain, recorded, "the store s.sqlite is kept")
    text = str(info.value)
    assert message in text and "\n" not in text
    assert text.startswith("chain reset: the node at embedded is not the deployment's chain")
    assert text.endswith("; the store s.sqlite is kept")


def test_without_an_anchor_the_contract_code_is_checked(deployed) -> None:
    chain, deployment = deployed
    capacity = deployment.contracts["GridCapacity"]
    nobody = "0x000000000000000000000000000000000000dEaD"
    assert read_identity(chain, [nobody]).code_hashes[nobody] == NO_CODE
    recorded = ChainIdentity(chain.chain_id, read_identity(chain, []).genesis_hash,
                             {capacity: "0x" + "00" * 32, nobody: "0x" + "11" * 32})
    with pytest.raises(ChainResetError, match=f"other contract code at {capacity}; no "
                                              f"contract code at {nobody}"):
        check_identity(chain, recorded)
