"""Alerts from a real paper journal: the trader plays a day of the real recording on the
replay server, and the alerter, reading that journal read-only, delivers through apprise
to a webhook receiver on loopback (``json://``): one message per kind, a burst folded,
the urgent kinds never held, a crash told from a clean restart, a dead target harmless,
and the cursor kept across a restart of the alerter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import socket
import time
from pathlib import Path

import pytest
from conftest import journal_query
from test_paper_trader import paper_root, play, replay_at, trader_for

from asterai.paper.journal import Journal
from asterai.paths import DataPaths
from asterai.watch.alerts import Alerter, alert_urls

#: bars played: enough for entries and exits, short (it costs CPU)
BARS = 24
INTERVAL = 600.0


@pytest.fixture(scope="module")
def traded(exported_root, recording, tmp_path_factory) -> Path:
    """A journal the paper trader wrote over ``BARS`` bars (read-only: tests copy it)."""
    root = paper_root(exported_root, tmp_path_factory.mktemp("alerts"))
    with replay_at(recording) as replay:
        trader = trader_for(root, replay)
        play(trader, replay, BARS)
        trader.close()
    return DataPaths.at(root).paper_journal


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def place(traded: Path, tmp_path: Path) -> Path:
    """A copy of the traded journal, where the alerter expects its cursor beside it."""
    path = tmp_path / "paper" / "journal.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(traded, path)
    return path


def from_start(traded: Path, tmp_path: Path, urls: list[str], **kw) -> tuple[Alerter, Path]:
    """An alerter made before the journal existed (as before trading), then the journal."""
    path = tmp_path / "paper" / "journal.sqlite"
    alerter = Alerter(path, urls, account="paper", **kw)
    place(traded, tmp_path)
    return alerter, path


def rows(path: Path, sql: str) -> list[dict]:
    return journal_query(path, sql)


def last_ms(path: Path) -> int:
    """A time after everything journaled: bars committed, events."""
    bars = rows(path, "SELECT MAX(committed_ms) AS m FROM bars")[0]["m"]
    events = rows(path, "SELECT MAX(at_ms) AS m FROM events")[0]["m"]
    return max(bars, events) + 1_000


def write_events(path: Path, at_ms: int, kind: str, detail: str, n: int = 1) -> None:
    with Journal.open(path) as j:  # the trader's own API
        for k in range(n):
            j.event(at_ms + k, kind, detail)


def by_kind(messages) -> dict:
    return {m.kind: m for m in messages}


def test_alert_urls_split_on_whitespace_and_commas() -> None:
    env = {"ASTERAI_ALERT_URLS": " tgram://bot/chat,json://127.0.0.1:9/x \n mailto://a:b@c "}
    assert alert_urls(env) == ["tgram://bot/chat", "json://127.0.0.1:9/x", "mailto://a:b@c"]
    assert alert_urls({}) == [] and alert_urls({"ASTERAI_ALERT_URLS": " , "}) == []


def test_one_message_per_kind_counts_the_journal_rows(traded, tmp_path, receiver) -> None:
    url, bodies = receiver
    alerter, path = from_start(traded, tmp_path, [url])
    sent = alerter.poll()
    fills = rows(path, "SELECT kind, reason FROM fills")
    want = {
        "fill": sum(f["kind"] == "entry" for f in fills),
        "stop": sum(f["reason"] in ("stop", "gap through stop") for f in fills),
        "target": sum(f["reason"] == "target" for f in fills),
        "started": len(rows(path, "SELECT seq FROM events WHERE kind = 'start'")),
    }
    want["exit"] = len(fills) - want["fill"] - want["stop"] - want["target"]
    want = {k: n for k, n in want.items() if n}
    assert want["fill"] > 0 and want["started"] == 1, "the day traded nothing to alert"
    assert len(sent) == len({m.kind for m in sent})  # one message per kind
    assert {m.kind: m.items for m in sent} == want
    assert by_kind(sent)["fill"].title == f"AsterAI paper: {want['fill']} fills"
    for m in sent:
        assert len(m.body.splitlines()) == min(m.items, 20) + (m.items > 20)
    # each delivered through the webhook, as apprise posts it
    assert sorted(b["title"] for b in bodies) == sorted(m.title for m in sent)
    assert sorted(b["message"] for b in bodies) == sorted(m.body for m in sent)
    assert alerter.poll() == []  # nothing new


def test_enabling_alerts_on_an_old_journal_replays_nothing(traded, tmp_path) -> None:
    path = place(traded, tmp_path)
    alerter = Alerter(path, [], account="paper")
    assert alerter.poll() == []
    write_events(path, last_ms(path), "stale", "the bar closing ... is overdue")
    assert [(m.kind, m.title) for m in alerter.poll()] == [
        ("stale data", "AsterAI paper: stale data")
    ]


def test_a_burst_of_errors_is_folded_into_one_message_per_interval(traded, tmp_path, receiver):
    url, bodies = receiver
    path = place(traded, tmp_path)
    clock = Clock()
    alerter = Alerter(path, [url], account="paper", interval_s=INTERVAL, clock=clock)
    at = last_ms(path)
    write_events(path, at, "error", "ValueError: x", n=30)
    sent = alerter.poll()
    assert [m.kind for m in sent] == ["error streak"]
    assert sent[0].items == 30
    assert sent[0].title == "AsterAI paper: 30 errors with no bar traded between them"
    lines = sent[0].body.splitlines()
    assert len(lines) == 21 and lines[-1] == "... and 10 more"
    assert all(line.endswith("error: ValueError: x") for line in lines[:-1])
    assert len(bodies) == 1
    # the same streak goes on within the interval: held
    write_events(path, at + 100, "error", "ValueError: y", n=5)
    clock.now += INTERVAL / 2
    assert alerter.poll() == []
    write_events(path, at + 200, "error", "ValueError: z", n=2)
    clock.now += INTERVAL / 2 - 1
    assert alerter.poll() == []
    assert len(bodies) == 1
    clock.now += 1  # the interval is over: what was held goes, folded
    later = alerter.poll()
    assert [(m.kind, m.items) for m in later] == [("error streak", 7)]
    assert later[0].body.count("ValueError: y") == 5 and later[0].body.count("ValueError: z") == 2
    assert len(bodies) == 2
    clock.now += INTERVAL
    assert alerter.poll() == []  # nothing held any more


def test_errors_short_of_a_streak_or_broken_by_a_bar_alert_nothing(traded, tmp_path) -> None:
    path = place(traded, tmp_path)
    alerter = Alerter(path, [], account="paper", error_streak=3)
    bars = rows(path, "SELECT committed_ms FROM bars ORDER BY t")
    assert len(bars) >= 3
    # two errors, a bar committed, two more: no streak of three
    before, after = bars[-2]["committed_ms"], bars[-1]["committed_ms"]
    write_events(path, before - 2, "error", "OSError: a", n=2)
    write_events(path, after, "error", "OSError: b", n=2)
    assert alerter.poll() == []
    write_events(path, after + 5, "error", "OSError: c")  # the third since that bar
    sent = alerter.poll()
    assert [(m.kind, m.items) for m in sent] == [("error streak", 3)]
    assert "OSError: a" not in sent[0].body and sent[0].body.count("OSError: b") == 2


def test_urgent_kinds_are_never_held(traded, tmp_path, receiver) -> None:
    url, bodies = receiver
    path = place(traded, tmp_path)
    clock = Clock()
    alerter = Alerter(path, [url], account="paper", interval_s=INTERVAL, clock=clock)
    at = last_ms(path)
    write_events(path, at, "kill requested", "file KILL")
    write_events(path, at + 1, "paused", "daily loss limit")
    first = alerter.poll()
    assert [m.kind for m in first] == ["kill switch", "daily pause"]
    clock.now += 1
    write_events(path, at + 2, "kill requested", "asterai paper --kill")
    write_events(path, at + 3, "pause requested", "by the user")
    again = alerter.poll()
    assert [(m.kind, m.items) for m in again] == [("kill switch", 1)]  # the pause waits
    assert "asterai paper --kill" in again[0].body
    assert [b["title"] for b in bodies] == [m.title for m in first + again]
    assert bodies[0]["type"] == "failure"


def test_a_restart_without_a_stop_is_a_crash(traded, tmp_path) -> None:
    path = place(traded, tmp_path)
    alerter = Alerter(path, [], account="paper", interval_s=0)
    at = last_ms(path)
    write_events(path, at, "restart", "24 bars rebuilt")  # the trader died: no stop
    assert [(m.kind, m.title) for m in alerter.poll()] == [
        ("crash restart", "AsterAI paper: restarted after a crash")
    ]
    write_events(path, at + 1, "stop", "stopped")
    write_events(path, at + 2, "restart", "24 bars rebuilt")
    sent = alerter.poll()
    assert [(m.kind, m.items) for m in sent] == [("started", 1)]
    assert "restart: 24 bars rebuilt" in sent[0].body


def test_a_live_journal_alerts_the_exchanges_fills_not_the_shadows(traded, tmp_path) -> None:
    from asterai.live.intents import Intents
    from asterai.live.ledger import Ledger

    path = place(traded, tmp_path)  # the shadow's bars and fills, as a live journal has them
    intents = Intents(path)  # the live tables, made as the live trader makes them
    Ledger(intents.conn)
    alerter = Alerter(path, [], account="live", interval_s=0)
    c = intents.conn
    for cid, leg in (("e1", "e"), ("s1", "s"), ("t2", "t"), ("x3", "x")):
        c.execute(
            "INSERT INTO intents (client_id, t, symbol, leg, side, type, reduce_only, "
            "close_position, state, created_ms, updated_ms) "
            "VALUES (?, 1, 'SOLUSDT', ?, 'BUY', 'MARKET', 0, 0, 'FILLED', 0, 0)",
            (cid, leg),
        )
    fills = [  # (trade id, client id, side, realised pnl, time): inserted out of time order
        (11, "e1", "BUY", "0", 3_000), (12, "s1", "SELL", "-1.5", 5_000),
        (13, "t2", "SELL", "2.25", 4_000), (14, "x3", "SELL", "0.1", 6_000),
        (15, "autoclose-123", "SELL", "-9", 2_000),
    ]  # fmt: skip
    for trade_id, cid, side, pnl, at in fills:
        c.execute(
            "INSERT INTO live_fills VALUES (?, 'SOLUSDT', ?, ?, ?, '200.5', '0.1', ?, '0.01', 0, ?)",
            (trade_id, trade_id, cid, side, pnl, at),
        )
    intents.close()
    sent = alerter.poll()
    assert {m.kind: m.items for m in sent} == {"fill": 1, "stop": 1, "target": 1, "exit": 2}
    assert by_kind(sent)["fill"].title == "AsterAI live: 1 fill"
    assert "SOLUSDT SELL 0.1 @ 200.5, realised -9 (the exchange's own order: liquidation)" in (
        by_kind(sent)["exit"].body
    )
    assert alerter.poll() == []


def test_a_dead_target_changes_nothing(traded, tmp_path, caplog) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    alerter, path = from_start(traded, tmp_path, [f"json://127.0.0.1:{port}/hook"])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    data = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="asterai.watch.alerts"):
        sent = alerter.poll()
    assert {"started", "fill"} <= {m.kind for m in sent}
    warned = [r for r in caplog.records if r.name == "asterai.watch.alerts"]
    assert len(warned) == len(sent) and all("not delivered" in r.getMessage() for r in warned)
    assert path.read_bytes() == data and hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert (path.parent / "alerts.json").exists()
    assert alerter.poll() == []  # the cursor advanced: nothing is sent twice


def test_run_polls_until_stopped_and_survives_a_broken_journal(traded, tmp_path, caplog):
    import asyncio

    path = tmp_path / "paper" / "journal.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"not a database" * 100)  # unreadable: each poll fails, run goes on
    with caplog.at_level(logging.WARNING, logger="asterai.watch.alerts"):
        alerter = Alerter(path, [], account="paper", interval_s=0)
    polls = []
    real_poll = alerter.poll

    def poll(flush=False):
        polls.append(path.read_bytes()[:6])
        if len(polls) == 3:  # the trader's journal arrives, with its history
            shutil.copy2(traded, path)
        if len(polls) == 4:  # news
            write_events(path, last_ms(path), "live differences", "SOLUSDT: 0.1 vs 0")
        return real_poll(flush)

    alerter.poll = poll  # type: ignore[method-assign]

    async def watch() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(alerter.run(stop, 0.01))
        while len(polls) < 5:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)

    with caplog.at_level(logging.WARNING, logger="asterai.watch.alerts"):
        asyncio.run(watch())
    failed = [r for r in caplog.records if "polling" in r.getMessage()]
    assert len(failed) == 2  # the two polls of the broken file
    cursor = json.loads((path.parent / "alerts.json").read_text())
    # unreadable when made: it started from the end of the journal it first read (no
    # history replayed), and read what came after
    assert cursor["events"] == rows(path, "SELECT MAX(seq) AS m FROM events")[0]["m"]
    assert cursor["sent"].keys() == {"reconciliation mismatch"}


def test_a_refused_url_is_named_by_its_scheme_only(tmp_path, caplog) -> None:
    secret = "tgram://not-a-bot-token-SECRET/chat"  # apprise refuses its token
    with caplog.at_level(logging.DEBUG):
        alerter = Alerter(tmp_path / "journal.sqlite", [secret], account="paper")
    assert alerter.poll() == []
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "a tgram:// target URL was refused" in text
    assert "SECRET" not in text


def test_the_cursor_survives_a_restart_of_the_alerter(traded, tmp_path) -> None:
    clock = Clock()
    alerter, path = from_start(traded, tmp_path, [], interval_s=INTERVAL, clock=clock)
    assert alerter.poll()
    at = last_ms(path)
    write_events(path, at, "error", "RuntimeError: boom", n=3)
    assert [m.kind for m in alerter.poll()] == ["error streak"]
    write_events(path, at + 10, "error", "RuntimeError: again", n=2)
    assert alerter.poll() == []  # held, within the interval
    again = Alerter(path, [], account="paper", interval_s=INTERVAL, clock=clock)
    assert again.poll() == []  # nothing old, and the held errors still wait
    clock.now += INTERVAL
    sent = again.poll()
    assert [(m.kind, m.items) for m in sent] == [("error streak", 2)]


def test_a_new_journal_in_the_old_ones_place_is_read_from_its_start(traded, tmp_path) -> None:
    alerter, path = from_start(traded, tmp_path, [], interval_s=0)
    assert alerter.poll()
    path.unlink()  # the account moved away; another starts in its place
    with Journal.open(traded, readonly=True) as old:
        account = old.account
    from dataclasses import replace

    with Journal.create(path, replace(account, start_ms=account.start_ms + 3_600_000)) as j:
        j.event(int(time.time() * 1000), "start", "a new account")
    sent = alerter.poll()
    assert [(m.kind, m.items) for m in sent] == [("started", 1)]
    assert "a new account" in sent[0].body
