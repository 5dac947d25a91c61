"""Choosing the device: CUDA when both XGBoost and PyTorch can really use it, else CPU.

XGBoost asked for ``device="cuda"`` without a usable GPU falls back to the CPU with only
a warning, so the automatic choice tries a tiny fit on the GPU itself and records the
device each library actually used.
"""

from __future__ import annotations

import json
import logging
import warnings
from typing import Any

import numpy as np

from asterai.models.errors import TrainingError

log = logging.getLogger(__name__)


def _xgboost_cuda() -> tuple[bool, str]:
    try:
        import xgboost as xgb
    except ImportError as err:
        return False, f"xgboost not importable: {err}"
    if not xgb.build_info().get("USE_CUDA"):
        return False, "this XGBoost build has no CUDA"
    try:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            d = xgb.DMatrix(np.random.default_rng(0).normal(size=(64, 2)), label=np.arange(64) % 2)
            booster = xgb.train({"device": "cuda", "tree_method": "hist", "verbosity": 1}, d, 1)
        used = json.loads(booster.save_config())["learner"]["generic_param"]["device"]
    except Exception as err:  # any failure means no usable GPU
        return False, f"XGBoost cannot use CUDA: {err}"
    if not str(used).startswith("cuda"):
        return False, f"XGBoost fell back to {used}: no visible GPU"
    return True, f"XGBoost trains on {used}"


def _torch_cuda() -> tuple[bool, str]:
    try:
        import torch
    except ImportError as err:
        return False, f"torch not importable: {err}"
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA device"
    return True, torch.cuda.get_device_name(0)


def choose_device(requested: str) -> dict[str, Any]:
    """``{"xgboost": "cuda"|"cpu", "torch": ..., "notes": [...]}``; "cuda" asked but
    missing is an error, "auto" falls back to the CPU and says why."""
    if requested == "cpu":
        return {"requested": "cpu", "xgboost": "cpu", "torch": "cpu", "notes": ["CPU as asked"]}
    xok, xnote = _xgboost_cuda()
    tok, tnote = _torch_cuda()
    if requested == "cuda" and not (xok and tok):
        raise TrainingError(
            f"--device cuda asked for, but {xnote if not xok else tnote}; use --device auto or cpu"
        )
    chosen = {
        "requested": requested,
        "xgboost": "cuda" if xok else "cpu",
        "torch": "cuda" if tok else "cpu",
        "notes": [f"xgboost: {xnote}", f"torch: {tnote}"],
    }
    log.info("devices: xgboost %s, torch %s", chosen["xgboost"], chosen["torch"])
    return chosen
