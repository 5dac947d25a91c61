"""Live trading, run for real against the offline exchange: the live trader follows a
replay of the real recording played forward bar by bar on loopback, sends signed
orders to the replay's matching engine from a funded throwaway account, and journals
its intents, its fills and its shadow (the same bars through the simulated broker) in
a real SQLite file.

The replay's clock is stepped (``clock_speed=0``), as in the paper trader's tests: one
bar at a time, to one second after a bar's close, then a poll.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from conftest import FAST_EXCHANGE

from asterai.config import load_settings
from asterai.exchange.client import AsterClient
from asterai.paths import DataPaths

HOUR = 3_600_000
START = int(pd.Timestamp("2025-10-01T03:00:00Z").value // 1_000_000)
LAST = int(pd.Timestamp("2025-10-15T03:00:00Z").value // 1_000_000)
BARS = (LAST - START) // HOUR + 1
AFTER_CLOSE = 1_000


def live_root(exported_root: Path, tmp: Path, **paper) -> Path:
    root = tmp / "root"
    shutil.copytree(exported_root, root)
    lines = ["[paper]"] + [f"{k} = {v!r}" for k, v in paper.items()]
    with (root / "asterai.toml").open("a") as f:
        f.write("\n" + "\n".join(lines) + "\n")
    return root


def exchange_at(recording, first_bar_ms: int = START, **kwargs):
    from asterai.exchange.replay import ReplayServer

    return ReplayServer(recording, clock_speed=0, play_from_ms=first_bar_ms + HOUR + AFTER_CLOSE,
                        weight_limit=10**9, accounts=1, balance="50", **kwargs)  # fmt: skip


def keys_of(server):
    from asterai.exchange.signing import V3Key
    from asterai.live.keys import LiveKeys

    c = server.credentials[0]
    return LiveKeys(V3Key.of(c.user.address, c.api_wallet.private_key,
                             signer=c.api_wallet.address))  # fmt: skip


def trader_for(root: Path, server, **overrides):
    from asterai.live.trader import LiveTrader
    from asterai.paper.plan import prepare

    settings = load_settings(root, base_url=server.base_url, exchange=FAST_EXCHANGE, **overrides)
    return LiveTrader(prepare(settings), keys_of(server), note="test", clock_rate=0,
                      retry_s=0.05)  # fmt: skip


async def _play(trader, server, polls: int, before=None) -> list[list[int]]:
    settings = trader.plan.settings
    done = []
    async with AsterClient(settings.base_url, settings.exchange) as client:
        trader.setup = await trader.preflight(client)
        for k in range(polls):
            if k:
                if before is not None:
                    before(k)
                server.clock.advance(HOUR)
            done.append(await trader.cycle(client))
            if trader.state.stopped:
                break
        await trader.follower.close_streams()
    return done


def play(trader, server, polls: int, before=None) -> list[list[int]]:
    return asyncio.run(_play(trader, server, polls, before))


def rows(root: Path, sql: str, *args) -> list[dict]:
    conn = sqlite3.connect(DataPaths.at(root).live_journal)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def two_weeks(exported_root, recording, tmp_path_factory):
    """The recording's last two weeks traded live without a break: (root, the
    trader's live status)."""
    root = live_root(exported_root, tmp_path_factory.mktemp("live"), daily_loss_limit=0.0)
    with exchange_at(recording) as server:
        trader = trader_for(root, server)
        done = play(trader, server, BARS)
        status = trader.live
        trader.close()
    assert [t for d in done for t in d] == list(range(BARS))
    return root, status


def test_two_weeks_live_trade_what_the_shadow_trades(two_weeks) -> None:
    """Every trade the shadow made, the live account made: the same symbol and side,
    entered at the same bar, at the same price (the exchange fills a market order at
    the open, as the simulated broker does); exits at the same bar by stop or target
    at the same price, a time-limit or signal exit one bar later at the next open (the
    exchange has no order at a close: the backtest books it at the close). Those exits'
    prices are the one difference between the accounts, so the cash each entry is
    sized from differs by a few tenths of a percent: the quantities within 1%, and
    the final equity too."""
    from asterai.live.ledger import Ledger

    root, status = two_weeks
    conn = sqlite3.connect(DataPaths.at(root).live_journal)
    conn.row_factory = sqlite3.Row
    live = Ledger(conn).trades(START, HOUR)
    conn.close()
    shadow = rows(root, "SELECT * FROM trades ORDER BY entry_t, symbol")
    assert len(shadow) > 10, "too few trades for the comparison to say anything"
    by_key = {(x.symbol, x.entry_t): x for x in live}
    matched = 0
    for s in shadow:
        x = by_key.get((s["symbol"], s["entry_t"]))
        assert x is not None, f"the shadow's trade {s} has no live twin"
        assert x.side == (1 if s["side"] == "long" else -1)
        assert abs(float(x.entry_price) - s["entry_price"]) < 1e-9, (s, x)
        assert abs(float(x.quantity) / s["quantity"] - 1) < 0.01, (s, x)
        assert x.exit_t is not None
        if s["exit_reason"] in ("stop", "target"):
            assert x.exit_t == s["exit_t"], (s, x)
            assert abs(float(x.exit_price) - s["exit_price"]) < 1e-9, (s, x)
        else:
            assert x.exit_t in (s["exit_t"], s["exit_t"] + 1), (s, x)
        matched += 1
    live_only = set(by_key) - {(s["symbol"], s["entry_t"]) for s in shadow}
    assert not [k for k in live_only if by_key[k].exit_t is not None], live_only
    bars = rows(root, "SELECT * FROM live_bars ORDER BY t")
    assert [b["t"] for b in bars] == list(range(BARS))
    assert not any(b["reduce_only"] for b in bars), [
        b["reduce_only"] for b in bars if b["reduce_only"]
    ]
    shadow_end = rows(root, "SELECT equity FROM bars ORDER BY t DESC LIMIT 1")[0]["equity"]
    assert abs(bars[-1]["equity"] / shadow_end - 1) < 0.01
    print(f"{matched} trades matched; final equity live {bars[-1]['equity']:.4f}, "
          f"shadow {shadow_end:.4f}")


def test_every_position_rests_protected_and_the_journal_equals_the_exchange(two_weeks) -> None:
    root, _ = two_weeks
    intents = rows(root, "SELECT * FROM intents")
    assert intents and not [r for r in intents if r["state"] in ("INTENT", "SENT", "UNKNOWN")]
    assert len({r["client_id"] for r in intents}) == len(intents)
    last = rows(root, "SELECT * FROM live_bars ORDER BY t DESC LIMIT 1")[0]
    assert last["differences"] == "[]"
    fills = rows(root, "SELECT * FROM live_fills")
    assert sum(Decimal(f["commission"]) for f in fills) > 0
