"""The command line and the seed guide's scripts, end to end over loopback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import httpx
from click.testing import CliRunner
from conftest import PROJECT_ROOT

from asterai.cli import main
from asterai.paths import DataPaths


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_every_command_explains_itself() -> None:
    top = invoke("--help")
    assert top.exit_code == 0
    for command in ("discover", "ratelimit", "collect", "validate", "replay", "pipeline"):
        assert command in top.output
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "--help" in result.output
    for option in ("--data-root", "--base-url", "--symbols", "--intervals", "--days"):
        assert option in invoke("collect", "--help").output


def test_the_whole_pipeline_runs_and_grades_the_strategy(tmp_path, replay) -> None:
    result = invoke("pipeline", "--data-root", str(tmp_path), "--base-url", replay.base_url)
    # every stage ran; the backtest's criteria decide the exit status (DESIGN.md: 1 when
    # the step ran but a gate failed), and on a month of real bars they fail
    metrics = json.loads((DataPaths.at(tmp_path).backtest_results / "metrics.json").read_text())
    failed = [k for k, c in metrics["criteria"].items() if c["verdict"] != "PASS"]
    assert result.exit_code == (1 if failed else 0), result.output
    paths = DataPaths.at(tmp_path)
    discovery = json.loads(paths.discovery.read_text())
    listed = sorted(s["symbol"] for s in discovery["symbols"])
    assert json.loads(paths.rate_limit_test.read_text())["ok"]
    report = json.loads(paths.collection_report.read_text())
    assert report["ok"]
    assert sorted(report["symbols"]) == listed  # every symbol with history, dead ones too
    assert "[asset_discovery] ok" in result.output and "[data_collection] ok" in result.output
    assert "[data_validation] ok" in result.output
    gate = json.loads(paths.validation.read_text())
    dead = ["1INCHUSDT", "AIUSDT", "ALGOUSDT"]
    assert gate["ok"] and sorted(gate["excluded_symbols"]) == sorted([*dead, "1000CHEEMSUSDT"])
    assert sorted(gate["trainable_symbols"]) == sorted(set(listed) - set(gate["excluded_symbols"]))
    for stage in (
        "feature_engineering",
        "model_training_confluence",
        "model_training_aster_native",
    ):
        assert f"[{stage}] ok" in result.output, result.output
    assert "[backtesting]" in result.output and "not built" not in result.output
    assert replay.stats.sent_429 == 0


def test_pipeline_stage_range_and_bad_stage(tmp_path, replay) -> None:
    only = invoke(
        "pipeline",
        "--data-root",
        str(tmp_path),
        "--base-url",
        replay.base_url,
        "--start-from",
        "asset_discovery",
        "--stop-at",
        "asset_discovery",
    )
    assert only.exit_code == 0
    assert (
        DataPaths.at(tmp_path).discovery.exists()
        and not DataPaths.at(tmp_path).rate_limit_test.exists()
    )
    bad = invoke("pipeline", "--data-root", str(tmp_path), "--start-from", "training")
    assert bad.exit_code == 2 and "unknown stage 'training'" in bad.output
    backwards = invoke(
        "pipeline",
        "--data-root",
        str(tmp_path),
        "--start-from",
        "backtesting",
        "--stop-at",
        "asset_discovery",
    )
    assert backwards.exit_code == 2


def test_validate_only_runs_the_gate_and_nothing_else(tmp_path, replay) -> None:
    empty = invoke("pipeline", "--data-root", str(tmp_path), "--validate-only")
    assert empty.exit_code == 1 and "no collected data" in empty.output
    assert (
        invoke(
            "pipeline",
            "--data-root",
            str(tmp_path),
            "--base-url",
            replay.base_url,
            "--stop-at",
            "data_collection",
        ).exit_code
        == 0
    )
    requests = replay.stats.requests
    result = invoke("pipeline", "--data-root", str(tmp_path), "--validate-only")
    assert result.exit_code == 0 and "[data_validation] ok" in result.output
    assert replay.stats.requests == requests, "validation sends no request"
    assert DataPaths.at(tmp_path).validation.exists()


def test_collect_without_discovery_says_what_to_do(tmp_path, replay) -> None:
    result = invoke("collect", "--data-root", str(tmp_path), "--base-url", replay.base_url)
    assert result.exit_code == 2 and "run `asterai discover` first" in result.output


def test_seed_guide_scripts_call_the_same_code(tmp_path, replay) -> None:
    script = PROJECT_ROOT / "scripts" / "discover_aster_assets.py"
    done = subprocess.run(
        [sys.executable, str(script), "--data-root", str(tmp_path), "--base-url", replay.base_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "trainable" in done.stdout and DataPaths.at(tmp_path).discovery.exists()
    for name in (
        "test_aster_rate_limits",
        "collect_real_aster_data",
        "validate_training_readiness",
        "run_complete_pipeline",
    ):
        helped = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "scripts" / f"{name}.py"), "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert helped.returncode == 0 and "--data-root" in helped.stdout


def test_replay_command_serves_the_recording(real_data) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "asterai.cli", "replay", "--data", str(real_data), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            url = match.group(1) if match else None
        assert url, "the replay command prints the URL it serves"
        assert httpx.get(f"{url}/fapi/v1/time").json() == {"serverTime": 1760502565855}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
