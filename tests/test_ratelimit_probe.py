"""The rate-limit probe against a real ReplayServer on loopback serving the real recording."""

from __future__ import annotations

import json
import math
import time

import pytest
from conftest import REAL_DATA as REAL
from conftest import SKIP_REASON

from asterai.config import load_settings
from asterai.data.discovery import run_discovery
from asterai.data.ratelimit_probe import run_ratelimit_probe
from asterai.exchange.replay import ReplayServer
from asterai.exchange.replay.recording import load_recording
from asterai.paths import DataPaths

if not (REAL / "klines").is_dir():
    pytest.skip(SKIP_REASON, allow_module_level=True)

LIMIT = 2400
N_SYMBOLS = 19


@pytest.fixture(scope="module")
def recording():
    return load_recording(REAL)


@pytest.fixture(scope="module")
def server(recording):
    with ReplayServer(recording, window_seconds=60, weight_limit=LIMIT) as srv:
        yield srv


@pytest.fixture(scope="module")
def run(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    settings = load_settings(root, base_url=server.base_url)
    before = server.stats.snapshot()
    doc = run_ratelimit_probe(settings, samples=20)
    after = server.stats.snapshot()
    return {
        "doc": doc,
        "root": root,
        "settings": settings,
        "server_weight": after["weight"] - before["weight"],
        "server_429": after["sent_429"] - before["sent_429"],
        "server_requests": after["requests"] - before["requests"],
    }


def test_no_429_and_within_five_percent(run):
    doc = run["doc"]
    assert run["server_429"] == 0
    assert doc["probe"]["rate_limited"] == 0 and doc["probe"]["stopped_by"] is None
    assert run["server_requests"] == 21  # exchangeInfo + 20 samples
    assert run["server_weight"] == 21
    assert doc["probe"]["weight_used"] == 21 < 0.05 * LIMIT
    assert doc["ok"] is True and doc["problems"] == []


def test_declared_limits(run, server):
    declared = run["doc"]["declared"]
    assert declared["request_weight"] == {
        "limit": LIMIT,
        "window_seconds": 60.0,
        "header": "X-MBX-USED-WEIGHT-1M",
    }
    assert {r["rateLimitType"] for r in declared["rate_limits"]} >= {"REQUEST_WEIGHT"}
    assert run["doc"]["server_time"] == server.now_ms == 1760502565855
    assert run["doc"]["base_url"] == server.base_url


def test_weight_header_confirmed(run):
    header = run["doc"]["probe"]["header"]
    assert header["name"] == "X-MBX-USED-WEIGHT-1M"
    assert header["present"] == 21 and header["missing"] == 0
    assert header["unconfirmed_steps"] == 0
    # a fixed window may roll over during the probe: a reset, not a mismatch
    assert header["confirmed_steps"] + header["window_resets"] == 20
    assert header["confirmed"] is True


def test_latency_percentiles(run):
    lat = run["doc"]["probe"]["latency"]
    assert lat["samples"] == 20
    assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]


def test_recommendations(run):
    rec = run["doc"]["recommendations"]
    page = rec["kline_page"]
    assert page["limit"] == 499 and page["weight"] == 2
    assert page["weight_per_bar"] == pytest.approx(0.004, abs=1e-5)
    assert [(t["limit"], t["weight"]) for t in page["tiers"]] == [
        (99, 1),
        (499, 2),
        (1000, 5),
        (1500, 10),
    ]
    conc = rec["concurrency"]
    assert conc["requests_per_second_at_budget"] == LIMIT / 60 / 2
    p50_s = run["doc"]["probe"]["latency"]["p50_ms"] / 1000
    assert conc["value"] == min(8, max(1, math.ceil(LIMIT / 60 / 2 * p50_s)))
    assert 1 <= conc["value"] <= 8


def test_collection_estimate_for_19_symbols_by_3_intervals(run):
    est = run["doc"]["recommendations"]["collection_estimate"]
    settings = run["settings"]
    assert est["symbols"] == N_SYMBOLS  # no discovery file: every symbol of exchangeInfo
    assert est["intervals"] == ["1h", "4h", "1d"] and est["days"] == 180
    hours = {"1h": 1, "4h": 4, "1d": 24}
    pages = sum(math.ceil(180 * 24 / hours[iv] / 499) for iv in hours)  # 9 + 3 + 1
    assert pages == 13
    per_symbol = pages * 2 + 3 + math.ceil(180 * 3 / 1000)  # pages, first-bar probes, funding
    assert est["weight_per_symbol"] == per_symbol == 30
    assert est["weight"] == N_SYMBOLS * per_symbol == 570
    assert est["seconds_at_declared_limit"] == pytest.approx(570 / LIMIT * 60)
    assert "weight" in est["formula"] and "window_s" in est["formula"]
    assert settings.collect.page_limit == est["page_limit"] == 499


def test_file_written(run):
    path = DataPaths.at(run["root"]).rate_limit_test
    assert path == run["root"] / "data" / "aster_rate_limit_test.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(run["doc"]))


def test_samples_are_capped_at_five_percent(server, tmp_path):
    before = server.stats.snapshot()
    doc = run_ratelimit_probe(load_settings(tmp_path, base_url=server.base_url), samples=1000)
    after = server.stats.snapshot()
    assert doc["probe"]["samples_capped"] is True
    assert doc["probe"]["samples_sent"] == 0.05 * LIMIT - 1  # exchangeInfo takes one
    assert after["weight"] - before["weight"] <= 0.05 * LIMIT
    assert after["sent_429"] == before["sent_429"]
    assert doc["ok"] is True


def test_estimate_counts_trainable_symbols_of_the_discovery_file(server, tmp_path):
    settings = load_settings(tmp_path, base_url=server.base_url)
    discovery = run_discovery(settings)
    doc = run_ratelimit_probe(settings, samples=4)
    est = doc["recommendations"]["collection_estimate"]
    assert est["symbols"] == discovery["counts"]["trainable"] == 15
    assert "discovery" in est["symbols_source"]
    assert est["weight"] == 15 * 30


def test_probe_stops_at_the_first_429(recording, tmp_path):
    # the replay answers a share of requests with a spurious 429 (a seeded draw)
    with ReplayServer(
        recording, window_seconds=60, weight_limit=LIMIT, faults="429=0.2", seed=3
    ) as srv:
        doc = run_ratelimit_probe(load_settings(tmp_path, base_url=srv.base_url), samples=20)
        stats = srv.stats.snapshot()
    assert stats["sent_429"] == 1
    assert doc["probe"]["rate_limited"] == 1
    assert "429" in doc["probe"]["stopped_by"]
    # nothing was sent after the 429: exchangeInfo + the samples sent, the last one refused
    assert stats["requests"] == 1 + doc["probe"]["samples_sent"]
    assert doc["probe"]["samples_sent"] < 20
    # a 429 is information, not a failure: recorded, waited out, and the collection is
    # told to stay below it
    assert doc["ok"] is True and doc["problems"] == []
    assert any("429" in n for n in doc["notes"])
    met = doc["met_limit"]
    assert met["retry_after_s"] == 1 and met["waited_s"] == 1
    assert met["samples_sent"] == doc["probe"]["samples_sent"]
    client = doc["recommendations"]["client"]
    # below the rate it was met at (the server's own count), never under a quarter
    used = met["used_weight_reported"] / met["limit"]
    assert client["weight_safety"] == pytest.approx(min(0.5, max(0.25, used)))
    assert client["concurrency"] == 1


def test_the_collection_adopts_the_probes_gentler_client_after_a_429(recording, tmp_path):
    from asterai.data.ratelimit_probe import client_settings

    with ReplayServer(
        recording, window_seconds=60, weight_limit=LIMIT, faults="429=0.2", seed=3
    ) as srv:
        settings = load_settings(tmp_path, base_url=srv.base_url, exchange={"concurrency": 6})
        doc = run_ratelimit_probe(settings, samples=20)
    gentler = client_settings(settings, doc)
    # the collector reads it from the probe's file: the same recommendation
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(doc))
    assert client_settings(settings, path) == gentler
    path.write_text("{damaged")
    assert client_settings(settings, path) == settings
    assert gentler.exchange.weight_safety == doc["recommendations"]["client"]["weight_safety"]
    assert gentler.exchange.weight_safety <= 0.5 and gentler.exchange.concurrency == 1
    # never less cautious than the configuration, and only for the exchange probed
    careful = settings.model_copy(
        update={"exchange": settings.exchange.model_copy(update={"weight_safety": 0.2})}
    )
    assert client_settings(careful, doc).exchange.weight_safety == 0.2
    # and an old probe says nothing about today
    stale = doc | {"generated_at": "2020-01-01T00:00:00Z"}
    assert client_settings(settings, stale) == settings
    other = load_settings(tmp_path, base_url="http://127.0.0.1:9")
    assert client_settings(other, doc) == other
    # a clean probe changes nothing
    with ReplayServer(recording, window_seconds=60, weight_limit=LIMIT) as srv:
        settings = load_settings(tmp_path, base_url=srv.base_url)
        clean = run_ratelimit_probe(settings, samples=5)
    assert clean["met_limit"] is None and client_settings(settings, clean) == settings


def test_an_exchange_that_stops_answering_fails_the_probe_quickly(recording, tmp_path):
    # every answer a 5xx: exchangeInfo never comes, so the limit is unknown
    with ReplayServer(recording, faults="5xx=1", seed=1) as srv:
        settings = load_settings(
            tmp_path, base_url=srv.base_url,
            exchange={"backoff_base_s": 0.01, "backoff_max_s": 0.02},
        )  # fmt: skip
        started = time.monotonic()
        doc = run_ratelimit_probe(settings, samples=20)
        stats = srv.stats.snapshot()
    assert doc["ok"] is False
    assert any("exchangeInfo failed" in p for p in doc["problems"]), doc["problems"]
    # the probe's own client: a few retries, never the collection's long budget
    assert stats["requests"] <= 6 and time.monotonic() - started < 10
