"""Training on the real recording: walk-forward folds, artifacts, loader, determinism."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from conftest import copy_root

from asterai.cli import main
from asterai.config import load_settings
from asterai.data.gate import GateRefused
from asterai.data.store import PROVENANCE_KEY, read_provenance, to_epoch_ms
from asterai.features.build import run_features
from asterai.models import load, metrics, summary, train
from asterai.models.calibration import fit_platt
from asterai.models.data import load_panel
from asterai.models.device import choose_device
from asterai.models.splits import FinalWindow, Fold, SplitError, layout
from asterai.models.train import walk_forward
from asterai.paths import DataPaths

HOUR = 3_600_000
#: Small but real: every code path of the default layout, in seconds.
SMALL = {"folds": 3, "lstm": {"epochs": 2, "hidden_size": 16}, "xgboost": {"n_estimators": 60}}


@pytest.fixture(scope="module")
def prepared(featured_root) -> Path:
    """A data root with every recorded symbol collected, gated and turned into features
    (shared: read it, or copy it)."""
    return featured_root


def settings_for(root: Path, **train):
    return load_settings(root, train={**SMALL, **train})


@pytest.fixture(scope="module")
def trained(prepared: Path, tmp_path_factory):
    root = copy_root(prepared, tmp_path_factory.mktemp("trained"))
    settings = settings_for(root)
    confluence = walk_forward("confluence", settings)
    native = walk_forward("aster_native", settings)
    return root, settings, confluence, native


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_hashes(folder: Path) -> dict[str, str]:
    return {p.name: sha(p) for p in sorted(folder.iterdir())}


def eligible_rows(root: Path, symbols: list[str], target: str) -> pd.DataFrame:
    """Rows a model may fit, validate or score on, recomputed from the files: its symbols,
    tradeable in the universe, both labels defined; ``y_long``/``y_short`` the outcome
    the models predict, by hand from the feature table."""
    features = pd.read_parquet(DataPaths.at(root).features("1h"))
    universe = pd.read_parquet(DataPaths.at(root).universe)
    merged = features.merge(universe, on=["symbol", "open_time"], how="left")
    tradeable = merged["tradeable"].fillna(False).astype(bool)
    if target == "triple_barrier":  # 1 when the target was reached first (label +1)
        defined = merged["label_tb"].notna() & merged["label_tb_short"].notna()
        merged["y_long"] = (merged["label_tb"] == 1).astype(float)
        merged["y_short"] = (merged["label_tb_short"] == 1).astype(float)
    else:  # beat the median of the bar's tradeable symbols by the round-trip cost
        settings = load_settings(root)
        cost = 2 * (settings.strategy.taker_fee + settings.strategy.slippage)
        cross = merged[tradeable & merged["label_fwd_ret"].notna()]
        bar = cross.groupby("open_time")["label_fwd_ret"]
        median = bar.median().where(bar.size() >= 3)
        m = merged["open_time"].map(median)
        defined = tradeable & merged["label_fwd_ret"].notna() & m.notna()
        merged["y_long"] = (merged["label_fwd_ret"] - m > cost).astype(float)
        merged["y_short"] = (m - merged["label_fwd_ret"] > cost).astype(float)
    keep = merged["symbol"].isin(symbols) & tradeable & defined
    out = merged[keep].copy()
    out["t"] = to_epoch_ms(out["open_time"])
    return out


def windows(config: dict) -> list:
    """Every training window of a model: its folds', then the final model's."""
    folds = [Fold.from_json(f) for f in config["walk_forward"]["folds"]]
    return [*folds, FinalWindow.from_json(config["final_model"]["windows"])]


def test_the_artifacts_are_the_designed_files_and_formats(trained) -> None:
    root, settings, confluence, native = trained
    paths = DataPaths.at(root)
    assert sorted(p.name for p in paths.confluence_models.iterdir()) == [
        "calibration.png",
        "ensemble_config.json",
        "feature_importance.json",
        "feature_importance.png",
        "lstm_predictor.pth",
        "xgboost_classifier.json",
    ]
    assert sorted(p.name for p in paths.aster_native_models.iterdir()) == [
        "calibration.png",
        "feature_importance.json",
        "feature_importance.png",
        "model_config.json",
        "xgboost_aster_native.json",
    ]
    # XGBoost's own JSON, a state_dict that loads without executing code
    booster = json.loads((paths.confluence_models / "xgboost_classifier.json").read_text())
    assert "learner" in booster
    state = torch.load(paths.confluence_models / "lstm_predictor.pth", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    config = json.loads((paths.confluence_models / "ensemble_config.json").read_text())
    for key in ("features", "label", "walk_forward", "final_model", "data_sha256", "metrics",
                "versions", "leakage_checks", "verdict"):  # fmt: skip
        assert key in config, key
    ensemble = config["ensemble"]
    assert ensemble["xgboost_weight"] == 0.6 and ensemble["configured_lstm_weight"] == 0.4
    # the guide's weights where the LSTM beat XGBoost on validation, XGBoost alone if not
    assert ensemble["lstm_weight"] == (0.4 if ensemble["lstm_in_ensemble"] else 0.0)
    assert config["label"]["target"] == settings.train.target
    if settings.train.target == "triple_barrier":
        assert config["label"]["both_touched"] == "counted as the stop"
    assert config["versions"]["device"]["xgboost"] == "cpu"  # no GPU here, and it says so
    assert not any(f.startswith("label_") for f in config["features"])
    assert "listing_age_h" not in config["features"]  # a clock for old symbols: left out
    importance = json.loads((paths.confluence_models / "feature_importance.json").read_text())
    assert set(importance["gain"]) == set(config["features"])
    assert set(importance["mean_abs_shap"]) == set(config["features"])


def test_predictions_are_out_of_sample_rows_only(trained) -> None:
    root, settings, confluence, _ = trained
    paths = DataPaths.at(root)
    frame = pd.read_parquet(paths.predictions("confluence"))
    assert list(frame.columns) == [
        "symbol", "open_time", "fold", "p_long", "p_short",
        "xgboost_raw_long", "xgboost_raw_short", "lstm_raw_long", "lstm_raw_short",
    ]  # fmt: skip
    meta = json.loads(
        pq.read_schema(paths.predictions("confluence")).metadata[b"asterai.predictions"]
    )
    assert meta["out_of_sample_only"] is True
    config = json.loads((paths.confluence_models / "ensemble_config.json").read_text())
    assert meta["run_id"] == config["run_id"]  # the predictions belong to these models
    folds = [Fold.from_json(f) for f in meta["folds"]]
    assert len(folds) == 3
    times = to_epoch_ms(frame["open_time"])
    for fold in folds:
        rows = frame["fold"].to_numpy() == fold.fold
        assert rows.any()
        assert (times[rows] >= fold.test_start).all() and (times[rows] <= fold.test_end).all()
    # every prediction is a row the universe says was tradeable
    universe = pd.read_parquet(paths.universe)
    merged = frame.merge(universe, on=["symbol", "open_time"], how="left")
    assert merged["tradeable"].all()
    assert frame[["p_long", "p_short"]].apply(lambda c: c.between(0, 1)).all().all()


def test_no_training_row_is_within_purge_distance_of_its_test_window(trained) -> None:
    root, settings, confluence, _ = trained
    horizon = settings.features.label_horizon
    gap = (horizon + 1 + settings.train.embargo_bars) * HOUR
    for result in confluence.folds:
        f = result.fold
        assert (
            f.train_start <= f.train_end < f.valid_start <= f.valid_end < f.test_start <= f.test_end
        )
        assert f.valid_start - f.train_end >= gap  # fitting rows never see validation bars
        assert f.test_start - f.valid_end >= gap  # nor any training row the test bars
        # a training row's label reads up to `horizon` bars ahead: all before the test
        assert f.valid_end + horizon * HOUR < f.test_start
    checks = confluence.config["leakage_checks"]
    assert checks["purge_ok"] and checks["predictions_only_in_test_windows"]
    assert checks["label_columns_in_features"] == []
    # the shuffled-label control scores a coin toss
    for auc in checks["shuffled_label_control_auc"].values():
        assert auc is None or 0.35 < auc < 0.65


def test_the_loader_reproduces_the_final_model(trained) -> None:
    root, settings, _, _ = trained
    features = pd.read_parquet(DataPaths.at(root).features("1h"))
    for name in ("confluence", "aster_native"):
        predictor = load(settings, name)
        out = predictor.predict(features)
        assert out.index.equals(features.index)
        fp = predictor.config["fingerprint"]
        key = pd.MultiIndex.from_arrays([features["symbol"], to_epoch_ms(features["open_time"])])
        rows = pd.Series(np.arange(len(features)), index=key).loc[
            list(zip(fp["symbol"], fp["open_time_ms"], strict=True))
        ]
        # to float32 precision: the LSTM's batches differ between the two calls
        np.testing.assert_allclose(out["p_long"].to_numpy()[rows], fp["p_long"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(
            out["p_short"].to_numpy()[rows], fp["p_short"], rtol=0, atol=1e-6
        )
        # a shuffled frame gets the same answers in its own order
        shuffled = features.sample(frac=1.0, random_state=1)
        again = predictor.predict(shuffled)
        pd.testing.assert_frame_equal(again.loc[features.index], out, rtol=0, atol=1e-6)


def test_two_cpu_runs_give_identical_predictions(trained, tmp_path) -> None:
    root, settings, _, _ = trained
    again = copy_root(root, tmp_path / "again")
    walk_forward("confluence", settings_for(again))
    first = pd.read_parquet(DataPaths.at(root).predictions("confluence"))
    second = pd.read_parquet(DataPaths.at(again).predictions("confluence"))
    pd.testing.assert_frame_equal(first, second)
    a = DataPaths.at(root).confluence_models / "xgboost_classifier.json"
    b = DataPaths.at(again).confluence_models / "xgboost_classifier.json"
    assert sha(a) == sha(b)


def test_the_aster_native_report_puts_new_listings_beside_the_confluence_model(trained) -> None:
    _, _, _, native = trained
    by_category = native.config["metrics"]["by_category"]
    assert {"major", "new_listing"} <= set(by_category)
    assert set(by_category["new_listing"]["symbols"]) == {"2ZUSDT", "4USDT"}
    assert "BTCUSDT" in by_category["major"]["symbols"]
    for cat in ("major", "new_listing"):
        entry = by_category[cat]
        assert entry["same_rows"] > 0
        for model in ("aster_native_on_same_rows", "confluence_on_same_rows"):
            assert entry[model]["long"]["rows"] == entry[model]["short"]["rows"] > 0
    assert native.config["members"]["xgboost"]["settings"]["max_depth"] == 3  # conservative
    assert "category_new_listing" in native.config["features"]


def test_a_contaminated_file_stops_training_and_leaves_the_models(trained, tmp_path) -> None:
    root, _, _, _ = trained
    copy = copy_root(root, tmp_path / "bad")
    settings = settings_for(copy)
    models = DataPaths.at(copy).confluence_models
    before = folder_hashes(models)
    target = DataPaths.at(copy).klines("SOLUSDT", "4h")
    table = pq.read_table(target)
    prov = read_provenance(target)
    meta = dict(table.schema.metadata)
    meta[PROVENANCE_KEY] = json.dumps({**prov, "source": "synthetic"}).encode()
    pq.write_table(table.replace_schema_metadata(meta), target)
    with pytest.raises(GateRefused, match=r"contaminated: SOLUSDT_4h.parquet \(provenance\)"):
        walk_forward("confluence", settings)
    assert folder_hashes(models) == before


def test_too_many_folds_for_the_history_is_a_clear_error(trained, tmp_path) -> None:
    root, _, _, _ = trained
    copy = copy_root(root, tmp_path / "short")
    models = DataPaths.at(copy).confluence_models
    before = folder_hashes(models)
    with pytest.raises(SplitError, match=r"train.folds = 40"):
        walk_forward("confluence", settings_for(copy, folds=40))
    assert folder_hashes(models) == before


def test_the_command_line_trains_and_prints_the_summary(trained, tmp_path) -> None:
    root, _, _, _ = trained
    copy = copy_root(root, tmp_path / "cli")
    (copy / "asterai.toml").write_text(
        "[train]\nfolds = 2\n[train.lstm]\nhidden_size = 8\n[train.xgboost]\nn_estimators = 30\n"
    )
    result = CliRunner().invoke(
        main, ["train", "confluence", "--data-root", str(copy), "--epochs", "1", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    cells = " ".join(re.sub("[\u2500-\u257f]", " ", result.output).split())  # no borders
    assert "out-of-sample walk-forward" in text
    assert "beats the logistic regression in" in text
    assert "leakage checks: purge 31 bars (needs 31)" in text
    # one LSTM epoch: below the floor of 2 epochs everywhere, and the summary says so
    assert "warning: the model learned almost nothing on validation" in text
    assert "below the floor of 2 (train.min_median_epochs)" in text
    config = json.loads((DataPaths.at(copy).confluence_models / "ensemble_config.json").read_text())
    # the table says what each fold kept and whether the LSTM joined; the pooled row the
    # medians and the pooled per-bar IC with its t-statistic
    summary = config["training_summary"]
    assert "target cross_sectional, stopped on auc" in text
    assert f"median {summary['median_trees']:g}" in text
    for fold in summary["folds"]:
        joined = "in" if fold["lstm_in_ensemble"] else "out"
        assert f"{fold['xgboost_trees']} {fold['lstm_epochs']} ({joined})" in cells
    pooled = summary["pooled"]["model"]["long"]
    assert f"{pooled['ic']:.3f} ({pooled['ic_t']:.1f})" in cells
    # what the trades are paid: the pooled traded rows' mean, the deciles, the sentence
    paid = summary["pooled"]["model"]["traded"]["all"]
    assert "what the trades are paid" in text
    if paid["mean"] is not None:
        assert f"{paid['mean']:+.2%}" in cells
    top = summary["deciles"]["long"][-1]
    assert f"{top['mean']:+.2%} / {top['median']:+.2%}" in cells
    assert summary["earnings"] in text
    assert len(config["walk_forward"]["folds"]) == 2
    assert config["members"]["lstm"]["settings"]["epochs"] == 1
    bad = CliRunner().invoke(
        main, ["train", "confluence", "--data-root", str(copy), "--folds", "30"]
    )
    assert bad.exit_code == 2 and "train.folds = 30" in bad.output


def test_fit_stopping_and_calibration_rows_are_disjoint_ordered_and_purged(trained) -> None:
    root, settings, confluence, native = trained
    horizon = settings.features.label_horizon
    gap = (horizon + 1 + settings.train.embargo_bars) * HOUR
    for result in (confluence, native):
        config = result.config
        rows = eligible_rows(root, config["symbols"], config["label"]["target"])
        t = rows["t"].to_numpy()
        records = [*config["metrics"]["per_fold"], config["final_model"]]
        for w, record in zip(windows(config), records, strict=True):
            # fit < gap < early stopping < calibration, one bar apart, no bar shared
            assert w.train_start <= w.train_end < w.valid_start <= w.stop_end
            assert w.stop_end + HOUR == w.calib_start <= w.valid_end
            assert w.valid_start - w.train_end >= gap
            assert w.train_end + horizon * HOUR < w.valid_start  # no fit label reads validation
            if isinstance(w, Fold):
                assert w.test_start - w.valid_end >= gap
            # the calibration part is the last calibration_share of the validation window
            n_valid = (w.valid_end - w.valid_start) // HOUR + 1
            n_calib = (w.valid_end - w.calib_start) // HOUR + 1
            assert abs(n_calib - settings.train.calibration_share * n_valid) <= 1
            # the recorded row counts are the eligible rows inside each part
            counted = {
                "fit": int(((t >= w.train_start) & (t <= w.train_end)).sum()),
                "early_stopping": int(((t >= w.valid_start) & (t <= w.stop_end)).sum()),
                "calibration": int(((t >= w.calib_start) & (t <= w.valid_end)).sum()),
            }
            assert {k: record["rows"][k] for k in counted} == counted
        # the final model's validation tail is the most recent labelled history
        final = FinalWindow.from_json(config["final_model"]["windows"])
        assert final.valid_end == t.max() and final.train_start == t.min()  # expanding
        assert config["walk_forward"]["calibration_share"] == 0.5
        assert config["leakage_checks"]["validation_parts_disjoint"]
        assert config["leakage_checks"]["purge_ok"]


@pytest.fixture(scope="module")
def fold_zero(trained):
    """The confluence model's panel, fold 0's rows and its members fitted on them."""
    root, settings, _, _ = trained
    spec = train._spec("confluence", settings)
    panel = load_panel(settings, min_history_bars=spec.min_history_bars)
    usable = panel.tradeable & panel.labelled
    lay = layout(panel.times[usable], panel.step_ms, panel.horizon, settings.train)
    rows = train._window_rows(panel, lay.folds[0], "fold 1")
    device = choose_device("cpu")

    def fit(p):
        return train._fit_members(spec, settings, p, p.runs(), rows, device, train.Progress(), "t")

    return panel, rows, fit, fit(panel)


def test_calibration_is_fitted_on_the_calibration_rows_alone(fold_zero) -> None:
    from dataclasses import replace

    panel, rows, fit, members = fold_zero
    runs = panel.runs()
    raw = {
        "xgboost": lambda m, r: m["xgboost"].predict(panel.X[r]),
        "lstm": lambda m, r: m["lstm"].predict(panel.X, runs, r),
    }
    for name, predict in raw.items():
        params = members[f"{name}_calibration"]
        on_calib = fit_platt(predict(members, rows.calib), panel.y[rows.calib])
        np.testing.assert_allclose(params, on_calib, rtol=0, atol=1e-9)
        on_stop = fit_platt(predict(members, rows.stop), panel.y[rows.stop])
        assert not np.allclose(params, on_stop, atol=1e-3)  # the check can tell them apart
    # other labels on the calibration rows: the same trees and epoch, another calibration
    y = panel.y.copy()
    y[rows.calib] = 1.0 - y[rows.calib]
    other = fit(replace(panel, y=y))
    assert other["xgboost"].best_iteration == members["xgboost"].best_iteration
    assert other["lstm"].best_epoch == members["lstm"].best_epoch
    for name, predict in raw.items():
        np.testing.assert_array_equal(predict(other, rows.calib), predict(members, rows.calib))
        assert not np.allclose(other[f"{name}_calibration"], members[f"{name}_calibration"])
        for lstm in (other.get("lstm"), members.get("lstm")):
            lstm.release()


def test_the_final_model_records_its_own_validation_figures(trained) -> None:
    root, settings, _, _ = trained
    features = pd.read_parquet(DataPaths.at(root).features("1h"))
    for name in ("confluence", "aster_native"):
        predictor = load(settings, name)
        config = predictor.config
        final = config["final_model"]
        w = FinalWindow.from_json(final["windows"])
        frame = features[features["symbol"].isin(config["symbols"])]
        out = predictor.predict(frame, raw=True)
        rows = eligible_rows(root, config["symbols"], config["label"]["target"])
        calib = rows[(rows["t"] >= w.calib_start) & (rows["t"] <= w.valid_end)]
        stop = rows[(rows["t"] >= w.valid_start) & (rows["t"] <= w.stop_end)]
        assert len(calib) == final["rows"]["calibration"] > 0
        y = calib[["y_long", "y_short"]].to_numpy()
        members = ["xgboost", "lstm"] if name == "confluence" else ["xgboost"]
        for member in members:
            # its calibration is the Platt fit of the saved member on these rows alone
            cols = [f"{member}_raw_long", f"{member}_raw_short"]
            refit = fit_platt(out.loc[calib.index, cols].to_numpy(), y)
            stored = config["members"][member]["calibration_platt"]
            assert stored == final["calibration_platt"][member]
            np.testing.assert_allclose(refit, stored, rtol=1e-4, atol=1e-4)
            y_stop = stop[["y_long", "y_short"]].to_numpy()
            elsewhere = fit_platt(out.loc[stop.index, cols].to_numpy(), y_stop)
            assert not np.allclose(elsewhere, stored, atol=1e-3)
        for model, prefix in [("model", "p"), *((m, m) for m in members)]:
            for j, direction in enumerate(("long", "short")):
                p = out.loc[calib.index, f"{prefix}_{direction}"].to_numpy()
                got = metrics.classification(p, y[:, j], settings.train.threshold)
                want = final["validation"][model][direction]
                assert got["rows"] == want["rows"]
                assert got["positive_rate"] == pytest.approx(want["positive_rate"], abs=1e-6)
                assert got["auc"] == pytest.approx(want["auc"], abs=1e-4)
                assert got["log_loss"] == pytest.approx(want["log_loss"], abs=1e-5)
        # the trees and the epoch it ships with are the ones early stopping chose
        assert config["members"]["xgboost"]["best_iteration"] + 1 == final["xgboost_trees"]
        assert predictor.xgboost.booster.num_boosted_rounds() == final["xgboost_trees"]
        if name == "confluence":
            assert config["members"]["lstm"]["best_epoch"] == final["lstm_best_epoch"]


def test_a_final_calibration_tail_with_one_class_is_a_clear_error(fold_zero, trained, tmp_path):
    from dataclasses import replace

    from asterai.models.errors import TrainingError

    root, settings, _, _ = trained
    panel = fold_zero[0]
    copy = copy_root(root, tmp_path / "one-class-tail")
    before = folder_hashes(DataPaths.at(copy).confluence_models)
    usable = panel.tradeable & panel.labelled
    final = layout(panel.times[usable], panel.step_ms, panel.horizon, settings.train).final
    y = panel.y.copy()
    tail = (panel.times >= final.calib_start) & usable
    y[tail, 0] = 0.0  # no long trade reaches its target in the last days
    with pytest.raises(TrainingError, match=r"the final model: the calibration .* rows hold "
                       r"only one class for long trades"):  # fmt: skip
        walk_forward("confluence", settings_for(copy), panel=replace(panel, y=y))
    assert folder_hashes(DataPaths.at(copy).confluence_models) == before


def test_a_model_that_learned_almost_nothing_says_so(trained) -> None:
    _, settings, confluence, native = trained
    floor_trees, floor_epochs = settings.train.min_median_trees, settings.train.min_median_epochs
    for result in (confluence, native):
        config = result.config
        check = config["learning_check"]
        trees = [f["xgboost_trees"] for f in config["metrics"]["per_fold"]]
        epochs = [f["lstm_epochs"] for f in config["metrics"]["per_fold"]]
        final = config["final_model"]
        assert check["xgboost_trees"] == {
            "folds": trees, "median": float(np.median(trees)), "final": final["xgboost_trees"]
        }  # fmt: skip
        assert check["lstm_epochs"]["folds"] == epochs
        assert check["lstm_epochs"]["final"] == final["lstm_epochs"]
        below = np.median(trees) < floor_trees or final["xgboost_trees"] < floor_trees
        if result is confluence:
            assert all(e == f["lstm_best_epoch"] + 1 for e, f in zip(
                epochs, config["metrics"]["per_fold"], strict=True))  # fmt: skip
            below |= np.median(epochs) < floor_epochs or final["lstm_epochs"] < floor_epochs
        assert check["near_constant"] == below
        warning = [w for w in result.warnings if "learned almost nothing on validation" in w]
        assert len(warning) == int(below) and set(warning) <= set(config["warnings"])
        if warning and (np.median(trees) < floor_trees or final["xgboost_trees"] < floor_trees):
            assert f"kept {', '.join(map(str, trees))} trees in folds 1-{len(trees)}" in warning[0]
            assert f"and {final['xgboost_trees']} in the final model" in warning[0]
    # the floors by hand: a model whose median is above them is not flagged, one below is
    from types import SimpleNamespace

    def fold(i: int, trees: int, epochs: int) -> SimpleNamespace:
        return SimpleNamespace(fold=SimpleNamespace(fold=i), members={
            "xgboost_trees": trees, "lstm_epochs": epochs, "xgboost_calibration_platt": [
            [1.0, 0.0], [1.0, 0.0]], "lstm_calibration_platt": [[1.0, 0.0], [1.0, 0.0]]},
        )  # fmt: skip

    final = {"xgboost_trees": 50, "lstm_best_epoch": 2, "lstm_epochs": 3,
             "rows": {"calibration": 10},
             "calibration_platt": {"xgboost": [[1.0, 0.0], [0.5, 0.0]]}}  # fmt: skip
    preds = {"xgboost_raw": np.full((10, 2), 0.4), "model": np.full((10, 2), 0.4)}
    learned = [fold(0, 2, 1), fold(1, 40, 3), fold(2, 45, 4)]  # one bad fold, median fine
    check, warnings = summary.learning_check(learned, final, preds, 10, 10, 2)
    assert warnings == [] and not check["near_constant"]
    stuck = [fold(0, 2, 1), fold(1, 3, 1), fold(2, 45, 4)]  # median 3 trees, 1 epoch
    check, warnings = summary.learning_check(stuck, final, preds, 10, 10, 2)
    assert check["near_constant"] and check["xgboost_below_floor"] == {
        "median": True, "final": False}  # fmt: skip
    assert "kept 2, 3, 45 trees in folds 1-3 (median 3)" in warnings[0]
    assert "the LSTM kept 1, 1, 4 epochs in folds 1-3 (median 1)" in warnings[0]
    final["calibration_platt"]["xgboost"][1][0] = 0.0  # flattened by fit_platt
    check, warnings = summary.learning_check(learned, final, preds, 10, 10, 2)
    assert check["calibration_flattened"] == ["the final model xgboost short"]
    assert "never reverses a ranking" in warnings[0]


def test_a_calibration_never_reverses_a_ranking(prepared) -> None:
    from asterai.models.calibration import apply_platt, fit_platt, flattened

    # a real score and its mirror image on the recording's real outcomes: whichever ranks
    # them the wrong way round
    frame = pd.read_parquet(DataPaths.at(prepared).features("1h"), columns=["rsi_14", "label_tb"])
    frame = frame.dropna()
    y = (frame["label_tb"].to_numpy() > 0).astype(float)[:, None]
    score = (frame["rsi_14"].to_numpy() / 100.0)[:, None]
    forward = fit_platt(score, y)
    backward = fit_platt(1.0 - score, y)
    # one of the two ranks the outcomes the wrong way round: it is flattened to the base
    # rate, never turned around; the other keeps a positive slope
    assert sorted(flattened(forward) + flattened(backward)) == [False, True]
    flat = forward if flattened(forward)[0] else backward
    p = apply_platt(score, flat)
    assert np.allclose(p, y.mean())
    kept = backward if flat is forward else forward
    assert kept[0][0] > 0


def test_rolling_windows_keep_the_first_training_length(prepared, tmp_path) -> None:
    root = copy_root(prepared, tmp_path / "rolling")
    result = walk_forward("aster_native", settings_for(root, scheme="rolling"))
    folds = [r.fold for r in result.folds]
    spans = [f.valid_end - f.train_start for f in folds]
    assert max(spans) - min(spans) <= HOUR  # one training length, moving forward
    assert folds[1].train_start > folds[0].train_start
    assert result.config["leakage_checks"]["purge_ok"]


def test_a_single_class_fold_is_a_clear_error(prepared, tmp_path) -> None:
    # an absurd target (60 ATR) that no trade reaches in a month: one class everywhere
    from asterai.models.errors import TrainingError

    root = copy_root(prepared, tmp_path / "one-class")
    settings = load_settings(
        root, features={"tp_atr": 60.0}, train={**SMALL, "target": "triple_barrier"}
    )
    run_features(settings, plots=False)
    with pytest.raises(TrainingError, match=r"only one class .* trades"):
        walk_forward("aster_native", settings)
    assert not DataPaths.at(root).aster_native_models.exists()


def test_a_feature_missing_in_a_training_window_is_dropped_and_recorded(trained) -> None:
    _, _, confluence, _ = trained
    # the recording has no funding history: the funding columns are all NaN
    for fold in confluence.config["metrics"]["per_fold"]:
        assert {"funding_rate", "funding_rate_change"} <= set(fold["lstm_dropped_columns"])
    assert "funding_rate" in confluence.config["members"]["lstm"]["input"]["dropped"]


# -- models that learn something: the stopping score, the targets, the members --------


def test_early_stopping_on_auc_ignores_a_shift_of_the_validation_base_rate(fold_zero) -> None:
    """The market moves and a validation week holds twice the long targets of training's:
    the stopping round on AUC does not move (log loss's scores do).

    The shift: every long-positive row of the early-stopping part appears k times in a
    copy of it (k as small as makes long targets more than 55% of its rows), while the
    ordering of positives against negatives (all AUC reads) is unchanged. One output (the
    long direction), so that the copy changes nothing else.
    """
    from asterai.models.scoring import Scorer
    from asterai.models.xgb import XGBMember

    panel, rows, _, _ = fold_zero
    fit, stop = rows.fit, rows.stop
    y_long = panel.y[:, :1]
    positive = stop[y_long[stop, 0] == 1]
    rate = y_long[stop].mean()
    k = int(np.ceil((0.55 / 0.45) * (1 - rate) / rate))  # k p / (k p + 1 - p) > 0.55
    shifted = np.concatenate([stop, *([positive] * (k - 1))])
    assert rate < 0.45 < 0.55 < y_long[shifted].mean()  # the base rate flipped
    xs = load_settings(Path(".")).train.xgboost.model_copy(
        update={"n_estimators": 150, "early_stopping_rounds": 150, "objective": "binary"}
    )  # the whole curve, of the logistic member (a ranking score has no log loss)

    def stopped(metric: str, valid: np.ndarray) -> XGBMember:
        scorer = Scorer(metric, y_long[valid], panel.fwd[valid], panel.times[valid])
        return XGBMember(xs, "cpu", 0).fit(
            panel.X[fit], y_long[fit], panel.times[fit], panel.X[valid], scorer
        )

    plain, copy = stopped("auc", stop), stopped("auc", shifted)
    np.testing.assert_allclose(copy.curve, plain.curve, rtol=0, atol=1e-12)
    assert copy.best_iteration == plain.best_iteration
    assert len(set(np.round(plain.curve, 6))) > 10  # the curve really moves round by round
    # the same shift moves every log-loss score: the test can tell a base-rate-blind metric
    loss_plain, loss_copy = stopped("logloss", stop), stopped("logloss", shifted)
    assert np.abs(np.subtract(loss_copy.curve, loss_plain.curve)).min() > 1e-3


def test_the_stopping_scores_are_the_metrics_reported(fold_zero) -> None:
    """The per-bar IC that stops training is the IC the report shows, bar by bar by hand."""
    from scipy.stats import spearmanr

    from asterai.models.scoring import Scorer

    panel, rows, _, members = fold_zero
    stop = rows.stop
    p = members["xgboost"].predict(panel.X[stop])
    ic = Scorer("ic", panel.y[stop], panel.fwd[stop], panel.times[stop])(p)
    by_hand = []
    for sign, j in ((1.0, 0), (-1.0, 1)):
        per_bar = []
        for t in np.unique(panel.times[stop]):
            at = panel.times[stop] == t
            o, s = sign * panel.fwd[stop][at], p[at, j]
            ok = np.isfinite(o)
            if ok.sum() >= 3:
                r = spearmanr(s[ok], o[ok]).statistic
                per_bar.append(0.0 if not np.isfinite(r) else r)
        by_hand.append(np.mean(per_bar))
    assert ic == pytest.approx(np.mean(by_hand), abs=1e-12)
    reported = metrics.evaluate(
        p, panel.y[stop], panel.fwd[stop], panel.times[stop], 0.5, panel.horizon
    )
    auc = Scorer("auc", panel.y[stop], panel.fwd[stop], panel.times[stop])(p)
    assert auc == pytest.approx((reported["long"]["auc"] + reported["short"]["auc"]) / 2, abs=1e-12)
    # ties too: a two-tree model's outputs take few values; its AUC is scikit-learn's
    coarse = np.round(p, 2)
    assert len(np.unique(coarse[:, 0])) < len(coarse) / 10
    from sklearn.metrics import roc_auc_score

    want = np.mean([roc_auc_score(panel.y[stop][:, j], coarse[:, j]) for j in range(2)])
    got = Scorer("auc", panel.y[stop], panel.fwd[stop], panel.times[stop])(coarse)
    assert got == pytest.approx(want, abs=1e-12)
    assert members["xgboost"].best_score == pytest.approx(
        Scorer(metrics_default(), panel.y[stop], panel.fwd[stop], panel.times[stop])(p), abs=1e-12
    )


def metrics_default() -> str:
    return load_settings(Path(".")).train.stopping_metric


def test_the_ic_t_statistic_allows_for_overlapping_outcomes(prepared) -> None:
    """Each bar's outcome reads the next 24 bars, so neighbouring bars' ICs move together.

    A real per-bar IC series (a real feature's ranks against the real forward returns):
    its overlap-adjusted t over one bar is the plain one (ddof 0); and a series in which
    every bar's IC is repeated 24 times, as if 24 bars had seen the same move, gets about
    the t of the series itself over a 24-bar horizon, while the naive t grows by sqrt(24).
    """
    from asterai.models.scoring import PerBarIC

    settings = settings_for(prepared)
    panel = load_panel(settings, min_history_bars=1)
    ok = panel.tradeable & np.isfinite(panel.fwd)
    j = panel.features.index("xs_rank_ret_24")
    per_bar = PerBarIC(np.where(ok, panel.fwd, np.nan), panel.times).per_bar(panel.X[:, j])
    x = per_bar[np.isfinite(per_bar)][::24]  # about one independent draw per horizon
    assert len(x) > 20
    n = len(x)
    naive = x.mean() / x.std(ddof=1) * np.sqrt(n)
    assert metrics.overlap_t(x, 1) == pytest.approx(naive * np.sqrt(n / (n - 1)))
    repeated = np.repeat(x, 24)
    inflated = repeated.mean() / repeated.std(ddof=1) * np.sqrt(len(repeated))
    assert inflated == pytest.approx(naive * np.sqrt(24), rel=0.05)
    adjusted = metrics.overlap_t(repeated, 24)
    # (not exactly: the block edges carry the series' own lag-1 autocorrelation)
    assert adjusted == pytest.approx(naive, rel=0.25) and abs(adjusted) < abs(inflated) / 3
    # and the report carries both, from the same per-bar series
    out = metrics.information_coefficient(panel.X[:, j], np.where(ok, panel.fwd, np.nan),
                                          panel.times, panel.horizon)  # fmt: skip
    kept = per_bar[np.isfinite(per_bar)]
    assert out["ic"] == pytest.approx(kept.mean()) and out["bars"] == len(kept)
    assert out["ic_t"] == pytest.approx(metrics.overlap_t(kept, panel.horizon))
    assert out["ic_t_naive"] == pytest.approx(kept.mean() / kept.std(ddof=1) * np.sqrt(len(kept)))


def test_the_cross_sectional_label_reads_only_its_own_bar(prepared) -> None:
    from asterai.features.labels import MIN_CROSS_SECTION, cross_sectional_labels
    from asterai.models.data import round_trip_cost

    settings = settings_for(prepared, target="cross_sectional")
    panel = load_panel(settings, min_history_bars=1)
    assert panel.target == "cross_sectional"
    cost = round_trip_cost(settings)
    assert cost == pytest.approx(2 * (settings.strategy.taker_fee + settings.strategy.slippage))
    eligible = panel.tradeable & np.isfinite(panel.fwd)
    # by hand, bar by bar: the median of the bar's tradeable rows, the cost either side
    checked = 0
    for t in np.unique(panel.times)[::7]:
        at = np.flatnonzero(panel.times == t)
        cross = at[eligible[at]]
        if len(cross) < MIN_CROSS_SECTION:
            assert np.isnan(panel.y[at]).all()  # too thin a cross-section: no label
            continue
        m = np.median(panel.fwd[cross])
        np.testing.assert_array_equal(panel.y[cross, 0], (panel.fwd[cross] - m > cost))
        np.testing.assert_array_equal(panel.y[cross, 1], (m - panel.fwd[cross] > cost))
        assert np.isnan(panel.y[np.setdiff1d(at, cross)]).all()  # not tradeable: no label
        checked += 1
    assert checked > 50
    # every other bar's returns scrambled: this bar's labels do not move
    rng = np.random.default_rng(0)
    for t in rng.choice(np.unique(panel.times), 20, replace=False):
        at = panel.times == t
        scrambled = panel.fwd.copy()
        scrambled[~at] = rng.permutation(scrambled[~at])
        np.testing.assert_array_equal(
            cross_sectional_labels(scrambled, panel.times, panel.tradeable, cost)[at], panel.y[at]
        )
    # the labels are the panel's (the same function, the same inputs)
    np.testing.assert_array_equal(
        cross_sectional_labels(panel.fwd, panel.times, panel.tradeable, cost), panel.y
    )
    # a market-wide move leaves it as it was: the label is relative to the bar's median
    shifted = panel.fwd + np.where(panel.times % (2 * HOUR) == 0, 0.05, -0.03)
    np.testing.assert_array_equal(
        cross_sectional_labels(shifted, panel.times, panel.tradeable, cost), panel.y
    )


def test_the_ranking_member_groups_rows_by_bar(fold_zero) -> None:
    from asterai.models.scoring import Scorer
    from asterai.models.xgb import XGBMember, ranking_matrix

    panel, rows, _, _ = fold_zero
    fit, stop = rows.fit, rows.stop
    matrix = ranking_matrix(panel.X[fit], panel.y[fit], panel.times[fit])
    # one query group per bar, in time order, each as large as the bar's cross-section
    ptr = matrix.get_uint_info("group_ptr")
    bars, counts = np.unique(panel.times[fit], return_counts=True)
    np.testing.assert_array_equal(np.diff(ptr), counts)
    order = np.argsort(panel.times[fit], kind="stable")
    relevance = matrix.get_label()
    np.testing.assert_array_equal(relevance, 1 + panel.y[fit][order, 0] - panel.y[fit][order, 1])
    assert set(np.unique(relevance)) == {0.0, 1.0, 2.0}  # short winner, neither, long winner
    # months of history cross a multiple of 2**32 ms (every 49.7 days; XGBoost keeps query
    # ids as 32-bit integers): the same rows with their clock moved to straddle one
    t = panel.times[fit]
    wrap = 2**32
    moved = t + ((int(np.median(t)) // wrap + 1) * wrap - int(np.median(t)))
    assert (moved.min() // wrap) != (moved.max() // wrap)
    across = ranking_matrix(panel.X[fit], panel.y[fit], moved)
    np.testing.assert_array_equal(across.get_uint_info("group_ptr"), ptr)
    xs = load_settings(Path(".")).train.xgboost.model_copy(
        update={"objective": "rank_pairwise", "n_estimators": 40}
    )
    scorer = Scorer("ic", panel.y[stop], panel.fwd[stop], panel.times[stop])
    ranker = XGBMember(xs, "cpu", 0).fit(
        panel.X[fit], panel.y[fit], panel.times[fit], panel.X[stop], scorer
    )
    raw = ranker.predict(panel.X[stop])
    np.testing.assert_allclose(raw[:, 0] + raw[:, 1], 1.0)  # one score: up for longs, down
    # it kept the round where the per-bar IC on the early-stopping rows was best
    assert ranker.best_score == pytest.approx(max(ranker.curve), abs=1e-6)
    assert ranker.curve.index(max(ranker.curve)) == ranker.best_iteration
    # train.xgboost.ranking_pairs = N samples N pairs per row instead of every pair of
    # the bar: another gradient (another model), the same one score per row
    sampled = XGBMember(xs.model_copy(update={"ranking_pairs": 4}), "cpu", 0)
    assert sampled.params()["lambdarank_pair_method"] == "mean"
    assert sampled.params()["lambdarank_num_pair_per_sample"] == 4
    assert "lambdarank_pair_method" not in ranker.params()
    sampled.fit(panel.X[fit], panel.y[fit], panel.times[fit], panel.X[stop], scorer)
    other = sampled.predict(panel.X[stop])
    np.testing.assert_allclose(other[:, 0] + other[:, 1], 1.0)
    assert not np.allclose(other, raw)


def test_the_lstm_joins_only_the_folds_where_it_beat_xgboost(trained) -> None:
    from asterai.models.calibration import apply_platt
    from asterai.models.inputs import blend

    root, settings, confluence, _ = trained
    frame = pd.read_parquet(DataPaths.at(root).predictions("confluence"))
    for record in confluence.config["metrics"]["per_fold"]:
        gate = record["lstm_gate"]
        assert record["lstm_in_ensemble"] == (
            gate["lstm"] is not None and gate["lstm"] > gate["xgboost"]
        )
        rows = frame[frame["fold"] == record["fold"]]
        raw_x = rows[["xgboost_raw_long", "xgboost_raw_short"]].to_numpy()
        raw_l = rows[["lstm_raw_long", "lstm_raw_short"]].to_numpy()
        px = apply_platt(raw_x, record["xgboost_calibration_platt"])
        pl = apply_platt(raw_l, record["lstm_calibration_platt"])
        weight = 0.4 if record["lstm_in_ensemble"] else 0.0
        want = blend(px, pl, 0.6, weight)
        np.testing.assert_allclose(rows[["p_long", "p_short"]].to_numpy(), want, atol=1e-6)
        if not record["lstm_in_ensemble"]:  # XGBoost alone, exactly
            np.testing.assert_allclose(rows[["p_long", "p_short"]].to_numpy(), px, atol=1e-6)
    ensemble = confluence.config["ensemble"]
    assert ensemble["lstm_in_ensemble"] == ensemble["lstm_gate"]["joined"]
    summary = confluence.config["training_summary"]
    assert summary["lstm_in_ensemble_folds"] == sum(
        r["lstm_in_ensemble"] for r in confluence.config["metrics"]["per_fold"]
    )


def test_the_training_summary_says_whether_the_model_learned(trained) -> None:
    _, settings, confluence, native = trained
    for result in (confluence, native):
        summary = result.config["training_summary"]
        per_fold = result.config["metrics"]["per_fold"]
        assert summary["stopping_metric"] == settings.train.stopping_metric
        assert summary["target"] == settings.train.target
        assert [f["xgboost_trees"] for f in summary["folds"]] == [
            r["xgboost_trees"] for r in per_fold
        ]
        assert summary["median_trees"] == np.median([r["xgboost_trees"] for r in per_fold])
        for f, r in zip(summary["folds"], per_fold, strict=True):
            for k in ("model", "logistic", "prior"):
                for d in ("long", "short"):
                    assert f[k][d]["auc"] == r["metrics"][k][d]["auc"]
                    assert f[k][d]["ic"] == r["metrics"][k][d]["ic"]
                    assert f[k][d]["ic_t"] == r["metrics"][k][d]["ic_t"]
        pooled = summary["pooled"]["model"]["long"]
        assert pooled["ic_t"] == result.overall["model"]["long"]["ic_t"]
        assert "mean_fold_ic" in pooled and "mean_fold_auc" in pooled


def test_kelly_sizing_refuses_a_cross_sectional_probability(trained) -> None:
    """Kelly reads p as the chance of reaching the target at the ATR odds; a probability
    of beating the bar's median is another number, and the backtest says so."""
    from asterai.backtest.inputs import BacktestInputError, load_inputs

    root, settings, confluence, _ = trained
    assert confluence.config["label"]["target"] == "cross_sectional"
    kelly = load_settings(root, train=SMALL, strategy={"kelly_fraction": 0.5})
    with pytest.raises(BacktestInputError, match=r"kelly_fraction = 0.5 .* train.target"):
        load_inputs(kelly, "confluence")
    assert len(load_inputs(settings, "confluence").times) > 0  # without Kelly it trades
