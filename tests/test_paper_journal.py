"""The journal: a real SQLite file that holds every bar the paper account saw and what it
did, from which the account is rebuilt exactly (the restart after a crash).

Real bars of seven recorded symbols with signals made from their real closes
(``test_backtest_kernel.real_panel``), played through the simulated broker."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from test_backtest_kernel import real_panel
from test_paper_broker import bar_at

from asterai.backtest import kernel
from asterai.paper.broker import Controls
from asterai.paper.journal import Account, Journal, JournalError

SYMBOLS = ["BTCUSDT", "ETHUSDT", "AAVEUSDT", "SOLUSDT", "ADAUSDT", "UNIUSDT", "2ZUSDT"]


def _account(tick, lot, min_notional, p) -> Account:
    return Account(SYMBOLS, p, tick, lot, min_notional, 0, 3_600_000, {"model": "test"})


def _write(journal: Journal, args, broker, t0: int, t1: int, controls=lambda t: Controls()):
    out = []
    for t in range(t0, t1):
        bar, c = bar_at(args, t), controls(t)
        ev = broker.apply(bar, c)
        journal.write_bar(bar, c, ev, seen_ms=t * 3_600_000 + 3_600_500, late=False,
                          committed_ms=t * 3_600_000 + 3_601_000)  # fmt: skip
        out.append(ev)
    return out


def test_the_account_rebuilt_from_the_journal_is_the_one_that_wrote_it(real_data, tmp_path):
    args, tick, lot, min_notional, p = real_panel(real_data)
    T = len(args[0])
    path = tmp_path / "journal.sqlite"
    journal = Journal.create(path, _account(tick, lot, min_notional, p))
    broker = journal.account.broker()
    half = T // 2
    daily = lambda t: Controls(new_floor=0.0) if t % 24 == 0 else Controls()  # noqa: E731
    first = _write(journal, args, broker, 0, half, daily)
    journal.close()

    # a restart: the account comes back from the file alone, bit for bit
    journal = Journal.open(path)
    rebuilt, last = journal.rebuild()
    assert last["t"] == half - 1
    for a, b in zip(rebuilt.state, broker.state, strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    rest = _write(journal, args, rebuilt, half, T, daily)
    events = first + rest

    # and the whole run is the backtest's
    want_trades, _, want_curve, _ = kernel.simulate_nb(*args, tick, lot, min_notional, p)
    curve = np.array(journal.query("SELECT equity, cash, open_positions, notional FROM bars"
                                   " ORDER BY t"), dtype=object)  # fmt: skip
    got = np.array([[r["equity"], r["cash"], r["open_positions"], r["notional"]] for r in curve])
    assert np.array_equal(got[:-1], want_curve[:-1], equal_nan=True)
    trades = journal.query("SELECT * FROM trades ORDER BY exit_t, symbol")
    assert len(trades) == sum(len(e.trades) for e in events) > 30
    done = want_trades[want_trades[:, 4] < T - 1]
    assert sorted((r["symbol"], r["entry_t"], r["exit_t"], r["pnl"]) for r in trades
                  if r["exit_t"] < T - 1) == sorted(
        (SYMBOLS[int(r[0])], int(r[3]), int(r[4]), r[10]) for r in done
    )  # fmt: skip
    # every fill is journaled: an entry and an exit per closed trade, an entry per open one
    fills = journal.query("SELECT kind, COUNT(*) AS n FROM fills GROUP BY kind")
    n = {r["kind"]: r["n"] for r in fills}
    assert n["exit"] == len(trades)
    assert n["entry"] == len(trades) + int((rebuilt.state.side != 0).sum())
    # and the funding paid, the rejections, the positions after each bar
    paid = journal.query("SELECT SUM(amount) AS s FROM funding")[0]["s"]
    assert paid == pytest.approx(sum(float(e.funding.sum()) for e in events), abs=1e-12)
    assert journal.query("SELECT COUNT(*) AS n FROM rejections")[0]["n"] == sum(
        len(e.rejects) for e in events
    )
    held = journal.query("SELECT COUNT(*) AS n FROM positions WHERE t = ?", T - 1)[0]["n"]
    assert held == int((rebuilt.state.side != 0).sum())
    # a reader may look while the trader writes (WAL)
    reader = Journal.open(path, readonly=True)
    assert reader.last_bar()["t"] == T - 1
    reader.close()
    journal.close()


def test_a_bar_is_journaled_whole_or_not_at_all(real_data, tmp_path):
    args, tick, lot, min_notional, p = real_panel(real_data)
    path = tmp_path / "journal.sqlite"
    journal = Journal.create(path, _account(tick, lot, min_notional, p))
    broker = journal.account.broker()
    _write(journal, args, broker, 0, 50)
    bar = bar_at(args, 50)
    ev = broker.apply(bar, Controls())
    with pytest.raises(sqlite3.IntegrityError):  # bar 49 again: the primary key refuses it
        journal.write_bar(bar_at(args, 49), Controls(), ev, seen_ms=0, late=False,
                          committed_ms=0)  # fmt: skip
    # nothing of the refused bar is left behind
    assert journal.query("SELECT COUNT(*) AS n FROM bar_inputs WHERE t = 49")[0]["n"] == sum(
        1 for j in range(len(SYMBOLS)) if not np.isnan(args[3][49, j])
    )
    assert journal.query("SELECT COUNT(*) AS n FROM bars")[0]["n"] == 50
    journal.close()


def test_a_bar_whose_commit_fails_is_rolled_back_and_written_again_once(real_data, tmp_path):
    """A commit that fails (a busy or full disk) leaves no transaction open: the trader
    writes the bar again, once, and the journal goes on."""
    args, tick, lot, min_notional, p = real_panel(real_data)
    path = tmp_path / "journal.sqlite"
    journal = Journal.create(path, _account(tick, lot, min_notional, p))
    broker = journal.account.broker()
    _write(journal, args, broker, 0, 10)

    class FailingCommit:  # the connection, whose next COMMIT fails
        def __init__(self, conn) -> None:
            self.conn, self.failed = conn, False

        def execute(self, sql, *args):
            if sql == "COMMIT" and not self.failed:
                self.failed = True
                raise sqlite3.OperationalError("disk I/O error")
            return self.conn.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.conn, name)

    real = journal.conn
    journal.conn = FailingCommit(real)
    bar = bar_at(args, 10)
    ev = broker.apply(bar, Controls())
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        journal.write_bar(bar, Controls(), ev, seen_ms=0, late=False, committed_ms=0)
    assert not real.in_transaction
    assert journal.last_bar()["t"] == 9  # nothing of it
    journal.conn = real
    journal.write_bar(bar, Controls(), ev, seen_ms=0, late=False, committed_ms=0)
    assert journal.query("SELECT COUNT(*) AS n FROM bars WHERE t = 10")[0]["n"] == 1
    rebuilt, last = journal.rebuild()
    assert last["t"] == 10
    journal.close()


def test_a_journal_changed_by_hand_does_not_rebuild(real_data, tmp_path):
    args, tick, lot, min_notional, p = real_panel(real_data)
    path = tmp_path / "journal.sqlite"
    journal = Journal.create(path, _account(tick, lot, min_notional, p))
    _write(journal, args, journal.account.broker(), 0, 200)
    t = journal.query("SELECT MIN(t) AS t FROM bars WHERE t > 100 AND open_positions > 0")[0]["t"]
    journal.conn.execute("UPDATE bar_inputs SET close = close * 1.01 WHERE t = ?", (t,))
    journal.close()
    with pytest.raises(JournalError, match=f"bar {t} .*replays to equity"):
        Journal.open(path).rebuild()
    with pytest.raises(JournalError, match="already exists"):
        Journal.create(path, _account(tick, lot, min_notional, p))
