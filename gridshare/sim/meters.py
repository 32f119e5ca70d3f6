"""A meter simulator: a day of minute readings of a built-in feeder, posted to the capacity
contract at the chain's time.

Who posts what (the on-chain registry is the truth, ``register_meters`` completes it):

* every flexibility (registered by ``gridshare deploy``) posts its own power from its meter
  account ``meter_<i>``;
* every customer (uncontrollable load) and the transformer are registered here as devices of
  kind Other (customer: at its bus, rated -PV kWp..n_households x ``HOUSEHOLD_PEAK_KW``;
  transformer: at the slack bus, rated +-its kVA) whose readings a head-end system (one account,
  ``meter_<n_flex>``, like the head-end of a smart-metering system) posts in one transaction.

Values: a customer's P = household load - PV and Q = the load's kvar from the feeder's seeded
day profiles (``capacity.feeders.day_profiles``); a flexibility's P from ``flex_p_kw`` (default
idle) at unity power factor; V and theta of every device's bus from HELM
(``capacity.helm.solve``) with the flexibilities included and the slack voltage
``v_slack_pu(minute)``; the transformer's P/Q is the power drawn at the slack.

Time is the chain's: minute m has the unix time ``day_start_s + 60 m`` and takes the values of
minute ``m mod 1440`` of the profile day. ``day_start_s`` defaults to the first local midnight of
the profile's time zone at or after the chain's latest block (the profile day repeated on the
chain's calendar, as the oracle's profile forecast repeats it), and the readings of a minute are
posted only once the chain's clock has passed the minute's end: the oracle rejects readings far
from their block's time (docs/oracle.md). On a chain that can move its clock (the embedded chain,
anvil, Hardhat: ``warp``) the simulator moves it forward to the minute's end; on any other it
waits for the chain. ``gridshare meters run`` (``gridshare.sim.meters_cli``) is the command.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from capacity.grid import S_BASE_MVA
from gridshare.chain.deploy import HOUSEHOLD_PEAK_KW, KIND_CODES, Deployment
from gridshare.chain.identity import client_name
from gridshare.units import kvar_to_var, kw_to_w, mw_to_kw, pu_to_micro_pu, rad_to_micro_rad
from oracle.ingest import encode_readings
from oracle.sessions import encode_sessions
from oracle.state import feeder_model, feeder_profiles

SECONDS_PER_DAY = 86_400
MINUTES_PER_DAY = 1440
#: Clients whose clock ``Chain.advance_time`` can move (``gridshare.chain.identity.client_name``).
WARP_CLIENTS = ("embedded", "anvil", "hardhat", "hardhatnetwork")
TRANSFORMER_NAME = "T1-meter"
POST_GAS_BASE = 60_000
POST_GAS_PER_READING = 1_500
POST_GAS_PER_DEVICE = 2_600
"""Gas limit of a post: calldata (16 gas/byte) and log data (8 gas/byte) of 24-byte records and
memory per reading, a cold registry read (2100 gas) per distinct device, with margin
(measured: 22 devices x 1 reading 89,759 gas; 22 x 15 readings 355,904 gas)."""


@dataclass(frozen=True)
class MeterDevice:
    """A metered device: id, bus, who posts for it, and what it is."""

    device_id: int
    name: str
    bus: int
    role: str  # "flexibility", "load" or "transformer"
    meter_role: str
    customer_index: int = -1  # position in the feeder's customers (loads only)
    flex_index: int = -1  # position in the feeder's flexibilities (flexibilities only)


@dataclass
class MeterSetup:
    """The devices the simulator posts for (JSON-serialisable)."""

    feeder: str
    devices: list[MeterDevice]

    def save(self, path: Path) -> Path:
        Path(path).write_text(json.dumps({"feeder": self.feeder,
                                          "devices": [asdict(d) for d in self.devices]},
                                         indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> MeterSetup:
        data = json.loads(Path(path).read_text())
        return cls(data["feeder"], [MeterDevice(**d) for d in data["devices"]])

    def by_meter(self) -> dict[str, list[MeterDevice]]:
        out: dict[str, list[MeterDevice]] = {}
        for d in self.devices:
            out.setdefault(d.meter_role, []).append(d)
        return out


def register_meters(chain: Any, deployment: Deployment, head_end_role: str | None = None,
                    flexibilities_via_head_end: bool = False) -> MeterSetup:
    """Register the transformer and customer meters of ``deployment.feeder`` (idempotent).

    Device ids follow the deployment's devices (transformer first, then the customers in feeder
    order). Returns the setup including the deployment's flexibilities. With
    ``flexibilities_via_head_end`` the DSO also moves the flexibilities to the head-end meter
    (``setDeviceMeter``), so one transaction carries all readings of a batch.
    """
    from capacity.feeders import feeder_case

    case = feeder_case(deployment.feeder)
    feeder = feeder_model(deployment.feeder)
    capacity = deployment.capacity(chain)
    flex_records = sorted(deployment.devices, key=lambda d: int(d["device_id"]))
    names = [f.name for f in case.flexibilities]
    devices = [
        MeterDevice(int(r["device_id"]), r["name"], int(r["bus"]), "flexibility",
                    r["meter_role"], flex_index=names.index(r["name"]))
        for r in flex_records
    ]
    head_end = head_end_role or f"meter_{len(flex_records)}"
    head_end_address = chain.keys.address(head_end)
    if flexibilities_via_head_end:
        for r in flex_records:
            if chain.call(capacity.functions.deviceOf(int(r["device_id"])))[7] != head_end_address:
                chain.transact(capacity.functions.setDeviceMeter(int(r["device_id"]),
                                                                 head_end_address), "deployer")
        devices = [MeterDevice(x.device_id, x.name, x.bus, x.role, head_end,
                               flex_index=x.flex_index) for x in devices]
    next_id = max((int(r["device_id"]) for r in flex_records), default=0) + 1
    sn_kw = mw_to_kw(float(np.sum(feeder.trafos.sn_mva))) if len(feeder.trafos) else 1000.0
    plan: list[tuple[MeterDevice, float, float]] = [
        (MeterDevice(next_id, TRANSFORMER_NAME, int(feeder.slack.bus_id), "transformer",
                     head_end), -sn_kw, sn_kw)
    ]
    for j, customer in enumerate(case.customers):
        plan.append((
            MeterDevice(next_id + 1 + j, customer.name, int(customer.bus_id), "load", head_end,
                        customer_index=j),
            -float(customer.pv_kwp), HOUSEHOLD_PEAK_KW * customer.n_households,
        ))
    dso = chain.keys.address("deployer")
    for device, lo_kw, hi_kw in plan:
        if not chain.call(capacity.functions.isRegistered(device.device_id)):
            chain.transact(capacity.functions.registerDevice(
                device.device_id, device.bus, KIND_CODES["other"], dso, head_end_address,
                int(kw_to_w(lo_kw)), int(kw_to_w(hi_kw)),
            ), "deployer")
        devices.append(device)
    if chain.w3.eth.get_balance(head_end_address) < 10**18:
        chain.transfer(head_end_address, 10 * 10**18, "deployer")
    return MeterSetup(deployment.feeder, devices)


def next_day_start_s(profile_day_start_s: int, now_s: int) -> int:
    """The first midnight of the profile's time zone (its day start plus whole days, unix s) at or
    after ``now_s``."""
    days = -(-(int(now_s) - int(profile_day_start_s)) // SECONDS_PER_DAY)
    return int(profile_day_start_s) + days * SECONDS_PER_DAY


def can_warp(chain: Any) -> bool:
    """Whether ``chain.advance_time`` can move the chain's clock (embedded, anvil, Hardhat)."""
    return client_name(chain) in WARP_CLIENTS


def chain_time_s(chain: Any) -> int:
    """The timestamp of the chain's latest block (unix s)."""
    return int(chain.w3.eth.get_block("latest")["timestamp"])


def _slack_power_kw(feeder: Any, v_bus: np.ndarray) -> np.ndarray:
    """Complex power (kW + j kvar) drawn from the slack for each scenario of bus voltages."""
    adm = feeder.admittance
    v_node = np.zeros((v_bus.shape[0], adm.n_node), dtype=complex)
    v_node[:, adm.bus_to_node] = v_bus
    current = (adm.y_bus[adm.slack_node, :] @ v_node.T).ravel()
    return v_node[:, adm.slack_node] * np.conj(current) * mw_to_kw(S_BASE_MVA)


class MeterSimulator:
    """Computes and posts minute readings of one day (see module docstring)."""

    def __init__(
        self,
        chain: Any,
        deployment: Deployment,
        setup: MeterSetup,
        *,
        seed: int = 1,
        flex_p_kw: Callable[[np.ndarray], np.ndarray] | None = None,
        v_slack_pu: Callable[[np.ndarray], np.ndarray] | None = None,
        day_start_s: int | None = None,
        warp: bool | None = None,
        poll_s: float = 0.5,
    ) -> None:
        """``day_start_s``: unix time of minute 0 (default: see the module docstring);
        ``warp``: move the chain's clock instead of waiting for it (default: when it can);
        ``poll_s``: how often a waiting simulator reads the chain's clock."""
        from capacity.feeders import feeder_case

        self.chain = chain
        self.deployment = deployment
        self.setup = setup
        self.case = feeder_case(deployment.feeder)
        self.feeder = feeder_model(deployment.feeder)
        self.profiles = feeder_profiles(deployment.feeder, seed)
        self.profile_day_start_s = int(self.profiles.time[0].timestamp())
        self.day_start_s = (next_day_start_s(self.profile_day_start_s, chain_time_s(chain))
                            if day_start_s is None else int(day_start_s))
        self.warp = can_warp(chain) if warp is None else warp
        self.poll_s = poll_s
        self.capacity = deployment.capacity(chain)
        self.flex_p_kw = flex_p_kw
        self.v_slack_pu = v_slack_pu
        self._positions = np.array([self.feeder.bus_position(d.bus) for d in setup.devices])

    def timestamp(self, minute: int) -> int:
        """Unix time of minute ``minute`` of the day."""
        return self.day_start_s + 60 * int(minute)

    def await_chain_time(self, target_s: int) -> int:
        """Return once the chain's latest block is at ``target_s`` or later (moving the clock
        when ``warp``, else polling every ``poll_s``); returns the block's time."""
        now_s = chain_time_s(self.chain)
        if now_s < target_s and self.warp:
            now_s = self.chain.advance_time(target_s - now_s)
        while now_s < target_s:
            time.sleep(self.poll_s)
            now_s = chain_time_s(self.chain)
        return now_s

    def readings(self, minutes: Sequence[int]) -> np.ndarray:
        """Readings (len(minutes) * n_devices, 6) in ``READING_FIELDS`` order, minute-major
        (minute m: the profile's minute m mod 1440 at ``timestamp(m)``)."""
        from capacity.helm import solve

        minutes = np.asarray(minutes, dtype=np.int64)
        if minutes.size == 0 or minutes.min() < 0:
            raise ValueError("minutes must be a non-empty list of minutes >= 0")
        m = minutes % MINUTES_PER_DAY
        n_flex = len(self.case.flexibilities)
        flex_kw = (np.zeros((m.size, n_flex)) if self.flex_p_kw is None
                   else np.asarray(self.flex_p_kw(m), dtype=float).reshape(m.size, n_flex))
        p = self.profiles.p_kw[m].copy()
        q = self.profiles.q_kvar[m].copy()
        for j, flex in enumerate(self.case.flexibilities):
            p[:, self.feeder.bus_position(flex.bus_id)] += flex_kw[:, j]
        v_slack = (np.full(m.size, abs(self.feeder.slack.vm_pu)) if self.v_slack_pu is None
                   else np.asarray(self.v_slack_pu(m), dtype=float))
        res = solve(self.feeder, p_kw=p, q_kvar=q, v_slack_pu=v_slack)
        if not res.converged.all():
            raise ValueError(f"HELM found no operable state at minutes {m[~res.converged]}")
        v = res.v_pu[:, self._positions]
        s_slack = _slack_power_kw(self.feeder, res.v_pu)
        cols_p = np.zeros((m.size, len(self.setup.devices)))
        cols_q = np.zeros_like(cols_p)
        for k, d in enumerate(self.setup.devices):
            if d.role == "load":
                j = d.customer_index
                cols_p[:, k] = self.profiles.load_kw[m, j] - self.profiles.pv_kw[m, j]
                cols_q[:, k] = self.profiles.load_kvar[m, j]
            elif d.role == "flexibility":
                cols_p[:, k] = flex_kw[:, d.flex_index]
            else:
                cols_p[:, k], cols_q[:, k] = s_slack.real, s_slack.imag
        n_dev = len(self.setup.devices)
        out = np.empty((m.size, n_dev, 6), dtype=np.int64)
        out[:, :, 0] = [d.device_id for d in self.setup.devices]
        out[:, :, 1] = (self.day_start_s + 60 * minutes)[:, None]
        out[:, :, 2] = kw_to_w(cols_p)
        out[:, :, 3] = kvar_to_var(cols_q)
        out[:, :, 4] = pu_to_micro_pu(np.abs(v))
        out[:, :, 5] = rad_to_micro_rad(np.angle(v))
        return out.reshape(-1, 6)

    def post_records(self, meter_role: str, records: np.ndarray) -> Any:
        """Post ``records`` (n, 6) from ``meter_role`` in one transaction; returns the receipt.

        The gas limit is set from the size (no estimate: a simulator's batches are valid by
        construction and the embedded chain's estimate is a second execution).
        """
        records = np.asarray(records)
        return self.chain.transact(
            self.capacity.functions.postReadings(encode_readings(records)), meter_role,
            gas=POST_GAS_BASE + POST_GAS_PER_READING * len(records)
            + POST_GAS_PER_DEVICE * len(np.unique(records[:, 0])),
        )

    def declare_sessions(self, sessions: Sequence[tuple[str, int, int, int]]) -> list[Any]:
        """Declare vehicle sessions ``(device name, arrive minute, depart minute, energy Wh)``
        (``GridCapacity.declareSessions``, ``oracle.sessions``) from each station's own meter
        account, one transaction per account; returns the receipts."""
        by_name = {d.name: d for d in self.setup.devices}
        unknown = sorted({s[0] for s in sessions} - set(by_name))
        if unknown:
            raise ValueError(f"no metered device named {unknown}")
        receipts = []
        for role in dict.fromkeys(by_name[s[0]].meter_role for s in sessions):
            records = [(by_name[name].device_id, self.timestamp(arrive), self.timestamp(depart),
                        energy_wh) for name, arrive, depart, energy_wh in sessions
                       if by_name[name].meter_role == role]
            receipts.append(self.chain.transact(
                self.capacity.functions.declareSessions(encode_sessions(records)), role,
                gas=POST_GAS_BASE + POST_GAS_PER_READING * len(records)))
        return receipts

    def post(self, minutes: Iterable[int],
             skip: Mapping[int, Iterable[int]] | None = None) -> list[Any]:
        """Post the readings of ``minutes`` once the chain's clock has passed the last one's
        end: one transaction per meter account. ``skip`` maps a minute to the device ids whose
        reading is left out (a missing meter)."""
        minutes = list(minutes)
        records = self.readings(minutes)
        keep = np.ones(len(records), dtype=bool)
        for minute, device_ids in (skip or {}).items():
            keep &= ~((records[:, 1] == self.timestamp(minute))
                      & np.isin(records[:, 0], list(device_ids)))
        self.await_chain_time(self.timestamp(max(minutes)) + 60)
        return self.post_by_meter(records[keep])

    def post_by_meter(self, records: np.ndarray) -> list[Any]:
        """Post ``records`` (n, 6), one transaction per meter account of their devices."""
        records = np.asarray(records)
        role_of = {d.device_id: d.meter_role for d in self.setup.devices}
        roles = np.array([role_of[int(i)] for i in records[:, 0]])
        receipts = []
        for role in dict.fromkeys(d.meter_role for d in self.setup.devices):
            mask = roles == role
            if mask.any():
                receipts.append(self.post_records(role, records[mask]))
        return receipts

    def run(
        self,
        start_minute: int = 0,
        end_minute: int = 1440,
        batch_minutes: int = 1,
        speedup: float = float("inf"),
        after_batch: Callable[[int], None] | None = None,
        skip: Mapping[int, Iterable[int]] | None = None,
    ) -> None:
        """Post minutes ``start_minute..end_minute-1`` in batches on a sped-up clock.

        A batch of ``batch_minutes`` minutes is posted once its last minute has passed on the
        simulated clock, which runs ``speedup`` times faster than the wall clock (``inf``: no
        waiting). ``after_batch(last_minute)`` is called after each batch (e.g. to step an
        oracle); ``skip`` maps a minute to device ids whose reading is left out (missing meters).
        """
        if batch_minutes < 1 or speedup <= 0:
            raise ValueError("batch_minutes must be >= 1 and speedup > 0")
        started = time.monotonic()
        for first in range(start_minute, end_minute, batch_minutes):
            minutes = list(range(first, min(first + batch_minutes, end_minute)))
            due_s = (minutes[-1] + 1 - start_minute) * 60.0 / speedup
            wait_s = due_s - (time.monotonic() - started)
            if wait_s > 0:
                time.sleep(wait_s)
            self.post(minutes, skip=skip)
            if after_batch is not None:
                after_batch(minutes[-1])
