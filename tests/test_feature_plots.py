"""The feature stage's charts, drawn from features built on the real recording.

The recording is served by the replay server and collected by the real collector;
the features come through the quality gate (``load_inputs``) and ``build_features``.
The tests check what each figure really drew (every series, with finite data, on a
dated axis), that the PNGs are valid, and that unknown symbols are skipped.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
import time
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pytest
from conftest import FAST_EXCHANGE, copy_root

from asterai.config import load_settings
from asterai.features import plots
from asterai.features.build import build_features, load_inputs
from asterai.paths import DataPaths

PLOTTED = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory, collected_root, real_data):
    """Every recorded symbol collected over loopback, then the features built from it."""
    symbols = sorted(
        {p.name.rsplit("_", 1)[0] for p in (real_data / "klines").glob("*_1h.parquet")}
    )
    assert len(symbols) == 19
    root = copy_root(collected_root, tmp_path_factory.mktemp("plots"))
    settings = load_settings(root, exchange=FAST_EXCHANGE)
    inputs, _ = load_inputs(settings)
    result = build_features(inputs, settings.features)
    assert set(PLOTTED) <= set(result.symbols)
    return settings, result, inputs


@pytest.fixture(scope="module")
def written(built):
    """``plot_confluence`` on three symbols plus one that was never built."""
    settings, result, inputs = built
    logger = logging.getLogger("asterai.features.plots")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        started = time.perf_counter()
        paths = plots.plot_confluence(settings, result, inputs, [*PLOTTED, "NOSUCHUSDT"])
        seconds = time.perf_counter() - started
    finally:
        logger.removeHandler(handler)
    return paths, seconds, records


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def by_gid(fig) -> dict[str, list]:
    """Every artist of the figure that carries a gid, by gid."""
    found: dict[str, list] = {}
    for ax in fig.axes:
        for artist in ax.get_children():
            gid = artist.get_gid()
            if gid:
                found.setdefault(gid, []).append(artist)
    return found


def only(artists: dict[str, list], gid: str):
    assert gid in artists, f"nothing drawn for {gid}"
    assert len(artists[gid]) == 1, gid
    return artists[gid][0]


def legend_texts(fig) -> list[str]:
    texts = []
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None:
            texts += [t.get_text() for t in legend.get_texts()]
    return texts


def polygon_points(collection) -> np.ndarray:
    paths = collection.get_paths()
    return np.concatenate([p.vertices for p in paths]) if paths else np.empty((0, 2))


def symbol_rows(result, symbol: str) -> pd.DataFrame:
    return result.frame.loc[result.frame["symbol"] == symbol].reset_index(drop=True)


# -- the files ----------------------------------------------------------------------------


def test_plot_confluence_writes_one_png_per_symbol_and_the_heatmap(built, written) -> None:
    settings, _, _ = built
    paths, seconds, _ = written
    folder = DataPaths.at(settings.data_root).visualizations
    assert [p.name for p in paths] == [
        *(f"confluence_{s}.png" for s in PLOTTED),
        "correlation_matrix.png",
    ]
    for path in paths:
        assert path.parent == folder and path.is_file()
        width, height = png_size(path)
        assert 1000 <= width <= 2500 and 1000 <= height <= 2500, (path.name, width, height)
        assert 40_000 < path.stat().st_size < 5_000_000, path.name
        pixels = plt_imread(path)
        assert pixels.shape[:2] == (height, width)
        assert pixels[..., :3].std() > 0.05, f"{path.name} is blank"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths), (
        "temp files left"
    )
    assert seconds < 30, f"plotting took {seconds:.1f} s"


def plt_imread(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(path)


def test_an_unknown_symbol_is_skipped_with_a_warning(built, written) -> None:
    settings, result, inputs = built
    paths, _, records = written
    assert not any("NOSUCHUSDT" in p.name for p in paths)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any("NOSUCHUSDT" in w for w in warnings), warnings
    with pytest.raises(KeyError):
        plots.confluence_figure(settings, result, inputs, "NOSUCHUSDT")


# -- what the confluence figure drew ------------------------------------------------------


@pytest.mark.parametrize("symbol", ["BTCUSDT", "SOLUSDT", "4USDT"])
def test_confluence_figure_draws_every_series_on_a_dated_axis(built, symbol: str) -> None:
    settings, result, inputs = built
    rows = symbol_rows(result, symbol)
    bars = next(i for i in inputs if i.symbol == symbol).bars[settings.features.base_interval]
    n = len(rows)
    fig = plots.confluence_figure(settings, result, inputs, symbol)
    drawn = by_gid(fig)

    def finite(col: str) -> int:
        return int(np.isfinite(rows[col].to_numpy(dtype=float)).sum())

    # lines: the same number of finite points as the feature column, and the right values
    close = only(drawn, "close")
    np.testing.assert_array_equal(close.get_ydata(), bars["close"].to_numpy(dtype=float))
    ref = "corr_eth_24" if symbol == "BTCUSDT" else "corr_btc_24"
    for gid in (
        ref,
        "market_avg_corr_24",
        "rsi_14",
        "share_macd_cross_up",
        "share_macd_cross_down",
    ):
        y = np.asarray(only(drawn, gid).get_ydata(), dtype=float)
        assert len(y) == n and np.isfinite(y).sum() == finite(gid) > 0, gid
    corr = np.asarray(only(drawn, ref).get_ydata(), dtype=float)
    np.testing.assert_allclose(corr, rows[ref].to_numpy(dtype=float), equal_nan=True)
    if symbol == "BTCUSDT":  # BTC's correlation with itself would be a flat line at 1
        assert "corr_btc_24" not in drawn
        assert np.nanstd(corr) > 0.01

    # volume bars: one finite bar per bar, heights = the bars' volume
    volume = only(drawn, "volume")
    assert len(volume.get_paths()) == n
    tops = np.array([p.vertices[:, 1].max() for p in volume.get_paths()])
    np.testing.assert_allclose(tops, bars["volume"].to_numpy(dtype=float))

    # filled areas: finite vertices spanning the data
    for gid in ("share_volume_spikes", "share_rsi_oversold", "share_rsi_overbought", "macd_hist"):
        points = polygon_points(only(drawn, gid))
        assert len(points) > n and np.isfinite(points).all(), gid
        assert points[:, 1].max() > 0, f"{gid} drew nothing above zero"
    assert polygon_points(only(drawn, "macd_hist_neg"))[:, 1].min() < 0

    # event markers: exactly the flagged bars
    own = only(drawn, "volume_spike").get_offsets()
    assert len(own) == int((rows["volume_spike"] == 1).sum()) > 0
    assert np.isfinite(np.asarray(own)).all()
    market = only(drawn, "market_volume_spike").get_offsets()
    assert len(market) == int((rows["share_volume_spikes"] >= plots.MARKET_SPIKE_SHARE).sum()) > 0

    # the momentum strip: one row per alignment feature, each with data
    mesh = only(drawn, "momentum_alignment")
    values = np.ma.asarray(mesh.get_array()).reshape(len(plots.MOMENTUM_ROWS), n)
    for row, (name, _) in zip(values, plots.MOMENTUM_ROWS, strict=True):
        assert row.count() == finite(name) > 0, name
        np.testing.assert_allclose(row.compressed(), rows[name].dropna().to_numpy(dtype=float))

    # five panels, each with a title, a y label and a legend; one dated, shared x axis
    panels = fig.axes[:5]
    bottom = panels[-1]
    for ax in panels:
        assert ax.get_title(loc="left"), "panel without a title"
        assert ax.get_ylabel(), ax.get_title(loc="left")
        twins = [o for o in fig.axes if o.get_position().bounds == ax.get_position().bounds]
        assert any(o.get_legend() is not None for o in twins), ax.get_title(loc="left")
        assert ax.get_shared_x_axes().joined(ax, bottom)
    assert isinstance(bottom.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    assert bottom.get_xlabel() == "time (UTC)"
    lo, hi = (mdates.num2date(x) for x in bottom.get_xlim())
    first, last = rows["open_time"].iloc[0], rows["open_time"].iloc[-1]
    assert abs(lo - first) <= pd.Timedelta("1h") and abs(hi - last) <= pd.Timedelta("1h")
    assert lo.tzinfo is not None and lo.utcoffset() == pd.Timedelta(0)
    assert symbol in fig.get_suptitle()


def test_an_all_nan_series_is_labelled_no_data(built) -> None:
    settings, result, inputs = built
    frame = result.frame.copy()
    sol = frame["symbol"] == "SOLUSDT"
    for col in ("corr_btc_24", "share_volume_spikes", "rsi_14", "share_pos_ret_24"):
        frame.loc[sol, col] = np.nan
    emptied = dataclasses.replace(result, frame=frame)
    fig = plots.confluence_figure(settings, emptied, inputs, "SOLUSDT")
    texts = legend_texts(fig)
    for col in ("corr_btc_24", "share_volume_spikes"):
        assert any(col in t and t.endswith(plots.NO_DATA) for t in texts), (col, texts)
    assert "SOLUSDT RSI(14)" + plots.NO_DATA in texts
    assert any(t.endswith(plots.NO_DATA) and "market-wide spike" in t for t in texts)
    ticks = [t.get_text() for t in fig.axes[4].get_yticklabels()]
    assert "ret_24 > 0" + plots.NO_DATA in ticks
    # the untouched series are still drawn and labelled plainly
    assert "SOLUSDT close" in texts


# -- the correlation heatmap --------------------------------------------------------------


def test_heatmap_has_one_row_and_column_per_symbol(built) -> None:
    _, result, _ = built
    fig = plots.correlation_figure(result)
    (ax,) = [a for a in fig.axes if a.get_images()]
    (image,) = ax.get_images()
    n = len(result.symbols)
    values = np.ma.asarray(image.get_array())
    assert values.shape == (n, n)
    assert [t.get_text() for t in ax.get_xticklabels()] == result.symbols
    assert [t.get_text() for t in ax.get_yticklabels()] == result.symbols
    assert image.colorbar is not None and image.colorbar.vmin == -1 and image.colorbar.vmax == 1

    # pairwise complete correlation of ret_1, computed independently
    wide = result.frame.pivot(index="open_time", columns="symbol", values="ret_1")[result.symbols]
    expected = wide.corr(min_periods=24).to_numpy()
    np.testing.assert_allclose(values.filled(np.nan), expected, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(np.diag(values), 1.0)
    assert values.count() == n * n  # every pair overlaps enough in this recording

    annotations = [t.get_text() for t in ax.texts]
    assert len(annotations) == n * n
    i, j = result.symbols.index("BTCUSDT"), result.symbols.index("ETHUSDT")
    assert annotations[i * n + j] == f"{expected[i, j]:.2f}"
    stamps = wide.dropna(how="all").index
    title = ax.get_title()
    assert f"{stamps[0]:%Y-%m-%d %H:%M}" in title and f"{stamps[-1]:%Y-%m-%d %H:%M}" in title
