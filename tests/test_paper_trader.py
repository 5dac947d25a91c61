"""Paper trading, run for real: the trader follows a replay of the real recording played
forward bar by bar on loopback, trades the exported model's signals and journals every
bar in a real SQLite file; the backtest engine over the same bars from the same state
must do exactly what it did.

The replay's clock is stepped (``clock_speed=0``): each test moves it one bar at a
time, to one second after a bar's close, and the trader polls. The recording's last two
weeks start on 2025-10-01 at 03:00 (the bar whose close the clock first passes) and end
with the bar of 2025-10-15 03:00 (the last closed one). Three symbols list meanwhile
(2ZUSDT, 4USDT, 1000CHEEMSUSDT): the trader follows them from their first bar, as the
batch features count them from there.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FAST_EXCHANGE

from asterai.backtest import kernel
from asterai.config import load_settings
from asterai.data.store import to_epoch_ms
from asterai.exchange.client import AsterClient
from asterai.paths import DataPaths

HOUR = 3_600_000
START = int(pd.Timestamp("2025-10-01T03:00:00Z").value // 1_000_000)  # the first bar traded
LAST = int(pd.Timestamp("2025-10-15T03:00:00Z").value // 1_000_000)  # the recording's last closed
BARS = (LAST - START) // HOUR + 1
#: the trader polls one second after each close
AFTER_CLOSE = 1_000


def paper_root(exported_root: Path, tmp: Path, **paper) -> Path:
    root = tmp / "root"
    shutil.copytree(exported_root, root)
    if paper:
        lines = ["[paper]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in paper.items()]
        (root / "asterai.toml").write_text(
            ((root / "asterai.toml").read_text() + "\n" if (root / "asterai.toml").exists()
             else "") + "\n".join(lines) + "\n"
        )  # fmt: skip
    return root


def replay_at(recording, first_bar_ms: int = START):
    from asterai.exchange.replay import ReplayServer

    return ReplayServer(recording, clock_speed=0, play_from_ms=first_bar_ms + HOUR + AFTER_CLOSE,
                        weight_limit=10**9)  # fmt: skip


def trader_for(root: Path, replay, **overrides):
    from asterai.paper.trader import PaperTrader, prepare

    settings = load_settings(root, base_url=replay.base_url, exchange=FAST_EXCHANGE, **overrides)
    return PaperTrader(prepare(settings), clock_rate=0, retry_s=0.05)


async def _play(trader, replay, bars: int, between=None) -> list[list[int]]:
    """``bars`` polls, the clock moved one bar between them; ``between(k)`` runs before
    the k-th move."""
    settings = trader.plan.settings
    done = []
    async with AsterClient(settings.base_url, settings.exchange) as client:
        for k in range(bars):
            if k:
                if between is not None:
                    between(k)
                replay.clock.advance(HOUR)
            done.append(await trader.cycle(client))
            if trader.state.stopped:
                break
    return done


def play(trader, replay, bars: int, between=None) -> list[list[int]]:
    return asyncio.run(_play(trader, replay, bars, between))


def journal_rows(root: Path, sql: str) -> list[dict]:
    from asterai.paper.journal import Journal

    with Journal.open(DataPaths.at(root).paper_journal, readonly=True) as j:
        return j.query(sql)


def batch_inputs(root: Path, symbols: list[str], start: int, end: int):
    """The backtest's inputs over [start, end]: the collected market through the gate,
    and the exported model's predictions on the batch feature table."""
    from asterai.backtest.inputs import market_inputs, with_predictions
    from asterai.deploy.runtime import OnnxModel

    settings = load_settings(root)
    paths = DataPaths.at(root)
    model = OnnxModel(paths.models("confluence") / "onnx")
    table = pd.read_parquet(paths.features(settings.features.base_interval))
    ms = to_epoch_ms(table["open_time"])
    inside = (ms >= start) & (ms <= end)
    preds = model.predict(table, targets=inside)  # the rows' index order, targets only
    preds = preds.assign(symbol=table["symbol"].astype(str)[inside],
                         open_time=table["open_time"][inside])  # fmt: skip
    preds = preds[preds["symbol"].isin(symbols)]
    market = market_inputs(settings, symbols, start, end)
    return with_predictions(market, preds, start, end)


@pytest.fixture(scope="module")
def two_weeks(exported_root, recording, tmp_path_factory):
    """(root, trader state): the recording's last two weeks traded without a break."""
    # the backtest has no daily loss limit: off here (its own test below)
    root = paper_root(exported_root, tmp_path_factory.mktemp("paper"), daily_loss_limit=0.0)
    with replay_at(recording) as replay:
        trader = trader_for(root, replay)
        done = play(trader, replay, BARS)
        trader.close()
    assert [t for d in done for t in d] == list(range(BARS))
    return root


def test_two_weeks_of_paper_trading_are_the_backtest_over_the_same_bars(two_weeks) -> None:
    root = two_weeks
    bars = journal_rows(root, "SELECT * FROM bars ORDER BY t")
    assert [b["open_ms"] for b in bars] == list(range(START, LAST + 1, HOUR))
    assert not any(b["late"] for b in bars)
    from asterai.paper.journal import Journal

    with Journal.open(DataPaths.at(root).paper_journal, readonly=True) as j:
        symbols = j.account.symbols
        p, tick, step, notional = (
            j.account.params,
            j.account.tick,
            j.account.step,
            j.account.min_notional,
        )
    inputs = batch_inputs(root, symbols, START, LAST)
    assert inputs.symbols == symbols
    trades, rejects, curve, _ = kernel.simulate_nb(
        inputs.open_, inputs.high, inputs.low, inputs.close, inputs.volume, inputs.tradeable,
        inputs.p_long, inputs.p_short, inputs.atr, inputs.funding, tick, step, notional, p,
    )  # fmt: skip
    got = np.array([[b["equity"], b["cash"], b["open_positions"], b["notional"]] for b in bars])
    # the backtest's last bar closes what is open (its data ends); the market goes on
    np.testing.assert_allclose(got[:-1], curve[:-1], rtol=0, atol=1e-9)
    paper = journal_rows(root, "SELECT * FROM trades ORDER BY exit_t, symbol")
    want = trades[trades[:, 4] < BARS - 1]
    assert len(want) > 0, "no trade in two weeks: the comparison would say nothing"
    assert len(paper) == len(want)
    ordered = want[np.lexsort((want[:, 0], want[:, 4]))]
    for row, w in zip(sorted(paper, key=lambda r: (r["exit_t"], symbols.index(r["symbol"]))),
                      ordered, strict=True):  # fmt: skip
        assert (symbols.index(row["symbol"]), row["entry_t"], row["exit_t"]) == (
            int(w[0]),
            int(w[3]),
            int(w[4]),
        )
        np.testing.assert_allclose(
            [row["entry_price"], row["exit_price"], row["quantity"], row["fees"],
             row["funding"], row["pnl"]], w[[5, 6, 7, 8, 9, 10]], rtol=0, atol=1e-9,
        )  # fmt: skip
    # the inputs themselves: every bar's prices, tradeable flags and signals
    stored = pd.DataFrame(journal_rows(root, "SELECT * FROM bar_inputs"))
    ti, ji = stored["t"].to_numpy(), stored["symbol"].to_numpy()
    np.testing.assert_array_equal(stored["close"].to_numpy(dtype=float), inputs.close[ti, ji])
    np.testing.assert_array_equal(stored["tradeable"].to_numpy() == 1, inputs.tradeable[ti, ji])
    np.testing.assert_allclose(stored["p_long"].to_numpy(dtype=float), inputs.p_long[ti, ji],
                               rtol=0, atol=1e-9)  # fmt: skip
    print(f"{len(paper)} trades, final equity {got[-1, 0]:.6f}")
