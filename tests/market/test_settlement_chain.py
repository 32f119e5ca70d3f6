"""Settlement on a real EVM (embedded chain and anvil): commit, settle, deviations, replay,
statements.

One deployment per chain per module (deploying costs ~10 s on the embedded chain); each test
uses its own intervals: ``next_interval`` moves the chain's clock to the start of the next one,
as bands and orders are only accepted from the current interval on.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridshare.chain.errors import ContractRevert
from gridshare.chain.metering import READING, decode_totals, write_meter_totals
from market.battery import BatteryInfeasibleError, BatteryParams
from market.chain import CommitRaceError, MarketChain, SettlementError, default_battery_params
from market.orders import (
    IntervalClosedError,
    Order,
    Side,
    ValidationContext,
    book_entry,
    sign_order,
    validate_order,
)
from market.settlement import GRID_ADDRESS, Trade
from market.statements import interval_lines, member_statement

from .test_settlement_example import EXAMPLE_ROWS

N_PROSUMERS = 10
N_ACCOUNTS = 12  # prosumers 10 and 11 are for tests that remove them


class Env:
    """A deployment with helpers to write bands and place orders."""

    def __init__(self, chain, deployment, battery: BatteryParams) -> None:
        self.chain = chain
        self.deployment = deployment
        self.mc = MarketChain(chain, deployment, battery)
        self.prosumers = [chain.keys.account(f"prosumer_{i}") for i in range(N_ACCOUNTS)]
        self.nonces = dict.fromkeys(range(N_ACCOUNTS), 0)

    def next_interval(self, band_w: tuple[int, int] | None = (-30_000, 30_000)) -> int:
        """Move the chain's clock to the start of the next interval; write the battery's band."""
        interval_s = self.deployment.interval_s
        interval = self.now() // interval_s + 1
        self.chain.advance_time(interval * interval_s - self.now())
        if band_w is not None:
            self.chain.transact(
                self.mc.capacity.functions.writeBands(
                    interval, keccak(text=f"test {interval}"),
                    [self.mc.battery_device_id], [band_w[0]], [band_w[1]]),
                "oracle")
        return interval

    def now(self) -> int:
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])

    def order(self, who: int, interval: int, side: Side, energy_wh: int, price: int) -> Order:
        return Order(self.prosumers[who].address, interval, side, energy_wh, price,
                     self.nonces[who], self.now() + 3600)

    def place(self, rows, interval: int) -> list[bytes]:
        digests = []
        for who, side, energy_wh, price in rows:
            order = self.order(who, interval, side, energy_wh, price)
            sig = sign_order(order, self.mc.domain, self.prosumers[who].key)
            receipt = self.chain.transact(
                self.mc.market.functions.submitOrderSigned(order.as_abi_tuple(), sig), "deployer")
            self.nonces[who] += 1
            ev = self.chain.events(receipt, self.mc.market, "OrderPlaced")[0]
            digests.append(bytes(ev["args"]["digest"]))
            assert digests[-1] == self.mc.domain.digest(order)
        return digests

    def meter(self, interval: int, p_w: dict[int, int], battery_w: int) -> None:
        """Post one reading per member (``who: P in W``) from the head-end meter and one of the
        battery from its own meter, each held for the whole interval; then move the clock past
        the interval."""
        start = interval * self.deployment.interval_s
        records = b"".join(READING.pack(self.deployment.prosumers[who]["device_id"], start,
                                        p, 0, 1_000_000, 0) for who, p in p_w.items())
        self.chain.transact(self.mc.capacity.functions.postReadings(records),
                            self.deployment.prosumers[0]["meter_role"])
        battery = next(d for d in self.deployment.devices
                       if d["device_id"] == self.deployment.battery_device_id)
        self.chain.transact(self.mc.capacity.functions.postReadings(
            READING.pack(battery["device_id"], start, battery_w, 0, 1_000_000, 0)),
            battery["meter_role"])
        self.chain.advance_time(start + self.deployment.interval_s - self.now())


def deploy_on(request) -> tuple[Any, Any]:
    """(chain, deployment) on the fixture's chain (``request.param``: embedded or anvil), the
    market's prices in 0.05..0.40 EUR/kWh."""
    from gridshare.chain.client import connect
    from gridshare.chain.config import ChainConfig
    from gridshare.chain.deploy import DeployParams, deploy

    if request.param == "embedded":
        chain = connect()
    else:
        node = request.getfixturevalue("anvil")
        chain = connect(ChainConfig(chain=node.url, receipt_timeout_s=20.0))
    return chain, deploy(chain, DeployParams(min_price_eur_per_kwh=0.05,
                                             max_price_eur_per_kwh=0.40))


@pytest.fixture(scope="module",
                params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def env(request) -> Env:
    chain, deployment = deploy_on(request)
    assert len(deployment.prosumers) >= N_ACCOUNTS
    prosumers = [p["address"] for p in deployment.prosumers[:N_PROSUMERS]]
    battery = BatteryParams(
        account=deployment.roles["batteryAccount"], capacity_wh=20_000, soc_min_wh=2_000,
        soc_max_wh=18_000, initial_soc_wh=10_000, charge_efficiency_ppm=950_000,
        discharge_efficiency_ppm=950_000,
        shares_bps={prosumers[0]: 5000, prosumers[5]: 3000, prosumers[6]: 2000})
    e = Env(chain, deployment, battery)
    for member, bps in battery.shares_bps.items():
        chain.transact(e.mc.market.functions.setBatteryShare(member, bps), "deployer")
    return e


def _balances(env: Env) -> dict[str, int]:
    f = env.mc.market.functions
    accounts = [p.address for p in env.prosumers] + [env.mc.battery.account]
    return {a: int(env.chain.call(f.balanceOf(a))) for a in accounts}


def test_worked_example_on_chain_and_replay(env):
    interval = env.next_interval((-8000, 2000))
    before = _balances(env)
    digests = env.place(EXAMPLE_ROWS, interval)
    result, receipt = env.mc.settle_interval(interval)
    assert receipt["status"] == 1
    assert result.book_hash == env.mc.interval_state(interval)["bookHash"]
    assert sorted(p.digest for p in result.book.orders) == sorted(digests)
    assert result.clearing_price_micro_eur_per_kwh == 100_000
    assert result.battery_power_w == 2000
    P = [p.address for p in env.prosumers]
    assert Trade(GRID_ADDRESS, P[1], 300, 80_000) in result.trades
    # on-chain balances moved exactly as the statements say
    after = _balances(env)
    settled = [(interval, result.trades)]
    for a in P:
        st_ = member_statement(a, settled, env.mc.battery.account, env.mc.shares_bps())
        assert after[a] - before[a] == st_.net_nano_eur
    assert after[P[1]] - before[P[1]] == 244_000_000
    assert after[env.mc.battery.account] - before[env.mc.battery.account] == -50_000_000
    # replay from on-chain data only gives the same settlement
    report = env.mc.replay(interval)
    assert report.equal, report.differences
    assert "EQUAL" in report.format_text()
    assert env.mc.shares_bps()[P[5]] == 3000


def test_deviations_settle_what_the_meters_measured(env):
    """The worked example's members consume other than they traded: P6 bought 1200 Wh and uses
    6300 W x 900 s = 1575 Wh; P1 sold 2000 Wh and injects 8400 W = 2100 Wh; the others' meters
    read 0 W; the battery runs at the settled 2000 W (no deviation)."""
    interval = env.next_interval((-8000, 2000))
    env.place(EXAMPLE_ROWS, interval)
    env.mc.settle_interval(interval)
    before = _balances(env)
    grid_before = int(env.chain.call(env.mc.market.functions.gridExchangeNanoEur()))
    readings = {who - 1: 0 for who in range(1, 11)}
    readings |= {5: 6_300, 0: -8_400}  # P6 (index 5): 1575 Wh, P1: -2100 Wh
    env.meter(interval, readings, battery_w=2000)
    totals, _ = write_meter_totals(env.chain, env.mc.metering, interval)
    assert env.mc.replay_deviations(interval) != []  # written, not settled yet
    env.mc.settle_deviations(interval)
    devs = {d.account: d for d in env.mc.deviations(interval)}
    P = [p.address for p in env.prosumers]
    assert (devs[P[5]].traded_wh, devs[P[5]].metered_wh, devs[P[5]].deviation_wh) == (1200, 1575,
                                                                                       375)
    assert (devs[P[0]].traded_wh, devs[P[0]].metered_wh) == (-2000, -2100)
    prices = env.deployment.prices_micro_eur_per_kwh
    after = _balances(env)
    assert after[P[5]] - before[P[5]] == -375 * prices["imbalance_buy"]
    assert after[P[0]] - before[P[0]] == 100 * prices["imbalance_sell"]
    grid_after = int(env.chain.call(env.mc.market.functions.gridExchangeNanoEur()))
    assert sum(after.values()) - sum(before.values()) == grid_after - grid_before
    assert env.mc.replay_deviations(interval) == []
    assert decode_totals(env.mc.metering.written(interval)) == totals
    # the registry the replay reads: the members of the metered devices, tariffs
    members, former, imbalance = env.mc.registry(sorted(totals))
    assert imbalance == (prices["imbalance_buy"], prices["imbalance_sell"])
    assert members[env.deployment.battery_device_id] == env.mc.battery.account
    assert {members[env.deployment.prosumers[i]["device_id"]] for i in range(10)} == set(P[:10])
    assert former == set()
    # statements: trades and deviations together are the balance's change
    settled = [(s.interval, s.trades) for s in env.mc.settlements() if s.interval == interval]
    st_ = member_statement(P[5], settled, env.mc.battery.account, {}, env.mc.deviations())
    assert st_.imbalance_bought_wh == 375
    assert st_.net_nano_eur == -1200 * 100_000 - 375 * prices["imbalance_buy"]
    (line,) = interval_lines(P[5], [p.order for p in env.mc.placed_orders(interval)], settled,
                             env.mc.deviations())
    assert (line.ordered_buy_wh, line.traded_wh, line.metered_wh, line.deviation_wh) == (
        1200, 1200, 1575, 375)
    with pytest.raises(SettlementError, match="already settled"):
        env.mc.settle_deviations(interval)


def test_settling_twice_and_late_orders_are_refused(env):
    interval = env.next_interval()
    env.place([(0, Side.SELL, 100, 80_000), (1, Side.BUY, 100, 300_000)], interval)
    env.mc.settle_interval(interval)
    with pytest.raises(SettlementError, match="already settled"):
        env.mc.settle_interval(interval)
    onchain = env.mc.settlements()[-1]
    book = [book_entry(p.order) for p in env.mc.placed_orders(interval)]
    with pytest.raises(ContractRevert) as info:
        env.chain.transact(env.mc.market.functions.settle(
            interval, onchain.clearing_price_micro_eur_per_kwh, onchain.battery_power_w, book,
            list(onchain.order_trades)), "settler")
    assert info.value.error_name == "AlreadySettled"
    # an order for the settled interval: refused by the off-chain check and by the contract
    order = env.order(2, interval, Side.BUY, 100, 200_000)
    sig = sign_order(order, env.mc.domain, env.prosumers[2].key)
    ctx = ValidationContext(
        domain=env.mc.domain, now_unix_s=env.now(), registered={order.prosumer},
        next_nonce={order.prosumer: env.nonces[2]},
        interval_open=lambda i: env.chain.call(env.mc.market.functions.isOpen(i)),
        min_price_micro_eur_per_kwh=50_000, max_price_micro_eur_per_kwh=400_000)
    with pytest.raises(IntervalClosedError):
        validate_order(order, sig, ctx)
    with pytest.raises(ContractRevert) as info:
        env.chain.transact(env.mc.market.functions.submitOrderSigned(order.as_abi_tuple(), sig),
                           "deployer")
    assert info.value.error_name == "IntervalClosed"


def test_missing_or_infeasible_band_leaves_the_interval_open(env):
    no_band = env.next_interval(band_w=None)
    env.place([(3, Side.SELL, 100, 80_000)], no_band)
    with pytest.raises(SettlementError, match="no band"):
        env.mc.settle_interval(no_band)
    assert env.mc.interval_state(no_band)["committed"] is False
    # a band forcing more charging than the SoC allows (20 kWh battery at 10 kWh SoC)
    forced = env.next_interval(band_w=(40_000, 50_000))
    env.place([(3, Side.SELL, 100, 80_000)], forced)
    with pytest.raises(BatteryInfeasibleError, match="no battery power fits"):
        env.mc.settle_interval(forced)
    state = env.mc.interval_state(forced)
    assert not state["committed"] and not state["settled"]
    assert len(env.mc.placed_orders(forced)) == 1  # the order is still there


def test_order_of_a_removed_prosumer_is_left_out(env):
    interval = env.next_interval()
    env.place([(10, Side.SELL, 300, 80_000), (1, Side.BUY, 300, 300_000),
               (2, Side.SELL, 200, 80_000)], interval)
    leaving = env.prosumers[10].address
    env.chain.transact(env.mc.market.functions.removeProsumer(leaving), "deployer")
    result, _ = env.mc.settle_interval(interval)
    assert [p.order.prosumer for p in result.excluded] == [leaving]
    assert all(leaving not in (t.buyer, t.seller) for t in result.trades)
    buyer = env.prosumers[1].address  # must-buy: 200 Wh from P2, the rest from battery or grid
    assert sum(t.energy_wh for t in result.trades if t.buyer == buyer) == 300
    assert env.mc.replay(interval).equal


def test_default_battery_params_and_account_check(env):
    params = default_battery_params(env.deployment)
    assert params.account == env.deployment.roles["batteryAccount"]
    assert params.capacity_wh == 2 * 50_000  # two hours of the 50 kW rated power
    assert (params.soc_min_wh, params.initial_soc_wh, params.soc_max_wh) == (10_000, 50_000,
                                                                             90_000)
    wrong = BatteryParams("0x" + "77" * 20, 1000, 0, 1000, 500)
    with pytest.raises(SettlementError, match="differs from the market's"):
        MarketChain(env.chain, env.deployment, wrong)


def test_a_book_read_that_misses_an_order_is_detected_and_healed(env, monkeypatch):
    """The book after the commit is the contract's (its hash chain): a reader that missed an
    order is refused before settling, and a later read settles the closed interval."""
    interval = env.next_interval()
    env.place([(3, Side.SELL, 100, 80_000), (4, Side.BUY, 100, 300_000)], interval)
    real = MarketChain.placed_orders
    calls = []

    def second_read_misses_one(self, iv, to_block=None):
        orders = real(self, iv, to_block)
        calls.append(len(orders))
        return orders[:1] if len(calls) == 2 else orders

    monkeypatch.setattr(MarketChain, "placed_orders", second_read_misses_one)
    with pytest.raises(CommitRaceError, match="orders read hash to"):
        env.mc.settle_interval(interval)
    assert env.mc.interval_state(interval)["committed"] is True
    monkeypatch.setattr(MarketChain, "placed_orders", real)
    result, _ = env.mc.settle_interval(interval)
    assert len(result.placed) == 2 and env.mc.replay(interval).equal


def test_replay_detects_a_settlement_that_differs(env):
    interval = env.next_interval()
    env.place([(4, Side.SELL, 500, 90_000), (7, Side.BUY, 500, 200_000)], interval)
    honest = env.mc.clear(interval)
    env.chain.transact(env.mc.market.functions.commitOrders(interval), "settler")
    # a contract-valid settlement (inside both limits) at another price than the rule gives
    args = list(honest.settle_args())
    args[1] = 150_000
    env.chain.transact(env.mc.market.functions.settle(*args), "settler")
    report = env.mc.replay(interval)
    assert not report.equal
    assert any(d.startswith("clearingPriceMicroEurPerKwh") for d in report.differences)
    assert "DIFFERENT" in report.format_text()
    with pytest.raises(SettlementError, match="not settled"):
        env.mc.replay(10**9)


def test_after_a_reorg_the_market_reads_the_new_branch(env):
    """Orders and a settlement that a reorg drops leave MarketChain's reads; the new branch's
    orders are read, settled and replayed (its logs come from the reorg-aware EventReader)."""
    interval = env.next_interval()
    nonces = dict(env.nonces)
    snapshot = env.chain.snapshot()
    dropped = env.place([(0, Side.SELL, 600, 90_000), (1, Side.BUY, 600, 200_000)], interval)
    env.mc.settle_interval(interval)
    assert sorted(p.digest for p in env.mc.placed_orders(interval)) == sorted(dropped)
    assert env.mc.settlements()[-1].interval == interval
    env.chain.revert(snapshot)
    env.nonces = nonces  # the dropped orders' nonces are free again on the new branch
    kept = env.place([(2, Side.BUY, 300, 150_000)], interval)
    assert [p.digest for p in env.mc.placed_orders(interval)] == kept
    assert interval not in [s.interval for s in env.mc.settlements()]
    result, _ = env.mc.settle_interval(interval)
    assert sorted(p.digest for p in result.book.orders) == kept
    assert [s.interval for s in env.mc.settlements()].count(interval) == 1
    assert env.mc.replay(interval).equal


def test_cli_settle_replay_statement(env, tmp_path, monkeypatch, capsys):
    import json

    import gridshare.chain.client
    from gridshare.cli import main

    dep_file = env.deployment.save(tmp_path / "deployment.json")
    bat_file = tmp_path / "battery.json"
    bat_file.write_text(json.dumps(env.mc.battery.to_dict()))
    if env.chain.is_embedded:  # the embedded chain lives in this process: hand it to the CLI
        monkeypatch.setattr(gridshare.chain.client, "connect", lambda *a, **k: env.chain)
    common = ["--deployment", str(dep_file), "--battery", str(bat_file)]
    interval = env.next_interval()
    env.place([(2, Side.SELL, 700, 90_000), (8, Side.BUY, 400, 250_000)], interval)
    capsys.readouterr()
    assert main(["market", "settle", "--interval", str(interval), "--json", *common]) == 0
    settled = json.loads(capsys.readouterr().out)
    assert settled["interval"] == interval and settled["gas_used"] > 0
    env.chain.nonces.resync()
    assert main(["market", "replay", "--interval", str(interval), *common]) == 0
    assert "deviations: not settled yet" in capsys.readouterr().out
    assert main(["market", "deviations", "--interval", str(interval), *common]) == 1
    assert "has not written its meter totals" in capsys.readouterr().err
    env.meter(interval, {2: -2_000, 8: 1_600}, battery_w=settled["battery_power_w"])
    write_meter_totals(env.chain, env.mc.metering, interval)
    env.chain.nonces.resync()
    assert main(["market", "deviations", "--interval", str(interval), "--json", *common]) == 0
    rows = json.loads(capsys.readouterr().out)["deviations"]
    assert {r["account"]: r["metered_wh"] for r in rows}[env.prosumers[8].address] == 400
    assert main(["market", "replay", "--interval", str(interval), *common]) == 0
    assert "deviations: EQUAL" in capsys.readouterr().out
    member = env.prosumers[8].address
    assert main(["market", "statement", "--member", member, "--from", str(interval), "--to",
                 str(interval), "--json", *common]) == 0
    st_ = json.loads(capsys.readouterr().out)
    price = settled["clearing_price_micro_eur_per_kwh"]
    assert st_["bought_local_wh"] == 400 and st_["net_nano_eur"] == -400 * price
    assert st_["per_interval"] == [{"interval": interval, "ordered_buy_wh": 400,
                                    "ordered_sell_wh": 0, "traded_wh": 400, "metered_wh": 400,
                                    "deviation_wh": 0, "deviation_paid_nano_eur": 0}]
    assert main(["market", "statement", "--member", member, *common]) == 0
    assert "on-chain balance" in capsys.readouterr().out
    # errors: one line, exit 1
    assert main(["market", "statement", "--member", "0x1234", *common]) == 1
    assert "not an address" in capsys.readouterr().err
    assert main(["market", "settle", "--interval", str(interval), *common]) == 1
    assert "already settled" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"account": "0x00"}')
    assert main(["market", "replay", "--interval", str(interval), "--deployment",
                 str(dep_file), "--battery", str(bad)]) == 1


ROW = st.tuples(st.integers(0, N_PROSUMERS - 1), st.sampled_from(list(Side)),
                st.integers(1, 4000), st.integers(50_000, 400_000))


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ROW, min_size=0, max_size=8),
       band=st.sampled_from([(-30_000, 30_000), (-4000, 0), (0, 4000), (-1000, 1000)]))
def test_replay_equals_settlement_on_random_books(env, rows, band):
    """Random books settled on-chain: the replay from chain data equals the settlement.

    Earlier settlements of the module change the battery SoC, so this also checks that the
    SoC history is reconstructed from chain order.
    """
    interval = env.next_interval(band)
    env.place(rows, interval)
    result, _ = env.mc.settle_interval(interval)
    assert band[0] <= result.battery_power_w <= band[1]
    report = env.mc.replay(interval)
    assert report.equal, report.differences


def test_every_earlier_interval_still_replays_equal(env):
    """Replay of all settlements so far (run last in the module: includes all the above)."""
    history = env.mc.settlements()
    assert len(history) >= 3
    honest = [s for s in history if s.clearing_price_micro_eur_per_kwh != 150_000]
    for s in random.Random(0).sample(honest, k=min(3, len(honest))):
        assert env.mc.replay(s.interval).equal


def test_replay_all_includes_deviations_and_reads_them_as_settled(env, tmp_path, monkeypatch,
                                                                   capsys):
    """``gridshare market replay --all``: an interval with trades and deviations and one whose
    deviations were settled without a trade settlement both replay equal, also after the
    imbalance tariffs changed (the replay reads them as of the deviations' settlement)."""
    import json

    import gridshare.chain.client
    from gridshare.cli import main

    traded = env.next_interval((-8000, 2000))
    env.place(EXAMPLE_ROWS, traded)
    result, _ = env.mc.settle_interval(traded)
    env.meter(traded, dict.fromkeys(range(10), 0) | {5: 6_300, 0: -8_400},
              battery_w=result.battery_power_w)
    write_meter_totals(env.chain, env.mc.metering, traded)
    env.mc.settle_deviations(traded)
    untraded = env.next_interval()
    env.meter(untraded, {3: 2_000}, battery_w=0)  # metered, never ordered nor settled
    write_meter_totals(env.chain, env.mc.metering, untraded)
    env.mc.settle_deviations(untraded)
    assert [d.traded_wh for d in env.mc.deviations(untraded)
            if d.account == env.prosumers[3].address] == [0]
    f = env.mc.market.functions
    old = tuple(env.chain.call(f.tariffs()))
    env.chain.transact(f.setTariffs((old[0], old[1], old[2] + 1, old[3] + 1)), "deployer")
    try:
        assert env.mc.replay_deviations(traded) == []
        assert env.mc.replay_deviations(untraded) == []
        dep_file = env.deployment.save(tmp_path / "deployment.json")
        bat_file = tmp_path / "battery.json"
        bat_file.write_text(json.dumps(env.mc.battery.to_dict()))
        if env.chain.is_embedded:
            monkeypatch.setattr(gridshare.chain.client, "connect", lambda *a, **k: env.chain)
        capsys.readouterr()
        code = main(["market", "replay", "--all", "--json", "--deployment", str(dep_file),
                     "--battery", str(bat_file)])
        out = json.loads(capsys.readouterr().out)
        rows = {r["interval"]: r for r in out["intervals"]}
        # earlier tests of the module settle a dishonest interval on purpose: it must differ
        assert code == (3 if out["differing"] else 0) and out["equal"] == (not out["differing"])
        assert rows[traded]["equal"] and rows[untraded]["equal"]
        assert set(rows) >= {s.interval for s in env.mc.settlements()}
        assert (rows[traded]["trades_replayed"], rows[traded]["deviations_replayed"]) == (True,
                                                                                           True)
        assert (rows[untraded]["trades_replayed"], rows[untraded]["deviations_replayed"]) == (
            False, True)
        assert main(["market", "replay", "--interval", str(untraded), "--deployment",
                     str(dep_file), "--battery", str(bat_file)]) == 0
        assert "deviations: EQUAL" in capsys.readouterr().out
    finally:
        env.chain.transact(f.setTariffs(old), "deployer")
