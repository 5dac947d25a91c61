"""Live features: the newest closed bar's feature rows, from the last bars held in memory.

``LiveFeatures`` holds, per timeframe, a panel of the last ``keep`` bar times of every
symbol (and each symbol's settled funding rates), takes closed bars as they arrive, and
computes the features of the newest base bar with ``features.latest.newest_features``,
which runs the batch builder's own functions on those panels. The service and paper
trading read the newest bar through it; ``tests/test_deploy_live.py`` walks the
recording bar by bar and compares each row with the batch table's.

Why ``KEEP_BARS`` is 750: the regime's volatility median reads 745 base bars
(``latest.REGIME_BARS``). The recursive indicators (Wilder's RSI, ATR and ADX, the
MACD's EMAs) are not bounded by it: each symbol's TA-Lib streaming handles are opened
on its held bars at the start and then fed every new bar (``latest.TaState``), so they
carry the whole series since the start, as the batch does; they forget where they
started geometrically: measured on the recording, TA-Lib on the last 400 1h bars
differs from the batch by at most 1e-10, on 600 by 1e-13 (relative to max(1, |value|)).
A higher timeframe keeps as many of its own bars; on a six-month collection that is
all its 4h and 1d bars.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from asterai.config import FeatureSettings
from asterai.data.store import to_epoch_ms
from asterai.features import catalog as cat
from asterai.features.latest import (
    BAR_FIELDS,
    REGIME_BARS,
    TAIL,
    Panel,
    TaState,
    newest_features,
)
from asterai.features.types import SymbolInput
from asterai.intervals import INTERVAL_MS

#: bars of each timeframe held (see the module's docstring for why this many)
KEEP_BARS = 750
#: the klines contract's columns for each held field
COLUMNS = {
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
    "taker_buy": "taker_buy_base",
    "quote_volume": "quote_volume",
}


class LiveDataError(ValueError):
    """Bars that cannot be held (out of order, an unknown symbol or timeframe)."""


class _Ring:
    """One timeframe's panel: the last ``keep`` bar times of every symbol, appended in
    place (columns are moved back only every ``slack`` new bars)."""

    def __init__(self, n_symbols: int, keep: int, slack: int = 256) -> None:
        self.keep = keep
        self.cap = keep + slack
        self.times = np.zeros(self.cap, dtype=np.int64)
        self.data = {f: np.full((n_symbols, self.cap), np.nan) for f in BAR_FIELDS}
        self.lo = self.used = 0
        #: symbols given a bar before their newest held one (their TA handles reopen)
        self.reordered: set[int] = set()

    def panel(self) -> Panel:
        lo, hi = self.lo, self.used
        return Panel(self.times[lo:hi], {f: d[:, lo:hi] for f, d in self.data.items()})

    @property
    def last_time(self) -> int | None:
        return int(self.times[self.used - 1]) if self.used > self.lo else None

    def symbol_last(self, j: int) -> int | None:
        """Symbol ``j``'s newest held bar time, or None."""
        have = np.flatnonzero(~np.isnan(self.data["close"][j, self.lo : self.used]))
        return int(self.times[self.lo + have[-1]]) if len(have) else None

    def last_times(self) -> np.ndarray:
        """Every symbol's newest held bar time (-1: none), in one pass."""
        have = ~np.isnan(self.data["close"][:, self.lo : self.used])
        out = np.full(have.shape[0], -1, dtype=np.int64)
        if have.shape[1]:
            idx = have.shape[1] - 1 - np.argmax(have[:, ::-1], axis=1)
            some = have.any(axis=1)
            out[some] = self.times[self.lo + idx[some]]
        return out

    def _compact(self, room: int) -> None:
        """Move the held columns to the front, keeping at most ``keep - room`` of them."""
        start = max(self.lo, self.used - max(self.keep - room, 0))
        n = self.used - start
        self.times[:n] = self.times[start : self.used]
        for d in self.data.values():
            d[:, :n] = d[:, start : self.used]
            d[:, n:] = np.nan
        self.lo, self.used = 0, n

    def _append_columns(self, times: np.ndarray) -> None:
        times = times[-self.keep :]
        k = len(times)
        if self.used + k > self.cap:
            self._compact(k)
        self.times[self.used : self.used + k] = times
        self.used += k
        self.lo = max(self.lo, self.used - self.keep)

    def _insert_column(self, t: int) -> int:
        """A time inside the held span that no symbol had (a late bar): a new column."""
        if self.used == self.cap:
            self._compact(1)
        pos = int(np.searchsorted(self.times[self.lo : self.used], t)) + self.lo
        self.times[pos + 1 : self.used + 1] = self.times[pos : self.used].copy()
        self.times[pos] = t
        for d in self.data.values():
            d[:, pos + 1 : self.used + 1] = d[:, pos : self.used].copy()
            d[:, pos] = np.nan
        self.used += 1
        self.lo = max(self.lo, self.used - self.keep)
        return pos

    def add(self, j: int, times: np.ndarray, values: dict[str, np.ndarray]) -> int:
        """Symbol ``j``'s bars (times increasing); returns how many were new to it."""
        last = self.last_time
        newer = times > last if last is not None else np.ones(len(times), dtype=bool)
        added = 0
        # bars at or before the newest held time: fill their column where it is empty
        first = int(self.times[self.lo]) if self.used > self.lo else None
        for i in np.flatnonzero(~newer):
            t = int(times[i])
            if first is None or t < first:
                continue  # older than anything held: it would drop out at once
            held = self.times[self.lo : self.used]
            pos = int(np.searchsorted(held, t)) + self.lo
            if pos >= self.used or self.times[pos] != t:
                pos = self._insert_column(t)
            if np.isnan(self.data["close"][j, pos]):
                for f in BAR_FIELDS:
                    self.data[f][j, pos] = values[f][i]
                added += 1
                if (~np.isnan(self.data["close"][j, pos + 1 : self.used])).any():
                    self.reordered.add(j)
        new_times = times[newer]
        if len(new_times):
            self._append_columns(new_times)
            k = min(len(new_times), self.used - self.lo)
            for f in BAR_FIELDS:
                self.data[f][j, self.used - k : self.used] = values[f][newer][-k:]
            added += k
        return added

    def add_time(self, t: int, rows: np.ndarray, values: dict[str, np.ndarray]) -> int:
        """One bar time's bars of several symbols (``rows``); those held are skipped."""
        last = self.last_time
        if last is None or t > last:
            self._append_columns(np.array([t], dtype=np.int64))
            pos = self.used - 1
        else:
            if t < int(self.times[self.lo]):
                return 0  # older than anything held
            pos = int(np.searchsorted(self.times[self.lo : self.used], t)) + self.lo
            if self.times[pos] != t:
                pos = self._insert_column(t)
        empty = np.isnan(self.data["close"][rows, pos])
        take = rows[empty]
        for f in BAR_FIELDS:
            self.data[f][take, pos] = values[f][empty]
        if pos < self.used - 1:
            later = (~np.isnan(self.data["close"][take, pos + 1 : self.used])).any(axis=1)
            self.reordered.update(int(j) for j in take[later])
        return int(empty.sum())

    def add_panel(self, frames: list[pd.DataFrame | None]) -> None:
        """Every symbol's bars at once (the start): columns on the union of their times."""
        stamps = [to_epoch_ms(f["open_time"]) for f in frames if f is not None and len(f)]
        if not stamps:
            return
        grid = np.unique(np.concatenate(stamps))[-self.keep :]
        self._append_columns(grid)
        held = self.times[self.lo : self.used]
        for j, frame in enumerate(frames):
            if frame is None or not len(frame):
                continue
            t = to_epoch_ms(frame["open_time"])
            keep = t >= held[0]
            pos = np.searchsorted(held, t[keep]) + self.lo
            for f, col in COLUMNS.items():
                self.data[f][j, pos] = _column(frame, col)[keep]


def _column(frame: pd.DataFrame, col: str) -> np.ndarray:
    if col not in frame:
        return np.full(len(frame), np.nan)
    return frame[col].to_numpy(dtype=float, na_value=np.nan)


@dataclass(frozen=True, slots=True)
class NewestRows:
    """The newest bar's features: one row per symbol that has the bar."""

    open_time: int  # ms
    symbols: list[str]
    features: list[str]
    values: np.ndarray  # (symbols, features) float64

    def frame(self) -> pd.DataFrame:
        """As in ``data/features/{interval}.parquet``: symbol, open_time, the features."""
        out = pd.DataFrame(self.values, columns=self.features)
        out.insert(
            0,
            "open_time",
            pd.to_datetime([self.open_time] * len(out), unit="ms", utc=True).as_unit("ms"),
        )
        out.insert(0, "symbol", self.symbols)
        return out


class LiveFeatures:
    """The held bars of ``inputs``' symbols (sorted, like the batch table's columns).

    ``history``: how many of the newest bars' feature rows to keep for models that
    read a window of them (the LSTM), seeded at the start by computing each of the
    bars before the newest as it would have been at its close.
    """

    def __init__(
        self,
        fs: FeatureSettings,
        inputs: list[SymbolInput],
        keep: int = KEEP_BARS,
        history: int = 0,
    ) -> None:
        if keep < max(REGIME_BARS, TAIL):
            raise ValueError(
                f"keep must be at least {max(REGIME_BARS, TAIL)} bars: the regime's "
                f"volatility median reads {REGIME_BARS} base bars"
            )
        self.fs = fs
        self.keep = keep
        self.intervals = (fs.base_interval, *fs.higher_intervals)
        inputs = sorted(inputs, key=lambda i: i.symbol)
        self.symbols = [i.symbol for i in inputs]
        self.index = {s: j for j, s in enumerate(self.symbols)}
        self.rings = {iv: _Ring(len(inputs), keep) for iv in self.intervals}
        for iv, ring in self.rings.items():
            ring.add_panel([i.bars.get(iv) for i in inputs])
        self.funding: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(inputs)
        for inp in inputs:
            if inp.funding is not None and len(inp.funding):
                self.add_funding(inp.symbol, inp.funding)
        self.listing_ms = np.array(
            [np.nan if i.listing_ms is None else float(i.listing_ms) for i in inputs]
        )
        self.features = cat.feature_names(fs.higher_intervals)
        self._ta = {iv: TaState(len(inputs)) for iv in self.intervals}
        self.history = history
        self._rows: dict[int, NewestRows] = {}
        if history and inputs:
            self._seed_history()

    def _seed_history(self) -> None:
        """The rows of the bars before the newest, as the live features would have
        computed each at its close: the base panel cut there (the higher timeframes and
        funding are cut by close time inside ``newest_features``)."""
        panel = self.rings[self.fs.base_interval].panel()
        for k in range(min(self.history, len(panel)) - 1, 0, -1):
            cut = Panel(panel.times[:-k], {f: v[:, :-k] for f, v in panel.fields.items()})
            self._store(self._rows_of(cut))

    def _symbol(self, symbol: str) -> int:
        j = self.index.get(symbol)
        if j is None:
            raise LiveDataError(f"{symbol}: not a symbol the live features hold")
        return j

    def add_bars(self, symbol: str, interval: str, bars: pd.DataFrame) -> int:
        """Closed bars of one symbol and timeframe (a frame with the klines contract's
        columns); bars already held are skipped. Returns how many were new."""
        if not len(bars):
            return 0
        values = {f: _column(bars, col) for f, col in COLUMNS.items()}
        return self.add_arrays(symbol, interval, to_epoch_ms(bars["open_time"]), values)

    def add_arrays(
        self, symbol: str, interval: str, open_ms: np.ndarray, values: dict[str, np.ndarray]
    ) -> int:
        """As ``add_bars``, from arrays: open times (ms) and each of ``BAR_FIELDS``
        (NaN where the exchange gave none)."""
        j = self._symbol(symbol)
        if interval not in self.rings:
            raise LiveDataError(f"{interval}: not one of {', '.join(self.intervals)}")
        times = np.asarray(open_ms, dtype=np.int64)
        if not len(times):
            return 0
        if np.any(np.diff(times) <= 0):
            raise LiveDataError(f"{symbol} {interval}: the new bars are not in time order")
        if np.any(times % INTERVAL_MS[interval]):
            raise LiveDataError(f"{symbol} {interval}: an open time is not on the {interval} grid")
        missing = [f for f in BAR_FIELDS if f not in values]
        if missing:
            raise LiveDataError(f"{symbol} {interval}: no {', '.join(missing)} given")
        added = self.rings[interval].add(j, times, values)
        self._reopen(interval)
        return added

    def add_closed(
        self, interval: str, open_ms: int, symbols: list[str], values: dict[str, np.ndarray]
    ) -> int:
        """The bars of many symbols that share one open time (what a poll of every symbol
        after a bar's close returns): ``values`` holds each of ``BAR_FIELDS`` with one
        entry per symbol. Bars already held are skipped; returns how many were new."""
        if interval not in self.rings:
            raise LiveDataError(f"{interval}: not one of {', '.join(self.intervals)}")
        if int(open_ms) % INTERVAL_MS[interval]:
            raise LiveDataError(f"{open_ms}: not an open time on the {interval} grid")
        rows = np.array([self._symbol(s) for s in symbols], dtype=np.int64)
        if len(np.unique(rows)) != len(rows):
            raise LiveDataError("a symbol appears twice in one bar")
        missing = [f for f in BAR_FIELDS if f not in values]
        if missing:
            raise LiveDataError(f"{interval} {open_ms}: no {', '.join(missing)} given")
        if not len(rows):
            return 0
        cols = {f: np.asarray(values[f], dtype=float) for f in BAR_FIELDS}
        added = self.rings[interval].add_time(int(open_ms), rows, cols)
        self._reopen(interval)
        return added

    def _reopen(self, interval: str) -> None:
        ring = self.rings[interval]
        if ring.reordered:
            self._ta[interval].forget(ring.reordered)
            ring.reordered.clear()

    def add_funding(self, symbol: str, rates: pd.DataFrame) -> int:
        """Settled funding rates of one symbol (newer than the newest held)."""
        j = self._symbol(symbol)
        t = to_epoch_ms(rates["funding_time"])
        r = rates["funding_rate"].to_numpy(dtype=float)
        have = self.funding[j]
        if have is not None and len(have[0]):
            new = t > have[0][-1]
            t, r = np.concatenate([have[0], t[new]]), np.concatenate([have[1], r[new]])
            added = int(new.sum())
        else:
            added = len(t)
        # two rates before the held span are enough (the rate in force and its change)
        self.funding[j] = (t[-(self.keep + 2) :], r[-(self.keep + 2) :])
        return added

    def newest_time(self) -> int | None:
        """The newest base bar's open time held (ms), or None."""
        return self.rings[self.fs.base_interval].last_time

    def newest(self) -> NewestRows:
        """The features of the newest base bar, for each symbol that has it."""
        base = self.rings[self.fs.base_interval]
        if base.last_time is None:
            raise LiveDataError("no bars held")
        return self._store(self._rows_of(base.panel()))

    def catch_up(self, after: int | None) -> list[NewestRows]:
        """The rows of every base bar newer than ``after`` (open time, ms; None: only
        the newest), oldest first, each computed on the panel cut at it, as if it had
        arrived alone (a poll that brings several bars at once after a gap or a
        restart: the LSTM's window needs each of their rows); the newest bar's last."""
        panel = self.rings[self.fs.base_interval].panel()
        if after is not None:
            for i in np.flatnonzero(panel.times > after)[:-1]:
                cut = Panel(
                    panel.times[: i + 1], {f: v[:, : i + 1] for f, v in panel.fields.items()}
                )
                self._store(self._rows_of(cut))
        newer = self.kept() if after is not None else []
        return [r for r in newer if r.open_time > after and r.open_time != self.newest_time()] + [
            self.newest()
        ]

    def rows_at(self, open_ms: int) -> NewestRows | None:
        """The kept feature rows of the base bar that opened at ``open_ms`` (None when
        not kept: older than ``history`` bars)."""
        return self._rows.get(int(open_ms))

    def _rows_of(self, panel: Panel) -> NewestRows:
        higher = {iv: self.rings[iv].panel() for iv in self.fs.higher_intervals}
        present, values = newest_features(
            panel, higher, self.funding, self.listing_ms, self.symbols, self.fs, self._ta
        )
        at = np.flatnonzero(present)
        matrix = np.column_stack([values[n][at] for n in self.features])
        return NewestRows(
            int(panel.times[-1]), [self.symbols[j] for j in at], self.features, matrix
        )

    def _store(self, rows: NewestRows) -> NewestRows:
        if self.history:
            self._rows[rows.open_time] = rows
            for t in sorted(self._rows)[: -self.history]:
                del self._rows[t]
        return rows

    def kept(self) -> list[NewestRows]:
        """The kept feature rows of the last ``history`` bars, oldest first."""
        return [self._rows[t] for t in sorted(self._rows)]

    def recent(self) -> pd.DataFrame:
        """The kept feature rows of the last ``history`` bars (``symbol``, ``open_time``,
        the features), oldest first, the newest bar's rows last."""
        if not self._rows:
            raise LiveDataError("no feature rows kept: history=0, or no bar computed yet")
        held = [self._rows[t] for t in sorted(self._rows)]
        out = pd.DataFrame(np.vstack([r.values for r in held]), columns=self.features)
        stamps = np.concatenate([np.full(len(r.symbols), r.open_time) for r in held])
        out.insert(0, "open_time", pd.to_datetime(stamps, unit="ms", utc=True).as_unit("ms"))
        codes = np.concatenate([[self.index[s] for s in r.symbols] for r in held])
        out.insert(0, "symbol", pd.Categorical.from_codes(codes, categories=self.symbols))
        return out
