"""Loading a trained model: one predictor for the backtest, serving and paper trading.

``load(settings, "confluence")`` reads ``models/confluence/`` (XGBoost's JSON, the LSTM's
``state_dict`` with ``torch.load(weights_only=True)``, the JSON config: no pickle, nothing
executed) and returns a :class:`Predictor` whose ``predict(features)`` gives ``p_long``,
``p_short`` and each member's calibrated output, aligned to the rows given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asterai import atomic
from asterai.config import LSTMSettings, Settings, XGBoostSettings
from asterai.models.inputs import model_matrix, predict_frame
from asterai.models.lstm import LSTMMember
from asterai.models.xgb import XGBMember
from asterai.paths import DataPaths

CONFIG_FILES = {"confluence": "ensemble_config.json", "aster_native": "model_config.json"}


class ModelNotFound(FileNotFoundError):
    """No trained model at the expected path; the message says how to train one."""


@dataclass(slots=True)
class Predictor:
    name: str
    config: dict[str, Any]
    xgboost: XGBMember
    lstm: LSTMMember | None

    @property
    def features(self) -> list[str]:
        return list(self.config["features"])

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        return model_matrix(self.config, frame)

    def predict(
        self, frame: pd.DataFrame, *, raw: bool = False, targets: np.ndarray | None = None
    ) -> pd.DataFrame:
        """Probabilities for every row of ``frame`` (a features table: ``symbol``,
        ``open_time`` and the feature columns), in its index order.

        The LSTM reads each row's previous bars from the same frame, so pass the history
        along (rows without a full window get XGBoost alone, as in training). ``raw``:
        also each member's output before calibration (``{member}_raw_long``, ...), the
        values its Platt calibration was fitted on. ``targets``: a boolean mask of the
        rows to predict, the others being history only (all rows when None).
        """
        lstm = self.lstm.predict if self.lstm is not None else None
        return predict_frame(
            frame, self.config, self.config["members"], self.config.get("ensemble", {}),
            self.xgboost.predict, lstm, raw=raw, targets=targets,
        )  # fmt: skip


def load(settings: Settings | str | Path, name: str) -> Predictor:
    """The trained ``confluence`` or ``aster_native`` model of a data root."""
    from asterai.config import load_settings

    if not isinstance(settings, Settings):
        settings = load_settings(settings)
    if name not in CONFIG_FILES:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(CONFIG_FILES)}")
    folder = DataPaths.at(settings.data_root).models(name)
    atomic.recover_folder(folder)
    config_path = folder / CONFIG_FILES[name]
    if not config_path.exists():
        command = "confluence" if name == "confluence" else "aster-native"
        raise ModelNotFound(f"{config_path} does not exist: run `asterai train {command}` first")
    config = json.loads(config_path.read_text())
    xcfg = config["members"]["xgboost"]
    xgboost = XGBMember.load(
        folder / xcfg["file"], XGBoostSettings(**xcfg["settings"]), xcfg["best_iteration"]
    )
    lstm = None
    if "lstm" in config["members"]:
        import torch

        lcfg = config["members"]["lstm"]
        state = torch.load(folder / lcfg["file"], map_location="cpu", weights_only=True)
        lstm = LSTMMember.load(state, lcfg["input"], LSTMSettings(**lcfg["settings"]))
    return Predictor(name, config, xgboost, lstm)
