"""The fills ledger's arithmetic: the bot's cash is its fills' realised PnL less their
commissions plus the funding paid or received while it held a position, and its trades
run from flat to flat. The recording holds no funding history, so the replay's
accounts never pay any: the funding rows here are built inside the test, in the
exchange's own shapes (``income``: negative when the account paid)."""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal

from asterai.live.ledger import Ledger

HOUR = 3_600_000
T0 = 1_759_287_600_000


class _Exchange:
    """``userTrades`` and ``income`` as the exchange answers them, nothing else."""

    def __init__(self, trades: list[dict], income: list[dict]) -> None:
        self.trades, self.income = trades, income
        self.asked: list[tuple] = []

    async def user_trades(self, symbol: str, **params) -> list[dict]:
        self.asked.append(("userTrades", symbol, params.get("fromId")))
        first = params.get("fromId", 0)
        return [t for t in self.trades if t["symbol"] == symbol and t["id"] >= first]

    async def order(self, symbol: str, *, order_id: int) -> dict:
        self.asked.append(("order", order_id))
        return {"orderId": order_id, "clientOrderId": f"by-hand-{order_id}"}

    async def call(self, method: str, endpoint: str, params: dict) -> list[dict]:
        self.asked.append((endpoint, params["startTime"]))
        return [r for r in self.income if r["time"] >= params["startTime"]]


def _trade(i, order_id, side, price, qty, pnl, fee, t) -> dict:
    return {"symbol": "BTCUSDT", "id": i, "orderId": order_id, "side": side, "price": price,
            "qty": qty, "realizedPnl": pnl, "commission": fee, "maker": False, "time": t}  # fmt: skip


def test_cash_counts_the_bots_fills_and_the_funding_of_its_holding_only(tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / "live.sqlite", isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("CREATE TABLE intents (client_id TEXT, symbol TEXT, order_id INTEGER, "
                 "updated_ms INTEGER)")  # fmt: skip
    conn.executemany(
        "INSERT INTO intents VALUES (?, 'BTCUSDT', ?, ?)",
        [("ai-1-BTCUSDT-e", 11, T0 + HOUR), ("ai-1-BTCUSDT-s", 12, T0 + 9 * HOUR)],
    )
    trades = [
        _trade(1, 11, "BUY", "100", "0.5", "0", "0.0375", T0 + HOUR),  # the bot's entry
        _trade(2, 99, "BUY", "101", "0.1", "0", "0.0075", T0 + 2 * HOUR),  # by hand
        _trade(3, 12, "SELL", "98", "0.5", "-1", "0.03675", T0 + 9 * HOUR),  # its stop
    ]
    income = [  # before, during and after the bot's holding
        {
            "symbol": "BTCUSDT",
            "incomeType": "FUNDING_FEE",
            "income": "-0.02",
            "time": T0,
            "tranId": 1,
        },
        {
            "symbol": "BTCUSDT",
            "incomeType": "FUNDING_FEE",
            "income": "-0.05",
            "time": T0 + 8 * HOUR,
            "tranId": 2,
        },
        {
            "symbol": "BTCUSDT",
            "incomeType": "FUNDING_FEE",
            "income": "0.01",
            "time": T0 + 16 * HOUR,
            "tranId": 3,
        },
        {
            "symbol": "BTCUSDT",
            "incomeType": "COMMISSION",
            "income": "-0.0375",
            "time": T0 + HOUR,
            "tranId": 4,
        },  # (in the fills already: not counted twice)
    ]
    ex = _Exchange(trades, income)
    ledger = Ledger(conn)
    assert asyncio.run(ledger.sync(ex, T0 + 20 * HOUR)) == 2  # the hand's fill is not the bot's
    assert asyncio.run(ledger.sync(ex, T0 + 21 * HOUR)) == 0  # nothing moved: nothing asked
    assert [a[0] for a in ex.asked].count("userTrades") == 1
    # asked again where the positions differ: from the last trade seen, the hand's order
    # not asked for a second time
    assert asyncio.run(ledger.sync(ex, T0 + 22 * HOUR, also={"BTCUSDT"})) == 0
    assert ("userTrades", "BTCUSDT", 4) in ex.asked
    assert [a for a in ex.asked if a[0] == "order"] == [("order", 99)]
    # realised -1, commissions 0.07425, funding paid 0.05 while held
    assert ledger.realised() == Decimal("-1") - Decimal("0.07425") - Decimal("0.05")
    (trade,) = ledger.trades(T0, HOUR)
    assert (trade.entry_t, trade.exit_t, trade.side) == (1, 9, 1)
    assert trade.funding == Decimal("0.05") and trade.fees == Decimal("0.07425")
    assert trade.pnl == Decimal("-1") - Decimal("0.07425") - Decimal("0.05")
