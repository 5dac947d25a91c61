"""The command line and the seed guide's scripts, end to end over loopback."""

from __future__ import annotations

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


def test_validate_only_runs_discovery_the_probe_and_the_gate(tmp_path, replay) -> None:
    empty = invoke(
        "pipeline", "--data-root", str(tmp_path), "--base-url", replay.base_url, "--validate-only"
    )
    # discovery and the probe ran; the gate has nothing stored to judge
    assert empty.exit_code == 1 and "needs collected data" in " ".join(empty.output.split())
    assert DataPaths.at(tmp_path).discovery.exists()
    collected = invoke(
        "pipeline", "--data-root", str(tmp_path), "--base-url", replay.base_url,
        "--stop-at", "data_collection",
    )  # fmt: skip
    assert collected.exit_code == 0, collected.output
    klines = replay.stats.paths.get("/fapi/v1/klines", 0)
    result = invoke(
        "pipeline", "--data-root", str(tmp_path), "--base-url", replay.base_url, "--validate-only"
    )
    assert result.exit_code == 0 and "[data_validation] ok" in result.output
    assert "data_collection" not in result.output, "no collection under --validate-only"
    assert DataPaths.at(tmp_path).validation.exists()
    assert klines > 0 and replay.stats.paths.get("/fapi/v1/klines", 0) == klines


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
