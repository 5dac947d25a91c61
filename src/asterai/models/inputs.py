"""A trained model's inputs from a features frame, without the models' libraries: the
feature matrix in the model's column order (the listing-age cap, the category one-hot),
the rows' order, each row's run of consecutive bars (the LSTM's windows) and the
ensemble's blend. The native predictor (``registry``) and the ONNX path
(``asterai.deploy``) both build their inputs here, so they cannot drift apart; it needs
neither XGBoost nor PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from asterai.data.store import to_epoch_ms
from asterai.intervals import INTERVAL_MS
from asterai.models.calibration import apply_platt
from asterai.models.data import LISTING_AGE, category_columns


def blend(px: np.ndarray, pl: np.ndarray | None, wx: float, wl: float) -> np.ndarray:
    """The ensemble: calibrated members averaged ``wx`` / ``wl``; XGBoost alone where the
    LSTM has no output (no full window), or everywhere when its weight is 0 (the LSTM did
    not beat XGBoost on validation, ``train.lstm_gate``)."""
    if pl is None or wl == 0:
        return px
    return np.where(np.isfinite(pl), (wx * px + wl * np.nan_to_num(pl)) / (wx + wl), px)


def predict_frame(
    frame: pd.DataFrame,
    inputs: dict[str, Any],
    members: dict[str, Any],
    ensemble: dict[str, Any],
    xgboost_raw: Callable[[np.ndarray], np.ndarray],
    lstm_raw: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    *,
    raw: bool = False,
) -> pd.DataFrame:
    """The ensemble's probabilities for every row of ``frame``, in its index order: the
    inputs built from ``inputs`` (the model config's feature rules), each member's raw
    output from its callable (``xgboost_raw(X)``, ``lstm_raw(X, runs)``: native models
    or ONNX graphs), calibrated with ``members``' Platt parameters and blended with
    ``ensemble``'s weights. ``raw``: also each member's output before calibration."""
    if frame.empty:
        raise ValueError("no rows to predict")
    ordered = frame.iloc[row_order(frame)]
    X = model_matrix(inputs, ordered)
    raw_x = xgboost_raw(X)
    px = apply_platt(raw_x, members["xgboost"]["calibration_platt"])
    out, raws, p = {"xgboost": px}, {"xgboost_raw": raw_x}, px
    if lstm_raw is not None:
        raw_l = lstm_raw(X, window_runs(inputs, ordered))
        pl = apply_platt(raw_l, members["lstm"]["calibration_platt"])
        out["lstm"], raws["lstm_raw"] = pl, raw_l
        p = blend(px, pl, ensemble["xgboost_weight"], ensemble["lstm_weight"])
    result = pd.DataFrame(index=ordered.index)
    result["p_long"], result["p_short"] = p[:, 0], p[:, 1]
    for member, values in (out | raws if raw else out).items():
        result[f"{member}_long"], result[f"{member}_short"] = values[:, 0], values[:, 1]
    return result.loc[frame.index]


def row_order(frame: pd.DataFrame) -> np.ndarray:
    """The positions that sort ``frame`` by (symbol, open time), the order a model reads."""
    return np.lexsort((to_epoch_ms(frame["open_time"]), frame["symbol"].to_numpy()))


def model_matrix(config: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """float32 (rows, the config's features) for ``frame``'s rows, in its order."""
    categories = config.get("categories")
    base = [f for f in list(config["features"]) if not f.startswith("category_")]
    missing = [f for f in base if f not in frame]
    if missing:
        raise ValueError(f"the frame lacks the model's features {missing[:5]}")
    X = frame[base].to_numpy(dtype=np.float32, copy=True)
    cap = config.get("listing_age_cap_h")
    if cap is not None and LISTING_AGE in base:
        j = base.index(LISTING_AGE)
        X[:, j] = np.minimum(X[:, j], np.float32(cap))
    if categories is not None:
        static = dict(categories)
        unseen = set(frame["symbol"].unique()) - set(static)
        if unseen:  # a symbol the model never saw: classed the way training would
            from asterai.data.discovery import strip_multiplier

            majors = {m.upper() for m in config.get("majors") or ()}
            for s in unseen:
                coin = strip_multiplier(str(s).removesuffix("USDT")).upper()
                static[s] = "major" if coin in majors else "alt"
        onehot = category_columns(
            frame["symbol"].to_numpy(),
            static,
            frame[LISTING_AGE].to_numpy(dtype=float),
            config["new_listing_hours"],
        )
        X = np.hstack([X, onehot])
    return X


def window_runs(config: dict[str, Any], ordered: pd.DataFrame) -> np.ndarray:
    """Per row of ``ordered`` (sorted by :func:`row_order`): how many consecutive bars of
    its symbol end at it, itself included (a gap or a new symbol starts again at 1)."""
    times = to_epoch_ms(ordered["open_time"])
    code = pd.factorize(ordered["symbol"])[0]
    step = INTERVAL_MS[config["label"]["base_interval"]]
    new = np.ones(len(times), dtype=bool)
    new[1:] = (code[1:] != code[:-1]) | (np.diff(times) != step)
    starts = np.flatnonzero(new)
    idx = np.arange(len(times))
    return idx - starts[np.searchsorted(starts, idx, side="right") - 1] + 1


@dataclass(frozen=True, slots=True)
class Prep:
    """The fold's fitted input transform (JSON-able)."""

    columns: list[int]  # kept feature columns
    fill: list[float]
    mean: list[float]
    std: list[float]
    indicators: list[int]  # columns with a missing-indicator input
    dropped: list[str]

    @classmethod
    def fit(cls, X: np.ndarray, features: list[str], indicator_share: float) -> Prep:
        """Fitted on ``X``, the fitting rows only; column by column, so no full-size copy."""
        columns, dropped, fill, mean, std, indicators = [], [], [], [], [], []
        for j, name in enumerate(features):
            col = X[:, j]
            present = np.isfinite(col)
            if not present.any():
                dropped.append(name)
                continue
            median = float(np.median(col[present]))
            filled = np.where(present, col, np.float32(median)).astype(np.float64)
            sd = float(filled.std())
            columns.append(j)
            fill.append(median)
            mean.append(float(filled.mean()))
            std.append(sd if sd > 1e-12 else 1.0)
            missing = 1.0 - float(present.mean())
            if missing > 0 and missing >= indicator_share:
                indicators.append(j)
        return cls(columns, fill, mean, std, indicators, dropped)

    @property
    def width(self) -> int:
        return len(self.columns) + len(self.indicators)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """One float32 array (rows, width): filled, standardised, indicators appended."""
        out = np.empty((len(X), self.width), dtype=np.float32)
        fill = np.asarray(self.fill, dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        for k, j in enumerate(self.columns):  # column by column: no second full-size copy
            col = X[:, j]
            out[:, k] = (np.where(np.isfinite(col), col, fill[k]) - mean[k]) / std[k]
        for k, j in enumerate(self.indicators, start=len(self.columns)):
            out[:, k] = ~np.isfinite(X[:, j])
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "fill": self.fill,
            "mean": self.mean,
            "std": self.std,
            "indicators": self.indicators,
            "dropped": self.dropped,
        }
