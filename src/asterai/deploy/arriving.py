"""Bars on their way to the live features (``deploy.follow``): those a poll or the
streams brought for one hand-over (``Bars``), the pushed ones not taken yet
(``Pushed``, bounded), the rule that refuses a bar no exchange sends
(``refused_rows``), and how many bars of each timeframe the follower holds
(``bars_to_hold``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from asterai.data.gate.values import impossible_bars
from asterai.data.universe import VOLUME_WINDOW_MS
from asterai.deploy.live import COLUMNS, KEEP_BARS


class Bars:
    """Closed bars to hand over, by (interval, open time): the symbols and their
    fields (``live.COLUMNS``), one list entry per symbol."""

    def __init__(self) -> None:
        self.by_time: dict[tuple[str, int], tuple[list[str], dict[str, list[float]]]] = {}

    def __bool__(self) -> bool:
        return bool(self.by_time)

    def add(self, symbol: str, interval: str, cols: dict[str, np.ndarray]) -> None:
        for i, t in enumerate(cols["open_time"]):
            names, got = self.by_time.setdefault((interval, int(t)), ([], {f: [] for f in COLUMNS}))
            if symbol in names:  # REST and a push brought the same bar: once
                continue
            names.append(symbol)
            for name, column in COLUMNS.items():
                got[name].append(cols[column][i])

    def in_time_order(self) -> list[tuple[tuple[str, int], tuple[list[str], dict]]]:
        return sorted(self.by_time.items(), key=lambda kv: kv[0][1])


#: pushed bars held per (symbol, timeframe) at most, not taken yet: a day of hourly bars.
#: More only gather while the bars are not taken (a stream group down: REST follows
#: then, and what it brings is pruned); the oldest go first, REST has them.
PUSHED_PER_SERIES = 24


class Pushed:
    """Closed bars pushed by the streams, not taken yet: (symbol, interval, open time)
    to the bar's columns; at most ``PUSHED_PER_SERIES`` per symbol and timeframe."""

    def __init__(self) -> None:
        self.bars: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}
        self._times: dict[tuple[str, str], list[int]] = {}

    def add(self, symbol: str, interval: str, cols: dict[str, np.ndarray]) -> None:
        t = int(cols["open_time"][0])
        times = self._times.setdefault((symbol, interval), [])
        if (symbol, interval, t) not in self.bars:
            times.append(t)
            times.sort()
        self.bars[(symbol, interval, t)] = cols
        while len(times) > PUSHED_PER_SERIES:
            self.bars.pop((symbol, interval, times.pop(0)), None)

    def has(self, symbol: str, interval: str, t: int) -> bool:
        return (symbol, interval, t) in self.bars

    def take(self, symbol: str, interval: str, t: int) -> dict[str, np.ndarray] | None:
        got = self.bars.pop((symbol, interval, t), None)
        if got is not None:
            self._times[(symbol, interval)].remove(t)
        return got

    def prune(self, held: Callable[[str, str], int], taken: Bars) -> None:
        """Drop what is held now (``held(symbol, interval)``: the newest held bar
        time, -1 for none) or is about to be (a repeat)."""
        for key in list(self.bars):
            symbol, interval, t = key
            names = taken.by_time.get((interval, t), ([], {}))[0]
            if t <= held(symbol, interval) or symbol in names:
                del self.bars[key]
                self._times[(symbol, interval)].remove(t)


def bars_to_hold(step_ms: int) -> int:
    """Bars of each timeframe the follower holds for a base bar of ``step_ms``: the
    features' ``KEEP_BARS``, or the bars of the universe's 24-hour volume window and
    the bar before it, whichever is more."""
    return max(KEEP_BARS, VOLUME_WINDOW_MS // step_ms + 1)


def refused_rows(
    cols: dict[str, np.ndarray], prev_close: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """Bars no exchange sends (the gate's impossible values, ``gate.values``), and the
    rules they break; ``prev_close``: each bar's previous close, where known."""
    rules = impossible_bars(
        cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"],
        cols["quote_volume"], cols["taker_buy_base"], prev_close,
    )  # fmt: skip
    bad = np.zeros(len(cols["open"]), dtype=bool)
    broken = []
    for mask, what in rules:
        if mask.any():
            bad |= mask
            broken.append(what)
    return bad, broken
