"""The funding rates the live features read, polled as each symbol's settlement
passes (``deploy.follow`` calls ``FundingPoll.poll`` after each new base bar)."""

from __future__ import annotations

import numpy as np

from asterai.data.collector import funding_frame, gather_or_cancel
from asterai.deploy.live import LiveFeatures
from asterai.exchange.client import AsterClient, parse_funding
from asterai.exchange.weights import FUNDING_MAX_LIMIT

#: funding rates asked for the whole market in one request reach back this far (a
#: day: every funding interval the exchange uses fits twice); older ones, one by one
FUNDING_LOOKBACK_MS = 24 * 3_600_000


class FundingPoll:
    """Which symbols' funding to ask for, and when, for live features on a base bar of
    ``step_ms``."""

    def __init__(self, step_ms: int) -> None:
        self.step = step_ms
        #: each symbol's funding settlement awaited (``premiumIndex``'s
        #: nextFundingTime): its funding rates are polled once it has passed, until its
        #: rate has come
        self.next_funding: dict[str, int] = {}

    @staticmethod
    def held(live: LiveFeatures, symbol: str) -> int | None:
        """The time of ``symbol``'s newest held funding rate."""
        have = live.funding[live.index[symbol]]
        return int(have[0][-1]) if have is not None and len(have[0]) else None

    def due(self, live: LiveFeatures, now: int) -> list[str]:
        """Symbols whose funding rates to poll: no settlement known, or the awaited one
        has passed (and stays awaited until its rate has come)."""
        return [s for s in live.symbols
                if self.next_funding.get(s) is None or self.next_funding[s] <= now]  # fmt: skip

    async def poll(self, client: AsterClient, live: LiveFeatures, now: int) -> None:
        """The funding rates settled since each symbol's newest held one (the last two
        bars' for a symbol that holds none), for the symbols whose awaited settlement
        has passed or that await none: one ``fundingRate`` request for the whole market
        (a page of at most ``FUNDING_MAX_LIMIT`` rates; a full page, the exchange having
        been away long, falls back to one request a symbol); then the next
        settlements, from ``premiumIndex`` (one request), for the symbols whose awaited
        rate has come or that await none."""
        due = self.due(live, now)
        if not due:
            return
        since = {}
        for s in due:
            last = self.held(live, s)
            since[s] = last + 1 if last is not None else now - 2 * self.step
        # one request for the market from a recent start; a symbol whose newest rate is
        # older (delisted, or the exchange was away) is asked on its own
        bound = now - FUNDING_LOOKBACK_MS
        alone = [s for s in due if since[s] < bound]
        together = [s for s in due if since[s] >= bound]
        got: dict[str, dict[str, np.ndarray]] = {}
        if together:
            rows = (await client.funding_rate(
                None, start_ms=min(since[s] for s in together), end_ms=now,
                limit=FUNDING_MAX_LIMIT,
            )).data  # fmt: skip
            if isinstance(rows, list) and len(rows) < FUNDING_MAX_LIMIT:
                wanted = set(together)
                mine: dict[str, list] = {}
                for row in rows:
                    if isinstance(row, dict) and row.get("symbol") in wanted:
                        mine.setdefault(row["symbol"], []).append(row)
                got = {s: parse_funding(r) for s, r in mine.items()}
            else:
                alone += together

        async def rates_of(symbol: str) -> tuple[str, dict[str, np.ndarray]]:
            reply = await client.funding_rate(symbol, start_ms=since[symbol], end_ms=now)
            return symbol, parse_funding(reply.data)

        got.update(await gather_or_cancel(rates_of(s) for s in alone))
        for symbol, rates in got.items():
            keep = (rates["funding_time"] <= now) & (rates["funding_time"] >= since[symbol])
            if keep.any():
                live.add_funding(symbol, funding_frame({k: v[keep] for k, v in rates.items()}))
        stale = [s for s in live.symbols
                 if self.next_funding.get(s) is None
                 or (self.held(live, s) or -1) >= self.next_funding[s]]  # fmt: skip
        if not stale:
            return
        upcoming = await self.upcoming(client, live)
        for symbol in stale:
            if symbol in upcoming:
                self.next_funding[symbol] = upcoming[symbol]
            else:
                self.next_funding.pop(symbol, None)

    @staticmethod
    async def upcoming(client: AsterClient, live: LiveFeatures) -> dict[str, int]:
        """Every symbol's next funding settlement, from one ``premiumIndex`` request."""
        reply = (await client.premium_index()).data
        out = {}
        for entry in reply if isinstance(reply, list) else [reply]:
            t = entry.get("nextFundingTime")
            if entry.get("symbol") in live.index and t:
                out[entry["symbol"]] = int(t)
        return out
