"""The newest bar's signals: live features through the exported model.

``LiveSignals`` is the one path from held bars to probabilities that the service and
paper trading share: the live features of the newest bar (``deploy.live``), then the
ONNX model (``deploy.runtime``) on those rows, the LSTM reading each symbol's window of
the previous bars. Each bar's model inputs (the input matrix, the LSTM's scaled rows)
are kept for the window's length, so a new bar costs its own rows only; the numbers are
those of ``OnnxModel.predict`` on the same feature rows (``models.inputs``: the same
input matrix, scaling, calibration and blend), which ``tests/test_deploy_service.py``
and ``tests/test_deploy_live.py`` check against the batch table's predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from asterai.deploy.live import LiveFeatures, NewestRows
from asterai.deploy.runtime import LSTM_BATCH, OnnxModel
from asterai.intervals import INTERVAL_MS
from asterai.models.inputs import combine, rows_matrix


@dataclass(frozen=True, slots=True)
class _BarInputs:
    pos: np.ndarray  # per held symbol (``LiveFeatures.symbols``): its row, -1 if absent
    X: np.ndarray  # the model's input matrix (float32)
    Z: np.ndarray | None  # the LSTM's scaled rows


class LiveSignals:
    """``newest()``: one row per symbol with the newest bar: ``symbol``, ``open_time``,
    ``p_long``, ``p_short`` and each member's calibrated output."""

    def __init__(self, live: LiveFeatures, model: OnnxModel) -> None:
        self.live = live
        self.model = model
        self.length = model.sequence_length
        if self.length > live.history:
            raise ValueError(
                f"the model reads {self.length} bars of features; the live features keep "
                f"{live.history} (LiveFeatures(history=...))"
            )
        self.step = INTERVAL_MS[model.inputs["label"]["base_interval"]]
        self._bars: dict[int, _BarInputs] = {}
        for rows in live.kept():
            self._keep(rows)

    def _keep(self, rows: NewestRows) -> _BarInputs:
        X = rows_matrix(self.model.inputs, rows.features, rows.values, rows.symbols)
        Z = self.model.prep.transform(X) if self.model.prep is not None else None
        pos = np.full(len(self.live.symbols), -1, dtype=np.int64)
        pos[[self.live.index[s] for s in rows.symbols]] = np.arange(len(rows.symbols))
        bar = _BarInputs(pos, X, Z)
        self._bars[rows.open_time] = bar
        for t in [t for t in self._bars if t <= rows.open_time - max(self.length, 1) * self.step]:
            del self._bars[t]
        return bar

    def newest(self) -> pd.DataFrame:
        return self.predict(self.live.newest())

    def predict(self, rows: NewestRows) -> pd.DataFrame:
        """The signals of ``rows`` (the live features' newest bar)."""
        bar = self._keep(rows)
        raw_x = self.model.raw_xgboost(bar.X)
        raw_l = None
        if bar.Z is not None:
            raw_l = np.full((len(rows.symbols), 2), np.nan)
            chain = [self._bars.get(rows.open_time - k * self.step)
                     for k in range(self.length - 1, -1, -1)]  # fmt: skip
            if all(b is not None for b in chain):
                # a window: the symbol's row in each of the last `length` bars
                held = np.array([self.live.index[s] for s in rows.symbols])
                idx = np.stack([b.pos[held] for b in chain], axis=1)
                ok = np.flatnonzero((idx >= 0).all(axis=1))
                if len(ok):
                    windows = np.empty((len(ok), self.length, bar.Z.shape[1]), dtype=bar.Z.dtype)
                    for k in range(self.length):
                        windows[:, k] = chain[k].Z[idx[ok, k]]
                    session = self.model.sessions["lstm"]
                    for a in range(0, len(ok), LSTM_BATCH):
                        part = ok[a : a + LSTM_BATCH]
                        raw_l[part] = session.run(
                            ["raw"], {"windows": windows[a : a + LSTM_BATCH]}
                        )[0]
        m = self.model.manifest
        columns = combine(raw_x, raw_l, m["members"], m["ensemble"])
        stamp = pd.Timestamp(rows.open_time, unit="ms", tz="UTC")
        stamps = pd.DatetimeIndex(np.full(len(rows.symbols), stamp.asm8), tz="UTC").as_unit("ms")
        return pd.DataFrame({"symbol": rows.symbols, "open_time": stamps, **columns})
