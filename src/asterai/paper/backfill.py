"""The bars a restarted paper trader missed, fetched from the exchange.

The follower's warm-up holds what the features need: the newest ``KEEP_BARS`` bars of
each timeframe and each symbol's newest funding rates. A trader that was down for
longer (a month without running is 720 hourly bars; a few days is more funding events
than the warm-up asks for) would otherwise trade the bars it no longer holds as empty
ones: no stop, target or funding applied to the positions it carried through them.

So on every restart the trader asks the exchange for the span it missed, the
collector's way (``data.collector.plan_pages``' weight-optimal pages, through the same
client, limiter and 429/418 rules; only closed bars; impossible bars refused and
logged, as the follower refuses them; nothing filled in):

- every base bar of its symbols from the first bar after the journal's last through
  the newest closed one, plus the day before it, which the universe's 24-hour volume
  rule reads;
- every funding rate settled after the journal's last bar's open, up to the exchange's
  clock at the fetch.

Each missed bar is then traded (late: its signals open nothing) with its own prices,
point-in-time tradeable flag and funding, exactly as the backtest would see that bar.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from asterai.data.collector import gather_or_cancel, plan_pages
from asterai.data.universe import VOLUME_WINDOW_MS, known_tick, tradeable_kernel
from asterai.deploy.follow import Follower
from asterai.exchange.client import AsterClient, parse_funding
from asterai.exchange.weights import FUNDING_MAX_LIMIT
from asterai.intervals import iso_ms
from asterai.limits import OPTIMAL_KLINE_PAGE

log = logging.getLogger(__name__)

#: the base bars' fields a missed bar is traded with
FIELDS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class Missed:
    """Base bars ``times[0]..times[-1]`` (the grid) of the account's symbols, and their
    funding settled in ``(times[0], until_ms]``."""

    times: np.ndarray  # (T,) open times, every step of the grid
    step_ms: int
    fields: dict[str, np.ndarray]  # FIELDS -> (N, T); NaN: the symbol has no bar there
    codes: np.ndarray  # (N, T) the universe's reason code; -1: no bar
    funding: list[tuple[np.ndarray, np.ndarray]]  # per symbol: settlement times, rates
    until_ms: int  # the exchange's clock at the fetch: funding up to here is complete

    def column(self, open_ms: int) -> int | None:
        """The grid column of the bar that opened at ``open_ms``, or None."""
        if not len(self.times) or open_ms < self.times[0] or open_ms > self.times[-1]:
            return None
        return int((open_ms - self.times[0]) // self.step_ms)

    def funding_in(self, lo_ms: int, hi_ms: int) -> np.ndarray | None:
        """Each symbol's summed funding rates settled in ``(lo_ms, hi_ms]``, or None when
        that span is not all inside what was fetched."""
        if not len(self.times) or lo_ms < self.times[0] or hi_ms > self.until_ms:
            return None
        out = np.zeros(len(self.funding))
        for k, (t, r) in enumerate(self.funding):
            inside = (t > lo_ms) & (t <= hi_ms)
            out[k] = float(r[inside].sum())
        return out


async def fetch_missed(
    client: AsterClient,
    follower: Follower,
    symbols: list[str],
    first_ms: int,
    last_ms: int,
    now_ms: int,
) -> Missed:
    """The base bars ``[first_ms, last_ms]`` of ``symbols`` and their funding, from the
    exchange (``now_ms``: its clock; a bar not closed by then is not taken)."""
    step = follower.step
    base = follower.fs.base_interval
    lead = VOLUME_WINDOW_MS - step  # the bars before the first that its 24 h volume reads
    pages = plan_pages(first_ms - lead, last_ms, step, OPTIMAL_KLINE_PAGE)
    grid = np.arange(first_ms - lead, last_ms + 1, step, dtype=np.int64)

    async def bars_of(symbol: str) -> dict[str, np.ndarray]:
        parts = [
            await follower.closed_klines(
                client, symbol, base, now_ms, start_ms=p.start_ms, end_ms=p.end_ms,
                limit=p.limit,
            )  # fmt: skip
            for p in pages
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    async def funding_of(symbol: str) -> tuple[np.ndarray, np.ndarray]:
        times, rates, start = [], [], first_ms + 1
        while True:
            cols = parse_funding(
                (await client.funding_rate(
                    symbol, start_ms=start, end_ms=now_ms, limit=FUNDING_MAX_LIMIT
                )).data
            )  # fmt: skip
            keep = (cols["funding_time"] >= start) & (cols["funding_time"] <= now_ms)
            times.append(cols["funding_time"][keep].astype(np.int64))
            rates.append(cols["funding_rate"][keep].astype(float))
            if len(cols["funding_time"]) < FUNDING_MAX_LIMIT or not keep.any():
                break
            start = int(cols["funding_time"][keep].max()) + 1
        return np.concatenate(times), np.concatenate(rates)

    log.warning(
        "restart: fetching the %d bar(s) missed since %s for %d symbol(s)",
        (last_ms - first_ms) // step + 1, iso_ms(first_ms), len(symbols),
    )  # fmt: skip
    got = await gather_or_cancel(bars_of(s) for s in symbols)
    funding = await gather_or_cancel(funding_of(s) for s in symbols)
    n, T = len(symbols), len(grid)
    fields = {f: np.full((n, T), np.nan) for f in (*FIELDS, "quote_volume")}
    codes = np.full((n, T), -1, dtype=np.int8)
    for k, (symbol, cols) in enumerate(zip(symbols, got, strict=True)):
        t = cols["open_time"].astype(np.int64)
        on = (t >= grid[0]) & (t <= grid[-1]) & ((t - grid[0]) % step == 0)
        col = (t[on] - grid[0]) // step
        for f in fields:
            fields[f][k, col] = cols[f][on].astype(float)
        listing = follower.listing.get(symbol)
        if listing is not None and on.any():
            codes[k, col] = tradeable_kernel(
                t[on], cols["volume"][on], cols["quote_volume"][on], cols["close"][on],
                known_tick(follower.ticks.get(symbol)), listing, follower.rules,
            )  # fmt: skip
    cut = int((first_ms - grid[0]) // step)  # the lead day is read, not traded
    return Missed(
        grid[cut:], step, {f: fields[f][:, cut:] for f in FIELDS}, codes[:, cut:], funding, now_ms
    )
