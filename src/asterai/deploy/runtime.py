"""The exported model, run with onnxruntime alone: no XGBoost, no PyTorch.

``OnnxModel(folder)`` reads ``models/{model}/onnx/manifest.json`` and its graphs and
gives the same ``predict(frame)`` as the native predictor (``models.registry``): the
inputs are built by the same code (``models.inputs``), the members' raw outputs come
from the graphs, then the Platt calibration and the ensemble's blend in numpy, with the
numbers the manifest carries. Each graph's file is checked against the manifest's
sha256 before it is loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asterai.models.inputs import Prep, predict_frame

MANIFEST = "manifest.json"
#: rows per LSTM call: bounds the window batch's memory (rows x steps x width floats)
LSTM_BATCH = 4096


class ExportMissing(FileNotFoundError):
    """No export (or a damaged one) where one was expected; the message says what to run."""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """An exported model, ready to predict; ``threads``: onnxruntime's threads per call."""

    def __init__(self, folder: str | Path, threads: int = 1) -> None:
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.exists():
            raise ExportMissing(f"{path} does not exist: run `asterai export-onnx` first")
        self.folder = folder
        self.manifest: dict[str, Any] = json.loads(path.read_text())
        self.inputs: dict[str, Any] = self.manifest["inputs"]
        members = self.manifest["members"]
        self.sessions: dict[str, Any] = {}
        for name, member in members.items():
            graph = folder / member["file"]
            if not graph.exists() or sha256_file(graph) != member["sha256"]:
                raise ExportMissing(
                    f"{graph} is missing or is not the file its manifest names "
                    "(sha256 differs): run `asterai export-onnx` again"
                )
            self.sessions[name] = _session(graph, threads)
        self.prep = Prep(**members["lstm"]["prep"]) if "lstm" in members else None

    @property
    def features(self) -> list[str]:
        return list(self.inputs["features"])

    def raw_xgboost(self, X: np.ndarray) -> np.ndarray:
        out = self.sessions["xgboost"].run(["raw"], {"features": X})[0]
        return out.astype(float)

    @property
    def sequence_length(self) -> int:
        """Bars of history the LSTM reads per row (0 without an LSTM member)."""
        lstm = self.manifest["members"].get("lstm")
        return int(lstm["sequence_length"]) if lstm else 0

    def raw_lstm(self, X: np.ndarray, runs: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(rows), 2) raw probabilities for ``rows`` of ``X``, each reading its
        previous rows; NaN where a row has no full window."""
        assert self.prep is not None
        length = self.sequence_length
        out = np.full((len(rows), 2), np.nan)
        ok = np.flatnonzero(runs[rows] >= length)
        if len(ok) == 0:
            return out
        Z = self.prep.transform(X)
        offsets = np.arange(-length + 1, 1)
        session = self.sessions["lstm"]
        for start in range(0, len(ok), LSTM_BATCH):
            part = ok[start : start + LSTM_BATCH]
            windows = Z[rows[part][:, None] + offsets]
            out[part] = session.run(["raw"], {"windows": windows})[0]
        return out

    def predict(
        self, frame: pd.DataFrame, *, raw: bool = False, targets: np.ndarray | None = None
    ) -> pd.DataFrame:
        """``p_long``, ``p_short`` and each member's calibrated output for every row of
        ``frame`` (``symbol``, ``open_time``, the features; the LSTM reads each row's
        previous bars from the same frame), in its index order; ``targets``: a boolean
        mask of the rows to predict, the others being history only."""
        return predict_frame(
            frame, self.inputs, self.manifest["members"], self.manifest["ensemble"],
            self.raw_xgboost, self.raw_lstm if self.prep is not None else None, raw=raw,
            targets=targets,
        )  # fmt: skip
