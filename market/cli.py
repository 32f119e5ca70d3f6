"""``gridshare market ...``: settle, replay and statements against a deployment.

* ``gridshare market settle --interval N``: close, clear and settle interval N (settler key).
* ``gridshare market deviations --interval N``: settle N's metered deviations against the
  oracle's meter totals (anyone may send it; the settler key by default).
* ``gridshare market replay --interval N`` (or ``--all``: every interval whose trades or
  deviations are settled): re-run the clearing of a settled interval from on-chain data and,
  once its deviations are settled, recompute its meter totals from the readings and its
  deviations from the settlement; exit code 0 when all equal the chain's, 3 when something
  differs.
* ``gridshare market statement --member ADDR [--from N] [--to N]``: energy and money of one
  member over the settled intervals, with the on-chain balance as a cross-check.

Chain: ``--rpc URL``, else the deployment file's ``rpc``, else ``$GRIDSHARE_CHAIN``. The
embedded chain lives inside one process, so these commands need an RPC node (anvil, Besu).
Battery data: ``--battery FILE`` (JSON with the fields of ``market.battery.BatteryParams``),
else the deployment's defaults (``market.chain.default_battery_params``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gridshare.units import nano_eur_to_eur
from market.battery import BatteryParams

REPLAY_DIFFERS_EXIT = 3


def _chain_errors_as_exit(func: Any) -> Any:
    """Print a chain error (revert, unreachable node) as one line and return exit code 1."""

    def wrapped(args: argparse.Namespace) -> int:
        from gridshare.chain.errors import ChainError

        try:
            return int(func(args))
        except ChainError as exc:
            print(f"gridshare market {args.market_command}: chain error: {exc}", file=sys.stderr)
            return 1

    return wrapped


def _market_chain(args: argparse.Namespace) -> Any:
    from gridshare.chain import client as chain_mod
    from gridshare.chain.config import EMBEDDED, ChainConfig
    from gridshare.chain.deploy import Deployment
    from market.chain import MarketChain

    deployment = Deployment.load(Path(args.deployment))
    rpc = args.rpc or (deployment.rpc if deployment.rpc != EMBEDDED else None)
    chain = chain_mod.connect(ChainConfig.from_env(rpc=rpc))
    if not deployment.is_live(chain):
        raise ValueError(
            f"the contracts of {args.deployment} are not on the connected chain "
            f"({chain.config.chain}); an embedded-chain deployment lives only inside the process "
            "that made it: deploy to an RPC node (anvil, Besu) and pass --rpc"
        )
    battery = None
    if args.battery:
        path = Path(args.battery)
        if not path.is_file():
            raise FileNotFoundError(f"no battery file at {path}")
        try:
            battery = BatteryParams.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from None
        except TypeError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return MarketChain(chain, deployment, battery)


def _summary(result: Any) -> dict[str, Any]:
    return {
        "interval": result.interval,
        "orders": len(result.placed),
        "book_hash": "0x" + result.book_hash.hex(),
        "clearing_price_micro_eur_per_kwh": result.clearing_price_micro_eur_per_kwh,
        "battery_power_w": result.battery_power_w,
        "battery_soc_after_wh": None if result.battery is None else result.battery.soc_after_wh,
        "trades": [list(t.as_tuple()) for t in result.trades],
        "order_trades": [list(t) for t in result.onchain_trades()],
    }


def _settle(args: argparse.Namespace) -> int:
    mc = _market_chain(args)
    result, receipt = mc.settle_interval(args.interval)
    out = _summary(result) | {"tx": receipt["transactionHash"].to_0x_hex(),
                              "gas_used": int(receipt["gasUsed"])}
    print(json.dumps(out, indent=2) if args.json else
          f"settled interval {out['interval']}: {out['orders']} orders, price "
          f"{out['clearing_price_micro_eur_per_kwh']} micro-EUR/kWh, battery "
          f"{out['battery_power_w']} W, {len(out['trades'])} trades, tx {out['tx']}")
    return 0


def _deviations(args: argparse.Namespace) -> int:
    mc = _market_chain(args)
    receipt = mc.settle_deviations(args.interval)
    rows = mc.deviations(args.interval)
    if args.json:
        print(json.dumps({"interval": args.interval, "tx": receipt["transactionHash"].to_0x_hex(),
                          "deviations": [_deviation(d) for d in rows]}, indent=2))
    else:
        print(f"settled the deviations of interval {args.interval}: {len(rows)} accounts, "
              f"{sum(d.deviation_wh for d in rows)} Wh net from the grid, tx "
              f"{receipt['transactionHash'].to_0x_hex()}")
    return 0


def _deviation(d: Any) -> dict[str, Any]:
    return {"account": d.account, "device_id": d.device_id, "traded_wh": d.traded_wh,
            "metered_wh": d.metered_wh, "deviation_wh": d.deviation_wh,
            "price_micro_eur_per_kwh": d.price_micro_eur_per_kwh,
            "paid_nano_eur": d.paid_nano_eur}


def _replay(args: argparse.Namespace) -> int:
    mc = _market_chain(args)
    intervals = mc.replayable_intervals() if args.all else [args.interval]
    if args.all and not intervals:
        raise ValueError("nothing to replay: no interval's trades or deviations are settled")
    history = {s.interval: s for s in mc.settlements()}
    rows = [_replay_interval(mc, i, i in history) for i in intervals]
    equal = all(r["equal"] for r in rows)
    texts = [r.pop("text") for r in rows]
    if args.json:
        print(json.dumps(rows[0] if not args.all else
                         {"equal": equal, "replayed": len(rows),
                          "differing": [r["interval"] for r in rows if not r["equal"]],
                          "intervals": rows}, indent=2))
    else:
        print("\n".join(texts))
        if args.all:
            n_dev = sum(1 for r in rows if r["deviations_replayed"])
            print(f"replayed {len(rows)} intervals ({sum(1 for r in rows if r['trades_replayed'])}"
                  f" with trades, {n_dev} with deviations): "
                  f"{sum(1 for r in rows if r['equal'])} equal")
    return 0 if equal else REPLAY_DIFFERS_EXIT


def _replay_interval(mc: Any, interval: int, trades_settled: bool) -> dict[str, Any]:
    """Replay one interval's trades (when settled) and deviations (when settled) from chain
    data; a row for ``_replay`` with a ``text`` rendering. An interval whose deviations were
    settled without a trade settlement replays its deviations only (traded 0 Wh)."""
    from market.chain import SettlementError

    if not trades_settled and not mc.interval_state(interval)["deviationsSettled"]:
        raise SettlementError(f"interval {interval}: neither its trades nor its deviations are "
                              "settled on-chain")
    report = mc.replay(interval) if trades_settled else None
    settled = bool(mc.interval_state(interval)["deviationsSettled"])
    deviations = mc.replay_deviations(interval) if settled else []
    differences = (list(report.differences) if report else []) + deviations
    text = [report.format_text() if report else
            f"interval {interval}: trades not settled (deviations settled with 0 Wh traded)"]
    if settled:
        text.append("deviations: " + ("EQUAL (meter totals from the readings, deviations from "
                                      "the settlement)" if not deviations else
                                      "DIFFERENT\n" + "\n".join(f"  {d}" for d in deviations)))
    else:
        text.append("deviations: not settled yet")
    return {"interval": interval, "equal": not differences, "differences": differences,
            "trades_replayed": report is not None, "deviations_replayed": settled,
            "recomputed": _summary(report.recomputed) if report else None,
            "tx": report.onchain.tx_hash if report else None, "text": "\n".join(text)}


def _statement(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from eth_utils import is_address, to_checksum_address

    from market.statements import interval_lines, member_statement

    if not is_address(args.member):
        raise ValueError(f"--member {args.member!r} is not an address")
    member = to_checksum_address(args.member)
    mc = _market_chain(args)
    lo = args.from_interval if args.from_interval is not None else -1
    hi = args.to_interval if args.to_interval is not None else 2**64
    history = mc.settlements()
    chosen = [(s.interval, s.trades) for s in history if lo <= s.interval <= hi]
    deviations = mc.deviations()
    st = member_statement(member, chosen, mc.battery.account, mc.shares_bps(), deviations)
    orders = [p.order for interval, _ in chosen for p in mc.placed_orders(interval)]
    lines = interval_lines(member, orders, chosen, deviations)
    balance = int(mc.chain.call(mc.market.functions.balanceOf(member)))
    if args.json:
        print(json.dumps(st.to_dict() | {"onchain_balance_nano_eur": balance,
                                         "per_interval": [asdict(x) for x in lines]}, indent=2))
    else:
        print(st.format_text())
        print(_format_lines(lines))
        whole = len(chosen) == len(history)
        note = "" if whole else " (all intervals; the statement covers a part)"
        print(f"  on-chain balance{note}: {nano_eur_to_eur(balance):+.4f} EUR")
    return 0


def _format_lines(lines: list[Any]) -> str:
    """Per interval: ordered (buy/sell), traded, metered and deviation energy (Wh)."""
    out = [f"  {'interval':>10} {'buy Wh':>9} {'sell Wh':>9} {'traded Wh':>10} {'metered Wh':>11} "
           f"{'deviation Wh':>13}"]
    for x in lines:
        metered = "" if x.metered_wh is None else str(x.metered_wh)
        deviation = "not settled" if x.deviation_wh is None else str(x.deviation_wh)
        out.append(f"  {x.interval:>10} {x.ordered_buy_wh:>9} {x.ordered_sell_wh:>9} "
                   f"{x.traded_wh:>10} {metered:>11} {deviation:>13}")
    return "\n".join(out)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``gridshare market settle|deviations|replay|statement``."""
    from gridshare.chain.config import DEFAULT_DEPLOYMENT_FILE, ENV_DEPLOYMENT

    market = subparsers.add_parser("market", help="settle, replay and statements of the market")
    sub = market.add_subparsers(dest="market_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--deployment",
                       default=os.environ.get(ENV_DEPLOYMENT, DEFAULT_DEPLOYMENT_FILE),
                       help=f"deployment file (default ${ENV_DEPLOYMENT} or "
                       f"{DEFAULT_DEPLOYMENT_FILE})")
        p.add_argument("--rpc", default=None,
                       help="JSON-RPC URL (default: the deployment's, else $GRIDSHARE_CHAIN)")
        p.add_argument("--battery", default=None,
                       help="JSON file with the battery's BatteryParams (default: derived "
                       "from the deployment)")
        p.add_argument("--json", action="store_true", help="print JSON")

    settle = sub.add_parser("settle", help="close, clear and settle one interval")
    settle.add_argument("--interval", type=int, required=True, help="interval id")
    common(settle)
    settle.set_defaults(func=_chain_errors_as_exit(_settle))

    deviations = sub.add_parser("deviations", help="settle one interval's metered deviations")
    deviations.add_argument("--interval", type=int, required=True, help="interval id")
    common(deviations)
    deviations.set_defaults(func=_chain_errors_as_exit(_deviations))

    replay = sub.add_parser("replay", help="re-run a settled interval's clearing and its "
                            "deviations from chain data and compare (exit 3 if it differs)")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--interval", type=int, help="interval id")
    which.add_argument("--all", action="store_true",
                       help="every interval whose trades or deviations are settled")
    common(replay)
    replay.set_defaults(func=_chain_errors_as_exit(_replay))

    statement = sub.add_parser("statement", help="a member's energy and money")
    statement.add_argument("--member", required=True, help="member address")
    statement.add_argument("--from", dest="from_interval", type=int, default=None,
                           help="first interval id (default: all)")
    statement.add_argument("--to", dest="to_interval", type=int, default=None,
                           help="last interval id (default: all)")
    common(statement)
    statement.set_defaults(func=_chain_errors_as_exit(_statement))
