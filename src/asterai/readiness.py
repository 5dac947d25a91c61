"""Readiness beyond data: Python and library versions, GPU availability, free disk.

Reported, never failed on: a machine without a GPU trains on the CPU.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import shutil
import sys
from typing import Any

from asterai.config import Settings
from asterai.intervals import DAY_MS, INTERVAL_MS

LIBRARIES = (
    "numpy",
    "pandas",
    "pyarrow",
    "httpx",
    "pydantic",
    "xgboost",
    "torch",
    "TA-Lib",
    "numba",
)
#: Parquet bytes per stored bar, measured on collected files (zstd, 11 columns), rounded up.
BYTES_PER_BAR = 80


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpu_report() -> dict[str, Any]:
    """Whether PyTorch and XGBoost can use a CUDA GPU, and which device would be used."""
    torch_info: dict[str, Any] = {"installed": _version("torch") is not None, "cuda": False}
    if torch_info["installed"]:
        try:
            torch = importlib.import_module("torch")
            torch_info["cuda"] = bool(torch.cuda.is_available())
            torch_info["cuda_version"] = torch.version.cuda
            if torch_info["cuda"]:
                torch_info["device"] = torch.cuda.get_device_name(0)
        except Exception as err:  # a broken CUDA install must not stop the report
            torch_info["error"] = f"{type(err).__name__}: {err}"
    xgb_info: dict[str, Any] = {"installed": _version("xgboost") is not None, "cuda": False}
    if xgb_info["installed"]:
        try:
            xgboost = importlib.import_module("xgboost")
            built_with_cuda = bool(xgboost.build_info().get("USE_CUDA"))
            xgb_info["built_with_cuda"] = built_with_cuda
            xgb_info["cuda"] = built_with_cuda and bool(torch_info.get("cuda"))
        except Exception as err:
            xgb_info["error"] = f"{type(err).__name__}: {err}"
    use = "cuda" if torch_info.get("cuda") else "cpu"
    note = (
        f"training will use the GPU ({torch_info.get('device')})"
        if use == "cuda"
        else "no usable CUDA GPU: training will run on the CPU (slower, same results)"
    )
    return {"torch": torch_info, "xgboost": xgb_info, "training_device": use, "note": note}


def disk_report(settings: Settings, symbols: int) -> dict[str, Any]:
    """Free disk at the data root against the configured collection's estimated size."""
    root = settings.data_root
    probe = root if root.exists() else root.parent
    free = shutil.disk_usage(probe).free
    bars = sum(
        settings.collect.days * DAY_MS // INTERVAL_MS[iv] for iv in settings.collect.intervals
    )
    needed = int(max(symbols, 1) * bars * BYTES_PER_BAR * 2)  # x2: a merge writes a new file
    return {
        "free_bytes": free,
        "estimated_collection_bytes": needed,
        "symbols_assumed": symbols,
        "enough": free > needed,
    }


def environment_report(settings: Settings, symbols: int = 200) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "gpu": gpu_report(),
        "disk": disk_report(settings, symbols),
    }
