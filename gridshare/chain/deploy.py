"""Deploy GridCapacity and GridMarket, grant the roles, register a feeder, write a deployment file.

``deploy(chain, DeployParams(...))`` does, in order (every step a signed transaction checked by
``gridshare.chain.client``):

1. on a devnet, top up the role accounts (oracle, settler, meters, prosumers) from the deployer
   (anvil prefunds only 10 accounts);
2. deploy ``GridCapacity(admin=deployer, adminDelaySeconds, intervalSeconds, heartbeatSeconds,
   maxIntervalsAhead)``;
3. grant ``ORACLE_ROLE`` to the oracle account;
4. register the feeder's flexibilities (device id = 1-based position in the feeder, rated range
   converted with ``gridshare.units.kw_to_w``); each device's meter account ``meter_<i>`` gets
   ``METER_ROLE`` from ``registerDevice``;
5. deploy ``GridMarket(admin=deployer, adminDelaySeconds, capacity, batteryDeviceId,
   batteryAccount, (retail, feedIn, imbalanceBuy, imbalanceSell), (minPrice, maxPrice,
   maxEnergyWh))`` (prices via ``gridshare.units.eur_per_kwh_to_price``) and grant
   ``SETTLER_ROLE`` to the settler account (the admin keeps ``PAUSER_ROLE``);
6. register each customer's connection meter in the capacity contract (device id
   ``n_flexibilities + 2 + j``, after the transformer's ``n_flexibilities + 1``, kind Other,
   posted by the head-end meter ``meter_<n_flexibilities>``, rated ``-PV kWp .. n_households x
   HOUSEHOLD_PEAK_KW``) and the customer as a prosumer (account ``prosumer_<j>``) bound to it.

The result is a ``Deployment`` (JSON file, format ``gridshare-deployment/2``) that the other
commands read: addresses, chain id, deploy block, roles/accounts, intervalSeconds, devices.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from web3.contract import Contract

from gridshare.chain.client import Artifact, Chain
from gridshare.chain.config import DEFAULT_FEEDER, KeyRing, is_devnet
from gridshare.units import eur_per_kwh_to_price, kw_to_w

DEPLOYMENT_FORMAT = "gridshare-deployment/2"
#: Kind enum of GridCapacity (CommunityBattery, ChargingStation, Other).
KIND_CODES: Mapping[str, int] = {"community_battery": 0, "charging_station": 1, "other": 2}
#: Device id used as batteryDeviceId when the feeder has no community battery (never registered:
#: device ids start at 1), so ``settle`` reverts UnknownDevice(0) on such a deployment.
NO_BATTERY_DEVICE_ID = 0
DEVNET_MIN_BALANCE_WEI = 10**18
DEVNET_TOP_UP_WEI = 10 * 10**18
HOUSEHOLD_PEAK_KW = 15.0
"""Rated consumption per household of a customer meter (kW), the upper end of its range."""
#: GridMarket.MAX_ORDER_VALUE_NANO_EUR: the bound on maxOrderEnergyWh * maxPrice (nano-euro).
MAX_ORDER_VALUE_NANO_EUR = 2**96


@dataclass(frozen=True)
class DeviceSpec:
    """One device to register: rated range in kW (consumption positive)."""

    name: str
    bus: int
    kind: str
    p_low_kw: float
    p_high_kw: float

    def __post_init__(self) -> None:
        if self.kind not in KIND_CODES:
            raise ValueError(f"device {self.name!r}: unknown kind {self.kind!r}")
        if self.bus < 0:
            raise ValueError(f"device {self.name!r}: bus must be >= 0, got {self.bus}")
        if self.p_low_kw > self.p_high_kw:
            raise ValueError(
                f"device {self.name!r}: p_low_kw={self.p_low_kw} > p_high_kw={self.p_high_kw}"
            )


@dataclass(frozen=True)
class DeployParams:
    """What to deploy. Times in seconds, prices in EUR/kWh, order energy in Wh.

    ``max_intervals_ahead``: how far after the current interval bands and orders may reach;
    ``admin_delay_s``: the delay of a two-step admin hand-over in both contracts;
    ``imbalance_*``: the prices of metered deviations (bought: consumed more than traded).
    """

    feeder: str = DEFAULT_FEEDER
    interval_s: int = 900
    heartbeat_s: int = 3600
    max_intervals_ahead: int = 96
    admin_delay_s: int = 86_400
    retail_eur_per_kwh: float = 0.30
    feed_in_eur_per_kwh: float = 0.08
    imbalance_buy_eur_per_kwh: float = 0.35
    imbalance_sell_eur_per_kwh: float = 0.05
    min_price_eur_per_kwh: float = 0.0
    max_price_eur_per_kwh: float = 1.0
    max_order_energy_wh: int = 1_000_000
    register_prosumers: bool = True

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.heartbeat_s <= 0:
            raise ValueError("interval_s and heartbeat_s must be positive")
        if self.max_intervals_ahead < 0 or self.admin_delay_s < 0:
            raise ValueError("max_intervals_ahead and admin_delay_s must be >= 0")
        lo, hi = self.min_price_eur_per_kwh, self.max_price_eur_per_kwh
        tariffs = (self.retail_eur_per_kwh, self.feed_in_eur_per_kwh,
                   self.imbalance_buy_eur_per_kwh, self.imbalance_sell_eur_per_kwh)
        if not (0 <= lo <= hi and all(lo <= p <= hi for p in tariffs)):
            raise ValueError(
                "prices must satisfy 0 <= min <= retail, feed-in, imbalance buy/sell <= max "
                f"(EUR/kWh): got min={lo} tariffs={tariffs} max={hi}"
            )
        max_value = self.max_order_energy_wh * int(eur_per_kwh_to_price(hi))
        if self.max_order_energy_wh <= 0 or max_value > MAX_ORDER_VALUE_NANO_EUR:
            raise ValueError(f"max_order_energy_wh must be > 0 with max energy x max price <= "
                             f"2^96 nano-euro, got {self.max_order_energy_wh} Wh")


#: Keys of deployment files written before the ``*_s`` names (read, never written).
LEGACY_KEYS = {"interval_seconds": "interval_s", "heartbeat_seconds": "heartbeat_s",
               "admin_delay_seconds": "admin_delay_s"}


@dataclass
class Deployment:
    """Everything other commands need to talk to a deployment (the deployment file)."""

    chain_id: int
    rpc: str
    deploy_block: int
    deployed_at_unix_s: int
    interval_s: int
    heartbeat_s: int
    max_intervals_ahead: int
    admin_delay_s: int
    max_order_energy_wh: int
    contracts: dict[str, str]  # name -> address
    roles: dict[str, str]  # contract role -> address
    accounts: dict[str, str]  # key-ring role name -> address
    feeder: str
    devices: list[dict[str, Any]]
    battery_device_id: int | None
    prosumers: list[dict[str, Any]]
    prices_micro_eur_per_kwh: dict[str, int]
    format: str = DEPLOYMENT_FORMAT
    notes: list[str] = field(default_factory=list)

    # ---- file
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Deployment:
        if data.get("format") != DEPLOYMENT_FORMAT:
            raise ValueError(
                f"not a gridshare deployment file (format {data.get('format')!r}, "
                f"expected {DEPLOYMENT_FORMAT!r})"
            )
        data = {LEGACY_KEYS.get(k, k): v for k, v in data.items()}
        known = set(cls.__dataclass_fields__)
        missing = known - set(data) - {"notes"}
        if missing:
            raise ValueError(f"deployment file lacks {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: Path) -> Deployment:
        """Read a deployment file; ValueError/FileNotFoundError name the problem."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no deployment file at {path} (run `gridshare deploy`)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from exc
        return cls.from_dict(data)

    # ---- contract handles
    def check_chain(self, chain: Chain) -> None:
        """Raise ValueError when ``chain`` is not the chain of this deployment."""
        if chain.chain_id != self.chain_id:
            raise ValueError(
                f"deployment is on chain id {self.chain_id}, connected chain has {chain.chain_id}"
            )

    def capacity(self, chain: Chain) -> Contract:
        """GridCapacity handle on ``chain``."""
        self.check_chain(chain)
        return chain.contract(self.contracts["GridCapacity"], load("GridCapacity").abi)

    def market(self, chain: Chain) -> Contract:
        """GridMarket handle on ``chain``."""
        self.check_chain(chain)
        return chain.contract(self.contracts["GridMarket"], load("GridMarket").abi)

    def device_id(self, name: str) -> int:
        """Capacity-contract id of the device called ``name``."""
        for device in self.devices:
            if device["name"] == name:
                return int(device["device_id"])
        raise KeyError(f"no device {name!r} in the deployment ({self.feeder})")

    def is_live(self, chain: Chain) -> bool:
        """True when ``chain`` is this deployment's chain and both contracts have code."""
        if chain.chain_id != self.chain_id:
            return False
        return all(len(chain.w3.eth.get_code(a)) > 0 for a in self.contracts.values())


def load(name: str) -> Artifact:
    """The committed artifact of contract ``name`` (GridCapacity, GridMarket)."""
    from gridshare.chain.artifacts import load_artifact

    return Artifact.from_json(load_artifact(name), name=name)


def feeder_devices(feeder: str) -> tuple[list[DeviceSpec], list[DeviceSpec]]:
    """Flexibilities and customers' connection meters (as DeviceSpec, kind ``other``, rated
    ``-PV kWp .. n_households x HOUSEHOLD_PEAK_KW``) of a built-in feeder."""
    from capacity.feeders import feeder_case

    case = feeder_case(feeder)
    devices = [
        DeviceSpec(f.name, int(f.bus_id), f.kind.value, float(f.p_low_kw), float(f.p_high_kw))
        for f in case.flexibilities
    ]
    customers = [
        DeviceSpec(c.name, int(c.bus_id), "other", -float(c.pv_kwp),
                   HOUSEHOLD_PEAK_KW * c.n_households)
        for c in case.customers
    ]
    return devices, customers


def register_devices(
    chain: Chain, capacity: Contract, devices: list[DeviceSpec], first_device_id: int = 1,
    first_meter: int = 0, owners: Mapping[str, str] | None = None,
    meter_role: str | None = None,
) -> list[dict[str, Any]]:
    """Register ``devices`` (DSO key) with ids ``first_device_id..`` and meters ``meter_<i>``
    (or all on ``meter_role``).

    ``owners`` maps a device name to its owner address (default: the DSO). Returns the device
    records of the deployment file.
    """
    owners = dict(owners or {})
    dso = chain.keys.address("deployer")
    records = []
    for offset, device in enumerate(devices):
        device_id = first_device_id + offset
        role = meter_role or f"meter_{first_meter + offset}"
        meter = chain.keys.address(role)
        p_min_w, p_max_w = int(kw_to_w(device.p_low_kw)), int(kw_to_w(device.p_high_kw))
        chain.transact(
            capacity.functions.registerDevice(
                device_id, device.bus, KIND_CODES[device.kind], owners.get(device.name, dso),
                meter, p_min_w, p_max_w,
            ),
            "deployer",
        )
        records.append({
            "name": device.name, "device_id": device_id, "bus": device.bus,
            "kind": device.kind, "meter_role": role, "meter": meter,
            "owner": owners.get(device.name, dso),
            "p_min_rated_w": p_min_w, "p_max_rated_w": p_max_w,
        })
    return records


def _fund_devnet_accounts(chain: Chain, roles: list[str]) -> None:
    for role in roles:
        chain.ensure_funded(
            chain.keys.address(role), DEVNET_MIN_BALANCE_WEI, "deployer", DEVNET_TOP_UP_WEI
        )


def _deploy_capacity(chain: Chain, artifact: Artifact, params: DeployParams,
                     say: Callable[[str], None]) -> tuple[Contract, int]:
    """Steps 2-3: deploy GridCapacity (admin delay, interval and heartbeat in s, the window in
    intervals), grant ORACLE_ROLE to the oracle account; returns (contract, deploy block)."""
    keys = chain.keys
    capacity, receipt = chain.deploy(
        artifact, "deployer", keys.address("deployer"), params.admin_delay_s,
        params.interval_s, params.heartbeat_s, params.max_intervals_ahead,
    )
    deploy_block = int(receipt["blockNumber"])
    say(f"GridCapacity at {capacity.address} (block {deploy_block})")
    oracle_role = chain.call(capacity.functions.ORACLE_ROLE())
    chain.transact(capacity.functions.grantRole(oracle_role, keys.address("oracle")), "deployer")
    return capacity, deploy_block


def _register_flexibilities(chain: Chain, capacity: Contract, devices: list[DeviceSpec],
                            feeder: str, say: Callable[[str], None]
                            ) -> tuple[list[dict[str, Any]], int | None]:
    """Step 4: register the feeder's flexibilities (the battery owned by the battery account);
    returns (device records, the community battery's device id or None)."""
    owners = {d.name: chain.keys.address("battery") for d in devices
              if d.kind == "community_battery"}
    device_records = register_devices(chain, capacity, devices, owners=owners)
    say(f"registered {len(device_records)} devices of {feeder}")
    battery_device_id = next(
        (r["device_id"] for r in device_records if r["kind"] == "community_battery"), None
    )
    return device_records, battery_device_id


def _prices(params: DeployParams) -> dict[str, int]:
    """Tariffs and price bounds in micro-EUR/kWh (``gridshare.units.eur_per_kwh_to_price``)."""
    return {
        "retail": int(eur_per_kwh_to_price(params.retail_eur_per_kwh)),
        "feed_in": int(eur_per_kwh_to_price(params.feed_in_eur_per_kwh)),
        "imbalance_buy": int(eur_per_kwh_to_price(params.imbalance_buy_eur_per_kwh)),
        "imbalance_sell": int(eur_per_kwh_to_price(params.imbalance_sell_eur_per_kwh)),
        "min": int(eur_per_kwh_to_price(params.min_price_eur_per_kwh)),
        "max": int(eur_per_kwh_to_price(params.max_price_eur_per_kwh)),
    }


def _deploy_market(chain: Chain, artifact: Artifact, capacity: Contract,
                   battery_device_id: int | None, params: DeployParams,
                   say: Callable[[str], None]) -> Contract:
    """Step 5: deploy GridMarket (prices in micro-EUR/kWh, order energy in Wh), grant
    SETTLER_ROLE to the settler."""
    keys = chain.keys
    p = _prices(params)
    market, _ = chain.deploy(
        artifact, "deployer", keys.address("deployer"), params.admin_delay_s,
        capacity.address,
        battery_device_id if battery_device_id is not None else NO_BATTERY_DEVICE_ID,
        keys.address("battery"),
        (p["retail"], p["feed_in"], p["imbalance_buy"], p["imbalance_sell"]),
        (p["min"], p["max"], params.max_order_energy_wh),
    )
    say(f"GridMarket at {market.address}")
    settler_role = chain.call(market.functions.SETTLER_ROLE())
    chain.transact(market.functions.grantRole(settler_role, keys.address("settler")), "deployer")
    return market


def _register_prosumers(chain: Chain, capacity: Contract, market: Contract,
                        customers: list[DeviceSpec], n_flexibilities: int, roles: list[str],
                        say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Step 6: register the first ``len(roles)`` customers' connection meters and the customers
    as prosumers bound to them (account = role); returns their records of the deployment file."""
    keys = chain.keys
    meters = register_devices(
        chain, capacity, customers[:len(roles)], first_device_id=n_flexibilities + 2,
        owners={c.name: keys.address(role) for c, role in zip(customers, roles, strict=False)},
        meter_role=head_end_role(n_flexibilities),
    )
    prosumers = []
    for meter, role in zip(meters, roles, strict=True):
        address = keys.address(role)
        chain.transact(market.functions.registerProsumer(address, meter["device_id"]),
                       "deployer")
        prosumers.append({"name": meter["name"], "bus": meter["bus"], "role": role,
                          "address": address, "device_id": meter["device_id"],
                          "meter_role": meter["meter_role"]})
    if prosumers:
        say(f"registered {len(prosumers)} prosumers")
    return prosumers


def head_end_role(n_flexibilities: int) -> str:
    """The key-ring role of the head-end meter that posts the customers' and the transformer's
    readings (``meter_<n_flexibilities>``)."""
    return f"meter_{n_flexibilities}"


def _contract_roles(keys: KeyRing, device_records: list[dict[str, Any]]) -> dict[str, str]:
    """The deployment file's contract role -> address (meters comma-separated)."""
    return {
        "DEFAULT_ADMIN_ROLE": keys.address("deployer"),
        "COMMUNITY_ADMIN_ROLE": keys.address("deployer"),
        "PAUSER_ROLE": keys.address("deployer"),
        "ORACLE_ROLE": keys.address("oracle"),
        "SETTLER_ROLE": keys.address("settler"),
        "METER_ROLE": ",".join(r["meter"] for r in device_records),
        "batteryAccount": keys.address("battery"),
    }


def deploy(chain: Chain, params: DeployParams | None = None, log: Any = None) -> Deployment:
    """Deploy both contracts for ``params.feeder`` on ``chain`` (see module docstring)."""
    params = params or DeployParams()
    say = log or (lambda _msg: None)
    devices, customers = feeder_devices(params.feeder)
    keys = chain.keys
    notes: list[str] = []
    n_prosumers = len(customers) if params.register_prosumers else 0
    meter_roles = [f"meter_{i}" for i in range(len(devices))]
    prosumer_roles = [f"prosumer_{i}" for i in range(n_prosumers)]
    if is_devnet(chain.chain_id):
        say("funding devnet role accounts")
        _fund_devnet_accounts(chain, ["oracle", "settler", *meter_roles,
                                      head_end_role(len(devices)), *prosumer_roles])
    capacity_artifact, market_artifact = load("GridCapacity"), load("GridMarket")
    capacity, deploy_block = _deploy_capacity(chain, capacity_artifact, params, say)
    device_records, battery_device_id = _register_flexibilities(chain, capacity, devices,
                                                                params.feeder, say)
    if battery_device_id is None:
        notes.append(f"feeder {params.feeder} has no community battery: settle() reverts "
                     f"UnknownDevice({NO_BATTERY_DEVICE_ID}) on this deployment")
    market = _deploy_market(chain, market_artifact, capacity, battery_device_id, params, say)
    prosumers = _register_prosumers(chain, capacity, market, customers, len(devices),
                                    prosumer_roles, say)
    if chain.is_embedded:
        notes.append("embedded chain: in-process and gone when the process ends")
    accounts = {role: keys.address(role)
                for role in ["deployer", "oracle", "settler", "battery", *meter_roles,
                             head_end_role(len(devices)),
                             *prosumer_roles]}
    return Deployment(
        chain_id=chain.chain_id,
        rpc=chain.config.chain,
        deploy_block=deploy_block,
        deployed_at_unix_s=int(time.time()),
        interval_s=params.interval_s,
        heartbeat_s=params.heartbeat_s,
        max_intervals_ahead=params.max_intervals_ahead,
        admin_delay_s=params.admin_delay_s,
        max_order_energy_wh=params.max_order_energy_wh,
        contracts={"GridCapacity": capacity.address, "GridMarket": market.address},
        roles=_contract_roles(keys, device_records),
        accounts=accounts,
        feeder=params.feeder,
        devices=device_records,
        battery_device_id=battery_device_id,
        prosumers=prosumers,
        prices_micro_eur_per_kwh=_prices(params),
        notes=notes,
    )
