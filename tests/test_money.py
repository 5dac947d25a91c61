"""What the trades are paid: the money figures of a trained model equal an independent
recomputation from its out-of-sample predictions and the feature table (real recording).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import SMALL_EXPORT_TRAINING
from scipy.stats import pearsonr

from asterai.config import load_settings
from asterai.data.store import to_epoch_ms
from asterai.entry import SIDES, allowed_sides, entry_side
from asterai.models import money
from asterai.models.scoring import Scorer
from asterai.paths import DataPaths


@pytest.fixture(scope="module")
def scored(exported_root):
    """The confluence model's scored out-of-sample rows, rebuilt from the files: its
    predictions joined to the feature table's forward return; a row is scored where its
    forward return is known and its bar has at least three such rows (the
    cross-sectional label's rule); the model config as written."""
    paths = DataPaths.at(exported_root)
    preds = pd.read_parquet(paths.predictions("confluence"))
    features = pd.read_parquet(
        paths.features("1h"), columns=["symbol", "open_time", "label_fwd_ret"]
    )
    rows = preds.merge(features, on=["symbol", "open_time"], how="left")
    rows = rows[rows["label_fwd_ret"].notna()]
    rows = rows[rows.groupby("open_time")["symbol"].transform("size") >= 3].copy()
    rows["t"] = to_epoch_ms(rows["open_time"])
    rows = rows.sort_values(["t", "symbol"], kind="stable").reset_index(drop=True)
    config = json.loads((paths.confluence_models / "ensemble_config.json").read_text())
    settings = load_settings(exported_root, train=SMALL_EXPORT_TRAINING)
    cost = 2 * (settings.strategy.taker_fee + settings.strategy.slippage)
    return rows, config, settings, cost


def by_hand_net(rows: pd.DataFrame, cost: float) -> tuple[np.ndarray, np.ndarray]:
    r = np.exp(rows["label_fwd_ret"].to_numpy()) - 1.0
    return r - cost, -r - cost


def test_the_decile_table_equals_a_recomputation_from_the_predictions(scored) -> None:
    rows, config, _, cost = scored
    pooled = config["metrics"]["out_of_sample"]["model"]
    assert pooled["long"]["rows"] == len(rows)
    for side, net in zip(("long", "short"), by_hand_net(rows, cost), strict=True):
        score = rows[f"p_{side}"]
        rank = score.rank(method="average")
        decile = np.minimum(((rank - 1) * 10 // len(rows)).astype(int), 9) + 1
        want = pd.DataFrame({"d": decile, "net": net}).groupby("d")["net"]
        got = pooled[side]["deciles"]
        assert [g["decile"] for g in got] == list(want.size().index)
        assert [g["rows"] for g in got] == list(want.size())
        assert [g["mean"] for g in got] == pytest.approx(list(want.mean()), abs=1e-12)
        assert [g["median"] for g in got] == pytest.approx(list(want.median()), abs=1e-12)
        assert pooled[side]["decile_spread"] == pytest.approx(
            want.mean().iloc[-1] - want.mean().iloc[0], abs=1e-12
        )
    # the training summary carries the same table
    assert config["training_summary"]["deciles"]["long"] == pooled["long"]["deciles"]


def test_the_traded_rows_are_the_entry_rules_and_their_t_allows_for_overlap(scored) -> None:
    rows, config, settings, cost = scored
    traded = config["metrics"]["out_of_sample"]["model"]["traded"]
    threshold, horizon = settings.train.threshold, settings.features.label_horizon
    allow = allowed_sides(settings.strategy.sides)
    side = np.array(
        [entry_side(a, b, threshold, *allow)
         for a, b in zip(rows["p_long"], rows["p_short"], strict=True)]
    )  # fmt: skip
    long_net, short_net = by_hand_net(rows, cost)
    paid = np.where(side == 1, long_net, short_net)
    bars = np.unique(rows["t"])
    for name, sel in (("long", side == 1), ("short", side == -1), ("all", side != 0)):
        x = paid[sel]
        assert traded[name]["rows"] == int(sel.sum())
        if not sel.any():
            assert traded[name]["mean"] is None
            continue
        assert traded[name]["mean"] == pytest.approx(x.mean(), abs=1e-12)
        assert traded[name]["median"] == pytest.approx(np.median(x), abs=1e-12)
        # the variance of the mean: every pair of traded rows whose bars lie less than a
        # horizon apart, by brute force over the bars evaluated
        pos = np.searchsorted(bars, rows["t"].to_numpy()[sel])
        d = x - x.mean()
        near = np.abs(pos[:, None] - pos[None, :]) < horizon
        var = float(d @ near @ d) / len(x) ** 2
        if name == "all":  # the pooled rows span enough bars for a t
            assert traded[name]["t"] is not None and var > 0
        if traded[name]["t"] is not None:
            assert traded[name]["t"] == pytest.approx(x.mean() / np.sqrt(var), rel=1e-9)
    verdict = config["training_summary"]["earnings"]
    assert config["training_summary"]["earns"] == ((traded["all"]["mean"] or 0) > 0)
    if not config["training_summary"]["earns"]:
        assert "does not earn" in verdict or "trades nothing" in verdict, verdict
    assert verdict in config["verdict"]


def test_the_vectorised_entry_rule_is_the_service_and_kernel_rule(scored) -> None:
    rows, _, settings, cost = scored
    p = rows[["p_long", "p_short"]].to_numpy(copy=True)
    p[::7, 1] = np.nan  # a missing probability is no trade
    for sides in SIDES:
        allow = allowed_sides(sides)
        for threshold in (0.3, settings.train.threshold, 0.55):
            rule = money.TradeRule(threshold, cost, 24, *allow)
            want = [entry_side(a, b, threshold, *allow) for a, b in p]
            assert money.traded_sides(p, rule).tolist() == want
    long_only = money.traded_sides(p, money.TradeRule(0.3, cost, 24, True, False))
    assert (long_only >= 0).all() and (long_only == 1).any()


def test_the_pearson_ic_is_the_per_bar_correlation_with_winsorised_returns(scored) -> None:
    rows, config, _, _ = scored
    pooled = config["metrics"]["out_of_sample"]["model"]
    fwd = rows["label_fwd_ret"].to_numpy()
    for side, sign in (("long", 1.0), ("short", -1.0)):
        outcome = sign * fwd
        lo, hi = np.quantile(outcome, [0.01, 0.99])
        clipped = np.clip(outcome, lo, hi)
        per_bar = []
        for _, at in rows.groupby("t").indices.items():
            s, o = rows[f"p_{side}"].to_numpy()[at], clipped[at]
            if len(at) < 3 or np.ptp(o) == 0:
                continue
            per_bar.append(0.0 if np.ptp(s) == 0 else pearsonr(s, o).statistic)
        assert pooled[side]["pearson_ic"] == pytest.approx(np.mean(per_bar), abs=1e-9)
        assert pooled[side]["winsor"] == pytest.approx([lo, hi])


def test_the_mean_net_stopping_score_is_the_top_deciles_mean(scored) -> None:
    """Early stopping on ``mean_net`` reads each side's top decile, by the decile
    table's own rule."""
    rows, _, _, cost = scored
    p = rows[["p_long", "p_short"]].to_numpy()
    fwd = rows["label_fwd_ret"].to_numpy()
    y = np.zeros((len(rows), 2))
    times = rows["t"].to_numpy()
    long_net, short_net = by_hand_net(rows, cost)
    tops = []
    for j, net in enumerate((long_net, short_net)):  # the decile table's top row
        rank = pd.Series(p[:, j]).rank(method="average")
        decile = np.minimum(((rank - 1) * 10 // len(p)).astype(int), 9).to_numpy()
        tops.append(net[decile == decile.max()].mean())
    assert Scorer("mean_net", y, fwd, times, cost)(p) == pytest.approx(np.mean(tops), abs=1e-12)
    long_only = Scorer("mean_net", y, fwd, times, cost, (True, False))(p)
    assert long_only == pytest.approx(tops[0], abs=1e-12)
