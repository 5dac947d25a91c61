"""Two implementations agree: the trades the backtest's kernel decides over the
recording's last two weeks, sent as orders to the stand-in exchange's matching engine
(``exchange.replay.matching``, written order by order as an exchange, not a call into
the kernel) as the clock plays, fill into the same trades.

The orders are what a live bot sends for each of the kernel's trades: a MARKET entry a
moment after the bar opens, then at once a close-all STOP_MARKET at the trade's stop
and a reduce-only LIMIT at its target, the other leg cancelled when one fills; an exit
on a signal (or the breaker) a reduce-only MARKET at the next open; a time-limit exit a
reduce-only MARKET sent when the bar closes. Every difference is listed and explained:
the one expected is the time limit, which the kernel fills at the bar's close and an
exchange at the next bar's open (the close is not a price one can still trade at once
the bar has closed).
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
from conftest import batch_inputs

from asterai.config import load_settings

HOUR = 3_600_000
START = int(pd.Timestamp("2025-10-01T03:00:00Z").value // 1_000_000)
LAST = int(pd.Timestamp("2025-10-15T03:00:00Z").value // 1_000_000)


def d(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def test_the_backtests_trades_sent_as_orders_fill_the_same_on_the_engine(
    exported_root, recording
) -> None:
    from asterai.backtest import engine as backtest
    from asterai.exchange.orders import OrderStatus
    from asterai.exchange.replay.accounts import Costs, instruments_of
    from asterai.exchange.replay.matching import Engine

    settings = load_settings(exported_root)
    st = settings.strategy
    symbols = sorted(load_symbols(exported_root))
    inputs = batch_inputs(exported_root, symbols, START, LAST)
    result = backtest.simulate(inputs, backtest.params(settings, inputs))
    trades = result.trades.reset_index(drop=True)
    assert len(trades) > 5, "too few trades for the comparison to say anything"

    instruments = {s: i for s, i in instruments_of(recording).items() if s in inputs.symbols}
    costs = Costs(maker_fee=d(st.maker_fee), taker_fee=d(st.taker_fee), slippage=d(st.slippage),
                  maintenance_margin=d(st.maintenance_margin),
                  liquidation_fee=d(st.liquidation_fee))  # fmt: skip
    times = inputs.times
    eng = Engine(instruments, costs, int(times[0]))
    acc = eng.open_account("0xbot", d(st.capital))
    bar = {int(t): k for k, t in enumerate(times)}
    entry_t = trades["entry_time"].map(lambda x: bar[int(x.value // 1_000_000)])
    exit_t = trades["exit_time"].map(lambda x: bar[int(x.value // 1_000_000)])
    legs: dict[int, dict] = {}  # trade -> its orders
    made = {}

    def cancel_legs(k: int, now: int) -> None:
        for leg in ("stop", "target"):
            o = legs[k].get(leg)
            if o is not None and o.status.is_open:
                eng.cancel(acc, o.symbol, now, order_id=str(o.order_id))

    def close_at_market(k: int, now: int) -> None:
        cancel_legs(k, now)
        row = trades.loc[k]
        legs[k]["exit"] = eng.new_order(
            acc,
            {
                "symbol": row["symbol"],
                "side": "SELL" if row["side"] == "long" else "BUY",
                "type": "MARKET",
                "quantity": str(d(row["quantity"])),
                "reduceOnly": "true",
            },
            now,
        )

    for t in range(len(times)):
        opened = int(times[t]) + 1
        for k in trades.index[(exit_t == t) & trades["exit_reason"].isin(
                ["opposite signal", "drawdown circuit breaker", "kill switch"])]:  # fmt: skip
            close_at_market(k, opened)
        for k in trades.index[entry_t == t]:
            row = trades.loc[k]
            buy = row["side"] == "long"
            legs[k] = {"entry": eng.new_order(acc, {
                "symbol": row["symbol"], "side": "BUY" if buy else "SELL", "type": "MARKET",
                "quantity": str(d(row["quantity"]))}, opened)}  # fmt: skip
            legs[k]["stop"] = eng.new_order(acc, {
                "symbol": row["symbol"], "side": "SELL" if buy else "BUY",
                "type": "STOP_MARKET", "stopPrice": str(d(row["stop"])),
                "closePosition": "true"}, opened + 1)  # fmt: skip
            legs[k]["target"] = eng.new_order(acc, {
                "symbol": row["symbol"], "side": "SELL" if buy else "BUY", "type": "LIMIT",
                "timeInForce": "GTC", "quantity": str(d(row["quantity"])),
                "price": str(d(row["target"])), "reduceOnly": "true"}, opened + 1)  # fmt: skip
        closed = int(times[t]) + HOUR - 1
        eng.advance(closed)
        for k, orders in legs.items():  # one leg filled: the other is cancelled
            filled = [leg for leg in ("stop", "target") if orders[leg].status is OrderStatus.FILLED]
            if filled and k not in made:
                orders["exit"] = orders[filled[0]]
                made[k] = t
                cancel_legs(k, closed + 1)
        for k in trades.index[(exit_t == t) & trades["exit_reason"].isin(
                ["time limit", "end of data"])]:  # fmt: skip
            if k not in made:
                close_at_market(k, closed + 1)
                made[k] = t
    eng.advance(int(times[-1]) + 2 * HOUR)

    explained, unexplained = [], []
    pnl_gap = Decimal(0)  # the engine's PnL less the kernel's, over the explained trades
    for k, row in trades.iterrows():
        o = legs[k]
        entry, leaving = o["entry"], o.get("exit")
        fills = [
            x
            for x in acc.trades
            if x["orderId"] in (entry.order_id, getattr(leaving, "order_id", -1))
        ]
        # what the exchange charged, at full precision (its replies round to 8 places)
        fees = sum(Decimal(x["qty"]) * Decimal(x["price"])
                   * (costs.maker_fee if x["maker"] else costs.taker_fee) for x in fills)  # fmt: skip
        problems = []
        if entry.status is not OrderStatus.FILLED or abs(
            entry.avg_price - d(row["entry_price"])
        ) > Decimal("1e-9"):
            problems.append(
                f"entry {entry.status.value} at {entry.avg_price} vs {row['entry_price']}"
            )
        if leaving is None or leaving.status is not OrderStatus.FILLED:
            problems.append("no exit filled")
        else:
            price_gap = leaving.avg_price - d(row["exit_price"])
            if abs(price_gap) > Decimal("1e-9"):
                problems.append(f"exit at {leaving.avg_price} vs {row['exit_price']}")
            if abs(fees - d(row["fees"])) > Decimal("1e-9"):
                problems.append(f"fees {fees} vs {row['fees']}")
        if not problems:
            continue
        why = f"{row['symbol']} {row['side']} {row['entry_time']}..{row['exit_time']} ({row['exit_reason']}): {'; '.join(problems)}"
        if (
            row["exit_reason"] in ("time limit", "end of data")
            and problems
            and all(p.startswith(("exit at", "fees")) for p in problems)
        ):
            # the kernel fills a time limit at the bar's close; an order sent when the bar
            # closes fills at the next bar's open: within one bar's close-to-open move plus
            # the slippage, and the fee on that price
            t = exit_t[k]
            inst = instruments[row["symbol"]]
            i = int(np.searchsorted(inst.open_time, int(times[t]) + HOUR))
            gap = abs(d(inst.open[i]) - d(inst.close[i - 1]))
            slip = d(row["exit_price"]) * costs.slippage * 2 + inst.tick * 2
            assert abs(leaving.avg_price - d(row["exit_price"])) <= gap + slip, why
            side = 1 if row["side"] == "long" else -1
            mine = side * d(row["quantity"]) * (leaving.avg_price - entry.avg_price) - fees
            pnl_gap += mine - d(row["pnl"])
            explained.append(why)
        else:
            unexplained.append(why)
    print(f"{len(trades)} trades; {len(explained)} time-limit exits at the next open")
    for line in explained:
        print("  explained:", line)
    assert not unexplained, "\n".join(unexplained)
    assert funding_is_zero(result)
    # the account: the kernel's final cash, moved by the explained trades' differences
    assert all(not pos.qty for pos in acc.positions.values())
    assert abs(acc.wallet - (d(result.final_cash) + pnl_gap)) < Decimal("1e-9")


def load_symbols(root) -> list[str]:
    from asterai.deploy.runtime import OnnxModel
    from asterai.paths import DataPaths

    model = OnnxModel(DataPaths.at(root).models("confluence") / "onnx")
    return list(model.manifest["service"]["symbols"])


def funding_is_zero(result) -> bool:
    """The recording has no funding history: neither side paid any."""
    return bool((result.trades["funding"] == 0).all())
