"""Walk-forward folds as values: plain timestamps that are saved with the model.

Every boundary is an open time of the base interval, so all symbols share them. For
fold ``i`` of ``k`` the test windows tile the end of the span; the training window ends
``purge + embargo`` bars before its test window starts, where ``purge`` is the label
horizon plus one (a row's label reads bars ``t+1 .. t+horizon``, so a training row
``t`` with ``t + horizon >= test start`` would see test bars). The validation part is
the last ``valid_share`` of the training window, separated from the rows fitted on by
the same gap, and split in two by time: first the early-stopping part (XGBoost's tree
count, the LSTM's epoch), then the calibration part (the last ``calibration_share`` of
the validation window, where the Platt calibration is fitted and the validation figures
are measured). The two parts are adjacent and never share a bar. Expanding windows
start at the first bar; rolling ones keep the first fold's training length.

The final model's window (``Layout.final``) is laid out by the same rule as a fold whose
test window is the future: its training window ends at the last labelled bar, so its
validation tail is the most recent history and its fitting rows end a gap before it.

``layout`` adapts to the history available: unless the test length is set, the test
windows cover ``test_share`` of the span; when the first training window would be
shorter than ``min_train_bars``, the default number of folds shrinks (with a warning)
down to one, and an explicit request that does not fit is an error naming the setting.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from asterai.config import TrainSettings
from asterai.intervals import iso_ms

log = logging.getLogger(__name__)

MIN_TEST_BARS = 24
MIN_VALID_BARS = 24
#: Each part of a validation window (early stopping, calibration) spans at least this.
MIN_PART_BARS = MIN_VALID_BARS // 2
#: Fewer days of history than this: the report warns that the sample is small.
SMALL_SAMPLE_DAYS = 60

_WINDOW_KEYS = ("train_start", "train_end", "valid_start", "stop_end", "calib_start", "valid_end")


class SplitError(ValueError):
    """Too little history for the requested folds; the message names the setting."""


def _to_json(window: Any) -> dict[str, Any]:
    values = {k: v for k, v in asdict(window).items() if k != "fold"}
    head = {"fold": window.fold} if hasattr(window, "fold") else {}
    return (
        head | {k: iso_ms(v) for k, v in values.items()} | {f"{k}_ms": v for k, v in values.items()}
    )


@dataclass(frozen=True, slots=True)
class Fold:
    """Boundaries in epoch ms, each inclusive: fit on [train_start, train_end]; validate
    on [valid_start, valid_end], which is the early-stopping part [valid_start, stop_end]
    followed by the calibration part [calib_start, valid_end]; evaluate on [test_start,
    test_end]."""

    fold: int
    train_start: int
    train_end: int
    valid_start: int
    stop_end: int
    calib_start: int
    valid_end: int
    test_start: int
    test_end: int

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fold:
        keys = (*_WINDOW_KEYS, "test_start", "test_end")
        return cls(data["fold"], *(int(data[f"{k}_ms"]) for k in keys))


@dataclass(frozen=True, slots=True)
class FinalWindow:
    """The final model's windows, laid out like a fold's (same fields, inclusive epoch
    ms) with the future as its test window: no test rows."""

    train_start: int
    train_end: int
    valid_start: int
    stop_end: int
    calib_start: int
    valid_end: int

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FinalWindow:
        return cls(*(int(data[f"{k}_ms"]) for k in _WINDOW_KEYS))


@dataclass(frozen=True, slots=True)
class Layout:
    folds: tuple[Fold, ...]
    step_ms: int
    gap_bars: int  # purge (horizon + 1) + embargo
    test_bars: int
    final: FinalWindow
    warnings: tuple[str, ...] = ()


def _train_parts(
    train_first: int, train_last: int, gap: int, ts: TrainSettings
) -> tuple[int, int, int, int, int] | None:
    """(fit_last, valid_first, stop_last, calib_first, valid_last) row indices of a
    training window, or None when it is too short."""
    n_train = train_last - train_first + 1
    if n_train < ts.min_train_bars:
        return None
    n_valid = max(MIN_VALID_BARS, int(round(n_train * ts.valid_share)))
    n_calib = min(
        max(MIN_PART_BARS, int(round(n_valid * ts.calibration_share))), n_valid - MIN_PART_BARS
    )
    valid_first = train_last - n_valid + 1
    calib_first = train_last - n_calib + 1
    fit_last = valid_first - gap
    if fit_last - train_first + 1 < MIN_VALID_BARS:
        return None
    return fit_last, valid_first, calib_first - 1, calib_first, train_last


def _fold(
    i: int,
    grid: np.ndarray,
    test_first: int,
    test_last: int,
    train_first: int,
    gap: int,
    ts: TrainSettings,
) -> Fold | None:
    parts = _train_parts(train_first, test_first - gap, gap, ts)
    if parts is None:
        return None
    return Fold(
        i,
        int(grid[train_first]),
        *(int(grid[j]) for j in parts),
        int(grid[test_first]),
        int(grid[test_last]),
    )


def _final(grid: np.ndarray, folds: list[Fold], gap: int, ts: TrainSettings) -> FinalWindow | None:
    """A fold whose test window starts a gap after the last labelled bar."""
    last = len(grid) - 1
    if ts.scheme == "rolling":
        span = folds[0].valid_end - folds[0].train_start
        train_first = int(np.searchsorted(grid, grid[last] - span))
    else:
        train_first = 0
    parts = _train_parts(train_first, last, gap, ts)
    if parts is None:
        return None
    return FinalWindow(int(grid[train_first]), *(int(grid[j]) for j in parts))


def layout(times: np.ndarray, step_ms: int, horizon: int, ts: TrainSettings) -> Layout:
    """Walk-forward folds over the sorted unique base-interval open times ``times``."""
    grid = np.arange(int(times.min()), int(times.max()) + step_ms, step_ms, dtype=np.int64)
    n = len(grid)
    gap = horizon + 1 + ts.embargo_bars
    explicit_folds = "folds" in ts.model_fields_set
    warnings: list[str] = []
    for k in range(ts.folds, 0, -1):
        test_bars = ts.test_bars or max(MIN_TEST_BARS, int(n * ts.test_share / k))
        first_test = n - k * test_bars
        folds: list[Fold] = []
        for i in range(k):
            test_first = first_test + i * test_bars
            test_last = min(n - 1, test_first + test_bars - 1)
            if ts.scheme == "rolling" and folds:
                span = folds[0].valid_end - folds[0].train_start
                train_first = int(np.searchsorted(grid, grid[test_first - gap] - span))
            else:
                train_first = 0
            if test_first - gap < 0:
                break
            fold = _fold(i, grid, test_first, test_last, train_first, gap, ts)
            if fold is None:
                break
            folds.append(fold)
        final = _final(grid, folds, gap, ts) if len(folds) == k else None
        if final is not None:
            if k < ts.folds:
                if explicit_folds:
                    raise SplitError(
                        f"{n} bars cannot hold train.folds = {ts.folds} folds of "
                        f"{test_bars} test bars after train.min_train_bars = "
                        f"{ts.min_train_bars}: lower train.folds, train.test_bars or "
                        "train.min_train_bars, or collect more history"
                    )
                warnings.append(
                    f"only {n} bars of history: {k} walk-forward fold(s) instead of "
                    f"{ts.folds}; the out-of-sample figures rest on few bars"
                )
            days = n * step_ms / 86_400_000
            if days < SMALL_SAMPLE_DAYS:
                warnings.append(
                    f"the sample is small ({n} bars, {days:.0f} days): treat every figure as a "
                    "rough hypothesis"
                )
            for w in warnings:
                log.warning(w)
            return Layout(tuple(folds), step_ms, gap, test_bars, final, tuple(warnings))
    raise SplitError(
        f"{n} bars are too few for even one fold: a test window of at least "
        f"{ts.test_bars or MIN_TEST_BARS} bars, a gap of {gap} bars (label horizon + 1 + "
        f"train.embargo_bars) and train.min_train_bars = {ts.min_train_bars}; collect more "
        "history or lower train.min_train_bars"
    )
