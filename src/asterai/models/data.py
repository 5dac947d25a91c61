"""The training panel: features, labels and the point-in-time universe, as arrays.

``load_panel`` runs the quality gate first (a contaminated file, or a verdict that is
not READY, stops training with the gate's reasons), reads ``data/features/{base}.parquet``
and ``data/universe.parquet``, and returns one float32 feature matrix sorted by
(symbol, open_time), so that a symbol's consecutive bars are consecutive rows: the
LSTM's windows are then slices of this one array, never copies.

A row may be fitted on, validated on or evaluated only where the universe says the
symbol was tradeable at that bar and its labels are defined; every row keeps its
features, because a window reaches back before a symbol became tradeable.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from asterai.config import Settings
from asterai.data.store import to_epoch_ms
from asterai.features.build import FEATURES_META_KEY
from asterai.intervals import INTERVAL_MS
from asterai.models.target import R_COLUMNS, R_MULTIPLE, net_r
from asterai.paths import DataPaths

log = logging.getLogger(__name__)


#: Features in price units: they say which coin it is, not what it does (ATR / close is kept).
PRICE_UNIT_FEATURES = ("atr_14",)
#: Hours since the first bar. For a symbol listed before the collected window that first
#: bar is the window's start, so the value is a clock, not a property of the market: the
#: confluence model leaves it out, the Aster-native model caps it (see ``load_panel``).
LISTING_AGE = "listing_age_h"
LABEL_LONG, LABEL_SHORT = "label_tb", "label_tb_short"
DIRECTIONS = ("long", "short")
#: What a market is (from discovery; it does not change over time)...
STATIC_CATEGORIES = ("major", "alt", "stock_perpetual")
#: ...and one flag decided per bar from the listing age at that bar (no look-ahead).
CATEGORIES = (*STATIC_CATEGORIES, "new_listing")


class TrainingDataError(ValueError):
    """Training cannot start on this data; the message says which file or setting to fix."""


@dataclass(slots=True)
class Panel:
    """Every feature row of the symbols used, sorted by (symbol, open_time)."""

    symbols: list[str]
    code: np.ndarray  # int32 symbol index per row
    times: np.ndarray  # int64 open time, epoch ms
    X: np.ndarray  # float32 (rows, features), NaN = missing
    features: list[str]
    y: np.ndarray  # float32 (rows, 2): 1 positive, 0 not, NaN unlabelled; long, short
    fwd: np.ndarray  # float64 forward log return (the rank-correlation outcome)
    tradeable: np.ndarray  # bool, from the point-in-time universe
    step_ms: int
    horizon: int
    inputs_sha256: dict[str, str] = field(default_factory=dict)
    category: dict[str, str | None] = field(default_factory=dict)
    new_listing_h: float = 720.0
    listing_age_h: np.ndarray | None = None  # uncapped, for per-bar categories
    target: str = "triple_barrier"
    #: float32 (rows, 2) net R-multiple, long and short (``train.target = "r_multiple"``,
    #: what a regression member fits; ``y`` is then ``value > 0``); None for other targets
    value: np.ndarray | None = None

    @property
    def labelled(self) -> np.ndarray:
        return np.isfinite(self.y).all(axis=1)

    def usable(self, start_ms: int, end_ms: int) -> np.ndarray:
        """Rows in [start, end] that are tradeable and labelled: what may be fitted or scored."""
        return (self.times >= start_ms) & (self.times <= end_ms) & self.tradeable & self.labelled

    def runs(self) -> np.ndarray:
        """Per row, how many consecutive bars of the same symbol end at it (itself included)."""
        n = len(self.times)
        new = np.ones(n, dtype=bool)
        if n > 1:
            new[1:] = (self.code[1:] != self.code[:-1]) | (np.diff(self.times) != self.step_ms)
        starts = np.flatnonzero(new)
        idx = np.arange(n)
        return idx - starts[np.searchsorted(starts, idx, side="right") - 1] + 1

    def frame(self, rows: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "symbol": np.array(self.symbols, dtype=object)[self.code[rows]],
                "open_time": pd.to_datetime(self.times[rows], unit="ms", utc=True).as_unit("ms"),
            }
        )


def round_trip_cost(settings: Settings) -> float:
    """What a market trade in and out costs, as a share of notional: the taker fee and
    the slippage, twice (``strategy``: the backtest charges the same)."""
    st = settings.strategy
    return 2.0 * (st.taker_fee + st.slippage)


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def features_table(settings: Settings) -> tuple[pa.Table, dict[str, Any]]:
    """The stored feature table (Arrow: the wide columns stay where they were read, see
    ``load_panel``) and its metadata, or a clear error."""
    path = DataPaths.at(settings.data_root).features(settings.features.base_interval)
    if not path.exists():
        raise TrainingDataError(f"{path} does not exist: run `asterai features` first")
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(FEATURES_META_KEY, b"{}"))
    if not meta.get("features"):
        raise TrainingDataError(
            f"{path} carries no feature list: build it again with `asterai features`"
        )
    return table, meta


#: The feature settings the label columns are computed from.
LABEL_SETTINGS = ("label_horizon", "tp_atr", "sl_atr")


def stale_labels(meta: dict[str, Any], fs) -> dict[str, tuple[Any, Any]]:
    """The label settings a feature table (its metadata ``meta``) was built with that
    differ from ``fs``: name -> (the table's, the settings')."""
    built = meta.get("settings", {})
    return {
        k: (built[k], getattr(fs, k))
        for k in LABEL_SETTINGS
        if k in built and built[k] != getattr(fs, k)
    }


def _float32_matrix(table: pa.Table, columns: list[str], rows: np.ndarray) -> np.ndarray:
    """``table``'s ``columns`` at ``rows``, as one float32 array, filled column by column
    (no float64 frame of the whole table, no second full-size copy)."""
    out = np.empty((len(rows), len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        col = table.column(name).to_numpy()
        out[:, j] = col[rows]
    return out


def load_panel(
    settings: Settings,
    *,
    min_history_bars: int,
    with_categories: bool = False,
    listing_age_cap_h: float | None = None,
    check_gate: bool = True,
    target: str | None = None,
    table: tuple[pa.Table, dict[str, Any]] | None = None,
    trainable: set[str] | None = None,
) -> Panel:
    """The panel training reads, after the gate has said READY.

    ``listing_age_cap_h``: None leaves listing age out; a number keeps it, capped there
    (beyond the cap a listing is simply "old", whatever the collection window).
    ``target``: ``train.target`` unless given: the triple-barrier labels of the feature
    table, or the cross-sectional labels (``features.labels.cross_sectional_labels``)
    over every trainable symbol tradeable at each bar (short histories included, so that
    both models' labels agree), net of ``round_trip_cost(settings)``.
    ``r_multiple``: the trade's net R-multiple per direction (``models.target.net_r``,
    the gross R less ``round_trip_cost(settings)`` in R) as ``value``, and ``y`` = net
    R > 0.
    ``table``: the feature table and its metadata already read (``features_table``), for
    a caller that loads a panel many times (the search, with its trials' labels);
    ``trainable``: with ``check_gate=False``, the gate's trainable symbols it already has.
    """
    paths = DataPaths.at(settings.data_root)
    if check_gate:
        from asterai.data.gate import GateRefused, validate

        report = validate(settings, environment=False, write=False)
        if not report.ok:
            raise GateRefused(
                "training refuses this data: "
                + "; ".join(report.reasons())
                + f" (see `asterai validate`, {paths.validation})"
            )
        trainable = set(report.trainable)
    table, meta = table if table is not None else features_table(settings)
    stale = stale_labels(meta, settings.features)
    if stale:
        raise TrainingDataError(
            f"{paths.features(settings.features.base_interval)} was built with other labels ("
            + ", ".join(f"features.{k} = {a} there, {b} here" for k, (a, b) in stale.items())
            + "): run `asterai features` again with these settings (the same --params)"
        )
    if not paths.universe.exists():
        raise TrainingDataError(
            f"{paths.universe} does not exist: run `asterai validate` (it writes the universe)"
        )
    universe = pq.read_table(paths.universe).to_pandas()
    features = [
        f
        for f in meta["features"]
        if f not in PRICE_UNIT_FEATURES and (f != LISTING_AGE or listing_age_cap_h is not None)
    ]
    target = target or settings.train.target
    r_columns = [c for pair in R_COLUMNS for c in pair] if target == R_MULTIPLE else []
    missing = [
        c
        for c in (*features, LABEL_LONG, LABEL_SHORT, "label_fwd_ret", *r_columns)
        if c not in table.column_names
    ]
    if missing:
        raise TrainingDataError(
            f"{paths.features(settings.features.base_interval)} lacks {missing}: build it again "
            "with `asterai features`"
        )
    # the narrow columns as a frame (row filters and the sort happen here), the wide
    # feature columns read once, at the rows kept, straight into float32
    narrow = ["symbol", "open_time", LABEL_LONG, LABEL_SHORT, "label_fwd_ret", *r_columns]
    if LISTING_AGE in table.column_names:
        narrow.append(LISTING_AGE)
    frame = table.select(narrow).to_pandas().reset_index(drop=True)  # index = table row
    if trainable is not None:
        dropped = sorted(set(frame["symbol"].unique()) - trainable)
        if dropped:
            log.warning("left out, no longer trainable by the gate: %s", ", ".join(dropped))
            frame = frame[frame["symbol"].isin(trainable)]
    uni = pd.Series(
        universe["tradeable"].to_numpy(),
        index=pd.MultiIndex.from_arrays([universe["symbol"], to_epoch_ms(universe["open_time"])]),
    )

    # each row's bar and tradeable flag, looked up once and carried as columns through
    # the filters and the sort below
    frame["_t"] = to_epoch_ms(frame["open_time"])
    keys = pd.MultiIndex.from_arrays([frame["symbol"], frame["_t"]])
    frame["_tradeable"] = uni.reindex(keys).fillna(False).to_numpy(dtype=bool)
    if target == "cross_sectional":
        # the cross-section is every trainable symbol tradeable at the bar, before any
        # model leaves out short histories: both models' labels mean the same thing
        from asterai.features.labels import cross_sectional_labels  # numba

        xs = cross_sectional_labels(
            frame["label_fwd_ret"].to_numpy(dtype=float),
            frame["_t"].to_numpy(),
            frame["_tradeable"].to_numpy(),
            round_trip_cost(settings),
        )
        frame["_y_long"], frame["_y_short"] = xs[:, 0], xs[:, 1]
    elif target == "triple_barrier":
        for col, label in (("_y_long", LABEL_LONG), ("_y_short", LABEL_SHORT)):
            frame[col] = np.where(np.isfinite(frame[label]), frame[label] == 1, np.nan)
    elif target == R_MULTIPLE:
        cost = round_trip_cost(settings)
        for (r_col, risk_col), side in zip(R_COLUMNS, ("long", "short"), strict=True):
            net = net_r(frame[r_col].to_numpy(), frame[risk_col].to_numpy(), cost)
            frame[f"_r_{side}"] = net
            frame[f"_y_{side}"] = np.where(np.isfinite(net), net > 0, np.nan)
    else:
        raise TrainingDataError(f"unknown train.target {target!r}")
    counts = frame.groupby("symbol").size()
    short = sorted(counts[counts < min_history_bars].index)
    if short:
        log.info("left out, fewer than %d bars: %s", min_history_bars, ", ".join(short))
        frame = frame[~frame["symbol"].isin(short)]
    if frame.empty:
        raise TrainingDataError(
            f"no symbol has {min_history_bars} bars of features: collect more history or lower "
            "the minimum history setting"
        )
    frame = frame.sort_values(["symbol", "open_time"], kind="stable")
    source_rows = frame.index.to_numpy()
    frame = frame.reset_index(drop=True)
    times = frame["_t"].to_numpy()
    tradeable = frame["_tradeable"].to_numpy(dtype=bool)
    symbols = sorted(frame["symbol"].unique())
    code = pd.Categorical(frame["symbol"], categories=symbols).codes.astype(np.int32)
    X = _float32_matrix(table, features, source_rows)
    del table  # this function's reference (a caller's own stays)
    if listing_age_cap_h is not None and LISTING_AGE in features:
        j = features.index(LISTING_AGE)
        X[:, j] = np.minimum(X[:, j], np.float32(listing_age_cap_h))
    fwd = frame["label_fwd_ret"].to_numpy(dtype=float)
    y = frame[["_y_long", "_y_short"]].to_numpy(dtype=np.float32)
    value = (
        frame[["_r_long", "_r_short"]].to_numpy(dtype=np.float32) if target == R_MULTIPLE else None
    )
    category: dict[str, str | None] = {s: None for s in symbols}
    new_listing_h = settings.discovery.new_listing_days * 24
    if with_categories:
        category = static_categories(paths, symbols, settings.discovery.majors)
        age = frame[LISTING_AGE].to_numpy(dtype=float)
        onehot = category_columns(
            np.array(symbols, dtype=object)[code], category, age, new_listing_h
        )
        X = np.hstack([X, onehot])
        features = [*features, *(f"category_{c}" for c in CATEGORIES)]
    inputs = {
        paths.features(settings.features.base_interval).name: _sha256(
            paths.features(settings.features.base_interval)
        ),
        paths.universe.name: _sha256(paths.universe),
    }
    return Panel(
        symbols,
        code,
        times,
        np.ascontiguousarray(X),
        features,
        y,
        fwd,
        tradeable,
        INTERVAL_MS[settings.features.base_interval],
        settings.features.label_horizon,
        inputs,
        category,
        new_listing_h,
        frame[LISTING_AGE].to_numpy(dtype=float) if LISTING_AGE in frame else None,
        target,
        value,
    )


def static_categories(
    paths: DataPaths, symbols: list[str], majors: tuple[str, ...]
) -> dict[str, str]:
    """What each market is: major, alt or stock perpetual (discovery's facts that do not
    change over time; its "new_listing" and "dead" are about today, so those symbols
    fall back to major or alt by their base asset)."""
    from asterai.data.discovery import strip_multiplier

    entries: dict[str, dict[str, Any]] = {}
    if paths.discovery.exists():
        doc = json.loads(paths.discovery.read_text())
        entries = {e.get("symbol"): e for e in doc.get("symbols", []) if isinstance(e, dict)}
    wanted = {m.upper() for m in majors}
    out = {}
    for s in symbols:
        entry = entries.get(s, {})
        if entry.get("category") in STATIC_CATEGORIES:
            out[s] = entry["category"]
            continue
        base = entry.get("base_asset") or s.removesuffix("USDT")
        out[s] = "major" if strip_multiplier(str(base)).upper() in wanted else "alt"
    return out


def category_columns(
    symbol_of_row: np.ndarray, static: dict[str, str], age_h: np.ndarray, new_listing_h: float
) -> np.ndarray:
    """One-hot of the static category, plus "new listing" from the age at each bar."""
    out = np.zeros((len(symbol_of_row), len(CATEGORIES)), dtype=np.float32)
    kinds = np.array([static.get(s, "alt") for s in symbol_of_row], dtype=object)
    for j, c in enumerate(STATIC_CATEGORIES):
        out[:, j] = kinds == c
    out[:, -1] = np.isfinite(age_h) & (age_h < new_listing_h)
    return out


def row_categories(
    symbol_of_row: np.ndarray, static: dict[str, str], age_h: np.ndarray, new_listing_h: float
) -> np.ndarray:
    """Per row: "new_listing" while the listing is younger than the limit, else static."""
    kinds = np.array([static.get(s, "alt") for s in symbol_of_row], dtype=object)
    return np.where(np.isfinite(age_h) & (age_h < new_listing_h), "new_listing", kinds)
