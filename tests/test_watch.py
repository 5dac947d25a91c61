"""Watching an account, for real: the dashboard's API and page, the Prometheus metrics and
the controls over a journal written by paper trading against a replay of the real
recording (stepped bar by bar on loopback, as in ``test_paper_trader``); the page in
headless Chromium (Debian's, driven by Playwright); the API held to its OpenAPI
document by schemathesis; the real `asterai paper --watch-port` serving them.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from conftest import (
    ALL_CHECKS,
    CHROMIUM,
    Served,
    free_port,
    journal_query,
    needs_chromium,
    schemathesis_run,
)
from prometheus_client.parser import text_string_to_metric_families
from test_paper_trader import HOUR, paper_root, replay_at, trader_for

from asterai.exchange.client import AsterClient
from asterai.paths import DataPaths
from asterai.watch.app import create_app
from asterai.watch.metrics import CLOSE_TO_COMMIT_BUCKETS
from asterai.watch.serve import attach_metrics

TOKEN = "watch-token-3c9e1a7b5d2f4e6a8c0b1d3f5e7a9c2b"  # noqa: S105 - a test's own token
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: bars traded before the tests look
FIRST = 24
#: the bar whose close a live test's pause is taken at (2025-10-01 15:00)
PAUSED_AT = 12


async def _polls(trader, replay, polls: int) -> None:
    """``polls`` moves of the replay's clock by a bar, each followed by a poll (the
    trader's metrics reading this client's rate limiter, as ``run`` makes them)."""
    settings = trader.plan.settings
    async with AsterClient(settings.base_url, settings.exchange) as client:
        if trader.metrics is not None:
            trader.metrics.watch_client(client)
        await trader.cycle(client)
        for _ in range(polls):
            replay.clock.advance(HOUR)
            await trader.cycle(client)
            if trader.state.stopped:
                break
        await trader.follower.close_streams()


def trade(acct, polls: int = 1) -> None:
    """``polls`` bars traded, in a thread of its own (a test's browser runs an event loop
    in this one)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _polls(acct.trader, acct.replay, polls)).result()


def rows(root: Path, sql: str, *args) -> list[dict]:
    return journal_query(DataPaths.at(root).paper_journal, sql, *args)


@pytest.fixture(scope="module")
def account(exported_root, recording, tmp_path_factory):
    """A paper account traded for a day on the replay, its metrics attached; the trader
    and the replay stay up, so a test can trade more bars (the tests run in order)."""
    root = paper_root(exported_root, tmp_path_factory.mktemp("watch"))
    with replay_at(recording) as replay:
        trader = trader_for(root, replay)
        metrics = attach_metrics(trader, "paper")
        acct = SimpleNamespace(root=root, trader=trader, replay=replay, metrics=metrics,
                               journal=DataPaths.at(root).paper_journal)  # fmt: skip
        asyncio.run(_polls(trader, replay, FIRST - 1))
        app = create_app([root], token=TOKEN, registry=metrics.registry,
                         now_ms=lambda: replay.clock.now_ms())  # fmt: skip
        with Served(app) as url:
            acct.url = url
            yield acct
        trader.close()


def get(acct, path: str, **params) -> httpx.Response:
    return httpx.get(f"{acct.url}/api/v1/{path}", params=params, headers=AUTH, timeout=30)


def metrics(acct) -> dict[tuple[str, tuple], float]:
    """``/metrics`` parsed by Prometheus' own text parser: (sample name, labels) -> value."""
    text = httpx.get(f"{acct.url}/metrics", headers=AUTH).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_the_api_serves_the_journal_as_it_stands(account) -> None:
    acct = account
    status = get(acct, "status").json()
    bars = rows(acct.root, "SELECT * FROM bars ORDER BY t")
    assert status["bars"] == len(bars) == FIRST
    assert status["equity"] == bars[-1]["equity"] and status["state"] == "ok"
    assert status["last_bar"] == "2025-10-02T02:00:00.000Z"
    assert status["reconciliation"] == "no report yet: asterai paper --report"
    assert status["last_bar_age_s"] == pytest.approx(1.0, abs=0.01)  # the replay's clock
    trades = rows(acct.root, "SELECT * FROM trades ORDER BY exit_t DESC, symbol")
    assert trades, "no trade in a day: the test says nothing"
    served = get(acct, "trades", limit=1000).json()
    assert [(t["symbol"], t["pnl"]) for t in served] == [(t["symbol"], t["pnl"]) for t in trades]
    assert status["trades"] == len(trades)
    assert status["realised_pnl"] == pytest.approx(sum(t["pnl"] for t in trades), abs=1e-12)
    # the open positions at the last close, each marked at its symbol's last close
    held = rows(acct.root, "SELECT * FROM positions WHERE t = ?", FIRST - 1)
    assert held, "no open position: the unrealised PnL says nothing"
    positions = {p["symbol"]: p for p in get(acct, "positions").json()}
    assert set(positions) == {p["symbol"] for p in held}
    with sqlite3.connect(acct.journal) as conn:
        symbols = acct.trader.journal.account.symbols
        closes = {symbols[j]: c for j, c in conn.execute(
            "SELECT symbol, close FROM bar_inputs WHERE t = ?", (FIRST - 1,))}  # fmt: skip
    total = 0.0
    for p in held:
        got = positions[p["symbol"]]
        side = 1 if p["side"] == "long" else -1
        want = side * (closes[p["symbol"]] - p["entry_price"]) * p["quantity"]
        assert got["unrealised_pnl"] == pytest.approx(want, abs=1e-12)
        assert (got["stop"], got["target"]) == (p["stop"], p["target"])
        total += want
    assert status["unrealised_pnl"] == pytest.approx(total, abs=1e-12)
    # the equity at every close, the events, the refusals with their reasons
    curve = get(acct, "equity").json()["curves"]["paper"]
    assert [e for _, e in curve] == [b["equity"] for b in bars]
    assert [int(t) for t, _ in curve] == [b["open_ms"] + HOUR for b in bars]
    events = get(acct, "events").json()
    assert [e["kind"] for e in events] == [e["kind"] for e in rows(
        acct.root, "SELECT kind FROM events ORDER BY seq")]  # fmt: skip
    assert [e["seq"] for e in get(acct, "events", after=events[0]["seq"]).json()] == [
        e["seq"] for e in events[1:]]  # fmt: skip
    refused = rows(acct.root, "SELECT * FROM rejections ORDER BY bar DESC")
    assert [r["reason"] for r in get(acct, "rejections", limit=1000).json()] == [
        r["reason"] for r in refused]  # fmt: skip


def test_every_request_but_the_page_needs_the_token(account) -> None:
    acct = account
    for path in ("accounts", "status", "positions", "trades", "equity", "events", "rejections",
                 "openapi.json"):  # fmt: skip
        for headers in ({}, {"Authorization": "Bearer " + "y" * len(TOKEN)}):
            r = httpx.get(f"{acct.url}/api/v1/{path}", headers=headers)
            assert r.status_code == 401, path
            assert r.json()["detail"] == "a valid bearer token is required"
    for control in ("kill", "pause"):
        r = httpx.post(f"{acct.url}/api/v1/{control}", json={"account": "paper", "confirm": True})
        assert r.status_code == 401
    assert httpx.get(f"{acct.url}/metrics").status_code == 401
    assert not acct.trader.kill_path.exists() and not acct.trader.pause_path.exists()
    page = httpx.get(f"{acct.url}/")  # the page itself holds no data
    assert page.status_code == 200 and "<svg" in page.text
    assert f"{rows(acct.root, 'SELECT equity FROM bars')[-1]['equity']:.4f}" not in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "")  # nothing fetched


def test_metrics_parse_and_move_as_the_account_does(account) -> None:
    acct = account
    paper, sim = ("account", "paper"), ("book", "simulated")
    before = metrics(acct)
    last = rows(acct.root, "SELECT * FROM bars ORDER BY t DESC LIMIT 1")[0]
    assert before[("asterai_equity_usdt", (paper, sim))] == last["equity"]
    assert before[("asterai_open_positions", (paper, sim))] == last["open_positions"]
    assert before[("asterai_bar_close_to_commit_seconds_count", (paper,))] == FIRST
    assert before[("asterai_bars_total", (paper, ("late", "no")))] == FIRST
    assert before[("asterai_stale", (paper,))] == 0
    peak = max([50.0] + [b["equity"] for b in rows(acct.root, "SELECT equity FROM bars")])
    assert before[("asterai_drawdown_ratio", (paper, sim))] == pytest.approx(
        1 - last["equity"] / peak, abs=1e-12)  # fmt: skip
    refused = rows(acct.root, "SELECT reason, COUNT(*) AS n FROM rejections GROUP BY reason")
    for r in refused:
        assert before[("asterai_rejections_total", (paper, sim, ("reason", r["reason"])))] == r["n"]

    trade(acct, 1)  # one more bar
    after = metrics(acct)
    new = rows(acct.root, "SELECT * FROM bars ORDER BY t DESC LIMIT 1")[0]
    assert new["t"] == last["t"] + 1
    assert after[("asterai_equity_usdt", (paper, sim))] == new["equity"]
    assert after[("asterai_open_positions", (paper, sim))] == new["open_positions"]
    assert after[("asterai_bar_close_to_commit_seconds_count", (paper,))] == FIRST + 1
    assert after[("asterai_last_bar_close_timestamp_seconds", (paper,))] == (
        new["open_ms"] + HOUR) / 1000  # fmt: skip
    # the histogram holds the bar's own close-to-commit time
    took = (new["committed_ms"] - new["open_ms"] - HOUR) / 1000
    le = min(b for b in (*CLOSE_TO_COMMIT_BUCKETS, math.inf) if b >= took)
    assert after[("asterai_bar_close_to_commit_seconds_bucket", (paper, ("le", str(float(le)))))] \
        == before[("asterai_bar_close_to_commit_seconds_bucket", (paper, ("le", str(float(le)))))] + 1
    assert after[("asterai_exchange_weight_used", (paper,))] > 0  # the poll's requests

    # an error caught and retried is counted by its kind
    acct.trader._survive(ValueError("a malformed field"))
    assert metrics(acct)[("asterai_errors_total", (paper, ("kind", "ValueError")))] == 1
    # the data goes stale when the next bar is overdue (three bars close while the
    # exchange's feed is stalled), and fresh when bars come again
    acct.replay.clock.pause()
    trade(acct, 3)
    assert metrics(acct)[("asterai_stale", (paper,))] == 1
    assert get(acct, "status").json()["state"] == "stale"
    acct.replay.clock.resume()
    trade(acct, 0)  # the missed bars, traded late but the newest
    m = metrics(acct)
    assert m[("asterai_stale", (paper,))] == 0
    assert m[("asterai_bars_total", (paper, ("late", "yes")))] == 2


def test_a_pause_from_the_api_stops_new_entries_until_the_next_utc_day(account) -> None:
    acct = account
    r = httpx.post(f"{acct.url}/api/v1/pause", json={"account": "paper", "confirm": False},
                   headers=AUTH)  # fmt: skip
    assert r.status_code == 422 and not acct.trader.pause_path.exists()  # not confirmed
    r = httpx.post(f"{acct.url}/api/v1/pause", json={"account": "paper", "confirm": True},
                   headers=AUTH)  # fmt: skip
    assert r.status_code == 200 and acct.trader.pause_path.exists()
    assert get(acct, "status").json()["controls"]["pause_asked"] is True
    first = rows(acct.root, "SELECT MAX(t) AS t FROM bars")[0]["t"] + 1
    day = lambda ms: ms // 86_400_000  # noqa: E731
    # to the next UTC day's first bar
    left = 24 - (rows(acct.root, "SELECT open_ms FROM bars ORDER BY t DESC LIMIT 1")[0]["open_ms"]
                 // HOUR) % 24  # fmt: skip
    trade(acct, 1)
    assert not acct.trader.pause_path.exists()  # taken at the next close
    controls = get(acct, "status").json()["controls"]
    assert controls["paused"] is True and controls["pause_asked"] is False
    trade(acct, left - 1)
    bars = rows(acct.root, "SELECT * FROM bars WHERE t >= ? ORDER BY t", first)
    assert math.isinf(bars[0]["new_floor"])  # journaled as the control, replayed as such
    paused = [b["t"] for b in bars if day(b["open_ms"]) == day(bars[0]["open_ms"])]
    following = [b["t"] for b in bars if day(b["open_ms"]) > day(bars[0]["open_ms"])]
    assert paused and following
    marks = ",".join(map(str, paused))
    assert not rows(acct.root, f"SELECT * FROM orders WHERE kind = 'entry' AND t IN ({marks})")
    wanted = rows(acct.root, f"SELECT * FROM rejections WHERE bar IN ({marks}) AND reason LIKE "
                  "'new entries paused%'")  # fmt: skip
    assert wanted, "no signal wanted an entry during the pause: the test says nothing"
    kinds = [e["kind"] for e in rows(acct.root, "SELECT kind FROM events WHERE at_ms >= ?",
                                     bars[0]["committed_ms"])]  # fmt: skip
    assert kinds[:2] == ["pause requested", "paused"]
    # the next day's floor lifts it: the kernel decides entries again
    assert bars[-1]["new_floor"] is not None and not math.isinf(bars[-1]["new_floor"])
    assert get(acct, "status").json()["controls"]["paused"] is False
    from asterai.paper.journal import Journal

    with Journal.open(acct.journal) as j:
        j.rebuild()  # the journal replays to what it recorded, the pause included
    # the paper report: the backtest's loop has no pause; it is compared up to the pause,
    # the rest replayed with the journaled controls, and the record still leads to live
    from asterai.config import load_settings
    from asterai.paper.reconcile import write_report

    out = write_report(load_settings(acct.root))
    assert out.engine_equal, out.lines()
    assert "the user's daily pause from the close of" in out.controls
    assert out.controls.endswith("equal")
    said = get(acct, "status").json()["reconciliation"]
    assert said.startswith(f"report to {out.window[1]}: engine equal; backtest "), said
    # the same from the command line, asked while the trader runs
    from click.testing import CliRunner

    from asterai.cli import main

    out = CliRunner().invoke(main, ["paper", "--data-root", str(acct.root), "--pause"])
    assert out.exit_code == 0 and "pause asked" in out.output, out.output
    assert "asterai paper --pause" in acct.trader.pause_path.read_text()
    seq = rows(acct.root, "SELECT MAX(seq) AS s FROM events")[0]["s"]
    trade(acct, 1)
    assert not acct.trader.pause_path.exists()
    assert [e["kind"] for e in rows(acct.root, "SELECT kind FROM events WHERE seq > ?", seq)] \
        == ["pause requested", "paused"]
    # asked while bars of an earlier day are still to trade (a day away, then a start):
    # those are traded late without it; today's first bar takes it
    from asterai.watch.controls import ask_pause

    last = rows(acct.root, "SELECT MAX(t) AS t FROM bars")[0]["t"]
    acct.replay.clock.advance(30 * HOUR)
    ask_pause(acct.journal, acct.trader.pause_path, "paper", "the test")
    trade(acct, 0)
    caught = rows(acct.root, "SELECT open_ms, new_floor FROM bars WHERE t > ? ORDER BY t", last)
    assert len(caught) == 30 and not acct.trader.pause_path.exists()
    today = caught[-1]["open_ms"] // 86_400_000
    took = [b["open_ms"] for b in caught if b["new_floor"] is not None and math.isinf(b["new_floor"])]
    assert took == [today * 86_400_000]  # the day's first bar, none of yesterday's


@needs_chromium
def test_the_page_shows_the_account_updates_itself_and_kills_only_with_the_token(
    account, tmp_path
) -> None:
    from playwright.sync_api import sync_playwright

    acct = account
    bars = rows(acct.root, "SELECT COUNT(*) AS n FROM bars")[0]["n"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            outside = []
            page.on("request", lambda r: outside.append(r.url)
                    if not r.url.startswith((acct.url, "data:")) else None)  # fmt: skip
            # without the token: nothing shown, and the kill button changes nothing
            page.goto(acct.url + "/")
            page.wait_for_selector("#login:not([hidden])")
            page.once("dialog", lambda d: d.accept())
            page.click("#kill")
            page.wait_for_function("document.getElementById('message').textContent"
                                   ".includes('token')")  # fmt: skip
            assert page.get_attribute("body", "data-bars") == ""
            assert not acct.trader.kill_path.exists()
            # with it: the account, its curve and its positions
            page.goto(f"{acct.url}/#token={TOKEN}")
            page.reload()
            page.wait_for_selector(f"body[data-bars='{bars}']")
            assert "token" not in page.url  # taken out of the address bar
            page.wait_for_selector("#chart polyline.curve")
            held = rows(acct.root, "SELECT symbol FROM positions WHERE t = (SELECT MAX(t) "
                        "FROM bars)")  # fmt: skip
            shown = page.eval_on_selector_all("#positions [data-symbol]",
                                              "els => els.map(e => e.dataset.symbol)")  # fmt: skip
            assert sorted(shown) == sorted(r["symbol"] for r in held)
            points = page.get_attribute("#chart polyline[data-name='paper']", "points").split()
            assert len(points) == bars
            # beside it, the backtest over the same bars and the baselines (the report)
            names = page.eval_on_selector_all("#chart polyline.curve",
                                              "els => els.map(e => e.dataset.name)")  # fmt: skip
            assert {"paper", "backtest", "buy_and_hold_btc", "equal_weight_universe",
                    "rule_confluence"} <= set(names), names  # fmt: skip
            # a bar journaled meanwhile is shown without a reload
            page.evaluate("window.stillHere = 1")
            trade(acct, 1)
            page.wait_for_selector(f"body[data-bars='{bars + 1}']", timeout=15_000)
            assert page.evaluate("window.stillHere") == 1
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            # the kill switch asks first: declined, nothing; confirmed, the KILL file
            posted = []
            page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
            page.once("dialog", lambda d: d.dismiss())
            page.click("#kill")  # (the handler waits on the dialog: nothing sent after it)
            assert posted == [] and not acct.trader.kill_path.exists()
            asked = []
            page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
            page.click("#kill")
            page.wait_for_function("document.getElementById('message').textContent"
                                   ".includes('kill switch asked')")  # fmt: skip
            assert acct.trader.kill_path.exists() and "close every position" in asked[0]
            assert "the dashboard" in acct.trader.kill_path.read_text()
            assert outside == []  # self-contained: nothing asked of another host
        finally:
            browser.close()
    # the trader takes it at its next poll: flat at the next open, stopped, final
    trade(acct, 1)
    assert acct.trader.state.stopped
    assert not rows(acct.root, "SELECT * FROM positions WHERE t = (SELECT MAX(t) FROM bars)")
    r = httpx.post(f"{acct.url}/api/v1/kill", json={"account": "paper", "confirm": True},
                   headers=AUTH)  # fmt: skip
    assert r.status_code == 409 and "already stopped" in r.json()["detail"]
    assert get(acct, "status").json()["controls"]["killed"] is True


def test_the_api_does_what_its_openapi_document_says(account, tmp_path) -> None:
    """Schemathesis, all checks, against the dashboard over a copy of the journal (its
    controls may write there) and the schema it serves."""
    import schemathesis
    from schemathesis.config import SchemathesisConfig

    root = tmp_path / "root"
    (root / "data" / "paper").mkdir(parents=True)
    with sqlite3.connect(account.journal) as src, sqlite3.connect(
        root / "data" / "paper" / "journal.sqlite"
    ) as dest:
        src.backup(dest)  # (the file alone would miss what its WAL holds)
    with Served(create_app([root], token=TOKEN)) as url:
        config = SchemathesisConfig.from_dict({
            "seed": 36, "headers": AUTH, "generation": {"max-examples": 40},
        })  # fmt: skip
        schema = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json", config=config,
                                               headers=AUTH)  # fmt: skip
        failures, ran, requests = schemathesis_run(schema)
    assert not failures, "\n".join(sorted(set(failures)))
    assert ALL_CHECKS - {"use_after_free", "ensure_resource_availability"} <= ran, ALL_CHECKS - ran
    assert requests > 150, requests


def test_the_journal_is_only_read(account) -> None:
    """The dashboard opened the journal read-only: every request above left the trader
    alone; the file as the trader wrote it, byte for byte, after more reads."""
    wal = account.journal.with_name(account.journal.name + "-wal")

    def digest() -> list[str]:  # the file and its write-ahead log, where a write would go
        return [hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else ""
                for f in (account.journal, wal)]  # fmt: skip

    before = digest()
    for path in ("status", "positions", "trades", "equity", "events", "rejections"):
        assert get(account, path).status_code == 200
    assert digest() == before


def test_asterai_paper_watch_port_serves_its_dashboard_metrics_and_alerts(
    exported_root, recording, tmp_path, receiver
) -> None:
    """The real `asterai paper --watch-port`: its own dashboard and /metrics while it
    trades, alerts to a webhook on loopback (a start, fills, a start after a crash,
    the kill switch asked from its page), and the kill switch ends it."""
    import os
    import signal
    import subprocess
    import sys

    from test_paper_trader import _wait_for

    url, bodies = receiver
    root = paper_root(exported_root, tmp_path)
    port = free_port()
    dead = f"json://127.0.0.1:{free_port()}/hook"  # nothing listens there
    env = dict(os.environ, PYTHONUNBUFFERED="1", ASTERAI_DASHBOARD_TOKEN=TOKEN,
               ASTERAI_ALERT_URLS=f"{url} {dead}", ASTERAI_WATCH__POLL_S="0.2")  # fmt: skip
    output = []

    def start(base_url: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "asterai.cli", "paper", "--data-root", str(root),
             "--base-url", base_url, "--clock-rate", "0", "--watch-port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    base = f"http://127.0.0.1:{port}"

    def answer(path: str) -> httpx.Response:
        deadline = time.monotonic() + 60
        while True:
            try:
                return httpx.get(base + path, headers=AUTH, timeout=10)
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"{path}: nothing listens on {port}"
                time.sleep(0.1)

    def titles() -> list[str]:
        return [b["title"] for b in bodies]

    def wait_alert(text: str) -> None:
        deadline = time.monotonic() + 60
        while not any(text in t for t in titles()):
            assert time.monotonic() < deadline, (text, titles())
            time.sleep(0.1)

    with replay_at(recording) as replay:
        proc = start(replay.base_url)
        try:
            for t in range(6):
                if t:
                    replay.clock.advance(HOUR)
                _wait_for(root, t, proc)
            status = answer("/api/v1/status").json()
            assert status["bars"] >= 6 and status["feed"]["market"].startswith("REST")
            text = answer("/metrics").text
            families = {f.name: f for f in text_string_to_metric_families(text)}
            bars = rows(root, "SELECT * FROM bars ORDER BY t")
            equity = families["asterai_equity_usdt"].samples[0]
            assert equity.value == bars[-1]["equity"]
            assert families["asterai_exchange_weight_used"].samples[0].value > 0
            wait_alert("started")
            if rows(root, "SELECT 1 FROM fills WHERE kind = 'entry'"):
                wait_alert("fill")
            # a crash, then a start: the alert says so
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            output.append(proc.stdout.read().decode())
            proc = start(replay.base_url)
            replay.clock.advance(HOUR)
            _wait_for(root, 6, proc)
            wait_alert("crash")
            # the kill switch from the trader's own page's API: flat at the next open
            r = httpx.post(f"{base}/api/v1/kill", json={"account": "paper", "confirm": True},
                           headers=AUTH)  # fmt: skip
            assert r.status_code == 200, r.text
            wait_alert("kill")
            deadline = time.monotonic() + 60
            while proc.poll() is None:
                replay.clock.advance(HOUR)
                assert time.monotonic() < deadline, "the kill switch did not end it"
                time.sleep(0.5)
            output.append(proc.stdout.read().decode())
            assert proc.returncode == 0, output[-1][-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
    kinds = [e["kind"] for e in rows(root, "SELECT kind FROM events ORDER BY seq")]
    assert "kill switch" in kinds and kinds[-1] == "stop"
    assert not rows(root, "SELECT * FROM positions WHERE t = (SELECT MAX(t) FROM bars)")
    # the dead target: warned about by its scheme alone; nothing secret in the output
    logs = "".join(output)
    assert "not delivered" in logs
    for secret in (TOKEN, url.split("://", 1)[1], dead.split("://", 1)[1]):
        assert secret not in logs and all(secret not in b["message"] for b in bodies)


def test_a_live_accounts_page_is_the_exchanges_account_beside_its_shadow(
    exported_root, recording, tmp_path
) -> None:
    """A day of live trading on the replay's offline exchange, then its dashboard: the
    equity is the exchange account's and the shadow's beside it, the positions are the
    ones the exchange holds with the stop and target resting there, the reconciliation
    and the ramp line are the live report's, and the metrics carry both books."""
    from test_live_trader import exchange_at, keys_of, live_root
    from test_live_trader import play as play_live
    from test_live_trader import trader_for as live_trader_for

    from asterai.exchange.private import PrivateClient
    from asterai.live.report import report
    from asterai.watch.controls import ask_pause

    root = live_root(exported_root, tmp_path, daily_loss_limit=0.0)
    with exchange_at(recording) as server:
        trader = live_trader_for(root, server)
        metrics = attach_metrics(trader, "live")

        def pause(k: int) -> None:  # the daily pause asked before bar 12 (15:00) closes
            if k == PAUSED_AT:
                ask_pause(trader.journal_path, trader.pause_path, "live", "the test")

        play_live(trader, server, FIRST, before=pause)
        trader.close()
        settings = trader.plan.settings

        async def held() -> list[dict]:
            async with AsterClient(settings.base_url, settings.exchange) as client:
                api = PrivateClient(client, keys_of(server).key)
                return [p for p in await api.positions() if float(p["positionAmt"]) != 0]

        on_exchange = {p["symbol"]: p for p in asyncio.run(held())}
        resting = {(o["symbol"], o["clientOrderId"].split("-")[-1][:1]): o for o in
                   asyncio.run(_open_orders(settings, keys_of(server)))}  # fmt: skip
    journal = DataPaths.at(root).live_journal
    with sqlite3.connect(journal) as conn:
        conn.row_factory = sqlite3.Row
        live = [dict(r) for r in conn.execute("SELECT * FROM live_bars ORDER BY t")]
        shadow = [dict(r) for r in conn.execute("SELECT * FROM bars ORDER BY t")]
        entries = {r[0] for r in conn.execute("SELECT t FROM intents WHERE leg = 'e'")}
        shadow_entries = {r[0] for r in conn.execute("SELECT t FROM orders WHERE kind = 'entry'")}
    # the pause: both accounts opened nothing from its close to the day's end (21:00 is
    # bar 21, the next day's first), then traded on
    day = range(PAUSED_AT, 21)
    assert [b["paused"] for b in live] == [int(t in day) for t in range(FIRST)]
    assert math.isinf(shadow[PAUSED_AT]["new_floor"])
    assert not entries & set(day) and not shadow_entries & set(day)
    assert entries - set(day), "no entry outside the pause: it says nothing"
    app = create_app([root], token=TOKEN, registry=metrics.registry)
    with Served(app) as url:
        def get_(path: str) -> dict | list:
            return httpx.get(f"{url}/api/v1/{path}", headers=AUTH, timeout=30).json()

        assert [a["id"] for a in get_("accounts")] == ["live"]
        status = get_("status")
        assert status["kind"] == "live" and status["equity"] == live[-1]["equity"]
        assert status["shadow_equity"] == shadow[-1]["equity"]
        r = report(journal, settings.live.min_paper_days, settings.live.tracking_tolerance)
        line, why = r.ramp()
        assert status["ramp"] == f"{line} ({'; '.join(why)})" and line == "hold"
        assert status["reconciliation"] == "the journal equals the exchange"
        curves = get_("equity")["curves"]
        assert [e for _, e in curves["live"]] == [b["equity"] for b in live]
        assert [e for _, e in curves["shadow"]] == [b["equity"] for b in shadow]
        assert on_exchange, "no position open on the exchange: the test says nothing"
        positions = {p["symbol"]: p for p in get_("positions")}
        assert set(positions) == set(on_exchange)
        for symbol, p in on_exchange.items():
            got = positions[symbol]
            assert got["side"] == ("long" if float(p["positionAmt"]) > 0 else "short")
            assert got["quantity"] == abs(float(p["positionAmt"]))
            assert got["entry_price"] == pytest.approx(float(p["entryPrice"]), rel=1e-12)
            assert got["stop"] == float(resting[(symbol, "s")]["stopPrice"])
            assert got["target"] == float(resting[(symbol, "t")]["price"])
        closed = [x for x in r.pairs if x.live is not None and x.live.exit_t is not None]
        assert len(get_("trades?limit=1000")) == len(closed)
        text = httpx.get(f"{url}/metrics", headers=AUTH).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip
    book = (("account", "live"), ("book", "exchange"))
    assert samples[("asterai_equity_usdt", book)] == live[-1]["equity"]
    assert samples[("asterai_open_positions", book)] == len(on_exchange)
    assert samples[("asterai_equity_usdt", (("account", "live"), ("book", "simulated")))] == \
        shadow[-1]["equity"]
    assert samples[("asterai_exchange_orders_in_window", (("account", "live"),
                                                          ("window", "60s")))] > 0


async def _open_orders(settings, keys) -> list[dict]:
    from asterai.exchange.private import PrivateClient

    async with AsterClient(settings.base_url, settings.exchange) as client:
        return await PrivateClient(client, keys.key).open_orders()


def test_the_dashboard_and_watch_port_refuse_to_start_without_a_real_token(tmp_path,
                                                                           monkeypatch) -> None:
    from click.testing import CliRunner

    from asterai.cli import main

    monkeypatch.delenv("ASTERAI_DASHBOARD_TOKEN", raising=False)
    run = CliRunner().invoke
    out = run(main, ["dashboard", "--data-root", str(tmp_path)])
    assert out.exit_code == 2 and "ASTERAI_DASHBOARD_TOKEN is not set" in out.output
    out = run(main, ["dashboard", "--data-root", str(tmp_path), "--insecure-local",
                     "--host", "0.0.0.0"])  # fmt: skip
    assert out.exit_code == 2 and "127.0.0.1 only" in out.output
    for command in ("paper", "live"):
        out = run(main, [command, "--data-root", str(tmp_path), "--watch-port", "8791"])
        assert out.exit_code == 2 and "ASTERAI_DASHBOARD_TOKEN is not set" in out.output
    monkeypatch.setenv("ASTERAI_DASHBOARD_TOKEN", "short")
    out = run(main, ["dashboard", "--data-root", str(tmp_path)])
    assert out.exit_code == 2 and "at least 32" in out.output
