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


def combine(
    raw_x: np.ndarray,
    raw_l: np.ndarray | None,
    members: dict[str, Any],
    ensemble: dict[str, Any],
    *,
    raw: bool = False,
) -> dict[str, np.ndarray]:
    """From the members' raw outputs ((rows, 2) each; the LSTM's NaN where a row has no
    window) to the output columns: ``p_long``, ``p_short``, each member's calibrated
    ``{member}_long`` / ``_short`` and with ``raw`` its raw ones (``{member}_raw_...``)."""
    px = apply_platt(raw_x, members["xgboost"]["calibration_platt"])
    out, raws, p = {"xgboost": px}, {"xgboost_raw": raw_x}, px
    if raw_l is not None:
        pl = apply_platt(raw_l, members["lstm"]["calibration_platt"])
        out["lstm"], raws["lstm_raw"] = pl, raw_l
        p = blend(px, pl, ensemble["xgboost_weight"], ensemble["lstm_weight"])
    columns = {"p_long": p[:, 0], "p_short": p[:, 1]}
    for member, values in (out | raws if raw else out).items():
        columns[f"{member}_long"], columns[f"{member}_short"] = values[:, 0], values[:, 1]
    return columns


def predict_frame(
    frame: pd.DataFrame,
    inputs: dict[str, Any],
    members: dict[str, Any],
    ensemble: dict[str, Any],
    xgboost_raw: Callable[[np.ndarray], np.ndarray],
    lstm_raw: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None,
    *,
    raw: bool = False,
    targets: np.ndarray | None = None,
) -> pd.DataFrame:
    """The ensemble's probabilities for the rows of ``frame``, in its index order: the
    inputs built from ``inputs`` (the model config's feature rules), each member's raw
    output from its callable (``xgboost_raw(X)``, ``lstm_raw(X, runs, rows)``: native
    models or ONNX graphs), calibrated with ``members``' Platt parameters and blended
    with ``ensemble``'s weights. ``raw``: also each member's output before calibration.
    ``targets``: a boolean mask over ``frame``'s rows to predict (the others are only
    the LSTM's history); every row when None."""
    if frame.empty:
        raise ValueError("no rows to predict")
    order = row_order(frame)
    # the inputs row by row in the frame's order, then sorted: cheaper than sorting the frame
    X = model_matrix(inputs, frame)[order]
    rows = np.arange(len(order)) if targets is None else np.flatnonzero(np.asarray(targets)[order])
    if not len(rows):
        raise ValueError("no rows to predict")
    raw_x = xgboost_raw(X[rows] if targets is not None else X)
    raw_l = None
    if lstm_raw is not None:
        runs = window_runs(
            inputs, frame["symbol"].to_numpy()[order], to_epoch_ms(frame["open_time"])[order]
        )
        raw_l = lstm_raw(X, runs, rows)
    columns = combine(raw_x, raw_l, members, ensemble, raw=raw)
    result = pd.DataFrame(columns, index=frame.index[order[rows]])
    wanted = frame.index if targets is None else frame.index[np.asarray(targets)]
    return result.loc[wanted]


def row_order(frame: pd.DataFrame) -> np.ndarray:
    """The positions that sort ``frame`` by (symbol, open time), the order a model reads."""
    # the symbols' ranks (codes of the sorted names) sort as the names do, and much faster
    codes = pd.factorize(frame["symbol"].to_numpy(), sort=True)[0]
    return np.lexsort((to_epoch_ms(frame["open_time"]), codes))


def model_matrix(config: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """float32 (rows, the config's features) for ``frame``'s rows, in its order."""
    base = [f for f in list(config["features"]) if not f.startswith("category_")]
    missing = [f for f in base if f not in frame]
    if missing:
        raise ValueError(f"the frame lacks the model's features {missing[:5]}")
    X = frame[base].to_numpy(dtype=np.float32, copy=True)
    if config.get("categories") is None:
        return matrix_of(config, base, X, None, None)
    age = frame[LISTING_AGE].to_numpy(dtype=float)
    return matrix_of(config, base, X, frame["symbol"].to_numpy(), age)


def rows_matrix(
    config: dict[str, Any], names: list[str], values: np.ndarray, symbols: list[str]
) -> np.ndarray:
    """``model_matrix`` for rows given as a matrix (``values``: rows x ``names``) and
    their symbols, as the live features hold them (no frame to build per bar)."""
    base = [f for f in list(config["features"]) if not f.startswith("category_")]
    where = {n: j for j, n in enumerate(names)}
    missing = [f for f in base if f not in where]
    if missing:
        raise ValueError(f"the rows lack the model's features {missing[:5]}")
    X = values[:, [where[f] for f in base]].astype(np.float32)
    if config.get("categories") is None:
        return matrix_of(config, base, X, None, None)
    age = values[:, where[LISTING_AGE]].astype(float)
    return matrix_of(config, base, X, np.asarray(symbols, dtype=object), age)


def matrix_of(
    config: dict[str, Any],
    base: list[str],
    X: np.ndarray,
    symbols: np.ndarray | None,
    age_h: np.ndarray | None,
) -> np.ndarray:
    """The model's input matrix from ``X`` (float32, rows x ``base``: the config's
    features without the categories, a copy it may change), the rows' symbols and
    listing ages (float64, hours; both needed only where the config has categories)."""
    categories = config.get("categories")
    cap = config.get("listing_age_cap_h")
    if cap is not None and LISTING_AGE in base:
        j = base.index(LISTING_AGE)
        X[:, j] = np.minimum(X[:, j], np.float32(cap))
    if categories is not None:
        static = dict(categories)
        unseen = set(symbols) - set(static)
        if unseen:  # a symbol the model never saw: classed the way training would
            from asterai.data.discovery import strip_multiplier

            majors = {m.upper() for m in config.get("majors") or ()}
            for s in unseen:
                coin = strip_multiplier(str(s).removesuffix("USDT")).upper()
                static[s] = "major" if coin in majors else "alt"
        onehot = category_columns(symbols, static, age_h, config["new_listing_hours"])
        X = np.hstack([X, onehot])
    return X


def window_runs(config: dict[str, Any], symbols: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Per row of rows sorted by :func:`row_order` (their ``symbols`` and open ``times``
    in ms): how many consecutive bars of its symbol end at it, itself included (a gap or
    a new symbol starts again at 1)."""
    code = pd.factorize(symbols)[0]
    step = INTERVAL_MS[config["label"]["base_interval"]]
    new = np.ones(len(times), dtype=bool)
    new[1:] = (code[1:] != code[:-1]) | (np.diff(times) != step)
    starts = np.flatnonzero(new)
    idx = np.arange(len(times))
    return idx - starts[np.searchsorted(starts, idx, side="right") - 1] + 1


#: rows per block of ``Prep.transform``
TRANSFORM_BLOCK = 65_536


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
        """One float32 array (rows, width): filled, standardised, indicators appended.
        In blocks of rows, so a training table never needs a second full-size copy."""
        out = np.empty((len(X), self.width), dtype=np.float32)
        fill = np.asarray(self.fill, dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        cols, flags, n = (
            np.asarray(self.columns),
            np.asarray(self.indicators, dtype=int),
            len(self.columns),
        )
        for a in range(0, len(X), TRANSFORM_BLOCK):
            block = X[a : a + TRANSFORM_BLOCK]
            part = block[:, cols].astype(np.float32, copy=False)
            out[a : a + TRANSFORM_BLOCK, :n] = (
                np.where(np.isfinite(part), part, fill) - mean
            ) / std
            if len(flags):
                out[a : a + TRANSFORM_BLOCK, n:] = ~np.isfinite(block[:, flags])
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
