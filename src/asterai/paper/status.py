"""What a user sees of the paper account: its status, read from the journal alone.

``status(path, now_ms)`` is what ``asterai paper --status`` prints and what the live
panel shows: the equity and cash, today's PnL (since the last close of the previous UTC
day), the open positions, the last bar and its age, the next bar due, whether the data
was stale or the kill switch fired, the errors the trader caught and retried (their
count, the last one's type and time: the journal's ``error`` events) and the last
events. It opens the journal read-only:
a trader may be writing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asterai.intervals import DAY_MS, iso_ms
from asterai.paper.journal import Journal


@dataclass(frozen=True, slots=True)
class Status:
    start: str
    bars: int
    late_bars: int
    last_bar: str | None
    last_bar_age_s: float | None
    next_bar_due: str | None
    equity: float
    cash: float
    capital: float
    today_pnl: float
    open_positions: list[dict[str, Any]]
    trades: int
    realised_pnl: float
    fees: float
    funding: float
    stopped: bool
    stale: bool
    events: list[dict[str, Any]]
    errors: int = 0  # unexpected errors caught and retried (exchange errors aside)
    last_error_type: str | None = None
    last_error_at: str | None = None

    def lines(self) -> list[str]:
        ret = self.equity / self.capital - 1.0
        out = [
            f"paper account since {self.start}: {self.bars} bars ({self.late_bars} late), "
            f"{self.trades} trades",
            f"equity {self.equity:.4f} USDT ({ret:+.2%} on {self.capital:g}), cash "
            f"{self.cash:.4f}, today {self.today_pnl:+.4f}",
            f"realised PnL {self.realised_pnl:+.4f} after fees {self.fees:.4f} and funding "
            f"{self.funding:+.4f}",
        ]
        if self.last_bar is not None:
            age = f", {self.last_bar_age_s:.0f} s ago" if self.last_bar_age_s is not None else ""
            out.append(f"last bar {self.last_bar}{age}; next bar due {self.next_bar_due}")
        state = (
            "STOPPED by the kill switch" if self.stopped else "stale data" if self.stale else "ok"
        )
        out.append(f"status: {state}")
        if self.errors:
            out.append(f"errors: {self.errors} caught and retried, the last a "
                       f"{self.last_error_type} at {self.last_error_at}")  # fmt: skip
        if self.open_positions:
            out.append("open positions:")
            for p in self.open_positions:
                out.append(
                    f"  {p['symbol']:<14} {p['side']:<5} qty {p['quantity']:g} entry "
                    f"{p['entry_price']:g} stop {p['stop']:g} target {p['target']:g}"
                )
        else:
            out.append("no open position")
        for e in self.events[-5:]:
            out.append(f"  {iso_ms(e['at_ms'])} {e['kind']}: {e['detail']}")
        return out


def status(path: str | Path, now_ms: int | None = None) -> Status:
    """The account's status from the journal at ``path`` (read-only)."""
    with Journal.open(path, readonly=True) as j:
        acct = j.account
        last = j.last_bar()
        capital = acct.params.capital
        n = j.query("SELECT COUNT(*) AS n, COALESCE(SUM(late), 0) AS late FROM bars")[0]
        totals = j.query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(pnl), 0) AS pnl, COALESCE(SUM(fees), 0) AS fees,"
            " COALESCE(SUM(funding), 0) AS funding FROM trades"
        )[0]
        events = j.query("SELECT at_ms, kind, detail FROM events ORDER BY seq DESC LIMIT 20")[::-1]
        errors = j.query("SELECT COUNT(*) AS n, MAX(seq) AS seq FROM events WHERE kind = 'error'")
        caught = {"errors": int(errors[0]["n"])}
        if caught["errors"]:
            e = j.query("SELECT at_ms, detail FROM events WHERE seq = ?", errors[0]["seq"])[0]
            caught["last_error_type"] = e["detail"].split(":", 1)[0]
            caught["last_error_at"] = iso_ms(int(e["at_ms"]))
        if last is None:
            return Status(
                "not yet", 0, 0, None, None, None, capital, capital, capital, 0.0, [], 0, 0.0,
                0.0, 0.0, False, False, events, **caught,
            )  # fmt: skip
        day = int(last["open_ms"]) // DAY_MS * DAY_MS
        before = j.query("SELECT equity FROM bars WHERE open_ms < ? ORDER BY t DESC LIMIT 1", day)
        day_start = before[0]["equity"] if before else capital
        positions = j.query(
            "SELECT symbol, side, quantity, entry_price, stop, target, entry_t FROM positions "
            "WHERE t = ?", last["t"],
        )  # fmt: skip
        stopped = bool(j.query("SELECT 1 FROM bars WHERE kill = 1 LIMIT 1"))
        kinds = [e["kind"] for e in events if e["kind"] in ("stale", "resumed")]
        close_ms = int(last["open_ms"]) + acct.step_ms - 1
        return Status(
            start=iso_ms(acct.start_ms),
            bars=int(n["n"]),
            late_bars=int(n["late"]),
            last_bar=iso_ms(int(last["open_ms"])),
            last_bar_age_s=None if now_ms is None else (now_ms - close_ms) / 1000,
            next_bar_due=iso_ms(close_ms + acct.step_ms),
            equity=float(last["equity"]),
            cash=float(last["cash"]),
            capital=capital,
            today_pnl=float(last["equity"]) - float(day_start),
            open_positions=positions,
            trades=int(totals["n"]),
            realised_pnl=float(totals["pnl"]),
            fees=float(totals["fees"]),
            funding=float(totals["funding"]),
            stopped=stopped,
            stale=bool(kinds) and kinds[-1] == "stale",
            events=events,
            **caught,
        )
