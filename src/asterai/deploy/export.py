"""ONNX export of a trained model: ``models/{model}/onnx/`` with one graph per member
and a manifest, written only when the exported path reproduces the native model.

- XGBoost: ``onnx_xgb.member_graph`` (the booster at its best iteration, both outputs
  mapped; see there why not onnxmltools).
- LSTM: ``torch.onnx.export`` of the network plus its sigmoid, batch and sequence axes
  dynamic (exported with both above 1, and checked on a window length other than the
  trained one, so neither axis is frozen).
- The manifest: the feature order and the inputs' rules (listing-age cap, categories),
  the LSTM's fill values, scaling and window, each member's Platt calibration, the
  ensemble weights and threshold, the model config's sha256, each graph's sha256, the
  opsets and the library versions, and the parity figure.

**Parity, which fails the export:** every real feature row of the model's table
(``data/features/{interval}.parquet``: rows with missing values among them), plus real
rows with one feature moved onto a split threshold of the booster and just below it,
go through both paths; the calibrated ensemble probabilities (and each member's) must
agree within ``TOLERANCE`` (maximum absolute difference, reported). A violation
leaves the previous export in place and raises :class:`ParityError` (exit 1).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asterai import __version__, atomic
from asterai.config import Settings
from asterai.deploy import onnx_xgb
from asterai.deploy.runtime import MANIFEST, OnnxModel, sha256_file
from asterai.models import registry
from asterai.models.inputs import model_matrix, row_order
from asterai.paths import DataPaths

log = logging.getLogger(__name__)

#: the largest difference allowed between the exported and the native probabilities
TOLERANCE = 1e-5
#: split thresholds probed per export (real rows moved onto them)
THRESHOLD_PROBES = 256


class ParityError(RuntimeError):
    """The exported path does not reproduce the native model; nothing was replaced."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    folder: Path
    manifest: dict[str, Any]

    @property
    def max_abs_diff(self) -> float:
        return float(self.manifest["parity"]["max_abs_diff"])


def lstm_graph(member: Any) -> bytes:
    """The LSTM member's network and sigmoid as ONNX bytes: input ``windows`` float32
    (rows, steps, width), output ``raw`` (rows, 2)."""
    import torch

    net = member.net.eval()

    class WithSigmoid(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net(x))

    steps = max(2, member.settings.sequence_length)
    example = torch.zeros(2, steps, member.prep.width)  # both dynamic axes above 1
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # "batch size other than 1 ... define h0/c0 as inputs": the network starts from
        # zero states of the batch's own size, which the graph builds per call; the
        # parity check and the tests run batches and window lengths other than these
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size")
        # the tracer's notes on nn.LSTM's input-width checks (the width is fixed by the
        # manifest) and the TorchScript exporter's own deprecation notice
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # and its notice that it is the legacy exporter: the torch.export-based one needs
        # onnxscript, which the project does not install; the parity check guards either
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        _export(torch, WithSigmoid(), example, buf)
    return buf.getvalue()


def _export(torch: Any, module: Any, example: Any, buf: io.BytesIO) -> None:
    torch.onnx.export(
        module,
        (example,),
        buf,
        input_names=["windows"],
        output_names=["raw"],
        dynamic_axes={"windows": {0: "rows", 1: "steps"}, "raw": {0: "rows"}},
        opset_version=onnx_xgb.OPSET,
        dynamo=False,  # the TorchScript exporter: no onnxscript needed, LSTM supported
    )


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import xgboost

    return {
        "asterai": __version__,
        "python": platform.python_version(),
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "xgboost": xgboost.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


#: the model config's keys the inputs need (``models.inputs.model_matrix``, ``window_runs``)
INPUT_KEYS = ("features", "categories", "listing_age_cap_h", "majors", "new_listing_hours")


def build_manifest(predictor: registry.Predictor, config_sha: str) -> dict[str, Any]:
    config = predictor.config
    members: dict[str, Any] = {
        "xgboost": {
            "file": "xgboost.onnx",
            "ranking": predictor.xgboost.ranking,
            "best_iteration": predictor.xgboost.best_iteration,
            "calibration_platt": config["members"]["xgboost"]["calibration_platt"],
        }
    }
    if predictor.lstm is not None:
        members["lstm"] = {
            "file": "lstm.onnx",
            "sequence_length": predictor.lstm.settings.sequence_length,
            "prep": predictor.lstm.prep.to_json(),
            "calibration_platt": config["members"]["lstm"]["calibration_platt"],
        }
    return {
        "model": predictor.name,
        "inputs": {
            **{k: config.get(k) for k in INPUT_KEYS},
            "label": {"base_interval": config["label"]["base_interval"]},
        },
        "input_width": len(config["features"]),
        "members": members,
        "ensemble": config["ensemble"],
        "threshold": config["threshold"],
        # a model trained before strategy.sides existed traded both
        "sides": config.get("sides", "both"),
        "label": config["label"],
        "training_window": config.get("training_window"),
        "model_config_sha256": config_sha,
        "opset": {"ai.onnx": onnx_xgb.OPSET, "ai.onnx.ml": onnx_xgb.ML_OPSET},
        "versions": _versions(),
    }


def threshold_rows(predictor: registry.Predictor, frame: pd.DataFrame, probes: int) -> pd.DataFrame:
    """Real rows with one feature set onto one of the booster's split thresholds, and
    copies just below it (the comparison ``x < t`` decides there): where a float32
    mismatch between the two paths would show."""
    doc = json.loads(predictor.xgboost.booster.save_raw("json"))
    splits = []
    for tree in doc["learner"]["gradient_booster"]["model"]["trees"]:
        for i, left in enumerate(tree["left_children"]):
            if left != -1:
                splits.append((int(tree["split_indices"][i]), float(tree["split_conditions"][i])))
    features = predictor.features
    splits = [(j, t) for j, t in splits if not features[j].startswith("category_")]
    if not splits or frame.empty:
        return frame.iloc[:0]
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(splits), size=min(probes, len(splits)), replace=False)
    rows = []
    # real rows from anywhere in the table (the first rows are one symbol's warm-up)
    picked = rng.choice(len(frame), size=len(chosen), replace=len(chosen) > len(frame))
    for c, r in zip(chosen, picked, strict=True):
        j, t = splits[c]
        base = frame.iloc[[r]].copy()
        at = base.copy()
        at[features[j]] = np.float32(t)
        below = base.copy()
        below[features[j]] = np.nextafter(np.float32(t), np.float32(-np.inf))
        rows += [at, below]
    out = pd.concat(rows)
    # each probe its own symbol-bar, so the LSTM reads no probe as another's history
    out["open_time"] = frame["open_time"].iloc[0]
    out["symbol"] = [f"{s}#probe{k}" for k, s in enumerate(out["symbol"])]
    return out.reset_index(drop=True)


def parity(native: registry.Predictor, exported: OnnxModel, frame: pd.DataFrame) -> dict[str, Any]:
    """The largest absolute difference between the two paths' probabilities, per
    output, on ``frame``'s rows and on threshold probes built from them."""
    probes = threshold_rows(native, frame, THRESHOLD_PROBES)
    figures: dict[str, Any] = {"rows": len(frame), "threshold_probes": len(probes)}
    X = model_matrix(native.config, frame)
    figures["rows_with_missing"] = int((~np.isfinite(X)).any(axis=1).sum())
    worst = 0.0
    for label, rows in (("rows", frame), ("probes", probes)):
        if rows.empty:
            continue
        a = native.predict(rows)
        b = exported.predict(rows)
        for column in a.columns:
            x, y = a[column].to_numpy(), b[column].to_numpy()
            if not np.array_equal(np.isfinite(x), np.isfinite(y)):
                raise ParityError(f"{column}: the two paths disagree on which rows have a value")
            ok = np.isfinite(x)
            diff = float(np.max(np.abs(x[ok] - y[ok]))) if ok.any() else 0.0
            figures[f"{label}:{column}"] = diff
            worst = max(worst, diff)
    figures["max_abs_diff"] = worst
    figures["tolerance"] = TOLERANCE
    return figures


def export_onnx(settings: Settings, name: str, *, rows: pd.DataFrame | None = None) -> ExportResult:
    """Export model ``name`` of ``settings``' data root; ``rows``: the feature rows the
    parity check runs on (default: the model's whole feature table)."""
    paths = DataPaths.at(settings.data_root)
    native = registry.load(settings, name)
    config_path = paths.models(name) / registry.CONFIG_FILES[name]
    config_sha = hashlib.sha256(config_path.read_bytes()).hexdigest()
    if rows is None:
        table = paths.features(native.config["label"]["base_interval"])
        rows = pd.read_parquet(table, columns=["symbol", "open_time", *_base(native)])
    rows = rows.iloc[row_order(rows)].reset_index(drop=True)
    manifest = build_manifest(native, config_sha)
    manifest["service"] = service_facts(settings, native.config["label"]["base_interval"])
    graphs = {
        "xgboost": onnx_xgb.member_graph(native.xgboost, len(native.features)).SerializeToString()
    }
    if native.lstm is not None:
        graphs["lstm"] = lstm_graph(native.lstm)
    target = paths.models(name) / "onnx"

    def build(tmp: Path) -> None:
        for member, data in graphs.items():
            path = tmp / manifest["members"][member]["file"]
            path.write_bytes(data)
            manifest["members"][member]["sha256"] = sha256_file(path)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        figures = parity(native, OnnxModel(tmp), rows)
        manifest["parity"] = figures
        if not figures["max_abs_diff"] <= TOLERANCE:
            raise ParityError(
                f"the exported {name} model differs from the native one by "
                f"{figures['max_abs_diff']:.3g} (tolerance {TOLERANCE:g}): the previous "
                f"export in {target} is left in place"
            )
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))

    atomic.replace_folder(target, build)
    log.info("exported %s to %s (parity %.2g)", name, target, manifest["parity"]["max_abs_diff"])
    return ExportResult(target, manifest)


def service_facts(settings: Settings, base_interval: str) -> dict[str, Any]:
    """What the signal service needs besides the graphs, so that an export folder alone
    can serve: the timeframes the features read, the symbols of the feature table the
    model was trained on, and the universe's rules for the tradeable flag."""
    import pyarrow.parquet as pq

    from asterai.features.build import FEATURES_META_KEY

    table = DataPaths.at(settings.data_root).features(base_interval)
    meta = json.loads((pq.read_schema(table).metadata or {})[FEATURES_META_KEY])
    return {
        "features": {
            "base_interval": meta["settings"]["base_interval"],
            "higher_intervals": list(meta["settings"]["higher_intervals"]),
        },
        "symbols": list(meta["symbols"]),
        "universe": settings.universe.model_dump(mode="json"),
    }


def _base(native: registry.Predictor) -> list[str]:
    base = [f for f in native.features if not f.startswith("category_")]
    from asterai.models.data import LISTING_AGE

    if native.config.get("categories") is not None and LISTING_AGE not in base:
        base.append(LISTING_AGE)
    return base
