"""Cross-series rules: timeframes that must agree, and markets that must not repeat.

Both find evidence that a file is not what the exchange sent, so both are
``contaminated`` when they fail.

timeframes
    Every complete higher-timeframe bar (4h, 1d) agrees with the lowest collected
    interval: close equal to the last lower close exactly, volume and quote volume equal
    to the sums (relative 1e-9, float summation), high and low within
    ``HIGH_LOW_TOLERANCE`` (10%) of the lower bars' extremes, and a higher bar with
    volume never spans a stretch without any lower bar. Opens are not compared, and high
    and low only loosely, because the exchange's own bars differ there: in the recording
    4.4% of all 4h opens differ (14 of AAPLUSDT's 29 daily bars), and highs and lows by
    up to 6.8% (4h) and 4.2% (1d).
duplicate
    Two symbols whose return sequences share long identical stretches (any lag, any
    scale: a copy, a shifted copy or a rescaled copy of another market).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from asterai.data.gate.model import CONTAMINATED, EXCLUDED, Finding, at_rows, passed, skipped
from asterai.intervals import INTERVAL_MS

SUM_TOLERANCE = 1e-9
HIGH_LOW_TOLERANCE = 0.10
DUPLICATE_RUN = 8
DUPLICATE_MIN_SHARE = 0.5


def compare_timeframes(
    lower: Mapping[str, Any],
    lower_times: np.ndarray,
    lower_iv: str,
    higher: Mapping[str, Any],
    higher_times: np.ndarray,
    higher_iv: str,
    name: str,
    lower_until: int | None = None,
) -> tuple[Finding, np.ndarray]:
    """Check a higher-timeframe series against the lower one it must aggregate.

    ``lower`` and ``higher`` map column names to arrays (a DataFrame does).

    ``lower_until``: the last lower bar the lower file should hold (the last bar closed at
    its collection time); a higher bar with volume between the lower file's first bar and
    then, where the lower file has no bar, is a disagreement. Returns the finding and the
    open times of the higher bars that disagree.
    """
    lstep, hstep = INTERVAL_MS[lower_iv], INTERVAL_MS[higher_iv]
    per = hstep // lstep
    none = np.empty(0, dtype=np.int64)
    if hstep % lstep or per < 2:
        return skipped("timeframes", f"{higher_iv} is not a multiple of {lower_iv}"), none
    if len(lower_times) == 0 or len(higher_times) == 0:
        return skipped("timeframes", "no bars to compare"), none
    bucket = lower_times - lower_times % hstep
    starts, first_idx, counts = np.unique(bucket, return_index=True, return_counts=True)
    pos = np.searchsorted(starts, higher_times)
    found = (pos < len(starts)) & (starts[np.minimum(pos, len(starts) - 1)] == higher_times)
    complete = np.zeros(len(higher_times), dtype=bool)
    complete[found] = counts[pos[found]] == per
    idx = pos[complete]
    last_idx = first_idx + counts - 1

    def low(k: str) -> np.ndarray:
        return np.asarray(lower[k], dtype=float)

    def high(k: str) -> np.ndarray:
        return np.asarray(higher[k], dtype=float)[complete]

    n = len(higher_times)
    checks: list[tuple[np.ndarray, str]] = []
    if len(first_idx):
        sums_v = np.add.reduceat(low("volume"), first_idx)[idx]
        sums_q = np.add.reduceat(low("quote_volume"), first_idx)[idx]
        highs = np.maximum.reduceat(low("high"), first_idx)[idx]
        lows = np.minimum.reduceat(low("low"), first_idx)[idx]
        closes = low("close")[last_idx[idx]]
        for bad, what in (
            (high("close") != closes, f"close differs from the last {lower_iv} close"),
            (
                ~np.isclose(high("volume"), sums_v, rtol=SUM_TOLERANCE, atol=1e-12)
                | ~np.isclose(high("quote_volume"), sums_q, rtol=SUM_TOLERANCE, atol=1e-9),
                f"volume differs from the sum of its {lower_iv} bars",
            ),
            (
                (np.abs(high("high") / highs - 1) > HIGH_LOW_TOLERANCE)
                | (np.abs(high("low") / lows - 1) > HIGH_LOW_TOLERANCE),
                f"high or low more than {HIGH_LOW_TOLERANCE:.0%} away from its {lower_iv} bars'",
            ),
        ):
            mask = np.zeros(n, dtype=bool)
            mask[complete] = bad
            checks.append((mask, what))
    # a higher bar with volume over a span where the lower series has no bar at all
    until = lower_times[-1] + lstep - 1 if len(lower_times) else 0
    if lower_until is not None and len(lower_times):
        until = max(until, lower_until + lstep - 1)
    inside = (
        (higher_times >= lower_times[0]) & (higher_times + hstep - 1 <= until)
        if len(lower_times)
        else np.zeros(n, bool)
    )
    checks.append(
        (
            inside & ~found & (np.asarray(higher["volume"], dtype=float) > 0),
            f"bars with volume where the {lower_iv} file has none",
        )
    )
    for mask, what in checks:
        if mask.any():
            return (
                at_rows("timeframes", "fail", f"{name}: {what}", mask, higher_times, CONTAMINATED),
                higher_times[mask],
            )
    # Higher bars with volume that end before the lower file's first bar: the lower file
    # starts later than its other timeframes (cut short, or collected over fewer days).
    # Real data, possibly, but the timeframes no longer cover the same history: excluded.
    before = (
        (higher_times + hstep - 1 < lower_times[0])
        & (np.asarray(higher["volume"], dtype=float) > 0)
        if len(lower_times)
        else np.zeros(n, bool)
    )
    if before.any():
        return (
            at_rows(
                "timeframes",
                "fail",
                f"{name}: {int(before.sum())} bars with volume before the {lower_iv} file's first "
                f"bar: the {lower_iv} history starts later than this one; collect again so the "
                "timeframes cover the same history",
                before,
                higher_times,
                EXCLUDED,
            ),
            none,
        )
    n_complete = int(complete.sum())
    if n_complete == 0:
        return skipped(
            "timeframes", f"no complete {higher_iv} bar to compare with {lower_iv}"
        ), none
    return (
        passed(
            "timeframes",
            f"{n_complete} complete bars agree with {lower_iv} on close, volume, high and low",
        ),
        none,
    )


def _fingerprints(close: np.ndarray, times: np.ndarray, step: int) -> np.ndarray:
    """Runs of DUPLICATE_RUN consecutive non-zero log returns (scale-free), one row each.

    Returned as a 1-d array of opaque fixed-size records, so symbols can be matched with
    numpy set operations instead of a Python loop per window.
    """
    record = np.dtype((np.void, 8 * DUPLICATE_RUN))
    if len(close) < DUPLICATE_RUN + 1 or not np.all(close > 0):
        return np.empty(0, dtype=record)
    r = np.diff(np.log(close))
    ok = (np.diff(times) == step) & (r != 0)
    windows = np.lib.stride_tricks.sliding_window_view(np.round(r, 10), DUPLICATE_RUN)
    valid = np.lib.stride_tricks.sliding_window_view(ok, DUPLICATE_RUN).all(axis=1)
    rows = np.ascontiguousarray(windows[valid])
    return np.unique(rows.view(record).ravel())


def find_duplicates(
    series: dict[str, tuple[np.ndarray, np.ndarray]], step: int
) -> dict[str, list[str]]:
    """Symbols whose return runs largely coincide with another symbol's."""
    names = sorted(series)
    prints = [_fingerprints(*series[sym], step) for sym in names]
    if not any(len(p) for p in prints):
        return {}
    owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(prints)])
    allprints = np.concatenate(prints)
    _, group, counts = np.unique(allprints, return_inverse=True, return_counts=True)
    shared_rows = counts[group] > 1
    dups: dict[str, list[str]] = defaultdict(list)
    if not shared_rows.any():
        return dups
    pairs: dict[tuple[int, int], int] = defaultdict(int)
    order = np.argsort(group[shared_rows], kind="stable")
    g = group[shared_rows][order]
    o = owner[shared_rows][order]
    bounds = np.flatnonzero(np.r_[True, g[1:] != g[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        members = sorted(set(o[a:b].tolist()))
        for i, x in enumerate(members):
            for y in members[i + 1 :]:
                pairs[(x, y)] += 1
    for (x, y), n in pairs.items():
        smaller = min(len(prints[x]), len(prints[y]))
        if smaller and n / smaller >= DUPLICATE_MIN_SHARE:
            dups[names[x]].append(names[y])
            dups[names[y]].append(names[x])
    return dups
