"""The live trader: paper trading's loop, with its decisions sent to the exchange.

``LiveTrader`` is a ``PaperTrader`` whose journal is ``data/live/journal.sqlite``: the
loop, the follower, the live features, the model and the bars are paper trading's, and
every bar still goes through the simulated broker, journaled as paper trading journals
it: that is the **shadow**, the account the live one is compared with, fill by fill.
After the shadow has traded the newest closed bar, the **live account** acts on it
(``live_bar``), from what the exchange reports:

1. every intent without an outcome is settled by its client id (``intents.settle``),
   each position's stop and target asked for (the one that filled cancels the other),
   every filled entry the exchange still holds protected (``ensure_protected``), the
   fills and the funding brought into the ledger (``ledger``);
2. the journal is reconciled with the exchange (``reconcile``): a difference stops new
   entries (reduce-only) and is named in the journal; a position the bot did not open
   is never touched;
3. the kernel's account is loaded from the exchange (positions, entry prices, the
   legs resting) with the bot's cash (the allotment plus its realised PnL), and the
   kernel decides the close (``decide``);
4. the orders are sent (``execute``): exits first, entries (none while reduce-only),
   each entry's stop and target resting on the exchange from its own fill;
5. the bar's live row is written (``live_bars``: equity, the controls, what was sent).

Controls: the kill switch (``data/live/KILL``, ``asterai live --kill``) cancels the
bot's orders and closes its positions at market at once, then stops, for good; the
daily loss limit (``paper.daily_loss_limit``) and the drawdown breaker
(``strategy.max_drawdown``) on the live equity, as the kernel applies them; the
circuit breaker after ``live.max_rejections`` refusals in a row. Leverage, cross
margin and one-way mode are set and verified at start (``preflight``), and a key the
exchange refuses ends the start before any order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from asterai.backtest import kernel
from asterai.config import REAL_EXCHANGE_URL
from asterai.exchange.client import AsterClient
from asterai.exchange.errors import APIError, ExchangeError
from asterai.exchange.private import PrivateClient
from asterai.intervals import DAY_MS, iso_ms
from asterai.live.account import held_positions, load_positions
from asterai.live.decide import decide
from asterai.live.events import UserStream
from asterai.live.execute import ensure_protected, execute
from asterai.live.intents import Intents, Leg, State, client_id, settle
from asterai.live.keys import LiveKeys
from asterai.live.ledger import Ledger
from asterai.live.lock import Locked, ProcessLock
from asterai.live.protect import Position, cancel_leg, close_at_market, settle_legs
from asterai.live.reconcile import believed_positions, compare, latest_entry
from asterai.paper.broker import ENTRY
from asterai.paper.plan import PaperSettingsError, PaperStopped, Plan
from asterai.paper.trader import PaperTrader
from asterai.paths import DataPaths

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_bars (
    t INTEGER PRIMARY KEY, open_ms INTEGER NOT NULL, decided_ms INTEGER NOT NULL,
    equity REAL NOT NULL, cash REAL NOT NULL, open_positions INTEGER NOT NULL,
    notional REAL NOT NULL, peak REAL NOT NULL, paused INTEGER NOT NULL, floor REAL NOT NULL,
    breaker INTEGER NOT NULL, reduce_only TEXT NOT NULL, orders INTEGER NOT NULL,
    sent TEXT NOT NULL, differences TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS live_acks (
    symbol TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, detail TEXT NOT NULL
);
"""
#: how far this machine's clock may stand from the exchange's: signatures carry the
#: local time (V3's nonce must be within 10 s of the exchange's, V1's timestamp within
#: its recvWindow)
MAX_CLOCK_SKEW_MS = 2_000
#: exchange codes that say the key itself is refused (bad signature, unknown key, IP)
KEY_REFUSED = (-1022, -2014, -2015, -1002)
#: refusals the backtest makes too (below the minimum notional at the fill's price; a
#: bar without trades): not counted by the circuit breaker
EXPECTED_REFUSALS = ("-4164:", "-2020:")


class LiveStartError(PaperSettingsError):
    """Live trading cannot start (a refused key, an account it cannot set up): exit 2,
    nothing sent."""


@dataclass(slots=True)
class LiveStatus:
    reasons: dict[str, str]  # why new entries are stopped (empty: they are not)
    last: dict[str, Any] | None = None  # the last live_bars row
    killed: bool = False
    bars: int = 0
    stream_cancels: int = 0  # siblings cancelled on the stream's word, between closes


class LiveTrader(PaperTrader):
    """Trades ``plan`` on the exchange's account of ``keys``; ``note``: how the ramp was
    passed (journaled at start)."""

    def __init__(self, plan: Plan, keys: LiveKeys, *, note: str = "", **kwargs: Any) -> None:
        super().__init__(plan, **kwargs)
        self.keys = keys
        self.note = note
        self.api: PrivateClient | None = None
        self.intents: Intents | None = None
        self.ledger: Ledger | None = None
        self.live = LiveStatus({})
        self.tag = ""  # the account as the client ids know it (its journal's start)
        self.prefix = ""
        self.capital = plan.account.params.capital
        self._state: kernel.State | None = None
        self.setup: list[str] = []  # what ``preflight`` did
        self.user_stream: UserStream | None = None
        self._refused_seen = 0  # the exchange's refusals counted by the metrics
        self._user_stop: asyncio.Event | None = None
        self._user_task: asyncio.Task | None = None
        if self.journal_path.exists():
            from asterai.paper.journal import Journal

            with Journal.open(self.journal_path, readonly=True) as j:
                if j.query("SELECT 1 FROM events WHERE kind = 'live killed' LIMIT 1"):
                    raise PaperStopped(
                        f"{self.journal_path}: the kill switch stopped this live account; "
                        "its journal is final (move it away to start again)"
                    )

    @staticmethod
    def where(paths: DataPaths) -> tuple[Path, Path, Path]:
        return paths.live_journal, paths.live_kill, paths.live_pause

    def now(self) -> int:
        return self.follower.clock.now_ms() or 0

    # -- the start ------------------------------------------------------------------

    async def preflight(self, client: AsterClient, check_clock: bool | None = None) -> list[str]:
        """Check the key and set the account up before anything else: this machine's
        clock within ``MAX_CLOCK_SKEW_MS`` of the exchange's (``check_clock``; default:
        against the real exchange only, a replay's clock being the recording's), the key
        accepted, one-way mode, cross margin and ``live.leverage`` on every traded
        symbol, read back. ``LiveStartError`` otherwise (nothing sent). What was done."""
        api = PrivateClient(client, self.keys.key)
        lev = self.plan.settings.live.leverage
        done = []
        if check_clock is None:
            check_clock = self.plan.settings.base_url == REAL_EXCHANGE_URL
        if check_clock:
            before = time.time() * 1000
            server = await client.server_time()
            local = (before + time.time() * 1000) / 2
            if abs(local - server) > MAX_CLOCK_SKEW_MS:
                raise LiveStartError(
                    f"this machine's clock is {(local - server) / 1000:+.1f} s off the "
                    f"exchange's: signed requests would be refused; synchronise it (NTP) "
                    "and start again"
                )
        try:
            await api.balance()
        except APIError as err:
            if err.code in KEY_REFUSED or err.status in (401, 403):
                raise LiveStartError(
                    f"the exchange refused the key: {err.code}: {err.msg}"
                ) from err
            raise
        try:
            if (await api.call("GET", "positionSide/dual"))["dualSidePosition"]:
                await api.call("POST", "positionSide/dual", {"dualSidePosition": "false"})
                done.append("one-way position mode set")
            symbols = set(self.plan.symbols)
            for p in await api.positions():
                if p["symbol"] not in symbols:
                    continue
                if p["marginType"] != "cross":
                    await api.call("POST", "marginType", {"symbol": p["symbol"],
                                                          "marginType": "CROSSED"})  # fmt: skip
                    done.append(f"{p['symbol']}: cross margin")
                if int(p["leverage"]) != lev:
                    await api.set_leverage(p["symbol"], lev)
            wrong = [p["symbol"] for p in await api.positions() if p["symbol"] in symbols
                     and (p["marginType"] != "cross" or int(p["leverage"]) != lev)]  # fmt: skip
            if wrong or (await api.call("GET", "positionSide/dual"))["dualSidePosition"]:
                raise LiveStartError(
                    f"the account could not be set up (one-way mode, cross margin, leverage "
                    f"{lev}): {', '.join(wrong[:5]) or 'hedge mode stays on'}"
                )
        except APIError as err:
            raise LiveStartError(
                f"the account could not be set up: {err.code}: {err.msg} (an open order or "
                "position blocks a change of margin type or position mode: close it, or "
                "set the account up by hand)"
            ) from err
        done.append(f"leverage {lev} on {len(self.plan.symbols)} symbols, cross, one-way")
        return done

    async def run(self, stop=None) -> None:  # noqa: ANN001 - the paper trader's
        """``preflight``, then paper trading's loop, holding the journal's lock (one
        live trader per journal: ``LiveStartError`` when another holds it)."""
        settings = self.plan.settings
        lock = ProcessLock(self.journal_path.parent / "LOCK")
        try:
            lock.acquire()
        except Locked as err:
            raise LiveStartError(str(err)) from None
        try:
            async with AsterClient(settings.base_url, settings.exchange.following()) as client:
                self.setup = await self.preflight(client)
            await super().run(stop)
        finally:
            await self.close_user_stream()
            lock.release()

    def _open_journal(self, first_ms: int) -> None:
        super()._open_journal(first_ms)
        acct = self.journal.account
        self.tag = f"{self.keys.account}:{acct.start_ms}"
        self.prefix = client_id(self.tag, 0, "X", Leg.ENTRY).split("-")[0]
        self.intents = Intents(self.journal_path, clock=self.now)
        self.ledger = Ledger(self.intents.conn)
        self.intents.conn.executescript(_SCHEMA)
        last = self.intents.conn.execute(
            "SELECT * FROM live_bars ORDER BY t DESC LIMIT 1").fetchone()  # fmt: skip
        self.live.last = dict(last) if last is not None else None
        s = kernel.new_state(len(acct.symbols), self.capital)
        if self.live.last is not None:
            row = self.live.last
            s.account[1] = row["peak"]
            s.account[2] = float(row["breaker"])
            s.account[4] = float(row["paused"])
            s.account[5] = row["floor"]
        self._state = s
        shadow = self.state.last
        if (shadow is not None and shadow["new_floor"] == math.inf
                and (self.live.last is None or self.live.last["t"] < shadow["t"])):
            # the user's pause, taken by the shadow's bar before a crash: the live close
            # of that bar, still to come, takes it too
            self._pause_pending = True
        self._refused_seen = self.intents.conn.execute(
            "SELECT COUNT(*) FROM intents WHERE state = 'REJECTED'").fetchone()[0]  # fmt: skip
        if self.metrics is not None and self.live.last is not None:
            row = self.live.last
            self.metrics.book("exchange", float(row["equity"]), int(row["open_positions"]),
                              float(row["peak"]))  # fmt: skip
        self._start_user_stream()
        self.journal.event(self.now(), "live start",
                           f"account {self.keys.account}; allotment {self.capital:g} USDT; "
                           f"model {acct.facts.get('model')}; {self.note}")  # fmt: skip

    # -- the user-data stream -------------------------------------------------------

    def _start_user_stream(self) -> None:
        url = self.plan.settings.streams_url()
        if url is None or self.api is None or self.user_stream is not None:
            return
        self.user_stream = UserStream(self.api, url, self._on_order)
        self._user_stop = asyncio.Event()
        self._user_task = asyncio.get_running_loop().create_task(
            self.user_stream.run(self._user_stop))  # fmt: skip

    async def close_user_stream(self) -> None:
        if self._user_task is not None:
            self._user_stop.set()
            self._user_task.cancel()
            await asyncio.gather(self._user_task, return_exceptions=True)
            self._user_task = None

    async def _on_order(self, o: dict[str, Any], event_ms: int) -> None:
        """An order update from the stream: journaled when it is news; a stop or target
        filled cancels its sibling at once."""
        cid = str(o.get("c", ""))
        journal = self.intents
        if journal is None or not cid.startswith(self.prefix):
            return  # not the bot's: the next reconciliation reports it
        try:
            news = journal.advance(cid, State(o["X"]), order_id=int(o["i"]),
                                   executed=str(o.get("z")), avg_price=str(o.get("ap")))  # fmt: skip
        except (KeyError, ValueError):
            return  # not in this journal, or a status the table does not know
        if not news or o["X"] != State.FILLED.value:
            return
        row = journal.rows("client_id = ?", (cid,))[0]
        if row["leg"] not in (Leg.STOP.value, Leg.TARGET.value):
            return
        other = Leg.TARGET if row["leg"] == Leg.STOP.value else Leg.STOP
        sibling = journal.latest(row["symbol"], int(row["t"]), other)
        if sibling is not None and State(sibling["state"]).resting:
            try:
                await cancel_leg(journal, self.api, sibling["client_id"], row["symbol"])
                self.live.stream_cancels += 1
            except ExchangeError as err:  # the next close settles it
                log.warning("user-data stream: %s not cancelled: %s", sibling["client_id"], err)

    # -- one cycle ------------------------------------------------------------------

    async def cycle(self, client: AsterClient, stop=None) -> list[int]:  # noqa: ANN001
        if self.api is None or self.api.client is not client:
            self.api = PrivateClient(client, self.keys.key)
            if self.metrics is not None:
                self.metrics.watch_pacer(self.api.pacer)
        done = await super().cycle(client, stop)
        if self.intents is None:
            return done
        if self.state.kill_requested_ms is not None and not self.live.killed:
            await self.flatten()
            return done
        last = self.state.last
        if last is not None and (self.live.last is None or self.live.last["t"] < last["t"]):
            await self.live_bar(int(last["open_ms"]))
        return done

    async def _sync(self) -> tuple[list[dict], list[dict]]:
        """Settle, protect, bring the ledger up to date; (positions, open orders)."""
        api, journal, acct = self.api, self.intents, self.journal.account
        await settle(journal, api)
        current = set()
        for symbol, qty in believed_positions(journal).items():
            side = 1 if qty > 0 else -1
            entry = latest_entry(journal, symbol, side)
            if entry is not None:
                current.add((symbol, int(entry["t"])))
                pos = Position(self.tag, int(entry["t"]), symbol, side, format(abs(qty), "f"),
                               "", "")  # fmt: skip
                await settle_legs(journal, api, pos)
        # legs of positions no longer held (a crash between an exit's fill and their
        # cancel): a target left resting would close part of the next position
        for row in journal.rows("leg IN ('s', 't') AND state IN ('NEW', 'PARTIALLY_FILLED')"):
            if (row["symbol"], int(row["t"])) not in current:
                await cancel_leg(journal, api, row["client_id"], row["symbol"])
        positions = await api.positions()
        tick = dict(zip(acct.symbols, acct.tick.tolist(), strict=True))
        if await ensure_protected(journal, api, self.tag, positions, tick, acct.params):
            positions = await api.positions()
        believed = believed_positions(journal)
        held = {p["symbol"]: Decimal(p["positionAmt"]) for p in positions}
        disputed = {s for s, q in believed.items() if held.get(s, Decimal(0)) != q}
        forced_before = len(self.ledger.forced())
        await self.ledger.sync(api, self.now(), also=disputed)
        forced = self.ledger.forced()
        if len(forced) > forced_before:
            # the exchange closed the bot's positions itself: a loss to look at
            what = ", ".join(sorted({f["symbol"] for f in forced[forced_before:]}))
            self.journal.event(self.now(), "live liquidation",
                               f"the exchange closed {what} itself (liquidation or "
                               "auto-deleverage)")  # fmt: skip
        acks = {r[0] for r in journal.conn.execute("SELECT symbol FROM live_acks")}
        pending = sorted({f["symbol"] for f in forced} - acks)
        if pending:  # (journaled, so a restart keeps it)
            self.live.reasons["liquidation"] = (
                f"the exchange closed {', '.join(pending)} itself: `asterai live "
                "--acknowledge SYMBOL` for each to trade on"
            )
        else:
            self.live.reasons.pop("liquidation", None)
        return positions, await api.open_orders()

    async def live_bar(self, open_ms: int) -> dict[str, Any]:
        """The live account's close of the bar at ``open_ms``: settle, reconcile, decide
        on the exchange's account, send; its ``live_bars`` row."""
        acct, journal = self.journal.account, self.intents
        positions, open_orders = await self._sync()
        acks = frozenset(r[0] for r in journal.conn.execute("SELECT symbol FROM live_acks"))
        rec = compare(journal, positions, open_orders, self.prefix, acks)
        reasons = self.live.reasons
        reasons.pop("reconciliation", None)
        if rec.fail_closed:
            reasons["reconciliation"] = "; ".join(rec.lines())
        refused = self._rejections_in_row()
        if refused >= self.plan.settings.live.max_rejections:
            reasons.setdefault("circuit breaker",
                               f"{refused} orders in a row refused by the exchange")  # fmt: skip
        held, foreign = held_positions(journal, positions)
        busy = {o["symbol"] for o in open_orders if not o["clientOrderId"].startswith(self.prefix)}
        s = self._state
        load_positions(s, acct.symbols, held)
        s.account[0] = self.capital + float(self.ledger.realised())
        bar, late, seen = self.bar(open_ms)
        last = self.live.last
        if last is None or open_ms // DAY_MS != int(last["open_ms"]) // DAY_MS:
            limit = self.plan.settings.paper.daily_loss_limit
            equity = self.capital if last is None else float(last["equity"])
            s.account[4] = 0.0
            s.account[5] = equity * (1.0 - limit) if limit > 0 else 0.0
        if self._pause_pending:  # the user's pause, taken by the shadow's bar: here too
            s.account[4], s.account[5] = 1.0, math.inf
            self._pause_pending = False
        orders, _, curve = decide(s, bar, acct.tick, acct.step, acct.params)
        keep = np.ones(len(orders), dtype=bool)
        for k, row in enumerate(orders):
            symbol = acct.symbols[int(row[0])]
            if symbol in foreign or symbol in busy or (row[1] == ENTRY and reasons):
                keep[k] = False
        sent = await execute(journal, self.api, self.tag, bar.t, acct.symbols, orders[keep], s,
                             held, acct.tick, acct.step, acct.params)  # fmt: skip
        unknown = (State.UNKNOWN, State.SENT)
        if any(x.state in unknown or any(v in unknown for v in (x.protection or {}).values())
               for x in sent):  # fmt: skip
            # an answer lost: asked for at once, so a filled entry is protected now,
            # not at the next close
            await self._sync()
        row = {
            "t": bar.t, "open_ms": open_ms, "decided_ms": self.now(),
            "equity": float(curve[0]), "cash": float(curve[1]), "open_positions": int(curve[2]),
            "notional": float(curve[3]), "peak": float(s.account[1]),
            "paused": int(s.account[4] != 0.0), "floor": float(s.account[5]),
            "breaker": int(s.account[2] != 0.0), "reduce_only": "; ".join(
                f"{k}: {v}" for k, v in reasons.items()),
            "orders": int(keep.sum()),
            "sent": json.dumps([[x.symbol, x.leg.value, x.state.value] for x in sent]),
            "differences": json.dumps(rec.lines() if rec.differences else []),
        }  # fmt: skip
        journal.conn.execute(
            f"INSERT OR REPLACE INTO live_bars ({', '.join(row)}) "
            f"VALUES ({', '.join('?' for _ in row)})", tuple(row.values()),
        )  # fmt: skip
        if rec.differences:
            self.journal.event(self.now(), "live differences", "; ".join(rec.lines())[:2000])
        if late:
            log.info("live: bar %s late: nothing opened", iso_ms(open_ms))
        self.live.last = row
        self.live.bars += 1
        if self.metrics is not None:
            try:
                refused = [r[0] for r in journal.conn.execute(
                    "SELECT detail FROM intents WHERE state = 'REJECTED' ORDER BY rowid "
                    "LIMIT -1 OFFSET ?", (self._refused_seen,))]  # fmt: skip
                self._refused_seen += len(refused)
                self.metrics.live_bar(row, refused)
            except Exception:  # noqa: BLE001 - a metric is not worth a bar
                log.warning("metrics: the live close's update failed", exc_info=True)
        return row

    @staticmethod
    def acknowledge(path: Path, symbol: str, at_ms: int) -> None:
        """The user's word that what is held on ``symbol`` and not the bot's is known:
        reported, left alone, and no longer a reason to stop entries elsewhere."""
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR REPLACE INTO live_acks VALUES (?, ?, ?)",
                         (symbol, at_ms, "acknowledged by the user"))  # fmt: skip
            conn.execute("INSERT INTO events (at_ms, kind, detail) VALUES (?, ?, ?)",
                         (at_ms, "live acknowledged", f"{symbol}: not the bot's, known"))  # fmt: skip
            conn.commit()
        finally:
            conn.close()

    def _rejections_in_row(self) -> int:
        """Orders refused by the exchange since its last acceptance (the newest first),
        but for the refusals the backtest makes too (``EXPECTED_REFUSALS``): those are
        the strategy's, not a fault."""
        n = 0
        for state, detail in self.intents.conn.execute(
            "SELECT state, detail FROM intents WHERE state NOT IN ('INTENT', 'SENT', 'UNKNOWN') "
            "ORDER BY created_ms DESC, rowid DESC LIMIT 200"
        ):
            if state != "REJECTED":
                break
            if not detail.startswith(EXPECTED_REFUSALS):
                n += 1
        return n

    # -- the kill switch ------------------------------------------------------------

    async def flatten(self) -> list[str]:
        """The kill switch: every position of the bot closed at market (reduce-only),
        its resting legs cancelled, then the trader stops for good. The symbols closed."""
        api, journal = self.api, self.intents
        positions, _ = await self._sync()
        held, _ = held_positions(journal, positions)
        t = (self.now() - self.journal.account.start_ms) // self.journal.account.step_ms
        closed = []
        for symbol, h in held.items():
            pos = Position(self.tag, h.entry_t, symbol, h.side, format(h.qty.normalize(), "f"),
                           "", "")  # fmt: skip
            await close_at_market(journal, api, pos, int(t) + 1)
            closed.append(symbol)
        # whatever of the bot's still rests (a leg of a position closed meanwhile)
        for o in await api.open_orders():
            if o["clientOrderId"].startswith(self.prefix):
                try:
                    await api.cancel(o["symbol"], client_id=o["clientOrderId"])
                except APIError as err:
                    log.warning("kill switch: %s not cancelled: %s", o["clientOrderId"], err)
        await settle(journal, api)
        await self.ledger.sync(api, self.now())
        left = [p["symbol"] for p in await api.positions()
                if Decimal(p["positionAmt"]) and p["symbol"] in held]  # fmt: skip
        self.journal.event(self.now(), "live killed",
                           f"{len(closed)} position(s) closed at market"
                           + (f"; still held: {', '.join(left)}" if left else ""))  # fmt: skip
        self.live.killed = True
        self.state.stopped = True
        self.kill_path.unlink(missing_ok=True)
        return closed

    def close(self) -> None:
        if self.intents is not None:
            self.intents.close()
            self.intents = None
        super().close()
