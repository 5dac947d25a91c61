"""Training on the real recording: walk-forward folds, artifacts, loader, determinism."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from conftest import features_ready

from asterai.cli import main
from asterai.config import load_settings
from asterai.data.gate import GateRefused
from asterai.data.store import PROVENANCE_KEY, read_provenance, to_epoch_ms
from asterai.features.build import run_features
from asterai.models import load, metrics, train
from asterai.models.calibration import fit_platt
from asterai.models.data import load_panel
from asterai.models.device import choose_device
from asterai.models.splits import FinalWindow, Fold, SplitError, layout
from asterai.models.train import NEAR_CONSTANT_EPOCH, NEAR_CONSTANT_TREES, walk_forward
from asterai.paths import DataPaths

HOUR = 3_600_000
#: Small but real: every code path of the default layout, in seconds.
SMALL = {"folds": 3, "lstm": {"epochs": 2, "hidden_size": 16}, "xgboost": {"n_estimators": 60}}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, recording) -> Path:
    """A data root with every recorded symbol collected, gated and turned into features."""
    root = tmp_path_factory.mktemp("models")
    features_ready(root, recording)
    return root


def copy_root(src: Path, dest: Path) -> Path:
    shutil.copytree(src / "data", dest / "data")
    if (src / "models").exists():
        shutil.copytree(src / "models", dest / "models")
    return dest


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


def eligible_rows(root: Path, symbols: list[str]) -> pd.DataFrame:
    """Rows a model may fit, validate or score on, recomputed from the files: its symbols,
    tradeable in the universe, both labels defined."""
    features = pd.read_parquet(DataPaths.at(root).features("1h"))
    universe = pd.read_parquet(DataPaths.at(root).universe)
    merged = features.merge(universe, on=["symbol", "open_time"], how="left")
    keep = (
        merged["symbol"].isin(symbols)
        & merged["tradeable"].fillna(False).astype(bool)
        & merged["label_tb"].notna()
        & merged["label_tb_short"].notna()
    )
    out = merged[keep].copy()
    out["t"] = to_epoch_ms(out["open_time"])
    # the outcome the models predict: 1 when the target was reached first (label +1)
    out["y_long"] = (out["label_tb"] == 1).astype(float)
    out["y_short"] = (out["label_tb_short"] == 1).astype(float)
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
    assert config["ensemble"]["xgboost_weight"] == 0.6 and config["ensemble"]["lstm_weight"] == 0.4
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
    assert "out-of-sample walk-forward" in text
    assert "beats the logistic regression in" in text
    assert "leakage checks: purge 31 bars (needs 31)" in text
    # one LSTM epoch: its best epoch is 0 everywhere, and the summary says what that means
    assert "warning: the model learned almost nothing on validation" in text
    config = json.loads((DataPaths.at(copy).confluence_models / "ensemble_config.json").read_text())
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
        rows = eligible_rows(root, config["symbols"])
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
        rows = eligible_rows(root, config["symbols"])
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
    _, _, confluence, native = trained
    for result in (confluence, native):
        config = result.config
        check = config["learning_check"]
        trees = [f["xgboost_trees"] for f in config["metrics"]["per_fold"]]
        epochs = [f["lstm_best_epoch"] for f in config["metrics"]["per_fold"]]
        final = config["final_model"]
        assert check["xgboost_trees"] == {"folds": trees, "final": final["xgboost_trees"]}
        assert check["lstm_best_epoch"] == {"folds": epochs, "final": final["lstm_best_epoch"]}
        stopped = [t <= NEAR_CONSTANT_TREES for t in [*trees, final["xgboost_trees"]]] + [
            e is not None and e <= NEAR_CONSTANT_EPOCH for e in [*epochs, final["lstm_best_epoch"]]
        ]
        # on the one-month recording both members stop at once in some fold
        assert any(stopped) and check["near_constant"]
        warning = [w for w in result.warnings if "learned almost nothing on validation" in w]
        assert len(warning) == 1 and warning[0] in config["warnings"]
        text = warning[0]
        assert f"kept {', '.join(map(str, trees))} trees in folds 1-{len(trees)}" in text
        assert f"and {final['xgboost_trees']} in the final model" in text
        if result is confluence:
            assert f"best epoch was {', '.join(map(str, epochs))} in folds" in text
    # and a model that did learn is not flagged
    from types import SimpleNamespace

    fold = SimpleNamespace(
        fold=SimpleNamespace(fold=0),
        members={"xgboost_trees": 40, "lstm_best_epoch": 3, "xgboost_calibration_platt": [
            [1.0, 0.0], [1.0, 0.0]], "lstm_calibration_platt": [[1.0, 0.0], [1.0, 0.0]]},
    )  # fmt: skip
    final = {"xgboost_trees": 50, "lstm_best_epoch": 2, "rows": {"calibration": 10},
             "calibration_platt": {"xgboost": [[1.0, 0.0], [0.5, 0.0]]}}  # fmt: skip
    preds = {"xgboost_raw": np.full((10, 2), 0.4), "model": np.full((10, 2), 0.4)}
    check, warnings = train._learning_check([fold], final, preds, 10)
    assert warnings == [] and not check["near_constant"]
    final["calibration_platt"]["xgboost"][1][0] = 0.0  # flattened by fit_platt
    check, warnings = train._learning_check([fold], final, preds, 10)
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
    settings = load_settings(root, features={"tp_atr": 60.0}, train=SMALL)
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
