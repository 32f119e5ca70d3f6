"""The oracle loop (OCM paper Fig. 4): readings in, certified bands out, restart-safe.

Per step: ingest the new confirmed blocks (``oracle.ingest``), then for every target interval
whose source interval has closed: feeder state of the source interval (``oracle.state``),
persistence forecast, ``capacity.ocm.compute_bands`` over the forecast steps, the intersection
of the step bands, and ONE ``GridCapacity.writeBands`` transaction with the keccak hash of the
canonical inputs. Bands for interval t+1 come from the readings of interval t.

Which interval next: one more than the contract's ``lastInterval`` (or the last interval the
store skipped, if later); before anything is written, the interval of the first reading (its
source interval has no readings, so its state is the profile forecast). Hence a restart never
writes an interval twice (the contract's record is the truth) and never skips one.

A source interval is closed when every load and transformer meter has its reading for the
interval's last minute, or when the clock has passed the interval's end by ``grace_s``. The
clock is the latest reading's timestamp (``clock="readings"``: the meters' sped-up clock) or
the latest block's timestamp (``clock="block"``: real time on a live chain).

Failed band transactions (every one is logged and stored in ``tx_failures``):

1. revert ``IntervalAlreadyWritten``: the interval is on chain (an earlier run's transaction
   got through): recorded as written from the chain's record, nothing sent again;
2. revert ``IntervalNotMonotonic``: a later interval is already on chain, this one can never be
   written: recorded as skipped with the reason;
3. reverts about the registry (``OutsideRatedRange``, ``UnknownDevice``, ``InvalidBand``,
   ``DuplicateDevice``, ``EmptyBatch``, ``LengthMismatch``): the registry is re-read, the bands
   recomputed and sent again, up to ``max_tx_attempts``; then skipped with the reason;
4. ``AccessControlUnauthorizedAccount`` (the oracle lost ORACLE_ROLE): fatal, ``OracleFatal``
   stops the service (skipping would lose every interval);
5. any other revert: retried with backoff up to ``max_tx_attempts``, then skipped;
6. RPC failures (``ChainUnavailable``, ``TransactionTimeout``, ``TransactionRejected``) are not
   reverts: the service loop backs off and tries the same interval again, never skipping it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from eth_utils import keccak
from hexbytes import HexBytes

from capacity.flexibility import Flexibility, FlexibilityKind
from gridshare.chain.backoff import Backoff, sleep, stop_requested
from gridshare.chain.deploy import Deployment
from gridshare.chain.errors import (
    ChainUnavailable,
    ContractRevert,
    TransactionRejected,
    TransactionTimeout,
)
from gridshare.units import kw_to_w, micro_pu_to_pu, pu_to_micro_pu, var_to_kvar, w_to_kw
from oracle.forecast import FORECAST_MODES, ProfileForecast, forecast_steps, intersect_bands
from oracle.ingest import Ingestor, PollReport
from oracle.registry import KIND_NAMES, DeviceRegistry
from oracle.state import build_state, feeder_model, feeder_profiles, minutes_per_interval
from oracle.store import Store

log = logging.getLogger(__name__)

INPUTS_FORMAT = "gridshare-oracle-inputs/1"
CLOCKS = ("readings", "block")
REGISTRY_ERRORS = frozenset({"OutsideRatedRange", "UnknownDevice", "InvalidBand",
                             "DuplicateDevice", "EmptyBatch", "LengthMismatch"})
RPC_ERRORS = (ChainUnavailable, TransactionTimeout, TransactionRejected)


class OracleFatal(RuntimeError):  # noqa: N818 (a stop condition, not a recoverable error)
    """The oracle cannot write bands at all (e.g. the account lacks ORACLE_ROLE)."""


@dataclass(frozen=True)
class OcmSettings:
    """OCM parameters of the oracle (all part of the hashed inputs). Voltages in pu.

    ``forecast``: which minutes of the source interval become OCM steps ("all", "extremes",
    "last"; see ``oracle.state.forecast_steps``).
    """

    objective: str = "sum"
    seed: int = 0
    n_random: int = 200
    forecast: str = "extremes"
    v_low_pu: float = 0.95
    v_high_pu: float = 1.05
    margin_pu: float = 1e-5
    ga_population: int = 16
    ga_max_generations: int = 20

    def __post_init__(self) -> None:
        if self.forecast not in FORECAST_MODES:
            raise ValueError(f"forecast must be one of {FORECAST_MODES}, got {self.forecast!r}")
        if self.n_random < 0 or self.ga_population < 4 or self.ga_max_generations < 0:
            raise ValueError("n_random >= 0, ga_population >= 4, ga_max_generations >= 0")


@dataclass(frozen=True)
class OracleConfig:
    """How the oracle runs. Times in seconds."""

    db_path: str = "oracle.sqlite"
    confirmations: int = 0
    window_blocks: int = 50
    max_blocks_per_poll: int = 2000
    clock: str = "readings"
    grace_s: int = 60
    forecast_seed: int = 0
    ocm: OcmSettings = field(default_factory=OcmSettings)
    max_tx_attempts: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    explicit_gas: int | None = None
    poll_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {self.clock!r}")
        if self.confirmations < 0 or self.grace_s < 0 or self.max_tx_attempts < 1:
            raise ValueError("confirmations >= 0, grace_s >= 0 and max_tx_attempts >= 1")


# ----------------------------------------------------------------------------- inputs
def canonical_bytes(inputs: Mapping[str, Any]) -> bytes:
    """The canonical encoding: JSON, keys sorted, no spaces, integers for every measurement."""
    return json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()


def inputs_hash(inputs: Mapping[str, Any]) -> bytes:
    """keccak256 of ``canonical_bytes(inputs)`` (the bytes32 written on-chain)."""
    return keccak(canonical_bytes(inputs))


def interval_seed(base_seed: int, interval: int) -> int:
    """The OCM seed of one interval (reproducible, different per interval)."""
    return int((int(base_seed) * 1_000_003 + int(interval)) % (2**31 - 1))


def ocm_inputs(ocm: OcmSettings, interval: int) -> dict[str, Any]:
    """The ``ocm`` part of the canonical inputs of ``interval``: the settings in on-chain units
    and the interval's seed (also used by ``gridshare fleet`` to get the same bands)."""
    return {
        "objective": ocm.objective, "seed": interval_seed(ocm.seed, interval),
        "n_random": ocm.n_random, "forecast": ocm.forecast,
        "v_low_micro_pu": int(pu_to_micro_pu(ocm.v_low_pu)),
        "v_high_micro_pu": int(pu_to_micro_pu(ocm.v_high_pu)),
        "margin_nano_pu": round(ocm.margin_pu * 1e9),
        "ga_population": ocm.ga_population, "ga_max_generations": ocm.ga_max_generations,
    }


def flexibilities_of(inputs: Mapping[str, Any]) -> list[Flexibility]:
    """The flexibilities named in canonical inputs (rated range W -> kW)."""
    return [
        Flexibility(f"device-{d[0]}", int(d[1]), float(w_to_kw(d[2])), float(w_to_kw(d[3])),
                    FlexibilityKind(d[4]))
        for d in inputs["devices"]
    ]


def compute_from_inputs(feeder: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Run OCM on canonical inputs: per-step ``result`` and the intersected bands (kW, W)."""
    from capacity.ocm import GaSettings, compute_bands

    if list(map(int, feeder.bus_ids)) != list(inputs["bus_ids"]):
        raise ValueError(f"inputs are for buses {inputs['bus_ids'][:5]}..., not feeder "
                         f"{feeder.name!r}")
    ocm = inputs["ocm"]
    result = compute_bands(
        feeder, flexibilities_of(inputs),
        np.asarray(w_to_kw(np.asarray(inputs["p_w"])), dtype=float),
        np.asarray(var_to_kvar(np.asarray(inputs["q_var"])), dtype=float),
        v_slack_pu=np.asarray(micro_pu_to_pu(np.asarray(inputs["v_slack_micro_pu"])), dtype=float),
        v_low=float(micro_pu_to_pu(ocm["v_low_micro_pu"])),
        v_high=float(micro_pu_to_pu(ocm["v_high_micro_pu"])),
        objective=ocm["objective"], seed=int(ocm["seed"]), n_random=int(ocm["n_random"]),
        ga=GaSettings(population=int(ocm["ga_population"]),
                      max_generations=int(ocm["ga_max_generations"])),
        margin_pu=float(ocm["margin_nano_pu"]) * 1e-9,
    )
    lo_kw, hi_kw, empty = intersect_bands(result.p_min_kw, result.p_max_kw)
    return {"result": result, "lo_kw": lo_kw, "hi_kw": hi_kw, "empty": empty,
            "p_min_w": [int(x) for x in np.atleast_1d(kw_to_w(lo_kw))],
            "p_max_w": [int(x) for x in np.atleast_1d(kw_to_w(hi_kw))],
            "device_ids": [int(d[0]) for d in inputs["devices"]]}


# ----------------------------------------------------------------------------- the oracle
@dataclass
class StepReport:
    """What one ``Oracle.step`` did."""

    polls: list[PollReport] = field(default_factory=list)
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)

    @property
    def progressed(self) -> bool:
        return bool(self.written or self.skipped or any(p.advanced for p in self.polls))


class Oracle:
    """The oracle service for one deployment (see module docstring)."""

    def __init__(self, chain: Any, deployment: Deployment, config: OracleConfig | None = None,
                 feeder: Any = None, read_only: bool = False) -> None:
        """``read_only``: only for ``status`` next to a running oracle (no reconciliation, no
        adoption of chain progress, no writes)."""
        self.chain = chain
        self.deployment = deployment
        self.config = config or OracleConfig()
        self.capacity = deployment.capacity(chain)
        self.feeder = feeder if feeder is not None else feeder_model(deployment.feeder)
        self.store = Store(self.config.db_path)
        self.store.bind({"chain_id": str(chain.chain_id), "capacity": self.capacity.address,
                         "feeder": deployment.feeder})
        self.interval_seconds = int(chain.call(self.capacity.functions.intervalSeconds()))
        self.n_minutes = minutes_per_interval(self.interval_seconds)
        self.names = {int(d["device_id"]): str(d["name"]) for d in deployment.devices}
        self.registry = self._read_registry()
        self.forecast = ProfileForecast.from_profiles(
            feeder_profiles(deployment.feeder, self.config.forecast_seed))
        self.ingestor = Ingestor(
            chain, self.capacity, self.store, lambda: self.registry,
            start_block=deployment.deploy_block, confirmations=self.config.confirmations,
            window_blocks=self.config.window_blocks,
            max_blocks_per_poll=self.config.max_blocks_per_poll,
            late_before_s=self._late_before_s, refresh_registry=self.refresh_registry,
        )
        self.account = chain.account("oracle")
        self.before_send: Callable[[int], None] | None = None  # test hook
        self._last_cache: tuple[int | None] | None = None
        self.read_only = read_only
        if not read_only:
            self.reconcile()

    # ---- registry and clock
    def _read_registry(self) -> DeviceRegistry:
        return DeviceRegistry.from_chain(self.chain, self.capacity, self.feeder, self.names)

    def refresh_registry(self) -> None:
        """Re-read the device registry from the contract."""
        self.registry = self._read_registry()

    def _late_before_s(self) -> int | None:
        """Readings before this time arrive too late: their interval was already processed
        (the source of the last handled target ends where that target starts)."""
        handled = self.store.last_handled_interval()
        return None if handled is None else handled * self.interval_seconds

    def clock_s(self) -> int | None:
        """Now, in the configured clock (unix s)."""
        if self.config.clock == "block":
            return int(self.chain.w3.eth.get_block("latest")["timestamp"])
        return self.store.watermark_s()

    def chain_last_interval(self) -> int | None:
        """The contract's last written interval (None before the first write); read once per
        step (the cache is dropped whenever this oracle sends or the chain may have changed)."""
        if self._last_cache is None:
            if not self.chain.call(self.capacity.functions.anyIntervalWritten()):
                self._last_cache = (None,)
            else:
                self._last_cache = (int(self.chain.call(self.capacity.functions.lastInterval())),)
        return self._last_cache[0]

    # ---- restart safety
    def reconcile(self) -> None:
        """Make the store agree with the chain: settle 'sent' rows, forget writes the chain
        lost (reorg, node reset)."""
        self._last_cache = None
        for row in self.store.intervals("sent"):
            updated_at = self._record(row.interval)[1]
            if updated_at:
                self._mark_written_from_chain(row.interval, "receipt not seen before a restart")
            else:
                self.store.forget_intervals_after(row.interval - 1)
                log.warning("interval %d: transaction %s not on chain; will be sent again",
                            row.interval, row.tx_hash)
        last = self.chain_last_interval()
        lost = [r.interval for r in self.store.intervals("written")
                if last is None or r.interval > last]
        if lost:
            log.warning("intervals %s are no longer on chain (reorg or reset); writing again",
                        lost)
            self.store.forget_intervals_after(min(lost) - 1)

    def _record(self, interval: int) -> tuple[bytes, int, int]:
        inputs_h, updated_at, count = self.chain.call(
            self.capacity.functions.intervalRecord(interval))
        return bytes(inputs_h), int(updated_at), int(count)

    def _mark_written_from_chain(self, interval: int, note: str) -> None:
        inputs_h, _updated_at, _ = self._record(interval)
        row = self.store.interval(interval)
        own = row is not None and row.inputs_hash == "0x" + inputs_h.hex()
        fields = {"status": "written", "inputs_hash": "0x" + inputs_h.hex(),
                  "written_at": time.time(),
                  "reason": f"{note}; on-chain inputs hash "
                            f"{'matches' if own else 'differs from'} ours"}
        if row is None:
            self.store.save_interval(interval=interval, source_interval=interval - 1, **fields)
        else:
            self.store.update_interval(interval, **fields)
        log.info("interval %d: already on chain (%s)", interval, fields["reason"])

    def adopt_chain_progress(self) -> None:
        """Record intervals up to the contract's ``lastInterval`` that this store did not write.

        An interval with a record on chain (an earlier run whose receipt was lost, or another
        oracle account) is recorded as written from the chain; one without, below
        ``lastInterval``, can never be written any more and is recorded as skipped with the
        reason. With an empty store only ``lastInterval`` itself is adopted.
        """
        last = self.chain_last_interval()
        handled = self.store.last_handled_interval()
        if last is None or (handled is not None and handled >= last):
            return
        for interval in range(last if handled is None else handled + 1, last + 1):
            if self._record(interval)[1]:
                self._mark_written_from_chain(interval, "found on chain")
            else:
                reason = (f"never written, and the contract's lastInterval is already {last} "
                          "(written by another oracle account): it cannot be written any more")
                self.store.save_interval(interval=interval, source_interval=interval - 1,
                                         status="skipped", reason=reason,
                                         computed_at=time.time())
                log.error("interval %d: %s", interval, reason)

    def next_target(self) -> int | None:
        """The next interval to write (see module docstring), None before any reading."""
        if not self.read_only:
            self.adopt_chain_progress()
        last = self.chain_last_interval()
        handled = self.store.last_handled_interval()
        candidates = [x + 1 for x in (last, handled) if x is not None]
        if candidates:
            return max(candidates)
        first = self.store.first_reading_s()
        return None if first is None else first // self.interval_seconds

    def source_closed(self, source: int) -> bool:
        """Whether the source interval's readings are complete or its grace time is over."""
        end_s = (source + 1) * self.interval_seconds
        expected = {d.device_id for d in (*self.registry.of_role("load"),
                                          *self.registry.of_role("transformer"))}
        if expected and expected <= self.store.devices_with_reading_at(end_s - 60):
            return True
        now = self.clock_s()
        return now is not None and now >= end_s + self.config.grace_s

    # ---- one interval
    def build_inputs(self, target: int) -> tuple[dict[str, Any], Any]:
        """Canonical inputs of ``target`` (from the state of ``target - 1``) and the state."""
        source = target - 1
        start_s = source * self.interval_seconds
        state = build_state(
            source, self.interval_seconds, self.registry, self.feeder,
            self.store.readings_between(start_s, start_s + self.interval_seconds),
            self.store.last_readings_before(start_s), self.forecast,
        )
        steps = forecast_steps(state, self.config.ocm.forecast)
        devices = [[d.device_id, d.bus, d.p_min_rated_w, d.p_max_rated_w, d.kind]
                   for d in self.registry.of_role("flexibility")]
        if not devices:
            raise OracleFatal("the capacity contract has no flexibility registered")
        inputs = {
            "format": INPUTS_FORMAT,
            "chain_id": int(self.chain.chain_id),
            "capacity": self.capacity.address,
            "feeder": self.deployment.feeder,
            "interval": int(target),
            "source_interval": int(source),
            "interval_seconds": self.interval_seconds,
            "bus_ids": [int(b) for b in state.bus_ids],
            "steps_unix_s": [int(x) for x in state.timestamps[steps]],
            "p_w": state.p_w[steps].tolist(),
            "q_var": state.q_var[steps].tolist(),
            "v_slack_micro_pu": state.v_slack_micro_pu[steps].tolist(),
            "devices": devices,
            "ocm": ocm_inputs(self.config.ocm, target),
        }
        return inputs, state

    def process(self, target: int) -> str:
        """Compute and write the bands of ``target``; returns "written" or "skipped"."""
        closed_at = time.time()
        last_error = ""
        backoff = Backoff(self.config.backoff_s, self.config.max_backoff_s)
        for attempt in range(1, self.config.max_tx_attempts + 1):
            inputs, state = self.build_inputs(target)
            h = inputs_hash(inputs)
            out = compute_from_inputs(self.feeder, inputs)
            result = out["result"]
            infeasible = int(np.count_nonzero(~result.feasible))
            base = {
                "interval": target, "source_interval": target - 1,
                "inputs_hash": "0x" + h.hex(), "inputs_json": canonical_bytes(inputs).decode(),
                "bands_json": json.dumps({**{k: out[k] for k in ("device_ids", "p_min_w",
                                                                  "p_max_w")},
                                          "empty": [bool(x) for x in out["empty"]]}),
                "n_readings": state.n_readings, "n_missing": state.n_missing,
                "missing_json": json.dumps({str(k): v for k, v in state.filled.items()}),
                "infeasible_steps": infeasible,
                "n_steps": int(result.n_steps), "computed_at": time.time(),
            }
            if state.filled:
                log.info("interval %d: filled %d missing meter minutes %s", target - 1,
                         state.n_missing, state.filled)
            if self.before_send is not None:
                self.before_send(target)
            self._last_cache = None
            tx_hash = None
            try:
                fn = self.capacity.functions.writeBands(
                    target, h, out["device_ids"], out["p_min_w"], out["p_max_w"])
                tx = {"to": self.capacity.address, "data": fn._encode_transaction_data()}
                if self.config.explicit_gas is not None:
                    tx["gas"] = int(self.config.explicit_gas)
                sent_hash, full = self.chain.send(tx, self.account)
                tx_hash = HexBytes(sent_hash).to_0x_hex()
                self.store.save_interval(status="sent", tx_hash=tx_hash, **base)
                receipt = self.chain.wait(sent_hash, full)
            except ContractRevert as exc:
                last_error = str(exc)
                action = self._revert_action(exc)
                self.store.record_failure(target, attempt, last_error, exc.tx_hash or tx_hash,
                                          action)
                log.warning("interval %d: writeBands reverted (attempt %d): %s -> %s", target,
                            attempt, exc, action)
                if tx_hash is not None:
                    self.store.forget_intervals_after(target - 1)
                if action == "already-written":
                    self._mark_written_from_chain(target, "IntervalAlreadyWritten")
                    return "written"
                if action == "skip":
                    break
                if action == "fatal":
                    raise OracleFatal(f"interval {target}: {exc}") from exc
                if action == "refresh":
                    self.refresh_registry()
                backoff.sleep()
                continue
            except RPC_ERRORS as exc:
                self.store.record_failure(target, attempt, f"{type(exc).__name__}: {exc}",
                                          tx_hash, "retry-later")
                raise
            now = time.time()
            self.store.update_interval(
                target, status="written", block_number=int(receipt["blockNumber"]),
                written_at=now, latency_s=now - closed_at,
            )
            log.info("interval %d: bands written in block %d (tx %s, %d steps, %d infeasible)",
                     target, int(receipt["blockNumber"]), tx_hash, result.n_steps,
                     base["infeasible_steps"])
            return "written"
        reason = f"skipped after {attempt} attempt(s): {last_error}"
        self.store.save_interval(interval=target, source_interval=target - 1, status="skipped",
                                 reason=reason, computed_at=time.time())
        log.error("interval %d: %s", target, reason)
        return "skipped"

    @staticmethod
    def _revert_action(exc: ContractRevert) -> str:
        name = exc.error_name
        if name == "IntervalAlreadyWritten":
            return "already-written"
        if name == "IntervalNotMonotonic":
            return "skip"
        if name == "AccessControlUnauthorizedAccount":
            return "fatal"
        if name in REGISTRY_ERRORS:
            return "refresh"
        return "retry"

    # ---- the loop
    def ingest(self) -> list[PollReport]:
        """Poll until the confirmed head is reached; reconcile after a reorg."""
        reports = []
        for _ in range(10_000):
            report = self.ingestor.poll()
            reports.append(report)
            if report.reorg_depth:
                self.reconcile()
            if report.retry:
                time.sleep(0.05)  # the chain moved under the read; let it settle
                continue
            if not report.advanced:
                break
        return reports

    def process_ready(self) -> tuple[list[int], list[int]]:
        """Write every target interval whose source has closed, in order."""
        written, skipped = [], []
        while True:
            target = self.next_target()
            if target is None or not self.source_closed(target - 1):
                return written, skipped
            (written if self.process(target) == "written" else skipped).append(target)

    def step(self) -> StepReport:
        """Ingest, then process every ready interval."""
        if self.read_only:
            raise RuntimeError("a read-only oracle does not step")
        self._last_cache = None
        report = StepReport(polls=self.ingest())
        report.written, report.skipped = self.process_ready()
        return report

    def run(self, once: bool = False, stop: Callable[[], bool] | None = None) -> int:
        """Serve until ``stop()`` (or, with ``once``, until nothing is left to do). RPC failures
        back off from ``backoff_s`` doubling up to ``max_backoff_s``; ``stop()`` ends a backoff
        or idle wait at once (polled every ``gridshare.chain.backoff.STOP_POLL_S``)."""
        backoff = Backoff(self.config.backoff_s, self.config.max_backoff_s)
        while not stop_requested(stop):
            try:
                report = self.step()
            except RPC_ERRORS as exc:
                delay_s = backoff.next_delay_s()
                log.warning("chain unavailable (%s); retry in %.1f s", exc, delay_s)
                if once:
                    raise
                if sleep(delay_s, stop):
                    break
                try:
                    self.chain.nonces.resync()
                    self.reconcile()
                except RPC_ERRORS:
                    pass
                continue
            backoff.reset()
            if once and not report.progressed:
                return 0
            if not report.progressed:
                sleep(self.config.poll_interval_s, stop)
        return 0

    # ---- status
    def status(self) -> dict[str, Any]:
        """Processed block, lag, last interval, infeasible steps, readings, failures."""
        cursor = self.store.cursor()
        head = int(self.chain.w3.eth.block_number)
        rows = self.store.intervals()
        written = [r for r in rows if r.status == "written"]
        missing_devices: dict[str, int] = {}
        for r in written:
            for dev, how in json.loads(r.missing_json or "{}").items():
                missing_devices[dev] = missing_devices.get(dev, 0) + sum(how.values())
        latencies = [r.latency_s for r in written if r.latency_s is not None]
        return {
            "chain_id": int(self.chain.chain_id),
            "capacity": self.capacity.address,
            "feeder": self.deployment.feeder,
            "interval_seconds": self.interval_seconds,
            "head_block": head,
            "processed_block": None if cursor is None else cursor.block_number,
            "lag_blocks": None if cursor is None else head - cursor.block_number,
            "confirmations": self.config.confirmations,
            "last_interval_on_chain": self.chain_last_interval(),
            "next_interval": self.next_target(),
            "intervals_written": len(written),
            "intervals_skipped": [r.interval for r in rows if r.status == "skipped"],
            "infeasible_steps": sum(r.infeasible_steps for r in written),
            "filled_meter_minutes": missing_devices,
            "tx_failures": len(self.store.failures()),
            "median_latency_s": float(np.median(latencies)) if latencies else None,
            **self.store.counts(),
            "ocm": asdict(self.config.ocm),
        }

    def close(self) -> None:
        self.store.close()


__all__ = ["KIND_NAMES", "OcmSettings", "Oracle", "OracleConfig", "OracleFatal",
           "compute_from_inputs", "inputs_hash", "ocm_inputs"]
