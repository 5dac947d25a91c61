"""The R-multiple target on the real recording: the label by hand from each symbol's own
bars, its causality, the panel's net R, and a walk-forward that fits it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import copy_root

from asterai.barriers import place
from asterai.config import load_settings
from asterai.features.build import build_features, label_columns, load_inputs
from asterai.models.data import load_panel, round_trip_cost
from asterai.models.errors import TrainingError
from asterai.models.train import walk_forward
from asterai.paths import DataPaths

R_LABELS = ("label_r", "label_r_short", "label_risk", "label_risk_short")
SYMBOLS = ("BTCUSDT", "ETHUSDT", "AAPLUSDT", "2ZUSDT")
SMALL_R = {
    "folds": 2,
    "target": "r_multiple",
    "lstm": {"epochs": 1, "hidden_size": 8},
    "xgboost": {"n_estimators": 30, "objective": "pseudohuber"},
}


@pytest.fixture(scope="module")
def world(featured_root):
    """The shared featured root's settings, verified inputs and feature table (read only)."""
    settings = load_settings(featured_root)
    inputs = {i.symbol: i for i in load_inputs(settings)[0]}
    table = pd.read_parquet(DataPaths.at(featured_root).features("1h"))
    return settings, inputs, table


def r_by_hand(bars: pd.DataFrame, atr: float, t: int, fs, tick: float, w: int):
    """A trade signalled at ``t``'s close, in plain Python from ``bars`` (one symbol's
    own) from the open of ``t+1`` to the close of ``t+horizon``: (gross R, risk share,
    how it ended, the target's R). The barriers' placement is the shared one
    (``asterai.barriers``)."""
    o, h, lo, c = (bars[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    entry = o[t + 1]
    stop, target = place(entry, w, atr, fs.tp_atr, fs.sl_atr, tick)
    risk = abs(entry - stop)
    beyond = tick / 2
    target_r = abs(target - entry) / risk
    for k in range(t + 1, t + fs.label_horizon + 1):
        if (lo[k] <= stop) if w > 0 else (h[k] >= stop):  # the stop first, as the backtest
            through = (o[k] <= stop) if w > 0 else (o[k] >= stop)
            if k > t + 1 and through:  # the bar opened beyond the stop: filled at its open
                return w * (o[k] - entry) / risk, risk / entry, "gap", target_r
            return w * (stop - entry) / risk, risk / entry, "stop", target_r
        if (h[k] > target + beyond) if w > 0 else (lo[k] < target - beyond):
            return w * (target - entry) / risk, risk / entry, "target", target_r
    return w * (c[t + fs.label_horizon] - entry) / risk, risk / entry, "time", target_r


def test_the_r_multiple_by_hand_from_each_symbols_own_bars(world) -> None:
    settings, inputs, table = world
    fs = settings.features
    ends: dict[str, int] = {}
    for symbol in SYMBOLS:
        inp = inputs[symbol]
        bars = inp.bars["1h"]
        rows = table[table["symbol"] == symbol].reset_index(drop=True)
        assert (rows["open_time"].to_numpy() == bars["open_time"].to_numpy()).all()
        # defined exactly where the triple barrier is
        for side in ("", "_short"):
            tb = np.isfinite(rows[f"label_tb{side}"].to_numpy())
            for name in (f"label_r{side}", f"label_risk{side}"):
                assert (np.isfinite(rows[name].to_numpy()) == tb).all(), (symbol, name)
        labelled = np.flatnonzero(np.isfinite(rows["label_tb"].to_numpy()))
        assert len(labelled) > 100, symbol
        for t in labelled:
            for w, side in ((1, ""), (-1, "_short")):
                r, risk, how, target_r = r_by_hand(bars, rows.loc[t, "atr_14"], t, fs, inp.tick, w)
                got = rows.loc[t, f"label_r{side}"], rows.loc[t, f"label_risk{side}"]
                np.testing.assert_allclose(got, (r, risk), rtol=1e-12, err_msg=f"{symbol} {t}")
                outcome = {"gap": -1, "stop": -1, "target": 1, "time": 0}[how]
                assert rows.loc[t, f"label_tb{side}"] == outcome, (symbol, t, side)
                ends[how] = ends.get(how, 0) + 1
                # bounded by construction: -1 R at the stop (worse only through a gap),
                # at most the target's distance (a close can sit half a tick beyond it)
                assert how == "gap" or r >= -1 - 1e-9
                assert r <= target_r + (inp.tick / 2) / (risk * bars["open"].iloc[t + 1]) + 1e-9
    # every way out is exercised on the real bars (gaps included)
    assert set(ends) == {"gap", "stop", "target", "time"}, ends


def test_the_r_multiple_does_not_change_when_later_bars_are_cut_off(world) -> None:
    settings, inputs, table = world
    fs = settings.features
    h = fs.label_horizon
    for symbol in SYMBOLS:
        inp = inputs[symbol]
        base = inp.bars["1h"]
        atr = table.loc[table["symbol"] == symbol, "atr_14"].to_numpy()
        full = label_columns(base, atr, inp.tick, fs)
        for m in (len(base) // 3, len(base) // 2, len(base) - 5):
            part = label_columns(base.iloc[:m].reset_index(drop=True), atr[:m], inp.tick, fs)
            for name in R_LABELS:
                # rows whose label ends inside the cut: unchanged; the last horizon: unknown
                np.testing.assert_array_equal(part[name][: m - h], full[name][: m - h])
                assert np.isnan(part[name][m - h :]).all(), (symbol, name, m)
            assert np.isfinite(part["label_r"][: m - h]).any()


def test_the_r_multiple_reads_no_other_symbols_bars(world) -> None:
    """Another symbol's bars changed (prices scaled, half its bars gone): the R labels
    of the others are bit for bit the feature table's."""
    settings, inputs, table = world
    keep = [inputs[s] for s in ("BTCUSDT", "ETHUSDT", "AAPLUSDT")]
    eth = inputs["ETHUSDT"]
    bars = eth.bars["1h"].iloc[::2].reset_index(drop=True)
    for k in ("open", "high", "low", "close"):
        bars[k] = bars[k] * 1.7
    changed = replace(eth, bars={**eth.bars, "1h": bars})
    frame = build_features([keep[0], changed, keep[2]], settings.features).frame
    for symbol in ("BTCUSDT", "AAPLUSDT"):
        got = frame[frame["symbol"] == symbol].reset_index(drop=True)
        want = table[table["symbol"] == symbol].reset_index(drop=True)
        for name in R_LABELS:
            np.testing.assert_array_equal(got[name].to_numpy(), want[name].to_numpy())


def test_the_panel_carries_the_net_r_and_its_sign(world, featured_root) -> None:
    settings, _, table = world
    settings = load_settings(featured_root, train={"target": "r_multiple"})
    panel = load_panel(settings, min_history_bars=settings.train.min_history_bars)
    assert panel.target == "r_multiple" and panel.value.shape == (len(panel.times), 2)
    cost = round_trip_cost(settings)
    symbols = np.array(panel.symbols, dtype=object)[panel.code]
    times = pd.to_datetime(panel.times, unit="ms", utc=True)
    keyed = table.set_index(["symbol", "open_time"])
    want = keyed.loc[list(zip(symbols, times, strict=True))]
    for j, side in enumerate(("", "_short")):
        net = want[f"label_r{side}"].to_numpy() - cost / want[f"label_risk{side}"].to_numpy()
        np.testing.assert_allclose(panel.value[:, j], net, rtol=1e-6, atol=1e-6)
        ok = np.isfinite(net)
        assert (panel.y[ok, j] == (panel.value[ok, j] > 0)).all()
        assert np.isnan(panel.y[~ok, j]).all()
    # the cost in R is real: a stop at -1 R gross is below -1 net
    assert np.nanmax(panel.value) < np.nanmax(table["label_r"]) + 1e-6


def test_a_walk_forward_fits_the_expected_r(featured_root, tmp_path) -> None:
    root = copy_root(featured_root, tmp_path / "root")
    settings = load_settings(root, train=SMALL_R)
    result = walk_forward("confluence", settings)
    identity = [[1.0, 0.0], [1.0, 0.0]]
    for fold in result.folds:
        assert fold.members["xgboost_calibration_platt"] == identity
        assert fold.members["lstm_calibration_platt"] == identity
    final = result.config["final_model"]["calibration_platt"]
    assert final["xgboost"] == identity and final["lstm"] == identity
    assert result.config["label"]["target"] == "r_multiple"
    preds = pq.read_table(result.predictions_path).to_pandas()
    for col in ("p_long", "p_short", "xgboost_raw_long", "xgboost_raw_short"):
        p = preds[col].to_numpy()
        assert ((p > 0) & (p < 1)).all(), col
    assert preds["p_long"].std() > 0 and preds["p_short"].std() > 0
    # the backtest's own rule turns them into orders: a trade only where its side's
    # sigmoid(E[net R]) reached the threshold and beat the other side's
    from asterai.backtest.engine import backtest_model

    trades = backtest_model(settings, "confluence").result.trades
    fires = (preds[["p_long", "p_short"]].max(axis=1) >= settings.train.threshold).any()
    assert len(trades) > 0 or not fires
    signals = trades.merge(
        preds, left_on=["symbol", "signal_time"], right_on=["symbol", "open_time"], how="left"
    )
    own = np.where(signals["side"] == "long", signals["p_long"], signals["p_short"])
    other = np.where(signals["side"] == "long", signals["p_short"], signals["p_long"])
    assert (own >= settings.train.threshold).all() and (own >= other).all()


def test_a_target_and_objective_that_do_not_fit_are_refused(featured_root) -> None:
    with pytest.raises(
        TrainingError, match=r"train.target = 'r_multiple'.*train.xgboost.objective"
    ):
        walk_forward("confluence", load_settings(featured_root, train={"target": "r_multiple"}))
    native = load_settings(
        featured_root,
        train={"target": "triple_barrier"},
        aster_native={"xgboost": {"objective": "pseudohuber"}},
    )
    with pytest.raises(TrainingError, match=r"aster_native.xgboost.objective = 'pseudohuber'"):
        walk_forward("aster_native", native)


def test_kelly_sizing_refuses_the_r_multiple(featured_root) -> None:
    """Kelly reads p as the chance of the target at the ATR odds: sigmoid(E[R]) is not."""
    from asterai.backtest.inputs import BacktestInputError, check_sizing

    kelly = load_settings(featured_root, strategy={"kelly_fraction": 0.5})
    with pytest.raises(BacktestInputError, match=r"kelly_fraction = 0.5 .* 'r_multiple'"):
        check_sizing(kelly, "r_multiple", "confluence")
