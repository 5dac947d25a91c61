"""Live features on the real recording: walked bar by bar, each newest bar's rows equal
the batch feature table's, while only the last ``KEEP_BARS`` bars are held.

The recording holds about 740 hourly bars, fewer than the live features keep, so the
walk runs on a longer history made of the same real bars: every symbol with the full
month is tiled back once in time (the copy is the real series shifted back by its own
span; at the seam the price jumps, as after a halt), the new listings keep their real
start, so the walk also sees symbols appear. Batch and live
read the very same bars; the comparison is of the two computations, not of markets.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from asterai.config import load_settings
from asterai.data.store import to_epoch_ms
from asterai.features import catalog as cat
from asterai.features.build import build_features, load_inputs
from asterai.features.indicators import BB_DEV, RSI_OVERBOUGHT, RSI_OVERSOLD, VOLUME_SPIKE_Z
from asterai.intervals import INTERVAL_MS

#: relative to max(1, |batch value|)
TOLERANCE = 1e-9


def _tile_back(frame: pd.DataFrame, interval: str, copies: int) -> pd.DataFrame:
    step = INTERVAL_MS[interval]
    t = to_epoch_ms(frame["open_time"])
    span = pd.Timedelta(milliseconds=int(t[-1] - t[0]) + step)
    parts = []
    for k in range(copies, -1, -1):
        part = frame.copy()
        part["open_time"] = part["open_time"] - span * k
        if "close_time" in part:
            part["close_time"] = part["close_time"] - span * k
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def walked(exported_root):
    """(settings, inputs, batch table): the recording's trainable symbols, the full
    months tiled back once."""
    settings = load_settings(exported_root)
    inputs, _ = load_inputs(settings)
    longest = max(len(i.bars[settings.features.base_interval]) for i in inputs)
    tiled = []
    for inp in inputs:
        if len(inp.bars[settings.features.base_interval]) >= longest - 48:
            bars = {iv: _tile_back(f, iv, 1) for iv, f in inp.bars.items()}
            inp = replace(inp, bars=bars)
        tiled.append(inp)
    table = build_features(tiled, settings.features).frame
    return settings.features, tiled, table


def _events(inputs, fs, after_ms: int):
    """Every bar closing after ``after_ms``, in the order the exchange closes them:
    (close ms, symbol, interval, row)."""
    out = []
    for inp in inputs:
        for iv, f in inp.bars.items():
            closes = to_epoch_ms(f["open_time"]) + INTERVAL_MS[iv] - 1
            out.extend((int(c), inp.symbol, iv, k) for k, c in enumerate(closes) if c > after_ms)
    return sorted(out)


def _closed_by(inputs, fs, close_ms: int):
    out = []
    for inp in inputs:
        bars = {}
        for iv, f in inp.bars.items():
            closes = to_epoch_ms(f["open_time"]) + INTERVAL_MS[iv] - 1
            bars[iv] = f[closes <= close_ms].reset_index(drop=True)
        out.append(replace(inp, bars=bars))
    return out


#: each event flag, the feature that defines it, and its threshold(s)
FLAG_EDGES = {
    "rsi_oversold": ("rsi_14", RSI_OVERSOLD),
    "rsi_overbought": ("rsi_14", RSI_OVERBOUGHT),
    "bb_break_up": ("bb_pctb_20", 1.0),
    "bb_break_down": ("bb_pctb_20", 0.0),
    "volume_spike": ("volume_z_24", VOLUME_SPIKE_Z),
}


def test_walked_bar_by_bar_the_live_rows_equal_the_batch_table(walked) -> None:
    from asterai.deploy.live import KEEP_BARS, LiveFeatures

    fs, inputs, table = walked
    step = INTERVAL_MS[fs.base_interval]
    times = np.unique(to_epoch_ms(table["open_time"]))
    assert len(times) > KEEP_BARS + 300  # the walk runs well past the held span
    start = 200
    live = LiveFeatures(fs, _closed_by(inputs, fs, int(times[start]) + step - 1))
    from asterai.deploy.live import COLUMNS

    arrays = {  # what a client hands over once it has parsed the klines
        (i.symbol, iv): (to_epoch_ms(f["open_time"]),
                         {k: f[c].to_numpy(dtype=float) for k, c in COLUMNS.items()})
        for i in inputs for iv, f in i.bars.items()
    }  # fmt: skip
    events = _events(inputs, fs, int(times[start]) + step - 1)
    features = cat.feature_names(fs.higher_intervals)
    table_ms = to_epoch_ms(table["open_time"])  # sorted by (open_time, symbol)
    bounds = np.searchsorted(table_ms, np.r_[times, times[-1] + 1])
    ref_all = table[features].to_numpy(dtype=float)
    sym_all = table["symbol"].to_numpy()
    worst: dict[str, float] = {}
    flips = 0
    e = 0
    for n, t in enumerate(times[start + 1 :]):
        close = int(t) + step - 1
        due = []
        while e < len(events) and events[e][0] <= close:
            due.append(events[e])
            e += 1
        if n % 2:  # the order bars arrive in within a bar does not matter
            due.reverse()
        for _, symbol, iv, k in due:
            ms, values = arrays[(symbol, iv)]
            one = {f: v[k : k + 1] for f, v in values.items()}
            assert live.add_arrays(symbol, iv, ms[k : k + 1], one) == 1
        rows = live.newest()
        assert rows.open_time == t
        lo, hi = bounds[start + 1 + n], bounds[start + 2 + n]
        assert rows.symbols == list(sym_all[lo:hi]), t  # the same symbols, in the same order
        got, ref = rows.values, ref_all[lo:hi]
        assert np.array_equal(np.isnan(got), np.isnan(ref)), (
            t, [features[j] for j in np.flatnonzero((np.isnan(got) != np.isnan(ref)).any(0))]
        )  # fmt: skip
        off = np.abs(np.nan_to_num(got - ref)) / np.maximum(1.0, np.abs(np.nan_to_num(ref)))
        # an event flag may flip only where its indicator lies on the threshold within
        # the tolerance; the shares that count it then differ by that asset
        explained = np.zeros_like(off, dtype=bool)
        for flag, (source, edge) in FLAG_EDGES.items():
            j = features.index(flag)
            flipped = off[:, j] > 0
            if flipped.any():
                src = ref[:, features.index(source)]
                assert np.all(np.abs(src[flipped] - edge) <= TOLERANCE * max(1.0, abs(edge))), (
                    t, flag, src[flipped],
                )  # fmt: skip
                explained[:, j] |= flipped
                explained[:, features.index(f"share_{flag}")] = True
                if flag == "volume_spike":
                    explained[:, features.index("n_volume_spikes")] = True
                    explained[:, features.index("share_volume_spikes")] = True
                flips += int(flipped.sum())
        for j, name in enumerate(features):
            if (~explained[:, j]).any():
                worst[name] = max(worst.get(name, 0.0), float(off[~explained[:, j], j].max()))
    assert n + 1 > 1000
    bad = {k: v for k, v in worst.items() if v > TOLERANCE}
    print("largest differences:", sorted(worst.items(), key=lambda kv: -kv[1])[:5], "flips:", flips)
    assert not bad, bad
    assert flips <= 5  # a handful at most on ~15,000 rows
    # and only the last KEEP_BARS bar times of each timeframe were held
    assert len(live.rings[fs.base_interval].panel()) == KEEP_BARS
    assert BB_DEV == 2.0  # FLAG_EDGES' Bollinger thresholds assume the catalog's bands


def test_bars_it_cannot_place_are_refused(walked) -> None:
    from asterai.deploy.live import LiveDataError, LiveFeatures

    fs, inputs, _ = walked
    live = LiveFeatures(fs, inputs[:3])
    bars = inputs[0].bars[fs.base_interval]
    assert live.add_bars(inputs[0].symbol, fs.base_interval, bars.tail(5)) == 0  # held already
    with pytest.raises(LiveDataError, match="not a symbol"):
        live.add_bars("NOPEUSDT", fs.base_interval, bars.tail(1))
    with pytest.raises(LiveDataError, match="not one of"):
        live.add_bars(inputs[0].symbol, "15m", bars.tail(1))
    with pytest.raises(LiveDataError, match="not in time order"):
        live.add_bars(inputs[0].symbol, fs.base_interval, bars.tail(3).iloc[::-1])
    off_grid = bars.tail(1).copy()
    off_grid["open_time"] = off_grid["open_time"] + pd.Timedelta(minutes=30)
    with pytest.raises(LiveDataError, match="not on the 1h grid"):
        live.add_bars(inputs[0].symbol, fs.base_interval, off_grid)
    with pytest.raises(ValueError, match="keep must be at least"):
        LiveFeatures(fs, inputs[:3], keep=100)


def test_a_late_bar_takes_its_place_and_the_newest_rows_match(walked) -> None:
    """A symbol whose bar arrives after the next bar of the others: its row is absent
    from the newest bar until its own bar arrives, then the rows are as if in order."""
    from asterai.deploy.live import LiveFeatures

    fs, inputs, table = walked
    step = INTERVAL_MS[fs.base_interval]
    times = np.unique(to_epoch_ms(table["open_time"]))
    t_prev, t_new = int(times[-2]), int(times[-1])
    live = LiveFeatures(fs, _closed_by(inputs, fs, t_prev - 1))  # all but the last two bars
    late = "BTCUSDT"
    for inp in inputs:
        base = inp.bars[fs.base_interval]
        ms = to_epoch_ms(base["open_time"])
        for t in (t_prev, t_new):
            if inp.symbol == late and t == t_prev:
                continue
            live.add_bars(inp.symbol, fs.base_interval, base[ms == t])
        for iv in fs.higher_intervals:
            f = inp.bars[iv]
            closes = to_epoch_ms(f["open_time"]) + INTERVAL_MS[iv] - 1
            live.add_bars(inp.symbol, iv, f[(closes > t_prev - 1) & (closes <= t_new + step - 1)])
    early = live.newest()
    assert late in early.symbols  # it has the newest bar, but not the one before
    btc = inputs[[i.symbol for i in inputs].index(late)].bars[fs.base_interval]
    live.add_bars(late, fs.base_interval, btc[to_epoch_ms(btc["open_time"]) == t_prev])
    rows = live.newest()
    features = cat.feature_names(fs.higher_intervals)
    want = table[to_epoch_ms(table["open_time"]) == t_new].set_index("symbol")[features]
    assert rows.symbols == list(want.index)
    np.testing.assert_allclose(rows.values, want.to_numpy(dtype=float), rtol=0, atol=TOLERANCE)
    # before its previous bar came, BTCUSDT's one-bar return could not be known
    assert np.isnan(early.values[early.symbols.index(late), features.index("ret_1")])


def test_a_poll_of_every_symbol_handed_over_at_once_gives_the_batch_rows(walked) -> None:
    """``add_closed``, the follower's hand-over: each bar time's bars of every symbol in
    one call (what one poll after a close returns), then the newest rows equal the batch
    table's; a symbol twice in one bar is refused."""
    from asterai.deploy.live import COLUMNS, LiveDataError, LiveFeatures

    fs, inputs, table = walked
    step = INTERVAL_MS[fs.base_interval]
    times = np.unique(to_epoch_ms(table["open_time"]))
    cut = int(times[-3]) + step - 1  # all but the last two base bars
    live = LiveFeatures(fs, _closed_by(inputs, fs, cut))
    for close in (int(times[-2]) + step - 1, int(times[-1]) + step - 1):
        for iv in (fs.base_interval, *fs.higher_intervals):
            names, got = [], {k: [] for k in COLUMNS}
            open_ms = close + 1 - INTERVAL_MS[iv]
            for inp in inputs:
                f = inp.bars[iv]
                row = f[to_epoch_ms(f["open_time"]) == open_ms]
                if len(row):
                    names.append(inp.symbol)
                    for k, c in COLUMNS.items():
                        got[k].append(float(row[c].iloc[0]))
            if names:
                values = {k: np.asarray(v) for k, v in got.items()}
                assert live.add_closed(iv, open_ms, names, values) == len(names)
    rows = live.newest()
    features = cat.feature_names(fs.higher_intervals)
    want = table[to_epoch_ms(table["open_time"]) == times[-1]].set_index("symbol")[features]
    assert rows.symbols == list(want.index)
    np.testing.assert_allclose(rows.values, want.to_numpy(dtype=float), rtol=0, atol=TOLERANCE)
    twice = {k: np.zeros(2) for k in COLUMNS}
    with pytest.raises(LiveDataError, match="twice"):
        live.add_closed(fs.base_interval, int(times[-1]), ["BTCUSDT", "BTCUSDT"], twice)
