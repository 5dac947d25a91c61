"""The complete pipeline in one command, end to end on the real recording: every
DESIGN.md artifact, resume by content, a failure that resumes where it stopped, the
manifest, and the guide's entry points.

One pipeline run (the guide's script, in a subprocess, against the replay server, with
small training settings) feeds the tests of this module; each later test works on a
copy of its folder."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import PROJECT_ROOT
from conftest import SMALL_TRAINING as SMALL

from asterai.cli import main
from asterai.paths import DataPaths
from asterai.pipeline.stages import STAGES


@pytest.fixture(scope="module")
def server(recording):
    from asterai.exchange.replay import ReplayServer

    with ReplayServer(recording) as replay:
        yield replay


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def copy_of(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest)
    return dest


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, server):
    """``python scripts/run_complete_pipeline.py`` into an empty folder."""
    root = tmp_path_factory.mktemp("complete")
    (root / "asterai.toml").write_text(SMALL)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "run_complete_pipeline.py"),
         "--data-root", str(root), "--base-url", server.base_url],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    return root, done, time.perf_counter() - started


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.e2e
def test_one_command_writes_every_artifact_and_exits_0(pipeline_run, server) -> None:
    import torch
    import xgboost

    root, done, seconds = pipeline_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert seconds < 120, f"the end-to-end run took {seconds:.0f} s"
    out = " ".join(done.stdout.split())
    for name in STAGES:
        assert f"[{name}] ok" in out, name
    # the verdict is reported, not hidden: the month of real bars FAILS the criteria
    metrics = json.loads((root / "data/backtest_results/metrics.json").read_text())
    failed = [k for k, c in metrics["criteria"].items() if c["verdict"] != "PASS"]
    assert failed and "the strategy FAILS the guide's criteria" in out
    assert server.stats.sent_429 == 0

    p = DataPaths.at(root)
    discovery = json.loads(p.discovery.read_text())
    listed = sorted(s["symbol"] for s in discovery["symbols"])
    assert json.loads(p.rate_limit_test.read_text())["ok"]
    report = json.loads(p.collection_report.read_text())
    assert report["ok"] and sorted(report["symbols"]) == listed
    assert p.collection_summary.exists()
    for symbol in listed:
        for interval in ("1h", "4h", "1d"):
            assert pq_meta(p.klines(symbol, interval))["source"] == "aster"
    gate = json.loads(p.validation.read_text())
    dead = ["1INCHUSDT", "AIUSDT", "ALGOUSDT"]
    assert gate["ok"] and sorted(gate["excluded_symbols"]) == sorted([*dead, "1000CHEEMSUSDT"])
    universe = pd.read_parquet(p.universe)
    assert universe["tradeable"].any() and not universe["tradeable"].all()
    features = pd.read_parquet(p.features("1h"))
    assert set(features["symbol"]) == set(gate["trainable_symbols"])
    assert sum(c.startswith("label_") for c in features.columns) >= 2
    assert list(p.visualizations.glob("*.png"))
    # models load as their formats, without executing code
    booster = xgboost.Booster()
    booster.load_model(str(p.confluence_models / "xgboost_classifier.json"))
    state = torch.load(p.confluence_models / "lstm_predictor.pth", weights_only=True)
    assert state and all(torch.is_tensor(v) for v in state.values())
    ensemble = json.loads((p.confluence_models / "ensemble_config.json").read_text())
    xgboost.Booster().load_model(str(p.aster_native_models / "xgboost_aster_native.json"))
    native = json.loads((p.aster_native_models / "model_config.json").read_text())
    for model, config in (("confluence", ensemble), ("aster_native", native)):
        preds = pd.read_parquet(p.predictions(model))
        assert len(preds) and preds["p_long"].between(0, 1).all()
        assert config["run_id"]
    for name in ("metrics.json", "trades.csv", "rejected_orders.csv", "equity.csv",
                 "report.html", "equity.png", "drawdown.png", "monthly_returns.png",
                 "trade_pnl.png", "exposure.png"):  # fmt: skip
        assert (p.backtest_results / name).stat().st_size > 0, name
    trades = pd.read_csv(p.backtest_results / "trades.csv")
    assert 50.0 + trades["pnl"].sum() == pytest.approx(metrics["final_equity"])

    # the manifest: enough to reproduce the run and compare it
    (manifest_path,) = (root / "data/pipeline_runs").glob("*/manifest.json")
    m = json.loads(manifest_path.read_text())
    assert m["status"] == "ok" and [s["name"] for s in m["stages"]] == list(STAGES)
    assert m["versions"]["xgboost"] == xgboost.__version__ and m["versions"]["torch"]
    assert m["device"]["train.device"] == "auto"
    assert m["settings"]["train"]["folds"] == 3 and "api_key" not in m["settings"]
    for stage in m["stages"]:
        assert stage["status"] == "ran" and stage["seconds"] >= 0
        for rel, digest in stage["outputs"].items():
            assert sha256(root / rel) == digest, rel
    backtest = m["stages"][-1]
    assert backtest["numbers"]["sharpe_ratio"] == pytest.approx(metrics["sharpe_ratio"])
    assert "data/predictions/confluence.parquet" in backtest["inputs"]


def pq_meta(path: Path) -> dict:
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[b"asterai.provenance"])


def test_a_rerun_skips_every_stage_and_runs_lists_both(pipeline_run, server, tmp_path) -> None:
    root = copy_of(pipeline_run[0], tmp_path / "again")
    before = {
        p: sha256(p) for p in root.rglob("*") if p.is_file() and "pipeline_runs" not in p.parts
    }
    requests = server.stats.requests
    result = invoke("pipeline", "--data-root", str(root), "--base-url", server.base_url)
    assert result.exit_code == 0, result.output
    for name in STAGES:
        assert f"[{name}] skipped, current" in result.output, name
    assert server.stats.requests - requests <= 2  # the ping and the clock, nothing more
    after = {
        p: sha256(p) for p in root.rglob("*") if p.is_file() and "pipeline_runs" not in p.parts
    }
    assert after == before, "a skipped stage writes nothing"
    runs = invoke("runs", "--data-root", str(root))
    assert runs.exit_code == 0
    assert "8 / 0" in runs.output and "0 / 8" in runs.output  # ran / skipped per run


def test_validate_only_and_a_stage_range(pipeline_run, server, tmp_path) -> None:
    root = copy_of(pipeline_run[0], tmp_path / "range")
    only = invoke("pipeline", "--data-root", str(root), "--base-url", server.base_url,
                  "--validate-only")  # fmt: skip
    assert only.exit_code == 0, only.output
    assert "asset_discovery -> rate_limit_testing -> data_validation" in " ".join(
        only.output.split()
    )
    assert "data_collection" not in only.output and "model_training" not in only.output
    # the guide's "only train the Aster-native model": its models gone, it and the
    # backtest run again, nothing else
    shutil.rmtree(DataPaths.at(root).aster_native_models)
    confluence = sha256(DataPaths.at(root).predictions("confluence"))
    result = invoke(
        "pipeline", "--data-root", str(root), "--start-from", "model_training_aster_native",
        "--stop-at", "backtesting",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "model_training_aster_native (output missing: models/aster_native/" in text
    assert "[model_training_aster_native] ok" in text and "[backtesting] ok" in text
    assert "asset_discovery" not in text and "model_training_confluence" not in text
    assert sha256(DataPaths.at(root).predictions("confluence")) == confluence
    assert (DataPaths.at(root).aster_native_models / "xgboost_aster_native.json").exists()


def test_a_failed_stage_stops_the_run_and_the_next_run_resumes_there(
    pipeline_run, server, tmp_path
) -> None:
    root = copy_of(pipeline_run[0], tmp_path / "resume")
    # training cannot work with this: it aborts, and the run stops with exit 1
    (root / "asterai.toml").write_text(
        SMALL.replace("folds = 3", "folds = 3\nmin_train_bars = 100000")
    )
    failed = invoke("pipeline", "--data-root", str(root), "--base-url", server.base_url)
    assert failed.exit_code == 1
    text = " ".join(failed.output.split())
    assert "[model_training_confluence] FAILED" in text and "training aborted" in text
    for name in STAGES[:5]:
        assert f"[{name}] skipped, current" in text, name
    assert "[model_training_aster_native]" not in text and "[backtesting]" not in text
    manifests = sorted(
        (root / "data/pipeline_runs").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime
    )
    last = json.loads(manifests[-1].read_text())
    assert last["status"] == "failed" and "model_training_confluence" in last["failure"]
    # the fix: the run resumes at the failed stage, the ones before stay as they were
    (root / "asterai.toml").write_text(SMALL)
    resumed = invoke("pipeline", "--data-root", str(root), "--base-url", server.base_url)
    assert resumed.exit_code == 0, resumed.output
    text = " ".join(resumed.output.split())
    for name in STAGES[:5]:
        assert f"[{name}] skipped, current" in text, name
    # the failed run dropped confluence's record: it runs again, and what reads its
    # predictions (the Aster-native report compares with them; the backtest)
    assert "model_training_confluence (no record of its last run" in text
    assert "model_training_aster_native (input changed: data/predictions/confluence.parquet" in text
    for name in STAGES[5:]:
        assert f"[{name}] ok" in text, name


def test_missing_inputs_and_an_unreachable_exchange_stop_before_anything_runs(tmp_path) -> None:
    result = invoke("pipeline", "--data-root", str(tmp_path), "--start-from", "feature_engineering")
    assert result.exit_code == 1
    assert "stage feature_engineering cannot start: it needs a READY gate verdict" in " ".join(
        result.output.split()
    )
    assert "--start-from data_validation" in result.output
    assert not (tmp_path / "data" / "features").exists()
    started = time.perf_counter()
    offline = invoke("pipeline", "--data-root", str(tmp_path), "--base-url", "http://127.0.0.1:9")
    assert time.perf_counter() - started < 15
    assert (
        offline.exit_code == 1
        and "cannot reach the exchange at http://127.0.0.1:9" in offline.output
    )
    assert "asterai replay --data" in offline.output
    assert not DataPaths.at(tmp_path).discovery.exists()


def test_the_guides_collector_checks_connectivity_and_real_data(server, tmp_path) -> None:
    code = (
        "from local_training.aster_dex_data_collector import AsterDEXDataCollector; "
        "import asyncio; c = AsterDEXDataCollector(); s = asyncio.run(c.initialize()); "
        "print('API: Connected', s['sample']['symbol'], s['trading'])"
    )
    env = {"ASTERAI_BASE_URL": server.base_url, "ASTERAI_DATA_ROOT": str(tmp_path), "PATH": ""}
    ok = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env,
                        capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ["API:", "Connected", "BTCUSDT", "19"]
    env["ASTERAI_BASE_URL"] = "http://127.0.0.1:9"
    down = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert down.returncode != 0 and "AccessError" in down.stderr
    assert "asterai replay --data" in down.stderr and "Connected" not in down.stdout


def test_every_script_of_the_guide_exists_and_explains_itself() -> None:
    scripts = [
        "scripts/discover_aster_assets.py", "scripts/test_aster_rate_limits.py",
        "scripts/collect_real_aster_data.py", "scripts/validate_training_readiness.py",
        "scripts/validate_confluence_features.py", "scripts/backtest_confluence_strategy.py",
        "scripts/run_complete_pipeline.py", "scripts/optimize_confluence_model.py",
        "scripts/export_models_to_onnx.py", "local_training/train_confluence_model.py",
        "local_training/train_aster_native_model.py",
    ]  # fmt: skip
    for script in scripts:
        done = subprocess.run([sys.executable, str(PROJECT_ROOT / script), "--help"],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0 and "--data-root" in done.stdout, script
        assert done.stdout.startswith(f"Usage: {Path(script).name} "), done.stdout[:80]


def test_hashes_decide_what_is_current() -> None:
    from asterai.pipeline.runner import _why_run
    from asterai.pipeline.stages import REGISTRY

    stage = REGISTRY["feature_engineering"]
    record = {"config_sha256": "c", "inputs": {"a": "1"}, "outputs": {"o": "9"}}
    assert _why_run(stage, record, {"a": "1"}, "c", {"o": "9"}, False) is None
    assert _why_run(stage, record, {"a": "1"}, "c", {"o": "9"}, True) == "forced (--force)"
    assert _why_run(stage, record, {"a": "1"}, "d", {"o": "9"}, False) == "its settings changed"
    assert _why_run(stage, record, {"a": "2"}, "c", {"o": "9"}, False) == "input changed: a"
    assert _why_run(stage, record, {"a": "1", "b": "1"}, "c", {"o": "9"}, False) == "input new: b"
    assert _why_run(stage, record, {"a": "1"}, "c", {}, False) == "output missing: o"
    assert _why_run(stage, record, {"a": "1"}, "c", {"o": "8"}, False) == "output changed: o"
    assert _why_run(stage, None, {}, "c", {}, False) == "never ran here"
    assert _why_run(stage, None, {}, "c", {"o": "9"}, False) == "no record of its last run"


def test_damaged_records_cost_a_rerun_not_a_crash(tmp_path) -> None:
    from asterai.pipeline.runner import list_runs, load_state

    paths = DataPaths.at(tmp_path)
    state = tmp_path / "data" / "pipeline_runs" / "state.json"
    state.parent.mkdir(parents=True)
    for text in ("{}", "null", "[]", "not json", '{"stages": {"backtesting": 3}}'):
        state.write_text(text)
        assert load_state(paths) == {"stages": {}}, text
    state.unlink()
    state.mkdir()  # not even a file
    assert load_state(paths) == {"stages": {}}
    for i, text in enumerate(("[]", "{", '{"run_id": "r", "started_at": "2026-01-01"}')):
        (state.parent / f"run{i}").mkdir()
        (state.parent / f"run{i}" / "manifest.json").write_text(text)
    runs = list_runs(paths)
    assert len(runs) == 3 and any(r.get("run_id") == "r" for r in runs)
    result = invoke("runs", "--data-root", str(tmp_path))
    assert result.exit_code == 0 and "unreadable manifest" in " ".join(result.output.split())


def test_each_stage_depends_on_what_shapes_it(tmp_path) -> None:
    from asterai.config import load_settings
    from asterai.pipeline.runner import _config, _sha
    from asterai.pipeline.stages import REGISTRY

    base = load_settings(tmp_path)
    changed = {
        "data_validation": load_settings(tmp_path, features={"base_interval": "4h"}),
        "rate_limit_testing": load_settings(tmp_path, collect={"days": 30}),
        "backtesting": load_settings(tmp_path, quality={"min_trainable_symbols": 5}),
        "model_training_aster_native": load_settings(
            tmp_path, aster_native={"min_history_bars": 96}
        ),
    }
    for name, other in changed.items():
        stage = REGISTRY[name]
        assert _sha(_config(stage, base, {})) != _sha(_config(stage, other, {})), name
    # what a stage reads is what it is judged by: the Aster-native report reads the
    # confluence predictions, the probe reads discovery
    paths = DataPaths.at(tmp_path)
    paths.predictions("confluence").parent.mkdir(parents=True)
    paths.predictions("confluence").write_bytes(b"x")
    paths.discovery.write_text("{}")
    assert paths.predictions("confluence") in REGISTRY["model_training_aster_native"].reads(
        paths, base
    )
    assert paths.discovery in REGISTRY["rate_limit_testing"].reads(paths, base)


def test_an_incomplete_stage_is_not_recorded_as_current(tmp_path, monkeypatch, server) -> None:
    from asterai.config import load_settings
    from asterai.pipeline import runner, stages

    calls = []

    def discovery(settings, opts):
        calls.append(1)
        return stages.StageResult(True, "2 symbols; 1 problem(s)", complete=False)

    real = stages.REGISTRY["asset_discovery"]
    patched = dict(runner.REGISTRY)
    patched["asset_discovery"] = stages.Stage(
        real.name, real.description, discovery, real.reads, real.writes, real.config,
        real.needs, real.network,
    )  # fmt: skip
    monkeypatch.setattr(runner, "REGISTRY", patched)
    settings = load_settings(tmp_path, base_url=server.base_url)
    for _ in range(2):
        outcome = runner.run_pipeline(settings, stop_at="asset_discovery")
        assert outcome.ok and outcome.status("asset_discovery") == "ran"
    assert len(calls) == 2  # tried again, not served as current
    assert "asset_discovery" not in runner.load_state(DataPaths.at(tmp_path))["stages"]
