"""What of the Cloud Run deployment can be checked without Google Cloud: the deploy
script's arguments and the commands it would run, the container's contents and command,
and that the service needs nothing outside the ``serve`` extra at run time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SCRIPT = PROJECT / "cloud_deploy" / "deploy_inference.sh"
DOCKERFILE = PROJECT / "cloud_deploy" / "Dockerfile"


def deploy(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)  # fmt: skip


def test_the_script_refuses_missing_or_wrong_arguments(exported_root, tmp_path) -> None:
    base = ["--project", "p1", "--region", "europe-west1", "--data-root", str(exported_root)]
    for drop, needed in (("--project", "--project is required"),
                         ("--region", "--region is required"),
                         ("--data-root", "--data-root is required")):  # fmt: skip
        i = base.index(drop)
        r = deploy(*(base[:i] + base[i + 2 :]), "--dry-run")
        assert r.returncode == 2 and needed in r.stderr, r.stderr
    r = deploy(*base, "--model", "lstm", "--dry-run")
    assert r.returncode == 2 and "confluence or aster-native" in r.stderr
    r = deploy(*base, "--service", "Bad_Name", "--dry-run")
    assert r.returncode == 2 and "lowercase" in r.stderr
    r = deploy(*base, "--frobnicate", "--dry-run")
    assert r.returncode == 2 and "unknown argument" in r.stderr
    r = deploy("--project", "p1", "--region", "r", "--data-root", str(tmp_path), "--dry-run")
    assert r.returncode == 1 and "asterai export-onnx" in r.stderr
    assert deploy("--help").returncode == 2 and "Cloud Run" in deploy("--help").stdout


def test_a_dry_run_prints_the_build_and_an_always_on_single_instance(exported_root) -> None:
    secret = "do-not-print-me-1234"
    r = deploy("--project", "p1", "--region", "europe-west1", "--data-root", str(exported_root),
               "--model", "aster-native", "--dry-run", env={"ASTERAI_SERVE_TOKEN": secret})  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("+ gcloud")]
    assert [line.split()[2] for line in lines] == ["artifacts", "builds", "run"]
    run = lines[-1]
    for flag in ("--min-instances 1", "--max-instances 1", "--no-cpu-throttling",
                 "--set-secrets ASTERAI_SERVE_TOKEN=asterai-serve-token:latest",
                 "--memory 512Mi", "--cpu 1"):  # fmt: skip
        assert flag in run, flag
    assert "europe-west1-docker.pkg.dev/p1/asterai/asterai-serve:" in run
    assert "model aster-native" in r.stdout
    assert secret not in r.stdout + r.stderr


def test_the_container_installs_only_the_serve_extra_and_runs_as_a_user() -> None:
    text = DOCKERFILE.read_text()
    assert text.startswith("#") and "FROM python:3.12-slim" in text
    assert "pip install --no-deps ." in text and "serve_requirements.py" in text
    assert "USER asterai" in text and "useradd" in text
    assert "asterai serve --data-root /srv" in text and "--host 0.0.0.0" in text
    sys.path.insert(0, str(PROJECT / "cloud_deploy"))
    try:
        from serve_requirements import serve_requirements
    finally:
        sys.path.pop(0)
    names = {r.split(">")[0].split("=")[0].split("[")[0].lower() for r in serve_requirements()}
    assert {"fastapi", "uvicorn", "onnxruntime", "numpy", "pandas"} <= names
    assert not names & {"torch", "xgboost", "scikit-learn", "optuna", "matplotlib", "numba"}


#: Run in a fresh interpreter: the service's whole run-time path (start, warm-up from a
#: replay, the first signals, a prediction) with the training stack made unimportable.
NO_TRAINING_STACK = r"""
import asyncio, json, sys
from importlib.abc import MetaPathFinder

BLOCKED = {"torch", "xgboost", "sklearn", "optuna", "matplotlib", "psycopg", "onnx", "numba",
           "scipy"}

class Refuse(MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"the service imported {name}")
        return None

sys.meta_path.insert(0, Refuse())
from pathlib import Path
from asterai.config import load_settings
from asterai.deploy.follow import Follower
from asterai.deploy.runtime import OnnxModel
from asterai.deploy.service import create_app
from asterai.exchange.client import AsterClient
from asterai.exchange.replay.recording import load_recording
from asterai.exchange.replay import ReplayServer

root, data = Path(sys.argv[1]), Path(sys.argv[2])
model = OnnxModel(root / "models" / "confluence" / "onnx")
with ReplayServer(load_recording(data)) as replay:
    settings = load_settings(root, base_url=replay.base_url)
    follower = Follower(settings, model)
    create_app(model, follower, token="t" * 32, name="confluence")

    async def warm():
        async with AsterClient(settings.base_url, settings.exchange) as client:
            await follower.warm_up(client)
    asyncio.run(warm())
assert len(follower.state.snapshot.signals) > 10
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_the_service_runs_without_the_training_stack(exported_root, real_data) -> None:
    """Start, warm-up and the first signals in a fresh interpreter where PyTorch, XGBoost,
    scikit-learn, numba, SciPy, Optuna, matplotlib, psycopg and onnx (the exporter)
    cannot be imported; the packages it needs are the serve extra's."""
    r = subprocess.run([sys.executable, "-c", NO_TRAINING_STACK, str(exported_root),
                        str(real_data)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    modules = set(json.loads(r.stdout.strip().splitlines()[-1]))
    needed = {"numpy", "pandas", "pyarrow", "httpx", "pydantic", "click", "talib",
              "onnxruntime", "fastapi"}  # fmt: skip
    assert needed <= modules
    sys.path.insert(0, str(PROJECT / "cloud_deploy"))
    try:
        from serve_requirements import serve_requirements
    finally:
        sys.path.pop(0)
    listed = {_name(r) for r in serve_requirements()}
    for module, dist in (("talib", "ta-lib"), ("onnxruntime", "onnxruntime"),
                         ("fastapi", "fastapi"), ("uvicorn", "uvicorn")):  # fmt: skip
        assert dist in listed, (module, dist)
    assert not {"numba", "scipy", "torch", "xgboost", "scikit-learn"} & listed


def _name(requirement: str) -> str:
    """``"Foo_Bar[x]>=1; python_version<'4'"`` -> ``foo-bar``."""
    return re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.parametrize("model", ["confluence", "aster_native"])
def test_the_export_carries_what_the_container_needs(exported_root, model) -> None:
    manifest = json.loads((exported_root / "models" / model / "onnx" / "manifest.json").read_text())
    facts = manifest["service"]
    assert facts["features"]["base_interval"] == "1h"
    assert facts["features"]["higher_intervals"] == ["4h", "1d"]
    assert len(facts["symbols"]) >= 10 and "BTCUSDT" in facts["symbols"]
    assert set(facts["universe"]) == {"min_listing_days", "min_quote_volume_24h", "max_tick_share"}
