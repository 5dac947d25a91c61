"""What the dashboard shows of an account, read from its journal alone (read-only: a
trader may be writing it), as plain JSON-ready dictionaries.

An account is a journal under a data root (``Source``): paper trading's
(``data/paper/journal.sqlite``) or live trading's (``data/live/journal.sqlite``, whose
``bars`` are its shadow's and whose ``live_bars`` are the exchange account's). The views
are the ones ``asterai paper --status`` and ``asterai live --report`` print
(``paper.status``, ``live.report``), plus what a page needs beside them: the unrealised
PnL at the newest close, the resting stop and target of each live position, the equity
curve beside its shadow and the baselines, and the controls in force.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asterai.data.store import to_epoch_ms
from asterai.intervals import DAY_MS, iso_ms
from asterai.live.ledger import Ledger
from asterai.live.report import report as live_report
from asterai.paper.journal import has_table, pause_starts, read_only
from asterai.paper.status import status as paper_status
from asterai.paths import DataPaths
from asterai.watch.controls import FINAL

KINDS = ("paper", "live")
#: the most points an equity curve is sent with (the newest kept; evenly thinned)
MAX_POINTS = 2_000
SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class Source:
    """One account: ``id`` (unique on the page), ``kind`` (paper or live), its files."""

    id: str
    kind: str
    root: Path
    journal: Path
    kill: Path
    pause: Path

    @property
    def exists(self) -> bool:
        return self.journal.exists()


def sources(roots: list[Path], always: tuple[str, ...] = ()) -> list[Source]:
    """The accounts under ``roots``: each kind whose journal exists, and those of
    ``always`` (a trader's own, before its journal is made)."""
    out = []
    for k, root in enumerate(roots):
        paths = DataPaths.at(root)
        prefix = "" if len(roots) == 1 else f"{SAFE_ID.sub('-', root.name) or 'root'}{k}-"
        for kind in KINDS:
            files = (paths.paper_journal, paths.paper_kill, paths.paper_pause) if (
                kind == "paper") else (paths.live_journal, paths.live_kill, paths.live_pause)
            if files[0].exists() or kind in always:
                out.append(Source(prefix + kind, kind, root, *files))
    return out


def _read(src: Source) -> Any:
    return read_only(src.journal)


def _rows(conn: sqlite3.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(sql, args)]


def _meta(conn: sqlite3.Connection) -> dict[str, Any]:
    return {r["key"]: json.loads(r["value"]) for r in conn.execute("SELECT * FROM meta")}


def _num(x: Any) -> float | None:
    """A finite float for JSON, or None."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _last_closes(conn: sqlite3.Connection, symbols: list[str],
                 wanted: list[str]) -> dict[str, float]:  # fmt: skip
    """The newest journaled close of each symbol of ``wanted`` (the positions': a few;
    each found from the newest bar back, by the table's key)."""
    index = {s: k for k, s in enumerate(symbols)}
    out = {}
    for s in wanted:
        row = conn.execute("SELECT close FROM bar_inputs WHERE symbol = ? AND close IS NOT "
                           "NULL ORDER BY t DESC LIMIT 1", (index[s],)).fetchone()  # fmt: skip
        if row is not None:
            out[s] = float(row[0])
    return out


# -- positions ---------------------------------------------------------------------


def positions(src: Source) -> list[dict[str, Any]]:
    """The open positions at the newest close, with their stop, target and unrealised
    PnL at that close: the live account's on the exchange (as its fills ledger holds
    them, the legs resting there), or paper trading's."""
    if not src.exists:
        return []
    with _read(src) as conn:
        meta = _meta(conn)
        symbols, start_ms, step_ms = meta["symbols"], int(meta["start_ms"]), int(meta["step_ms"])
        out = []
        if src.kind == "live":
            if not has_table(conn, "live_fills"):
                return []
            legs = _rows(conn, "SELECT symbol, leg, price, stop_price FROM intents WHERE leg IN "
                         "('s', 't') AND state IN ('NEW', 'PARTIALLY_FILLED') "
                         "ORDER BY created_ms")  # fmt: skip
            resting = {(r["symbol"], r["leg"]): r for r in legs}
            held = [x for x in Ledger(conn, create=False).trades(start_ms, step_ms)
                    if x.exit_t is None]  # fmt: skip
            close = _last_closes(conn, symbols, [x.symbol for x in held])
            for x in held:
                stop = resting.get((x.symbol, "s"))
                target = resting.get((x.symbol, "t"))
                out.append(_position(
                    x.symbol, x.side, float(x.quantity), float(x.entry_price),
                    _num(stop["stop_price"]) if stop else None,
                    _num(target["price"] or target["stop_price"]) if target else None,
                    start_ms + x.entry_t * step_ms, close.get(x.symbol),
                ))  # fmt: skip
            return out
        last = conn.execute("SELECT MAX(t) FROM bars").fetchone()[0]
        held = _rows(conn, "SELECT * FROM positions WHERE t = ?", last)
        close = _last_closes(conn, symbols, [p["symbol"] for p in held])
        for p in held:
            out.append(_position(
                p["symbol"], 1 if p["side"] == "long" else -1, p["quantity"], p["entry_price"],
                _num(p["stop"]), _num(p["target"]), start_ms + int(p["entry_t"]) * step_ms,
                close.get(p["symbol"]),
            ))  # fmt: skip
        return out


def _position(symbol: str, side: int, qty: float, entry: float, stop: float | None,
              target: float | None, entry_ms: int, close: float | None) -> dict[str, Any]:  # fmt: skip
    unrealised = None if close is None else side * (close - entry) * qty
    return {
        "symbol": symbol, "side": "long" if side > 0 else "short", "quantity": float(qty),
        "entry_price": float(entry), "entry_time": iso_ms(entry_ms), "stop": stop,
        "target": target, "last_close": close, "unrealised_pnl": _num(unrealised),
    }  # fmt: skip


# -- status ------------------------------------------------------------------------


def status(src: Source, now_ms: int, live_settings: tuple[float, float] = (14.0, 0.01),
           feed: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The account at a glance. ``live_settings``: the ramp's (min paper days,
    tracking tolerance); ``feed``: what only the trader's process knows (its streams).
    A live account's figures are the exchange account's (``live_bars``, the fills
    ledger), its shadow's equity beside them."""
    base: dict[str, Any] = {"account": src.id, "kind": src.kind, "root": str(src.root),
                            "journal": src.exists, "feed": feed}  # fmt: skip
    controls = {"kill_asked": src.kill.exists(), "pause_asked": src.pause.exists(),
                "killed": False, "paused": False, "breaker": False, "reduce_only": ""}  # fmt: skip
    base["controls"] = controls
    if not src.exists:
        return base | {"state": "starting", "bars": 0}
    st = paper_status(src.journal, now_ms)
    held = positions(src)
    base |= {
        "start": st.start, "bars": st.bars, "late_bars": st.late_bars,
        "last_bar": st.last_bar, "last_bar_age_s": st.last_bar_age_s,
        "next_bar_due": st.next_bar_due, "stale": st.stale, "capital": st.capital,
        "equity": st.equity, "cash": st.cash, "today_pnl": st.today_pnl,
        "realised_pnl": st.realised_pnl, "fees": st.fees, "funding": st.funding,
        "trades": st.trades, "open_positions": len(held),
        "unrealised_pnl": sum(p["unrealised_pnl"] or 0.0 for p in held),
        "errors": st.errors, "last_error": (f"{st.last_error_type} at {st.last_error_at}"
                                            if st.errors else None),
        "reconciliation": None, "ramp": None, "shadow_equity": None,
    }  # fmt: skip
    with _read(src) as conn:
        max_dd = float(_meta(conn)["params"]["max_drawdown"])
        eq = np.array([r[0] for r in conn.execute("SELECT equity FROM bars ORDER BY t")])
        # the kernel's breaker: a close below its peak (from the capital on) by max_drawdown
        peak = np.maximum.accumulate(np.r_[st.capital, eq])[1:]
        controls["breaker"] = bool(np.any(eq < peak * (1.0 - max_dd))) if len(eq) else False
        controls["paused"] = _paused_today(conn)
        controls["killed"] = st.stopped
        if src.kind == "live":
            _live_status(conn, base, controls)
        else:
            base["reconciliation"] = _paper_reconciliation(src, st.last_bar)
    if src.kind == "live":
        r = live_report_of(src.journal, live_settings)
        line, why = r.ramp()
        base["ramp"] = line + (f" ({'; '.join(why)})" if why else "")
        mine = [p.live for p in r.pairs if p.live is not None]
        base |= {
            "trades": r.closed_live, "realised_pnl": sum(float(x.pnl) for x in mine),
            "fees": sum(float(x.fees) for x in mine),
            "funding": sum(float(x.funding) for x in mine),
        }  # fmt: skip
    base["state"] = ("stopped" if controls["killed"] else "stale" if st.stale else "ok")
    return base


def _paper_reconciliation(src: Source, last_bar: str | None) -> str:
    """What the paper account's last report (``asterai paper --report``) said of it."""
    path = DataPaths.at(src.root).paper / "report" / "reconciliation.json"
    if not path.exists():
        return "no report yet: asterai paper --report"
    r = json.loads(path.read_text())
    end = r["window"][1]
    engine = "engine equal" if r.get("engine_equal") else "the engine DIFFERS (a defect)"
    since = "" if end == last_bar else "; the journal has gone on since"
    return f"report to {end}: {engine}; backtest {r.get('batch')}{since}"


def _live_status(conn: sqlite3.Connection, base: dict[str, Any],
                 controls: dict[str, Any]) -> None:  # fmt: skip
    """The exchange account's figures over the shadow's in ``base``: its equity, cash,
    today's PnL, its controls, the reconciliation."""
    # the shadow's kill switch bar is not the live account's (``controls.FINAL``)
    controls["killed"] = conn.execute("SELECT 1 FROM events WHERE kind = ? LIMIT 1",
                                      (FINAL["live"],)).fetchone() is not None  # fmt: skip
    base["shadow_equity"], base["today_pnl"], base["cash"] = base["equity"], None, None
    if not has_table(conn, "live_bars"):
        return
    row = conn.execute("SELECT * FROM live_bars ORDER BY t DESC LIMIT 1").fetchone()
    if row is None:
        return
    controls.update(paused=bool(row["paused"]), breaker=bool(row["breaker"]),
                    reduce_only=row["reduce_only"])  # fmt: skip
    diffs = json.loads(row["differences"])
    base["reconciliation"] = "; ".join(diffs) if diffs else "the journal equals the exchange"
    day = int(row["open_ms"]) // DAY_MS * DAY_MS
    before = conn.execute("SELECT equity FROM live_bars WHERE open_ms < ? ORDER BY t DESC "
                          "LIMIT 1", (day,)).fetchone()  # fmt: skip
    base |= {
        "equity": float(row["equity"]), "cash": float(row["cash"]),
        "today_pnl": float(row["equity"]) - (float(before[0]) if before else base["capital"]),
        "live_last_bar": iso_ms(int(row["open_ms"])),
    }  # fmt: skip


#: the newest live report of each journal, with the files' state it was read from
_REPORTS: dict[Path, tuple[tuple, Any]] = {}


def live_report_of(journal: Path, settings: tuple[float, float]) -> Any:
    """``live.report.report`` of ``journal``, read again only once the journal changed
    (its file or its WAL): the page asks for the status every two seconds."""
    stamp = (settings, *(
        (f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else None
        for f in (journal, journal.with_name(journal.name + "-wal"))
    ))  # fmt: skip
    have = _REPORTS.get(journal)
    if have is None or have[0] != stamp:
        _REPORTS[journal] = have = (stamp, live_report(journal, *settings))
    return have[1]


def _paused_today(conn: sqlite3.Connection) -> bool:
    """Whether new entries are paused now: a pause began at a close of the newest bar's
    UTC day (the kernel's rule, ``journal.pause_starts``; a new day's floor lifts it)."""
    last = conn.execute("SELECT open_ms FROM bars ORDER BY t DESC LIMIT 1").fetchone()
    if last is None:
        return False
    day = int(last[0]) // DAY_MS * DAY_MS
    # from the day's first bar, which sets its floor (an earlier pause ends there)
    rows = _rows(conn, "SELECT new_floor, equity FROM bars WHERE open_ms >= ? ORDER BY t", day)
    return next(pause_starts(rows), None) is not None


# -- trades, equity, events --------------------------------------------------------


def trades(src: Source, limit: int) -> list[dict[str, Any]]:
    """The newest closed trades first: the exchange's fills for live, paper's otherwise."""
    if not src.exists:
        return []
    with _read(src) as conn:
        meta = _meta(conn)
        start_ms, step_ms = int(meta["start_ms"]), int(meta["step_ms"])

        def at(t: Any) -> str | None:
            return None if t is None else iso_ms(start_ms + int(t) * step_ms)

        if src.kind == "live":
            if not has_table(conn, "live_fills"):
                return []
            done = [x for x in Ledger(conn, create=False).trades(start_ms, step_ms)
                    if x.exit_t is not None]  # fmt: skip
            done.sort(key=lambda x: (x.exit_t, x.symbol), reverse=True)
            return [{
                "symbol": x.symbol, "side": "long" if x.side > 0 else "short",
                "entry_time": at(x.entry_t), "exit_time": at(x.exit_t),
                "entry_price": float(x.entry_price), "exit_price": _num(x.exit_price),
                "quantity": float(x.quantity), "fees": float(x.fees),
                "funding": float(x.funding), "pnl": float(x.pnl), "exit_reason": None,
            } for x in done[:limit]]  # fmt: skip
        rows = _rows(conn, "SELECT * FROM trades ORDER BY exit_t DESC, symbol LIMIT ?", limit)
        return [{
            "symbol": r["symbol"], "side": r["side"], "entry_time": at(r["entry_t"]),
            "exit_time": at(r["exit_t"]), "entry_price": _num(r["entry_price"]),
            "exit_price": _num(r["exit_price"]), "quantity": _num(r["quantity"]) or 0.0,
            "fees": _num(r["fees"]) or 0.0, "funding": _num(r["funding"]) or 0.0,
            "pnl": _num(r["pnl"]) or 0.0, "exit_reason": r["exit_reason"],
        } for r in rows]  # fmt: skip


def _thin(points: list[list[float]], n: int = MAX_POINTS) -> list[list[float]]:
    if len(points) <= n:
        return points
    keep = np.unique(np.linspace(0, len(points) - 1, n).round().astype(int))
    return [points[k] for k in keep]


def _curve_from_csv(path: Path, column: str, start_ms: int,
                    step_ms: int) -> list[list[float]] | None:  # fmt: skip
    """A report's curve (``time``: each bar's open), at each close from ``start_ms``."""
    if not path.exists():
        return None
    frame = pd.read_csv(path)
    if column not in frame or "time" not in frame:
        return None
    ms = to_epoch_ms(pd.to_datetime(frame["time"], utc=True))
    keep = (ms >= start_ms) & frame[column].notna().to_numpy()
    return [[int(t) + step_ms, float(e)]
            for t, e in zip(ms[keep], frame[column].to_numpy()[keep], strict=True)]


def equity(src: Source) -> dict[str, Any]:
    """The equity at each close (epoch ms of the close, USDT), by curve: the account's
    (``paper``, or ``live`` and its ``shadow``), and for paper the backtest over the
    same bars and the baselines as of the last ``asterai paper --report``."""
    curves: dict[str, list[list[float]]] = {}
    capital = None
    if src.exists:
        with _read(src) as conn:
            meta = _meta(conn)
            step_ms, start_ms = int(meta["step_ms"]), int(meta["start_ms"])
            capital = float(meta["params"]["capital"])
            own = [[int(r[0]) + step_ms, float(r[1])]
                   for r in conn.execute("SELECT open_ms, equity FROM bars ORDER BY t")]  # fmt: skip
            if src.kind == "live":  # the account's own curve first (the page's main one)
                if has_table(conn, "live_bars"):
                    curves["live"] = [[int(r[0]) + step_ms, float(r[1])] for r in conn.execute(
                        "SELECT open_ms, equity FROM live_bars ORDER BY t")]  # fmt: skip
                curves["shadow"] = own
            else:
                curves["paper"] = own
                folder = DataPaths.at(src.root).paper / "report"
                shadow = _curve_from_csv(folder / "backtest_equity.csv", "equity", start_ms,
                                         step_ms)
                if shadow:
                    curves["backtest"] = shadow
                base = folder / "baselines_equity.csv"
                if base.exists():
                    for name in pd.read_csv(base, nrows=0).columns:
                        if name != "time" and (c := _curve_from_csv(base, name, start_ms, step_ms)):
                            curves[name] = c
    return {"capital": capital, "curves": {k: _thin(v) for k, v in curves.items()}}


def events(src: Source, after: int, limit: int) -> list[dict[str, Any]]:
    """The journal's events, oldest first: the first ``limit`` after ``seq`` ``after``,
    or (``after`` 0) the newest ``limit``."""
    if not src.exists:
        return []
    with _read(src) as conn:
        if after:  # the next ones, to page forward without a gap
            rows = _rows(conn, "SELECT seq, at_ms, kind, detail FROM events WHERE seq > ? "
                         "ORDER BY seq LIMIT ?", after, limit)  # fmt: skip
        else:  # the newest
            rows = _rows(conn, "SELECT seq, at_ms, kind, detail FROM events "
                         "ORDER BY seq DESC LIMIT ?", limit)[::-1]  # fmt: skip
    return [{"seq": r["seq"], "at": iso_ms(int(r["at_ms"])), "kind": r["kind"],
             "detail": r["detail"]} for r in rows]  # fmt: skip


def rejections(src: Source, limit: int) -> list[dict[str, Any]]:
    """The newest refused orders first, with their reasons: the strategy's (paper, or the
    shadow's) and, for live, the exchange's."""
    if not src.exists:
        return []
    with _read(src) as conn:
        meta = _meta(conn)
        start_ms, step_ms = int(meta["start_ms"]), int(meta["step_ms"])
        out = [{"time": iso_ms(start_ms + int(r["t"]) * step_ms), "symbol": r["symbol"],
                "side": r["side"], "reason": r["reason"], "by": "strategy"}
               for r in _rows(conn, "SELECT * FROM rejections ORDER BY bar DESC, rowid DESC "
                              "LIMIT ?", limit)]  # fmt: skip
        if src.kind == "live" and has_table(conn, "intents"):
            out += [{"time": iso_ms(int(r["updated_ms"])), "symbol": r["symbol"],
                     "side": r["side"].lower(), "reason": r["detail"], "by": "exchange"}
                    for r in _rows(conn, "SELECT * FROM intents WHERE state = 'REJECTED' "
                                   "ORDER BY updated_ms DESC LIMIT ?", limit)]  # fmt: skip
            out.sort(key=lambda r: r["time"], reverse=True)
    return out[:limit]
