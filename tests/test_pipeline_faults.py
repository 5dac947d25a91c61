"""The one command survives what its steps survive: the whole pipeline against the
replay server with the documented fault mix (docs/replay.md) (5xx, 429 bursts, slow, truncated and dropped
responses) exits 0 with the same series and the same final metrics as a clean run; an
outage in the middle of the collection is waited out; one longer than the retry budget
stops with a clear message and exit 1, and the next run resumes where it stopped."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import SMALL_TRAINING as SMALL

from asterai.cli import main
from asterai.exchange.replay import ReplayServer
from asterai.paths import DataPaths

FAULTS = "5xx=0.1,429=0.05,slow=0.05:0.5,truncate=0.05,drop=0.05"  # the fault mix of docs/replay.md
FAST = {"backoff_base_s": 0.02, "backoff_max_s": 0.2}


def project(root: Path, **exchange: float) -> Path:
    """A project folder with small training settings and a fast-backing-off client."""
    root.mkdir(parents=True, exist_ok=True)
    table = "".join(f"{k} = {v}\n" for k, v in (FAST | exchange).items())
    (root / "asterai.toml").write_text(SMALL + "[exchange]\n" + table)
    return root


def pipeline(root: Path, url: str, *args: str):
    return CliRunner().invoke(
        main, ["pipeline", "--data-root", str(root), "--base-url", url, *args],
        catch_exceptions=False,
    )  # fmt: skip


def series(root: Path) -> dict[str, pd.DataFrame]:
    folder = DataPaths.at(root).historical
    return {p.name: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}


def assert_same_series(clean: Path, root: Path) -> None:
    want, got = series(clean), series(root)
    assert sorted(got) == sorted(want) and len(want) > 50
    for name, frame in want.items():
        pd.testing.assert_frame_equal(got[name], frame, check_exact=True, obj=name)


def without_run_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_run_ids(v) for k, v in value.items() if k != "run_id"}
    if isinstance(value, list):
        return [without_run_ids(v) for v in value]
    return value


def metrics(root: Path) -> dict[str, Any]:
    path = DataPaths.at(root).backtest_results / "metrics.json"
    return without_run_ids(json.loads(path.read_text()))


@pytest.fixture(scope="module")
def clean(tmp_path_factory, recording) -> Path:
    root = project(tmp_path_factory.mktemp("clean"))
    with ReplayServer(recording) as server:
        assert pipeline(root, server.base_url).exit_code == 0
    return root


@pytest.mark.e2e
@pytest.mark.parametrize("seed", [1, 3])
def test_the_pipeline_survives_the_readmes_fault_mix(clean, recording, tmp_path, seed) -> None:
    root = project(tmp_path / f"faults-{seed}")
    with ReplayServer(recording, faults=FAULTS, seed=seed) as server:
        result = pipeline(root, server.base_url)
        served = server.stats.snapshot()
    assert result.exit_code == 0, result.output[-3000:]
    assert sum(served["faults"].values()) >= 5, served  # faults were really served
    assert_same_series(clean, root)
    assert metrics(root) == metrics(clean)


def slow_server(recording) -> ReplayServer:
    # every answer a little late, so that the collection is still running when the
    # server goes down
    return ReplayServer(recording, faults="slow=1:0.05").start()


def collect_in_background(root: Path, url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "asterai.cli", "pipeline", "--data-root", str(root),
         "--base-url", url, "--start-from", "data_collection", "--stop-at", "data_collection"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def klines_served(server: ReplayServer) -> int:
    return server.stats.snapshot()["paths"].get("/fapi/v1/klines", 0)


def wait_for_klines(server: ReplayServer, count: int, timeout: float = 60.0) -> None:
    """Until the collection has had ``count`` more klines pages (discovery asked for some
    before it)."""
    target = klines_served(server) + count
    deadline = time.monotonic() + timeout
    while klines_served(server) < target:
        assert time.monotonic() < deadline, "the collection never started"
        time.sleep(0.01)


@pytest.mark.e2e
def test_an_outage_in_the_middle_of_the_collection_is_waited_out(clean, recording, tmp_path):
    root = project(tmp_path / "outage", retry_budget_s=60, backoff_max_s=0.5)
    server = slow_server(recording)
    try:
        assert pipeline(root, server.base_url, "--stop-at", "rate_limit_testing").exit_code == 0
        proc = collect_in_background(root, server.base_url)
        wait_for_klines(server, 20)
        server.stop()  # the exchange goes down for three seconds
        time.sleep(3.0)
        server.start()
        out, _ = proc.communicate(timeout=240)
    finally:
        server.stop()
    assert proc.returncode == 0, out[-3000:]
    report = json.loads(DataPaths.at(root).collection_report.read_text())
    assert report["totals"]["retries"] > 0  # the outage was met, and waited out
    assert_same_series(clean, root)


@pytest.mark.e2e
def test_an_outage_past_the_retry_budget_stops_clearly_and_the_rerun_resumes(
    clean, recording, tmp_path
) -> None:
    root = project(tmp_path / "long-outage", retry_budget_s=0.5)
    server = slow_server(recording)
    try:
        assert pipeline(root, server.base_url, "--stop-at", "rate_limit_testing").exit_code == 0
        proc = collect_in_background(root, server.base_url)
        wait_for_klines(server, 20)
        server.stop()  # down for longer than half a second of backoff
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 1, out[-3000:]
        # the last lines say why: the endpoint, the attempts and the last error, and that
        # a rerun resumes
        last = " ".join(out.strip().splitlines()[-3:])
        assert "the exchange stopped answering: GET /fapi/v1/" in last, last
        assert "attempts" in last and "run the same command again" in last, last
        # nothing half-written: what is stored is whole, the rest is collected next time
        stored, want = series(root), series(clean)
        assert len(stored) < len(want)
        for name, frame in stored.items():
            pd.testing.assert_frame_equal(frame, want[name], check_exact=True, obj=name)
        server.start()
        again = pipeline(root, server.base_url, "--start-from", "data_collection",
                         "--stop-at", "data_collection")  # fmt: skip
    finally:
        server.stop()
    assert again.exit_code == 0, again.output[-3000:]
    assert_same_series(clean, root)


def test_an_address_that_is_not_the_aster_api_is_named_as_such(tmp_path) -> None:
    import http.server
    import threading

    from asterai.config import load_settings
    from asterai.pipeline.runner import ExchangeUnreachable, exchange_clock

    # a real web server on loopback that answers 404 pages: a wrong --base-url
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(tmp_path), **k
    )
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        settings = load_settings(tmp_path, base_url=url, exchange=FAST)
        with pytest.raises(ExchangeUnreachable, match="not as the Aster futures API"):
            exchange_clock(settings)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_pre_check_retries_a_bad_spell_and_fails_fast_when_nothing_answers(recording):
    from asterai.config import load_settings
    from asterai.pipeline.runner import ExchangeUnreachable, exchange_clock

    # most answers fail (5xx, dropped): the check waits them out like any step
    with ReplayServer(recording, faults="5xx=0.5,drop=0.3", seed=5) as server:
        settings = load_settings(Path("."), base_url=server.base_url, exchange=FAST)
        assert exchange_clock(settings) == server.now_ms
        served = server.stats.snapshot()
    assert sum(served["faults"].values()) >= 1, served
    # nothing listening: unreachable, with the cause, within seconds
    offline = load_settings(Path("."), base_url="http://127.0.0.1:9", exchange=FAST)
    started = time.monotonic()
    with pytest.raises(
        ExchangeUnreachable, match="cannot reach the exchange at http://127.0.0.1:9"
    ):
        exchange_clock(offline)
    assert time.monotonic() - started < 5.0
