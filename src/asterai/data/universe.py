"""The point-in-time tradeable universe: which symbols could be traded at each bar.

Training and the backtest must not use today's symbol list for yesterday (survivorship,
and look-ahead through the list itself). ``data/universe.parquet`` has one row per
(symbol, base-interval bar) for every symbol the gate did not find contaminated, with a
boolean ``tradeable`` and, when false, the ``reason``. At bar ``t`` (decided at its
close, from bars up to ``t`` only) a symbol is tradeable when:

1. it has been listed for at least ``universe.min_listing_days`` (listing: the
   collector's ``listing_open_time``, else the first collected bar);
2. its quote volume over the trailing 24 hours (the bars opening in ``(t - 24h, t]``)
   is at least ``universe.min_quote_volume_24h`` USDT: a market that dies stops being
   tradeable when its volume dries up, and was tradeable until then;
3. the market is open: bar ``t`` has volume (a stock perpetual's closed session, or any
   idle hour, is not tradeable);
4. its price tick is at most ``universe.max_tick_share`` of bar ``t``'s close (0 turns
   the rule off): where one tick is, say, 2% of the price, the spread alone costs more
   than the edge a model can find, and every stop and target sits on a grid too coarse
   to place it. Exactly at the share is still tradeable. The tick is today's
   ``PRICE_FILTER.tickSize`` from discovery, the same for every bar, because it is the
   only tick a causal rule can use: the gate's price-grid regimes
   (``data/gate/grids.py``) are found by walking back from the newest bar with today's
   tick, so the regime and unit it gives bar ``t`` depend on the bars after ``t`` (a
   truncated history infers other regimes). Today's tick is a fixed input, like the
   gate's verdicts, so the rule stays causal in the sense the tests prove; where the gate
   lists an older tick regime, the tick then differed (the gate's report names it) and
   so did its share. The backtest rounds orders to the same tick. Without a tick from
   discovery the rule cannot judge the symbol and does not refuse it (the backtest then
   does not round its orders either, and says so). The live follower applies the tick
   of the exchangeInfo it loads at its start: today's, the one in force;
5. the gate did not exclude it. This one is a whole-history decision about the data
   (too many outliers, too many gaps, a filter that does not fit, your own exclusion),
   not about trading, so the report lists every exclusion: a symbol left out for a
   crash is a survivorship bias the user must see. Discovery's verdict about today
   (dead now, delisted) is never applied to the past: such a market is collected, and
   rules 2 and 3 end its tradeable bars when its trading ends.

When several rules refuse a bar, its reason is the first that does in the order
excluded, too young, too thin, closed, tick: the tick rule names only bars that would
otherwise trade, so its count is the bars it alone removes.

A bar the exchange has no row for has no universe row either: absent means not
tradeable. The rule is causal, and ``tests/test_universe.py`` proves it the way the
features are proven: the universe of a truncated history equals the full one on every
earlier row, bit for bit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from asterai import __version__, atomic
from asterai.config import Settings
from asterai.data.store import to_epoch_ms
from asterai.intervals import DAY_MS, INTERVAL_MS, iso_ms
from asterai.paths import DataPaths

UNIVERSE_META_KEY = b"asterai.universe"
VOLUME_WINDOW_MS = DAY_MS

#: Reason codes; 0 is "tradeable". A new code is appended, so a code keeps its value
#: (the follower and the paper trader hold codes; the universe file stores the text).
#: Precedence is not the codes' order: see the module's docstring.
REASONS = (
    None,
    "listed for less than the minimum",
    "trailing 24h quote volume below the floor",
    "market closed (no volume in the bar)",
    "excluded by the gate",
    "tick above the maximum share of the price",
)
TRADEABLE, TOO_YOUNG, TOO_THIN, CLOSED, GATE_EXCLUDED, TICK_TOO_COARSE = range(len(REASONS))


class Rules(NamedTuple):
    """The kernel's parameters, in epoch ms, USDT and a share of the price."""

    step_ms: int
    min_age_ms: int
    window_ms: int
    min_quote_volume: float
    max_tick_share: float  # 0: the tick rule is off

    @classmethod
    def of(cls, step_ms: int, universe: Mapping[str, Any]) -> Rules:
        """From ``UniverseSettings`` as a mapping (``model_dump``, or an export
        manifest's ``universe`` facts); the caller decides a missing key's default."""
        return cls(
            int(step_ms),
            int(round(float(universe["min_listing_days"]) * DAY_MS)),
            VOLUME_WINDOW_MS,
            float(universe["min_quote_volume_24h"]),
            float(universe["max_tick_share"]),
        )


@dataclass(frozen=True, slots=True)
class BaseBars:
    """What the universe needs of one symbol's base-interval bars."""

    times: np.ndarray  # open times, epoch ms, sorted
    volume: np.ndarray
    quote_volume: np.ndarray
    close: np.ndarray
    tick: float  # today's tick from discovery; NaN: none known (the tick rule abstains)
    listing_ms: int

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, listing_ms: int | None = None, tick: float | None = None
    ) -> BaseBars:
        """From a klines frame (``open_time``, ``volume``, ``quote_volume``, ``close``)."""
        times = to_epoch_ms(frame["open_time"])
        first = int(times[0]) if len(times) else 0
        return cls(
            times,
            frame["volume"].to_numpy(dtype=float),
            frame["quote_volume"].to_numpy(dtype=float),
            frame["close"].to_numpy(dtype=float),
            known_tick(tick),
            int(listing_ms) if listing_ms is not None else first,
        )

    def cut(self, keep: np.ndarray) -> BaseBars:
        """The bars where ``keep`` is true (a truncated history), the same symbol facts."""
        return BaseBars(
            self.times[keep], self.volume[keep], self.quote_volume[keep], self.close[keep],
            self.tick, self.listing_ms,
        )  # fmt: skip


def known_tick(tick: float | None) -> float:
    """A tick as the kernel takes it: a positive finite float, else NaN (unknown)."""
    try:
        value = float(tick) if tick is not None else np.nan
    except (TypeError, ValueError):
        return np.nan
    return value if np.isfinite(value) and value > 0 else np.nan


def tradeable_kernel(
    times: np.ndarray,
    volume: np.ndarray,
    quote_volume: np.ndarray,
    close: np.ndarray,
    tick: float | np.ndarray,
    listing_ms: int,
    rules: Rules,
) -> np.ndarray:
    """Reason code per bar (``TRADEABLE`` = 0) from bars up to each one only.

    ``tick``: the tick in force at each bar (one float: the same for every bar); NaN
    where unknown, which the tick rule does not refuse. Later assignments win, so the
    rules are applied from the lowest precedence up.
    """
    reason = np.full(len(times), TRADEABLE, dtype=np.int8)
    if len(times) == 0:
        return reason
    qv = np.where(np.isfinite(quote_volume), quote_volume, 0.0)
    # prefix sums: the sum up to bar i depends on bars 0..i only, so a longer history
    # never changes an earlier value (not even its rounding)
    csum = np.concatenate([[0.0], np.cumsum(qv)])
    first = np.searchsorted(times, times - rules.window_ms + rules.step_ms, side="left")
    trailing = csum[np.arange(1, len(times) + 1)] - csum[first]
    if rules.max_tick_share > 0:
        # tick / close > share, written without a division (a zero close is refused);
        # a NaN tick or close compares false: not judged
        coarse = np.asarray(tick, dtype=float) > rules.max_tick_share * np.asarray(close)
        reason[np.broadcast_to(coarse, reason.shape)] = TICK_TOO_COARSE
    closed = ~(np.nan_to_num(volume) > 0)
    reason[closed] = CLOSED
    reason[trailing < rules.min_quote_volume] = TOO_THIN
    reason[times + rules.step_ms - listing_ms < rules.min_age_ms] = TOO_YOUNG
    return reason


def build_universe(
    bases: Mapping[str, BaseBars], gate_excluded: Mapping[str, str], settings: Settings
) -> pd.DataFrame:
    """The universe frame, rows ordered by (open_time, symbol) like the features."""
    rules = Rules.of(INTERVAL_MS[settings.features.base_interval], settings.universe.model_dump())
    names = sorted(bases)
    times_parts, codes_parts, symbol_parts, detail = [], [], [], {}
    for j, symbol in enumerate(names):
        b = bases[symbol]
        code = tradeable_kernel(
            b.times, b.volume, b.quote_volume, b.close, b.tick, b.listing_ms, rules
        )
        if symbol in gate_excluded:
            code[:] = GATE_EXCLUDED
            detail[symbol] = gate_excluded[symbol]
        times_parts.append(np.asarray(b.times, dtype=np.int64))
        codes_parts.append(code)
        symbol_parts.append(np.full(len(b.times), j, dtype=np.int32))
    times = np.concatenate(times_parts) if names else np.empty(0, np.int64)
    codes = np.concatenate(codes_parts) if names else np.empty(0, np.int8)
    sym = np.concatenate(symbol_parts) if names else np.empty(0, np.int32)
    order = np.lexsort((sym, times))
    times, codes, sym = times[order], codes[order], sym[order]
    labels = np.array(REASONS, dtype=object)[codes]
    for j, symbol in enumerate(names):
        if symbol in detail:
            labels[(sym == j) & (codes == GATE_EXCLUDED)] = (
                f"excluded by the gate: {detail[symbol]}"
            )
    return pd.DataFrame(
        {
            "symbol": np.array(names, dtype=object)[sym] if names else np.empty(0, object),
            "open_time": pd.to_datetime(times, unit="ms", utc=True).as_unit("ms"),
            "tradeable": codes == TRADEABLE,
            "reason": labels,
        }
    )


def write_universe(settings: Settings, frame: pd.DataFrame) -> dict[str, Any]:
    """Write ``data/universe.parquet`` atomically; returns a summary for the gate's report."""
    path = DataPaths.at(settings.data_root).universe
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}
    summary = {
        "path": str(path),
        "rows": len(frame),
        "symbols": int(frame["symbol"].nunique()),
        "tradeable_share": round(float(frame["tradeable"].mean()), 6) if len(frame) else 0.0,
        "base_interval": settings.features.base_interval,
        "rules": settings.universe.model_dump(mode="json"),
        "reasons": {
            str(k): int(v) for k, v in frame["reason"].fillna("tradeable").value_counts().items()
        },
    }
    meta[UNIVERSE_META_KEY] = json.dumps(
        {**summary, "asterai_version": __version__, "created_at": iso_ms(int(time.time() * 1000))},
        sort_keys=True,
    ).encode()
    table = table.replace_schema_metadata(meta)
    atomic.write_with(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    return summary


def load_universe(settings: Settings) -> pd.DataFrame:
    """The stored universe; a clear error when the gate has not written one."""
    path = DataPaths.at(settings.data_root).universe
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run `asterai validate` (it writes the universe when no "
            "file is contaminated)"
        )
    return pq.read_table(path).to_pandas()
