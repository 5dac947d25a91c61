"""Charts of the feature stage: per-symbol confluence panels and a return-correlation heatmap.

Everything is drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, so
no pyplot state is created or shared between figures, and every PNG is written
atomically (a temp file in the same folder, then ``os.replace``).

``confluence_figure`` and ``correlation_figure`` return the figure before it is
saved, so tests can check what was drawn. Every data artist carries a ``gid``
naming the column it shows (``close``, ``corr_btc_24``, ``share_volume_spikes``...).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asterai import atomic
from asterai.config import Settings
from asterai.features.types import FeatureResult, SymbolInput
from asterai.paths import DataPaths

log = logging.getLogger(__name__)

#: share of assets with a volume spike at which a bar is marked as a market-wide spike
MARKET_SPIKE_SHARE = 0.3
RSI_LOW, RSI_HIGH = 30.0, 70.0
DPI = 100
CONFLUENCE_SIZE = (14.0, 17.0)  # inches: 1400 x 1700 px at DPI
NO_DATA = " (no data)"
NONE_IN_WINDOW = " (none in window)"
HEATMAP_NAME = "correlation_matrix.png"
#: fewer overlapping bars than this and a pair's correlation is left out (n/a)
MIN_PAIR_BARS = 24
_NO_DATA_COLOR = "#d0d0d0"

_COLOR = {
    "close": "#1f3b73",
    "corr": "#d62728",
    "avg_corr": "#ff7f0e",
    "volume": "#9aa5b1",
    "own_spike": "#ff7f0e",
    "market_spike": "#d62728",
    "rsi": "#6a3d9a",
    "oversold": "#2ca02c",
    "overbought": "#d62728",
    "macd_pos": "#2ca02c",
    "macd_neg": "#d62728",
    "cross_up": "#1b7837",
    "cross_down": "#b2182b",
}


def confluence_path(settings: Settings, symbol: str) -> Path:
    return DataPaths.at(settings.data_root).visualizations / f"confluence_{symbol}.png"


def correlation_path(settings: Settings) -> Path:
    return DataPaths.at(settings.data_root).visualizations / HEATMAP_NAME


# -- public entry point -------------------------------------------------------------------


def plot_confluence(
    settings: Settings,
    result: FeatureResult,
    inputs: list[SymbolInput],
    symbols: Iterable[str],
) -> list[Path]:
    """Write ``confluence_{SYMBOL}.png`` for each requested symbol, then ``correlation_matrix.png``.

    Symbols that are not in ``result.symbols`` are skipped with a warning. The heatmap
    covers every symbol of ``result`` (the whole feature universe, not just the ones
    charted). Returns the written paths, in that order.
    """
    written: list[Path] = []
    seen: set[str] = set()
    for symbol in symbols:
        if symbol in seen:
            continue
        seen.add(symbol)
        if symbol not in result.symbols:
            log.warning(
                "no features for %s (not among the %d built symbols); chart skipped",
                symbol,
                len(result.symbols),
            )
            continue
        fig = confluence_figure(settings, result, inputs, symbol)
        path = confluence_path(settings, symbol)
        save_figure(fig, path)
        written.append(path)
    if result.symbols:
        fig = correlation_figure(result)
        path = correlation_path(settings)
        save_figure(fig, path)
        written.append(path)
    else:
        log.warning("no symbols in the feature result; correlation matrix skipped")
    return written


def save_figure(fig: Any, path: str | Path) -> Path:
    """Render ``fig`` to PNG with Agg, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # attaches itself as fig.canvas; no pyplot involved
    path = Path(path)
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    return path


# -- data ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SymbolSeries:
    """One symbol's rows of the feature frame joined to its base bars (UTC, naive datetime64)."""

    symbol: str
    times: np.ndarray  # datetime64[ms], UTC
    close: np.ndarray
    volume: np.ndarray
    features: pd.DataFrame  # indexed like times


def symbol_series(
    settings: Settings, result: FeatureResult, inputs: Sequence[SymbolInput], symbol: str
) -> SymbolSeries:
    base = settings.features.base_interval
    rows = result.frame.loc[result.frame["symbol"] == symbol].reset_index(drop=True)
    open_time = pd.DatetimeIndex(rows["open_time"])
    by_symbol = {i.symbol: i for i in inputs}
    close = np.full(len(rows), np.nan)
    volume = np.full(len(rows), np.nan)
    inp = by_symbol.get(symbol)
    if inp is not None and base in inp.bars:
        bars = inp.bars[base].set_index("open_time")
        bars.index = pd.DatetimeIndex(bars.index)
        aligned = bars.reindex(open_time)
        close = aligned["close"].to_numpy(dtype=float)
        volume = aligned["volume"].to_numpy(dtype=float)
    else:
        log.warning("no %s bars for %s among the inputs; price and volume left empty", base, symbol)
    times = _naive_utc(open_time)
    return SymbolSeries(symbol, times, close, volume, rows)


def _naive_utc(index: pd.DatetimeIndex) -> np.ndarray:
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.to_numpy(dtype="datetime64[ms]")


def _values(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame:
        return np.full(len(frame), np.nan)
    return frame[column].to_numpy(dtype=float)


def _has(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).any())


def _label(text: str, values: np.ndarray) -> str:
    return text if _has(values) else text + NO_DATA


def return_correlation(
    result: FeatureResult, symbols: Sequence[str] | None = None, min_periods: int = MIN_PAIR_BARS
) -> tuple[pd.DataFrame, pd.DataFrame, tuple[pd.Timestamp | None, pd.Timestamp | None]]:
    """Pearson correlation of ``ret_1`` between symbols, on pairwise complete observations.

    Returns the correlation matrix, the number of overlapping observations per pair,
    and the window (first and last bar with a finite return).
    """
    symbols = list(symbols) if symbols is not None else list(result.symbols)
    frame = result.frame.loc[result.frame["symbol"].isin(symbols), ["open_time", "symbol", "ret_1"]]
    wide = frame.pivot(index="open_time", columns="symbol", values="ret_1").reindex(columns=symbols)
    wide = wide.astype(float)
    corr = wide.corr(method="pearson", min_periods=min_periods)
    mask = wide.notna().to_numpy(dtype=float)
    counts = pd.DataFrame(mask.T @ mask, index=symbols, columns=symbols).astype(int)
    finite = wide.notna().any(axis=1)
    stamps = wide.index[finite.to_numpy()]
    window = (stamps.min(), stamps.max()) if len(stamps) else (None, None)
    return corr, counts, window


# -- confluence figure --------------------------------------------------------------------

#: rows of the momentum-alignment strip: (feature column, tick label)
MOMENTUM_ROWS: tuple[tuple[str, str], ...] = (
    ("share_pos_ret_1", "ret_1 > 0"),
    ("share_pos_ret_4", "ret_4 > 0"),
    ("share_pos_ret_24", "ret_24 > 0"),
    ("agree_majority_24", "agrees (24)"),
)


def confluence_figure(
    settings: Settings, result: FeatureResult, inputs: Sequence[SymbolInput], symbol: str
) -> Any:
    """The five-panel confluence chart of ``symbol`` as a ``matplotlib.figure.Figure`` (not saved).

    Panels, sharing a dated UTC x axis: price with its correlation to the market;
    volume with its own and market-wide spikes; RSI(14) with the share of assets
    oversold or overbought; the MACD histogram with the share of assets crossing;
    momentum alignment across assets.
    """
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    if symbol not in result.symbols:
        raise KeyError(f"{symbol} is not among the built symbols")
    data = symbol_series(settings, result, inputs, symbol)
    feats, t = data.features, data.times
    interval = settings.features.base_interval

    # a fixed layout: constrained layout doubles the render time and the margins are known
    fig = Figure(figsize=CONFLUENCE_SIZE, dpi=DPI)
    fig.subplots_adjust(left=0.07, right=0.915, top=0.935, bottom=0.045, hspace=0.3)
    axes = fig.subplots(5, 1, sharex=True, height_ratios=[1.3, 1.0, 1.0, 1.0, 0.75])
    ax_price, ax_vol, ax_rsi, ax_macd, ax_mom = axes
    fig.suptitle(
        f"{symbol}: cross-asset confluence, {interval} bars, {_window_text(t)}\n"
        f"market shares are over the {len(result.symbols)} assets with a bar at each time",
        fontsize=13,
    )

    _price_panel(ax_price, symbol, t, data.close, feats)
    _volume_panel(ax_vol, symbol, t, data.volume, feats, interval)
    _rsi_panel(ax_rsi, symbol, t, feats)
    _macd_panel(ax_macd, symbol, t, feats)
    _momentum_panel(ax_mom, symbol, t, feats)

    locator = mdates.AutoDateLocator(tz="UTC", minticks=6, maxticks=16)
    ax_mom.xaxis.set_major_locator(locator)
    ax_mom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz="UTC"))
    ax_mom.set_xlabel("time (UTC)")
    if len(t):
        half = np.timedelta64(30, "m")
        ax_mom.set_xlim(t[0] - half, t[-1] + half)
    for ax in axes[:-1]:
        ax.grid(True, axis="x", color="#e3e3e3", linewidth=0.6)
    return fig


def _window_text(times: np.ndarray) -> str:
    if not len(times):
        return "no bars"
    first = pd.Timestamp(times[0]).strftime("%Y-%m-%d %H:%M")
    last = pd.Timestamp(times[-1]).strftime("%Y-%m-%d %H:%M")
    return f"{first} .. {last} UTC"


def _legend(ax: Any, *others: Any, loc: str = "upper left", ncols: int = 1) -> None:
    """One legend for ``ax`` and its twin axes, drawn on the top-most of them."""
    handles, labels = ax.get_legend_handles_labels()
    for other in others:
        h, lab = other.get_legend_handles_labels()
        handles += h
        labels += lab
    target = others[-1] if others else ax
    target.legend(handles, labels, loc=loc, ncols=ncols, fontsize=8.5, framealpha=0.9)


def _title(ax: Any, text: str) -> None:
    """A panel title, left; a fixed ``y`` skips matplotlib's costly title-vs-ticks search."""
    ax.set_title(text, loc="left", fontsize=11, y=1.0)


def _event_label(text: str, values: np.ndarray, hit: np.ndarray) -> str:
    if not _has(values):
        return text + NO_DATA
    return text if hit.any() else text + NONE_IN_WINDOW


def _padded_limits(values: np.ndarray, below: float, above: float) -> tuple[float, float] | None:
    """Data limits with room for a legend: ``below`` and ``above`` are shares of the range."""
    if not _has(values):
        return None
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    span = hi - lo or abs(hi) * 0.01 or 1.0
    return lo - below * span, hi + above * span


def _price_panel(
    ax: Any, symbol: str, t: np.ndarray, close: np.ndarray, feats: pd.DataFrame
) -> None:
    ax.plot(
        t,
        close,
        color=_COLOR["close"],
        linewidth=1.3,
        label=_label(f"{symbol} close", close),
        gid="close",
    )
    limits = _padded_limits(close, below=0.45, above=0.05)  # the legend sits below the price
    if limits:
        ax.set_ylim(*limits)
    ax.set_ylabel("price (USDT)")
    _title(ax, "Price and its rolling correlation to the market")

    twin = ax.twinx()
    ref, ref_name = (
        ("corr_eth_24", "ETHUSDT") if symbol == "BTCUSDT" else ("corr_btc_24", "BTCUSDT")
    )
    corr = _values(feats, ref)
    avg = _values(feats, "market_avg_corr_24")
    twin.plot(
        t,
        corr,
        color=_COLOR["corr"],
        linewidth=0.9,
        alpha=0.85,
        label=_label(f"correlation of 1-bar returns with {ref_name}, 24 bars ({ref})", corr),
        gid=ref,
    )
    twin.plot(
        t,
        avg,
        color=_COLOR["avg_corr"],
        linewidth=0.9,
        alpha=0.9,
        linestyle="--",
        label=_label("market: mean pairwise correlation, 24 bars (market_avg_corr_24)", avg),
        gid="market_avg_corr_24",
    )
    twin.axhline(0.0, color="#999999", linewidth=0.6, linestyle=":")
    twin.set_ylim(-1.05, 1.05)
    twin.set_ylabel("correlation")
    _legend(ax, twin, loc="lower left", ncols=3)


def _volume_panel(
    ax: Any, symbol: str, t: np.ndarray, volume: np.ndarray, feats: pd.DataFrame, interval: str
) -> None:
    from matplotlib.ticker import EngFormatter

    own = _values(feats, "volume_spike")
    share = _values(feats, "share_volume_spikes")
    _bars(
        ax,
        t,
        volume,
        _bar_width(t),
        color=_COLOR["volume"],
        label=_label(f"{symbol} volume per {interval} bar", volume),
        gid="volume",
    )
    own_hit = own == 1
    ax.scatter(
        t[own_hit],
        volume[own_hit],
        marker="^",
        s=38,
        color=_COLOR["own_spike"],
        edgecolors="black",
        linewidths=0.4,
        zorder=3,
        label=_event_label(f"{symbol} volume spike (volume_spike = 1)", own, own_hit),
        gid="volume_spike",
    )
    top = float(np.nanmax(volume)) if _has(volume) else 0.0
    ax.set_ylim(0, top * 1.35 if top > 0 else 1.0)
    ax.yaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_ylabel("volume (base asset)")
    _title(
        ax,
        "Volume with its own spikes and market-wide spikes "
        f"(share of assets with a spike >= {MARKET_SPIKE_SHARE:g})",
    )

    twin = ax.twinx()
    twin.fill_between(
        t,
        0,
        np.nan_to_num(share),
        step="mid",
        color=_COLOR["market_spike"],
        alpha=0.18,
        linewidth=0,
        label=_label("share of assets with a volume spike (share_volume_spikes)", share),
        gid="share_volume_spikes",
    )
    hit = share >= MARKET_SPIKE_SHARE
    twin.scatter(
        t[hit],
        share[hit],
        marker="v",
        s=50,
        color=_COLOR["market_spike"],
        edgecolors="black",
        linewidths=0.4,
        zorder=4,
        label=_event_label(f"market-wide spike (share >= {MARKET_SPIKE_SHARE:g})", share, hit),
        gid="market_volume_spike",
    )
    twin.axhline(MARKET_SPIKE_SHARE, color=_COLOR["market_spike"], linewidth=0.7, linestyle=":")
    twin.set_ylim(0, 1.35)
    twin.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    twin.set_ylabel("share of assets")
    _legend(ax, twin, loc="upper left", ncols=2)


def _bars(ax: Any, t: np.ndarray, heights: np.ndarray, width: Any, **style: Any) -> Any:
    """Vertical bars as one PolyCollection (``ax.bar`` makes one patch per bar: 10x slower)."""
    import matplotlib.dates as mdates
    from matplotlib.collections import PolyCollection

    ok = np.isfinite(heights)
    x = mdates.date2num(t[ok])
    half = (width / np.timedelta64(1, "D")) / 2.0
    h = heights[ok]
    zero = np.zeros_like(h)
    corners = [(x - half, zero), (x - half, h), (x + half, h), (x + half, zero)]
    verts = np.stack([np.column_stack(c) for c in corners], axis=1)
    bars = PolyCollection(verts, linewidths=0, facecolors=style.pop("color"), **style)
    ax.xaxis_date(tz="UTC")
    ax.add_collection(bars, autolim=True)
    ax.autoscale_view()
    return bars


def _bar_width(t: np.ndarray) -> Any:
    if len(t) < 2:
        return np.timedelta64(48, "m")
    return np.median(np.diff(t)) * 0.8


def _rsi_panel(ax: Any, symbol: str, t: np.ndarray, feats: pd.DataFrame) -> None:
    rsi = _values(feats, "rsi_14")
    ax.plot(
        t,
        rsi,
        color=_COLOR["rsi"],
        linewidth=1.0,
        label=_label(f"{symbol} RSI(14)", rsi),
        gid="rsi_14",
    )
    ax.axhline(
        RSI_HIGH, color=_COLOR["overbought"], linewidth=0.8, linestyle="--", label=f"{RSI_HIGH:g}"
    )
    ax.axhline(
        RSI_LOW, color=_COLOR["oversold"], linewidth=0.8, linestyle="--", label=f"{RSI_LOW:g}"
    )
    ax.set_ylim(0, 115)
    ax.set_yticks([0, 30, 50, 70, 100])
    ax.set_ylabel("RSI(14)")
    _title(
        ax,
        "RSI(14) and the share of assets oversold (RSI < 30) or overbought (RSI > 70)",
    )

    twin = ax.twinx()
    low = _values(feats, "share_rsi_oversold")
    high = _values(feats, "share_rsi_overbought")
    for values, name, what, color in (
        (low, "share_rsi_oversold", "oversold", _COLOR["oversold"]),
        (high, "share_rsi_overbought", "overbought", _COLOR["overbought"]),
    ):
        twin.fill_between(
            t,
            0,
            np.nan_to_num(values),
            step="mid",
            color=color,
            alpha=0.25,
            linewidth=0,
            label=_label(f"share of assets {what} ({name})", values),
            gid=name,
        )
    twin.set_ylim(0, 1.15)
    twin.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    twin.set_ylabel("share of assets")
    _legend(ax, twin, loc="upper left", ncols=5)


def _macd_panel(ax: Any, symbol: str, t: np.ndarray, feats: pd.DataFrame) -> None:
    from matplotlib.ticker import PercentFormatter

    hist = _values(feats, "macd_hist")
    for sign, gid, color in (
        (1, "macd_hist", _COLOR["macd_pos"]),
        (-1, "macd_hist_neg", _COLOR["macd_neg"]),
    ):
        part = np.where(sign * hist > 0, hist, 0.0)
        ax.fill_between(
            t,
            0,
            part,
            step="mid",
            color=color,
            alpha=0.7,
            linewidth=0,
            label=_label(f"{symbol} macd_hist {'> 0' if sign > 0 else '< 0'}", hist),
            gid=gid,
        )
    ax.axhline(0.0, color="#555555", linewidth=0.6)
    if _has(hist):
        lim = float(np.nanmax(np.abs(hist))) * 1.35 or 1e-6
        ax.set_ylim(-lim, lim)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_ylabel("MACD hist. / close")
    _title(
        ax,
        "MACD(12, 26, 9) histogram and the share of assets whose MACD crosses its signal",
    )

    twin = ax.twinx()
    up = _values(feats, "share_macd_cross_up")
    down = _values(feats, "share_macd_cross_down")
    twin.plot(
        t,
        up,
        color=_COLOR["cross_up"],
        linewidth=0.9,
        label=_label("share_macd_cross_up", up),
        gid="share_macd_cross_up",
    )
    twin.plot(
        t,
        -down,
        color=_COLOR["cross_down"],
        linewidth=0.9,
        label=_label("share_macd_cross_down (drawn < 0)", down),
        gid="share_macd_cross_down",
    )
    twin.set_ylim(-1.35, 1.35)
    twin.set_yticks([-1, -0.5, 0, 0.5, 1])
    twin.set_ylabel("share crossing (down < 0)")
    _legend(ax, twin, loc="upper left", ncols=4)


def _momentum_panel(ax: Any, symbol: str, t: np.ndarray, feats: pd.DataFrame) -> None:
    """A strip per row of ``MOMENTUM_ROWS``: green when the assets (or this one) go up together."""
    import matplotlib.dates as mdates
    from matplotlib.patches import Patch

    rows = np.vstack([_values(feats, name) for name, _ in MOMENTUM_ROWS])
    if len(t):
        x = mdates.date2num(t)
        half = (np.diff(x).min() if len(x) > 1 else 1 / 24) / 2
        mids = (x[1:] + x[:-1]) / 2
        edges = np.concatenate([[x[0] - half], mids, [x[-1] + half]])
    else:
        edges = np.zeros(1)
    mesh = ax.pcolormesh(
        edges,
        np.arange(len(MOMENTUM_ROWS) + 1),
        np.ma.masked_invalid(rows),
        cmap=_momentum_cmap(),
        vmin=0.0,
        vmax=1.0,
        shading="flat",
        gid="momentum_alignment",
    )
    ax.xaxis_date(tz="UTC")
    ax.set_ylim(len(MOMENTUM_ROWS), 0)
    ax.set_yticks(
        np.arange(len(MOMENTUM_ROWS)) + 0.5,
        labels=[_label(text, row) for (_, text), row in zip(MOMENTUM_ROWS, rows, strict=True)],
    )
    ax.axhline(len(MOMENTUM_ROWS) - 1, color="white", linewidth=2.5)  # the asset's own row
    ax.set_ylabel("momentum")
    _title(
        ax,
        "Momentum alignment across assets\n"
        f"rows 1-3: share of assets with ret_h > 0; row 4: {symbol}'s ret_24 has the majority's sign",
    )
    cax = ax.inset_axes([1.012, 0.0, 0.012, 1.0])
    bar = ax.figure.colorbar(mesh, cax=cax, ticks=[0, 0.5, 1])
    bar.set_label("share up / agrees", fontsize=8.5)
    bar.ax.tick_params(labelsize=8)
    cmap = mesh.get_cmap()
    ax.legend(
        handles=[
            Patch(color=cmap(1.0), label="up / agrees"),
            Patch(color=cmap(0.0), label="down / disagrees"),
            Patch(color=_NO_DATA_COLOR, label="no data / no majority"),
        ],
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncols=3,
        fontsize=8,
        frameon=False,
        borderaxespad=0.2,
    )


def _momentum_cmap() -> Any:
    import matplotlib as mpl

    return mpl.colormaps["RdYlGn"].with_extremes(bad=_NO_DATA_COLOR)


# -- correlation heatmap ------------------------------------------------------------------


def correlation_figure(result: FeatureResult, symbols: Sequence[str] | None = None) -> Any:
    """Heatmap of the pairwise ``ret_1`` correlations, annotated, as a Figure (not saved)."""
    from matplotlib.figure import Figure

    corr, counts, (first, last) = return_correlation(result, symbols)
    names = list(corr.columns)
    n = len(names)
    side = max(6.0, 0.6 * n + 3.5)
    fig = Figure(figsize=(side + 1.3, side), dpi=DPI)
    label_in = 1.5  # inches for the symbol tick labels and the axis label
    fig.subplots_adjust(
        left=label_in / (side + 1.3),
        right=1 - 1.5 / (side + 1.3),
        bottom=label_in / side,
        top=1 - 0.9 / side,
    )
    ax = fig.subplots()
    values = corr.to_numpy(dtype=float)
    cmap = _heatmap_cmap()
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest"
    )
    image.set_gid("ret_1_correlation")
    ax.set_xticks(range(n), labels=names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=names)
    ax.set_xlabel("symbol")
    ax.set_ylabel("symbol")
    fontsize = 9 if n <= 10 else 8 if n <= 16 else 6
    for i in range(n):
        for j in range(n):
            v = values[i, j]
            text = f"{v:.2f}".replace("-0.00", "0.00") if np.isfinite(v) else "n/a"
            color = "white" if np.isfinite(v) and abs(v) > 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=color)
    cax = ax.inset_axes([1.03, 0.0, 0.035, 1.0])
    bar = fig.colorbar(image, cax=cax)
    bar.set_label("Pearson correlation of 1-bar log returns")
    window = (
        f"{first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC"
        if first is not None
        else "no returns"
    )
    off = counts.to_numpy()[~np.eye(n, dtype=bool)] if n > 1 else counts.to_numpy().ravel()
    obs = f"{int(off.min())}..{int(off.max())}" if off.size else "0"
    missing = f"; n/a: fewer than {MIN_PAIR_BARS} bars in common" if np.isnan(values).any() else ""
    ax.set_title(
        f"Correlation of 1-bar returns (ret_1) between {n} symbols\n{window}, "
        f"pairwise complete observations ({obs} bars per pair){missing}",
        fontsize=11,
        y=1.0,
    )
    return fig


def _heatmap_cmap() -> Any:
    import matplotlib as mpl

    return mpl.colormaps["RdBu_r"].with_extremes(bad=_NO_DATA_COLOR)
