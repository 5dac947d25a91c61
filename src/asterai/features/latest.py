"""The newest bar's features from panels of the last bars (pure numpy, no pandas).

The batch builder (``features.build``) computes every row of the history; a live
service needs one row per symbol for the bar that just closed, for a few hundred
symbols, in milliseconds. ``newest_features`` computes exactly that row with the batch
builder's own functions, in three parts:

* TA-Lib's recursive indicators (``indicators.ta_series``: MACD, Bollinger bands, ATR,
  RSI, ADX) on each symbol's held bars of the timeframe, its own consecutive series as
  in the batch, of which the last two values are kept; a caller that computes bar
  after bar carries TA-Lib's streaming handles forward instead (``TaState``: one
  update per symbol and bar, the same values);
* the rest of the per-asset arithmetic (``indicators.core_from`` / ``asset_from``:
  returns, rolling volatility, z-scores, ranges, flags) on a panel of the last
  ``TAIL`` bars of every symbol at once (time x assets), its last row masked by each
  symbol's run of consecutive bars as ``indicators.mask_gaps`` masks the batch;
* the cross-asset confluence, the regime and the cross-sectional ranks
  (``confluence.confluence``, ``regime``, ``confluence.cross_sectional_rank``) on that
  panel, the regime's volatility median on every held bar.

A panel's columns are the bars' open times, the union over the symbols as in the
batch (a time no symbol has is no column), and its rows the symbols (sorted, as the
batch's columns: the confluence sums assets in that order); NaN where a symbol has no
bar. The values equal the batch table's row for the same bar when the panels hold the
same history; with less history, only the recursive indicators differ, by how much
their start is forgotten (measured in ``tests/test_deploy_live.py``; see
``deploy.live.KEEP_BARS``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asterai.config import FeatureSettings
from asterai.features import catalog as cat
from asterai.features.build import PANEL_COLUMNS, funding_at
from asterai.features.confluence import (
    CORR_WINDOWS,
    _nanmean_rows,
    confluence,
    cross_sectional_rank,
)
from asterai.features.indicators import (
    BARS_NEEDED,
    TA_OUTPUTS,
    TaHandles,
    asset_from,
    core_from,
    ta_series,
)
from asterai.features.regime import VOL_MEDIAN_WINDOW, high_volatility, trending
from asterai.features.rolling import lag_diff, rolling_std
from asterai.intervals import INTERVAL_MS

#: base bars the per-asset and confluence arithmetic reads: the longest window
#: (``dist_*_168``, ``corr_*_168``: 168 returns need 169 closes) and one more
TAIL = max(max(BARS_NEEDED.values()), max(CORR_WINDOWS) + 1) + 1
#: base bars ``core_from``'s outputs are computed on: the longest read of them is
#: ``asset_from``'s 72-bar volatility of ``ret_1`` (73 closes), and one more
CORE_TAIL = BARS_NEEDED["rv_72"] + 1
#: higher-timeframe bars the same arithmetic reads for ``catalog.HIGHER_TF``
HIGHER_TAIL = max(BARS_NEEDED[name] for name, _ in cat.HIGHER_TF) + 1
#: base bars the regime reads: 720 values of a 24-bar volatility of 1-bar returns
REGIME_BARS = VOL_MEDIAN_WINDOW + 24 + 1
BAR_FIELDS = ("open", "high", "low", "close", "volume", "taker_buy", "quote_volume")


@dataclass(frozen=True, slots=True)
class Panel:
    """The last bars of one timeframe: ``times`` (n,) open times in ms, increasing, and
    each field as (symbols x n), NaN where a symbol has no bar."""

    times: np.ndarray
    fields: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.times)


def run_at_end(present: np.ndarray, times: np.ndarray, step: int) -> np.ndarray:
    """Per symbol (row of ``present``, symbols x n): how many consecutive bars end at
    the last column, itself included; 0 where the symbol has no bar there. Columns more
    than ``step`` apart break a run, as in ``indicators.consecutive_run``."""
    n = present.shape[1]
    linked = present[:, 1:] & present[:, :-1] & (np.diff(times) == step)[None, :]
    # trailing count of links: the first break from the end
    broken = ~linked[:, ::-1]
    first_break = np.where(broken.any(axis=1), broken.argmax(axis=1), n - 1)
    return np.where(present[:, -1], first_break + 1, 0)


class TaState:
    """One timeframe's TA-Lib handles per symbol (``indicators.TaHandles``), fed up to
    the symbol's bar at ``upto`` (open time, ms; -1: none), and the last two values of
    each output there. A new bar that follows the fed one in the symbol's own series
    costs one ``update``; anything else (the first bar, a bar inserted before the newest,
    see ``forget``) opens the handles again on the held series."""

    def __init__(self, n_symbols: int) -> None:
        self.handles: list[TaHandles | None] = [None] * n_symbols
        self.upto = np.full(n_symbols, -1, dtype=np.int64)
        self.last = np.full((len(TA_OUTPUTS), n_symbols, 2), np.nan)

    def forget(self, symbols) -> None:
        """The symbols' held series changed before their newest bar: open again."""
        for j in symbols:
            self.handles[j] = None
            self.upto[j] = -1


def _last_two(ta: dict[str, np.ndarray]) -> np.ndarray:
    """(outputs x 2): each output's last two values, NaN before a series' first."""
    n = len(ta["rsi"])
    out = np.full((len(TA_OUTPUTS), 2), np.nan)
    for k, name in enumerate(TA_OUTPUTS):
        out[k, 2 - min(n, 2) :] = ta[name][-2:]
    return out


def _ta_last(
    panel: Panel, symbols_at: np.ndarray, state: TaState | None = None
) -> dict[str, np.ndarray]:
    """``ta_series`` on each listed symbol's own bars (those with a bar at the panel's
    last time); (symbols x 2) of each output's last two values (of that symbol's
    series), NaN for the others. With ``state``, the handles carry each symbol's series
    forward (the same values, see ``TaState``); without, every series is computed."""
    f = panel.fields
    close = f["close"]
    n_sym, n = close.shape
    out = np.full((len(TA_OUTPUTS), n_sym, 2), np.nan)
    if not len(symbols_at):
        return dict(zip(TA_OUTPUTS, out, strict=True))
    valid = ~np.isnan(close)
    first = valid.argmax(axis=1)
    # a gap inside the held bars: that symbol's own series is compressed (as in the batch)
    gapped = valid.sum(axis=1) < n - first
    t_new = int(panel.times[-1])
    if state is not None:
        before = valid[:, -2::-1]  # each symbol's own bar before the last column
        prev = np.where(before.any(axis=1), n - 2 - before.argmax(axis=1), -1)
        prev_t = np.where(prev >= 0, panel.times[np.maximum(prev, 0)], -2)

    def series(j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, lo, c = f["high"][j], f["low"][j], close[j]
        if gapped[j]:
            keep = valid[j]
            return h[keep], lo[keep], c[keep]
        s = first[j]  # a row slice of the (symbols x n) panel is contiguous, as TA-Lib wants
        return h[s:], lo[s:], c[s:]

    for j in symbols_at:
        if state is None or t_new < state.upto[j]:  # no state, or a panel cut before it
            out[:, j] = _last_two(ta_series(*series(j)))
            continue
        if state.upto[j] != t_new:
            handles = state.handles[j]
            row = None
            if handles is not None and prev_t[j] == state.upto[j]:
                try:
                    row = handles.update(f["high"][j, -1], f["low"][j, -1], close[j, -1])
                except ValueError:  # a bar TA-Lib's handles refuse: the series again
                    row = None
            if row is not None:
                state.last[:, j, 0] = state.last[:, j, 1]
                state.last[:, j, 1] = row
            else:
                handles, ta = TaHandles.open(*series(j))
                state.handles[j] = handles
                state.last[:, j] = _last_two(ta)
            # a series too short for the handles is computed again at its next bar
            state.upto[j] = t_new if state.handles[j] is not None else -1
        out[:, j] = state.last[:, j]
    return dict(zip(TA_OUTPUTS, out, strict=True))


def _tail_core(
    panel: Panel, ta: dict[str, np.ndarray], rows: int, core_rows: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The panel's last ``rows`` bars (time x assets, contiguous: the rolling windows
    run down the rows) and ``core_from`` on the last ``core_rows`` of them, the TA
    outputs placed at the last two."""
    f = {k: np.ascontiguousarray(v[:, -rows:].T) for k, v in panel.fields.items()}
    c = {k: v[-core_rows:] for k, v in f.items()}
    placed = {}
    for name, last_two in ta.items():
        full = np.full(c["close"].shape, np.nan)
        k = min(2, len(full))
        full[-k:] = last_two[:, -k:].T
        placed[name] = full
    return core_from(placed, c["high"], c["low"], c["close"], c["volume"], tail=1), f


def _masked_last(values: dict[str, np.ndarray], run: np.ndarray) -> dict[str, np.ndarray]:
    """Each array's last row, blanked where the symbol's run is shorter than the
    feature's lookback (``indicators.mask_gaps`` on the newest bar)."""
    out = {}
    for name, v in values.items():
        last = v[-1].astype(float, copy=True)
        needed = BARS_NEEDED.get(name)
        if needed is not None:
            last[run < needed] = np.nan
        out[name] = last
    return out


def _returns(close: np.ndarray, times: np.ndarray, step: int) -> np.ndarray:
    """1-bar log returns (time x assets) of the panel's closes (symbols x n), NaN across
    a gap (the batch masks ``ret_1`` where a symbol's previous bar is not one step back)."""
    ret = lag_diff(np.log(close.T), 1)
    if len(times) > 1:
        ret[1:][np.diff(times) != step] = np.nan
    return ret


def higher_last(
    panel: Panel, close_ms: int, interval: str, state: TaState | None = None
) -> dict[str, np.ndarray]:
    """The ``catalog.HIGHER_TF`` values of ``interval`` that join a base bar closing at
    ``close_ms`` (per symbol: its latest closed higher bar, if it is the latest one, as
    ``build._symbol_block`` joins them); ``state``: that timeframe's TA handles."""
    step = INTERVAL_MS[interval]
    n_sym = next(iter(panel.fields.values())).shape[0]
    nan = {name: np.full(n_sym, np.nan) for name, _ in cat.HIGHER_TF}
    cut = int(np.searchsorted(panel.times + step - 1, close_ms, side="right"))
    if cut == 0 or close_ms - (int(panel.times[cut - 1]) + step - 1) >= step:
        return nan
    closed = Panel(panel.times[:cut], {k: v[:, :cut] for k, v in panel.fields.items()})
    present = ~np.isnan(closed.fields["close"][:, -1])
    ta = _ta_last(closed, np.flatnonzero(present), state)
    core, _ = _tail_core(closed, ta, min(HIGHER_TAIL, cut), HIGHER_TAIL)
    run = run_at_end(~np.isnan(closed.fields["close"][:, -HIGHER_TAIL:]),
                     closed.times[-HIGHER_TAIL:], step)  # fmt: skip
    last = _masked_last({name: core[name] for name, _ in cat.HIGHER_TF}, run)
    return {name: np.where(present, v, np.nan) for name, v in last.items()}


def newest_features(
    base: Panel,
    higher: dict[str, Panel],
    funding: list[tuple[np.ndarray, np.ndarray] | None],
    listing_ms: np.ndarray,
    symbols: list[str],
    fs: FeatureSettings,
    ta_state: dict[str, TaState] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The features of the base panel's last bar: ``(present, values)``, ``present``
    the symbols (rows) that have that bar and ``values`` each catalog feature per
    symbol (NaN for the absent ones).

    ``funding``: per symbol, its settled funding (times in ms, rates), or None.
    ``listing_ms``: per symbol, its listing's first bar (ms), NaN when unknown.
    ``ta_state``: per timeframe, the TA handles that carry each symbol's series from
    one call to the next (``TaState``; the same values as without, faster).
    """
    state = ta_state or {}
    step = INTERVAL_MS[fs.base_interval]
    if len(base) == 0:
        raise ValueError("the base panel holds no bars")
    t_last = int(base.times[-1])
    close_ms = t_last + step - 1
    close = base.fields["close"]
    present = ~np.isnan(close[:, -1])
    at = np.flatnonzero(present)
    rows = min(TAIL, len(base))

    ta = _ta_last(base, at, state.get(fs.base_interval))
    core, f = _tail_core(base, ta, rows, CORE_TAIL)
    asset = asset_from(
        core, f["close"], f["high"], f["low"], f["volume"], f["taker_buy"],
        base.times[-rows:], listing_ms, step / 3_600_000, tail=1,
    )  # fmt: skip
    run = run_at_end(~np.isnan(close[:, -rows:]), base.times[-rows:], step)
    values = _masked_last(asset, run)

    rate = np.full(len(symbols), np.nan)
    change = np.full(len(symbols), np.nan)
    at_close = np.array([close_ms], dtype=np.int64)
    for j in at:
        if funding[j] is not None:
            r, c = funding_at(*funding[j], at_close)
            rate[j], change[j] = r[0], c[0]
    values["funding_rate"], values["funding_rate_change"] = rate, change
    for iv in fs.higher_intervals:
        joined = (
            higher_last(higher[iv], close_ms, iv, state.get(iv))
            if iv in higher
            else {name: np.full(len(symbols), np.nan) for name, _ in cat.HIGHER_TF}
        )
        for name, v in joined.items():
            values[f"{iv}_{name}"] = v

    # a symbol without the bar has no row: none of its values may reach the others'
    for name in values:
        values[name] = np.where(present, values[name], np.nan)

    # the confluence on the last TAIL bars; only the last row is read, and of the
    # panel columns only the 1-bar returns and quote volumes need their history
    held = min(REGIME_BARS, len(base))  # the regime reads the most bars: returns once
    ret_held = _returns(close[:, -held:], base.times[-held:], step)
    ret1 = ret_held[-rows:]
    panel: dict[str, np.ndarray] = {}
    for name in PANEL_COLUMNS:
        col = np.full((rows, len(symbols)), np.nan)
        col[-1] = values[name]
        panel[name] = col
    panel["ret_1"] = np.where(np.isfinite(ret1), ret1, np.nan)
    panel["ret_1"][-1] = values["ret_1"]
    panel["quote_volume"] = f["quote_volume"]
    market, cross = confluence(panel, symbols, tail=1)
    for name, v in cross.items():
        values[name] = np.where(present, v[-1], np.nan)
    scalars = {name: float(v[-1]) for name, v in market.items()}

    # the regime: the share of trending assets now, the volatility against its median
    market_rv = rolling_std(_nanmean_rows(ret_held), 24)
    scalars["regime_trending"] = float(trending(values["adx_14"][None, :])[0])
    scalars["regime_high_vol"] = float(high_volatility(market_rv)[-1])
    scalars["regime"] = 2 * scalars["regime_trending"] + scalars["regime_high_vol"]
    for name, v in scalars.items():
        values[name] = np.where(present, v, np.nan)

    ranked = cat.ranked_features(fs.higher_intervals)
    ranks = cross_sectional_rank(np.vstack([values[name] for name in ranked]))
    for name, r in zip(ranked, ranks, strict=True):
        values[f"xs_rank_{name}"] = r
    names = cat.feature_names(fs.higher_intervals)
    missing = [n for n in names if n not in values]
    if missing:
        raise AssertionError(f"latest features lack {missing}")  # a programming error
    return present, {n: values[n] for n in names}
