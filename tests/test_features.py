"""The feature stage on the real recording: the catalog, causality, labels, output."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import FAST_EXCHANGE, copy_root

from asterai.data.store import to_epoch_ms
from asterai.features.build import (
    FEATURES_META_KEY,
    SymbolInput,
    build_features,
    load_inputs,
    run_features,
)
from asterai.features.catalog import catalog, feature_names, ranked_features
from asterai.features.confluence import MIN_RANK_ASSETS
from asterai.intervals import INTERVAL_MS
from asterai.paths import DataPaths

HOUR = 3_600_000


@pytest.fixture(scope="module")
def collected(tmp_path_factory, collected_root):
    """A real collection of every recorded symbol, discovered and collected over loopback."""
    from asterai.config import load_settings

    root = copy_root(collected_root, tmp_path_factory.mktemp("features"))
    return load_settings(root, exchange=FAST_EXCHANGE)


@pytest.fixture(scope="module")
def inputs(collected):
    return load_inputs(collected)[0]


@pytest.fixture(scope="module")
def full(inputs, collected):
    return build_features(inputs, collected.features).frame


def test_more_than_fifty_documented_features(collected, full) -> None:
    names = feature_names(collected.features.higher_intervals)
    assert len(names) >= 50
    assert all(spec.formula for spec in catalog(collected.features.higher_intervals))
    assert list(full.columns) == [
        "symbol",
        "open_time",
        *names,
        "label_tb",
        "label_tb_bars",
        "label_tb_short",
        "label_tb_short_bars",
        "label_fwd_ret",
        "label_r",
        "label_r_short",
        "label_risk",
        "label_risk_short",
    ]


def test_only_symbols_the_gate_accepts_get_features(full) -> None:
    got = set(full["symbol"])
    assert {"1INCHUSDT", "AIUSDT", "ALGOUSDT", "1000CHEEMSUSDT"}.isdisjoint(got)
    assert {"BTCUSDT", "ETHUSDT", "AAPLUSDT", "2ZUSDT", "4USDT"} <= got
    assert not full.duplicated(["symbol", "open_time"]).any()


def truncate(inputs: list[SymbolInput], cut_ms: int) -> list[SymbolInput]:
    """What the world looked like at ``cut_ms``: only bars (and funding) closed by then."""
    out = []
    for inp in inputs:
        bars = {}
        for iv, frame in inp.bars.items():
            closes = to_epoch_ms(frame["open_time"]) + INTERVAL_MS[iv]
            bars[iv] = frame[closes <= cut_ms].reset_index(drop=True)
        if bars["1h"].empty:
            continue
        funding = inp.funding
        if funding is not None:
            funding = funding[to_epoch_ms(funding["funding_time"]) <= cut_ms].reset_index(drop=True)
        out.append(replace(inp, bars=bars, funding=funding))
    return out


@pytest.mark.parametrize(
    "cut", ["2025-09-20 00:00", "2025-10-03 13:00", "2025-10-10 22:00", "2025-10-14 06:00"]
)
def test_no_feature_changes_when_the_future_is_cut_off(inputs, collected, full, cut) -> None:
    """The look-ahead test: features on truncated history equal those on the full one."""
    cut_ms = int(pd.Timestamp(cut, tz="UTC").value // 1_000_000)
    part = build_features(truncate(inputs, cut_ms), collected.features).frame
    names = feature_names(collected.features.higher_intervals)
    before = full[to_epoch_ms(full["open_time"]) + HOUR <= cut_ms].reset_index(drop=True)
    assert len(part) == len(before) and (part["symbol"] == before["symbol"]).all()
    for name in names:
        a, b = part[name].to_numpy(dtype=float), before[name].to_numpy(dtype=float)
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        assert same.all(), (
            f"{name} changed at a row before the cut {cut}: {np.flatnonzero(~same)[:5]}"
        )
    # cross-asset and higher-timeframe features are part of it and really computed
    for name in (
        "market_avg_corr_24",
        "corr_btc_24",
        "share_pos_ret_4",
        "4h_rsi_14",
        "regime_trending",
        "xs_rank_ret_1",
        "xs_rank_4h_rsi_14",
    ):
        assert np.isfinite(part[name].to_numpy(dtype=float)).any(), name


def test_higher_timeframes_join_only_after_their_bar_closes(inputs, full) -> None:
    btc = full[full["symbol"] == "BTCUSDT"].set_index("open_time")
    four = next(i for i in inputs if i.symbol == "BTCUSDT").bars["4h"]
    from asterai.features.indicators import core_indicators

    rsi4 = core_indicators(
        *(four[k].to_numpy(dtype=float) for k in ("high", "low", "close", "volume"))
    )["rsi_14"]
    k = int(np.flatnonzero(np.isfinite(rsi4))[5])
    opened = four["open_time"].iloc[k]
    # the 4h bar opened at T closes with the 1h bar opened at T+3h: joined there, not before
    assert btc.loc[opened + pd.Timedelta(hours=3), "4h_rsi_14"] == rsi4[k]
    assert btc.loc[opened + pd.Timedelta(hours=2), "4h_rsi_14"] == rsi4[k - 1]


def test_short_histories_get_features_as_their_windows_allow(full) -> None:
    four = full[full["symbol"] == "4USDT"].reset_index(drop=True)
    assert len(four) == 183
    rsi = four["rsi_14"].to_numpy(dtype=float)
    assert np.isnan(rsi[:14]).all() and np.isfinite(rsi[14:]).all()  # no fabricated warm-up
    rv72 = four["rv_72"].to_numpy(dtype=float)
    assert np.isnan(rv72[:72]).all() and np.isfinite(rv72[72:]).all()
    assert (four["listing_age_h"].diff().dropna() == 1).all()
    assert four["listing_age_h"].notna().all()  # a real listing inside the recording


def test_a_listing_before_the_recording_is_unknown_not_a_clock(full) -> None:
    # the recording starts mid-life for the majors: hours since its first bar would be a
    # clock that trees split on; those listings are unknown, the new listings are known
    for symbol in ("BTCUSDT", "ETHUSDT", "AAVEUSDT"):
        assert full.loc[full["symbol"] == symbol, "listing_age_h"].isna().all(), symbol
    for symbol in ("2ZUSDT", "4USDT"):
        assert full.loc[full["symbol"] == symbol, "listing_age_h"].notna().all(), symbol


def test_labels_follow_the_barrier_rules(inputs, full, collected) -> None:
    fs = collected.features
    btc_in = next(i for i in inputs if i.symbol == "BTCUSDT").bars["1h"]
    btc = full[full["symbol"] == "BTCUSDT"].reset_index(drop=True)
    o, h, lo, c = (btc_in[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    label, took = btc["label_tb"].to_numpy(), btc["label_tb_bars"].to_numpy()
    atr = btc["atr_14"].to_numpy()
    # the last rows whose horizon reaches past the data are unlabelled, not filled
    assert np.isnan(label[-fs.label_horizon :]).all()
    both_touched = 0
    for t in np.flatnonzero(np.isfinite(label)):
        entry = o[t + 1]  # a signal at t's close fills at t+1's open
        up, down = entry + fs.tp_atr * atr[t], entry - fs.sl_atr * atr[t]
        outcome, bars = 0, fs.label_horizon
        for k in range(t + 1, t + fs.label_horizon + 1):
            if lo[k] <= down:  # both touched in one bar: the worse one, the stop
                both_touched += h[k] >= up
                outcome, bars = -1, k - t
                break
            if h[k] >= up:
                outcome, bars = 1, k - t
                break
        assert (label[t], took[t]) == (outcome, bars), t
    assert both_touched > 0, "the rule for a bar touching both barriers is exercised"
    assert set(np.unique(label[np.isfinite(label)])) == {-1.0, 0.0, 1.0}
    fwd = btc["label_fwd_ret"].to_numpy()
    t = 100
    assert fwd[t] == np.log(c[t + fs.label_horizon] / o[t + 1])


def test_the_short_label_by_hand_on_real_bars(inputs, full, collected) -> None:
    """A short entered at the next open: target tp ATR below, stop sl ATR above."""
    fs = collected.features
    eth_in = next(i for i in inputs if i.symbol == "ETHUSDT").bars["1h"]
    eth = full[full["symbol"] == "ETHUSDT"].reset_index(drop=True)
    o, h, lo = (eth_in[k].to_numpy(dtype=float) for k in ("open", "high", "low"))
    atr = eth["atr_14"].to_numpy()
    short, took = eth["label_tb_short"].to_numpy(), eth["label_tb_short_bars"].to_numpy()
    times = eth["open_time"]

    def by_hand(t: int) -> tuple[int, int]:
        entry = o[t + 1]
        target, stop = entry - fs.tp_atr * atr[t], entry + fs.sl_atr * atr[t]
        for k in range(t + 1, t + fs.label_horizon + 1):
            if h[k] >= stop:  # the stop first when one bar touches both
                return -1, k - t
            if lo[k] <= target:
                return 1, k - t
        return 0, fs.label_horizon

    # the 2025-10-10 crash: a short signalled at 20:00 reaches its target in the 21:00 bar
    crash = int(np.flatnonzero(times == pd.Timestamp("2025-10-10 20:00", tz="UTC"))[0])
    assert lo[crash + 1] < o[crash + 1] - fs.tp_atr * atr[crash]  # the real bar fell that far
    assert (short[crash], took[crash]) == (1, 1) == by_hand(crash)
    labelled = np.flatnonzero(np.isfinite(short))
    for t in labelled[:: max(1, len(labelled) // 60)]:  # a few dozen bars across the month
        assert (short[t], took[t]) == by_hand(t), (t, times[t])
    assert np.isnan(short[-fs.label_horizon :]).all()
    # long and short are not mirror images: both can be stopped in one window
    long_ = eth["label_tb"].to_numpy()
    both = np.isfinite(long_) & np.isfinite(short)
    assert ((long_[both] == -1) & (short[both] == -1)).any()
    assert set(np.unique(short[both])) == {-1.0, 0.0, 1.0}


def test_a_gap_in_the_bars_is_never_bridged(inputs, collected) -> None:
    """Ten hours missing from BTCUSDT: no return or window spans the gap, and the 4h
    values are not carried over a missing 4h bar."""
    btc = next(i for i in inputs if i.symbol == "BTCUSDT")
    one_h, four_h = btc.bars["1h"], btc.bars["4h"]
    gapped_1h = one_h.drop(index=range(300, 310)).reset_index(drop=True)
    gapped_4h = four_h.drop(index=[100]).reset_index(drop=True)
    others = [i for i in inputs if i.symbol != "BTCUSDT"]
    frame = build_features(
        [*others, replace(btc, bars={**btc.bars, "1h": gapped_1h, "4h": gapped_4h})],
        collected.features,
    ).frame
    got = frame[frame["symbol"] == "BTCUSDT"].reset_index(drop=True)
    after = 300  # the first bar after the gap
    assert np.isnan(got.loc[after, "ret_1"]) and np.isfinite(got.loc[after + 1, "ret_1"])
    assert np.isnan(got.loc[after : after + 3, "ret_4"]).all() and np.isfinite(
        got.loc[after + 4, "ret_4"]
    )
    assert np.isnan(got.loc[after : after + 23, "rv_24"]).all() and np.isfinite(
        got.loc[after + 24, "rv_24"]
    )
    missing_4h_close = four_h["open_time"].iloc[100] + pd.Timedelta(hours=4)
    rows = got[
        (got["open_time"] >= missing_4h_close - pd.Timedelta(hours=1))
        & (got["open_time"] < missing_4h_close + pd.Timedelta(hours=3))
    ]
    assert rows["4h_rsi_14"].isna().all(), "no older 4h bar stands in for the missing one"


def test_the_crash_shows_in_the_confluence(full) -> None:
    crash = full[full["open_time"] == pd.Timestamp("2025-10-10 21:00", tz="UTC")].iloc[0]
    assert crash["market_ret_1"] < -0.05
    assert crash["share_pos_ret_1"] <= 0.1  # 1 of 15 (AAPLUSDT, a stock perpetual) rose
    assert crash["market_avg_corr_24"] > 0.5


def rank_by_hand(value: float, cross_section: list[float]) -> float:
    """(average rank - 1) / (n - 1) of ``value`` among the bar's values, by counting."""
    less = sum(v < value for v in cross_section)
    tied = sum(v == value for v in cross_section)  # itself included
    return (less + (tied - 1) / 2) / (len(cross_section) - 1)


def test_cross_sectional_ranks_are_each_bars_percentile_ranks(collected, full) -> None:
    """``xs_rank_{name}`` is the symbol's rank among the symbols with a value of ``name``
    at that bar, in [0, 1]; counted by hand on real bars (ties included), and equal to
    pandas' average rank on every row of every ranked column."""
    higher = collected.features.higher_intervals
    ranked = ranked_features(higher)
    specs = {spec.name: spec for spec in catalog(higher)}
    for name in ranked:  # asset-level sources only, each documented as a cross rank
        assert specs[name].group == "asset" or specs[name].group.startswith("timeframe_"), name
        assert specs[f"xs_rank_{name}"].group == "cross_rank"
    assert {"ret_1", "ret_72", "rsi_14", "funding_rate", "4h_ret_1", "1d_rv_24"} <= set(ranked)
    assert not {"atr_14", "listing_age_h", "rel_strength_24", "rsi_oversold"} & set(ranked)

    crash = full[full["open_time"] == pd.Timestamp("2025-10-10 21:00", tz="UTC")]
    by_symbol = crash.set_index("symbol")
    assert by_symbol.loc["ETHUSDT", "xs_rank_ret_1"] == 1.0  # the only riser in the crash
    assert by_symbol.loc["APEUSDT", "xs_rank_ret_1"] == 0.0  # the deepest fall (-43%)
    # bars where symbols tie (at their 24-bar high, or a flat hour) share the average rank
    at_high = full.dropna(subset=["dist_high_24"])
    tied = at_high[at_high.duplicated(["open_time", "dist_high_24"], keep=False)]
    moved = full.dropna(subset=["ret_1"])
    flat = moved[moved.duplicated(["open_time", "ret_1"], keep=False)]
    bars = [crash["open_time"].iloc[0], tied["open_time"].iloc[-1], flat["open_time"].iloc[-1]]
    for bar in bars:
        rows = full[full["open_time"] == bar]
        for name in ("ret_1", "dist_high_24", "rsi_14", "4h_ret_1", "1d_rsi_14"):
            values = rows[name].dropna().tolist()
            assert len(values) >= MIN_RANK_ASSETS, (bar, name)
            for value, got in zip(rows[name], rows[f"xs_rank_{name}"], strict=True):
                if np.isnan(value):
                    assert np.isnan(got), (bar, name)
                else:
                    assert got == rank_by_hand(value, values), (bar, name, value)
    assert tied.loc[tied["open_time"] == bars[1], "xs_rank_dist_high_24"].nunique() == 1

    by_bar = full.groupby("open_time")
    for name in ranked:
        got = full[f"xs_rank_{name}"].to_numpy(dtype=float)
        n = by_bar[name].transform("count")
        want = (by_bar[name].rank(method="average") - 1) / (n - 1)
        want = want.where(n >= MIN_RANK_ASSETS).to_numpy(dtype=float)
        assert np.array_equal(got, want, equal_nan=True), name
        assert (np.isnan(got) == full[name].isna().to_numpy()).all(), name  # >= 3 every bar
        finite = got[np.isfinite(got)]
        assert ((finite >= 0) & (finite <= 1)).all(), name
    assert np.isfinite(full["xs_rank_1d_ret_1"].to_numpy(dtype=float)).any()


def test_a_cross_section_of_fewer_than_three_has_no_rank(inputs, collected) -> None:
    """Two symbols at a bar: the rank would only say which is larger, so it is NaN; a
    third makes it 0, 0.5 or 1."""
    two = [i for i in inputs if i.symbol in ("BTCUSDT", "ETHUSDT")]
    sol = next(i for i in inputs if i.symbol == "SOLUSDT")
    pair = build_features(two, collected.features).frame
    trio = build_features([*two, sol], collected.features).frame
    assert np.isfinite(pair["ret_1"].to_numpy(dtype=float)).sum() > 1000
    assert pair["xs_rank_ret_1"].isna().all() and pair["xs_rank_4h_ret_1"].isna().all()
    three = trio.groupby("open_time")["ret_1"].transform("count") == 3
    ranks = trio.loc[three, "xs_rank_ret_1"]
    assert ranks.notna().all() and set(ranks) <= {0.0, 0.5, 1.0}
    assert trio.loc[three].groupby("open_time")["xs_rank_ret_1"].sum().eq(1.5).all()


def test_run_features_writes_the_long_parquet_with_its_metadata(collected) -> None:
    summary = run_features(collected, plots=False)
    path = DataPaths.at(collected.data_root).features("1h")
    assert Path(summary["path"]) == path and path.exists()
    table = pq.read_table(path)
    assert table.num_rows == summary["rows"] and summary["features"] >= 50
    import json

    meta = json.loads(table.schema.metadata[FEATURES_META_KEY])
    assert meta["features"] == feature_names(collected.features.higher_intervals)
    assert "BTCUSDT_1h.parquet" in meta["inputs_sha256"]


def test_a_real_listing_inside_a_short_window_keeps_its_age(inputs) -> None:
    """The exchange's first klines decide, not the files' first bars: 2ZUSDT's listing
    day has a 1d bar that contains its first hour even when the collected window starts
    later; a cut history's higher timeframes start after its first hour."""
    from asterai.features.build import unknown_listings

    two_z = next(i for i in inputs if i.symbol == "2ZUSDT")
    btc = next(i for i in inputs if i.symbol == "BTCUSDT")
    listed = int(pd.Timestamp("2025-10-02 14:00", tz="UTC").value // 1_000_000)
    day = int(pd.Timestamp("2025-10-02", tz="UTC").value // 1_000_000)
    cut = int(pd.Timestamp("2025-09-14 06:00", tz="UTC").value // 1_000_000)
    out = unknown_listings(
        [replace(two_z, listing_ms=listed), replace(btc, listing_ms=cut)],
        {
            "2ZUSDT": {"1h": listed, "4h": listed - 2 * HOUR, "1d": day},
            "BTCUSDT": {"1h": cut, "4h": cut + 2 * HOUR, "1d": cut + 18 * HOUR},
        },
    )
    assert out[0].listing_ms == listed
    assert out[1].listing_ms is None


def test_the_newest_bars_numpy_kernels_equal_the_batch_kernels(full) -> None:
    """The signal service computes the newest row without numba: its average pairwise
    correlation of one window equals the batch kernel's at every real window, to the bit,
    and so do the row sums the shares are made of."""
    from asterai.features._pairwise_nb import avg_pairwise_corr_nb
    from asterai.features.confluence import (
        MIN_ASSETS,
        PAIRWISE_WINDOW,
        _avg_pairwise_corr_window,
        _row_sums,
    )

    panel = full.pivot(index="open_time", columns="symbol", values="ret_1").to_numpy()
    batch = avg_pairwise_corr_nb(np.ascontiguousarray(panel), PAIRWISE_WINDOW, MIN_ASSETS)
    w = PAIRWISE_WINDOW
    newest = np.array([_avg_pairwise_corr_window(panel[t - w + 1 : t + 1], MIN_ASSETS)
                       for t in range(w - 1, len(panel))])  # fmt: skip
    assert np.isfinite(newest).sum() > 500
    assert np.array_equal(newest, batch[w - 1 :], equal_nan=True)
    total, count = _row_sums(panel)
    by_hand = [sum(v for v in row if np.isfinite(v)) for row in panel]  # in column order
    assert np.array_equal(total, np.array(by_hand, dtype=float))
    assert np.array_equal(count, np.isfinite(panel).sum(axis=1))


def test_talibs_streaming_handles_carry_the_indicators_bit_for_bit(inputs) -> None:
    """The live features carry TA-Lib's streaming handles from bar to bar: opened on the
    first part of a real series and fed the rest one bar at a time, every output equals
    the Function API on the whole series to the bit; a series shorter than the warm-up
    gets no handles but the same values; a bar that is not finite is refused and leaves
    the handles where they were."""
    from asterai.features.indicators import TA_OUTPUTS, TaHandles, ta_series

    for inp in inputs[:6]:
        bars = inp.bars["1h"]
        h, lo, c = (bars[k].to_numpy(dtype=float) for k in ("high", "low", "close"))
        whole = ta_series(h, lo, c)
        split = len(c) // 3
        handles, opened = TaHandles.open(h[:split], lo[:split], c[:split])
        assert handles is not None
        for name in TA_OUTPUTS:
            assert np.array_equal(opened[name], whole[name][:split], equal_nan=True)
        fed = np.array([handles.update(h[i], lo[i], c[i]) for i in range(split, len(c))])
        for k, name in enumerate(TA_OUTPUTS):
            assert np.array_equal(fed[:, k], whole[name][split:]), (inp.symbol, name)
        with pytest.raises(ValueError, match="not finite"):
            handles.update(np.nan, lo[-1], c[-1])
        again = TaHandles.open(h, lo, c)[0]
        assert handles.update(h[-1], lo[-1], c[-1]) == again.update(h[-1], lo[-1], c[-1])
    short, values = TaHandles.open(h[:20], lo[:20], c[:20])  # ADX needs 28 bars
    assert short is None
    for name, v in ta_series(h[:20], lo[:20], c[:20]).items():
        assert np.array_equal(values[name], v, equal_nan=True)
