"""Value rules over one series' arrays: sanity, outliers, tradeability.

Pure functions of numpy arrays; each returns a finding (and the share of bars it
invalidates, for the quality score).
"""

from __future__ import annotations

import numpy as np

from asterai.data.gate.model import (
    CONTAMINATED,
    EXCLUDED,
    Finding,
    at_rows,
    failed,
    passed,
    skipped,
)

OUTLIER_Z = 10.0
OUTLIER_MAX_SHARE = 0.02
OUTLIER_MIN_COUNT = 3
OUTLIER_MIN_RETURNS = 20
DEAD_ZERO_VOLUME_SHARE = 0.95
QUOTE_VOLUME_TOLERANCE = 1e-3
OPEN_OUTSIDE_MAX_SHARE = 0.01
SUM_TOLERANCE = 1e-9


def impossible_bars(
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    qv: np.ndarray,
    taker_buy: np.ndarray | None,
    prev_close: np.ndarray | None = None,
) -> list[tuple[np.ndarray, str]]:
    """Per rule, the bars no exchange sends (see ``check_sanity``): a mask and its words.
    ``prev_close``: the close of the bar one step before each (``previous_close``); NaN
    where it is not known, None where the caller knows none (then that rule judges
    nothing). The signal service refuses such a bar as it arrives (``deploy.follow``)."""
    finite = (
        np.isfinite(o)
        & np.isfinite(h)
        & np.isfinite(lo)
        & np.isfinite(c)
        & np.isfinite(v)
        & np.isfinite(qv)
    )
    impossible = [
        (~finite, "non-finite values"),
        (finite & ~((lo > 0) & (o > 0) & (c > 0) & (h > 0)), "prices not positive"),
        (finite & ((lo > h) | (lo > c) | (h < c)), "low <= close <= high broken"),
        (finite & (v < 0), "negative volume"),
        (finite & (qv < 0), "negative quote volume"),
    ]
    if prev_close is None:
        prev_close = np.full(len(c), np.nan)
    # No trade, no new price: an exchange's bar without volume repeats the previous close
    # (all 3,624 of the recording's do); one that moves is a fill-in by whoever made the
    # file, and one such bar can decide a backtest.
    known_prev = np.isfinite(prev_close)
    impossible.append(
        (
            finite & known_prev & (v == 0)
            & ((o != prev_close) | (h != prev_close) | (lo != prev_close) | (c != prev_close)),
            "a bar without volume that moves the price",
        )
    )  # fmt: skip
    if taker_buy is not None:
        known = np.isfinite(taker_buy)
        impossible.append(
            (
                known & ((taker_buy < 0) | (taker_buy > v * (1 + SUM_TOLERANCE) + 1e-12)),
                "taker-buy volume outside 0..volume",
            )
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        implied = np.where(v > 0, qv / v, np.nan)
    tol = QUOTE_VOLUME_TOLERANCE
    impossible.append(
        (
            finite
            & (
                ((v == 0) & (qv != 0))
                | ((v > 0) & ((implied < lo * (1 - tol)) | (implied > h * (1 + tol))))
            ),
            "quote volume inconsistent with volume x price",
        )
    )
    return impossible


def previous_close(c: np.ndarray, times: np.ndarray, step_ms: int) -> np.ndarray:
    """Each bar's previous close: the close of the bar one step before it, NaN where
    that bar is missing (after a gap the price may have moved in the missing bars)."""
    out = np.full(len(c), np.nan)
    if len(c) > 1:
        follows = np.diff(times) == step_ms
        out[1:] = np.where(follows, c[:-1], np.nan)
    return out


def check_sanity(
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    qv: np.ndarray,
    taker_buy: np.ndarray | None,
    times: np.ndarray,
    name: str,
    step_ms: int,
) -> tuple[Finding, float]:
    """Impossible values are contamination; implausible but possible ones exclude.

    Impossible (no exchange sends them, so the file was altered): non-finite values,
    prices <= 0, ``low <= close <= high`` broken, negative volumes, taker-buy volume
    outside 0..volume, quote volume whose implied average price (quote / base volume)
    leaves the bar's ``low..high`` by more than 0.1%, a bar without volume whose open,
    high, low or close differs from the previous bar's close. Implausible but seen on real
    exchanges: opens outside ``low..high``; on more than ``OPEN_OUTSIDE_MAX_SHARE`` of
    bars they exclude the series.
    """
    prev = previous_close(c, times, step_ms)  # the interval's step: a gap is not judged
    impossible = impossible_bars(o, h, lo, c, v, qv, taker_buy, prev)
    finite = ~impossible[0][0]  # its first rule: non-finite values
    implausible: list[tuple[np.ndarray, str]] = []
    invalid = np.zeros(len(o), dtype=bool)
    for mask, _ in impossible + implausible:
        invalid |= mask
    # The exchange's own bars occasionally open outside their low..high (BTCUSDT 4h
    # 2025-09-16 16:00 opens at 115846.0 with a low of 116007.6): tolerated when rare.
    open_out = finite & ((lo > o) | (h < o)) & ~invalid
    open_share = float(open_out.mean()) if len(open_out) else 0.0
    if open_share > OPEN_OUTSIDE_MAX_SHARE:
        invalid |= open_out
        implausible.append((open_out, f"open outside low..high on {open_share:.1%} of bars"))
    invalid_share = round(float(invalid.mean()) if len(invalid) else 0.0, 6)
    for group, outcome in ((impossible, CONTAMINATED), (implausible, EXCLUDED)):
        hits = [(mask, what) for mask, what in impossible + implausible if mask.any()]
        if any(mask.any() for mask, _ in group):
            mask, what = next((m, w) for m, w in group if m.any())
            others = [w for _, w in hits if w != what]
            extra = f" (also: {', '.join(others)})" if others else ""
            return (
                at_rows("sanity", "fail", f"{name}: {what}{extra}", mask, times, outcome),
                invalid_share,
            )
    if open_out.any():
        return (
            at_rows(
                "sanity",
                "warn",
                f"{name}: {int(open_out.sum())} bar(s) open outside their low..high, as the "
                "exchange's own bars sometimes do",
                open_out,
                times,
            ),
            invalid_share,
        )
    return passed("sanity"), invalid_share


def check_outliers(close: np.ndarray, times: np.ndarray, name: str) -> tuple[Finding, float]:
    """Returns beyond ``OUTLIER_Z`` robust z; too many of them exclude the series."""
    if len(close) < 2 or not np.all(np.isfinite(close)) or not np.all(close > 0):
        return skipped("outliers", "no valid closes to measure returns on"), 0.0
    r = np.diff(np.log(close))
    nz = r[r != 0]
    if len(nz) < OUTLIER_MIN_RETURNS:
        return skipped("outliers", f"only {len(nz)} non-zero returns; too few to judge"), 0.0
    med = np.median(nz)
    mad = 1.4826 * np.median(np.abs(nz - med))
    if mad == 0:
        return skipped("outliers", "returns have no spread"), 0.0
    flagged = np.r_[False, np.abs(r - med) / mad > OUTLIER_Z]
    count = int(flagged.sum())
    share = round(count / max(len(r), 1), 6)
    if not count:
        return passed("outliers", f"no return beyond {OUTLIER_Z:g} robust z"), share
    too_many = count > max(OUTLIER_MIN_COUNT, OUTLIER_MAX_SHARE * len(r))
    return (
        at_rows(
            "outliers",
            "fail" if too_many else "warn",
            f"{name}: {count} returns beyond {OUTLIER_Z:g} robust z ({share:.2%}, limit "
            f"{OUTLIER_MAX_SHARE:.0%})",
            flagged,
            times,
            EXCLUDED if too_many else None,
        ),
        share,
    )


def check_tradeability(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    category: str | None,
    name: str,
) -> Finding:
    """A dead market (no volume, one price throughout) is excluded as untradeable."""
    if len(volume) == 0:
        return skipped("tradeability", "no bars")
    zero = float((volume == 0).mean())
    constant = bool(np.nanmax(high) == np.nanmin(low))
    if zero >= DEAD_ZERO_VOLUME_SHARE and constant:
        return failed(
            "tradeability",
            EXCLUDED,
            f"{name}: dead market: zero volume on {zero:.0%} of bars and one price "
            f"({close[0]:g}) throughout",
        )
    if zero >= DEAD_ZERO_VOLUME_SHARE:
        return Finding(
            "tradeability", "warn", f"{name}: nearly no trading: zero volume on {zero:.0%} of bars"
        )
    if zero > 0.2:
        kind = "a stock perpetual's closed hours" if category == "stock_perpetual" else "idle hours"
        return passed(
            "tradeability", f"zero volume on {zero:.0%} of bars with a moving price: {kind}"
        )
    return passed("tradeability", f"zero volume on {zero:.1%} of bars")
