"""Can AsterAI reach the exchange and read real market data from it? One quick check.

It is the guide's "check API connectivity" step
(``AsterDEXDataCollector().initialize()``) and what a user runs before a long
collection: a ping, the exchange's clock, ``exchangeInfo`` (symbols and the declared
weight limit) and the last closed bars of one symbol, checked for the shape of real
bars (closed before the exchange's clock, low <= open, close <= high, positive prices).
A handful of requests, a few units of weight.
"""

from __future__ import annotations

from typing import Any

from asterai.config import Settings
from asterai.exchange.errors import ExchangeError

OFFLINE_HINT = (
    "to work offline, replay a recorded folder with the same API and point AsterAI at "
    "it:\n  asterai replay --data ../shared/aster-real --port 8765 &\n"
    "  asterai pipeline --base-url http://127.0.0.1:8765   (or ASTERAI_BASE_URL=http://127.0.0.1:8765)"
)
PROBE_SYMBOLS = ("BTCUSDT", "ETHUSDT")


class AccessError(ExchangeError):
    """The exchange cannot be reached, or what it serves does not look like real bars."""


async def check_access(settings: Settings) -> dict[str, Any]:
    """Ping, clock, exchangeInfo and three real 1h bars; raises ``AccessError`` saying
    what failed and how to work offline."""
    from asterai.exchange.client import AsterClient

    url = settings.base_url
    # a quick answer, not patience: one retry, short timeouts (a few seconds in all)
    quick = settings.exchange.model_copy(
        update={"max_retries": 1, "timeout_s": min(settings.exchange.timeout_s, 5.0),
                "backoff_base_s": 0.2, "backoff_max_s": 0.5}
    )  # fmt: skip
    try:
        async with AsterClient(url, quick) as client:
            ping = await client.ping()
            now = await client.server_time()
            info = await client.load_exchange_info()
            listed = [s for s in info.get("symbols", []) if isinstance(s, dict)]
            # (a replayed recording may carry no status: listed counts as trading there)
            trading = [s["symbol"] for s in listed if s.get("status", "TRADING") == "TRADING"]
            symbol = next(
                (s for s in PROBE_SYMBOLS if s in trading), trading[0] if trading else None
            )
            if symbol is None:
                raise AccessError(f"{url}: exchangeInfo lists no symbol in TRADING status")
            bars = (await client.klines(symbol, "1h", limit=3)).data
    except AccessError:
        raise
    except ExchangeError as err:
        raise AccessError(f"{str(err).rstrip('.')}. {OFFLINE_HINT}") from err
    closed = [b for b in bars if isinstance(b, list) and len(b) >= 7 and int(b[6]) < now]
    if not closed:
        raise AccessError(f"{url}: /fapi/v1/klines {symbol} 1h returned no closed bar")
    last = closed[-1]
    o, h, lo, c = (float(x) for x in last[1:5])
    if not (0 < lo <= min(o, c) and max(o, c) <= h):
        raise AccessError(
            f"{url}: the last closed {symbol} 1h bar is not a real bar "
            f"(open {o}, high {h}, low {lo}, close {c})"
        )
    return {
        "base_url": url,
        "latency_ms": round(ping.latency_s * 1000, 1),
        "server_time": now,
        "symbols": len(listed),
        "trading": len(trading),
        "weight_limit": client.rate_limit.limit,
        "weight_window_s": client.rate_limit.window_s,
        "sample": {"symbol": symbol, "open_time": int(last[0]), "close": c},
    }
