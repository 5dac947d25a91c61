"""The live account against its shadow, and the ramp's scale-up line: what ``asterai
live --status`` and ``--report`` print, read from the live journal alone (read-only: a
trader may be writing it).

The shadow is the same bars through the simulated broker (the journal's ``trades``
and ``bars``); the live account is the exchange's fills (``live_fills``, grouped into
trades by ``ledger.Ledger.trades``) and the equity decided at each close
(``live_bars``). Trades are paired by symbol and entry bar; for each pair:

- **slippage** at the entry and the exit, in basis points of the shadow's price
  (positive: the live fill was worse for the account);
- **fees** and **funding** as the exchange charged them against the simulated ones;
- **latency**: from the bar's close to the exchange's acknowledgement of the entry
  (the intent's last update, on the exchange's clock);
- the trades only one side made, and why where the journal says (a refusal).

The **tracking error** is the standard deviation of the daily difference between the
live and the shadow account's returns. The **scale-up line** says "hold" until every
condition holds: at least ``live.min_paper_days`` days and 30 closed trades live, the
live daily returns' probabilistic Sharpe ratio (against 0) at least 0.95, the
tracking error within ``live.tracking_tolerance`` and no trade made by one account
alone; then "may raise to X" (twice the allotment). Raising it is the user's command.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asterai.backtest.metrics import probabilistic_sharpe
from asterai.intervals import DAY_MS, iso_ms
from asterai.live.ledger import Ledger, LiveTrade

#: closed live trades before the ramp may say anything but "hold"
MIN_TRADES = 30
#: the probabilistic Sharpe ratio the live returns must reach
MIN_PSR = 0.95


@dataclass(slots=True)
class Pair:
    symbol: str
    entry_t: int
    live: LiveTrade | None
    shadow: dict[str, Any] | None

    @property
    def side(self) -> int:
        if self.live is not None:
            return self.live.side
        return 1 if self.shadow["side"] == "long" else -1

    def slippage_bps(self, which: str) -> float | None:
        """Live against shadow at the entry or the exit, in basis points, positive when
        the live fill cost the account."""
        if self.live is None or self.shadow is None:
            return None
        live = self.live.entry_price if which == "entry" else self.live.exit_price
        if live is None:
            return None
        ref = self.shadow[f"{which}_price"]
        sign = self.side if which == "entry" else -self.side
        return float(sign * (float(live) - ref) / ref * 1e4)


@dataclass(slots=True)
class LiveReport:
    capital: float
    start: str
    last: str | None
    days: float
    bars: int
    equity: float | None
    shadow_equity: float | None
    pairs: list[Pair]
    tracking_error: float | None
    psr: float | None
    latency_ms: list[float]
    reduce_only: str
    events: list[dict[str, Any]]
    min_days: float
    tolerance: float
    refusals: dict[str, int] = field(default_factory=dict)
    open_both: int = 0
    open_one: int = 0  # positions open in one account only

    @property
    def matched(self) -> list[Pair]:
        return [p for p in self.pairs if p.live is not None and p.shadow is not None]

    @property
    def only_live(self) -> list[Pair]:
        return [p for p in self.pairs if p.shadow is None]

    @property
    def only_shadow(self) -> list[Pair]:
        return [p for p in self.pairs if p.live is None]

    @property
    def closed_live(self) -> int:
        return sum(1 for p in self.pairs if p.live is not None and p.live.exit_t is not None)

    def ramp(self) -> tuple[str, list[str]]:
        """("hold" or "may raise to X", the reasons it holds)."""
        why = []
        if self.days < self.min_days:
            why.append(f"{self.days:.1f} of {self.min_days:g} days")
        if self.closed_live < MIN_TRADES:
            why.append(f"{self.closed_live} of {MIN_TRADES} closed trades")
        if self.psr is None or self.psr < MIN_PSR:
            psr = "n/a" if self.psr is None else f"{self.psr:.2f}"
            why.append(f"probabilistic Sharpe {psr} < {MIN_PSR}")
        if self.tracking_error is None or self.tracking_error > self.tolerance:
            te = "n/a" if self.tracking_error is None else f"{self.tracking_error:.4f}"
            why.append(f"tracking error {te} above {self.tolerance:g}")
        one_sided = len(self.only_live) + len(self.only_shadow) + self.open_one
        if one_sided:
            why.append(f"{one_sided} trade(s) made by one account only")
        if self.reduce_only:
            why.append(f"entries stopped: {self.reduce_only}")
        return ("hold" if why else f"may raise to {2 * self.capital:g} USDT"), why

    def lines(self) -> list[str]:
        def med(xs: list[float | None]) -> str:
            v = [x for x in xs if x is not None]
            return f"{np.median(v):+.2f}" if v else "n/a"

        m = self.matched
        out = [
            f"live account since {self.start}: {self.bars} bars ({self.days:.1f} days), last "
            f"{self.last or 'none'}; allotment {self.capital:g} USDT",
        ]
        if self.equity is not None:
            out.append(f"equity live {self.equity:.4f}, shadow {self.shadow_equity:.4f} "
                       f"({self.equity - self.shadow_equity:+.4f})")  # fmt: skip
        fees_l = sum(float(p.live.fees) for p in m)
        fees_s = sum(p.shadow["fees"] for p in m)
        fund_l = sum(float(p.live.funding) for p in m)
        fund_s = sum(p.shadow["funding"] for p in m)
        lat = self.latency_ms
        out += [
            f"trades: {len(m)} in both, {len(self.only_live)} live only, "
            f"{len(self.only_shadow)} shadow only; open: {self.open_both} in both, "
            f"{self.open_one} in one only",
            f"slippage against the shadow (median, bps): entry "
            f"{med([p.slippage_bps('entry') for p in m])}, exit "
            f"{med([p.slippage_bps('exit') for p in m])}",
            f"fees live {fees_l:.4f} vs shadow {fees_s:.4f}; funding live {fund_l:+.4f} vs "
            f"shadow {fund_s:+.4f}",
            "latency close to acknowledgement: "
            + (
                f"p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms"
                if lat
                else "n/a"
            ),  # fmt: skip
            "tracking error (daily): "
            + ("n/a" if self.tracking_error is None else f"{self.tracking_error:.4f}"),
        ]
        for p in self.only_shadow + self.only_live:
            who = "shadow" if p.live is None else "live"
            out.append(f"  only {who}: {p.symbol} entered at bar {p.entry_t}")
        if self.refusals:
            out.append("refused by the exchange: " + ", ".join(
                f"{k} x{v}" for k, v in sorted(self.refusals.items())))  # fmt: skip
        if self.reduce_only:
            out.append(f"ENTRIES STOPPED: {self.reduce_only}")
        line, why = self.ramp()
        psr = "n/a" if self.psr is None else f"{self.psr:.2f}"
        out.append(
            f"scale-up: {self.days:.1f} days, {self.closed_live} closed trades, "
            f"probabilistic Sharpe {psr}: {line}" + (f" ({'; '.join(why)})" if why else "")
        )
        return out


def report(path: Path, min_days: float, tolerance: float) -> LiveReport:
    """The live journal at ``path`` read into a ``LiveReport``."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return _report(conn, min_days, tolerance)
    finally:
        conn.close()


def _report(conn: sqlite3.Connection, min_days: float, tolerance: float) -> LiveReport:
    meta = {r["key"]: json.loads(r["value"]) for r in conn.execute("SELECT * FROM meta")}
    start_ms, step_ms = int(meta["start_ms"]), int(meta["step_ms"])
    capital = float(meta["params"]["capital"])
    has_live = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'live_bars'").fetchone()
    live_bars = [dict(r) for r in conn.execute("SELECT * FROM live_bars ORDER BY t")] \
        if has_live else []  # fmt: skip
    shadow_bars = {r["t"]: dict(r) for r in conn.execute("SELECT t, equity FROM bars")}
    trades = Ledger(conn, create=False).trades(start_ms, step_ms) if has_live else []
    shadow = [dict(r) for r in conn.execute("SELECT * FROM trades ORDER BY entry_t, symbol")]
    pairs: dict[tuple[str, int], Pair] = {}
    for x in trades:
        pairs[(x.symbol, x.entry_t)] = Pair(x.symbol, x.entry_t, x, None)
    for s in shadow:
        key = (s["symbol"], int(s["entry_t"]))
        if key in pairs:
            pairs[key].shadow = s
        else:
            pairs[key] = Pair(s["symbol"], int(s["entry_t"]), None, s)
    # positions still open: the shadow's are in its positions table at its last bar
    last_t = max(shadow_bars) if shadow_bars else -1
    still = {(r["symbol"], int(r["entry_t"])) for r in conn.execute(
        "SELECT symbol, entry_t FROM positions WHERE t = ?", (last_t,))}  # fmt: skip
    open_pairs = {k: p for k, p in pairs.items() if p.live is not None and p.live.exit_t is None}
    for key in open_pairs:
        del pairs[key]
    open_both = sum(1 for k in open_pairs if k in still)
    open_one = len(open_pairs) - open_both + len(still - set(open_pairs))
    equity = live_bars[-1]["equity"] if live_bars else None
    shadow_eq = shadow_bars.get(live_bars[-1]["t"], {}).get("equity") if live_bars else None
    te = psr = None
    if live_bars:
        days: dict[int, tuple[float, float]] = {}
        for b in live_bars:
            s = shadow_bars.get(b["t"])
            if s is not None:
                days[b["open_ms"] // DAY_MS] = (b["equity"], s["equity"])
        ends = np.array([days[d] for d in sorted(days)])
        if len(ends) >= 2:
            prev = np.vstack([[capital, capital], ends[:-1]])
            r = ends / prev - 1.0
            te = float(np.std(r[:, 0] - r[:, 1], ddof=1))
            psr = probabilistic_sharpe(r[:, 0])
    latency = []
    if has_live:
        for r in conn.execute("SELECT t, updated_ms FROM intents WHERE leg = 'e' AND "
                              "order_id IS NOT NULL"):  # fmt: skip
            close = start_ms + int(r["t"]) * step_ms  # the close of bar t - 1: the decision
            latency.append(float(r["updated_ms"] - close))
    refusals: dict[str, int] = {}
    reduce_only = live_bars[-1]["reduce_only"] if live_bars else ""
    if has_live:
        for r in conn.execute("SELECT detail FROM intents WHERE state = 'REJECTED'"):
            code = r["detail"].split(":")[0]
            refusals[code] = refusals.get(code, 0) + 1
    events = [dict(r) for r in conn.execute(
        "SELECT * FROM events ORDER BY seq DESC LIMIT 10")]  # fmt: skip
    last_ms = live_bars[-1]["open_ms"] if live_bars else None
    n_days = (len(live_bars) * step_ms) / DAY_MS
    return LiveReport(
        capital, iso_ms(start_ms), iso_ms(last_ms) if last_ms is not None else None, n_days,
        len(live_bars), equity, shadow_eq, sorted(pairs.values(), key=lambda p: (p.entry_t, p.symbol)),
        te, psr, latency, reduce_only, events, min_days, tolerance, refusals, open_both,
        open_one,
    )  # fmt: skip
