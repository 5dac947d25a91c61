"""The XGBoost member: one booster with one output per direction (long, short).

``hist`` trees, early stopping on the early-stopping part of the validation window,
missing values taken natively. After early stopping the booster keeps only its best
iteration's trees, so the saved file is exactly the model that was validated. Saved in
XGBoost's own JSON format (no pickle); the best iteration travels in the booster's
attributes and in the model config.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from asterai.config import XGBoostSettings


class XGBMember:
    name = "xgboost"

    def __init__(self, settings: XGBoostSettings, device: str, seed: int) -> None:
        self.settings = settings
        self.device = device
        self.seed = seed
        self.booster: xgb.Booster | None = None
        self.best_iteration: int | None = None
        self.seconds = 0.0

    def params(self) -> dict[str, Any]:
        s = self.settings
        return {
            "objective": "binary:logistic",
            "multi_strategy": "one_output_per_tree",
            "tree_method": "hist",
            "device": self.device,
            "max_depth": s.max_depth,
            "eta": s.learning_rate,
            "subsample": s.subsample,
            "colsample_bytree": s.colsample_bytree,
            "min_child_weight": s.min_child_weight,
            "lambda": s.reg_lambda,
            "eval_metric": "logloss",
            "seed": self.seed,
            "verbosity": 0,
        }

    def fit(
        self, X: np.ndarray, y: np.ndarray, X_valid: np.ndarray, y_valid: np.ndarray
    ) -> XGBMember:
        """Early stopping on the validation rows; the trees after the best are dropped."""
        started = time.perf_counter()
        train = xgb.DMatrix(X, label=y, missing=np.nan)
        valid = xgb.DMatrix(X_valid, label=y_valid, missing=np.nan)
        booster = xgb.train(
            self.params(),
            train,
            self.settings.n_estimators,
            evals=[(valid, "valid")],
            early_stopping_rounds=self.settings.early_stopping_rounds,
            verbose_eval=False,
        )
        self.best_iteration = int(booster.best_iteration)
        self.booster = booster[: self.best_iteration + 1]
        self.booster.set_attr(best_iteration=str(self.best_iteration))
        self.seconds = time.perf_counter() - started
        return self

    def _require(self) -> xgb.Booster:
        if self.booster is None:
            raise RuntimeError("the XGBoost member is not fitted")
        return self.booster

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Raw probabilities, (rows, 2): long, short."""
        booster = self._require()
        if len(X) == 0:
            return np.empty((0, 2))
        out = booster.predict(
            xgb.DMatrix(X, missing=np.nan), iteration_range=(0, self.best_iteration + 1)
        )
        return np.asarray(out, dtype=float).reshape(len(X), 2)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """SHAP values from XGBoost's ``pred_contribs``: (rows, 2, features + bias)."""
        booster = self._require()
        return booster.predict(
            xgb.DMatrix(X, missing=np.nan),
            pred_contribs=True,
            iteration_range=(0, self.best_iteration + 1),
        )

    def gain(self, features: list[str]) -> dict[str, float]:
        score = self._require().get_score(importance_type="gain")
        return {f: float(score.get(f"f{i}", score.get(f, 0.0))) for i, f in enumerate(features)}

    def save(self, path: Path) -> None:
        self._require().save_model(str(path))

    @classmethod
    def load(cls, path: Path, settings: XGBoostSettings, best_iteration: int) -> XGBMember:
        member = cls(settings, "cpu", 0)
        member.booster = xgb.Booster()
        member.booster.load_model(str(path))
        member.booster.set_param({"device": "cpu"})
        member.best_iteration = int(best_iteration)
        return member
