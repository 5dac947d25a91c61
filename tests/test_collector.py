"""Collection against the replay server over loopback, on the real recording.

Each test states one promise of ``asterai collect``: exact data, weight safety,
fault tolerance, incremental and resumable runs, clear errors on bad input.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import FAST_EXCHANGE

from asterai.cli import main
from asterai.config import load_settings
from asterai.data.collector import collect
from asterai.data.store import read_series, to_epoch_ms
from asterai.exchange.replay import FaultSpec, ReplayServer
from asterai.exchange.replay.recording import load_recording
from asterai.intervals import interval_ms
from asterai.paths import DataPaths

INTERVALS = ("1h", "4h", "1d")
HOUR = 3_600_000


def recorded_symbols(real_data: Path) -> list[str]:
    return sorted({p.name.rsplit("_", 1)[0] for p in (real_data / "klines").glob("*_1h.parquet")})


def recorded_closed_bars(real_data: Path, symbol: str, interval: str) -> pd.DataFrame:
    """The recording's bars minus the last one, which was still open when recorded."""
    frame = pd.read_parquet(real_data / "klines" / f"{symbol}_{interval}.parquet")
    return frame.iloc[:-1]


def run_collect(root: Path, base_url: str, symbols: list[str], **exchange) -> object:
    settings = load_settings(root, base_url=base_url, exchange={**FAST_EXCHANGE, **exchange})
    return asyncio.run(collect(settings, symbols=symbols))


def stored(root: Path) -> dict[str, pd.DataFrame]:
    hist = DataPaths.at(root).historical
    return {
        p.name: read_series(p, "funding" if "funding" in p.name else "klines").frame
        for p in sorted(hist.glob("*.parquet"))
    }


def assert_same_data(a: Path, b: Path) -> None:
    left, right = stored(a), stored(b)
    assert sorted(left) == sorted(right)
    for name in left:
        pd.testing.assert_frame_equal(left[name], right[name], check_exact=True, obj=name)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, recording, real_data) -> Path:
    """Every recorded symbol collected once, with no faults: the reference."""
    root = tmp_path_factory.mktemp("clean")
    with ReplayServer(recording) as server:
        report = run_collect(root, server.base_url, recorded_symbols(real_data))
    assert report.ok, report.to_json()
    return root


def test_collected_bars_equal_the_recordings_closed_bars(clean_run: Path, real_data: Path) -> None:
    symbols = recorded_symbols(real_data)
    assert len(symbols) == 19
    for symbol in symbols:
        for interval in INTERVALS:
            got = read_series(DataPaths.at(clean_run).klines(symbol, interval), "klines").frame
            want = recorded_closed_bars(real_data, symbol, interval)
            assert len(got) == len(want), (symbol, interval)
            opens = to_epoch_ms(got["open_time"])
            np.testing.assert_array_equal(opens, to_epoch_ms(want.index))
            np.testing.assert_array_equal(
                to_epoch_ms(got["close_time"]), opens + interval_ms(interval) - 1
            )
            for ours, theirs in [
                ("open", "open"),
                ("high", "high"),
                ("low", "low"),
                ("close", "close"),
                ("volume", "volume"),
                ("quote_volume", "quote_volume"),
                ("taker_buy_base", "taker_buy_volume"),
            ]:
                np.testing.assert_array_equal(
                    got[ours].to_numpy(),
                    want[theirs].to_numpy(),
                    err_msg=f"{symbol} {interval} {ours}",
                )
            # fields the recording did not keep stay missing, never invented
            assert got["trades"].isna().all() and got["taker_buy_quote"].isna().all()


def test_the_bar_still_open_at_the_exchange_clock_is_never_stored(
    clean_run: Path, recording
) -> None:
    for interval in INTERVALS:
        frame = read_series(DataPaths.at(clean_run).klines("BTCUSDT", interval), "klines").frame
        assert to_epoch_ms(frame["close_time"]).max() < recording.now_ms
    last_1h = (
        read_series(DataPaths.at(clean_run).klines("BTCUSDT", "1h"), "klines")
        .frame["open_time"]
        .iloc[-1]
    )
    assert last_1h == pd.Timestamp("2025-10-15 03:00", tz="UTC")


def test_every_file_carries_its_provenance(clean_run: Path, recording) -> None:
    path = DataPaths.at(clean_run).klines("BTCUSDT", "1h")
    series = read_series(path, "klines")
    prov = series.provenance
    assert prov["source"] == "aster" and prov["endpoint"] == "/fapi/v1/klines"
    assert prov["symbol"] == "BTCUSDT" and prov["interval"] == "1h"
    assert prov["rows"] == len(series.frame) == 742
    assert prov["first_open_time"] == to_epoch_ms(series.frame["open_time"])[0]
    assert prov["last_open_time"] == to_epoch_ms(series.frame["open_time"])[-1]
    assert prov["collected_at"] == recording.now_ms
    # the first-bar probe (it decides where the series starts), then pages of 499 and 243 bars
    assert prov["requests"] == len(prov["sha256"]) == 3
    assert prov["listing_open_time"] == to_epoch_ms(series.frame["open_time"])[0]
    assert all(len(h) == 64 for h in prov["sha256"])
    funding = read_series(DataPaths.at(clean_run).funding("BTCUSDT"), "funding")
    assert funding.provenance["endpoint"] == "/fapi/v1/fundingRate"
    assert len(funding.frame) == 0  # the recording holds no funding history; nothing is invented


def test_reports_are_written(clean_run: Path) -> None:
    paths = DataPaths.at(clean_run)
    report = json.loads(paths.collection_report.read_text())
    assert report["ok"] and report["totals"]["failed"] == 0
    assert report["totals"]["series"] == 19 * 3
    btc = next(s for s in report["series"] if s["symbol"] == "BTCUSDT" and s["interval"] == "1h")
    assert (
        btc["rows"] == 742
        and btc["missing_share"] == 0
        and btc["gaps"] == 0
        and btc["quality_score"] == 100.0
    )
    assert btc["requests"] == 3 and btc["weight"] == 1 + 2 + 2  # first-bar probe, 499 + 243 bars
    summary = pd.read_csv(paths.collection_summary)
    assert len(summary) == 19 * 4 and set(summary["status"]) == {"ok"}


def test_a_shortened_rate_window_is_never_crossed(tmp_path: Path, recording, real_data) -> None:
    symbols = recorded_symbols(real_data)
    with ReplayServer(recording, window_seconds=1, weight_limit=30) as server:
        started = time.perf_counter()
        report = run_collect(tmp_path, server.base_url, symbols, concurrency=8)
        elapsed = time.perf_counter() - started
        assert server.stats.sent_429 == 0 and server.stats.sent_418 == 0
    assert report.ok and report.client["rate_limited_429"] == 0
    # the limiter really had to hold back: more weight than one window allows
    assert report.client["weight"] > 3 * 30 and elapsed > 2.0


def test_faults_do_not_change_the_final_data(
    tmp_path: Path, clean_run: Path, recording, real_data
) -> None:
    faults = FaultSpec.parse("5xx=0.1,429=0.03,slow=0.05:0.2,truncate=0.05,drop=0.05")
    with ReplayServer(recording, faults=faults, seed=7) as server:
        report = run_collect(tmp_path, server.base_url, recorded_symbols(real_data), max_retries=12)
        injected = server.stats.faults
    assert report.ok, report.to_json()["series"]
    assert sum(injected.values()) >= 10 and report.client["retries"] > 0
    assert_same_data(tmp_path, clean_run)


def test_a_second_run_fetches_only_new_bars(tmp_path: Path, clean_run: Path, real_data) -> None:
    symbols = recorded_symbols(real_data)
    earlier = load_recording(real_data, now_ms=1760502565855 - 30 * HOUR)
    with ReplayServer(earlier) as server:
        first = run_collect(tmp_path, server.base_url, symbols)
    assert first.ok
    btc = read_series(DataPaths.at(tmp_path).klines("BTCUSDT", "1h"), "klines").frame
    assert len(btc) == 742 - 30
    with ReplayServer(load_recording(real_data)) as server:
        second = run_collect(tmp_path, server.base_url, symbols)
        klines_requests = server.stats.paths.get("/fapi/v1/klines", 0)
    assert second.ok
    new = {(r.symbol, r.interval): r.new_rows for r in second.series}
    assert new[("BTCUSDT", "1h")] == 30
    # one page per stored series; a series with no closed bar yet (1000CHEEMSUSDT's
    # first day) needs its first-bar probe as well
    empty_before = [r for r in first.series if r.status == "empty"]
    assert [(r.symbol, r.interval) for r in empty_before] == [("1000CHEEMSUSDT", "1d")]
    assert klines_requests == len(symbols) * len(INTERVALS) + len(empty_before)
    assert_same_data(tmp_path, clean_run)
    prov = read_series(DataPaths.at(tmp_path).klines("BTCUSDT", "1h"), "klines").provenance
    assert [c["rows_added"] for c in prov["collections"]] == [712, 30]
    assert prov["requests"] == len(prov["sha256"]) == 4  # probe + 2 pages, then 1 page


def test_killed_mid_run_and_resumed_equals_a_clean_run(
    tmp_path: Path, clean_run: Path, recording, real_data
) -> None:
    symbols = ",".join(recorded_symbols(real_data))
    hist = DataPaths.at(tmp_path).historical
    env = {**os.environ, "ASTERAI_EXCHANGE__BACKOFF_BASE_S": "0.01"}
    # a tight window makes the run last long enough to be killed in the middle
    with ReplayServer(recording, window_seconds=1, weight_limit=40) as server:
        cmd = [
            sys.executable,
            "-m",
            "asterai.cli",
            "collect",
            "--data-root",
            str(tmp_path),
            "--base-url",
            server.base_url,
            "--symbols",
            symbols,
        ]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(list(hist.glob("*.parquet"))) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        written = len(list(hist.glob("*.parquet")))
        assert 0 < written < 19 * 4, "the kill must land mid-run"
        resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_data(tmp_path, clean_run)
    assert not list(hist.glob("*.asterai-tmp")), "no temp files are left behind"


# -- bad input -----------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every stored data file, byte for byte."""
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.parquet"))}


@pytest.fixture
def collected_root(tmp_path: Path, clean_run: Path) -> Path:
    """A data root holding a copy of a clean collection of three symbols."""
    src, dst = DataPaths.at(clean_run).historical, DataPaths.at(tmp_path).historical
    dst.mkdir(parents=True)
    for sym in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        for p in src.glob(f"{sym}_*.parquet"):
            (dst / p.name).write_bytes(p.read_bytes())
    return tmp_path


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_unknown_symbol_is_a_usage_error_and_stores_nothing(collected_root: Path, replay) -> None:
    before = snapshot(DataPaths.at(collected_root).historical)
    result = cli(
        "collect",
        "--data-root",
        str(collected_root),
        "--base-url",
        replay.base_url,
        "--symbols",
        "BTCUSDT,NOPEUSDT",
    )
    assert result.exit_code == 2
    assert "unknown symbol(s) NOPEUSDT" in result.output
    assert snapshot(DataPaths.at(collected_root).historical) == before


def test_bad_interval_is_a_usage_error(collected_root: Path, replay) -> None:
    before = snapshot(DataPaths.at(collected_root).historical)
    result = cli(
        "collect",
        "--data-root",
        str(collected_root),
        "--base-url",
        replay.base_url,
        "--symbols",
        "BTCUSDT",
        "--intervals",
        "1h,7h",
    )
    assert result.exit_code == 2 and "unknown interval '7h'" in result.output
    assert replay.stats.requests == 0, "bad input is refused before any request"
    assert snapshot(DataPaths.at(collected_root).historical) == before


def test_unreachable_base_url_fails_clearly(collected_root: Path) -> None:
    before = snapshot(DataPaths.at(collected_root).historical)
    env = {"ASTERAI_EXCHANGE__MAX_RETRIES": "1", "ASTERAI_EXCHANGE__BACKOFF_BASE_S": "0.01"}
    result = CliRunner(env=env).invoke(
        main,
        [
            "collect",
            "--data-root",
            str(collected_root),
            "--base-url",
            "http://127.0.0.1:9",
            "--symbols",
            "BTCUSDT",
        ],
    )
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:9" in result.output
    assert snapshot(DataPaths.at(collected_root).historical) == before


def test_a_corrupt_file_is_reported_and_left_alone_while_the_rest_is_collected(
    collected_root: Path, replay
) -> None:
    paths = DataPaths.at(collected_root)
    bad = paths.klines("ETHUSDT", "1h")
    bad.write_bytes(bad.read_bytes()[:300])
    corrupt = bad.read_bytes()
    result = cli(
        "collect",
        "--data-root",
        str(collected_root),
        "--base-url",
        replay.base_url,
        "--symbols",
        "ETHUSDT,UNIUSDT",
    )
    assert result.exit_code == 1
    assert str(bad) in result.output and "unreadable parquet" in result.output
    assert bad.read_bytes() == corrupt, "the gate never rewrites a file it cannot read"
    assert paths.klines("UNIUSDT", "1h").exists() and paths.klines("ETHUSDT", "4h").exists()
    report = json.loads(paths.collection_report.read_text())
    failed = [(s["symbol"], s["interval"]) for s in report["series"] if s["status"] == "failed"]
    assert failed == [("ETHUSDT", "1h")]


def test_named_untrainable_symbol_is_collected_with_a_warning(tmp_path: Path, replay) -> None:
    paths = DataPaths.at(tmp_path)
    paths.data_dir.mkdir(parents=True)
    paths.discovery.write_text(
        json.dumps(
            {
                "symbols": [
                    {
                        "symbol": "1INCHUSDT",
                        "trainable": False,
                        "reason": "no trading: constant price and zero volume",
                    }
                ]
            }
        )
    )
    settings = load_settings(tmp_path, base_url=replay.base_url, collect={"intervals": ("1d",)})
    report = asyncio.run(collect(settings, symbols=["1INCHUSDT"]))
    assert report.ok and any("1INCHUSDT is not trainable" in w for w in report.warnings)
    assert paths.klines("1INCHUSDT", "1d").exists()


def test_without_names_every_symbol_with_history_is_collected_dead_ones_too(
    tmp_path: Path, replay
) -> None:
    """No survivorship at the source: a market dead today is part of the past."""
    paths = DataPaths.at(tmp_path)
    paths.data_dir.mkdir(parents=True)
    paths.discovery.write_text(
        json.dumps(
            {
                "symbols": [
                    {"symbol": "BTCUSDT", "trainable": True, "history_bars": 742},
                    {"symbol": "AIUSDT", "trainable": False, "reason": "dead", "history_bars": 720},
                    {"symbol": "ETHUSDT", "trainable": False, "reason": "x", "history_bars": 0},
                ]
            }
        )
    )
    settings = load_settings(tmp_path, base_url=replay.base_url, collect={"intervals": ("1d",)})
    report = asyncio.run(collect(settings))
    assert report.symbols == ["BTCUSDT", "AIUSDT"]  # not ETHUSDT: discovery found no bars
    assert paths.klines("AIUSDT", "1d").exists()


def test_a_file_without_provenance_is_never_extended(collected_root: Path, replay) -> None:
    """Merging new bars into an unverified file would stamp its rows as real exchange data."""
    paths = DataPaths.at(collected_root)
    target = paths.klines("BTCUSDT", "1h")
    frame = read_series(target, "klines").frame.iloc[:500]
    frame.to_parquet(target)  # same bars, no provenance record
    before = target.read_bytes()
    result = cli(
        "collect",
        "--data-root",
        str(collected_root),
        "--base-url",
        replay.base_url,
        "--symbols",
        "BTCUSDT",
        "--intervals",
        "1h",
    )
    assert result.exit_code == 1
    assert (
        "BTCUSDT_1h.parquet: unverified" in result.output
        and "no asterai.provenance" in result.output
    )
    assert target.read_bytes() == before


def test_a_longer_window_backfills_once_and_then_costs_nothing(tmp_path: Path, replay) -> None:
    short = load_settings(
        tmp_path,
        base_url=replay.base_url,
        collect={"days": 10, "intervals": ("1h",), "funding": False},
    )
    assert asyncio.run(collect(short, symbols=["BTCUSDT"])).ok
    assert len(read_series(DataPaths.at(tmp_path).klines("BTCUSDT", "1h"), "klines").frame) < 300
    longer = load_settings(
        tmp_path,
        base_url=replay.base_url,
        collect={"days": 60, "intervals": ("1h",), "funding": False},
    )
    second = asyncio.run(collect(longer, symbols=["BTCUSDT"]))
    assert second.series[0].status == "ok"
    assert len(read_series(DataPaths.at(tmp_path).klines("BTCUSDT", "1h"), "klines").frame) == 742
    before = replay.stats.paths.get("/fapi/v1/klines", 0)
    third = asyncio.run(collect(longer, symbols=["BTCUSDT"]))
    assert third.series[0].status == "up-to-date"
    assert replay.stats.paths.get("/fapi/v1/klines", 0) == before, (
        "the listing is known: no probe, no page"
    )


def ban_the_ip(server: ReplayServer) -> None:
    """Another program on this IP ignores 429s until the exchange bans the IP."""
    import httpx

    with httpx.Client(base_url=server.base_url) as other:
        for _ in range(50):
            if other.get("/fapi/v1/exchangeInfo").status_code == 418:
                return
    raise AssertionError("the replay server never banned the IP")


def test_an_ip_ban_stops_the_collection_at_once(tmp_path: Path, recording) -> None:
    with ReplayServer(recording, window_seconds=5, weight_limit=5) as server:
        ban_the_ip(server)
        bans_before = server.stats.sent_418
        requests_before = server.stats.requests
        result = cli(
            "collect",
            "--data-root",
            str(tmp_path),
            "--base-url",
            server.base_url,
            "--symbols",
            "BTCUSDT",
        )
        sent = server.stats.requests - requests_before
        assert server.stats.sent_418 == bans_before + 1
    assert result.exit_code == 1 and "banned this IP (HTTP 418" in result.output
    assert sent == 1, "nothing is sent after the first 418"
    assert not list(DataPaths.at(tmp_path).historical.glob("*.parquet"))


def test_excluded_symbols_are_not_collected(tmp_path: Path, replay) -> None:
    from asterai.data.discovery import run_discovery

    settings = load_settings(tmp_path, base_url=replay.base_url, exchange=FAST_EXCHANGE)
    run_discovery(settings)
    result = cli(
        "collect", "--data-root", str(tmp_path), "--base-url", replay.base_url,
        "--intervals", "1d", "--days", "5", "--exclude", "BTCUSDT,solusdt",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    collected = {
        p.name.split("_")[0] for p in DataPaths.at(tmp_path).historical.glob("*_1d.parquet")
    }
    assert "ETHUSDT" in collected and not {"BTCUSDT", "SOLUSDT"} & collected
    assert "excluded by you, not collected: BTCUSDT, SOLUSDT" in result.output

    requests = replay.stats.requests
    for bad, says in (
        ("NOSUCHUSDT", "--exclude: unknown symbol(s) NOSUCHUSDT"),
        ("BTC/USDT", "not a symbol name"),
    ):
        result = CliRunner().invoke(
            main, ["collect", "--data-root", str(tmp_path), "--base-url", replay.base_url,
                   "--exclude", bad],
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert says in result.output
    result = cli(
        "collect", "--data-root", str(tmp_path), "--base-url", replay.base_url,
        "--symbols", "ETHUSDT", "--exclude", "ETHUSDT",
    )  # fmt: skip
    assert result.exit_code == 2 and "named in --symbols and excluded" in result.output
    assert replay.stats.requests - requests <= 3  # refused after exchangeInfo, before klines
