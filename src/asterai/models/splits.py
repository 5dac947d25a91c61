"""Walk-forward folds as values: plain timestamps that are saved with the model.

Every boundary is an open time of the base interval, so all symbols share them. For
fold ``i`` of ``k`` the test windows tile the end of the span; the training window ends
``purge + embargo`` bars before its test window starts, where ``purge`` is the label
horizon plus one (a row's label reads bars ``t+1 .. t+horizon``, so a training row
``t`` with ``t + horizon >= test start`` would see test bars). The validation part (early
stopping, calibration) is the last ``valid_share`` of the training window, separated from
the rows fitted on by the same gap. Expanding windows start at the first bar; rolling
ones keep the first fold's training length.

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
#: Fewer days of history than this: the report warns that the sample is small.
SMALL_SAMPLE_DAYS = 60


class SplitError(ValueError):
    """Too little history for the requested folds; the message names the setting."""


@dataclass(frozen=True, slots=True)
class Fold:
    """Boundaries in epoch ms, each inclusive: fit on [train_start, train_end], stop early
    and calibrate on [valid_start, valid_end], evaluate on [test_start, test_end]."""

    fold: int
    train_start: int
    train_end: int
    valid_start: int
    valid_end: int
    test_start: int
    test_end: int

    def to_json(self) -> dict[str, Any]:
        return {k: (iso_ms(v) if k != "fold" else v) for k, v in asdict(self).items()} | {
            f"{k}_ms": v for k, v in asdict(self).items() if k != "fold"
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fold:
        return cls(
            data["fold"],
            *(
                int(data[f"{k}_ms"])
                for k in (
                    "train_start",
                    "train_end",
                    "valid_start",
                    "valid_end",
                    "test_start",
                    "test_end",
                )
            ),
        )


@dataclass(frozen=True, slots=True)
class Layout:
    folds: tuple[Fold, ...]
    step_ms: int
    gap_bars: int  # purge (horizon + 1) + embargo
    test_bars: int
    warnings: tuple[str, ...] = ()


def _train_parts(
    train_first: int, train_last: int, gap: int, ts: TrainSettings
) -> tuple[int, int, int] | None:
    """(fit_last, valid_first, valid_last) row indices of a training window, or None."""
    n_train = train_last - train_first + 1
    if n_train < ts.min_train_bars:
        return None
    n_valid = max(MIN_VALID_BARS, int(round(n_train * ts.valid_share)))
    valid_first = train_last - n_valid + 1
    fit_last = valid_first - gap
    if fit_last - train_first + 1 < MIN_VALID_BARS:
        return None
    return fit_last, valid_first, train_last


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
    fit_last, valid_first, valid_last = parts
    return Fold(
        i,
        int(grid[train_first]),
        int(grid[fit_last]),
        int(grid[valid_first]),
        int(grid[valid_last]),
        int(grid[test_first]),
        int(grid[test_last]),
    )


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
        if len(folds) == k:
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
            return Layout(tuple(folds), step_ms, gap, test_bars, tuple(warnings))
    raise SplitError(
        f"{n} bars are too few for even one fold: a test window of at least "
        f"{ts.test_bars or MIN_TEST_BARS} bars, a gap of {gap} bars (label horizon + 1 + "
        f"train.embargo_bars) and train.min_train_bars = {ts.min_train_bars}; collect more "
        "history or lower train.min_train_bars"
    )
