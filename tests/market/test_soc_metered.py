"""The market's battery state of charge follows the battery's meter (``MarketChain.soc_before``):
an interval's energy is the battery's entry in the oracle's meter totals when they are written,
else the traded ``E(batteryPowerW)`` of its settlement; replayed in interval order and clamped,
as of a block (a replay reads the totals written up to the settlement's block).

One deployment per chain for the module; each test uses its own intervals and checks the SoC
relative to the SoC before them (the tests run in file order; the int64 one leaves the battery
full, so it runs last).
"""

from __future__ import annotations

import pytest

from capacity.storage import BatteryStorage, energy_for_power
from gridshare.chain.metering import encode_totals, write_meter_totals
from market.battery import BatteryParams
from market.settlement import IntervalClearing

from .test_settlement_chain import Env, deploy_on
from .test_settlement_example import EXAMPLE_ROWS

T = 900  # the deployment's interval length, s
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@pytest.fixture(scope="module",
                params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def env(request) -> Env:
    chain, deployment = deploy_on(request)
    assert deployment.interval_s == T
    battery = BatteryParams(
        account=deployment.roles["batteryAccount"], capacity_wh=20_000, soc_min_wh=2_000,
        soc_max_wh=18_000, initial_soc_wh=10_000)
    return Env(chain, deployment, battery)


def _storage(env: Env) -> BatteryStorage:
    return env.mc.battery.storage


def _after(env: Env, soc_wh: int, *energies_wh: int) -> int:
    """Reference: ``soc_wh`` after ``energies_wh``, clamped after each."""
    s = _storage(env)
    for e in energies_wh:
        soc_wh = min(max(s.soc_after(soc_wh, e), s.soc_min_wh), s.soc_max_wh)
    return soc_wh


def _soc(env: Env, **kwargs) -> int:
    """The SoC as the simulation reads it (``soc_before(settlements(), T)``)."""
    return env.mc.soc_before(env.mc.settlements(), T, **kwargs)


def _settle_example(env: Env) -> tuple[int, IntervalClearing]:
    """Settle the worked example in the next interval (the battery charges 2000 W = 500 Wh
    unless full)."""
    interval = env.next_interval((-8000, 2000))
    env.place(EXAMPLE_ROWS, interval)
    result, _ = env.mc.settle_interval(interval)
    return interval, result


def _end(env: Env, interval: int) -> None:
    """Move the chain's clock past ``interval`` (its totals can be written then)."""
    end = (interval + 1) * T
    if env.now() < end:
        env.chain.advance_time(end - env.now())


def _write(env: Env, interval: int, totals: dict[int, int]) -> int:
    """Write ``totals`` as the oracle's meter totals of ``interval``; the block."""
    _end(env, interval)
    receipt = env.chain.transact(env.mc.capacity.functions.writeMeterTotals(
        interval, encode_totals(totals)), "oracle")
    return int(receipt["blockNumber"])


def test_soc_follows_the_metered_battery_energy(env):
    """Settled at +2000 W (charge 500 Wh), the battery's meter reads -4000 W (-1000 Wh)."""
    soc0 = _soc(env)
    interval, result = _settle_example(env)
    assert result.battery_power_w == 2000
    assert _soc(env) == _after(env, soc0, 500)
    env.meter(interval, {0: 0}, battery_w=-4000)
    totals, _ = write_meter_totals(env.chain, env.mc.metering, interval)
    assert totals[env.mc.battery_device_id] == -1000
    assert env.mc.battery_energies_wh(env.mc.settlements(), T)[interval] == -1000
    assert _soc(env) == _after(env, soc0, -1000)
    # the next clearing starts from the metered SoC
    _, nxt = _settle_example(env)
    assert nxt.battery is not None
    assert nxt.battery.soc_before_wh == _after(env, soc0, -1000)


def test_a_metered_interval_without_settlement_counts(env):
    soc0 = _soc(env)
    interval = env.next_interval()
    env.meter(interval, {0: 0}, battery_w=4000)  # never ordered nor settled: 1000 Wh
    write_meter_totals(env.chain, env.mc.metering, interval)
    assert env.mc.settled(interval) is None
    assert _soc(env) == _after(env, soc0, 1000)
    _, nxt = _settle_example(env)
    assert nxt.battery is not None and nxt.battery.soc_before_wh == _after(env, soc0, 1000)
    assert env.mc.replay(nxt.interval).equal


def test_a_settled_interval_without_a_battery_total_uses_the_traded_power(env):
    soc0 = _soc(env)
    unmetered, r1 = _settle_example(env)
    no_battery, r2 = _settle_example(env)
    _write(env, no_battery, {env.deployment.prosumers[0]["device_id"]: 123})
    assert env.mc.metering.written(unmetered) is None
    energies = env.mc.battery_energies_wh(env.mc.settlements(), T)
    traded = energy_for_power(2000, T)
    assert (r1.battery_power_w, r2.battery_power_w) == (2000, 2000)
    assert (energies[unmetered], energies[no_battery]) == (traded, traded)
    assert _soc(env) == _after(env, soc0, traded, traded)


def test_replay_reads_the_meter_totals_as_of_the_settlement_block(env):
    """Totals of an earlier interval written after a settlement do not change its replay."""
    soc0 = _soc(env)
    earlier, _ = _settle_example(env)
    later, result = _settle_example(env)
    assert result.battery is not None
    assert result.battery.soc_before_wh == _after(env, soc0, 500)
    settled_block = env.mc.settled(later).block_number
    _write(env, earlier, {env.mc.battery_device_id: -2000})
    report = env.mc.replay(later)
    assert report.equal, report.differences
    assert report.recomputed.battery is not None
    assert report.recomputed.battery.soc_before_wh == result.battery.soc_before_wh
    history = [s for s in env.mc.settlements() if s.interval < later]
    assert env.mc.soc_before(history, T, to_block=settled_block) == _after(env, soc0, 500)
    # at the head the metered energy counts
    assert env.mc.soc_before(history, T, before_interval=later) == _after(env, soc0, -2000)


def test_settling_an_ended_interval_leaves_out_its_own_totals(env):
    """A late settlement of interval N whose totals are written: the SoC before N excludes N's
    metered energy; afterwards N counts with it."""
    soc0 = _soc(env)
    interval = env.next_interval((-8000, 2000))
    env.place(EXAMPLE_ROWS, interval)
    _write(env, interval, {env.mc.battery_device_id: -3000})
    assert _soc(env) == _after(env, soc0, -3000)
    result, _ = env.mc.settle_interval(interval)
    assert result.battery is not None and result.battery.soc_before_wh == soc0
    assert env.mc.replay(interval).equal
    assert _soc(env) == _after(env, soc0, -3000)


def test_replay_energies_is_replay_of_powers(env):
    s = _storage(env)
    powers = [2000, -4000, 123_456, -999_999, 0]
    assert s.replay_soc_wh(powers, T) == s.replay_energies_soc_wh(
        energy_for_power(p, T) for p in powers)


def test_battery_totals_at_the_int64_extremes_are_clamped(env):
    """The contract takes any int64 energy in the totals (it checks only the devices): an
    empty-the-battery and a fill-the-battery total clamp the SoC to its limits, and the
    intervals after them still settle and replay equal."""
    s = _storage(env)
    empty = env.next_interval()
    _write(env, empty, {env.mc.battery_device_id: INT64_MIN})
    assert _soc(env) == s.soc_min_wh
    after_empty, r1 = _settle_example(env)
    assert r1.battery is not None and r1.battery.soc_before_wh == s.soc_min_wh
    assert r1.battery_power_w == 2000
    full = env.next_interval()
    _write(env, full, {env.mc.battery_device_id: INT64_MAX})
    assert env.mc.battery_energies_wh(env.mc.settlements(), T)[full] == INT64_MAX
    assert _soc(env) == s.soc_max_wh
    after_full, r2 = _settle_example(env)
    assert r2.battery is not None and r2.battery.soc_before_wh == s.soc_max_wh
    # full: only what rounds to 0 Wh stored may charge (1 Wh AC, E(5 W) = 1 Wh)
    assert r2.battery_power_w == s.power_range_w(s.soc_max_wh, T)[1] == 5
    assert env.mc.replay(after_empty).equal and env.mc.replay(after_full).equal
    assert _soc(env) == s.soc_max_wh
