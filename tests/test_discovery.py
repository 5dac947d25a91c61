"""Discovery against a real ReplayServer on loopback serving the real recording."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pandas as pd
import pytest
from conftest import REAL_DATA as REAL
from conftest import SKIP_REASON

from asterai.config import load_settings
from asterai.data.discovery import (
    discover,
    discovery_plan,
    in_us_session,
    run_discovery,
    strip_multiplier,
)
from asterai.exchange.client import AsterClient
from asterai.exchange.errors import ExchangeError
from asterai.exchange.replay import ReplayServer
from asterai.exchange.replay.recording import load_recording
from asterai.paths import DataPaths

if not (REAL / "klines").is_dir():
    pytest.skip(SKIP_REASON, allow_module_level=True)

DEAD = ("1INCHUSDT", "AIUSDT", "ALGOUSDT")
NEW = ("2ZUSDT", "4USDT", "1000CHEEMSUSDT")
MAJORS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "ADAUSDT")
N_SYMBOLS = 19


@pytest.fixture(scope="module")
def server():
    with ReplayServer(load_recording(REAL), window_seconds=60, weight_limit=2400) as srv:
        yield srv


@pytest.fixture(scope="module")
def run(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("discovery")
    settings = load_settings(root, base_url=server.base_url)
    weight_before = server.stats.weight
    doc = run_discovery(settings)
    return {
        "doc": doc,
        "root": root,
        "settings": settings,
        "server_weight": server.stats.weight - weight_before,
    }


def by_symbol(doc: dict) -> dict[str, dict]:
    return {s["symbol"]: s for s in doc["symbols"]}


def test_lists_every_recorded_perpetual(run):
    doc = run["doc"]
    assert len(doc["symbols"]) == N_SYMBOLS
    assert doc["counts"]["total"] == N_SYMBOLS
    assert (
        sum(doc["counts"][c] for c in ("major", "alt", "new_listing", "stock_perpetual", "dead"))
        == N_SYMBOLS
    )
    assert doc["server_time"] == 1760502565855
    assert doc["server_time_iso"] == "2025-10-15T04:29:25.855Z"
    assert doc["settings"]["activity_lookback_hours"] == 168
    assert doc["problems"] == []


def test_dead_symbols_are_dead_and_untrainable(run):
    symbols = by_symbol(run["doc"])
    for name in DEAD:
        s = symbols[name]
        assert s["category"] == "dead", name
        assert s["trainable"] is False
        assert s["reason"] == "no trading: constant price and zero volume over the last 168 hours"
        assert s["activity"]["zero_volume_share"] == 1.0
        assert s["activity"]["distinct_closes"] == 1
    assert run["doc"]["counts"]["dead"] == len(DEAD)


def test_aapl_is_the_only_stock_perpetual_and_trainable(run):
    symbols = by_symbol(run["doc"])
    aapl = symbols["AAPLUSDT"]
    assert aapl["category"] == "stock_perpetual"
    assert aapl["trainable"] is True and aapl["reason"] is None
    act = aapl["activity"]
    assert 0.2 <= act["zero_volume_share"] <= 0.95
    assert act["off_session_zero_volume_share"] > 3 * act["session_zero_volume_share"]
    assert [n for n, s in symbols.items() if s["category"] == "stock_perpetual"] == ["AAPLUSDT"]


def test_new_listings_and_short_history(run):
    symbols = by_symbol(run["doc"])
    assert sorted(n for n, s in symbols.items() if s["category"] == "new_listing") == sorted(NEW)
    cheems = symbols["1000CHEEMSUSDT"]
    assert cheems["trainable"] is False
    assert "history" in cheems["reason"] and "48" in cheems["reason"]
    assert cheems["history_hours"] == 39  # hourly bars opened so far, the current one included
    assert cheems["history_bars"] == 38  # closed bars, fewer than min_history_bars = 48
    assert cheems["first_bar_time"] == "2025-10-13T14:00:00.000Z"
    assert symbols["2ZUSDT"]["trainable"] and symbols["4USDT"]["trainable"]
    assert symbols["2ZUSDT"]["first_bar_time"] == "2025-10-02T14:00:00.000Z"


def test_majors_and_alts(run):
    symbols = by_symbol(run["doc"])
    for name in MAJORS:
        assert symbols[name]["category"] == "major", name
        assert symbols[name]["trainable"] is True
    assert symbols["UNIUSDT"]["category"] == "alt"
    assert symbols["1000PEPEUSDT"]["category"] == "alt"  # PEPE is not in the default majors
    assert run["doc"]["counts"]["trainable"] == N_SYMBOLS - len(DEAD) - 1


def test_filters_from_exchange_info(run):
    symbols = by_symbol(run["doc"])
    assert symbols["BTCUSDT"]["filters"]["tick_size"] == 0.1
    assert symbols["ETHUSDT"]["filters"]["tick_size"] == 0.01
    # the replay declares no MIN_NOTIONAL: null, never a made-up 5
    assert all(s["filters"]["min_notional"] is None for s in symbols.values())
    assert symbols["BTCUSDT"]["status"] is None and symbols["BTCUSDT"]["onboard_date"] is None


def test_24h_volume_equals_recorded_hourly_volumes(run):
    doc = run["doc"]
    now = pd.Timestamp(doc["server_time"], unit="ms")
    bars = pd.read_parquet(REAL / "klines" / "BTCUSDT_1h.parquet")
    # the replay's 24 h window: bars opened after now - 24 h, up to now (the open bar included)
    window = bars[(bars.index > now - pd.Timedelta(days=1)) & (bars.index <= now)]
    assert len(window) == 24
    btc = by_symbol(doc)["BTCUSDT"]
    assert btc["volume_24h"] == pytest.approx(float(window["volume"].sum()), rel=1e-12)
    assert btc["quote_volume_24h"] == pytest.approx(float(window["quote_volume"].sum()), rel=1e-12)
    assert btc["trades_24h"] is None  # not recorded, served as null


def test_activity_is_measured_on_closed_bars_of_the_lookback(run):
    btc = by_symbol(run["doc"])["BTCUSDT"]
    assert btc["activity"]["bars"] == 168
    assert btc["activity"]["zero_volume_share"] == 0.0
    bars = pd.read_parquet(REAL / "klines" / "BTCUSDT_1h.parquet").iloc[:-1]  # last bar is open
    assert btc["activity"]["distinct_closes"] == bars["close"].iloc[-168:].nunique()


def test_file_is_written_and_parseable(run):
    path = DataPaths.at(run["root"]).discovery
    assert path == run["root"] / "data" / "aster_assets_discovery.json"
    on_disk = json.loads(path.read_text())
    assert on_disk == json.loads(json.dumps(run["doc"]))
    datetime.fromisoformat(on_disk["generated_at"])
    for key in (
        "generated_at",
        "server_time",
        "server_time_iso",
        "base_url",
        "asterai_version",
        "settings",
        "counts",
        "symbols",
    ):
        assert key in on_disk
    record = on_disk["symbols"][0]
    for key in (
        "symbol",
        "status",
        "contract_type",
        "base_asset",
        "quote_asset",
        "onboard_date",
        "filters",
        "volume_24h",
        "quote_volume_24h",
        "trades_24h",
        "price_change_pct_24h",
        "first_bar_time",
        "history_hours",
        "activity",
        "category",
        "trainable",
        "reason",
    ):
        assert key in record
    assert set(record["activity"]) >= {
        "bars",
        "zero_volume_share",
        "distinct_closes",
        "weekday_zero_volume_share",
        "weekend_zero_volume_share",
    }


def test_weight_matches_the_plan(run, server):
    doc = run["doc"]
    # /time (1) + exchangeInfo (1) + ticker/24hr without symbol (40) + fundingInfo (1)
    # + 19 x (first bar 1 + page 2)
    expected = 1 + 1 + 40 + 1 + N_SYMBOLS * 3
    assert doc["weight"]["planned"]["total"] == expected
    assert doc["weight"]["used"] == expected
    assert run["server_weight"] == expected
    assert discovery_plan(N_SYMBOLS, run["settings"])["total"] == expected


class _FlakyClient(AsterClient):
    """The real client; klines for one symbol fail, and exchangeInfo marks two symbols."""

    async def klines(self, symbol, interval, **kw):
        if symbol == "UNIUSDT":
            raise ExchangeError("simulated failure for UNIUSDT")
        return await super().klines(symbol, interval, **kw)

    async def load_exchange_info(self):
        info = await super().load_exchange_info()
        for entry in info["symbols"]:
            if entry["symbol"] == "ETHUSDT":
                entry["status"] = "SETTLING"
            if entry["symbol"] == "SOLUSDT":
                entry["underlyingType"] = "EQUITY"
        info["symbols"].append({"symbol": "BTCUSDT_251226", "contractType": "CURRENT_QUARTER"})
        return info


def test_failed_symbol_status_and_metadata_rules(server, tmp_path):
    settings = load_settings(tmp_path, base_url=server.base_url)

    async def main():
        async with _FlakyClient(settings.base_url, settings.exchange) as client:
            return await discover(client, settings)

    doc = asyncio.run(main())
    symbols = by_symbol(doc)
    uni = symbols["UNIUSDT"]
    assert uni["trainable"] is False and "simulated failure" in uni["reason"]
    assert uni["category"] == "alt" and uni["activity"] is None
    assert symbols["ETHUSDT"]["trainable"] is False and "SETTLING" in symbols["ETHUSDT"]["reason"]
    assert symbols["SOLUSDT"]["category"] == "stock_perpetual"
    assert "BTCUSDT_251226" not in symbols
    assert doc["skipped"] == [{"symbol": "BTCUSDT_251226", "contract_type": "CURRENT_QUARTER"}]
    assert any("UNIUSDT" in p for p in doc["problems"])
    assert len(doc["symbols"]) == N_SYMBOLS


def test_us_session_follows_new_york_time():
    def ms(text: str) -> int:
        return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)

    # October (EDT, UTC-4): 13:00 UTC = 09:00-10:00 ET overlaps the 09:30 open
    assert in_us_session(ms("2025-10-14T13:00:00"))
    assert in_us_session(ms("2025-10-14T19:00:00"))  # 15:00-16:00 ET
    assert not in_us_session(ms("2025-10-14T20:00:00"))  # 16:00 ET: closed
    assert not in_us_session(ms("2025-10-11T15:00:00"))  # Saturday
    # January (EST, UTC-5): 13:00 UTC = 08:00 ET, before the open
    assert not in_us_session(ms("2025-01-14T13:00:00"))
    assert in_us_session(ms("2025-01-14T14:00:00"))


def test_strip_multiplier():
    assert strip_multiplier("1000PEPE") == "PEPE"
    assert strip_multiplier("1000000MOG") == "MOG"
    assert strip_multiplier("1INCH") == "1INCH"
    assert strip_multiplier("1000") == "1000"


def test_an_ip_ban_stops_discovery_and_keeps_the_previous_file(tmp_path) -> None:
    from click.testing import CliRunner
    from test_collector import ban_the_ip

    from asterai.cli import main

    paths = DataPaths.at(tmp_path)
    paths.data_dir.mkdir(parents=True)
    paths.discovery.write_text('{"symbols": []}')
    with ReplayServer(load_recording(REAL), window_seconds=5, weight_limit=5) as server:
        ban_the_ip(server)
        before = server.stats.requests
        result = CliRunner().invoke(
            main, ["discover", "--data-root", str(tmp_path), "--base-url", server.base_url]
        )
        sent = server.stats.requests - before
    assert result.exit_code == 1 and "HTTP 418" in result.output
    assert sent == 1
    assert paths.discovery.read_text() == '{"symbols": []}'


def test_funding_caps_are_recorded_when_the_exchange_lists_them(run):
    # the recording holds no funding configuration: nothing is invented
    assert all(s["funding"] is None for s in run["doc"]["symbols"])
