"""What every trial of a worker shares, loaded once: the gate's verdict, the feature
table, the market on one grid, the final window; and what a trial needs of it: a panel
with the trial's labels, cut before the final window.

The final window is fixed for the whole study, whatever a trial draws: the newest
``optimize.final_share`` of the usable bars, and before it a gap of the longest label
horizon the space allows plus one plus the embargo. A row of the search part reads, for
its label, at most that horizon of bars ahead, so no label, fit, validation or test row
of any trial reaches a bar of the final window, and the search's backtest ends before it.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from asterai.backtest.inputs import Inputs, market_inputs
from asterai.config import Settings
from asterai.intervals import iso_ms
from asterai.models.data import (
    LABEL_SETTINGS,
    Panel,
    features_table,
    load_panel,
    stale_labels,
)
from asterai.models.splits import MIN_TEST_BARS
from asterai.models.train import MODELS

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("label_tb", "label_tb_bars", "label_tb_short", "label_tb_short_bars",
                 "label_fwd_ret", "label_r", "label_r_short", "label_risk",
                 "label_risk_short")  # fmt: skip
#: Panels (and relabelled tables) kept per worker, by label settings.
CACHE = 2


class OptimizeError(ValueError):
    """The search ran and could not finish (no trial completed, too little history)."""


class OptimizeUsageError(OptimizeError):
    """The search cannot start as asked (a setting, the storage, a study made under other
    conditions); the message names it. Nothing is written."""


@dataclass(frozen=True, slots=True)
class Split:
    """The study's boundaries, epoch ms: trials see bars up to ``search_end``; the final
    window is [``final_start``, the data's end]; ``gap_bars`` lie between."""

    search_end: int
    final_start: int
    final_bars: int  # usable bars of the final window, at the settings' own horizon
    gap_bars: int
    max_horizon: int

    def to_json(self) -> dict[str, Any]:
        return {
            "search_end": iso_ms(self.search_end),
            "final_start": iso_ms(self.final_start),
            "search_end_ms": self.search_end,
            "final_start_ms": self.final_start,
            "final_bars": self.final_bars,
            "gap_bars": self.gap_bars,
            "max_horizon": self.max_horizon,
        }


def _spec(model: str, settings: Settings) -> dict[str, Any]:
    native = model == "aster_native"
    return {
        "min_history_bars": (
            settings.aster_native.min_history_bars if native else settings.train.min_history_bars
        ),
        "with_categories": native,
        "listing_age_cap_h": settings.discovery.new_listing_days * 24 if native else None,
    }


def label_key(settings: Settings) -> tuple:
    fs = settings.features
    return (fs.label_horizon, fs.tp_atr, fs.sl_atr, settings.train.target)


def cut(panel: Panel, end_ms: int) -> Panel:
    """The panel's rows up to ``end_ms`` (its own order kept: symbols, then time)."""
    keep = panel.times <= end_ms
    if keep.all():
        return panel
    return replace(
        panel,
        code=panel.code[keep],
        times=panel.times[keep],
        X=np.ascontiguousarray(panel.X[keep]),
        y=panel.y[keep],
        value=None if panel.value is None else panel.value[keep],
        fwd=panel.fwd[keep],
        tradeable=panel.tradeable[keep],
        listing_age_h=None if panel.listing_age_h is None else panel.listing_age_h[keep],
    )


class Workspace:
    """One worker's shared state. ``settings`` are the study's base settings."""

    def __init__(self, settings: Settings, model: str, max_horizon: int) -> None:
        from asterai.data.gate import GateRefused, validate

        if model not in MODELS:
            raise OptimizeError(f"unknown model {model!r}; one of {', '.join(MODELS)}")
        self.settings = settings
        self.model = model
        report = validate(settings, environment=False, write=False)
        if not report.ok:
            raise GateRefused("the search refuses this data: " + "; ".join(report.reasons()))
        self.trainable = set(report.trainable)
        self.table = features_table(settings)
        self._inputs: list | None = None  # the features stage's inputs, for relabelling
        self._tables: OrderedDict[tuple, tuple[pa.Table, dict]] = OrderedDict()
        self._panels: OrderedDict[tuple, Panel] = OrderedDict()
        base = self.panel(settings)
        self.split = self._split(base, max(max_horizon, settings.features.label_horizon))
        self.data_identity = data_identity(settings, self.table[1])
        start = int(base.times.min())
        self.market: Inputs = market_inputs(settings, list(base.symbols), start)

    # -- the final window ------------------------------------------------------------

    def _split(self, panel: Panel, max_horizon: int) -> Split:
        ts, opt = self.settings.train, self.settings.optimize
        usable = np.unique(panel.times[panel.tradeable & panel.labelled])
        if len(usable) == 0:
            raise OptimizeError("no row is both tradeable and labelled: collect more history")
        step = panel.step_ms
        grid = np.arange(int(usable[0]), int(usable[-1]) + step, step, dtype=np.int64)
        final_bars = max(MIN_TEST_BARS, int(round(len(grid) * opt.final_share)))
        gap = max_horizon + 1 + ts.embargo_bars
        if final_bars + gap >= len(grid):
            raise OptimizeError(
                f"{len(grid)} usable bars cannot hold a final window of {final_bars} bars "
                f"(optimize.final_share = {opt.final_share}) after a gap of {gap} bars: "
                "collect more history"
            )
        final_start = int(grid[len(grid) - final_bars])
        return Split(final_start - gap * step, final_start, final_bars, gap, max_horizon)

    # -- panels with a trial's labels -----------------------------------------------------

    def panel(self, settings: Settings) -> Panel:
        """The model's whole panel with ``settings``' labels (cached by them)."""
        key = label_key(settings)
        if key in self._panels:
            self._panels.move_to_end(key)
            return self._panels[key]
        panel = load_panel(
            settings,
            **_spec(self.model, settings),
            check_gate=False,
            table=self._table(settings),
            trainable=self.trainable,
        )
        self._panels[key] = panel
        while len(self._panels) > CACHE:
            self._panels.popitem(last=False)
        return panel

    def search_panel(self, settings: Settings) -> Panel:
        return cut(self.panel(settings), self.split.search_end)

    def _table(self, settings: Settings) -> tuple[pa.Table, dict]:
        fs = settings.features
        if not stale_labels(self.table[1], fs):
            return self.table
        key = tuple(getattr(fs, k) for k in LABEL_SETTINGS)
        if key not in self._tables:
            self._tables[key] = relabelled(self.table, self.label_inputs(), fs)
            while len(self._tables) > CACHE:
                self._tables.popitem(last=False)
        return self._tables[key]

    def label_inputs(self) -> list:
        if self._inputs is None:
            from asterai.features.build import load_inputs

            self._inputs, _ = load_inputs(self.settings)
        return self._inputs


def data_identity(settings: Settings, meta: dict[str, Any]) -> dict[str, Any]:
    """What the study's data is, independent of when its files were written: the hashes
    of the verified bars and funding the features were built from, the feature list and
    the code's version (the feature table's metadata), and the universe's content."""
    import hashlib

    import pyarrow.parquet as pq

    from asterai.paths import DataPaths

    universe = pq.read_table(DataPaths.at(settings.data_root).universe)
    universe = universe.replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, universe.schema) as writer:
        writer.write_table(universe)

    def sha(obj: Any) -> str:
        return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()

    return {
        "inputs_sha256": sha(meta.get("inputs_sha256")),
        "features": sha(meta.get("features")),
        "asterai_version": meta.get("asterai_version"),
        "universe_sha256": hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest(),
    }


def relabelled(
    table: tuple[pa.Table, dict[str, Any]], inputs: list, fs
) -> tuple[pa.Table, dict[str, Any]]:
    """The feature table with its label columns recomputed by ``fs``' barriers and
    horizon (``features.build.label_columns``, the features stage's own code), from the
    same verified bars; every feature column is the table's own."""
    from asterai.data.store import to_epoch_ms
    from asterai.features.build import label_columns

    t, meta = table
    symbols = t.column("symbol").to_numpy(zero_copy_only=False)
    times = to_epoch_ms(t.column("open_time").to_pandas())
    atr = t.column("atr_14").to_numpy()
    columns = {name: np.full(t.num_rows, np.nan) for name in LABEL_COLUMNS}
    by_symbol = {inp.symbol: inp for inp in inputs}
    # each symbol's rows, from one stable sort (not one scan of the table per symbol)
    names, first = np.unique(symbols, return_inverse=True)
    order = np.argsort(first, kind="stable")
    cuts = np.cumsum(np.bincount(first, minlength=len(names)))[:-1]
    for s, rows in zip(names, np.split(order, cuts), strict=True):
        inp = by_symbol.get(s)
        if inp is None:
            continue
        base = inp.bars[fs.base_interval]
        bar_times = to_epoch_ms(base["open_time"])
        if len(bar_times) != len(rows) or not np.array_equal(bar_times, times[rows]):
            raise OptimizeError(
                f"{s}: the feature table's bars are not the verified bars (built from other "
                "data): run `asterai features` again"
            )
        for name, values in label_columns(base, atr[rows], inp.tick, fs).items():
            columns[name][rows] = values
    out = t
    for name, values in columns.items():
        if name in out.column_names:
            i = out.column_names.index(name)
            kind = t.schema.field(name).type
            out = out.set_column(i, name, pa.array(values, type=kind))
        else:  # a table built before the column existed: it gets it
            out = out.append_column(name, pa.array(values, type=pa.float64()))
    new_meta = dict(meta)
    new_meta["settings"] = {
        **meta.get("settings", {}),
        **{k: getattr(fs, k) for k in LABEL_SETTINGS},
    }
    return out, new_meta
