"""Issue 3, first acceptance point, on the embedded chain AND on anvil.

Every role-protected function rejects the wrong caller; invalid bands, double settlement, battery
power outside its band, replayed, expired and forged orders revert with the named custom error
(surfaced as ``gridshare.chain.errors.ContractRevert``); the happy paths emit their events.

One deployment (``chain.deploy``, feeder heimschuh-like: CB = device 1, CS01 = 2, CS02 = 3)
per chain for the module; every test runs inside a snapshot that is reverted afterwards.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account import Account
from eth_utils import keccak

from gridshare.chain.client import Chain, connect
from gridshare.chain.config import ChainConfig, devnet_private_key, devnet_role_index
from gridshare.chain.deploy import Deployment, deploy
from gridshare.chain.errors import ContractRevert
from market.orders import MarketDomain, Order, Side, sign_order

BATTERY_ID = 1
CS01_ID = 2
INTERVAL = 2_000_000
PRICE = 150_000  # micro-euro per kWh


@dataclass
class Env:
    """A deployed system on one chain."""

    chain: Chain
    deployment: Deployment
    capacity: object
    market: object

    def addr(self, role: str) -> str:
        return self.chain.keys.address(role)

    def role_id(self, contract: object, name: str) -> bytes:
        if name == "DEFAULT_ADMIN_ROLE":
            return b"\x00" * 32
        return keccak(text=name)

    def now(self) -> int:
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])


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
        yield deployed
    finally:
        deployed.chain.revert(snap)


def expect_revert(name: str, fn, sender, **kwargs) -> ContractRevert:
    """Assert ``fn`` sent by ``sender`` reverts with custom error ``name``; return it."""
    env_chain: Chain = kwargs.pop("chain")
    with pytest.raises(ContractRevert) as info:
        env_chain.transact(fn, sender, **kwargs)
    assert info.value.error_name == name, str(info.value)
    return info.value


def expect_unauthorized(env: Env, fn, sender: str, role_name: str, contract: object) -> None:
    revert = expect_revert("AccessControlUnauthorizedAccount", fn, sender, chain=env.chain)
    assert revert.error_args["account"] == env.addr(sender)
    assert revert.error_args["neededRole"] == env.role_id(contract, role_name)


def write_band(env: Env, interval: int, device_ids, p_min_w, p_max_w, sender="oracle"):
    return env.chain.transact(
        env.capacity.functions.writeBands(
            interval, b"\x11" * 32, list(device_ids), list(p_min_w), list(p_max_w)
        ),
        sender,
    )


# ============================================================================ wrong callers
CAPACITY_ADMIN_CALLS = {
    "registerDevice": lambda c, e: c.functions.registerDevice(
        99, 1, 2, e.addr("deployer"), e.addr("meter_0"), 0, 1000),
    "setRatedRange": lambda c, e: c.functions.setRatedRange(CS01_ID, 0, 1000),
    "setDeviceMeter": lambda c, e: c.functions.setDeviceMeter(CS01_ID, e.addr("oracle")),
    "setHeartbeat": lambda c, e: c.functions.setHeartbeat(60),
    "grantRole": lambda c, e: c.functions.grantRole(keccak(text="ORACLE_ROLE"), e.addr("settler")),
    "revokeRole": lambda c, e: c.functions.revokeRole(keccak(text="ORACLE_ROLE"), e.addr("oracle")),
}


@pytest.mark.parametrize("function", sorted(CAPACITY_ADMIN_CALLS))
@pytest.mark.parametrize("caller", ["oracle", "meter_0", "prosumer_0"])
def test_capacity_admin_functions_reject_non_dso(env: Env, function: str, caller: str) -> None:
    fn = CAPACITY_ADMIN_CALLS[function](env.capacity, env)
    expect_unauthorized(env, fn, caller, "DEFAULT_ADMIN_ROLE", env.capacity)


@pytest.mark.parametrize("caller", ["deployer", "meter_0", "settler"])
def test_write_bands_rejects_non_oracle(env: Env, caller: str) -> None:
    fn = env.capacity.functions.writeBands(INTERVAL, b"\0" * 32, [BATTERY_ID], [-1000], [1000])
    expect_unauthorized(env, fn, caller, "ORACLE_ROLE", env.capacity)


def reading(device_id: int, t: int = 1_700_000_000, p_w: int = 500) -> bytes:
    """One 24-byte reading record: id, time, P W, Q var, V micro-pu, angle micro-rad."""
    return struct.pack(">IIiiIi", device_id, t, p_w, 10, 1_000_000, -2000)


@pytest.mark.parametrize("caller", ["deployer", "oracle", "prosumer_0"])
def test_post_readings_rejects_non_meter(env: Env, caller: str) -> None:
    fn = env.capacity.functions.postReadings(reading(BATTERY_ID))
    expect_unauthorized(env, fn, caller, "METER_ROLE", env.capacity)


def test_meter_cannot_post_for_another_meters_device(env: Env) -> None:
    # meter_0 serves device 1 (CB); device 2 (CS01) belongs to meter_1
    revert = expect_revert("MeterNotForDevice", env.capacity.functions.postReadings(
        reading(BATTERY_ID) + reading(CS01_ID)), "meter_0", chain=env.chain)
    assert revert.error_args == {"deviceId": CS01_ID, "meter": env.addr("meter_0")}


MARKET_COMMUNITY_CALLS = {
    "registerProsumer": lambda m, e: m.functions.registerProsumer(Account.create().address),
    "removeProsumer": lambda m, e: m.functions.removeProsumer(e.addr("prosumer_0")),
    "setBatteryShare": lambda m, e: m.functions.setBatteryShare(e.addr("prosumer_0"), 100),
}


@pytest.mark.parametrize("function", sorted(MARKET_COMMUNITY_CALLS))
@pytest.mark.parametrize("caller", ["settler", "prosumer_0"])
def test_market_community_functions_reject_non_admin(env: Env, function: str, caller) -> None:
    fn = MARKET_COMMUNITY_CALLS[function](env.market, env)
    expect_unauthorized(env, fn, caller, "COMMUNITY_ADMIN_ROLE", env.market)


@pytest.mark.parametrize("caller", ["settler", "oracle", "prosumer_0"])
def test_set_prices_and_role_admin_reject_non_dso(env: Env, caller: str) -> None:
    expect_unauthorized(env, env.market.functions.setPrices(300_000, 80_000, 0, 1_000_000),
                        caller, "DEFAULT_ADMIN_ROLE", env.market)
    expect_unauthorized(env, env.market.functions.grantRole(
        keccak(text="SETTLER_ROLE"), env.addr(caller)), caller, "DEFAULT_ADMIN_ROLE", env.market)


@pytest.mark.parametrize("caller", ["deployer", "oracle", "prosumer_0"])
def test_commit_and_settle_reject_non_settler(env: Env, caller: str) -> None:
    expect_unauthorized(env, env.market.functions.commitOrders(INTERVAL, b"\1" * 32), caller,
                        "SETTLER_ROLE", env.market)
    expect_unauthorized(env, env.market.functions.settle(INTERVAL, b"\0" * 32, PRICE, 0, []),
                        caller, "SETTLER_ROLE", env.market)


# ============================================================================ bands
def test_write_bands_happy_path_emits_and_stores(env: Env) -> None:
    receipt = write_band(env, INTERVAL, [BATTERY_ID, CS01_ID], [-20_000, 0], [15_000, 11_000])
    (event,) = env.chain.events(receipt, env.capacity, "BandsWritten")
    assert event["args"]["interval"] == INTERVAL
    packed = event["args"]["bands"]
    records = [struct.unpack(">Iqq", packed[i:i + 20]) for i in range(0, len(packed), 20)]
    assert records == [(BATTERY_ID, -20_000, 15_000), (CS01_ID, 0, 11_000)]
    p_min, p_max, updated_at = env.chain.call(env.capacity.functions.bandOf(CS01_ID, INTERVAL))
    assert (p_min, p_max) == (0, 11_000)
    assert updated_at == event["args"]["updatedAt"] > 0
    assert env.chain.call(env.capacity.functions.isInside(BATTERY_ID, INTERVAL, -20_000))
    assert not env.chain.call(env.capacity.functions.isInside(BATTERY_ID, INTERVAL, 15_001))


@pytest.mark.parametrize(
    ("device_ids", "p_min_w", "p_max_w", "error", "args"),
    [
        ([BATTERY_ID], [5_000], [4_000], "InvalidBand",
         {"deviceId": BATTERY_ID, "pMinW": 5_000, "pMaxW": 4_000}),
        ([BATTERY_ID], [-50_001], [0], "OutsideRatedRange",
         {"deviceId": BATTERY_ID, "pMinW": -50_001, "pMaxW": 0}),
        ([CS01_ID], [-1], [1_000], "OutsideRatedRange",  # a charging station cannot inject
         {"deviceId": CS01_ID, "pMinW": -1, "pMaxW": 1_000}),
        ([CS01_ID], [0], [22_001], "OutsideRatedRange",
         {"deviceId": CS01_ID, "pMinW": 0, "pMaxW": 22_001}),
        ([77], [0], [1], "UnknownDevice", {"deviceId": 77}),
        ([CS01_ID, CS01_ID], [0, 0], [1, 1], "DuplicateDevice", {"deviceId": CS01_ID}),
        ([CS01_ID], [0, 0], [1], "LengthMismatch", {}),
        ([], [], [], "EmptyBatch", {}),
    ],
    ids=["min>max", "below-rated", "cs-injects", "above-rated", "unknown", "duplicate",
         "lengths", "empty"],
)
def test_invalid_bands_revert(env: Env, device_ids, p_min_w, p_max_w, error, args) -> None:
    fn = env.capacity.functions.writeBands(INTERVAL, b"\0" * 32, device_ids, p_min_w, p_max_w)
    revert = expect_revert(error, fn, "oracle", chain=env.chain)
    assert revert.error_args == args
    assert not env.chain.call(env.capacity.functions.anyIntervalWritten())


def test_interval_written_once_and_monotonic(env: Env) -> None:
    write_band(env, INTERVAL, [BATTERY_ID], [-1_000], [1_000])
    revert = expect_revert("IntervalAlreadyWritten", env.capacity.functions.writeBands(
        INTERVAL, b"\0" * 32, [CS01_ID], [0], [1]), "oracle", chain=env.chain)
    assert revert.error_args == {"interval": INTERVAL}
    revert = expect_revert("IntervalNotMonotonic", env.capacity.functions.writeBands(
        INTERVAL - 1, b"\0" * 32, [CS01_ID], [0], [1]), "oracle", chain=env.chain)
    assert revert.error_args == {"interval": INTERVAL - 1, "lastInterval": INTERVAL}


def test_latest_band_staleness(env: Env) -> None:
    write_band(env, INTERVAL, [BATTERY_ID], [-1_000], [2_000])
    interval, p_min, p_max, _ = env.chain.call(env.capacity.functions.latestBand(BATTERY_ID))
    assert (interval, p_min, p_max) == (INTERVAL, -1_000, 2_000)
    env.chain.advance_time(env.deployment.heartbeat_seconds + 10)
    with pytest.raises(ContractRevert) as info:
        env.chain.call(env.capacity.functions.latestBand(BATTERY_ID))
    assert info.value.error_name == "StaleBand"


def test_readings_and_registry_happy_paths_emit(env: Env) -> None:
    packed = reading(BATTERY_ID, p_w=-3_000) + reading(BATTERY_ID, p_w=-2_500)
    receipt = env.chain.transact(env.capacity.functions.postReadings(packed), "meter_0")
    (event,) = env.chain.events(receipt, env.capacity, "ReadingsPosted")
    assert (event["args"]["meter"], event["args"]["count"]) == (env.addr("meter_0"), 2)
    assert bytes(event["args"]["packed"]) == packed
    receipt = env.chain.transact(env.capacity.functions.registerDevice(
        9, 4, 2, env.addr("deployer"), env.addr("meter_5"), -1_000, 3_000), "deployer")
    (event,) = env.chain.events(receipt, env.capacity, "DeviceRegistered")
    assert (event["args"]["deviceId"], event["args"]["meter"]) == (9, env.addr("meter_5"))
    granted = env.chain.events(receipt, env.capacity, "RoleGranted")
    assert [(g["args"]["role"], g["args"]["account"]) for g in granted] == [
        (keccak(text="METER_ROLE"), env.addr("meter_5"))]


# ============================================================================ orders
def order_for(env: Env, role: str, nonce: int = 0, deadline: int | None = None,
              side: Side = Side.BUY, interval: int = INTERVAL) -> Order:
    return Order(prosumer=env.addr(role), interval=interval, side=side, energy_wh=1_000,
                 price_micro_eur_per_kwh=PRICE, nonce=nonce,
                 deadline_unix_s=deadline if deadline is not None else env.now() + 3_600)


def as_struct(order: Order) -> tuple:
    m = order.message()
    return (m["prosumer"], m["interval"], m["side"], m["energyWh"], m["priceMicroEurPerKwh"],
            m["nonce"], m["deadline"])


def domain(env: Env) -> MarketDomain:
    return MarketDomain(chain_id=env.chain.chain_id, verifying_contract=env.market.address)


def key_of(role: str) -> bytes:
    return devnet_private_key(devnet_role_index(role))


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


def test_replayed_signed_order_reverts_bad_nonce(env: Env) -> None:
    order = order_for(env, "prosumer_0")
    signature = sign_order(order, domain(env), key_of("prosumer_0"))
    fn = env.market.functions.submitOrderSigned(as_struct(order), signature)
    env.chain.transact(fn, "settler")
    revert = expect_revert("BadNonce", fn, "settler", chain=env.chain)
    assert revert.error_args == {"prosumer": order.prosumer, "expected": 1, "got": 0}


def test_expired_order_reverts(env: Env) -> None:
    order = order_for(env, "prosumer_0", deadline=env.now() - 1)
    signature = sign_order(order, domain(env), key_of("prosumer_0"))
    revert = expect_revert("Expired", env.market.functions.submitOrderSigned(
        as_struct(order), signature), "settler", chain=env.chain)
    assert revert.error_args["deadline"] == order.deadline_unix_s


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


def test_own_order_must_come_from_prosumer(env: Env) -> None:
    order = order_for(env, "prosumer_0")
    revert = expect_revert("NotOrderOwner", env.market.functions.submitOrder(as_struct(order)),
                           "prosumer_1", chain=env.chain)
    assert revert.error_args == {"sender": env.addr("prosumer_1"), "prosumer": order.prosumer}
    receipt = env.chain.transact(env.market.functions.submitOrder(as_struct(order)),
                                 "prosumer_0")
    assert len(env.chain.events(receipt, env.market, "OrderPlaced")) == 1


# ============================================================================ settlement
def battery_trade(env: Env, energy_wh: int) -> tuple:
    """The battery sells ``energy_wh`` to prosumer_0 at PRICE."""
    return (env.addr("prosumer_0"), env.addr("battery"), energy_wh, PRICE)


def test_settlement_happy_path_books_balances_and_emits(env: Env) -> None:
    write_band(env, INTERVAL, [BATTERY_ID], [-10_000], [10_000])
    env.chain.transact(env.market.functions.commitOrders(INTERVAL, b"\x42" * 32), "settler")
    retail = env.deployment.prices_micro_eur_per_kwh["retail"]
    trades = [battery_trade(env, 1_000),  # -4 kW for 900 s = 1000 Wh sold by the battery
              (env.addr("prosumer_1"), "0x" + "00" * 20, 500, retail)]
    receipt = env.chain.transact(
        env.market.functions.settle(INTERVAL, b"\x42" * 32, PRICE, -4_000, trades), "settler")
    settled = env.chain.events(receipt, env.market, "TradeSettled")
    assert [(t["args"]["buyer"], t["args"]["energyWh"]) for t in settled] == [
        (env.addr("prosumer_0"), 1_000), (env.addr("prosumer_1"), 500)]
    (summary,) = env.chain.events(receipt, env.market, "IntervalSettled")
    assert (summary["args"]["batteryPowerW"], summary["args"]["tradeCount"]) == (-4_000, 2)
    balance = env.market.functions.balanceOf
    assert env.chain.call(balance(env.addr("prosumer_0"))) == -1_000 * PRICE
    assert env.chain.call(balance(env.addr("battery"))) == 1_000 * PRICE
    assert env.chain.call(balance(env.addr("prosumer_1"))) == -500 * retail
    assert env.chain.call(env.market.functions.gridExchangeNanoEur()) == -500 * retail


def test_double_settlement_reverts(env: Env) -> None:
    write_band(env, INTERVAL, [BATTERY_ID], [-10_000], [10_000])
    fn = env.market.functions.settle(INTERVAL, b"\0" * 32, PRICE, -4_000,
                                     [battery_trade(env, 1_000)])
    env.chain.transact(fn, "settler")
    revert = expect_revert("AlreadySettled", fn, "settler", chain=env.chain)
    assert revert.error_args == {"interval": INTERVAL}


@pytest.mark.parametrize("power_w", [-10_001, 12_000], ids=["below", "above"])
def test_battery_power_outside_band_reverts(env: Env, power_w: int) -> None:
    write_band(env, INTERVAL, [BATTERY_ID], [-10_000], [10_000])
    energy_wh = abs(power_w) * env.deployment.interval_seconds // 3600
    trade = battery_trade(env, energy_wh) if power_w < 0 else (
        env.addr("battery"), env.addr("prosumer_0"), energy_wh, PRICE)
    revert = expect_revert("BatteryOutsideBand", env.market.functions.settle(
        INTERVAL, b"\0" * 32, PRICE, power_w, [trade]), "settler", chain=env.chain)
    assert revert.error_args == {"batteryPowerW": power_w, "pMinW": -10_000, "pMaxW": 10_000}


def test_settlement_without_band_reverts_no_band(env: Env) -> None:
    revert = expect_revert("NoBand", env.market.functions.settle(
        INTERVAL, b"\0" * 32, PRICE, 0, []), "settler", chain=env.chain)
    assert revert.error_args == {"deviceId": BATTERY_ID, "interval": INTERVAL}


def test_explicit_gas_revert_is_decoded_from_receipt(env: Env) -> None:
    """A settlement sent with explicit gas is mined with status 0: same named error."""
    write_band(env, INTERVAL, [BATTERY_ID], [-10_000], [10_000])
    revert = expect_revert("BatteryOutsideBand", env.market.functions.settle(
        INTERVAL, b"\0" * 32, PRICE, 20_000, []), "settler", chain=env.chain, gas=500_000)
    assert revert.tx_hash is not None


# ============================================================================ completeness
#: State-changing functions open to anyone, each with its own authorisation check tested above
#: (order signature / order owner) or AccessControl's caller confirmation (renounceRole).
OPEN_FUNCTIONS = {
    "GridCapacity": {"renounceRole"},
    "GridMarket": {"renounceRole", "submitOrder", "submitOrderSigned"},
}
WRONG_CALLER_TESTED = {
    "GridCapacity": set(CAPACITY_ADMIN_CALLS) | {"writeBands", "postReadings"},
    "GridMarket": set(MARKET_COMMUNITY_CALLS) | {"setPrices", "grantRole", "revokeRole",
                                                  "commitOrders", "settle"},
}


@pytest.mark.parametrize("contract_name", ["GridCapacity", "GridMarket"])
def test_every_state_changing_function_is_covered(contract_name: str) -> None:
    """A new state-changing function fails this until it gets a wrong-caller test."""
    from gridshare.chain.deploy import load

    abi = load(contract_name).abi
    mutating = {e["name"] for e in abi if e.get("type") == "function"
                and e.get("stateMutability") not in ("view", "pure")}
    assert mutating == WRONG_CALLER_TESTED[contract_name] | OPEN_FUNCTIONS[contract_name]


def test_market_revoke_role_rejects_non_dso(env: Env) -> None:
    expect_unauthorized(env, env.market.functions.revokeRole(
        keccak(text="SETTLER_ROLE"), env.addr("settler")), "prosumer_0", "DEFAULT_ADMIN_ROLE",
        env.market)


@pytest.mark.parametrize("contract_attr", ["capacity", "market"])
def test_renounce_role_only_for_oneself(env: Env, contract_attr: str) -> None:
    contract = getattr(env, contract_attr)
    expect_revert("AccessControlBadConfirmation", contract.functions.renounceRole(
        b"\x00" * 32, env.addr("deployer")), "oracle", chain=env.chain)
    assert env.chain.call(contract.functions.hasRole(b"\x00" * 32, env.addr("deployer")))


# ============================================================================ admin happy paths
ADMIN_HAPPY_PATHS = {
    # name: (contract attr, sender, call(env) -> fn, {event: expected args subset})
    "setRatedRange": ("capacity", "deployer",
                      lambda e: e.capacity.functions.setRatedRange(CS01_ID, 0, 11_000),
                      {"RatedRangeSet": {"deviceId": CS01_ID, "pMinRatedW": 0,
                                         "pMaxRatedW": 11_000}}),
    "setDeviceMeter": ("capacity", "deployer",
                       lambda e: e.capacity.functions.setDeviceMeter(CS01_ID, e.addr("meter_7")),
                       {"DeviceMeterSet": {"deviceId": CS01_ID, "meter": "meter_7"}}),
    "setHeartbeat": ("capacity", "deployer", lambda e: e.capacity.functions.setHeartbeat(60),
                     {"HeartbeatSet": {"heartbeatSeconds": 60}}),
    "revokeRole": ("capacity", "deployer", lambda e: e.capacity.functions.revokeRole(
        keccak(text="ORACLE_ROLE"), e.addr("oracle")),
        {"RoleRevoked": {"account": "oracle"}}),
    "registerProsumer": ("market", "deployer",
                         lambda e: e.market.functions.registerProsumer(e.addr("prosumer_39")),
                         {"ProsumerRegistered": {"prosumer": "prosumer_39"}}),
    "setBatteryShare": ("market", "deployer",
                        lambda e: e.market.functions.setBatteryShare(e.addr("prosumer_0"), 2_500),
                        {"BatteryShareSet": {"member": "prosumer_0", "shareBps": 2_500,
                                             "totalShareBps": 2_500}}),
    "removeProsumer": ("market", "deployer",
                       lambda e: e.market.functions.removeProsumer(e.addr("prosumer_1")),
                       {"ProsumerRemoved": {"prosumer": "prosumer_1"}}),
    "setPrices": ("market", "deployer",
                  lambda e: e.market.functions.setPrices(250_000, 70_000, 10_000, 900_000),
                  {"TariffsSet": {"retailTariffMicroEurPerKwh": 250_000},
                   "PriceBoundsSet": {"maxPriceMicroEurPerKwh": 900_000}}),
    "commitOrders": ("market", "settler",
                     lambda e: e.market.functions.commitOrders(INTERVAL, b"\x07" * 32),
                     {"OrdersCommitted": {"interval": INTERVAL, "ordersRoot": b"\x07" * 32}}),
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
