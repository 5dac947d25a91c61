"""The XGBoost member: one booster with one output per direction (long, short), or one
ranking score per bar.

``objective = "binary"``: ``binary:logistic`` with one output per direction.
``objective = "rank_pairwise"``: ``rank:pairwise`` over groups of one bar each (the
symbols' rows at one open time), relevance 2 for a row whose long label is 1, 0 for a
row whose short label is 1, else 1: one score that ranks the cross-section, high for
longs, low for shorts. Its raw output per direction is ``sigmoid(score)`` and
``sigmoid(-score)``, so the Platt calibration on ``logit(raw)`` is a logistic fit on the
score itself (``calibration.py``) and the two columns read like the binary member's.
``objective = "pseudohuber"`` / ``"squared"`` (``train.target = "r_multiple"``): one
regression output per direction fitting the net R-multiple (``reg:pseudohubererror``
with a slope of ``target.HUBER_SLOPE`` R, or ``reg:squarederror``); its raw output per
direction is ``sigmoid(predicted R)``, calibrated by the identity, so 0.5 is an expected
net R of 0 (``models/target.py``).

``hist`` trees, early stopping on the early-stopping part of the validation window by
``scoring.Scorer`` (AUC, per-bar IC or log loss, ``train.stopping_metric``), missing
values taken natively. After early stopping the booster keeps only its best
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
from asterai.models.scoring import Scorer
from asterai.models.target import HUBER_SLOPE, is_regression


class XGBMember:
    name = "xgboost"

    def __init__(self, settings: XGBoostSettings, device: str, seed: int, threads: int = 0) -> None:
        self.settings = settings
        self.threads = threads  # 0: XGBoost's default, every core
        self.device = device
        self.seed = seed
        self.booster: xgb.Booster | None = None
        self.best_iteration: int | None = None
        self.best_score: float | None = None
        self.curve: list[float] = []  # the validation score after each round
        self.seconds = 0.0

    @property
    def ranking(self) -> bool:
        return self.settings.objective == "rank_pairwise"

    @property
    def regression(self) -> bool:
        return is_regression(self.settings.objective)

    def params(self) -> dict[str, Any]:
        s = self.settings
        if s.objective == "pseudohuber":
            objective = {
                "objective": "reg:pseudohubererror",
                "huber_slope": HUBER_SLOPE,
                "multi_strategy": "one_output_per_tree",
            }
        elif s.objective == "squared":
            objective = {"objective": "reg:squarederror", "multi_strategy": "one_output_per_tree"}
        elif not self.ranking:
            objective = {"objective": "binary:logistic", "multi_strategy": "one_output_per_tree"}
        elif s.ranking_pairs == 0:
            # rank:pairwise's defaults pair every row with every other row of its bar
            # (pair method "topk" with no truncation): both tails of the ranking learn
            objective = {"objective": "rank:pairwise"}
        else:
            # N pairs drawn per row, against rows of other relevance in its bar
            objective = {
                "objective": "rank:pairwise",
                "lambdarank_pair_method": "mean",
                "lambdarank_num_pair_per_sample": s.ranking_pairs,
            }
        return {
            **objective,
            "tree_method": "hist",
            "device": self.device,
            "max_depth": s.max_depth,
            "eta": s.learning_rate,
            "subsample": s.subsample,
            "colsample_bytree": s.colsample_bytree,
            "min_child_weight": s.min_child_weight,
            "lambda": s.reg_lambda,
            "disable_default_eval_metric": 1,
            "seed": self.seed,
            "verbosity": 0,
            **({"nthread": self.threads} if self.threads else {}),
        }

    def _two_columns(self, out: np.ndarray, rows: int) -> np.ndarray:
        """(rows, outputs): long, short probabilities, the ranking score's sigmoid each
        way, or the predicted R's sigmoid."""
        out = np.asarray(out, dtype=float)
        if self.ranking:
            score = out.reshape(rows)
            return np.column_stack([_sigmoid(score), _sigmoid(-score)])
        if self.regression:
            return _sigmoid(out.reshape(rows, -1))
        return out.reshape(rows, -1)

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        times: np.ndarray,
        X_valid: np.ndarray,
        scorer: Scorer,
    ) -> XGBMember:
        """Fit on ``X``/``y`` (``times``: each row's bar, the ranking groups; ``y``: the
        net R-multiples for a regression objective, else 0/1 labels); stop early
        where ``scorer`` (the early-stopping rows, aligned with ``X_valid``) was best;
        the trees after the best round are dropped."""
        started = time.perf_counter()
        train = (
            ranking_matrix(X, y, times) if self.ranking else xgb.DMatrix(X, label=y, missing=np.nan)
        )
        valid = xgb.DMatrix(X_valid, missing=np.nan)
        rows = len(X_valid)

        def metric(predt: np.ndarray, _: xgb.DMatrix) -> tuple[str, float]:
            return scorer.name, scorer(self._two_columns(predt, rows))

        curve: dict[str, Any] = {}
        booster = xgb.train(
            self.params(),
            train,
            self.settings.n_estimators,
            evals=[(valid, "valid")],
            evals_result=curve,
            custom_metric=metric,
            maximize=True,
            early_stopping_rounds=self.settings.early_stopping_rounds,
            verbose_eval=False,
        )
        self.best_iteration = int(booster.best_iteration)
        # XGBoost logs a custom metric to six decimals: the curve is as it logged it, the
        # best score recomputed exactly on the kept trees
        self.curve = [float(v) for v in curve["valid"][scorer.name]]
        self.booster = booster[: self.best_iteration + 1]
        self.booster.set_attr(best_iteration=str(self.best_iteration))
        self.best_score = scorer(self.predict(X_valid))
        self.seconds = time.perf_counter() - started
        return self

    def _require(self) -> xgb.Booster:
        if self.booster is None:
            raise RuntimeError("the XGBoost member is not fitted")
        return self.booster

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Raw outputs, (rows, 2): long, short (probabilities, or the ranking score's
        sigmoid each way)."""
        booster = self._require()
        if len(X) == 0:
            return np.empty((0, 2))
        out = booster.predict(
            xgb.DMatrix(X, missing=np.nan), iteration_range=(0, self.best_iteration + 1)
        )
        return self._two_columns(out, len(X))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """SHAP values from XGBoost's ``pred_contribs``: (rows, 2, features + bias); a
        ranking score's contributions count for the long direction and, negated, for the
        short one."""
        booster = self._require()
        out = booster.predict(
            xgb.DMatrix(X, missing=np.nan),
            pred_contribs=True,
            iteration_range=(0, self.best_iteration + 1),
        )
        if self.ranking:
            return np.stack([out, -out], axis=1)
        return out

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


def ranking_matrix(X: np.ndarray, y: np.ndarray, times: np.ndarray) -> xgb.DMatrix:
    """The ranking member's training matrix: one query group per bar (rows sorted by
    time, so each group is contiguous, as XGBoost requires), relevance 2 where the long
    label is 1, 0 where the short label is 1, else 1."""
    order = np.argsort(times, kind="stable")
    relevance = 1.0 + y[order, 0] - y[order, 1]
    # the group of a row is its bar's rank among the bars, not its open time: XGBoost
    # keeps query ids as 32-bit integers, and epoch milliseconds wrap every 49.7 days
    _, group = np.unique(times[order], return_inverse=True)
    return xgb.DMatrix(X[order], label=relevance, qid=group.astype(np.uint32), missing=np.nan)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -500, 500)))
