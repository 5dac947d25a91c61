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
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FAST_EXCHANGE, batch_inputs

from asterai.backtest import kernel
from asterai.config import load_settings
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


def replay_at(recording, first_bar_ms: int = START, streams: bool = False):
    from asterai.exchange.replay import ReplayServer

    return ReplayServer(recording, clock_speed=0, play_from_ms=first_bar_ms + HOUR + AFTER_CLOSE,
                        weight_limit=10**9, streams=streams)  # fmt: skip


def trader_for(root: Path, replay, **overrides):
    from asterai.paper.trader import PaperTrader, prepare

    settings = load_settings(root, base_url=replay.base_url, exchange=FAST_EXCHANGE, **overrides)
    return PaperTrader(prepare(settings), clock_rate=0, retry_s=0.05)


async def _play(trader, replay, polls: int, before=None, after=None) -> list[list[int]]:
    """``polls`` polls: one now, then one after each move of the clock by a bar;
    ``before(k)`` runs before the k-th move, ``after(k)`` after the poll that follows it.
    Each poll's traded bar numbers, until the trader stops."""
    settings = trader.plan.settings
    done = []
    async with AsterClient(settings.base_url, settings.exchange) as client:
        for k in range(polls):
            if k:
                if before is not None:
                    before(k)
                replay.clock.advance(HOUR)
            done.append(await trader.cycle(client))
            if k and after is not None:
                after(k)
            if trader.state.stopped:
                break
        await trader.follower.close_streams()
    return done


def play(trader, replay, polls: int, before=None, after=None) -> list[list[int]]:
    return asyncio.run(_play(trader, replay, polls, before, after))


def journal_rows(root: Path, sql: str) -> list[dict]:
    from asterai.paper.journal import Journal

    with Journal.open(DataPaths.at(root).paper_journal, readonly=True) as j:
        return j.query(sql)


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


def test_the_report_finds_the_engine_and_the_backtest_equal_on_the_same_bars(two_weeks) -> None:
    from asterai.paper.reconcile import write_report

    out = write_report(load_settings(two_weeks))
    assert out.engine_equal and out.engine_max_diff == 0.0
    assert out.batch.startswith("equal"), (out.batch, out.causes)
    assert out.first_equity_difference is None
    assert out.trades_only_paper == out.trades_only_backtest == 0
    folder = DataPaths.at(two_weeks).paper / "report"
    for name in ("metrics.json", "trades.csv", "equity.csv", "reconciliation.json", "report.html",
                 "differences.csv", "rejected_orders.csv"):  # fmt: skip
        assert (folder / name).exists(), name
    assert out.metrics["trades"] > 0


def test_a_paused_clock_opens_nothing_reports_stale_data_then_trades_the_missed_bars_late(
    two_weeks, exported_root, recording, tmp_path
) -> None:
    from asterai.paper.status import status

    root = paper_root(exported_root, tmp_path, daily_loss_limit=0.0)
    paused = []
    with replay_at(recording) as replay:
        trader = trader_for(root, replay)
        play(trader, replay, 6)  # bars 0..5
        replay.clock.pause()

        def during(k: int) -> None:
            paused.append(status(DataPaths.at(root).paper_journal).stale)

        # three bars close on the exchange's clock while its feed is stalled
        play(trader, replay, 4, after=during)
        assert trader.journal.last_bar()["t"] == 5  # nothing traded meanwhile
        assert trader.state.stale
        replay.clock.resume()
        done = play(trader, replay, 1)
        trader.close()
    assert done == [[6, 7, 8]]  # the missed bars, in order, at once
    assert status(DataPaths.at(root).paper_journal).stale is False
    assert paused[-1] is True
    bars = journal_rows(root, "SELECT t, late FROM bars ORDER BY t")
    assert [b["t"] for b in bars] == list(range(9))
    assert [b["late"] for b in bars] == [0] * 6 + [1, 1, 0]  # the newest came within the delay
    # the late bars opened nothing: no signal was acted on, no entry decided at their close
    late_inputs = journal_rows(root, "SELECT * FROM bar_inputs WHERE t IN (6, 7)")
    assert late_inputs and all(r["p_long"] is None and r["p_short"] is None for r in late_inputs)
    assert not journal_rows(root, "SELECT * FROM orders WHERE t IN (6, 7) AND kind = 'entry'")
    kinds = [e["kind"] for e in journal_rows(root, "SELECT kind FROM events ORDER BY seq")]
    assert kinds.index("stale") < kinds.index("resumed")
    # up to the stall, the account is the uninterrupted one's
    want = journal_rows(two_weeks, "SELECT equity FROM bars WHERE t < 6 ORDER BY t")
    got = journal_rows(root, "SELECT equity FROM bars WHERE t < 6 ORDER BY t")
    assert got == want
    # and the report names the cause of every difference from the backtest: the late bars
    from asterai.paper.reconcile import write_report

    out = write_report(load_settings(root))
    assert out.engine_equal
    differs = out.differences
    assert len(differs) and set(differs["t"]) <= {6, 7, 8, 9}
    signal_rows = differs[differs["input"].isin(["p_long", "p_short"])]
    assert set(signal_rows["t"]) == {6, 7}
    assert set(signal_rows["cause"]) == {
        "late bar (stale data): seen after its close, signals not acted on"
    }


def test_a_restart_after_a_long_stop_trades_every_missed_bar_with_its_own_prices(
    exported_root, recording, tmp_path
) -> None:
    """Down for 100 bars, then restarted with a warm-up of only the newest 48 bars (as a
    month's stop outruns the 750 a real warm-up holds): the older missed bars are
    fetched from the exchange, so every missed bar is traded, late, with its own prices
    and point-in-time tradeable flag, and the account through the gap is the backtest's
    over the same bars with those bars' signals unused."""
    from asterai.paper.journal import Journal

    root = paper_root(exported_root, tmp_path, daily_loss_limit=0.0)
    down = 100
    with replay_at(recording) as replay:
        trader = trader_for(root, replay)
        play(trader, replay, 3)  # bars 0..2
        trader.close()
        replay.clock.advance(down * HOUR)  # bars 3..102 close while it is down
        again = trader_for(root, replay)
        again.follower.warm_bars = 48
        done = play(again, replay, 1)
        again.close()
    last = 2 + down
    assert done == [list(range(3, last + 1))]
    bars = journal_rows(root, "SELECT t, late, equity, cash, open_positions, notional "
                              "FROM bars ORDER BY t")  # fmt: skip
    assert [b["t"] for b in bars] == list(range(last + 1))
    # seen after the restart: late, but the newest, seen a second after its close
    assert [b["late"] for b in bars] == [0] * 3 + [1] * (down - 1) + [0]
    with Journal.open(DataPaths.at(root).paper_journal, readonly=True) as j:
        symbols, p = j.account.symbols, j.account.params
        tick, step, notional = j.account.tick, j.account.step, j.account.min_notional
    inputs = batch_inputs(root, symbols, START, LAST)
    assert inputs.symbols == symbols
    stored = pd.DataFrame(journal_rows(root, "SELECT * FROM bar_inputs WHERE t > 2"))
    ti, ji = stored["t"].to_numpy(), stored["symbol"].to_numpy()
    # every symbol's bar of the gap is there, none invented
    assert len(stored) == int(np.isfinite(inputs.close[3 : last + 1]).sum())
    for name in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(stored[name].to_numpy(dtype=float),
                                      getattr(inputs, "open_" if name == "open" else name)[ti, ji],
                                      err_msg=name)  # fmt: skip
    np.testing.assert_array_equal(stored["tradeable"].to_numpy() == 1, inputs.tradeable[ti, ji])
    # the engine over the backtest's inputs, the late bars' signals unused
    p_long, p_short = inputs.p_long.copy(), inputs.p_short.copy()
    p_long[3:last], p_short[3:last] = np.nan, np.nan
    _, _, curve, _ = kernel.simulate_nb(
        inputs.open_, inputs.high, inputs.low, inputs.close, inputs.volume, inputs.tradeable,
        p_long, p_short, inputs.atr, inputs.funding, tick, step, notional, p,
    )  # fmt: skip
    got = np.array([[b["equity"], b["cash"], b["open_positions"], b["notional"]] for b in bars])
    np.testing.assert_allclose(got, curve[: last + 1], rtol=0, atol=1e-9)
    # positions were carried into the gap and closed inside it, on its own bars' prices
    assert bars[2]["open_positions"] > 0
    assert journal_rows(root, f"SELECT * FROM trades WHERE t BETWEEN 3 AND {last - 1}")


def test_a_symbols_late_bar_is_waited_for_then_the_bar_is_traded_without_it(
    two_weeks, exported_root, recording, tmp_path
) -> None:
    """The exchange publishes BTCUSDT's bar late. Bar 5's comes 20 s after the others':
    the bar waits for it (``straggler_wait_s``, 30 s) and is then traded whole, as the
    uninterrupted account traded it. Bar 7's comes 90 s late: after the wait the bar is
    traded without BTCUSDT, the journal names it, and its bar, when it comes, is not
    traded again."""
    root = paper_root(exported_root, tmp_path, daily_loss_limit=0.0)
    with replay_at(recording) as replay:
        trader = trader_for(root, replay)
        assert trader.wait_ms == 30_000
        play(trader, replay, 5)  # bars 0..4

        def poll(move_ms: int) -> list[int]:
            replay.clock.advance(move_ms)
            return play(trader, replay, 1)[0]

        replay.clock.lag("BTCUSDT", 20_000)
        assert poll(HOUR) == []  # bar 5 closed a second ago: waiting for BTCUSDT
        assert poll(25_000) == [5]  # its bar has come: the whole bar traded
        replay.clock.lag("BTCUSDT", 0)
        assert poll(HOUR - 25_000) == [6]
        replay.clock.lag("BTCUSDT", 90_000)
        assert poll(HOUR) == []
        assert poll(20_000) == []  # 21 s: still within the wait
        assert poll(15_000) == [7]  # 36 s: traded without it
        assert poll(60_000) == []  # 96 s: BTCUSDT's bar 7 comes, and is not traded
        replay.clock.lag("BTCUSDT", 0)
        assert poll(HOUR - 95_000) == [8]
        trader.close()
    bars = journal_rows(root, "SELECT * FROM bars ORDER BY t")
    assert [b["t"] for b in bars] == list(range(9)) and not any(b["late"] for b in bars)
    keep = "t, equity, cash, open_positions, notional, symbols_with_bar"
    want = journal_rows(two_weeks, f"SELECT {keep} FROM bars WHERE t <= 6 ORDER BY t")
    assert journal_rows(root, f"SELECT {keep} FROM bars WHERE t <= 6 ORDER BY t") == want
    whole = journal_rows(two_weeks, "SELECT symbols_with_bar FROM bars WHERE t = 7")[0]
    assert bars[7]["symbols_with_bar"] == whole["symbols_with_bar"] - 1
    from asterai.paper.journal import Journal

    with Journal.open(DataPaths.at(root).paper_journal, readonly=True) as j:
        btc = j.account.symbols.index("BTCUSDT")
    assert not journal_rows(root, f"SELECT * FROM bar_inputs WHERE t = 7 AND symbol = {btc}")
    assert journal_rows(root, f"SELECT * FROM bar_inputs WHERE t = 8 AND symbol = {btc}")
    missing = journal_rows(root, "SELECT detail FROM events WHERE kind = 'missing bar'")
    assert len(missing) == 1 and "BTCUSDT" in missing[0]["detail"]
    # the report names the cause of BTCUSDT's differing bar 7
    from asterai.paper.reconcile import write_report

    out = write_report(load_settings(root))
    assert out.engine_equal
    prices = out.differences[out.differences["input"] == "close"]
    assert set(zip(prices["t"], prices["symbol"], strict=True)) == {(7, "BTCUSDT")}
    assert prices["cause"].str.startswith("no bar when traded").all()


def test_bars_pushed_by_the_kline_streams_trade_as_polled_ones_and_a_dropped_stream_loses_none(
    two_weeks, exported_root, recording, tmp_path
) -> None:
    """With the replay's websocket kline streams, each closed bar comes pushed, without
    a klines request; when the exchange drops the streams, the bars meanwhile come from
    REST and the reopened streams go on: every bar once, the account the polled one's."""
    # on a stepped clock the streams are waited for this long before REST is asked
    root = paper_root(exported_root, tmp_path, daily_loss_limit=0.0, poll_delay_s=0.5)
    polls = 14
    with replay_at(recording, streams=True) as replay:
        trader = trader_for(root, replay, ws_url=replay.ws_url)
        f = trader.follower
        klines = []

        async def go() -> list[list[int]]:
            settings = trader.plan.settings
            async with AsterClient(settings.base_url, settings.exchange) as client:
                done = [await trader.cycle(client)]  # the warm-up (REST), bar 0
                while not (f.streams and f.streams.live):
                    await asyncio.sleep(0.01)
                for k in range(1, polls):
                    if k == 7:
                        assert replay.drop_streams() == 1  # before bar 7 closes
                    before = replay.stats.paths.get("/fapi/v1/klines", 0)
                    replay.clock.advance(HOUR)
                    done.append(await trader.cycle(client))
                    klines.append(replay.stats.paths.get("/fapi/v1/klines", 0) - before)
                    if k == 7:  # reopened before the next bar
                        while not f.streams.live:
                            await asyncio.sleep(0.01)
                await f.close_streams()
            return done

        done = asyncio.run(go())
        trader.close()
    assert [t for d in done for t in d] == list(range(polls))
    # pushed bars needed no klines request but for the symbols not listed yet (their
    # first bar is asked from REST); the bar after the drop was asked from REST for
    # every symbol, then the reopened streams pushed again
    assert f.unlisted == {"2ZUSDT", "4USDT"}
    assert klines[:6] == [2] * 6, klines
    assert klines[6] >= 15 - 2, klines
    assert klines[7:] == [2] * (polls - 8), klines
    keep = "t, late, equity, cash, open_positions, notional, symbols_with_bar, signals"
    sql = f"SELECT {keep} FROM bars WHERE t < {polls} ORDER BY t"
    assert journal_rows(root, sql) == journal_rows(two_weeks, sql)
    for table in ("trades", "fills", "orders", "positions", "bar_inputs"):
        sql = f"SELECT * FROM {table} WHERE t < {polls} ORDER BY t, symbol"
        assert journal_rows(root, sql) == journal_rows(two_weeks, sql), table


def test_the_kill_switch_flattens_at_the_next_open_and_stops(
    two_weeks, exported_root, recording, tmp_path
) -> None:
    from asterai.paper.trader import PaperStopped

    root = paper_root(exported_root, tmp_path, daily_loss_limit=0.0)
    paths = DataPaths.at(root)
    with replay_at(recording) as replay:
        trader = trader_for(root, replay)

        def switch(k: int) -> None:
            if k == 3:  # after bar 2 is journaled: the next poll finds the file
                paths.paper_kill.write_text("")

        done = play(trader, replay, 10, switch)
        trader.close()
        assert trader.state.stopped
    # bar 3 closed before the request; bar 4 opened within the delay after it: flattened there
    assert [t for d in done for t in d] == [0, 1, 2, 3, 4]
    bars = journal_rows(root, "SELECT * FROM bars ORDER BY t")
    assert [b["kill"] for b in bars] == [0, 0, 0, 0, 1]
    held = journal_rows(root, "SELECT * FROM positions WHERE t = 3")
    assert held and bars[4]["killed"] == len(held) and bars[4]["open_positions"] == 0
    closed = journal_rows(root, "SELECT * FROM trades WHERE t = 4")
    assert {r["symbol"] for r in closed} == {r["symbol"] for r in held}
    assert {r["exit_reason"] for r in closed} == {"kill switch"}
    from asterai.paper.journal import Journal

    with Journal.open(paths.paper_journal, readonly=True) as j:
        symbols, p, tick = j.account.symbols, j.account.params, j.account.tick
    inputs = {r["symbol"]: r for r in journal_rows(root, "SELECT * FROM bar_inputs WHERE t = 4")}
    for r in closed:  # at bar 4's open, with the slippage against the position
        k = symbols.index(r["symbol"])
        want = kernel.market_fill(inputs[k]["open"], r["side"] == "short", p.slippage, tick[k])
        assert r["exit_price"] == want
    # the entries decided at bar 3's close were cancelled, not filled
    entries = journal_rows(root, "SELECT * FROM orders WHERE t = 3 AND kind = 'entry'")
    cancelled = journal_rows(root, "SELECT * FROM rejections WHERE t = 4 AND "
                                   "reason = 'cancelled by the kill switch'")  # fmt: skip
    assert len(cancelled) == len(entries)
    assert not paths.paper_kill.exists()  # done: the file is removed
    again = _cli(root, "--kill")  # nothing left to stop
    assert again.exit_code == 0 and "already stopped" in again.output, again.output
    assert not paths.paper_kill.exists()
    # the journal is final: a new start refuses to continue it
    with replay_at(recording) as replay, pytest.raises(PaperStopped, match="kill switch"):
        trader_for(root, replay)
    # until the kill, it was the uninterrupted account
    want = journal_rows(two_weeks, "SELECT equity FROM bars WHERE t < 4 ORDER BY t")
    assert journal_rows(root, "SELECT equity FROM bars WHERE t < 4 ORDER BY t") == want


def test_a_daily_loss_limit_stops_new_entries_for_the_rest_of_the_day(
    exported_root, recording, tmp_path
) -> None:
    root = paper_root(exported_root, tmp_path, daily_loss_limit=0.001)
    with replay_at(recording) as replay:
        trader = trader_for(root, replay)
        play(trader, replay, 48)
        trader.close()
    bars = journal_rows(root, "SELECT * FROM bars ORDER BY t")
    day = [b["open_ms"] // 86_400_000 for b in bars]
    # each UTC day's first bar sets the floor from the previous bar's equity
    for k, b in enumerate(bars):
        if k == 0 or day[k] != day[k - 1]:
            before = 50.0 if k == 0 else bars[k - 1]["equity"]
            assert b["new_floor"] == pytest.approx(before * 0.999, rel=1e-12)
        else:
            assert b["new_floor"] is None
    crossed = [k for k, b in enumerate(bars)
               if b["equity"] < [x for x in bars[: k + 1] if x["new_floor"] is not None][-1]["new_floor"]]  # fmt: skip
    assert crossed, "no close fell below its day's floor: the test says nothing"
    first = crossed[0]
    paused_day = day[first]
    later = [b["t"] for k, b in enumerate(bars) if k > first and day[k] == paused_day]
    assert later, "the floor was crossed at the day's last bar: the pause says nothing"
    marks = ",".join(map(str, later))
    assert not journal_rows(root, f"SELECT * FROM orders WHERE kind = 'entry' AND t IN ({marks})")
    # the pause is visible where signals wanted an entry
    paused = journal_rows(root, "SELECT * FROM rejections WHERE reason LIKE 'new entries paused%'")
    # each refused at a close (``bar``) after one below that day's floor
    assert paused
    assert all(any(k <= r["bar"] and day[k] == day[r["bar"]] for k in crossed) for r in paused)
    # exits go on during the pause
    exits = journal_rows(root, f"SELECT * FROM fills WHERE kind = 'exit' AND t > {first}")
    assert exits or not journal_rows(root, f"SELECT * FROM positions WHERE t = {first}")


def _cli(root: Path, *args: str):
    from click.testing import CliRunner

    from asterai.cli import main

    return CliRunner().invoke(main, ["paper", "--data-root", str(root), *args])


@pytest.mark.parametrize(
    ("change", "args", "says"),
    [
        ("no_model", (), "no exported confluence model"),
        ("features", (), "trained on features of 1h with 4h, 1d"),
        (None, ("--symbols", "BTCUSDT,FOOUSDT"), "FOOUSDT not in the model's universe"),
        (None, ("--model", "aster-native", "--max-delay", "3600"), "max_delay_s = 3600"),
        (None, ("--max-delay", "20"), "straggler_wait_s = 30 is not below"),
    ],
)
def test_bad_settings_are_refused_with_exit_2_and_nothing_written(
    exported_root, tmp_path, change, args, says
) -> None:
    root = paper_root(exported_root, tmp_path)
    if change == "no_model":
        shutil.rmtree(DataPaths.at(root).models("confluence") / "onnx")
    if change == "features":
        with (root / "asterai.toml").open("a") as fh:
            fh.write('\n[features]\nhigher_intervals = ["4h"]\n')
    result = _cli(root, "--base-url", "http://127.0.0.1:9", *args)
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert not DataPaths.at(root).paper.exists()  # nothing written


def test_the_strategy_traded_is_the_exports_whatever_the_settings_say(
    exported_root, tmp_path
) -> None:
    """Settings with another threshold, sides, barriers and horizon than the model was
    trained with (a `train --params` export paper-traded without `--params`): the
    account trades the export's, as `asterai serve` decides by them, and names each
    setting it replaced."""
    import json

    from asterai.paper.trader import prepare

    root = paper_root(exported_root, tmp_path)
    with (root / "asterai.toml").open("a") as fh:
        fh.write('\n[train]\nthreshold = 0.7\n[strategy]\nsides = "short"\n'
                 "[features]\ntp_atr = 3.5\nsl_atr = 1.25\nlabel_horizon = 12\n")  # fmt: skip
    settings = load_settings(root, base_url="http://127.0.0.1:9")
    assert settings.train.threshold == 0.7 and settings.features.label_horizon == 12
    folder = DataPaths.at(root).models("confluence") / "onnx"
    manifest = json.loads((folder / "manifest.json").read_text())
    label = manifest["label"]
    plan = prepare(settings)
    p = plan.account.params
    assert p.threshold == manifest["threshold"] != 0.7
    assert (p.allow_long, p.allow_short) == {
        "both": (True, True), "long": (True, False), "short": (False, True)
    }[manifest["sides"]]  # fmt: skip
    assert manifest["sides"] != "short"
    assert (p.tp_atr, p.sl_atr, p.horizon) == (
        label["take_profit_atr"], label["stop_atr"], label["horizon_bars"]
    )
    assert plan.settings.train.threshold == manifest["threshold"]
    notes = "; ".join(plan.notes)
    for name, value, here in [
        ("train.threshold", manifest["threshold"], 0.7),
        ("strategy.sides", manifest["sides"], "short"),
        ("features.tp_atr", label["take_profit_atr"], 3.5),
        ("features.sl_atr", label["stop_atr"], 1.25),
        ("features.label_horizon", label["horizon_bars"], 12),
    ]:
        assert f"{name} = {value!r} from the export ({here!r} in the settings)" in notes, notes
    # with the settings it was trained with, nothing is replaced
    assert not any("from the export" in n for n in prepare(load_settings(exported_root)).notes)


def test_a_journal_of_another_account_is_refused_and_left_as_it_was(
    exported_root, recording, tmp_path
) -> None:
    root = paper_root(exported_root, tmp_path, daily_loss_limit=0.0)
    with replay_at(recording) as replay:
        trader = trader_for(root, replay)
        play(trader, replay, 3)
        trader.close()
    path = DataPaths.at(root).paper_journal
    before = path.read_bytes()
    result = _cli(root, "--base-url", "http://127.0.0.1:9", "--daily-loss-limit", "0.1")
    assert result.exit_code == 2, result.output
    assert "another account's journal" in result.output and "daily_loss_limit" in result.output
    assert path.read_bytes() == before
    shown = _cli(root, "--status")
    assert shown.exit_code == 0 and "3 bars (0 late)" in shown.output, shown.output


def _journaled(root: Path) -> int:
    """The journal's last bar number (-1: none yet), read as a second process would."""
    import sqlite3

    path = DataPaths.at(root).paper_journal
    if not path.exists():
        return -1
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT MAX(t) FROM bars").fetchone()
    except sqlite3.OperationalError:  # created, the schema not yet committed
        return -1
    return -1 if row[0] is None else int(row[0])


def _start(root: Path, url: str):
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "asterai.cli", "paper", "--data-root", str(root), "--base-url", url,
         "--clock-rate", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip


def _wait_for(root: Path, t: int, proc, seconds: float = 120) -> None:
    import time

    deadline = time.monotonic() + seconds
    while _journaled(root) < t:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode()[-3000:])
        assert time.monotonic() < deadline, f"bar {t} not journaled"
        time.sleep(0.02)


def test_kill_9_mid_run_then_a_restart_loses_nothing_and_counts_nothing_twice(
    two_weeks, exported_root, recording, tmp_path
) -> None:
    import random
    import signal
    import time

    root = paper_root(exported_root, tmp_path, daily_loss_limit=0.0)
    last = 24
    rng = random.Random(7)
    with replay_at(recording) as replay:
        proc = _start(root, replay.base_url)
        kills = 0
        try:
            for t in range(last + 1):
                if t:
                    replay.clock.advance(HOUR)
                if t in (8, 16):  # killed at some instant while bar t is being traded
                    time.sleep(rng.uniform(0.0, 0.3))
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(30)
                    kills += 1
                    proc = _start(root, replay.base_url)
                _wait_for(root, t, proc)
        finally:
            proc.kill()
            proc.wait(30)
    assert kills == 2
    bars = journal_rows(root, "SELECT t, late, equity, cash, open_positions FROM bars ORDER BY t")
    assert [b["t"] for b in bars] == list(range(last + 1))  # every bar exactly once
    assert not any(b["late"] for b in bars)  # each restart came within the bar's delay
    want = journal_rows(two_weeks, f"SELECT t, late, equity, cash, open_positions FROM bars "
                                   f"WHERE t <= {last} ORDER BY t")  # fmt: skip
    assert bars == want  # the uninterrupted account, to the bit
    for table in ("trades", "fills", "orders", "funding", "positions"):
        sql = f"SELECT * FROM {table} WHERE t <= {last} ORDER BY t, symbol"
        assert journal_rows(root, sql) == journal_rows(two_weeks, sql), table
    kinds = [e["kind"] for e in journal_rows(root, "SELECT kind FROM events ORDER BY seq")]
    assert kinds.count("restart") == 2


def test_sigterm_is_a_stop_not_the_kill_switch_and_a_restart_continues_the_account(
    two_weeks, exported_root, recording, tmp_path
) -> None:
    """`docker stop`, `systemctl restart`, a new revision: SIGTERM to a real `asterai
    paper` mid-run exits 0 at once, the journal whole and its positions open; the next
    start continues the account to the uninterrupted run's, to the bit."""
    import random
    import signal
    import time

    from asterai.paper.journal import Journal

    root = paper_root(exported_root, tmp_path, daily_loss_limit=0.0)
    last, at = 14, 8
    rng = random.Random(11)
    with replay_at(recording) as replay:
        proc = _start(root, replay.base_url)
        try:
            for t in range(last + 1):
                if t:
                    replay.clock.advance(HOUR)
                if t == at:  # at some instant while bar t is fetched or traded
                    time.sleep(rng.uniform(0.0, 0.3))
                    began = time.monotonic()
                    proc.send_signal(signal.SIGTERM)
                    out, _ = proc.communicate(timeout=30)
                    text = out.decode()
                    assert proc.returncode == 0, text[-3000:]
                    assert time.monotonic() - began < 15, text[-3000:]
                    assert "SIGTERM: stopping" in text and "kept in the journal" in text
                    stopped = _journaled(root)
                    assert stopped in (at - 1, at)
                    with Journal.open(DataPaths.at(root).paper_journal) as j:
                        j.rebuild()  # whole: every bar replays to the equity it recorded
                    sql = (f"SELECT symbol, side, quantity, stop, target FROM positions "
                           f"WHERE t = {stopped} ORDER BY symbol")  # fmt: skip
                    held = journal_rows(root, sql)
                    assert held and held == journal_rows(two_weeks, sql)  # still open
                    assert not journal_rows(root, "SELECT * FROM bars WHERE kill = 1")
                    assert not DataPaths.at(root).paper_kill.exists()
                    proc = _start(root, replay.base_url)
                _wait_for(root, t, proc)
        finally:
            proc.kill()
            proc.wait(30)
    keep = "t, late, equity, cash, open_positions, notional, kill"
    bars = journal_rows(root, f"SELECT {keep} FROM bars ORDER BY t")
    assert [b["t"] for b in bars] == list(range(last + 1))  # every bar exactly once
    assert bars == journal_rows(two_weeks, f"SELECT {keep} FROM bars WHERE t <= {last} "
                                           "ORDER BY t")  # fmt: skip
    for table in ("trades", "fills", "orders", "funding", "positions"):
        sql = f"SELECT * FROM {table} WHERE t <= {last} ORDER BY t, symbol"
        assert journal_rows(root, sql) == journal_rows(two_weeks, sql), table
    events = journal_rows(root, "SELECT kind, detail FROM events ORDER BY seq")
    assert [e["kind"] for e in events].count("restart") == 1
    assert {"kind": "stop", "detail": "stopped"} in events
    assert not [e for e in events if e["kind"].startswith("kill")]


@pytest.mark.parametrize("where", ["write_bar", "follow"])
def test_an_unexpected_error_is_counted_retried_and_the_bar_traded_once(
    two_weeks, exported_root, recording, tmp_path, caplog, where
) -> None:
    """The trader's own loop: a RuntimeError once, where a bar is journaled (after the
    broker applied it: the bar must be redone from the journal, not applied twice) or
    where the market is followed (an onnxruntime error, a malformed field). It is
    logged with its traceback, counted, journaled, retried after the backoff; every
    bar is traded exactly once and the account is the uninterrupted one's."""
    import logging

    from asterai.deploy.follow import Follower
    from asterai.paper.journal import Journal
    from asterai.paper.status import status
    from asterai.paper.trader import PaperTrader, prepare

    root = paper_root(exported_root, tmp_path, daily_loss_limit=0.0)
    last, broken = 6, 3
    raised = []
    if where == "write_bar":
        real = Journal.write_bar

        def failing(self, bar, *args, **kwargs):
            if bar.t == broken and not raised:
                raised.append(bar.t)
                raise RuntimeError("injected: the bar's write failed")
            return real(self, bar, *args, **kwargs)

        target = (Journal, "write_bar", failing)
    else:
        real_follow = Follower.follow

        async def failing(self, *args, **kwargs):
            got = await real_follow(self, *args, **kwargs)
            if int(self.live.newest_time()) == START + broken * HOUR and not raised:
                raised.append(broken)
                raise RuntimeError("injected: a malformed field")
            return got

        target = (Follower, "follow", failing)
    caplog.set_level(logging.WARNING, logger="asterai.paper")

    async def go(replay) -> PaperTrader:
        settings = load_settings(root, base_url=replay.base_url, exchange=FAST_EXCHANGE)
        trader = PaperTrader(prepare(settings), clock_rate=0, retry_s=0.05,
                             backoff_s=(0.05, 0.2))  # fmt: skip
        stop = asyncio.Event()
        work = asyncio.create_task(trader.run(stop))
        for t in range(last + 1):
            if t:
                replay.clock.advance(HOUR)
            deadline = asyncio.get_running_loop().time() + 60
            while _journaled(root) < t:
                assert not work.done(), work.exception()
                assert asyncio.get_running_loop().time() < deadline, f"bar {t} not journaled"
                await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(work, 30)
        return trader

    with pytest.MonkeyPatch.context() as mp, replay_at(recording) as replay:
        mp.setattr(*target)
        trader = asyncio.run(go(replay))
        trader.close()
    assert raised == [broken]
    assert trader.state.errors.count == 1 and trader.state.errors.last_type == "RuntimeError"
    first = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(first) == 1 and first[0].exc_info and "RuntimeError" in first[0].getMessage()
    keep = "t, late, equity, cash, open_positions, notional, signals"
    bars = journal_rows(root, f"SELECT {keep} FROM bars ORDER BY t")
    assert [b["t"] for b in bars] == list(range(last + 1))  # each bar once, none skipped
    assert bars == journal_rows(two_weeks, f"SELECT {keep} FROM bars WHERE t <= {last} "
                                           "ORDER BY t")  # fmt: skip
    for table in ("trades", "fills", "orders", "positions"):
        sql = f"SELECT * FROM {table} WHERE t <= {last} ORDER BY t, symbol"
        assert journal_rows(root, sql) == journal_rows(two_weeks, sql), table
    errors = journal_rows(root, "SELECT detail FROM events WHERE kind = 'error'")
    why = "the bar's write failed" if where == "write_bar" else "a malformed field"
    assert [e["detail"] for e in errors] == [f"RuntimeError: injected: {why}"]
    shown = status(DataPaths.at(root).paper_journal)
    assert shown.errors == 1 and shown.last_error_type == "RuntimeError"
    assert any(line.startswith("errors: 1 caught and retried") for line in shown.lines())


def test_a_kill_switch_asked_before_a_crash_still_flattens_at_the_next_open(
    exported_root, recording, tmp_path
) -> None:
    """The KILL file found, then the process killed before the next bar: the request
    is journaled at once, and the restarted trader applies it."""
    root = paper_root(exported_root, tmp_path, daily_loss_limit=0.0)
    with replay_at(recording) as replay:
        trader = trader_for(root, replay)
        play(trader, replay, 3)  # bars 0..2
        trader.request_kill("file data/paper/KILL")
        trader.close()  # gone before bar 3
        replay.clock.advance(HOUR)
        again = trader_for(root, replay)
        done = play(again, replay, 5)
        again.close()
    assert done == [[3]] and again.state.stopped
    bars = journal_rows(root, "SELECT t, kill, open_positions FROM bars ORDER BY t")
    assert [b["kill"] for b in bars] == [0, 0, 0, 1] and bars[-1]["open_positions"] == 0
    assert bars[2]["open_positions"] > 0


def test_asterai_paper_kill_with_no_trader_running_flattens_at_the_next_start(
    exported_root, recording, tmp_path
) -> None:
    """`asterai paper --kill` while no trader runs writes the KILL file; the next start
    trades the bars missed meanwhile, then flattens at the first open after it and
    stops. Without an account there is nothing to kill."""
    paths = DataPaths.at(paper_root(exported_root, tmp_path, daily_loss_limit=0.0))
    root = paths.root
    none = _cli(root, "--kill")
    assert none.exit_code != 0 and "no paper account here" in none.output, none.output
    assert not paths.paper_kill.exists()
    with replay_at(recording) as replay:
        trader = trader_for(root, replay)
        play(trader, replay, 3)  # bars 0..2
        trader.close()
        asked = _cli(root, "--kill")
        assert asked.exit_code == 0 and "kill switch asked" in asked.output, asked.output
        assert paths.paper_kill.exists()
        replay.clock.advance(HOUR)  # bar 3 closes while none runs
        again = trader_for(root, replay)
        done = play(again, replay, 5)
        again.close()
    assert done == [[3], [4]] and again.state.stopped  # bar 4 opened after the start
    bars = journal_rows(root, "SELECT t, kill, open_positions FROM bars ORDER BY t")
    assert [b["kill"] for b in bars] == [0, 0, 0, 0, 1] and bars[-1]["open_positions"] == 0
    assert not paths.paper_kill.exists()


def test_asterai_paper_keeps_pace_with_a_replay_played_at_its_clock_rate(
    exported_root, recording, tmp_path
) -> None:
    """``asterai replay --speed 600`` and ``asterai paper --clock-rate 600 --ws-url``, two
    processes as a user runs them: bars close every 6 s, each is pushed, traded on time
    and journaled once, in order; `asterai paper --kill` flattens at the next open and
    the trader stops."""
    import os
    import re
    import subprocess
    import sys
    import time

    MARGIN_S = 1800.0
    # The point here is two processes working together, not speed (bench/paper.py
    # measures that): at 600x the default 120 s delay is 0.2 s of real time, which a
    # loaded 2-core machine can miss, so the delay (and the grace before the data counts
    # as stale) is 1,800 exchange seconds: 3 s of real time.
    root = paper_root(exported_root, tmp_path, daily_loss_limit=0.0, max_delay_s=MARGIN_S,
                      grace_s=MARGIN_S)  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    play_from = pd.Timestamp(START + HOUR + AFTER_CLOSE, unit="ms", tz="UTC").isoformat()
    replay = subprocess.Popen(
        [sys.executable, "-m", "asterai.cli", "replay", "--data", str(recording.folder),
         "--port", "0", "--play-from", play_from, "--speed", "600"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )  # fmt: skip
    trader = None
    try:
        urls = {}
        for line in replay.stdout:
            if m := re.search(r"serving at (http://\S+)", line):
                urls["rest"] = m.group(1)
            if m := re.search(r"kline streams at (ws://\S+)", line):
                urls["ws"] = m.group(1)
                break
        trader = subprocess.Popen(
            [sys.executable, "-m", "asterai.cli", "paper", "--data-root", str(root),
             "--base-url", urls["rest"], "--ws-url", urls["ws"], "--clock-rate", "600"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        first = -1
        deadline = time.monotonic() + 120
        while _journaled(root) < 0:
            assert trader.poll() is None, trader.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no bar journaled"
            time.sleep(0.05)
        first = _journaled(root)
        _wait_for(root, first + 4, trader, seconds=90)
        asked = _cli(root, "--kill")  # the kill switch, from another command
        assert asked.exit_code == 0 and "kill switch asked" in asked.output, asked.output
        out, _ = trader.communicate(timeout=60)
        assert trader.returncode == 0, out.decode()[-3000:]
        assert "kill switch flattened" in out.decode()
    finally:
        for proc in (trader, replay):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(30)
    bars = journal_rows(root, "SELECT * FROM bars ORDER BY t")
    opens = [b["open_ms"] for b in bars]
    assert opens == list(range(opens[0], opens[0] + len(bars) * HOUR, HOUR))  # once, in order
    assert bars[-1]["kill"] == 1 and bars[-1]["open_positions"] == 0
    # every bar after the first traded within the delay of its close; the first, the
    # warm-up's, is late when the warm-up took over 3 s (the delay in real time)
    assert not any(b["late"] for b in bars[1:]), [(b["t"], b["late"]) for b in bars]
    for b in bars:
        close = b["open_ms"] + HOUR - 1
        after = b["seen_ms"] - close
        assert after >= 0
        # late by when it was traded (seen in time, then traded late: a loaded machine)
        if b["late"]:
            assert max(b["seen_ms"], b["committed_ms"]) - close > MARGIN_S * 1000, b
        else:
            assert after <= MARGIN_S * 1000, b
        assert b["signals"] == 0 or not b["late"]


def test_a_failing_cycle_waits_its_retry_even_while_bars_are_pushed(
    exported_root, recording, tmp_path
) -> None:
    """The trader's own loop with the streams on: once warmed up, every cycle fails (as
    under an IP ban) while the exchange goes on pushing bars the failed cycles never
    take. The trader retries every ``retry_s``; it does not spin on those pushes (the
    200-symbol soak logged 1.8 million retries in 8 minutes before)."""
    from asterai.exchange.errors import TemporaryError
    from asterai.exchange.replay import ReplayServer
    from asterai.paper.trader import PaperTrader, prepare

    speed, retry_s = 600.0, 0.5
    root = paper_root(exported_root, tmp_path, daily_loss_limit=0.0)
    with ReplayServer(recording, clock_speed=speed, play_from_ms=START + HOUR + AFTER_CLOSE,
                      weight_limit=10**9, streams=True) as replay:  # fmt: skip
        settings = load_settings(root, base_url=replay.base_url, ws_url=replay.ws_url,
                                 exchange=FAST_EXCHANGE)  # fmt: skip
        trader = PaperTrader(prepare(settings), clock_rate=speed, retry_s=retry_s)
        real, calls = trader.cycle, []

        async def failing(client, stop=None):
            calls.append(time.monotonic())
            if len(calls) == 1:
                return await real(client, stop)  # the warm-up, then the streams open
            raise TemporaryError("the exchange keeps failing (injected by the test)")

        trader.cycle = failing

        async def go() -> int:
            stop = asyncio.Event()
            work = asyncio.create_task(trader.run(stop))
            deadline = time.monotonic() + 120
            f = trader.follower
            while f.streams is None or f.streams.state.pushed == 0 or len(calls) < 2:
                assert not work.done(), work.exception()
                assert time.monotonic() < deadline, "no bar was pushed"
                await asyncio.sleep(0.05)
            first = len(calls)
            await asyncio.sleep(3.0)
            during = len(calls) - first
            stop.set()
            await asyncio.wait_for(work, 30)
            return during

        during = asyncio.run(go())
        trader.close()
    assert 2 <= during <= 3.0 / retry_s + 2, during  # every retry_s, not at every wake-up
    assert trader.state.exchange_errors == len(calls) - 1
