"""Shared set-up of the oracle tests: a deployed heimschuh-like feeder with its meters."""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gridshare.chain.client import Chain, connect
from gridshare.chain.config import ChainConfig
from gridshare.chain.deploy import Deployment, DeployParams, deploy
from gridshare.sim.meters import MeterSetup, MeterSimulator, register_meters
from oracle.certify import NrSettings
from oracle.service import OcmSettings, Oracle, OracleConfig
from tests.conftest import free_port

FEEDER = "heimschuh-like"
INTERVAL_S = 900
#: Cheap OCM settings for tests (the oracle hashes them with the inputs, so any value is honest).
FAST_OCM = OcmSettings(forecast="last", n_random=30, ga_population=8, ga_max_generations=8)
#: The Newton-Raphson check at the band's two corners only (hashed with the inputs too).
FAST_NR = NrSettings(n_random=0)


@dataclass
class Deployed:
    """A chain with the contracts, the feeder's meters and a meter simulator."""

    chain: Chain
    deployment: Deployment
    setup: MeterSetup
    sim: MeterSimulator

    def oracle(self, db: Path | str, **config: Any) -> Oracle:
        config.setdefault("ocm", FAST_OCM)
        config.setdefault("nr", FAST_NR)
        config.setdefault("backoff_s", 0.01)
        return Oracle(self.chain, self.deployment, OracleConfig(db_path=str(db), **config))

    def device(self, name: str) -> int:
        return next(d.device_id for d in self.setup.devices if d.name == name)

    def interval_of_minute(self, minute: int) -> int:
        return self.sim.timestamp(minute) // self.deployment.interval_s


def deploy_feeder(chain: Chain, interval_s: int = INTERVAL_S, seed: int = 1,
                  v_slack: bool = True, via_head_end: bool = False) -> Deployed:
    """Deploy, register the meters and build a simulator (slack voltage varying a little).

    ``via_head_end``: every device posts through the head-end (one transaction per batch)."""
    deployment = deploy(chain, DeployParams(feeder=FEEDER, interval_s=interval_s,
                                            register_prosumers=False))
    setup = register_meters(chain, deployment, flexibilities_via_head_end=via_head_end)

    def v_slack_pu(minutes: np.ndarray) -> np.ndarray:
        return 1.01 + 0.004 * np.sin(2 * np.pi * np.asarray(minutes) / 1440.0)

    sim = MeterSimulator(chain, deployment, setup, seed=seed,
                         v_slack_pu=v_slack_pu if v_slack else None)
    return Deployed(chain, deployment, setup, sim)


def audit_stale(deployed: Deployed, ocm: OcmSettings, target: int) -> list[bool | None]:
    """The DSO audit's stale verdict on each band of ``target``, recomputing the inputs with
    oracle settings ``ocm`` (and ``FAST_NR``) from the chain."""
    from oracle.audit import CapacityAudit

    config = OracleConfig(ocm=ocm, nr=FAST_NR)
    audit = CapacityAudit.for_deployment(deployed.chain, deployed.deployment,
                                         deployed.deployment.capacity(deployed.chain), config)
    return [b.stale for b in audit.check_bands(audit.bands(target, target))]


def band_on_chain(deployed: Deployed, interval: int) -> tuple[list[int], list[int], list[int]]:
    """(device ids, pMinW, pMaxW) of an interval read back with ``bandOf``."""
    capacity = deployed.deployment.capacity(deployed.chain)
    ids = [int(d["device_id"]) for d in deployed.deployment.devices]
    lo, hi = [], []
    for device_id in ids:
        p_min_w, p_max_w, _ = deployed.chain.call(capacity.functions.bandOf(device_id, interval))
        lo.append(int(p_min_w))
        hi.append(int(p_max_w))
    return ids, lo, hi


def bands_written_events(deployed: Deployed) -> list[int]:
    """Interval ids of every BandsWritten event, in chain order (small block windows)."""
    chain = deployed.chain
    capacity = deployed.deployment.capacity(chain)
    logs = chain.get_logs(capacity.events.BandsWritten(), deployed.deployment.deploy_block,
                          chain.block_number, max_range=100)
    return [int(e["args"]["interval"]) for e in logs]


class AnvilProcess:
    """An anvil of one test: same port across restarts, state dumped on exit (``--dump-state``)
    and loaded on the next start when the file exists."""

    def __init__(self, binary: Path, state: Path, log_dir: Path) -> None:
        self.binary, self.state, self.log_dir = binary, state, log_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        args = [str(self.binary), "--host", "127.0.0.1", "--port", str(self.port),
                "--hardfork", "cancun", "--mixed-mining", "--block-time", "1",
                "--dump-state", str(self.state)]
        if self.state.exists():
            args += ["--load-state", str(self.state)]
        self.starts += 1
        log = (self.log_dir / f"anvil-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        chain_ready = ChainConfig(chain=self.url, retries=0, request_timeout_s=1.0)

        def ready() -> bool:
            try:
                connect(chain_ready)
                return True
            except Exception:
                return False

        wait_until(ready, 30, "anvil to answer")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)  # SIGTERM: anvil dumps its state


def embedded_deployment_file(path: Path) -> Path:
    """A deployment file that names the embedded chain (which no second process can reach)."""
    return Deployment(
        chain_id=1, rpc="embedded", deploy_block=1, deployed_at_unix_s=0, interval_s=900,
        heartbeat_s=3600, max_intervals_ahead=96, admin_delay_s=0,
        max_order_energy_wh=10**6, contracts={}, roles={}, accounts={}, feeder=FEEDER,
        devices=[], battery_device_id=None, prosumers=[], prices_micro_eur_per_kwh={},
    ).save(path)


def stop_process(process: subprocess.Popen[bytes], sig_kill: bool = False) -> None:
    """Stop a child process started by a test (SIGKILL when ``sig_kill``)."""
    if process.poll() is None:
        if sig_kill:
            process.kill()
        else:
            process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    if process.poll() is None:
        process.kill()
        process.wait(timeout=5)


def wait_until(predicate: Any, timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    """Poll ``predicate()`` until true; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
