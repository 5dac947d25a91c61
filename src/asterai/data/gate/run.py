"""Running the gate: read every collected file once, apply the rules, decide, report.

This is the only module of the gate that touches the disk; the rules are pure
functions of the arrays it hands them. The gate never modifies or deletes a file: it
writes its report (and the universe) atomically, nothing else.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from asterai import atomic
from asterai.config import Settings
from asterai.data.gate import cross, grids, series, values
from asterai.data.gate.funding import check_funding
from asterai.data.gate.model import (
    CONTAMINATED,
    EXCLUDED,
    RULES,
    TRAINABLE,
    Finding,
    SeriesVerdict,
    at_rows,
    failed,
    passed,
)
from asterai.data.gate.provenance import check_provenance
from asterai.data.gate.report import GateReport
from asterai.data.store import KLINE_SCHEMA, CorruptFile, read_provenance
from asterai.data.universe import BaseBars, build_universe, known_tick, write_universe
from asterai.intervals import INTERVAL_MS, iso_ms, last_closed_open_time
from asterai.paths import DataPaths

log = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(?P<symbol>[A-Z0-9]+)_(?P<kind>\d+[mhd]|funding)\.parquet$")


class GateRefused(RuntimeError):
    """Training asked for data the gate refused (or that is unverified)."""


class GateUsageError(ValueError):
    """A symbol named by the user (``--exclude``, ``--symbols``) that the data root does not know."""


# -- reading ------------------------------------------------------------------------


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


def load_file(path: Path, symbol: str, kind: str) -> Loaded:
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


def epoch_ms(values_: pd.Series) -> np.ndarray:
    """Timestamps (any unit, naive taken as UTC) to epoch ms; integers pass through."""
    if pd.api.types.is_datetime64_any_dtype(values_):
        idx = pd.DatetimeIndex(values_)
        if idx.tz is None:
            idx = idx.tz_localize("UTC")
        return idx.as_unit("ms").asi8.astype(np.int64)
    return np.asarray(values_, dtype=np.int64)


def collected_files(folder: Path) -> dict[str, dict[str, Path]]:
    """``{symbol: {interval or "funding": path}}`` for the collector's file names."""
    found: dict[str, dict[str, Path]] = defaultdict(dict)
    if folder.is_dir():
        for path in sorted(folder.glob("*.parquet")):
            m = _FILE_RE.match(path.name)
            if m and (m["kind"] == "funding" or m["kind"] in INTERVAL_MS):
                found[m["symbol"]][m["kind"]] = path
    return found


def read_discovery(paths: DataPaths) -> dict[str, dict[str, Any]]:
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


def check_known(names: Iterable[str], known: Iterable[str], option: str) -> None:
    """Raise ``GateUsageError`` for names neither collected nor discovered."""
    known = sorted(set(known))
    unknown = [n for n in names if n not in known]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name}" + (f" (did you mean {close[0]}?)" if close else ""))
    raise GateUsageError(
        f"{option}: unknown symbol(s) {', '.join(hints)}: not in the discovery file and not "
        "collected; run `asterai discover` to list the exchange's symbols"
    )


# -- one file ------------------------------------------------------------------------


def _positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _filters(disc: dict[str, Any]) -> dict[str, float | None]:
    raw = disc.get("filters")
    return {k: _positive_float(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def check_klines_file(
    loaded: Loaded,
    interval: str,
    disc: dict[str, Any],
    settings: Settings,
    units: dict[str, float | None] | None = None,
) -> tuple[SeriesVerdict, np.ndarray | None]:
    """``units``: the symbol's tick and lot step read from its lowest timeframe when
    discovery has none (filled by the first file checked, used by the others)."""
    verdict = SeriesVerdict(loaded.symbol, interval, str(loaded.path))
    name = loaded.path.name
    if loaded.frame is None:
        verdict.add(
            failed(
                "schema",
                CONTAMINATED,
                f"{name}: {loaded.error}. Move the file aside and collect again.",
            )
        )
        return verdict, None
    frame = loaded.frame
    verdict.rows = len(frame)
    prov = loaded.provenance
    if "open_time" not in frame:
        verdict.add(
            check_provenance(
                prov,
                name=name,
                symbol=loaded.symbol,
                interval=interval,
                rows=len(frame),
                times=None,
            )
        )
        verdict.add(failed("schema", CONTAMINATED, f"{name}: missing column open_time"))
        return verdict, None
    times = epoch_ms(frame["open_time"])
    if len(times):
        verdict.first_time, verdict.last_time = iso_ms(int(times[0])), iso_ms(int(times[-1]))
    verdict.add(
        check_provenance(
            prov, name=name, symbol=loaded.symbol, interval=interval, rows=len(frame), times=times
        )
    )
    wrong_shape = series.check_types(loaded.schema, KLINE_SCHEMA, name)
    if wrong_shape is not None:
        verdict.add(wrong_shape)
        return verdict, None  # the value rules cannot read a frame of the wrong shape
    collected = (prov or {}).get("collected_at")
    collected_at = collected if isinstance(collected, int) else int(time.time() * 1000)
    verdict.add(
        series.check_times(times, epoch_ms(frame["close_time"]), interval, collected_at, name)
    )
    # a market the exchange no longer trades (delisted, settling) ends where it ended:
    # its history is judged up to its last bar, and the universe stops there
    trading = disc.get("status") in (None, "TRADING")
    finding, verdict.missing_share, verdict.longest_gap_bars = series.completeness(
        times,
        interval,
        settings.quality.max_missing_share,
        collected if isinstance(collected, int) and trading else None,
        name,
    )
    verdict.missing_share = round(verdict.missing_share, 6)
    verdict.add(finding)
    if interval == settings.features.base_interval:
        verdict.add(series.history_length(times, settings.discovery.min_history_bars, name))
    o, h, lo, c, v, qv = (
        frame[k].to_numpy(dtype=float)
        for k in ("open", "high", "low", "close", "volume", "quote_volume")
    )
    taker = frame["taker_buy_base"].to_numpy(dtype=float)
    finding, verdict.invalid_share = values.check_sanity(
        o, h, lo, c, v, qv, taker, times, name, INTERVAL_MS[interval]
    )
    verdict.add(finding)
    finding, verdict.outlier_share = values.check_outliers(c, times, name)
    verdict.add(finding)
    verdict.add(values.check_tradeability(h, lo, c, v, disc.get("category"), name))
    filters = _filters(disc)
    prices = np.column_stack([o, h, lo, c])
    units = {} if units is None else units
    inferred = {}
    for key, values_ in (("tick_size", prices), ("step_size", v)):
        inferred[key] = not filters.get(key)
        if inferred[key]:
            if key not in units:  # the lowest timeframe: the most bars to read it from
                units[key] = grids.infer_unit(values_[-grids.UNIT_WINDOW :])
            filters[key] = units[key]
    verdict.add(
        grids.check_grid(
            prices, times, filters.get("tick_size"), "tick_grid", "tick", name,
            inferred=inferred["tick_size"],
        )
    )  # fmt: skip
    verdict.add(
        grids.check_grid(
            v, times, filters.get("step_size"), "lot_step", "lot step", name, all_off=EXCLUDED,
            inferred=inferred["step_size"],
        )
    )  # fmt: skip
    return verdict, times


def check_funding_file(path: Path, symbol: str, disc: dict[str, Any]) -> SeriesVerdict:
    loaded = load_file(path, symbol, "funding")
    verdict = SeriesVerdict(symbol, "funding", str(path))
    if loaded.frame is None:
        verdict.add(failed("funding", CONTAMINATED, f"{path.name}: {loaded.error}"))
        return verdict
    frame = loaded.frame
    verdict.rows = len(frame)
    times = epoch_ms(frame["funding_time"]) if "funding_time" in frame else np.array([], np.int64)
    if len(times):
        verdict.first_time, verdict.last_time = iso_ms(int(times[0])), iso_ms(int(times[-1]))
    prov = loaded.provenance
    verdict.add(
        check_provenance(
            prov, name=path.name, symbol=symbol, interval=None, rows=len(frame), times=times
        )
    )
    caps = disc.get("funding") if isinstance(disc.get("funding"), dict) else {}
    cap, floor = caps.get("cap"), caps.get("floor")
    collected = (prov or {}).get("collected_at")
    verdict.add(
        check_funding(
            loaded.schema,
            times,
            frame["funding_rate"].to_numpy(dtype=float) if "funding_rate" in frame else None,
            collected if isinstance(collected, int) else None,
            float(cap) if isinstance(cap, int | float) else None,
            float(floor) if isinstance(floor, int | float) else None,
            path.name,
        )
    )
    return verdict


def _crashed(path: Path, symbol: str, kind: str, err: Exception) -> SeriesVerdict:
    verdict = SeriesVerdict(symbol, kind, str(path))
    verdict.add(
        failed(
            "schema",
            CONTAMINATED,
            f"{path.name}: cannot be checked ({type(err).__name__}: {err}); a file the collector "
            "wrote never fails like this",
        )
    )
    return verdict


# -- across files ------------------------------------------------------------------------


_GRID_COLUMNS = {"tick_grid": ("open", "high", "low", "close"), "lot_step": ("volume",)}


def _corroborate_grids(checked: dict[str, tuple[SeriesVerdict, Loaded, np.ndarray | None]]) -> None:
    """A grid regime one timeframe shows and the others do not is an edit (grids rule 3);
    a file whose bars all predate a change the others show is not a shifted copy."""
    usable = {
        k: (v, ld, t)
        for k, (v, ld, t) in checked.items()
        if t is not None and ld.frame is not None and "schema" not in v.failed_rules
    }
    for rule, columns in _GRID_COLUMNS.items():
        what = "tick" if rule == "tick_grid" else "lot step"
        findings = {
            k: next((f for f in v.findings if f.rule == rule), None)
            for k, (v, _, _) in usable.items()
        }
        for interval, (verdict, loaded, _) in usable.items():
            finding = findings[interval]
            if finding is None:
                continue
            if finding.status == "fail":
                others = [f for k, f in findings.items() if k != interval and f is not None]
                if grids.predates_change(finding, others):
                    verdict.findings[verdict.findings.index(finding)] = passed(
                        rule,
                        f"every bar predates the {what} change the other timeframes show",
                        regimes=finding.regimes,
                    )
                continue
            if not finding.regimes:
                continue
            others = {
                k: (t, ld.frame[list(columns)].to_numpy(dtype=float), INTERVAL_MS[k])
                for k, (_, ld, t) in usable.items()
                if k != interval
            }
            bad = grids.corroborate(
                rule, what, loaded.path.name, finding.regimes, INTERVAL_MS[interval], others
            )
            if bad is not None:
                verdict.add(bad)


def _check_timeframes(checked: dict[str, tuple[SeriesVerdict, Loaded, np.ndarray | None]]) -> None:
    _corroborate_grids(checked)
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
        collected = (ll.provenance or {}).get("collected_at")
        finding, bad_times = cross.compare_timeframes(
            ll.frame,
            lt,
            low,
            hl.frame,
            ht,
            high,
            hl.path.name,
            last_closed_open_time(collected, low) if isinstance(collected, int) else None,
        )
        hv.add(finding)
        if finding.status == "fail" and finding.outcome == CONTAMINATED:
            bad_spans.append((INTERVAL_MS[high], bad_times))
    if bad_spans and len(bad_spans) == len(usable) - 1 and len(usable) > 2:
        # every higher timeframe disagrees: the lower file is the odd one out
        step, times = min(bad_spans, key=lambda item: item[0])
        lv.add(
            at_rows(
                "timeframes",
                "fail",
                f"{ll.path.name}: disagrees with every higher timeframe ({', '.join(usable[1:])}) "
                "in the bars of",
                np.isin(lt - lt % step, times),
                lt,
                CONTAMINATED,
            )
        )
    else:
        lv.add(
            passed(
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
        for sym, others in cross.find_duplicates(group, step).items():
            target = by_symbol[sym][0]
            target.add(
                failed(
                    "duplicate",
                    CONTAMINATED,
                    f"{Path(target.file).name}: its returns repeat those of "
                    f"{', '.join(sorted(others))} (a copy, shifted or rescaled, of another market)",
                )
            )


def _refusal(file: str, f: Finding) -> dict[str, Any]:
    return {
        "file": file,
        "rule": f.rule,
        "outcome": f.outcome,
        "message": f.message,
        "rows": list(f.rows),
        "times": list(f.times),
    }


def _symbol_entry(
    symbol: str,
    verdicts: list[SeriesVerdict],
    disc: dict[str, Any],
    paths: DataPaths,
    by_user: bool,
) -> dict[str, Any]:
    refusals = [_refusal(v.file, f) for v in verdicts for f in v.findings if f.status == "fail"]
    warnings = [f.message for v in verdicts for f in v.findings if f.status == "warn"]
    if disc.get("trainable") is False:
        # Discovery judges the market as it is today (trading now? enough bars now?). A
        # market that stopped trading keeps its history until it stopped (the universe
        # decides bar by bar), and the data rules judge the history itself, so
        # discovery's verdict is reported, never applied to the past.
        warnings.append(
            f"{paths.discovery.name}: {symbol} is not trainable today ({disc.get('reason')}); "
            "its history is judged by the data rules, its tradeable bars by the universe"
        )
    if by_user:
        refusals.append(
            _refusal(
                str(paths.config_file),
                failed("user", EXCLUDED, f"{symbol} excluded by you (--exclude / exclude_symbols)"),
            )
        )
    outcomes = {r["outcome"] for r in refusals}
    outcome = CONTAMINATED if CONTAMINATED in outcomes else EXCLUDED if outcomes else TRAINABLE
    return {
        "outcome": outcome,
        "trainable": outcome == TRAINABLE,
        "failed_rules": sorted({r["rule"] for r in refusals}, key=RULES.index),
        "refusals": refusals,
        "warnings": warnings,
        "grid_regimes": {
            Path(v.file).name: {f.rule: list(f.regimes) for f in v.findings if len(f.regimes) > 1}
            for v in verdicts
            if any(len(f.regimes) > 1 for f in v.findings)
        },
        "quality_score": min((v.quality_score for v in verdicts), default=0.0),
        "category": disc.get("category"),
        "discovery_trainable": disc.get("trainable"),
        "excluded_by_user": by_user,
    }


# -- the gate -------------------------------------------------------------------------------


def validate(
    settings: Settings,
    *,
    environment: bool = True,
    write: bool = True,
    required: Iterable[str] = (),
) -> GateReport:
    """Run every rule on every collected file; decide; write the report and the universe.

    ``required``: symbols the user named (``--symbols``) that must be trainable, on top
    of ``quality.required_symbols``. Raises ``GateUsageError`` for an unknown symbol in
    ``exclude_symbols`` or ``required``.
    """
    paths = DataPaths.at(settings.data_root)
    discovery = read_discovery(paths)
    files = collected_files(paths.historical)
    known = set(files) | set(discovery)
    named = list(dict.fromkeys(required))
    if files:
        check_known(settings.exclude_symbols, known, "--exclude")
        check_known(named, known, "--symbols")
    report = GateReport(
        settings=settings,
        required=list(dict.fromkeys([*settings.quality.required_symbols, *named])),
        user_excluded=sorted(settings.exclude_symbols),
    )
    if not files:
        report.problems.append(
            f"no collected data in {paths.historical}; run `asterai collect` first"
        )
    base_iv = settings.features.base_interval
    closes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    bases: dict[str, BaseBars] = {}
    by_symbol: dict[str, list[SeriesVerdict]] = defaultdict(list)
    for symbol, kinds in sorted(files.items()):
        disc = discovery.get(symbol, {})
        checked: dict[str, tuple[SeriesVerdict, Loaded, np.ndarray | None]] = {}
        units: dict[str, float | None] = {}
        for kind in sorted((k for k in kinds if k != "funding"), key=lambda k: INTERVAL_MS[k]):
            loaded = load_file(kinds[kind], symbol, kind)
            try:
                verdict, times = check_klines_file(loaded, kind, disc, settings, units)
            except Exception as err:  # a tampered file must be refused, never crash the gate
                verdict, times = _crashed(kinds[kind], symbol, kind, err), None
            checked[kind] = (verdict, loaded, times)
        try:
            _check_timeframes(checked)
        except Exception as err:  # a tampered file must be refused, never crash the gate
            lowest_kind = next(iter(checked))
            checked[lowest_kind][0].add(
                failed(
                    "timeframes",
                    CONTAMINATED,
                    f"{kinds[lowest_kind].name}: its timeframes cannot be compared "
                    f"({type(err).__name__}: {err})",
                )
            )
        lowest = next(iter(checked), None)
        if lowest is not None:
            verdict, loaded, times = checked[lowest]
            if times is not None and loaded.frame is not None:
                closes[symbol] = (loaded.frame["close"].to_numpy(dtype=float), times)
        if base_iv in checked:
            verdict, loaded, times = checked[base_iv]
            if (
                times is not None
                and loaded.frame is not None
                and "schema" not in verdict.failed_rules
            ):
                listing = (loaded.provenance or {}).get("listing_open_time")
                # discovery's tick only: one inferred from the newest bars would make
                # the universe depend on the history's end (see module universe)
                bases[symbol] = BaseBars(
                    times,
                    loaded.frame["volume"].to_numpy(dtype=float),
                    loaded.frame["quote_volume"].to_numpy(dtype=float),
                    loaded.frame["close"].to_numpy(dtype=float),
                    known_tick(_filters(disc).get("tick_size")),
                    int(listing)
                    if isinstance(listing, int)
                    else int(times[0])
                    if len(times)
                    else 0,
                )
        by_symbol[symbol].extend(v for v, _, _ in checked.values())
        for interval in settings.collect.intervals:
            if interval not in kinds:
                missing = SeriesVerdict(symbol, interval, str(paths.klines(symbol, interval)))
                missing.add(
                    failed(
                        "completeness",
                        EXCLUDED,
                        f"{paths.klines(symbol, interval).name}: no such file; collect it first",
                    )
                )
                by_symbol[symbol].append(missing)
        if "funding" in kinds:
            try:
                by_symbol[symbol].append(check_funding_file(kinds["funding"], symbol, disc))
            except Exception as err:
                by_symbol[symbol].append(_crashed(kinds["funding"], symbol, "funding", err))

    _check_duplicates(closes, by_symbol)

    for symbol, verdicts in sorted(by_symbol.items()):
        for v in verdicts:
            v.score()
            report.series.append(v)
        report.symbols[symbol] = _symbol_entry(
            symbol, verdicts, discovery.get(symbol, {}), paths, symbol in report.user_excluded
        )
    if environment:
        from asterai.readiness import environment_report

        report.environment = environment_report(settings)
    if write:
        paths.data_dir.mkdir(parents=True, exist_ok=True)
        if report.contaminated and paths.universe.exists():
            # the universe is the gate's own output: one computed from data that is now
            # contaminated must not outlive it (it comes back with the next clean run)
            paths.universe.unlink()
            report.universe = {"path": str(paths.universe), "removed": "contaminated data"}
        if not report.contaminated:
            gate_excluded = {
                s: ", ".join(report.symbols[s]["failed_rules"]) for s in report.excluded
            }
            frame = build_universe(
                {s: b for s, b in bases.items() if s in report.symbols},
                gate_excluded,
                settings,
            )
            report.universe = write_universe(settings, frame)
        atomic.write_json(paths.validation, report.to_json())
    return report


# -- the only door to training data -----------------------------------------------------


def verified_series(
    settings: Settings, intervals: Iterable[str] | None = None, symbols: Iterable[str] | None = None
) -> dict[tuple[str, str], pd.DataFrame]:
    """Load the series training may use, after running the gate on them.

    Any contaminated file refuses everything. Named symbols must be trainable (an
    excluded one is an error, not a silent drop); without names the verdict must be
    READY, and every trainable symbol is loaded.
    """
    from asterai.data.store import read_series

    named = list(symbols) if symbols is not None else []
    report = validate(settings, environment=False, write=False, required=named)
    paths = DataPaths.at(settings.data_root)
    intervals = tuple(intervals or settings.collect.intervals)
    if not report.ok:
        raise GateRefused(
            "the data is not ready for training: "
            + "; ".join(report.reasons())
            + f" (see `asterai validate`, {paths.validation})"
        )
    wanted = named or report.trainable
    return {
        (s, iv): read_series(paths.klines(s, iv), "klines").frame
        for s in wanted
        for iv in intervals
    }
