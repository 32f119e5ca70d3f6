"""Roles and named reverts of both contracts, on the embedded chain AND on anvil (issues 3, 14).

Every role-protected function rejects the wrong caller; the admin cannot renounce or hand over
in one step; no account holds two duties; a paused market takes no orders or settlements but
answers reads; bands and orders outside the interval window, trades no order backs, trades
above their order's energy or beyond its limit, and bad deviation settlements revert with their
named custom error (surfaced as ``gridshare.chain.errors.ContractRevert``); the happy paths emit
their events.

One deployment (``chain.deploy``, feeder heimschuh-like: CB = device 1, CS01 = 2, CS02 = 3)
per chain for the module; every test runs inside a snapshot that is reverted afterwards.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_utils import keccak

from gridshare.chain.client import Chain, connect
from gridshare.chain.config import ChainConfig, devnet_private_key, devnet_role_index
from gridshare.chain.deploy import Deployment, deploy
from gridshare.chain.errors import ContractRevert
from gridshare.chain.metering import encode_totals
from market.orders import MarketDomain, Order, Side, book_entry, book_hash, sign_order

BATTERY_ID = 1
CS01_ID = 2
PRICE = 150_000  # micro-euro per kWh
GRID = 2**32 - 1
BATT = 2**32 - 2
ADMIN = b"\x00" * 32


@dataclass
class Env:
    """A deployed system on one chain; ``interval`` is the next interval at the test's start."""

    chain: Chain
    deployment: Deployment
    capacity: object
    market: object
    interval: int = 0

    def addr(self, role: str) -> str:
        return self.chain.keys.address(role)

    def role_id(self, name: str) -> bytes:
        return ADMIN if name == "DEFAULT_ADMIN_ROLE" else keccak(text=name)

    def now(self) -> int:
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])

    def current(self) -> int:
        return self.now() // self.deployment.interval_s

    def device_of(self, role: str) -> int:
        return next(p["device_id"] for p in self.deployment.prosumers if p["role"] == role)


@pytest.fixture(
    scope="module", params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)]
)
def deployed(request) -> Env:
    if request.param == "embedded":
        chain = connect()
    else:
        node = request.getfixturevalue("anvil")
        chain = connect(ChainConfig(chain=node.url, receipt_timeout_s=20.0))
    deployment = deploy(chain)
    return Env(chain, deployment, deployment.capacity(chain), deployment.market(chain))


@pytest.fixture
def env(deployed: Env) -> Iterator[Env]:
    snap = deployed.chain.snapshot()
    try:
        yield dataclasses.replace(deployed, interval=deployed.current() + 1)
    finally:
        deployed.chain.revert(snap)


def expect_revert(name: str, fn, sender, **kwargs) -> ContractRevert:
    """Assert ``fn`` sent by ``sender`` reverts with custom error ``name``; return it."""
    env_chain: Chain = kwargs.pop("chain")
    with pytest.raises(ContractRevert) as info:
        env_chain.transact(fn, sender, **kwargs)
    assert info.value.error_name == name, str(info.value)
    return info.value


def expect_unauthorized(env: Env, fn, sender: str, role_name: str) -> None:
    revert = expect_revert("AccessControlUnauthorizedAccount", fn, sender, chain=env.chain)
    assert revert.error_args["account"] == env.addr(sender)
    assert revert.error_args["neededRole"] == env.role_id(role_name)


def write_band(env: Env, interval: int, device_ids, p_min_w, p_max_w, sender="oracle"):
    return env.chain.transact(
        env.capacity.functions.writeBands(
            interval, b"\x11" * 32, list(device_ids), list(p_min_w), list(p_max_w)
        ),
        sender,
    )


# ============================================================================ wrong callers
ADMIN_RULES_CALLS = {
    "beginDefaultAdminTransfer": lambda c, e: c.functions.beginDefaultAdminTransfer(
        e.addr("prosumer_0")),
    "cancelDefaultAdminTransfer": lambda c, e: c.functions.cancelDefaultAdminTransfer(),
    "changeDefaultAdminDelay": lambda c, e: c.functions.changeDefaultAdminDelay(0),
    "rollbackDefaultAdminDelay": lambda c, e: c.functions.rollbackDefaultAdminDelay(),
}
CAPACITY_ADMIN_CALLS = ADMIN_RULES_CALLS | {
    "registerDevice": lambda c, e: c.functions.registerDevice(
        99, 1, 2, e.addr("deployer"), e.addr("meter_0"), 0, 1000),
    "setRatedRange": lambda c, e: c.functions.setRatedRange(CS01_ID, 0, 1000),
    "setDeviceMeter": lambda c, e: c.functions.setDeviceMeter(CS01_ID, e.addr("meter_9")),
    "setHeartbeat": lambda c, e: c.functions.setHeartbeat(60),
    "grantRole": lambda c, e: c.functions.grantRole(keccak(text="ORACLE_ROLE"), e.addr("settler")),
    "revokeRole": lambda c, e: c.functions.revokeRole(keccak(text="ORACLE_ROLE"), e.addr("oracle")),
}


@pytest.mark.parametrize("function", sorted(CAPACITY_ADMIN_CALLS))
@pytest.mark.parametrize("caller", ["oracle", "meter_0", "prosumer_0"])
def test_capacity_admin_functions_reject_non_dso(env: Env, function: str, caller: str) -> None:
    fn = CAPACITY_ADMIN_CALLS[function](env.capacity, env)
    expect_unauthorized(env, fn, caller, "DEFAULT_ADMIN_ROLE")


@pytest.mark.parametrize("caller", ["deployer", "meter_0", "settler"])
def test_oracle_functions_reject_non_oracle(env: Env, caller: str) -> None:
    fn = env.capacity.functions.writeBands(env.interval, b"\0" * 32, [BATTERY_ID], [-1000], [1000])
    expect_unauthorized(env, fn, caller, "ORACLE_ROLE")
    fn = env.capacity.functions.writeBandsWithReserve(env.interval, b"\0" * 32, [BATTERY_ID],
                                                      [-1000], [1000], 40_000)
    expect_unauthorized(env, fn, caller, "ORACLE_ROLE")
    assert tuple(env.chain.call(env.capacity.functions.reserveOf(env.interval))) == (False, 0)
    fn = env.capacity.functions.writeMeterTotals(env.interval - 2, b"")
    expect_unauthorized(env, fn, caller, "ORACLE_ROLE")


def reading(device_id: int, t: int = 1_700_000_000, p_w: int = 500) -> bytes:
    """One 24-byte reading record: id, time, P W, Q var, V micro-pu, angle micro-rad."""
    return struct.pack(">IIiiIi", device_id, t, p_w, 10, 1_000_000, -2000)


@pytest.mark.parametrize("caller", ["deployer", "oracle", "prosumer_0"])
def test_post_readings_rejects_non_meter(env: Env, caller: str) -> None:
    fn = env.capacity.functions.postReadings(reading(BATTERY_ID))
    expect_unauthorized(env, fn, caller, "METER_ROLE")


def session(device_id: int, arrive_s: int = 1_700_000_000, depart_s: int = 1_700_003_600,
            energy_wh: int = 20_000) -> bytes:
    """One 16-byte vehicle-session record: id, arrival and departure unix s, energy Wh."""
    return struct.pack(">IIII", device_id, arrive_s, depart_s, energy_wh)


@pytest.mark.parametrize("caller", ["deployer", "oracle", "prosumer_0", "settler"])
def test_declare_sessions_rejects_non_meter(env: Env, caller: str) -> None:
    fn = env.capacity.functions.declareSessions(session(CS01_ID))
    expect_unauthorized(env, fn, caller, "METER_ROLE")


@pytest.mark.parametrize("n_bytes", [0, 15, 17, 24])
def test_declare_sessions_rejects_a_malformed_blob(env: Env, n_bytes: int) -> None:
    revert = expect_revert("InvalidSessionsLength", env.capacity.functions.declareSessions(
        b"\x01" * n_bytes), "meter_0", chain=env.chain)
    assert revert.error_args["length"] == n_bytes


def test_declare_sessions_emits_the_records_as_sent(env: Env) -> None:
    packed = session(CS01_ID) + session(2**32 - 1, 0, 2**32 - 1, 2**32 - 1)
    receipt = env.chain.transact(env.capacity.functions.declareSessions(packed), "meter_0")
    (event,) = env.chain.events(receipt, env.capacity, "SessionsDeclared")
    # the contract checks role and length only; the oracle's rules decide what counts
    # (oracle.sessions: CS01's session declared by meter_0 does not)
    assert (event["args"]["meter"], event["args"]["count"]) == (env.addr("meter_0"), 2)
    assert bytes(event["args"]["packed"]) == packed


MARKET_COMMUNITY_CALLS = {
    "registerProsumer": lambda m, e: m.functions.registerProsumer(e.addr("prosumer_39"), 999),
    "removeProsumer": lambda m, e: m.functions.removeProsumer(e.addr("prosumer_0")),
    "setBatteryShare": lambda m, e: m.functions.setBatteryShare(e.addr("prosumer_0"), 100),
}
MARKET_ADMIN_CALLS = ADMIN_RULES_CALLS | {
    "setTariffs": lambda m, e: m.functions.setTariffs((300_000, 80_000, 350_000, 50_000)),
    "grantRole": lambda m, e: m.functions.grantRole(keccak(text="PAUSER_ROLE"),
                                                    e.addr("prosumer_0")),
    "revokeRole": lambda m, e: m.functions.revokeRole(keccak(text="SETTLER_ROLE"),
                                                      e.addr("settler")),
    "unpause": lambda m, e: m.functions.unpause(),
}


@pytest.mark.parametrize("function", sorted(MARKET_COMMUNITY_CALLS))
@pytest.mark.parametrize("caller", ["settler", "prosumer_0"])
def test_market_community_functions_reject_non_admin(env: Env, function: str, caller) -> None:
    fn = MARKET_COMMUNITY_CALLS[function](env.market, env)
    expect_unauthorized(env, fn, caller, "COMMUNITY_ADMIN_ROLE")


@pytest.mark.parametrize("function", sorted(MARKET_ADMIN_CALLS))
@pytest.mark.parametrize("caller", ["settler", "oracle", "prosumer_0"])
def test_market_admin_functions_reject_non_dso(env: Env, function: str, caller: str) -> None:
    expect_unauthorized(env, MARKET_ADMIN_CALLS[function](env.market, env), caller,
                        "DEFAULT_ADMIN_ROLE")


@pytest.mark.parametrize("caller", ["settler", "oracle", "prosumer_0"])
def test_pause_rejects_non_pauser(env: Env, caller: str) -> None:
    expect_unauthorized(env, env.market.functions.pause(), caller, "PAUSER_ROLE")


@pytest.mark.parametrize("caller", ["deployer", "oracle", "prosumer_0"])
def test_commit_and_settle_reject_non_settler(env: Env, caller: str) -> None:
    expect_unauthorized(env, env.market.functions.commitOrders(env.interval), caller,
                        "SETTLER_ROLE")
    expect_unauthorized(env, env.market.functions.settle(env.interval, PRICE, 0, [], []),
                        caller, "SETTLER_ROLE")


# ============================================================================ admin rules, duties
@pytest.mark.parametrize("contract_attr", ["capacity", "market"])
def test_admin_cannot_renounce_revoke_or_hand_over_in_one_step(env: Env, contract_attr) -> None:
    contract = getattr(env, contract_attr)
    revert = expect_revert("AccessControlEnforcedDefaultAdminDelay",
                           contract.functions.renounceRole(ADMIN, env.addr("deployer")),
                           "deployer", chain=env.chain)
    assert revert.error_args == {"schedule": 0}
    for fn in (contract.functions.revokeRole(ADMIN, env.addr("deployer")),
               contract.functions.grantRole(ADMIN, env.addr("prosumer_0"))):
        expect_revert("AccessControlEnforcedDefaultAdminRules", fn, "deployer", chain=env.chain)
    # two steps: begin, wait the delay, accept
    env.chain.transact(contract.functions.beginDefaultAdminTransfer(env.addr("prosumer_0")),
                       "deployer")
    expect_revert("AccessControlEnforcedDefaultAdminDelay",
                  contract.functions.acceptDefaultAdminTransfer(), "prosumer_0", chain=env.chain)
    expect_revert("AccessControlInvalidDefaultAdmin",
                  contract.functions.acceptDefaultAdminTransfer(), "prosumer_1", chain=env.chain)
    env.chain.advance_time(env.deployment.admin_delay_s + 1)
    env.chain.transact(contract.functions.acceptDefaultAdminTransfer(), "prosumer_0")
    assert env.chain.call(contract.functions.defaultAdmin()) == env.addr("prosumer_0")


@pytest.mark.parametrize(
    ("contract_attr", "role", "account", "held"),
    [("capacity", "ORACLE_ROLE", "deployer", "DEFAULT_ADMIN_ROLE"),
     ("capacity", "METER_ROLE", "oracle", "ORACLE_ROLE"),
     ("market", "SETTLER_ROLE", "deployer", "DEFAULT_ADMIN_ROLE"),
     ("market", "SETTLER_ROLE", "oracle", "ORACLE_ROLE"),
     ("market", "COMMUNITY_ADMIN_ROLE", "settler", "SETTLER_ROLE"),
     ("market", "PAUSER_ROLE", "settler", "SETTLER_ROLE")],
    ids=["dso-oracle", "oracle-meter", "dso-settler", "oracle-settler", "settler-community",
         "settler-pauser"],
)
def test_no_account_holds_two_duties(env: Env, contract_attr, role, account, held) -> None:
    contract = getattr(env, contract_attr)
    revert = expect_revert("RoleConflict", contract.functions.grantRole(
        env.role_id(role), env.addr(account)), "deployer", chain=env.chain)
    assert revert.error_args == {"account": env.addr(account), "heldRole": env.role_id(held),
                                 "requestedRole": env.role_id(role)}


def test_paused_market_refuses_orders_and_settlement_not_reads(env: Env) -> None:
    order = order_for(env, "prosumer_0")
    signature = sign_order(order, domain(env), key_of("prosumer_0"))
    env.chain.transact(env.market.functions.pause(), "deployer")
    for fn, sender in (
        (env.market.functions.submitOrderSigned(as_struct(order), signature), "settler"),
        (env.market.functions.submitOrdersSigned([as_struct(order)], [signature]), "settler"),
        (env.market.functions.submitOrder(as_struct(order)), "prosumer_0"),
        (env.market.functions.commitOrders(env.interval), "settler"),
        (env.market.functions.settle(env.interval, PRICE, 0, [], []), "settler"),
        (env.market.functions.settleDeviations(env.interval - 2, [], [], b""), "prosumer_0"),
    ):
        expect_revert("EnforcedPause", fn, sender, chain=env.chain)
    assert env.chain.call(env.market.functions.paused())
    assert env.chain.call(env.market.functions.balanceOf(env.addr("prosumer_0"))) == 0
    assert env.chain.call(env.market.functions.isOpen(env.interval))
    env.chain.transact(env.market.functions.unpause(), "deployer")
    env.chain.transact(env.market.functions.submitOrderSigned(as_struct(order), signature),
                       "settler")


# ============================================================================ bands
def test_write_bands_happy_path_emits_and_stores(env: Env) -> None:
    receipt = write_band(env, env.interval, [BATTERY_ID, CS01_ID], [-20_000, 0], [15_000, 11_000])
    (event,) = env.chain.events(receipt, env.capacity, "BandsWritten")
    assert event["args"]["interval"] == env.interval
    packed = event["args"]["bands"]
    records = [struct.unpack(">Iqq", packed[i:i + 20]) for i in range(0, len(packed), 20)]
    assert records == [(BATTERY_ID, -20_000, 15_000), (CS01_ID, 0, 11_000)]
    p_min, p_max, updated_at = env.chain.call(env.capacity.functions.bandOf(CS01_ID,
                                                                            env.interval))
    assert (p_min, p_max) == (0, 11_000)
    assert updated_at == event["args"]["updatedAt"] > 0
    assert env.chain.call(env.capacity.functions.isInside(BATTERY_ID, env.interval, -20_000))
    assert not env.chain.call(env.capacity.functions.isInside(BATTERY_ID, env.interval, 15_001))


@pytest.mark.parametrize(
    ("device_ids", "p_min_w", "p_max_w", "error", "args"),
    [
        ([BATTERY_ID], [5_000], [4_000], "InvalidBand",
         {"deviceId": BATTERY_ID, "pMinW": 5_000, "pMaxW": 4_000}),
        ([BATTERY_ID], [-50_001], [0], "OutsideRatedRange",
         {"deviceId": BATTERY_ID, "pMinW": -50_001, "pMaxW": 0}),
        ([CS01_ID], [-1], [1_000], "OutsideRatedRange",  # a charging station cannot inject
         {"deviceId": CS01_ID, "pMinW": -1, "pMaxW": 1_000}),
        ([CS01_ID], [0], [2**63 - 1], "OutsideRatedRange",
         {"deviceId": CS01_ID, "pMinW": 0, "pMaxW": 2**63 - 1}),
        ([77], [0], [1], "UnknownDevice", {"deviceId": 77}),
        ([CS01_ID, CS01_ID], [0, 0], [1, 1], "DuplicateDevice", {"deviceId": CS01_ID}),
        ([CS01_ID, BATTERY_ID], [0, 0], [1, 1], "DevicesNotAscending", {"deviceId": BATTERY_ID}),
        ([CS01_ID], [0, 0], [1], "LengthMismatch", {}),
        ([], [], [], "EmptyBatch", {}),
    ],
    ids=["min>max", "below-rated", "cs-injects", "int64-max", "unknown", "duplicate",
         "descending", "lengths", "empty"],
)
def test_invalid_bands_revert(env: Env, device_ids, p_min_w, p_max_w, error, args) -> None:
    fn = env.capacity.functions.writeBands(env.interval, b"\0" * 32, device_ids, p_min_w, p_max_w)
    revert = expect_revert(error, fn, "oracle", chain=env.chain)
    assert revert.error_args == args
    assert not env.chain.call(env.capacity.functions.anyIntervalWritten())


def test_bands_only_inside_the_window_and_no_write_blocks_another(env: Env) -> None:
    current, ahead = env.current(), env.deployment.max_intervals_ahead
    for interval, error, args in (
        (current - 1, "IntervalInPast", {"interval": current - 1, "currentInterval": current}),
        (current + ahead + 1, "IntervalTooFarAhead",
         {"interval": current + ahead + 1, "lastAllowed": current + ahead}),
        (2**64 - 1, "IntervalTooFarAhead", {"interval": 2**64 - 1, "lastAllowed": current + ahead}),
    ):
        revert = expect_revert(error, env.capacity.functions.writeBands(
            interval, b"\0" * 32, [CS01_ID], [0], [1]), "oracle", chain=env.chain)
        assert revert.error_args == args
    write_band(env, current + ahead, [CS01_ID], [0], [1])  # the far edge ...
    write_band(env, current, [CS01_ID], [0], [1])  # ... blocks neither earlier ...
    write_band(env, current + 1, [CS01_ID], [0], [1])  # ... nor later intervals
    revert = expect_revert("IntervalAlreadyWritten", env.capacity.functions.writeBands(
        current + 1, b"\0" * 32, [CS01_ID], [0], [1]), "oracle", chain=env.chain)
    assert revert.error_args == {"interval": current + 1}
    assert env.chain.call(env.capacity.functions.lastInterval()) == current + ahead


@pytest.mark.parametrize("reserve_wh", [0, 1, 2**64 - 1])
def test_the_reserve_rides_with_the_bands_at_the_uint64_extremes(env: Env, reserve_wh) -> None:
    from market.chain import MarketChain, default_battery_params

    receipt = env.chain.transact(env.capacity.functions.writeBandsWithReserve(
        env.interval, b"\x22" * 32, [BATTERY_ID], [-1_000], [2_000], reserve_wh), "oracle")
    events = env.chain.events(receipt, env.capacity, "ReserveWritten")
    assert [(e["args"]["interval"], e["args"]["reserveWh"]) for e in events] == [
        (env.interval, reserve_wh)]
    market = MarketChain(env.chain, env.deployment, default_battery_params(env.deployment))
    assert market.reserve_wh(env.interval) == reserve_wh
    assert market.reserve_wh(env.interval + 1) is None
    assert tuple(env.chain.call(env.capacity.functions.bandOf(BATTERY_ID, env.interval)))[:2] \
        == (-1_000, 2_000)
    revert = expect_revert("IntervalAlreadyWritten", env.capacity.functions.writeBands(
        env.interval, b"\0" * 32, [CS01_ID], [0], [1]), "oracle", chain=env.chain)
    assert revert.error_args == {"interval": env.interval}


@pytest.mark.parametrize("reserve_wh", [-1, 2**64])
def test_a_reserve_outside_uint64_is_refused_before_it_is_sent(env: Env, reserve_wh) -> None:
    with pytest.raises(Exception, match=r"(?i)uint64|match|type"):
        env.capacity.functions.writeBandsWithReserve(
            env.interval, b"\0" * 32, [BATTERY_ID], [0], [1], reserve_wh)
    assert tuple(env.chain.call(env.capacity.functions.reserveOf(env.interval))) == (False, 0)


def test_latest_band_is_the_current_intervals_and_goes_stale(env: Env) -> None:
    interval_s = env.deployment.interval_s
    env.chain.advance_time(env.interval * interval_s - env.now())  # the start of an interval
    write_band(env, env.interval, [BATTERY_ID], [-1_000], [2_000])
    write_band(env, env.interval + 1, [BATTERY_ID], [-5], [5])  # a later band is not "latest"
    interval, p_min, p_max, _ = env.chain.call(env.capacity.functions.latestBand(BATTERY_ID))
    assert (interval, p_min, p_max) == (env.interval, -1_000, 2_000)
    env.chain.transact(env.capacity.functions.setHeartbeat(10), "deployer")
    env.chain.advance_time(20)
    with pytest.raises(ContractRevert) as info:
        env.chain.call(env.capacity.functions.latestBand(BATTERY_ID))
    assert info.value.error_name == "StaleBand"


def test_readings_and_registry_happy_paths_emit(env: Env) -> None:
    packed = reading(BATTERY_ID, p_w=-3_000) + reading(CS01_ID, p_w=-2_500)
    receipt = env.chain.transact(env.capacity.functions.postReadings(packed), "meter_0")
    (event,) = env.chain.events(receipt, env.capacity, "ReadingsPosted")
    # the contract checks the role only; which devices a meter speaks for is the consumers'
    # rule (gridshare.chain.metering: CS01's reading by meter_0 does not count)
    assert (event["args"]["meter"], event["args"]["count"]) == (env.addr("meter_0"), 2)
    assert bytes(event["args"]["packed"]) == packed
    receipt = env.chain.transact(env.capacity.functions.registerDevice(
        9_999, 4, 2, env.addr("deployer"), env.addr("meter_30"), -1_000, 3_000), "deployer")
    (event,) = env.chain.events(receipt, env.capacity, "DeviceRegistered")
    assert (event["args"]["deviceId"], event["args"]["meter"]) == (9_999, env.addr("meter_30"))
    granted = env.chain.events(receipt, env.capacity, "RoleGranted")
    assert [(g["args"]["role"], g["args"]["account"]) for g in granted] == [
        (keccak(text="METER_ROLE"), env.addr("meter_30"))]


# ============================================================================ orders
def order_for(env: Env, role: str, nonce: int = 0, deadline: int | None = None,
              side: Side = Side.BUY, interval: int | None = None, energy_wh: int = 1_000,
              price: int = PRICE) -> Order:
    return Order(prosumer=env.addr(role), interval=env.interval if interval is None else interval,
                 side=side, energy_wh=energy_wh, price_micro_eur_per_kwh=price, nonce=nonce,
                 deadline_unix_s=deadline if deadline is not None else env.now() + 3_600)


def as_struct(order: Order) -> tuple:
    return order.as_abi_tuple()


def domain(env: Env) -> MarketDomain:
    return MarketDomain(chain_id=env.chain.chain_id, verifying_contract=env.market.address)


def key_of(role: str) -> bytes:
    return devnet_private_key(devnet_role_index(role))


def place(env: Env, order: Order, role: str) -> None:
    env.chain.transact(env.market.functions.submitOrderSigned(
        as_struct(order), sign_order(order, domain(env), key_of(role))), "settler")


def test_signed_order_happy_path_emits_digest(env: Env) -> None:
    order = order_for(env, "prosumer_0")
    signature = sign_order(order, domain(env), key_of("prosumer_0"))
    # relayed by the settler: anyone may relay a signed order
    receipt = env.chain.transact(
        env.market.functions.submitOrderSigned(as_struct(order), signature), "settler")
    (event,) = env.chain.events(receipt, env.market, "OrderPlaced")
    assert bytes(event["args"]["digest"]) == domain(env).digest(order)
    assert (event["args"]["prosumer"], event["args"]["nonce"]) == (order.prosumer, 0)
    assert env.chain.call(env.market.functions.nonceOf(order.prosumer)) == 1
    state = env.chain.call(env.market.functions.intervalState(env.interval))
    assert bytes(state[0]) == book_hash([book_entry(order)])


def test_replayed_signed_order_reverts_bad_nonce(env: Env) -> None:
    order = order_for(env, "prosumer_0")
    signature = sign_order(order, domain(env), key_of("prosumer_0"))
    fn = env.market.functions.submitOrderSigned(as_struct(order), signature)
    env.chain.transact(fn, "settler")
    revert = expect_revert("BadNonce", fn, "settler", chain=env.chain)
    assert revert.error_args == {"prosumer": order.prosumer, "expected": 1, "got": 0}


def _order_reverts(env: Env, error: str, **over) -> ContractRevert:
    order = order_for(env, "prosumer_0", **over)
    signature = sign_order(order, domain(env), key_of("prosumer_0"))
    return expect_revert(error, env.market.functions.submitOrderSigned(
        as_struct(order), signature), "settler", chain=env.chain)


def test_orders_outside_bounds_and_window_revert(env: Env) -> None:
    current, ahead = env.current(), env.deployment.max_intervals_ahead
    max_wh = env.deployment.max_order_energy_wh
    prices = env.deployment.prices_micro_eur_per_kwh
    assert _order_reverts(env, "IntervalTooFarAhead", interval=current + ahead + 1).error_args == {
        "interval": current + ahead + 1, "lastAllowed": current + ahead}
    _order_reverts(env, "IntervalTooFarAhead", interval=2**64 - 1)
    assert _order_reverts(env, "IntervalInPast", interval=current - 1).error_args == {
        "interval": current - 1, "currentInterval": current}
    _order_reverts(env, "IntervalInPast", interval=0)
    assert _order_reverts(env, "EnergyOutOfBounds", energy_wh=max_wh + 1).error_args == {
        "energyWh": max_wh + 1, "maxEnergyWh": max_wh}
    _order_reverts(env, "EnergyOutOfBounds", energy_wh=2**64 - 1)
    _order_reverts(env, "ZeroEnergy", energy_wh=0)
    _order_reverts(env, "PriceOutOfBounds", price=prices["max"] + 1)
    _order_reverts(env, "PriceOutOfBounds", price=2**64 - 1)
    _order_reverts(env, "Expired", deadline=env.now() - 1)
    _order_reverts(env, "BadNonce", nonce=2**64 - 1)
    place(env, order_for(env, "prosumer_0", interval=current + ahead, energy_wh=max_wh),
          "prosumer_0")


def test_forged_orders_revert_bad_signature(env: Env) -> None:
    order = order_for(env, "prosumer_0")
    by_other = sign_order(order, domain(env), key_of("prosumer_1"))  # wrong signer
    expect_revert("BadSignature", env.market.functions.submitOrderSigned(
        as_struct(order), by_other), "settler", chain=env.chain)
    genuine = sign_order(order, domain(env), key_of("prosumer_0"))
    tampered = dataclasses.replace(order, energy_wh=50_000)
    expect_revert("BadSignature", env.market.functions.submitOrderSigned(
        as_struct(tampered), genuine), "settler", chain=env.chain)
    other_domain = MarketDomain(chain_id=env.chain.chain_id + 1,
                                verifying_contract=env.market.address)  # cross-chain replay
    expect_revert("BadSignature", env.market.functions.submitOrderSigned(
        as_struct(order), sign_order(order, other_domain, key_of("prosumer_0"))), "settler",
        chain=env.chain)
    expect_revert("BadSignature", env.market.functions.submitOrderSigned(
        as_struct(order), b"\x01" * 65), "settler", chain=env.chain)


def test_a_batch_skips_malleable_and_malformed_signatures_and_places_the_rest(env: Env
                                                                            ) -> None:
    """In one ``submitOrdersSigned``: the high-s twin, v as 0/1, a 64-byte and an empty
    signature are each rejected (``OrderRejected`` with ``BadSignature``), the genuine orders
    around them are placed, and no rejected order uses a nonce."""
    from market.orders import SECP256K1_N

    nonce = {r: env.chain.call(env.market.functions.nonceOf(env.addr(r)))
             for r in ("prosumer_0", "prosumer_1", "prosumer_2")}
    order = {r: order_for(env, r, nonce=n) for r, n in nonce.items()}
    sig = {r: sign_order(o, domain(env), key_of(r)) for r, o in order.items()}
    r1, s1, v1 = sig["prosumer_1"][:32], int.from_bytes(sig["prosumer_1"][32:64], "big"), \
        sig["prosumer_1"][64]
    twin = r1 + (SECP256K1_N - s1).to_bytes(32, "big") + bytes([55 - v1])
    v_low = sig["prosumer_2"][:64] + bytes([sig["prosumer_2"][64] - 27])
    batch = [(order["prosumer_1"], twin), (order["prosumer_0"], sig["prosumer_0"]),
             (order["prosumer_2"], v_low), (order["prosumer_2"], sig["prosumer_2"][:64]),
             (order["prosumer_2"], b""), (order["prosumer_1"], sig["prosumer_1"])]
    receipt = env.chain.transact(env.market.functions.submitOrdersSigned(
        [as_struct(o) for o, _ in batch], [s for _, s in batch]), "settler")
    placed = [bytes(e["args"]["digest"]) for e in
              env.chain.events(receipt, env.market, "OrderPlaced")]
    rejected = env.chain.events(receipt, env.market, "OrderRejected")
    digest = {r: env.chain.call(env.market.functions.hashOrder(as_struct(o)))
              for r, o in order.items()}
    assert placed == [digest["prosumer_0"], digest["prosumer_1"]]
    assert [(e["args"]["prosumer"], bytes(e["args"]["reason"])) for e in rejected] == [
        (env.addr(r), keccak(text="BadSignature()")[:4])
        for r in ("prosumer_1", "prosumer_2", "prosumer_2", "prosumer_2")]
    assert env.chain.call(env.market.functions.nonceOf(env.addr("prosumer_2"))) == \
        nonce["prosumer_2"]


def test_own_order_must_come_from_prosumer(env: Env) -> None:
    order = order_for(env, "prosumer_0")
    revert = expect_revert("NotOrderOwner", env.market.functions.submitOrder(as_struct(order)),
                           "prosumer_1", chain=env.chain)
    assert revert.error_args == {"sender": env.addr("prosumer_1"), "prosumer": order.prosumer}
    receipt = env.chain.transact(env.market.functions.submitOrder(as_struct(order)),
                                 "prosumer_0")
    assert len(env.chain.events(receipt, env.market, "OrderPlaced")) == 1


# ============================================================================ settlement
def book_of(env: Env) -> list[tuple]:
    """prosumer_0 buys 1000 Wh at <= PRICE, prosumer_1 sells 1500 Wh at >= the feed-in tariff;
    returns the book the settlement names."""
    feed_in = env.deployment.prices_micro_eur_per_kwh["feed_in"]
    orders = [order_for(env, "prosumer_0"),
              order_for(env, "prosumer_1", side=Side.SELL, energy_wh=1_500, price=feed_in)]
    for order, role in zip(orders, ("prosumer_0", "prosumer_1"), strict=True):
        place(env, order, role)
    return [book_entry(o) for o in orders]


def settle(env: Env, book, trades, power_w: int = -4_000, price: int = PRICE):
    return env.market.functions.settle(env.interval, price, power_w, book, trades)


def test_settlement_happy_path_books_balances_and_emits(env: Env) -> None:
    write_band(env, env.interval, [BATTERY_ID], [-10_000], [10_000])
    book = book_of(env)
    env.chain.transact(env.market.functions.commitOrders(env.interval), "settler")
    feed_in = env.deployment.prices_micro_eur_per_kwh["feed_in"]
    # the battery sells 1000 Wh (-4 kW for 900 s) to prosumer_0; prosumer_1 sells 500 to the grid
    trades = [(0, BATT, 1_000), (GRID, 1, 500)]
    receipt = env.chain.transact(settle(env, book, trades), "settler")
    settled = env.chain.events(receipt, env.market, "TradeSettled")
    assert [(t["args"]["buyer"], t["args"]["buyOrder"], t["args"]["priceMicroEurPerKwh"])
            for t in settled] == [(env.addr("prosumer_0"), 0, PRICE),
                                  ("0x" + "00" * 20, GRID, feed_in)]
    (summary,) = env.chain.events(receipt, env.market, "IntervalSettled")
    assert (summary["args"]["batteryPowerW"], summary["args"]["tradeCount"]) == (-4_000, 2)
    balance = env.market.functions.balanceOf
    assert env.chain.call(balance(env.addr("prosumer_0"))) == -1_000 * PRICE
    assert env.chain.call(balance(env.addr("battery"))) == 1_000 * PRICE
    assert env.chain.call(balance(env.addr("prosumer_1"))) == 500 * feed_in
    assert env.chain.call(env.market.functions.gridExchangeNanoEur()) == 500 * feed_in
    revert = expect_revert("AlreadySettled", settle(env, book, trades), "settler", chain=env.chain)
    assert revert.error_args == {"interval": env.interval}


def test_settler_cannot_invent_enlarge_or_reprice_a_trade(env: Env) -> None:
    write_band(env, env.interval, [BATTERY_ID], [-10_000], [10_000])
    book = book_of(env)
    cases = [
        # a trade no order backs: an index past the book, or orders nobody placed
        (book, [(2, 1, 100)], 0, "UnknownOrder", {"tradeIndex": 0, "orderIndex": 2}),
        ([*book, (env.addr("prosumer_2"), 0, 2**64 - 1, PRICE)], [(2, 1, 100)], 0,
         "BookMismatch", None),
        # above its order's energy: at once, or in sum
        (book, [(0, 1, 1_001)], 0, "Overfilled",
         {"orderIndex": 0, "filledWh": 1_001, "energyWh": 1_000}),
        (book, [(0, 1, 600), (0, BATT, 400), (0, 1, 1)], -1_600, "Overfilled",
         {"orderIndex": 0, "filledWh": 1_001, "energyWh": 1_000}),
        (book, [(0, 1, 2**64 - 1)], 0, "Overfilled",
         {"orderIndex": 0, "filledWh": 2**64 - 1, "energyWh": 1_000}),
        # beyond a limit: the buyer's (PRICE) at a higher clearing price, or at retail
        (book, [(0, 1, 100)], 0, "LimitViolated",
         {"orderIndex": 0, "limit": PRICE, "price": PRICE + 1}),
        (book, [(0, GRID, 100)], 0, "LimitViolated", None),
        # wrong side and self trades
        (book, [(1, 0, 100)], 0, "WrongSide", {"orderIndex": 1}),
        (book, [(GRID, GRID, 100)], 0, "SelfTrade", {"tradeIndex": 0}),
    ]
    for i, (b, trades, power, error, args) in enumerate(cases):
        price = PRICE + 1 if error == "LimitViolated" and args else PRICE
        revert = expect_revert(error, settle(env, b, trades, power, price), "settler",
                               chain=env.chain)
        if args is not None:
            assert revert.error_args == args, i


def test_battery_band_and_window_reverts(env: Env) -> None:
    revert = expect_revert("NoBand", settle(env, [], [], 0), "settler", chain=env.chain)
    assert revert.error_args == {"deviceId": BATTERY_ID, "interval": env.interval}
    write_band(env, env.interval, [BATTERY_ID], [-10_000], [10_000])
    revert = expect_revert("BatteryOutsideBand", settle(env, [], [(BATT, GRID, 3_000)], 12_000),
                           "settler", chain=env.chain)
    assert revert.error_args == {"batteryPowerW": 12_000, "pMinW": -10_000, "pMaxW": 10_000}
    revert = expect_revert("EnergyImbalance", settle(env, [], [(BATT, GRID, 1_002)], 4_000),
                           "settler", chain=env.chain)
    assert revert.error_args["batteryNetSoldWh"] == -1_002
    far = env.current() + env.deployment.max_intervals_ahead + 1
    revert = expect_revert("IntervalTooFarAhead", env.market.functions.settle(
        far, PRICE, 0, [], []), "settler", chain=env.chain)
    assert revert.error_args["interval"] == far


def test_explicit_gas_revert_is_decoded_from_receipt(env: Env) -> None:
    """A settlement sent with explicit gas is mined with status 0: same named error."""
    write_band(env, env.interval, [BATTERY_ID], [-10_000], [10_000])
    revert = expect_revert("BatteryOutsideBand", settle(env, [], [], 20_000), "settler",
                           chain=env.chain, gas=500_000)
    assert revert.tx_hash is not None


# ============================================================================ deviations
def _settled_interval_with_totals(env: Env, metered: dict[int, int]) -> tuple[list, bytes]:
    """Settle ``env.interval`` (prosumer_0 buys 1000 Wh from prosumer_1), move past it, write
    ``metered`` ({device: Wh}) as its totals; returns (book, totals blob)."""
    write_band(env, env.interval, [BATTERY_ID], [-10_000], [10_000])
    book = book_of(env)
    env.chain.transact(settle(env, book, [(0, 1, 1_000)], 0), "settler")
    env.chain.advance_time((env.interval + 1) * env.deployment.interval_s - env.now())
    totals = encode_totals(metered)
    env.chain.transact(env.capacity.functions.writeMeterTotals(env.interval, totals), "oracle")
    return book, totals


def test_deviations_settle_metered_minus_traded(env: Env) -> None:
    p0, p1 = env.device_of("prosumer_0"), env.device_of("prosumer_1")
    book, totals = _settled_interval_with_totals(env, {p0: 1_300, p1: -1_000})
    receipt = env.chain.transact(env.market.functions.settleDeviations(
        env.interval, book, [1_000, 1_000], totals), "prosumer_5")  # anyone may send it
    rows = env.chain.events(receipt, env.market, "DeviationSettled")
    assert [(r["args"]["account"], r["args"]["tradedWh"], r["args"]["meteredWh"]) for r in rows] \
        == [(env.addr("prosumer_0"), 1_000, 1_300), (env.addr("prosumer_1"), -1_000, -1_000)]
    buy = env.deployment.prices_micro_eur_per_kwh["imbalance_buy"]
    assert env.chain.call(env.market.functions.balanceOf(env.addr("prosumer_0"))) == \
        -1_000 * PRICE - 300 * buy
    assert env.chain.call(env.market.functions.gridExchangeNanoEur()) == -300 * buy
    expect_revert("DeviationsAlreadySettled", env.market.functions.settleDeviations(
        env.interval, book, [1_000, 1_000], totals), "prosumer_5", chain=env.chain)


def test_bad_deviation_settlements_revert(env: Env) -> None:
    p0 = env.device_of("prosumer_0")
    current = env.current()
    revert = expect_revert("IntervalNotOver", env.market.functions.settleDeviations(
        current, [], [], b""), "settler", chain=env.chain)
    assert revert.error_args == {"interval": current, "currentInterval": current}
    book, totals = _settled_interval_with_totals(env, {p0: 1_000})
    f = env.market.functions.settleDeviations
    lie = encode_totals({p0: 0})
    for fn, error in (
        (f(env.interval - 1, [], [], b""), "NoMeterTotals"),
        (f(env.interval, book, [1_000, 1_000], lie), "TotalsMismatch"),
        (f(env.interval, book, [1_000, 999], totals), "FillsMismatch"),
        (f(env.interval, book[:1], [1_000], totals), "BookMismatch"),
        (f(env.interval, book, [1_000, 1_000], totals), "NoMeterTotal"),  # prosumer_1 traded
    ):
        expect_revert(error, fn, "settler", chain=env.chain)


def test_meter_totals_refused_before_the_interval_ends_and_twice(env: Env) -> None:
    current = env.current()
    revert = expect_revert("IntervalNotOver", env.capacity.functions.writeMeterTotals(
        current, b""), "oracle", chain=env.chain)
    assert revert.error_args == {"interval": current, "currentInterval": current}
    expect_revert("TotalsNotAscending", env.capacity.functions.writeMeterTotals(
        current - 1, encode_totals({5: 1}) + encode_totals({4: 1})), "oracle", chain=env.chain)
    expect_revert("InvalidTotalsLength", env.capacity.functions.writeMeterTotals(
        current - 1, b"\x00" * 13), "oracle", chain=env.chain)
    expect_revert("UnknownDevice", env.capacity.functions.writeMeterTotals(
        current - 1, encode_totals({2**32 - 1: 2**63 - 1})), "oracle", chain=env.chain)
    env.chain.transact(env.capacity.functions.writeMeterTotals(current - 1, b""), "oracle")
    expect_revert("MeterTotalsAlreadyWritten", env.capacity.functions.writeMeterTotals(
        current - 1, b""), "oracle", chain=env.chain)


# ============================================================================ completeness
#: State-changing functions open to anyone, each with its own authorisation check tested above
#: (order signature / order owner, the pending admin, commitments checked on-chain) or
#: AccessControl's caller confirmation (renounceRole).
OPEN_FUNCTIONS = {
    "GridCapacity": {"renounceRole", "acceptDefaultAdminTransfer"},
    "GridMarket": {"renounceRole", "acceptDefaultAdminTransfer", "submitOrder",
                   "submitOrderSigned", "submitOrdersSigned", "settleDeviations"},
}
WRONG_CALLER_TESTED = {
    "GridCapacity": set(CAPACITY_ADMIN_CALLS) | {"writeBands", "writeBandsWithReserve",
                                                  "writeMeterTotals", "postReadings",
                                                  "declareSessions"},
    "GridMarket": set(MARKET_COMMUNITY_CALLS) | set(MARKET_ADMIN_CALLS) | {
        "pause", "commitOrders", "settle"},
}


@pytest.mark.parametrize("contract_name", ["GridCapacity", "GridMarket"])
def test_every_state_changing_function_is_covered(contract_name: str) -> None:
    """A new state-changing function fails this until it gets a wrong-caller test."""
    from gridshare.chain.deploy import load

    abi = load(contract_name).abi
    mutating = {e["name"] for e in abi if e.get("type") == "function"
                and e.get("stateMutability") not in ("view", "pure")}
    assert mutating == WRONG_CALLER_TESTED[contract_name] | OPEN_FUNCTIONS[contract_name]


@pytest.mark.parametrize("contract_attr", ["capacity", "market"])
def test_renounce_role_only_for_oneself(env: Env, contract_attr: str) -> None:
    contract = getattr(env, contract_attr)
    role = keccak(text="ORACLE_ROLE" if contract_attr == "capacity" else "SETTLER_ROLE")
    holder = "oracle" if contract_attr == "capacity" else "settler"
    expect_revert("AccessControlBadConfirmation", contract.functions.renounceRole(
        role, env.addr(holder)), "deployer", chain=env.chain)
    assert env.chain.call(contract.functions.hasRole(role, env.addr(holder)))


# ============================================================================ admin happy paths
ADMIN_HAPPY_PATHS = {
    # name: (contract attr, sender, call(env) -> fn, {event: expected args subset})
    "setRatedRange": ("capacity", "deployer",
                      lambda e: e.capacity.functions.setRatedRange(CS01_ID, 0, 11_000),
                      {"RatedRangeSet": {"deviceId": CS01_ID, "pMinRatedW": 0,
                                         "pMaxRatedW": 11_000}}),
    "setDeviceMeter": ("capacity", "deployer",
                       lambda e: e.capacity.functions.setDeviceMeter(CS01_ID, e.addr("meter_30")),
                       {"DeviceMeterSet": {"deviceId": CS01_ID, "meter": "meter_30"}}),
    "setHeartbeat": ("capacity", "deployer", lambda e: e.capacity.functions.setHeartbeat(60),
                     {"HeartbeatSet": {"heartbeatSeconds": 60}}),
    "revokeRole": ("capacity", "deployer", lambda e: e.capacity.functions.revokeRole(
        keccak(text="ORACLE_ROLE"), e.addr("oracle")),
        {"RoleRevoked": {"account": "oracle"}}),
    "registerProsumer": ("market", "deployer",
                         lambda e: e.market.functions.registerProsumer(e.addr("prosumer_39"),
                                                                       CS01_ID),
                         {"ProsumerRegistered": {"prosumer": "prosumer_39",
                                                 "meterDeviceId": CS01_ID}}),
    "setBatteryShare": ("market", "deployer",
                        lambda e: e.market.functions.setBatteryShare(e.addr("prosumer_0"), 2_500),
                        {"BatteryShareSet": {"member": "prosumer_0", "shareBps": 2_500,
                                             "totalShareBps": 2_500}}),
    "removeProsumer": ("market", "deployer",
                       lambda e: e.market.functions.removeProsumer(e.addr("prosumer_1")),
                       {"ProsumerRemoved": {"prosumer": "prosumer_1"}}),
    "setTariffs": ("market", "deployer",
                   lambda e: e.market.functions.setTariffs((250_000, 70_000, 400_000, 10_000)),
                   {"TariffsSet": {"retail": 250_000, "imbalanceSell": 10_000}}),
    "commitOrders": ("market", "settler",
                     lambda e: e.market.functions.commitOrders(e.interval),
                     {"OrdersCommitted": {"bookHash": b"\x00" * 32}}),
    "pause": ("market", "deployer", lambda e: e.market.functions.pause(),
              {"Paused": {"account": "deployer"}}),
}


@pytest.mark.parametrize("name", sorted(ADMIN_HAPPY_PATHS))
def test_admin_happy_paths_emit_events(env: Env, name: str) -> None:
    contract_attr, sender, make_fn, expected = ADMIN_HAPPY_PATHS[name]
    contract = getattr(env, contract_attr)
    receipt = env.chain.transact(make_fn(env), sender)
    for event_name, fields in expected.items():
        (event,) = env.chain.events(receipt, contract, event_name)
        for field, value in fields.items():
            if isinstance(value, str) and not value.startswith("0x"):
                value = env.addr(value)  # a role name stands for its address
            assert event["args"][field] == value, (event_name, field)


def test_battery_shares_cannot_exceed_whole_battery(env: Env) -> None:
    env.chain.transact(env.market.functions.setBatteryShare(env.addr("prosumer_0"), 6_000),
                       "deployer")
    revert = expect_revert("SharesExceeded", env.market.functions.setBatteryShare(
        env.addr("prosumer_1"), 4_001), "deployer", chain=env.chain)
    assert revert.error_args == {"totalShareBps": 10_001}
