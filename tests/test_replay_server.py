"""The replay server, over real HTTP on loopback, serving the real recording.

Every expected value is read from the recorded files themselves
(``../shared/aster-real``), never typed in from memory, except the few facts
the recording's README states (the clock, the open last bar, BTC/ETH ticks).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REAL_DATA as REAL
from conftest import SKIP_REASON

from asterai.exchange.replay import FaultSpec, ReplayServer
from asterai.exchange.replay.recording import RecordingError, format_number, load_recording
from asterai.intervals import INTERVAL_MS

if not (REAL / "klines").is_dir():
    pytest.skip(SKIP_REASON, allow_module_level=True)

RECORDING_CLOCK = 1760502565855  # 2025-10-15 04:29:25.855 UTC, BTCUSDT order book E
LAST_1H = 1760500800000  # 2025-10-15 04:00 UTC
LAST_1D = 1760486400000  # 2025-10-15 00:00 UTC
KL = "/fapi/v1/klines"
HDR = "X-MBX-USED-WEIGHT-1M"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def rec():
    return load_recording(REAL)


@pytest.fixture(scope="module")
def server(rec):
    with ReplayServer(rec) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


def frame(symbol: str, interval: str) -> pd.DataFrame:
    """The recorded parquet file, with ``open_time`` in ms as a column."""
    df = pd.read_parquet(REAL / "klines" / f"{symbol}_{interval}.parquet")
    df = df.copy()
    df["open_time"] = df.index.values.astype("datetime64[ms]").astype(np.int64)
    return df.reset_index(drop=True)


def assert_rows_match(rows: list, df: pd.DataFrame, interval: str) -> None:
    """Every value of a served page equals the recorded one; unrecorded fields are null."""
    assert len(rows) == len(df)
    step = INTERVAL_MS[interval]
    for row, (_, bar) in zip(rows, df.iterrows(), strict=True):
        assert len(row) == 12
        assert row[0] == bar.open_time
        for pos, name in ((1, "open"), (2, "high"), (3, "low"), (4, "close"), (5, "volume")):
            assert isinstance(row[pos], str) and "e" not in row[pos].lower()
            assert float(row[pos]) == bar[name], (name, row)
        assert row[6] == bar.open_time + step - 1
        assert float(row[7]) == bar.quote_volume
        assert row[8] is None  # number of trades: not recorded
        assert float(row[9]) == bar.taker_buy_volume
        assert row[10] is None  # taker-buy quote volume: not recorded
        assert row[11] is None  # ignored field: not recorded


def get_json(client: httpx.Client, path: str, **params):
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def error(client: httpx.Client, path: str, status: int, code: int, **params) -> str:
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "msg"} and body["code"] == code, body
    return body["msg"]


def wait_for_window_start(window: float) -> None:
    """Sleep until just after a fixed wall-clock window begins."""
    time.sleep(window - time.time() % window + 0.02)


# --------------------------------------------------------------------------- clock and klines


def test_clock_is_the_first_book_after_the_last_bar_opened(rec, client):
    assert rec.layout == "shared"
    assert rec.now_ms == RECORDING_CLOCK
    assert get_json(client, "/fapi/v1/time") == {"serverTime": RECORDING_CLOCK}
    assert get_json(client, "/fapi/v1/ping") == {}


def test_klines_latest_page_default_limit(client):
    df = frame("BTCUSDT", "1h")
    rows = get_json(client, KL, symbol="BTCUSDT", interval="1h")
    assert_rows_match(rows, df.iloc[-500:], "1h")
    assert rows[-1][0] == LAST_1H


def test_klines_start_only_end_only_and_both(client):
    df = frame("ETHUSDT", "1h")
    t = df.open_time.to_numpy()
    # startTime only (between two bars): the first `limit` bars at or after it
    rows = get_json(client, KL, symbol="ETHUSDT", interval="1h", startTime=t[100] - 1, limit=37)
    assert_rows_match(rows, df.iloc[100:137], "1h")
    # endTime only (exactly on a bar): the last `limit` bars at or before it, inclusive
    rows = get_json(client, KL, symbol="ETHUSDT", interval="1h", endTime=t[300], limit=50)
    assert_rows_match(rows, df.iloc[251:301], "1h")
    # both, fewer bars than limit: everything inside, both ends inclusive
    rows = get_json(client, KL, symbol="ETHUSDT", interval="1h", startTime=t[10], endTime=t[20])
    assert_rows_match(rows, df.iloc[10:21], "1h")
    # both, more bars than limit: the first `limit` from startTime
    rows = get_json(
        client, KL, symbol="ETHUSDT", interval="1h", startTime=t[10], endTime=t[600], limit=99
    )
    assert_rows_match(rows, df.iloc[10:109], "1h")
    # a whole series in one page, other intervals and a young listing
    for symbol, interval in (("SOLUSDT", "4h"), ("BTCUSDT", "1d"), ("1000CHEEMSUSDT", "1h")):
        d = frame(symbol, interval)
        rows = get_json(client, KL, symbol=symbol, interval=interval, startTime=0, limit=1500)
        assert_rows_match(rows, d, interval)
    # nothing after the clock, nothing before the listing
    assert get_json(client, KL, symbol="ETHUSDT", interval="1h", startTime=RECORDING_CLOCK) == []
    assert get_json(client, KL, symbol="ETHUSDT", interval="1h", endTime=t[0] - 1) == []
    # a valid interval that is not recorded
    assert get_json(client, KL, symbol="ETHUSDT", interval="3d") == []
    assert get_json(client, KL, symbol="ETHUSDT", interval="15m") == []


def test_last_bar_is_served_as_the_open_bar(client):
    now = get_json(client, "/fapi/v1/time")["serverTime"]
    for interval, open_time in (("1h", LAST_1H), ("4h", LAST_1H), ("1d", LAST_1D)):
        last = get_json(client, KL, symbol="BTCUSDT", interval=interval, limit=1)[0]
        assert last[0] == open_time
        assert last[6] > now  # its close time is still in the future: unclosed
        assert float(last[4]) == frame("BTCUSDT", interval).close.iloc[-1]


def test_an_earlier_clock_hides_later_bars(rec):
    df = frame("BTCUSDT", "1h")
    t = df.open_time.to_numpy()
    earlier = dataclasses.replace(rec, now_ms=int(t[400]) + 1234)
    with ReplayServer(earlier) as srv, httpx.Client(base_url=srv.base_url) as c:
        assert get_json(c, "/fapi/v1/time")["serverTime"] == int(t[400]) + 1234
        rows = get_json(c, KL, symbol="BTCUSDT", interval="1h", limit=10)
        assert_rows_match(rows, df.iloc[391:401], "1h")
        assert get_json(c, KL, symbol="BTCUSDT", interval="1h", startTime=t[401]) == []


def test_played_forward_bars_close_on_the_clock_and_only_closed_bars_are_served(rec):
    df = frame("BTCUSDT", "1h")
    t = df.open_time.to_numpy()
    start = int(t[500]) + 5_000  # bar 499 closed 5 s ago, bar 500 is open
    with (
        ReplayServer(rec, play_from_ms=start, clock_speed=0) as srv,
        httpx.Client(base_url=srv.base_url) as c,
    ):
        assert get_json(c, "/fapi/v1/time")["serverTime"] == start
        rows = get_json(c, KL, symbol="BTCUSDT", interval="1h", limit=3)
        assert_rows_match(rows, df.iloc[497:500], "1h")  # never the open bar 500
        srv.clock.advance(3_600_000)  # bar 500 closes
        rows = get_json(c, KL, symbol="BTCUSDT", interval="1h", limit=3)
        assert_rows_match(rows, df.iloc[498:501], "1h")
        # a stalled feed: the exchange's time goes on, no bar closes ...
        srv.clock.pause()
        srv.clock.advance(2 * 3_600_000)
        assert get_json(c, "/fapi/v1/time")["serverTime"] == start + 3 * 3_600_000
        rows = get_json(c, KL, symbol="BTCUSDT", interval="1h", limit=3)
        assert int(rows[-1][0]) == t[500]
        # ... and on resume every bar that closed meanwhile is there at once
        srv.clock.resume()
        rows = get_json(c, KL, symbol="BTCUSDT", interval="1h", limit=3)
        assert_rows_match(rows, df.iloc[500:503], "1h")
        # past the recording's end the still-open last bar never closes
        srv.clock.set(RECORDING_CLOCK + 10 * 3_600_000)
        rows = get_json(c, KL, symbol="BTCUSDT", interval="1h", limit=1)
        assert int(rows[-1][0]) == LAST_1H - 3_600_000
        with pytest.raises(ValueError, match="backwards"):
            srv.clock.set(start)


def drain(ws, wait_s: float = 0.5) -> dict[str, list[dict]]:
    """What a stream connection receives until it is quiet for ``wait_s``, by stream."""
    out: dict[str, list[dict]] = {}
    while True:
        try:
            m = json.loads(ws.recv(timeout=wait_s))
        except TimeoutError:
            return out
        out.setdefault(m["stream"], []).append(m["data"])


def test_kline_streams_push_each_bar_once_at_its_close_as_rest_serves_it(rec):
    """The replay's websocket kline streams: a bar is pushed when it closes on the
    clock (never an open bar, never one closed before the connection), once, with the
    values REST serves for it; a symbol's lag holds it back on both; unknown or too
    many streams are refused; ``drop_streams`` closes the connections."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    df = frame("BTCUSDT", "1h")
    t = df.open_time.to_numpy()
    start = int(t[500]) + 5_000  # bar 499 closed 5 s ago, bar 500 is open
    with (
        ReplayServer(rec, play_from_ms=start, clock_speed=0, streams=True) as srv,
        httpx.Client(base_url=srv.base_url) as c,
    ):
        names = "btcusdt@kline_1h/ethusdt@kline_1h/btcusdt@kline_4h"
        with connect(f"{srv.ws_url}/stream?streams={names}") as ws:
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.3)  # bar 499 closed before the connection: history
            srv.clock.advance(3_600_000)  # bar 500 closes
            got = [json.loads(ws.recv(timeout=5)) for _ in range(2)]
            assert sorted(m["stream"] for m in got) == ["btcusdt@kline_1h", "ethusdt@kline_1h"]
            btc = next(m["data"] for m in got if m["stream"] == "btcusdt@kline_1h")
            rest = get_json(c, KL, symbol="BTCUSDT", interval="1h", limit=1)[0]
            k = btc["k"]
            assert btc["e"] == "kline" and btc["s"] == "BTCUSDT" and k["x"] is True
            assert btc["E"] == start + 3_600_000  # the exchange's time at the push
            assert [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"],
                    k["V"], k["Q"]] == rest[:11]  # fmt: skip
            assert int(k["t"]) == t[500] and k["n"] is None and k["Q"] is None  # unrecorded
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.3)  # pushed once
            # a lagging symbol: neither REST nor its stream has its bar before the lag
            srv.clock.lag("ETHUSDT", 20_000)
            srv.clock.advance(3_600_000)  # bar 501 closes (and maybe a 4h bar)
            pushed = drain(ws)
            assert "btcusdt@kline_1h" in pushed and "ethusdt@kline_1h" not in pushed
            eth = get_json(c, KL, symbol="ETHUSDT", interval="1h", limit=1)[0]
            assert int(eth[0]) == t[500]
            srv.clock.advance(20_000)
            late = drain(ws)
            assert list(late) == ["ethusdt@kline_1h"]
            assert [int(m["k"]["t"]) for m in late["ethusdt@kline_1h"]] == [t[501]]
            assert srv.stream_connections == 1
            assert srv.drop_streams() == 1
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=5)
        for bad, why in [("/stream?streams=foousdt@kline_1h", "Invalid stream"),
                         ("/stream?streams=BTCUSDT@kline_1h", "Invalid stream"),
                         ("/stream?streams=" + "/".join(["btcusdt@kline_1h"] * 201), "at most 200")]:  # fmt: skip
            with connect(srv.ws_url + bad) as ws, pytest.raises(ConnectionClosed) as err:
                ws.recv(timeout=5)
            assert err.value.rcvd.code == 1008 and why in err.value.rcvd.reason
    with pytest.raises(ValueError, match="running clock"):
        ReplayServer(rec, streams=True)


def test_a_running_play_clock_advances_at_its_speed(rec):
    start = LAST_1H - 10 * 3_600_000
    before_start = time.monotonic()
    with (
        ReplayServer(rec, play_from_ms=start, clock_speed=3600) as srv,
        httpx.Client(base_url=srv.base_url) as c,
    ):
        after_start = time.monotonic()
        time.sleep(1.0)
        before_ask = time.monotonic()
        served = get_json(c, "/fapi/v1/time")["serverTime"]
        after_ask = time.monotonic()
    # an hour a second: the clock started between the first two readings and was read
    # between the last two, however long a loaded machine took over either
    assert 3_600_000 * (before_ask - after_start) - 1 <= served - start
    assert served - start <= 3_600_000 * (after_ask - before_start) + 1
    assert served - start >= 3_600_000  # it ran for the second slept
    with pytest.raises(ValueError, match="after the recording"):
        ReplayServer(rec, play_from_ms=RECORDING_CLOCK + 1)


def test_numbers_round_trip_and_never_use_exponents(client):
    assert format_number(0.0015065) == "0.0015065"
    assert format_number(1e-07) == "0.0000001"
    assert format_number(1.5e17) == "150000000000000000"
    assert format_number(7659099654.8127) == "7659099654.8127"
    assert format_number(112120.0) == "112120"
    for symbol in ("1000CHEEMSUSDT", "1000PEPEUSDT", "BTCUSDT"):
        df = frame(symbol, "1h")
        rows = get_json(client, KL, symbol=symbol, interval="1h", startTime=0, limit=1500)
        assert_rows_match(rows, df, "1h")


def test_kline_error_shapes(client):
    msg = error(client, KL, 400, -1130, symbol="BTCUSDT", interval="1h", limit=1501)
    assert msg == "Data sent for parameter 'limit' is not valid."
    error(client, KL, 400, -1130, symbol="BTCUSDT", interval="1h", limit=0)
    assert error(client, KL, 400, -1120, symbol="BTCUSDT", interval="2x") == "Invalid interval."
    assert error(client, KL, 400, -1121, symbol="NOPEUSDT", interval="1h") == "Invalid symbol."
    msg = error(client, KL, 400, -1102, interval="1h")
    assert msg == "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
    assert "'interval'" in error(client, KL, 400, -1102, symbol="BTCUSDT")
    msg = error(client, KL, 400, -1100, symbol="BTCUSDT", interval="1h", limit="abc")
    assert msg == "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'."
    error(client, KL, 400, -1100, symbol="BTCUSDT", interval="1h", startTime="-5")
    error(client, KL, 400, -1023, symbol="BTCUSDT", interval="1h", startTime=10, endTime=5)
    error(client, "/fapi/v1/nothingHere", 404, -1020)
    r = client.post("/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1h"})
    assert r.status_code == 405 and r.json()["code"] == -1020
    assert HDR in r.headers


# --------------------------------------------------------------------------- weights and limits


def weight_of(client: httpx.Client, server: ReplayServer, path: str, **params) -> int:
    """Used-weight header increase caused by one request (retried across a window edge)."""
    for _ in range(3):
        before_window = int(time.time() // 60)
        before = int(client.get("/fapi/v1/ping").headers[HDR])
        served_before = server.stats.weight
        r = client.get(path, params=params)
        after_window = int(time.time() // 60)
        if before_window == after_window:
            assert server.stats.weight - served_before == int(r.headers[HDR]) - before
            return int(r.headers[HDR]) - before
    raise AssertionError("could not measure inside one rate window")


def test_weights_in_the_used_weight_header(server, client):
    kl = {"symbol": "BTCUSDT", "interval": "1h"}
    assert weight_of(client, server, KL, **kl, limit=99) == 1
    assert weight_of(client, server, KL, **kl, limit=499) == 2
    assert weight_of(client, server, KL, **kl) == 5  # default limit 500
    assert weight_of(client, server, KL, **kl, limit=1000) == 5
    assert weight_of(client, server, KL, **kl, limit=1500) == 10
    assert weight_of(client, server, "/fapi/v1/ticker/24hr", symbol="BTCUSDT") == 1
    assert weight_of(client, server, "/fapi/v1/ticker/24hr") == 40
    assert weight_of(client, server, "/fapi/v1/depth", symbol="BTCUSDT", limit=5) == 2
    assert weight_of(client, server, "/fapi/v1/depth", symbol="BTCUSDT", limit=1000) == 20
    # errors carry the header and are charged like the real exchange
    r = client.get(KL, params={**kl, "interval": "bad"})
    assert r.status_code == 400 and HDR in r.headers


def test_429_with_retry_after_past_the_limit(rec):
    with (
        ReplayServer(rec, window_seconds=2, weight_limit=10) as srv,
        httpx.Client(base_url=srv.base_url) as c,
    ):
        hdr = "X-MBX-USED-WEIGHT-2S"
        wait_for_window_start(2)
        used = [int(c.get("/fapi/v1/ping").headers[hdr]) for _ in range(10)]
        assert used == list(range(1, 11))
        r = c.get("/fapi/v1/ping")
        assert r.status_code == 429
        assert r.json()["code"] == -1003
        assert "current limit is 10" in r.json()["msg"]
        assert 1 <= int(r.headers["Retry-After"]) <= 2
        assert r.headers[hdr] == "10"  # the refused request was not counted
        time.sleep(int(r.headers["Retry-After"]))
        r = c.get("/fapi/v1/ping")
        assert r.status_code == 200 and int(r.headers[hdr]) <= 2
        assert srv.stats.sent_429 == 1


def test_418_after_ignoring_429s(rec):
    with (
        ReplayServer(rec, window_seconds=2, weight_limit=10) as srv,
        httpx.Client(base_url=srv.base_url) as c,
    ):
        wait_for_window_start(2)
        for _ in range(10):
            assert c.get("/fapi/v1/ping").status_code == 200
        statuses = [c.get("/fapi/v1/ping").status_code for _ in range(4)]
        assert statuses == [429, 429, 429, 429]  # the 429 and 3 tolerated further requests
        r = c.get("/fapi/v1/ping")
        assert r.status_code == 418
        assert r.json()["code"] == -1003 and "banned until" in r.json()["msg"]
        assert 3 <= int(r.headers["Retry-After"]) <= 4  # two windows
        assert "X-MBX-USED-WEIGHT-2S" in r.headers
        assert c.get("/fapi/v1/time").status_code == 418  # every request during the ban
        assert srv.stats.sent_418 == 2 and srv.stats.sent_429 == 4


def test_exchange_info_filters_and_rate_limits(rec, client):
    info = get_json(client, "/fapi/v1/exchangeInfo")
    assert info["timezone"] == "UTC" and info["serverTime"] == RECORDING_CLOCK
    assert info["exchangeFilters"] == [] and info["assets"] == []
    assert info["rateLimits"] == [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
    ]
    symbols = {s["symbol"]: s for s in info["symbols"]}
    assert set(symbols) == {p.name.rsplit("_", 1)[0] for p in (REAL / "klines").glob("*.parquet")}
    btc = symbols["BTCUSDT"]
    assert (btc["pair"], btc["contractType"], btc["baseAsset"], btc["quoteAsset"]) == (
        "BTCUSDT",
        "PERPETUAL",
        "BTC",
        "USDT",
    )
    assert btc["marginAsset"] == "USDT"
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert set(filters) == {"PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE"}  # nothing invented
    assert filters["PRICE_FILTER"] == {
        "filterType": "PRICE_FILTER",
        "minPrice": "0",
        "maxPrice": "0",
        "tickSize": "0.1",
    }
    assert filters["LOT_SIZE"]["stepSize"] == filters["LOT_SIZE"]["minQty"]
    eth = {f["filterType"]: f for f in symbols["ETHUSDT"]["filters"]}
    assert eth["PRICE_FILTER"]["tickSize"] == "0.01"
    # the tick is a real grid: every recorded price sits on it
    for symbol in ("BTCUSDT", "ETHUSDT", "1000PEPEUSDT"):
        tick = Decimal(
            {f["filterType"]: f for f in symbols[symbol]["filters"]}["PRICE_FILTER"]["tickSize"]
        )
        df = frame(symbol, "1h")
        for col in ("open", "high", "low", "close"):
            assert all(Decimal(format_number(p)) % tick == 0 for p in df[col])
    # dead markets (one constant price, no book, no trades): no tick can be derived
    assert symbols["1INCHUSDT"]["filters"] == []
    for s in info["symbols"]:
        for f in s["filters"]:
            assert all("e" not in v.lower() for k, v in f.items() if k != "filterType")

    with (
        ReplayServer(rec, window_seconds=2, weight_limit=10) as srv,
        httpx.Client(base_url=srv.base_url) as c,
    ):
        r = c.get("/fapi/v1/exchangeInfo")
        assert r.json()["rateLimits"][0] == {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "SECOND",
            "intervalNum": 2,
            "limit": 10,
        }
        assert "X-MBX-USED-WEIGHT-2S" in r.headers and HDR not in r.headers
    with pytest.raises(ValueError, match="whole number"):
        ReplayServer(rec, window_seconds=0.5)


# --------------------------------------------------------------------------- symbol filters


def filters_of(entry: dict) -> dict[str, dict]:
    return {f["filterType"]: f for f in entry["filters"]}


def served_symbols(rec) -> dict[str, dict]:
    with ReplayServer(rec) as srv, httpx.Client(base_url=srv.base_url) as c:
        return {s["symbol"]: s for s in get_json(c, "/fapi/v1/exchangeInfo")["symbols"]}


def recorded_evidence(folder: Path, symbol: str) -> tuple[list[Decimal], list[Decimal]]:
    """Every recorded price and base quantity of ``symbol``, as exact decimals.

    Kline floats were parsed from the exchange's decimal strings; their shortest
    round-trip form (``format_number``) is that string again.
    """
    prices: list[Decimal] = []
    qtys: list[Decimal] = []
    for path in sorted((folder / "klines").glob(f"{symbol}_*.parquet")):
        df = pd.read_parquet(path)
        for col, out in (
            ("open", prices),
            ("high", prices),
            ("low", prices),
            ("close", prices),
            ("volume", qtys),
            ("taker_buy_volume", qtys),
        ):
            out += [Decimal(format_number(x)) for x in np.unique(df[col].to_numpy())]
    book_prices, book_qtys = book_and_trade_evidence(folder, symbol)
    return prices + book_prices, qtys + book_qtys


def book_and_trade_evidence(folder: Path, symbol: str) -> tuple[list[Decimal], list[Decimal]]:
    prices: list[Decimal] = []
    qtys: list[Decimal] = []
    book_path = folder / "orderbook" / f"{symbol}.json"
    if book_path.is_file():
        book = json.loads(book_path.read_text())
        for level in book["bids"] + book["asks"]:
            prices.append(Decimal(level[0]))
            qtys.append(Decimal(level[1]))
    trades_path = folder / "trades" / f"{symbol}.json"
    if trades_path.is_file():
        for t in json.loads(trades_path.read_text()):
            prices.append(Decimal(t["price"]))
            qtys.append(Decimal(t["qty"]))
    return prices, qtys


def decimal_gcd(values: list[Decimal]) -> Decimal:
    """Exact gcd of non-negative decimals (0 for none)."""
    g = Decimal(0)
    for v in values:
        a, b = g, v
        while b:
            a, b = b, a % b
        g = a
    return g


def test_every_recorded_number_sits_on_the_advertised_grids(client):
    symbols = {s["symbol"]: s for s in get_json(client, "/fapi/v1/exchangeInfo")["symbols"]}
    assert len(symbols) == 19
    for symbol, entry in symbols.items():
        prices, qtys = recorded_evidence(REAL, symbol)
        filters = filters_of(entry)
        if "PRICE_FILTER" not in filters:
            # only the dead markets: one constant price, nothing to take a grid from
            assert len({p for p in prices if p}) < 2, symbol
        else:
            tick = Decimal(filters["PRICE_FILTER"]["tickSize"])
            off = [p for p in prices if p % tick]
            assert off == [], (symbol, tick, off[:5])
        if "LOT_SIZE" not in filters:
            assert len({q for q in qtys if q}) < 2, symbol
            continue
        step = Decimal(filters["LOT_SIZE"]["stepSize"])
        assert filters["MARKET_LOT_SIZE"]["stepSize"] == filters["LOT_SIZE"]["stepSize"]
        off = [q for q in qtys if q % step]
        assert off == [], (symbol, step, off[:5])
        # and the grid is the coarsest one they share: nothing finer is advertised either
        assert step == decimal_gcd(qtys), symbol


def test_the_lot_step_takes_kline_volumes_into_account(tmp_path):
    # In the real recording no symbol's book and trade sizes give a coarser step
    # than its kline volumes do (checked here), so the case is built from a copy:
    # one AAVEUSDT hourly volume and one SOLUSDT 4h taker-buy volume are moved
    # off the grid their book and trade sizes share.
    for symbol in {p.name.rsplit("_", 1)[0] for p in (REAL / "klines").glob("*.parquet")}:
        _, qtys = recorded_evidence(REAL, symbol)
        _, book_qtys = book_and_trade_evidence(REAL, symbol)
        if book_qtys:
            assert decimal_gcd(book_qtys) == decimal_gcd(qtys), symbol

    copy = tmp_path / "aster-real"
    shutil.copytree(REAL, copy)
    cases = (("AAVEUSDT", "1h", "volume"), ("SOLUSDT", "4h", "taker_buy_volume"))
    expected = {}
    for symbol, interval, column in cases:
        _, book_qtys = book_and_trade_evidence(REAL, symbol)
        coarse = decimal_gcd(book_qtys)
        path = copy / "klines" / f"{symbol}_{interval}.parquet"
        df = pd.read_parquet(path)
        row = int(np.argmax(df[column].to_numpy()))
        finer = coarse / 2
        df.iloc[row, df.columns.get_loc(column)] = float(
            Decimal(format_number(df[column].iloc[row])) + finer
        )
        df.to_parquet(path)
        expected[symbol] = finer

    rec = load_recording(copy)
    symbols = served_symbols(rec)
    for symbol, step in expected.items():
        served = filters_of(symbols[symbol])
        assert Decimal(served["LOT_SIZE"]["stepSize"]) == step
        assert Decimal(served["MARKET_LOT_SIZE"]["stepSize"]) == step
        _, qtys = recorded_evidence(copy, symbol)
        assert all(q % step == 0 for q in qtys)


def test_a_recorded_exchange_info_is_served_verbatim(tmp_path, caplog):
    copy = tmp_path / "aster-real"
    shutil.copytree(REAL, copy)
    btc = {
        "symbol": "BTCUSDT",
        "pair": "BTCUSDT",
        "contractType": "PERPETUAL",
        "status": "TRADING",
        "baseAsset": "BTC",
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": 1,
        "quantityPrecision": 3,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "1",
                "maxPrice": "1000000",
                "tickSize": "0.1",
            },
            {"filterType": "LOT_SIZE", "maxQty": "500", "minQty": "0.001", "stepSize": "0.001"},
            {
                "filterType": "MARKET_LOT_SIZE",
                "maxQty": "100",
                "minQty": "0.001",
                "stepSize": "0.001",
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": 4,
            },
        ],
        "orderTypes": ["LIMIT", "MARKET"],
    }
    # a declared tick that recorded ETH prices are not on: still the exchange's word
    eth = {
        "symbol": "ETHUSDT",
        "pair": "ETHUSDT",
        "contractType": "PERPETUAL",
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0", "maxPrice": "0", "tickSize": "1"}
        ],
    }
    unrecorded = {"symbol": "DOGEUSDT", "filters": []}
    body = {"timezone": "UTC", "serverTime": 1, "symbols": [btc, eth, unrecorded]}
    (copy / "exchangeInfo.json").write_text(json.dumps(body))

    with caplog.at_level("WARNING", logger="asterai.exchange.replay.recording"):
        rec = load_recording(copy)
    assert "ETHUSDT: the recorded exchangeInfo declares tickSize 1" in caplog.text
    assert "BTCUSDT" not in caplog.text
    assert (rec.symbols["BTCUSDT"].tick_size, rec.symbols["BTCUSDT"].step_size) == ("0.1", "0.001")
    symbols = served_symbols(rec)
    assert symbols["BTCUSDT"] == btc
    assert symbols["ETHUSDT"] == eth
    assert "DOGEUSDT" not in symbols  # listed, but nothing of it is recorded
    # symbols the file does not list keep their derived filters
    assert symbols["SOLUSDT"] == served_symbols(load_recording(REAL))["SOLUSDT"]

    (copy / "exchangeInfo.json").write_text(json.dumps({"symbols": [{"symbol": "BTCUSDT"}]}))
    with pytest.raises(RecordingError, match="filters"):
        load_recording(copy)
    (copy / "exchangeInfo.json").write_text("[]")
    with pytest.raises(RecordingError, match="exchangeInfo"):
        load_recording(copy)


# --------------------------------------------------------------------------- other endpoints


def test_ticker_24hr_recomputed_from_the_hourly_file(client):
    df = frame("BTCUSDT", "1h")
    inside = (df.open_time > RECORDING_CLOCK - 86_400_000) & (df.open_time <= RECORDING_CLOCK)
    win = df[inside]
    before = df[df.open_time <= RECORDING_CLOCK - 86_400_000]
    t = get_json(client, "/fapi/v1/ticker/24hr", symbol="BTCUSDT")

    def d(x: float) -> Decimal:
        return Decimal(format_number(x))

    assert len(win) == 24
    assert Decimal(t["openPrice"]) == d(win.open.iloc[0])
    assert Decimal(t["lastPrice"]) == d(win.close.iloc[-1])
    assert float(t["highPrice"]) == win.high.max()
    assert float(t["lowPrice"]) == win.low.min()
    volume = sum(d(v) for v in win.volume)
    quote_volume = sum(d(v) for v in win.quote_volume)
    assert Decimal(t["volume"]) == volume
    assert Decimal(t["quoteVolume"]) == quote_volume
    change = d(win.close.iloc[-1]) - d(win.open.iloc[0])
    assert Decimal(t["priceChange"]) == change
    pct = change / d(win.open.iloc[0]) * 100
    assert t["priceChangePercent"] == f"{pct.quantize(Decimal('0.001'))}"
    assert float(t["weightedAvgPrice"]) == pytest.approx(float(quote_volume / volume), rel=1e-12)
    assert float(t["prevClosePrice"]) == before.close.iloc[-1]
    assert t["openTime"] == win.open_time.iloc[0]
    assert t["closeTime"] == RECORDING_CLOCK
    recorded_trades = json.loads((REAL / "trades" / "BTCUSDT.json").read_text())
    assert t["lastQty"] == recorded_trades[-1]["qty"]
    assert t["count"] is None and t["firstId"] is None and t["lastId"] is None
    # without a symbol: every symbol, and AAPLUSDT (no trades file) has no lastQty
    every = {x["symbol"]: x for x in get_json(client, "/fapi/v1/ticker/24hr")}
    assert every["BTCUSDT"] == t
    assert every["AAPLUSDT"]["lastQty"] is None


def test_depth_and_trades_pass_through_and_the_404_rule(client):
    book = json.loads((REAL / "orderbook" / "BTCUSDT.json").read_text())
    assert get_json(client, "/fapi/v1/depth", symbol="BTCUSDT") == book
    five = get_json(client, "/fapi/v1/depth", symbol="BTCUSDT", limit=5)
    assert five == {**book, "bids": book["bids"][:5], "asks": book["asks"][:5]}
    error(client, "/fapi/v1/depth", 400, -1130, symbol="BTCUSDT", limit=7)
    aapl_book = json.loads((REAL / "orderbook" / "AAPLUSDT.json").read_text())
    assert get_json(client, "/fapi/v1/depth", symbol="AAPLUSDT") == aapl_book
    msg = error(client, "/fapi/v1/depth", 404, -1000, symbol="1INCHUSDT")
    assert msg == "No order book recorded for 1INCHUSDT in this replay."

    trades = json.loads((REAL / "trades" / "BTCUSDT.json").read_text())
    assert get_json(client, "/fapi/v1/trades", symbol="BTCUSDT") == trades
    assert get_json(client, "/fapi/v1/trades", symbol="BTCUSDT", limit=10) == trades[-10:]
    error(client, "/fapi/v1/trades", 400, -1130, symbol="BTCUSDT", limit=1001)
    msg = error(client, "/fapi/v1/trades", 404, -1000, symbol="AAPLUSDT")
    assert msg == "No trades recorded for AAPLUSDT in this replay."
    error(client, "/fapi/v1/trades", 400, -1121, symbol="NOPEUSDT")


def test_funding_endpoints_are_empty_for_the_shared_recording(client):
    assert get_json(client, "/fapi/v1/fundingRate", symbol="BTCUSDT") == []
    assert get_json(client, "/fapi/v1/fundingRate") == []
    assert get_json(client, "/fapi/v1/fundingInfo") == []
    assert get_json(client, "/fapi/v1/premiumIndex", symbol="BTCUSDT") == {
        "symbol": "BTCUSDT",
        "time": RECORDING_CLOCK,
    }
    assert len(get_json(client, "/fapi/v1/premiumIndex")) == 19
    error(client, "/fapi/v1/fundingRate", 400, -1130, symbol="BTCUSDT", limit=1001)


def test_concurrent_clients(server):
    df = frame("BTCUSDT", "1h")
    expected_last = df.open_time.iloc[-1]
    failures: list[str] = []

    def worker() -> None:
        with httpx.Client(base_url=server.base_url, timeout=10) as c:
            for _ in range(15):
                r = c.get(KL, params={"symbol": "BTCUSDT", "interval": "1h", "limit": 99})
                if r.status_code != 200 or r.json()[-1][0] != expected_last:
                    failures.append(r.text[:200])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


# --------------------------------------------------------------------------- faults


def test_fault_spec_parsing():
    spec = FaultSpec.parse("5xx=0.1,429=0.05,slow=0.05:0.5,truncate=0.05,drop=0.05")
    assert (spec.error_5xx, spec.burst_429, spec.slow, spec.slow_seconds) == (0.1, 0.05, 0.05, 0.5)
    assert (spec.truncate, spec.drop) == (0.05, 0.05)
    assert FaultSpec.parse(str(spec)) == spec
    assert not FaultSpec.parse("")
    for bad in ("5xx=2", "boom=0.1", "slow=0.1:x", "drop", "429=0.1:3", "5xx=0.6,drop=0.6"):
        with pytest.raises(ValueError) as info:
            FaultSpec.parse(bad)
        assert bad.split(",")[0] in str(info.value)


def faulty(rec, spec: str, seed: int = 1) -> ReplayServer:
    return ReplayServer(rec, faults=FaultSpec.parse(spec), seed=seed)


def test_each_fault_kind_happens(rec):
    params = {"symbol": "BTCUSDT", "interval": "1h", "limit": 1000}
    with faulty(rec, "5xx=1") as srv, httpx.Client(base_url=srv.base_url) as c:
        r = c.get(KL, params=params)
        assert r.status_code in (500, 502, 503) and "code" in r.json()
        assert HDR in r.headers
    with faulty(rec, "429=1") as srv, httpx.Client(base_url=srv.base_url) as c:
        r = c.get("/fapi/v1/time")
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert r.json()["code"] == -1003
    with faulty(rec, "slow=1:0.3") as srv, httpx.Client(base_url=srv.base_url) as c:
        t0 = time.perf_counter()
        r = c.get(KL, params=params)
        assert time.perf_counter() - t0 >= 0.3
        assert r.status_code == 200 and r.json()[-1][0] == LAST_1H
    with faulty(rec, "truncate=1") as srv, httpx.Client(base_url=srv.base_url) as c:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            c.get(KL, params=params)
        assert srv.stats.faults == {"truncate": 1}
    with faulty(rec, "drop=1") as srv, httpx.Client(base_url=srv.base_url) as c:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            c.get("/fapi/v1/time")
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            c.get("/fapi/v1/exchangeInfo")
        assert srv.stats.faults == {"drop": 2}


def test_faults_are_reproducible_with_a_seed(rec):
    def outcomes(seed: int) -> list[int]:
        out = []
        with (
            faulty(rec, "5xx=0.3,429=0.3", seed=seed) as srv,
            httpx.Client(base_url=srv.base_url) as c,
        ):
            for _ in range(30):
                out.append(c.get("/fapi/v1/ping").status_code)
        return out

    first = outcomes(7)
    assert first == outcomes(7)
    assert 200 in first and 429 in first and ({500, 502, 503} & set(first))


# --------------------------------------------------------------------------- project layout


def write_project_file(df: pd.DataFrame, path: Path, collected_at: int | None) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    if collected_at is not None:
        prov = {
            "source": "aster",
            "symbol": "BTCUSDT",
            "interval": "1h",
            "collected_at": collected_at,
        }
        meta = dict(table.schema.metadata or {})
        meta[b"asterai.provenance"] = json.dumps(prov).encode()
        table = table.replace_schema_metadata(meta)
    pq.write_table(table, path)


def project_frame() -> pd.DataFrame:
    """The recorded BTCUSDT hourly bars in the collector's layout (closed bars only)."""
    src = frame("BTCUSDT", "1h").iloc[:-1]  # the collector never stores the open bar
    n = len(src)

    def utc(ms: np.ndarray) -> pd.DatetimeIndex:
        return pd.to_datetime(ms, unit="ms", utc=True).astype("datetime64[ms, UTC]")

    return pd.DataFrame(
        {
            "open_time": utc(src.open_time.to_numpy()),
            "open": src.open.to_numpy(),
            "high": src.high.to_numpy(),
            "low": src.low.to_numpy(),
            "close": src.close.to_numpy(),
            "volume": src.volume.to_numpy(),
            "quote_volume": src.quote_volume.to_numpy(),
            "trades": pd.array([None] * n, dtype="Int64"),
            "taker_buy_base": src.taker_buy_volume.to_numpy(),
            "taker_buy_quote": pd.array([None] * n, dtype="Float64"),
            "close_time": utc(src.open_time.to_numpy() + 3_599_999),
        }
    )


def test_project_layout(tmp_path):
    folder = tmp_path / "data" / "historical" / "real_aster_only"
    folder.mkdir(parents=True)
    df = project_frame()
    write_project_file(df, folder / "BTCUSDT_1h.parquet", collected_at=RECORDING_CLOCK)
    for where in (folder, tmp_path):  # the folder itself, or a data root holding it
        rec = load_recording(where)
        assert rec.layout == "project" and rec.now_ms == RECORDING_CLOCK
    assert load_recording(folder, now_ms=123).now_ms == 123
    src = frame("BTCUSDT", "1h").iloc[:-1]
    with ReplayServer(rec) as srv, httpx.Client(base_url=srv.base_url) as c:
        rows = get_json(c, KL, symbol="BTCUSDT", interval="1h", limit=1500)
        assert len(rows) == len(src) and rows[-1][0] == LAST_1H - 3_600_000
        for row, (_, bar) in zip(rows, src.iterrows(), strict=True):
            assert row[0] == bar.open_time and row[6] == bar.open_time + 3_599_999
            assert float(row[1]) == bar.open and float(row[4]) == bar.close
            assert float(row[9]) == bar.taker_buy_volume
            assert row[8] is None and row[10] is None and row[11] is None
        assert get_json(c, "/fapi/v1/fundingRate", symbol="BTCUSDT") == []
        info = get_json(c, "/fapi/v1/exchangeInfo")["symbols"]
        assert [s["symbol"] for s in info] == ["BTCUSDT"]
        lot = {"minQty": "0.001", "maxQty": "0", "stepSize": "0.001"}
        assert info[0]["filters"] == [
            {"filterType": "PRICE_FILTER", "minPrice": "0", "maxPrice": "0", "tickSize": "0.1"},
            {"filterType": "LOT_SIZE", **lot},
            {"filterType": "MARKET_LOT_SIZE", **lot},
        ]  # no book or trades: the grids come from the bars (volumes for the lot step)
        error(c, "/fapi/v1/depth", 404, -1000, symbol="BTCUSDT")

    # the exchange's own exchangeInfo, at the root of the folder passed (here the data root)
    listed = {"symbol": "BTCUSDT", "status": "TRADING", "filters": [{"filterType": "MIN_NOTIONAL"}]}
    (tmp_path / "exchangeInfo.json").write_text(json.dumps({"symbols": [listed]}))
    assert load_recording(tmp_path).symbols["BTCUSDT"].listed == listed
    assert load_recording(folder).symbols["BTCUSDT"].listed is None

    # without provenance the clock falls back to the newest close time + 1 ms
    bare = tmp_path / "bare"
    bare.mkdir()
    write_project_file(df, bare / "BTCUSDT_1h.parquet", collected_at=None)
    assert load_recording(bare).now_ms == LAST_1H

    with pytest.raises(RecordingError):
        load_recording(tmp_path / "bare" / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecordingError):
        load_recording(empty)
