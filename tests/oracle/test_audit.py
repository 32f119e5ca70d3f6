"""The DSO audit (``oracle.audit.CapacityAudit``) beside a running oracle: branch loading from
the metered minutes (against pandapower's Newton-Raphson on the same injections), loading
violations, readings that do not cover the feeder, and bands whose inputs no longer match the
chain (the oracle's own inputs recomputed; a reorg on anvil changes the readings under a band).
The REST API's ``/v1/audit/compliance`` and ``/v1/bands`` carry the same figures."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest

from capacity.nr_check import NewtonRaphson
from gridshare.chain.client import connect
from gridshare.units import micro_pu_to_pu, var_to_kvar, w_to_kw
from oracle.audit import CapacityAudit, metered_loading
from oracle.registry import DeviceRegistry
from oracle.service import OracleConfig
from tests.oracle.oracle_helpers import FAST_NR, FAST_OCM, Deployed, deploy_feeder

#: One load meter leaves out two minutes of the fourth interval (its first: the oracle fills it
#: from the meter's last reading before the interval).
SKIPPED_MINUTES = (45, 50)


def audit_of(d: Deployed, **ocm: float) -> CapacityAudit:
    """The audit with the test oracle's settings (``ocm``: changed OCM settings)."""
    config = OracleConfig(ocm=dataclasses.replace(FAST_OCM, **ocm), nr=FAST_NR)
    return CapacityAudit.for_deployment(d.chain, d.deployment, d.deployment.capacity(d.chain),
                                        config)


@pytest.fixture(scope="module")
def day() -> Iterator[SimpleNamespace]:
    """Four intervals of readings on the embedded chain (the fourth with a gap), the oracle's
    bands for the next ones."""
    d = deploy_feeder(connect(), via_head_end=True)
    oracle = d.oracle(":memory:")
    h01 = d.device("H01")
    for first in (0, 15, 30, 45):
        skip = {m: [h01] for m in SKIPPED_MINUTES if first <= m < first + 15}
        d.sim.post(range(first, first + 15), skip=skip)
        oracle.step()
    i0 = d.interval_of_minute(0)
    assert [r.interval for r in oracle.store.intervals("written")] == [i0 + 1, i0 + 2, i0 + 3,
                                                                       i0 + 4]
    yield SimpleNamespace(d=d, oracle=oracle, i0=i0, h01=h01, audit=audit_of(d))
    oracle.close()


def nr_loading(d: Deployed, minutes: range) -> tuple[np.ndarray, np.ndarray]:
    """pandapower's (line, trafo) loading (S, n) of the metered injections of ``minutes``."""
    records = d.sim.readings(list(minutes))
    feeder = d.sim.feeder
    roles = {x.device_id: x for x in d.setup.devices}
    n = len(minutes)
    p, q = np.zeros((n, feeder.n_bus)), np.zeros((n, feeder.n_bus))
    v = np.zeros(n)
    for dev, ts, p_w, q_var, v_micro, _ in records.tolist():
        k = (ts - d.sim.timestamp(minutes[0])) // 60
        if roles[dev].role == "transformer":
            v[k] = micro_pu_to_pu(v_micro)
            continue
        col = feeder.bus_position(roles[dev].bus)
        p[k, col] += w_to_kw(p_w)
        q[k, col] += var_to_kvar(q_var)
    res = NewtonRaphson(feeder).run(p, q, v)
    assert res.converged.all()
    return res.line_loading_pct, res.trafo_loading_pct


def test_loading_from_the_metered_minutes_equals_pandapower(day) -> None:
    """Every minute computed; per interval the highest line and transformer loading (value,
    branch, minute) as pandapower's Newton-Raphson gives it for the metered injections; the
    metered voltages agree with the load flow to the meters' resolution."""
    rep = day.audit.loading(day.i0, day.i0 + 2)
    assert rep.complete and rep.within_limits is True and rep.n_violations == 0
    for k, row in enumerate(rep.rows):
        lines, trafos = nr_loading(day.d, range(15 * k, 15 * k + 15))
        assert row["n_minutes_computed"] == 15 and row["missing_readings"] == {}
        m, j = np.unravel_index(np.argmax(lines), lines.shape)
        assert row["max_line_loading_pct"] == pytest.approx(lines[m, j], abs=1e-3)
        assert row["max_line_id"] == int(day.d.sim.feeder.line_ids[j])
        assert row["max_line_timestamp_unix_s"] == day.d.sim.timestamp(15 * k + m)
        assert row["max_trafo_loading_pct"] == pytest.approx(trafos.max(), abs=1e-3)
        assert row["max_trafo_id"] == int(day.d.sim.feeder.trafo_ids[0])
        assert row["max_voltage_mismatch_pu"] < 2e-5


def test_a_branch_above_its_limit_is_a_violation(day) -> None:
    """With the line limit just below the highest metered line loading, that line in that
    interval is the one violation; the transformer's limit is its own."""
    base = day.audit.loading(day.i0, day.i0 + 2)
    worst = max(base.rows, key=lambda r: r["max_line_loading_pct"])
    limit = worst["max_line_loading_pct"] - 1e-6
    rep = audit_of(day.d, max_line_loading_pct=limit).loading(day.i0, day.i0 + 2)
    assert rep.within_limits is False and rep.n_violations == 1
    (v,) = rep.violations
    assert (v["interval"], v["branch"], v["branch_id"]) == (worst["interval"], "line",
                                                            worst["max_line_id"])
    assert v["loading_pct"] == pytest.approx(worst["max_line_loading_pct"])
    assert v["limit_pct"] == limit and v["n_minutes_above"] == 1
    assert v["timestamp_unix_s"] == worst["max_line_timestamp_unix_s"]
    trafo = audit_of(day.d, max_trafo_loading_pct=1.0).loading(day.i0, day.i0)
    assert {v["branch"] for v in trafo.violations} == {"trafo"}
    assert trafo.violations[0]["n_minutes_above"] == 15


def test_missing_readings_are_reported_not_guessed(day) -> None:
    """The interval where H01's meter skipped two minutes: those minutes are not computed and
    the row names the meter; the loading of the interval is unknown, not 'within limits'."""
    row = day.audit.loading(day.i0 + 3, day.i0 + 3).rows[0]
    assert row["n_minutes_computed"] == 13 and not row["complete"]
    assert row["missing_readings"] == {str(day.h01): len(SKIPPED_MINUTES)}
    assert day.audit.loading(day.i0 + 3, day.i0 + 3).within_limits is None
    later = day.audit.loading(day.i0 + 5, day.i0 + 5).rows[0]  # nothing read yet
    assert later["n_minutes_computed"] == 0 and later["max_line_loading_pct"] is None
    assert later["missing_transformer_readings"] == 15


def test_a_bus_without_its_load_meter_stops_the_load_flow(day) -> None:
    """A registry without H01 (its bus has load in the feeder model): nothing is computed and
    the bus is named."""
    registry, metered = day.audit.metered()
    h01 = registry.devices[day.h01]
    without = DeviceRegistry({k: v for k, v in registry.devices.items() if k != day.h01},
                             registry.slack_bus)
    rep = metered_loading(day.d.sim.feeder, without, metered.records, 900, day.i0, day.i0,
                          (100.0, 100.0))
    assert rep.unmetered_buses == [h01.bus]
    assert rep.rows[0]["n_minutes_computed"] == 0 and rep.within_limits is None


def test_the_oracles_bands_are_not_stale_and_other_settings_are_named(day) -> None:
    """The audit recomputes each band's inputs with the oracle's code: they hash to the band's
    inputs hash. Under other OCM settings every band is flagged, the reason naming them."""
    bands = day.audit.check_bands(day.audit.bands(day.i0, day.i0 + 4))
    assert {b.interval for b in bands} == {day.i0 + k for k in range(1, 5)}
    assert all(b.stale is False and b.stale_reason is None for b in bands)
    other = audit_of(day.d, n_random=31)
    flagged = other.check_bands(other.bands(day.i0 + 1, day.i0 + 1))
    assert flagged and all(b.stale for b in flagged)
    assert "oracle settings" in flagged[0].stale_reason


def test_the_audits_view_of_the_readings_is_the_oracles_store(day) -> None:
    """What ``Oracle.build_inputs`` reads: the audit's view (accepted readings from the chain's
    logs, up to a block) returns what the oracle's store returns."""
    from oracle.audit import _OracleView
    from oracle.ingest import READING_DTYPE

    registry, metered = day.audit.metered(cut=False)
    view = _OracleView(day.audit, registry, metered, day.d.chain.block_number)
    store = day.oracle.store

    def fields(row) -> dict[str, int]:
        return {k: int(row[k]) for k in READING_DTYPE.names}

    for minute in (0, 7, 15, 44, 45, 46, 60):
        start = day.d.sim.timestamp(minute)
        assert [fields(r) for r in view.readings_between(start, start + 900)] == \
            [fields(r) for r in store.readings_between(start, start + 900)]
        mine, theirs = view.last_readings_before(start), store.last_readings_before(start)
        assert {k: fields(v) for k, v in mine.items()} == \
            {k: fields(v) for k, v in theirs.items()}
    assert len(view.last_readings_before(day.d.sim.timestamp(45))) == len(day.d.setup.devices)


def test_the_api_reports_loading_and_stale_bands(day, tmp_path) -> None:
    """``/v1/audit/compliance`` with the audit configured as ``gridshare serve`` does: per
    interval loading figures and violations, each band's inputs check; ``/v1/bands`` too. The
    loading limits are hashed into the band inputs, so an audit with other limits than the
    oracle's flags every band."""
    from fastapi.testclient import TestClient

    from gridshare.api import create_app
    from gridshare.api.cli import _audit_config

    app = create_app(day.d.chain, day.d.deployment, db_path=tmp_path / "o.sqlite", relay=False)
    args = SimpleNamespace(forecast=FAST_OCM.forecast, n_random=FAST_OCM.n_random,
                           nr_random=FAST_NR.n_random, ga_population=FAST_OCM.ga_population,
                           ga_generations=FAST_OCM.ga_max_generations)
    params = {"from": day.i0 + 1, "to": day.i0 + 3}
    with TestClient(app) as client:
        app.state.api.audit.configure(_audit_config(args))
        same = client.get("/v1/audit/compliance", params=params).json()
        bands = client.get("/v1/bands", params=params).json()["bands"]
        app.state.api.audit.configure(_audit_config(
            SimpleNamespace(**vars(args), max_line_loading_pct=1.0)))
        low = client.get("/v1/audit/compliance", params=params).json()
    assert same["loading_limits"] == {"max_line_loading_pct": 100.0,
                                      "max_trafo_loading_pct": 100.0}
    assert [r["interval"] for r in same["loading"]] == [day.i0 + 1, day.i0 + 2, day.i0 + 3]
    assert [r["complete"] for r in same["loading"]] == [True, True, False]
    assert same["loading_complete"] is False and same["loading_within_limits"] is None
    assert same["loading_unmetered_buses"] == []
    assert same["n_loading_violations"] == 0 and "HELM" in same["loading_basis"]
    assert same["n_stale_bands"] == 0 and {r["stale"] for r in same["rows"]} == {False}
    assert {b["stale"] for b in bands} == {False} and len(bands) == 9
    assert low["loading_limits"]["max_line_loading_pct"] == 1.0
    assert low["loading_within_limits"] is False and low["n_loading_violations"] >= 3
    assert {v["branch"] for v in low["loading_violations"]} == {"line"}
    assert [s["interval"] for s in low["stale_bands"]] == [day.i0 + 1, day.i0 + 2, day.i0 + 3]
    assert "oracle settings" in low["stale_bands"][0]["reason"]


@pytest.mark.anvil
def test_a_reorg_changing_the_readings_under_a_band_is_stale_in_the_audit(tmp_path) -> None:
    """As ``test_oracle_faults``' reorg: the new branch keeps the oracle's band transaction but
    carries other readings of its source interval. The audit (its own reader, which saw the old
    branch first) flags that band stale, the one before it not; the oracle's status names the
    same interval; the audit's loading follows the new readings."""
    from gridshare.chain.config import ChainConfig
    from tests.conftest import find_anvil, missing_tool
    from tests.oracle.oracle_helpers import AnvilProcess
    from tests.oracle.test_oracle_faults import own_oracle, post_interval

    binary = find_anvil()
    if binary is None:
        missing_tool("anvil not installed (npm ci installs @foundry-rs/anvil-linux-amd64)")
    anvil = AnvilProcess(binary, tmp_path / "state.json", tmp_path)  # type: ignore[arg-type]
    anvil.start()
    try:
        d = deploy_feeder(connect(ChainConfig(chain=anvil.url, receipt_timeout_s=60.0,
                                              retries=1, backoff_s=0.1)), via_head_end=True)
        oracle = own_oracle(d, anvil.url, tmp_path / "o.sqlite")
        audit = audit_of(d)
        i0 = d.interval_of_minute(0)
        post_interval(d, oracle, 0)
        snapshot = d.chain.snapshot()
        post_interval(d, oracle, 15)
        before = audit.check_bands(audit.bands(i0 + 1, i0 + 2))
        line_before = audit.loading(i0 + 1, i0 + 1).rows[0]["max_line_loading_pct"]
        assert {(b.interval, b.stale) for b in before} == {(i0 + 1, False), (i0 + 2, False)}
        raw = d.chain.w3.eth.get_raw_transaction(oracle.store.interval(i0 + 2).tx_hash)
        d.chain.revert(snapshot)
        d.chain._rpc("evm_mine", [])  # the new branch starts with another block
        records = d.sim.readings(list(range(15, 30)))
        records[records[:, 0] == d.device("H01"), 2] += 2_000
        d.sim.await_chain_time(d.sim.timestamp(30))
        d.sim.post_by_meter(records)
        d.chain.w3.eth.wait_for_transaction_receipt(d.chain.w3.eth.send_raw_transaction(raw))
        oracle.step()
        after = {b.interval: b for b in audit.check_bands(audit.bands(i0 + 1, i0 + 2))}
        assert after[i0 + 1].stale is False and after[i0 + 2].stale is True
        assert "changed after the band was computed" in after[i0 + 2].stale_reason
        assert list(oracle.status()["stale_bands"]) == [str(i0 + 2)]
        assert audit.loading(i0 + 1, i0 + 1).rows[0]["max_line_loading_pct"] > line_before
        oracle.close()
    finally:
        anvil.stop()
