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
from asterai.models import load
from asterai.models.splits import Fold, SplitError
from asterai.models.train import walk_forward
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
    config = json.loads((DataPaths.at(copy).confluence_models / "ensemble_config.json").read_text())
    assert len(config["walk_forward"]["folds"]) == 2
    assert config["members"]["lstm"]["settings"]["epochs"] == 1
    bad = CliRunner().invoke(
        main, ["train", "confluence", "--data-root", str(copy), "--folds", "30"]
    )
    assert bad.exit_code == 2 and "train.folds = 30" in bad.output


def test_the_final_model_learns_from_every_row_with_what_evaluation_chose(trained) -> None:
    root, settings, confluence, _ = trained
    final = confluence.config["final_model"]
    usable = pd.read_parquet(DataPaths.at(root).universe)
    features = pd.read_parquet(
        DataPaths.at(root).features("1h"), columns=["symbol", "open_time", "label_tb"]
    )
    merged = features.merge(usable, on=["symbol", "open_time"])
    eligible = merged["tradeable"] & merged["label_tb"].notna()
    symbols = set(confluence.config["symbols"])
    assert final["rows"] == int((eligible & merged["symbol"].isin(symbols)).sum())
    best = [f["xgboost_best_iteration"] for f in confluence.config["metrics"]["per_fold"]]
    assert final["xgboost_trees"] == int(np.median(best)) + 1
    epochs = [f["lstm_best_epoch"] for f in confluence.config["metrics"]["per_fold"]]
    assert final["lstm_epochs"] == int(np.median(epochs)) + 1


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
