"""The data quality gate: nothing reaches training unless it is verified, real Aster data.

``validate(settings)`` checks every collected series (symbol x interval, and funding)
in ``data/historical/real_aster_only/`` against named rules, gives each a quality
score and each symbol a verdict, and writes ``data/training_readiness_validation.json``.
``verified_series(settings, ...)`` is how later stages load data: it runs the same
gate and hands out only accepted series, so training on refused or unverified data
is impossible, not just discouraged. The gate never modifies or deletes a file.

Rules (each finding is ``pass``, ``warn``, ``fail`` or ``skip``; any ``fail`` refuses
the series):

provenance
    The ``asterai.provenance`` record exists, its ``source`` is ``"aster"``, its
    endpoint, symbol and interval match the file name, and its ``rows``, first and
    last time match the file. Missing or foreign provenance means "unverified".
schema
    The columns and dtypes of DESIGN.md (timestamps ms UTC); open times sorted, unique
    and on the interval's grid; ``close_time = open_time + interval - 1 ms``; no bar in
    the future of the collection time and no bar still open at it.
completeness
    The series ends at the last bar closed at its collection time (a file cut short, or
    shifted back in time, is refused), and missing bars between the first bar (the
    listing, or the window start) and the last are at most ``quality.max_missing_share``
    (5%); the longest gap is reported.
sanity
    Prices > 0 and ``low <= close <= high``; volumes >= 0; taker-buy volume <= volume; quote
    volume consistent with volume x price (its implied average price lies within the
    bar's low..high, 0.1% tolerance; zero when the volume is zero); every required
    value finite. An open outside ``low..high`` is tolerated on up to
    ``OPEN_OUTSIDE_MAX_SHARE`` (1%) of bars, because the exchange's own bars do it: in
    the recording BTCUSDT's 4h bar of 2025-09-16 16:00 opens at 115846.0 below its low
    of 116007.6 (1 of 186 bars); more than that refuses the series.
outliers
    Log returns whose robust z-score ``|r - median| / (1.4826 MAD)`` (median and MAD of
    the non-zero returns) exceeds ``OUTLIER_Z`` (10) are flagged with their times; more
    than ``max(OUTLIER_MIN_COUNT, OUTLIER_MAX_SHARE x returns)`` (3, or 2%) of them
    refuses the series. Measured on the recording: at most 0.7% of 1h returns (APEUSDT,
    5 of 718, in the 2025-10-10 crash) and one 1d return (APEUSDT, 1 of 28).
    Fewer than ``OUTLIER_MIN_RETURNS`` (20) non-zero returns: skipped.
tradeability
    A dead market (zero volume on at least 95% of bars and one price throughout) is
    refused as untradeable. Zero-volume bars with a moving price elsewhere (a stock
    perpetual's closed hours, 47% of AAPLUSDT's hours) are recognised and pass.
tick_grid / lot_step
    Prices sit on the symbol's tick and volumes on its lot step (from the discovery
    file's filters; skipped, with a note, when discovery does not know them).
timeframes
    Every complete higher-timeframe bar (4h, 1d) agrees with the lowest collected
    interval: close equal to the last lower close exactly, volume and quote volume
    equal to the sums (relative 1e-9, float summation), high and low within
    ``HIGH_LOW_TOLERANCE`` (10%) of the lower bars' extremes, and a higher bar with
    volume never spans a stretch without any lower bar. Opens are not compared, and high
    and low only loosely, because the exchange's own bars differ there: in the recording
    4.4% of all 4h opens differ (14 of AAPLUSDT's 29 daily bars), and highs and lows by
    up to 6.8% (4h) and 4.2% (1d). A disagreement refuses the higher file; a lower file
    that disagrees with every higher one is refused too, with its rows in the bars that
    disagree.
duplicate
    Two symbols whose return sequences share long identical stretches (any lag, any
    scale: a copy, a shifted copy or a rescaled copy of another market) are both
    refused, naming each other.
discovery (per symbol)
    A symbol the discovery file marks untrainable (not trading, too short a history)
    is refused with discovery's reason, whatever its files look like.
funding (funding files)
    Provenance as above; no event after the collection time; times sorted, unique and
    on the hour grid (within a minute; the spacing itself may change, as Aster moves a
    symbol between 8 h and 4 h funding); rates within the symbol's cap and floor (the
    discovery file's, or +-``DEFAULT_FUNDING_CAP``).

Quality score per series (0..100): 0 when refused, else
``100 x (1 - missing share) x (1 - invalid-bar share) x (1 - outlier share)``.

A symbol is trainable when every series of it that was checked passes. The gate's
verdict is OK when every symbol that training needs (discovery's trainable symbols
that were collected, or every collected symbol without a discovery file) is trainable.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from asterai import __version__, atomic
from asterai.config import Settings
from asterai.data.store import FUNDING_SCHEMA, KLINE_SCHEMA, CorruptFile, read_provenance
from asterai.intervals import HOUR_MS, INTERVAL_MS, iso_ms, last_closed_open_time
from asterai.paths import DataPaths

log = logging.getLogger(__name__)

SOURCE = "aster"
KLINES_ENDPOINT = "/fapi/v1/klines"
FUNDING_ENDPOINT = "/fapi/v1/fundingRate"

OUTLIER_Z = 10.0
OUTLIER_MAX_SHARE = 0.02
OUTLIER_MIN_RETURNS = 20
DEAD_ZERO_VOLUME_SHARE = 0.95
QUOTE_VOLUME_TOLERANCE = 1e-3
OPEN_OUTSIDE_MAX_SHARE = 0.01
OUTLIER_MIN_COUNT = 3
SUM_TOLERANCE = 1e-9
HIGH_LOW_TOLERANCE = 0.10
GRID_TOLERANCE = 1e-6
DUPLICATE_RUN = 8
DUPLICATE_MIN_SHARE = 0.5
DEFAULT_FUNDING_CAP = 0.03
MAX_ROWS_SHOWN = 5

RULES = (
    "provenance",
    "schema",
    "completeness",
    "sanity",
    "outliers",
    "tradeability",
    "tick_grid",
    "lot_step",
    "timeframes",
    "duplicate",
    "funding",
    "discovery",
)

_FILE_RE = re.compile(r"^(?P<symbol>[A-Z0-9]+)_(?P<kind>\d+[mhd]|funding)\.parquet$")


# -- findings -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's outcome for one file, with the first offending rows."""

    rule: str
    status: str  # pass | warn | fail | skip
    message: str
    rows: tuple[int, ...] = ()
    times: tuple[str, ...] = ()


def _pass(rule: str, message: str = "ok") -> Finding:
    return Finding(rule, "pass", message)


def _skip(rule: str, message: str) -> Finding:
    return Finding(rule, "skip", message)


def _rows_finding(
    rule: str, status: str, message: str, mask: np.ndarray, times_ms: np.ndarray | None
) -> Finding:
    rows = np.flatnonzero(mask)[:MAX_ROWS_SHOWN]
    shown = tuple(int(r) for r in rows)
    stamps: tuple[str, ...] = ()
    if times_ms is not None and len(times_ms):
        stamps = tuple(iso_ms(int(times_ms[r])) or "" for r in rows if r < len(times_ms))
    where = f"; first rows {list(shown)}" + (f" ({', '.join(stamps)})" if stamps else "")
    return Finding(rule, status, message + where, shown, stamps)


@dataclass(slots=True)
class SeriesVerdict:
    symbol: str
    interval: str  # kline interval or "funding"
    file: str
    rows: int = 0
    first_time: str | None = None
    last_time: str | None = None
    missing_share: float | None = None
    longest_gap_bars: int | None = None
    invalid_share: float = 0.0
    outlier_share: float = 0.0
    quality_score: float = 0.0
    findings: list[Finding] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return any(f.status == "fail" for f in self.findings)

    @property
    def failed_rules(self) -> list[str]:
        return sorted({f.rule for f in self.findings if f.status == "fail"}, key=RULES.index)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = "refused" if self.refused else "accepted"
        data["failed_rules"] = self.failed_rules
        data["findings"] = [asdict(f) for f in self.findings]
        return data


# -- reading --------------------------------------------------------------------


@dataclass(slots=True)
class Loaded:
    """A file as the gate sees it: the raw table (no casting), or why it is unreadable."""

    path: Path
    symbol: str
    kind: str
    frame: pd.DataFrame | None
    schema: pa.Schema | None
    provenance: dict[str, Any] | None
    error: str | None = None


def _load(path: Path, symbol: str, kind: str) -> Loaded:
    try:
        table = pq.read_table(path)
        provenance = read_provenance(path, table.schema)
    except (OSError, pa.ArrowException, CorruptFile) as err:
        return Loaded(path, symbol, kind, None, None, None, f"unreadable parquet: {err}")
    try:
        frame = table.to_pandas()
    except (pa.ArrowException, ValueError) as err:
        return Loaded(path, symbol, kind, None, table.schema, provenance, f"unreadable: {err}")
    return Loaded(path, symbol, kind, frame, table.schema, provenance)


def _ms(values: pd.Series) -> np.ndarray:
    """Timestamps (any unit, naive taken as UTC) to epoch ms; integers pass through."""
    if pd.api.types.is_datetime64_any_dtype(values):
        idx = pd.DatetimeIndex(values)
        if idx.tz is None:
            idx = idx.tz_localize("UTC")
        return idx.as_unit("ms").asi8.astype(np.int64)
    return np.asarray(values, dtype=np.int64)


# -- per-file rules -----------------------------------------------------------------


def check_provenance(loaded: Loaded, times: np.ndarray | None, interval: str | None) -> Finding:
    prov = loaded.provenance
    name = loaded.path.name
    if prov is None:
        return Finding("provenance", "fail", f"{name}: unverified: no asterai.provenance record")
    if prov.get("source") != SOURCE:
        return Finding(
            "provenance",
            "fail",
            f"{name}: unverified: source is {prov.get('source')!r}, not 'aster'",
        )
    endpoint = KLINES_ENDPOINT if interval is not None else FUNDING_ENDPOINT
    problems = []
    for key in (
        "rows",
        "requests",
        "collected_at",
        "first_open_time",
        "last_open_time",
        "first_funding_time",
        "last_funding_time",
    ):
        value = prov.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 10**15
        ):
            return Finding(
                "provenance",
                "fail",
                f"{name}: provenance field {key} is not a plausible integer: {value!r}",
            )
    if prov.get("endpoint") != endpoint:
        problems.append(f"endpoint {prov.get('endpoint')!r} is not {endpoint!r}")
    if prov.get("symbol") != loaded.symbol or prov.get("interval") != interval:
        problems.append(
            f"record is for {prov.get('symbol')} {prov.get('interval')}, the file name says "
            f"{loaded.symbol} {interval}"
        )
    n = 0 if loaded.frame is None else len(loaded.frame)
    if prov.get("rows") != n:
        problems.append(f"record says {prov.get('rows')} rows, the file holds {n}")
    if times is not None and len(times):
        first_key, last_key = (
            ("first_open_time", "last_open_time")
            if interval
            else ("first_funding_time", "last_funding_time")
        )
        if prov.get(first_key) != int(times[0]) or prov.get(last_key) != int(times[-1]):
            problems.append(
                f"record spans {iso_ms(prov.get(first_key))}..{iso_ms(prov.get(last_key))}, the "
                f"file {iso_ms(int(times[0]))}..{iso_ms(int(times[-1]))}"
            )
    collected = prov.get("collected_at")
    if not isinstance(collected, int) or collected > time.time() * 1000 + HOUR_MS:
        problems.append(f"collection time {collected!r} is not a time in the past")
    if not isinstance(prov.get("sha256"), list) or prov.get("requests") != len(
        prov.get("sha256") or []
    ):
        problems.append("request count and response hashes do not agree")
    if problems:
        return Finding(
            "provenance", "fail", f"{name}: provenance does not match: " + "; ".join(problems)
        )
    return _pass(
        "provenance", f"collected from {prov.get('base_url')} at {iso_ms(prov.get('collected_at'))}"
    )


def _schema_types(schema: pa.Schema, expected: pa.Schema, name: str) -> Finding | None:
    missing = [f.name for f in expected if f.name not in schema.names]
    if missing:
        return Finding("schema", "fail", f"{name}: missing columns {missing}")
    wrong = [
        f"{f.name} is {schema.field(f.name).type}, expected {f.type}"
        for f in expected
        if schema.field(f.name).type != f.type
    ]
    if wrong:
        return Finding("schema", "fail", f"{name}: wrong dtypes: " + "; ".join(wrong))
    return None


def check_schema(loaded: Loaded, interval: str, times: np.ndarray) -> Finding:
    name = loaded.path.name
    bad = _schema_types(loaded.schema, KLINE_SCHEMA, name)
    if bad is not None:
        return bad
    frame = loaded.frame
    step = INTERVAL_MS[interval]
    diffs = np.diff(times)
    if (diffs == 0).any():
        return _rows_finding(
            "schema", "fail", f"{name}: duplicate bars", np.r_[False, diffs == 0], times
        )
    if (diffs < 0).any():
        return _rows_finding(
            "schema", "fail", f"{name}: bars not sorted", np.r_[False, diffs < 0], times
        )
    off_grid = times % step != 0
    if off_grid.any():
        return _rows_finding(
            "schema", "fail", f"{name}: open times off the {interval} grid", off_grid, times
        )
    close = _ms(frame["close_time"])
    wrong_close = close != times + step - 1
    if wrong_close.any():
        return _rows_finding(
            "schema",
            "fail",
            f"{name}: close_time is not open_time + {interval} - 1 ms",
            wrong_close,
            times,
        )
    collected = (loaded.provenance or {}).get("collected_at")
    now = int(collected) if isinstance(collected, int) else int(time.time() * 1000)
    future = times > now
    if future.any():
        return _rows_finding(
            "schema", "fail", f"{name}: bars in the future of the collection time", future, times
        )
    still_open = times + step > now
    if still_open.any():
        return _rows_finding(
            "schema",
            "fail",
            f"{name}: a bar still open at the collection time was stored",
            still_open,
            times,
        )
    return _pass("schema")


def check_completeness(
    verdict: SeriesVerdict,
    times: np.ndarray,
    interval: str,
    max_missing: float,
    collected_at: int | None = None,
) -> Finding:
    step = INTERVAL_MS[interval]
    name = Path(verdict.file).name
    if len(times) == 0:
        verdict.missing_share = 1.0
        return Finding("completeness", "fail", f"{name}: no bars")
    if isinstance(collected_at, int):
        expected_last = last_closed_open_time(collected_at, interval)
        if times[-1] < expected_last:
            short = int((expected_last - times[-1]) // step)
            return Finding(
                "completeness",
                "fail",
                f"{name}: ends at {iso_ms(int(times[-1]))} (row {len(times) - 1}), {short} bar(s) before "
                f"the last bar closed at the collection time ({iso_ms(expected_last)})",
                (len(times) - 1,),
                (iso_ms(int(times[-1])) or "",),
            )
    expected = int((times[-1] - times[0]) // step + 1)
    missing = expected - len(times)
    share = missing / expected
    jumps = np.diff(times) // step - 1
    longest = int(jumps.max()) if len(jumps) else 0
    verdict.missing_share = round(share, 6)
    verdict.longest_gap_bars = longest
    msg = f"{missing} of {expected} bars missing ({share:.2%}), longest gap {longest} bars"
    if share > max_missing:
        gap_rows = np.r_[False, jumps > 0]
        return _rows_finding(
            "completeness",
            "fail",
            f"{Path(verdict.file).name}: {msg}, above {max_missing:.0%}; bars right after a gap at",
            gap_rows,
            times,
        )
    return _pass("completeness", msg)


def check_sanity(verdict: SeriesVerdict, frame: pd.DataFrame, times: np.ndarray) -> Finding:
    name = Path(verdict.file).name
    o, h, lo, c, v, qv = (
        frame[k].to_numpy(dtype=float)
        for k in ("open", "high", "low", "close", "volume", "quote_volume")
    )
    finite = (
        np.isfinite(o)
        & np.isfinite(h)
        & np.isfinite(lo)
        & np.isfinite(c)
        & np.isfinite(v)
        & np.isfinite(qv)
    )
    checks = [
        (~finite, "non-finite values"),
        (finite & ~((lo > 0) & (o > 0) & (c > 0) & (h > 0)), "prices not positive"),
        (finite & ((lo > h) | (lo > c) | (h < c)), "low <= close <= high broken"),
        (finite & (v < 0), "negative volume"),
        (finite & (qv < 0), "negative quote volume"),
    ]
    if "taker_buy_base" in frame:
        tbb = frame["taker_buy_base"].to_numpy(dtype=float)
        known = np.isfinite(tbb)
        checks.append(
            (
                known & ((tbb < 0) | (tbb > v * (1 + SUM_TOLERANCE) + 1e-12)),
                "taker-buy volume outside 0..volume",
            )
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        implied = np.where(v > 0, qv / v, np.nan)
    tol = QUOTE_VOLUME_TOLERANCE
    checks.append(
        (
            finite
            & (
                ((v == 0) & (qv != 0))
                | ((v > 0) & ((implied < lo * (1 - tol)) | (implied > h * (1 + tol))))
            ),
            "quote volume inconsistent with volume x price",
        )
    )
    invalid = np.zeros(len(frame), dtype=bool)
    failures = []
    for mask, what in checks:
        if mask.any():
            invalid |= mask
            failures.append((mask, what))
    # The exchange's own bars occasionally open outside their low..high (BTCUSDT 4h
    # 2025-09-16 16:00 opens at 115846.0 with a low of 116007.6): tolerated when rare.
    open_out = finite & ((lo > o) | (h < o)) & ~invalid
    open_share = float(open_out.mean()) if len(open_out) else 0.0
    if open_share > OPEN_OUTSIDE_MAX_SHARE:
        invalid |= open_out
        failures.append((open_out, f"open outside low..high on {open_share:.1%} of bars"))
    verdict.invalid_share = round(float(invalid.mean()) if len(invalid) else 0.0, 6)
    if failures:
        mask, what = failures[0]
        others = [w for _, w in failures[1:]]
        extra = f" (also: {', '.join(others)})" if others else ""
        return _rows_finding("sanity", "fail", f"{name}: {what}{extra}", mask, times)
    if open_out.any():
        return _rows_finding(
            "sanity",
            "warn",
            f"{name}: {int(open_out.sum())} bar(s) open outside their low..high, as the "
            "exchange's own bars sometimes do",
            open_out,
            times,
        )
    return _pass("sanity")


def check_outliers(verdict: SeriesVerdict, frame: pd.DataFrame, times: np.ndarray) -> Finding:
    close = frame["close"].to_numpy(dtype=float)
    if len(close) < 2 or not np.all(np.isfinite(close)) or not np.all(close > 0):
        return _skip("outliers", "no valid closes to measure returns on")
    r = np.diff(np.log(close))
    nz = r[r != 0]
    if len(nz) < OUTLIER_MIN_RETURNS:
        return _skip("outliers", f"only {len(nz)} non-zero returns; too few to judge")
    med = np.median(nz)
    mad = 1.4826 * np.median(np.abs(nz - med))
    if mad == 0:
        return _skip("outliers", "returns have no spread")
    z = np.abs(r - med) / mad
    flagged = np.r_[False, z > OUTLIER_Z]
    count = int(flagged.sum())
    share = count / max(len(r), 1)
    verdict.outlier_share = round(share, 6)
    if not count:
        return _pass("outliers", f"no return beyond {OUTLIER_Z:g} robust z")
    status = "fail" if count > max(OUTLIER_MIN_COUNT, OUTLIER_MAX_SHARE * len(r)) else "warn"
    name = Path(verdict.file).name
    return _rows_finding(
        "outliers",
        status,
        f"{name}: {int(flagged.sum())} returns beyond {OUTLIER_Z:g} robust z ({share:.2%}, limit {OUTLIER_MAX_SHARE:.0%})",
        flagged,
        times,
    )


def check_tradeability(
    verdict: SeriesVerdict, frame: pd.DataFrame, category: str | None
) -> Finding:
    v = frame["volume"].to_numpy(dtype=float)
    if len(v) == 0:
        return _skip("tradeability", "no bars")
    high, low, close = (frame[k].to_numpy(dtype=float) for k in ("high", "low", "close"))
    zero = float((v == 0).mean())
    constant = bool(np.nanmax(high) == np.nanmin(low))
    name = Path(verdict.file).name
    if zero >= DEAD_ZERO_VOLUME_SHARE and constant:
        return Finding(
            "tradeability",
            "fail",
            f"{name}: dead market: zero volume on {zero:.0%} of bars and one price ({close[0]:g}) throughout",
        )
    if zero >= DEAD_ZERO_VOLUME_SHARE:
        return Finding(
            "tradeability", "warn", f"{name}: nearly no trading: zero volume on {zero:.0%} of bars"
        )
    if zero > 0.2:
        kind = "a stock perpetual's closed hours" if category == "stock_perpetual" else "idle hours"
        return _pass(
            "tradeability", f"zero volume on {zero:.0%} of bars with a moving price: {kind}"
        )
    return _pass("tradeability", f"zero volume on {zero:.1%} of bars")


def _grid_mask(values: np.ndarray, unit: float) -> np.ndarray:
    ratio = values / unit
    return np.abs(ratio - np.round(ratio)) > GRID_TOLERANCE * np.maximum(
        1.0, np.abs(ratio) * 1e-9 / GRID_TOLERANCE
    )


def check_tick_grid(
    frame: pd.DataFrame, times: np.ndarray, tick: float | None, name: str
) -> Finding:
    if not tick:
        return _skip(
            "tick_grid",
            "tick size unknown (no discovery file or no PRICE_FILTER); run `asterai discover`",
        )
    prices = frame[["open", "high", "low", "close"]].to_numpy(dtype=float)
    off = _grid_mask(prices, tick).any(axis=1)
    if off.any():
        return _rows_finding(
            "tick_grid", "fail", f"{name}: prices off the {tick:g} tick grid", off, times
        )
    return _pass("tick_grid", f"every price on the {tick:g} tick grid")


def check_lot_step(
    frame: pd.DataFrame, times: np.ndarray, step: float | None, name: str
) -> Finding:
    if not step:
        return _skip("lot_step", "lot step unknown (no discovery file or no LOT_SIZE)")
    v = frame["volume"].to_numpy(dtype=float)
    off = _grid_mask(v, step)
    if off.any():
        return _rows_finding(
            "lot_step", "fail", f"{name}: volumes off the {step:g} lot step", off, times
        )
    return _pass("lot_step", f"every volume on the {step:g} lot step")


# -- cross-file rules -----------------------------------------------------------------


def compare_timeframes(
    lower: pd.DataFrame,
    lower_times: np.ndarray,
    lower_iv: str,
    higher: pd.DataFrame,
    higher_times: np.ndarray,
    higher_iv: str,
    name: str,
) -> tuple[Finding, np.ndarray]:
    """Check a higher-timeframe series against the lower one it must aggregate.

    Returns the finding and the open times of the higher bars that disagree.
    """
    lstep, hstep = INTERVAL_MS[lower_iv], INTERVAL_MS[higher_iv]
    per = hstep // lstep
    none = np.empty(0, dtype=np.int64)
    if hstep % lstep or per < 2:
        return _skip("timeframes", f"{higher_iv} is not a multiple of {lower_iv}"), none
    bucket = lower_times - lower_times % hstep
    starts, first_idx, counts = np.unique(bucket, return_index=True, return_counts=True)
    pos = np.searchsorted(starts, higher_times)
    found = (pos < len(starts)) & (starts[np.minimum(pos, len(starts) - 1)] == higher_times)
    complete = np.zeros(len(higher_times), dtype=bool)
    complete[found] = counts[pos[found]] == per
    idx = pos[complete]
    last_idx = first_idx + counts - 1

    def low(k: str) -> np.ndarray:
        return lower[k].to_numpy(dtype=float)

    def high(k: str) -> np.ndarray:
        return higher[k].to_numpy(dtype=float)[complete]

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
    inside = (
        (higher_times >= lower_times[0]) & (higher_times + hstep - 1 <= lower_times[-1])
        if len(lower_times)
        else np.zeros(n, bool)
    )
    checks.append(
        (
            inside & ~found & (higher["volume"].to_numpy(dtype=float) > 0),
            f"bars with volume where the {lower_iv} file has none",
        )
    )
    for mask, what in checks:
        if mask.any():
            return (
                _rows_finding("timeframes", "fail", f"{name}: {what}", mask, higher_times),
                higher_times[mask],
            )
    n_complete = int(complete.sum())
    if n_complete == 0:
        return _skip("timeframes", f"no complete {higher_iv} bar to compare with {lower_iv}"), none
    return (
        _pass(
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


def check_funding(
    loaded: Loaded, times: np.ndarray, cap: float | None, floor: float | None
) -> Finding:
    name = loaded.path.name
    bad = _schema_types(loaded.schema, FUNDING_SCHEMA, name)
    if bad is not None:
        return bad
    if len(times) == 0:
        return _pass("funding", "no funding history on the exchange for this window")
    diffs = np.diff(times)
    if (diffs <= 0).any():
        return _rows_finding(
            "funding",
            "fail",
            f"{name}: funding times not sorted and unique",
            np.r_[False, diffs <= 0],
            times,
        )
    collected = (loaded.provenance or {}).get("collected_at")
    if isinstance(collected, int) and (times > collected).any():
        return _rows_finding(
            "funding",
            "fail",
            f"{name}: funding events after the collection time",
            times > collected,
            times,
        )
    off_hour = np.minimum(times % HOUR_MS, HOUR_MS - times % HOUR_MS) > 60_000
    if off_hour.any():
        return _rows_finding(
            "funding", "fail", f"{name}: funding times off the hour grid", off_hour, times
        )
    cap = DEFAULT_FUNDING_CAP if cap is None else cap
    floor = -DEFAULT_FUNDING_CAP if floor is None else floor
    rates = loaded.frame["funding_rate"].to_numpy(dtype=float)
    outside = ~np.isfinite(rates) | (rates > cap + 1e-12) | (rates < floor - 1e-12)
    if outside.any():
        return _rows_finding(
            "funding",
            "fail",
            f"{name}: rates outside the cap {cap:g} and floor {floor:g}",
            outside,
            times,
        )
    return _pass("funding", f"{len(times)} funding events, rates within {floor:g}..{cap:g}")


# -- the gate -----------------------------------------------------------------------


@dataclass(slots=True)
class GateReport:
    settings: Settings
    series: list[SeriesVerdict] = field(default_factory=list)
    symbols: dict[str, dict[str, Any]] = field(default_factory=dict)
    needed: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def trainable(self) -> list[str]:
        return sorted(s for s, v in self.symbols.items() if v["trainable"])

    @property
    def ok(self) -> bool:
        return (
            bool(self.needed)
            and not self.problems
            and all(self.symbols.get(s, {}).get("trainable") for s in self.needed)
        )

    def reasons(self) -> list[str]:
        """Why the verdict is "not ready": problems, then each needed symbol refused."""
        return self.problems + [
            f"{s}: {', '.join(self.symbols[s]['failed_rules'])}"
            for s in self.needed
            if self.refused(s)
        ]

    def refused(self, symbol: str) -> bool:
        return not self.symbols.get(symbol, {}).get("trainable", False)

    def to_json(self) -> dict[str, Any]:
        return {
            "generated_at": iso_ms(int(time.time() * 1000)),
            "asterai_version": __version__,
            "data_root": str(self.settings.data_root),
            "ok": self.ok,
            "verdict": "ready" if self.ok else "not ready",
            "needed_symbols": self.needed,
            "trainable_symbols": self.trainable,
            "refused_symbols": sorted(s for s in self.symbols if self.refused(s)),
            "problems": self.problems,
            "rules": list(RULES),
            "thresholds": {
                "max_missing_share": self.settings.quality.max_missing_share,
                "outlier_z": OUTLIER_Z,
                "outlier_max_share": OUTLIER_MAX_SHARE,
                "dead_zero_volume_share": DEAD_ZERO_VOLUME_SHARE,
                "open_outside_max_share": OPEN_OUTSIDE_MAX_SHARE,
                "outlier_min_count": OUTLIER_MIN_COUNT,
                "default_funding_cap": DEFAULT_FUNDING_CAP,
            },
            "quality_score_formula": "0 if refused, else 100 x (1 - missing share) x (1 - invalid-bar share) x (1 - outlier share)",
            "symbols": self.symbols,
            "series": [v.to_json() for v in self.series],
            "environment": self.environment,
        }


def _discovery(paths: DataPaths) -> dict[str, dict[str, Any]]:
    if not paths.discovery.exists():
        return {}
    try:
        doc = json.loads(paths.discovery.read_text())
    except ValueError:
        return {}
    entries = doc.get("symbols", []) if isinstance(doc, dict) else []
    return {
        s["symbol"]: s for s in entries if isinstance(s, dict) and isinstance(s.get("symbol"), str)
    }


def _files(folder: Path) -> dict[str, dict[str, Path]]:
    found: dict[str, dict[str, Path]] = defaultdict(dict)
    if folder.is_dir():
        for path in sorted(folder.glob("*.parquet")):
            m = _FILE_RE.match(path.name)
            if m and (m["kind"] == "funding" or m["kind"] in INTERVAL_MS):
                found[m["symbol"]][m["kind"]] = path
    return found


def _check_klines_file(
    loaded: Loaded, interval: str, disc: dict[str, Any], settings: Settings
) -> tuple[SeriesVerdict, np.ndarray | None]:
    verdict = SeriesVerdict(loaded.symbol, interval, str(loaded.path))
    name = loaded.path.name
    if loaded.frame is None:
        verdict.add(
            Finding(
                "schema", "fail", f"{name}: {loaded.error}. Move the file aside and collect again."
            )
        )
        return verdict, None
    frame = loaded.frame
    verdict.rows = len(frame)
    if "open_time" not in frame:
        verdict.add(check_provenance(loaded, None, interval))
        verdict.add(Finding("schema", "fail", f"{name}: missing column open_time"))
        return verdict, None
    times = _ms(frame["open_time"])
    if len(times):
        verdict.first_time, verdict.last_time = iso_ms(int(times[0])), iso_ms(int(times[-1]))
    verdict.add(check_provenance(loaded, times, interval))
    schema = check_schema(loaded, interval, times)
    verdict.add(schema)
    if schema.status == "fail" and (
        "missing columns" in schema.message or "wrong dtypes" in schema.message
    ):
        return verdict, None  # the value rules cannot read a frame of the wrong shape
    filters = (
        {k: _positive_float(v) for k, v in (disc.get("filters") or {}).items()}
        if isinstance(disc.get("filters"), dict)
        else {}
    )
    verdict.add(
        check_completeness(
            verdict,
            times,
            interval,
            settings.quality.max_missing_share,
            (loaded.provenance or {}).get("collected_at"),
        )
    )
    verdict.add(check_sanity(verdict, frame, times))
    verdict.add(check_outliers(verdict, frame, times))
    verdict.add(check_tradeability(verdict, frame, disc.get("category")))
    verdict.add(check_tick_grid(frame, times, filters.get("tick_size"), name))
    verdict.add(check_lot_step(frame, times, filters.get("step_size"), name))
    return verdict, times


def validate(settings: Settings, *, environment: bool = True, write: bool = True) -> GateReport:
    """Run every rule on every collected file; write the JSON report (atomically)."""
    paths = DataPaths.at(settings.data_root)
    discovery = _discovery(paths)
    files = _files(paths.historical)
    report = GateReport(settings=settings)
    if not files:
        report.problems.append(
            f"no collected data in {paths.historical}; run `asterai collect` first"
        )
    one_h: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    by_symbol: dict[str, list[SeriesVerdict]] = defaultdict(list)
    for symbol, kinds in sorted(files.items()):
        disc = discovery.get(symbol, {})
        checked: dict[str, tuple[SeriesVerdict, Loaded, np.ndarray | None]] = {}
        for kind in sorted((k for k in kinds if k != "funding"), key=lambda k: INTERVAL_MS[k]):
            loaded = _load(kinds[kind], symbol, kind)
            try:
                verdict, times = _check_klines_file(loaded, kind, disc, settings)
            except Exception as err:  # a tampered file must be refused, never crash the gate
                verdict, times = _crashed(loaded, kind, err), None
            checked[kind] = (verdict, loaded, times)
        _check_timeframes(checked)
        lowest = next(iter(checked), None)
        if lowest is not None:
            verdict, loaded, times = checked[lowest]
            if times is not None and loaded.frame is not None and "close" in loaded.frame:
                one_h[symbol] = (loaded.frame["close"].to_numpy(dtype=float), times)
        for verdict, _, _ in checked.values():
            by_symbol[symbol].append(verdict)
        for interval in settings.collect.intervals:
            if interval not in kinds:
                missing = SeriesVerdict(symbol, interval, str(paths.klines(symbol, interval)))
                missing.add(
                    Finding(
                        "completeness",
                        "fail",
                        f"{paths.klines(symbol, interval).name}: no such file; collect it first",
                    )
                )
                by_symbol[symbol].append(missing)
        if "funding" in kinds:
            try:
                by_symbol[symbol].append(_check_funding_file(kinds["funding"], symbol, disc))
            except Exception as err:
                by_symbol[symbol].append(
                    _crashed(_load(kinds["funding"], symbol, "funding"), "funding", err)
                )

    _check_duplicates(one_h, by_symbol)

    for symbol, verdicts in sorted(by_symbol.items()):
        for v in verdicts:
            _score(v)
            report.series.append(v)
        failed = sorted({r for v in verdicts for r in v.failed_rules}, key=RULES.index)
        disc = discovery.get(symbol, {})
        refusals = [
            {
                "file": v.file,
                "rule": f.rule,
                "message": f.message,
                "rows": list(f.rows),
                "times": list(f.times),
            }
            for v in verdicts
            for f in v.findings
            if f.status == "fail"
        ]
        if disc.get("trainable") is False:
            failed.append("discovery")
            refusals.append(
                {
                    "file": str(paths.discovery),
                    "rule": "discovery",
                    "message": f"{paths.discovery.name}: {symbol} is not trainable: {disc.get('reason')}",
                    "rows": [],
                    "times": [],
                }
            )
        report.symbols[symbol] = {
            "trainable": not failed,
            "failed_rules": failed,
            "refusals": refusals,
            "warnings": [f.message for v in verdicts for f in v.findings if f.status == "warn"],
            "quality_score": min((v.quality_score for v in verdicts), default=0.0),
            "category": disc.get("category"),
            "discovery_trainable": disc.get("trainable"),
        }
    if discovery:
        report.needed = sorted(s for s in report.symbols if discovery.get(s, {}).get("trainable"))
        if report.symbols and not report.needed:
            report.problems.append("no collected symbol is marked trainable by discovery")
    else:
        report.needed = sorted(report.symbols)
    if environment:
        from asterai.readiness import environment_report

        report.environment = environment_report(settings)
    if write:
        paths.data_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_json(paths.validation, report.to_json())
    return report


def _positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _crashed(loaded: Loaded, kind: str, err: Exception) -> SeriesVerdict:
    verdict = SeriesVerdict(loaded.symbol, kind, str(loaded.path))
    verdict.add(
        Finding(
            "schema",
            "fail",
            f"{loaded.path.name}: cannot be checked ({type(err).__name__}: {err}); a file the collector "
            "wrote never fails like this",
        )
    )
    return verdict


def _check_timeframes(checked: dict[str, tuple[SeriesVerdict, Loaded, np.ndarray | None]]) -> None:
    usable = [
        k for k, (v, _, t) in checked.items() if t is not None and "schema" not in v.failed_rules
    ]
    if len(usable) < 2:
        return
    low = usable[0]
    lv, ll, lt = checked[low]
    bad_spans: list[tuple[int, np.ndarray]] = []
    for high in usable[1:]:
        hv, hl, ht = checked[high]
        finding, bad_times = compare_timeframes(ll.frame, lt, low, hl.frame, ht, high, hl.path.name)
        hv.add(finding)
        if finding.status == "fail":
            bad_spans.append((INTERVAL_MS[high], bad_times))
    if bad_spans and len(bad_spans) == len(usable) - 1 and len(usable) > 2:
        # every higher timeframe disagrees: the lower file is the odd one out
        step, times = min(bad_spans, key=lambda item: item[0])
        mask = np.isin(lt - lt % step, times)
        lv.add(
            _rows_finding(
                "timeframes",
                "fail",
                f"{ll.path.name}: disagrees with every higher timeframe ({', '.join(usable[1:])}) in the bars of",
                mask,
                lt,
            )
        )
    else:
        lv.add(
            _pass(
                "timeframes",
                f"the lowest collected interval; {', '.join(usable[1:])} checked against it",
            )
        )


def _check_duplicates(
    closes: dict[str, tuple[np.ndarray, np.ndarray]], by_symbol: dict[str, list[SeriesVerdict]]
) -> None:
    if len(closes) < 2:
        return
    groups: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = defaultdict(dict)
    for sym, (close, times) in closes.items():
        if len(times) > 1:
            groups[int(np.median(np.diff(times)))][sym] = (close, times)
    for step, group in groups.items():
        dups = find_duplicates(group, step)
        for sym, others in dups.items():
            target = by_symbol[sym][0]
            target.add(
                Finding(
                    "duplicate",
                    "fail",
                    f"{Path(target.file).name}: its returns repeat those of {', '.join(sorted(others))} "
                    "(a copy, shifted or rescaled, of another market)",
                )
            )


def _check_funding_file(path: Path, symbol: str, disc: dict[str, Any]) -> SeriesVerdict:
    loaded = _load(path, symbol, "funding")
    verdict = SeriesVerdict(symbol, "funding", str(path))
    if loaded.frame is None:
        verdict.add(Finding("funding", "fail", f"{path.name}: {loaded.error}"))
        return verdict
    verdict.rows = len(loaded.frame)
    times = (
        _ms(loaded.frame["funding_time"])
        if "funding_time" in loaded.frame
        else np.array([], np.int64)
    )
    if len(times):
        verdict.first_time, verdict.last_time = iso_ms(int(times[0])), iso_ms(int(times[-1]))
    verdict.add(check_provenance(loaded, times, None))
    funding = disc.get("funding") if isinstance(disc.get("funding"), dict) else {}
    cap, floor = funding.get("cap"), funding.get("floor")
    verdict.add(
        check_funding(
            loaded,
            times,
            float(cap) if isinstance(cap, int | float) else None,
            float(floor) if isinstance(floor, int | float) else None,
        )
    )
    return verdict


def _score(v: SeriesVerdict) -> None:
    if v.refused:
        v.quality_score = 0.0
        return
    missing = v.missing_share or 0.0
    v.quality_score = round(100 * (1 - missing) * (1 - v.invalid_share) * (1 - v.outlier_share), 3)


# -- the only door to training data -----------------------------------------------------


class GateRefused(RuntimeError):
    """Training asked for data the gate refused (or that is unverified)."""


def verified_series(
    settings: Settings, intervals: Iterable[str] | None = None, symbols: Iterable[str] | None = None
) -> dict[tuple[str, str], pd.DataFrame]:
    """Load the series training may use, after running the gate on them.

    Named symbols that the gate refuses raise ``GateRefused`` with every failed rule.
    Without names, the gate's verdict must be "ready" (every symbol training needs is
    accepted); then its trainable symbols are loaded.
    """
    from asterai.data.store import read_series

    report = validate(settings, environment=False, write=False)
    intervals = tuple(intervals or settings.collect.intervals)
    if symbols is None and not report.ok:
        raise GateRefused("the data is not ready for training: " + "; ".join(report.reasons()))
    wanted = list(symbols) if symbols is not None else report.trainable
    refused = [s for s in wanted if report.refused(s)]
    if refused:
        details = "; ".join(
            f"{s}: " + ", ".join(report.symbols.get(s, {}).get("failed_rules", ["not collected"]))
            for s in refused
        )
        raise GateRefused(
            f"the quality gate refuses {details} (see {DataPaths.at(settings.data_root).validation})"
        )
    if not wanted:
        raise GateRefused(
            "the quality gate accepts no symbol; run `asterai validate` for the reasons"
        )
    paths = DataPaths.at(settings.data_root)
    return {
        (s, iv): read_series(paths.klines(s, iv), "klines").frame
        for s in wanted
        for iv in intervals
    }
