"""The replay as an exchange to trade against (``exchange.replay`` with accounts):
signed orders over real HTTP on loopback, V3 (API wallets) and V1 (HMAC keys), the
user-data stream over a real websocket, the order faults, and ccxt's own Aster client
as an independent one. The clock is stepped (``clock.advance``) over the recording."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import pytest

from asterai.exchange.signing import Nonces, V1Key, V3Key, sign_v1, sign_v3

HOUR = 3_600_000
NONCES = Nonces()


@pytest.fixture
def exchange(recording):
    """A replay played forward on a stepped clock, 100 hours before the recording's
    end, with two funded accounts and the streams."""
    from asterai.exchange.replay import ReplayServer

    btc = recording.series("BTCUSDT", "1h")
    start = int(btc.open_time[-100]) + 1000  # a second into a bar
    with ReplayServer(recording, clock_speed=0, play_from_ms=start, streams=True,
                      accounts=2, balance="500") as server:  # fmt: skip
        yield server


def v3(server, n: int = 0) -> V3Key:
    c = server.credentials[n]
    return V3Key.of(c.user.address, c.api_wallet.private_key, signer=c.api_wallet.address)


def send_v3(server, method: str, path: str, params: dict, key: V3Key | None = None,
            nonce: int | None = None) -> httpx.Response:  # fmt: skip
    """A V3 request as the documentation's example sends it: the signed parameters in
    the body (POST, PUT, DELETE) or the query (GET)."""
    total = sign_v3(params, key or v3(server), NONCES() if nonce is None else nonce)
    url = f"{server.base_url}/fapi/v3/{path}"
    if method == "GET":
        return httpx.get(f"{url}?{total}")
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return httpx.request(method, url, content=total, headers=headers)


def send_v1(server, method: str, path: str, params: dict, n: int = 0,
            stamp: int | None = None) -> httpx.Response:  # fmt: skip
    c = server.credentials[n]
    total = sign_v1(params, V1Key(c.api_key, c.api_secret),
                    int(time.time() * 1000) if stamp is None else stamp)  # fmt: skip
    return httpx.request(method, f"{server.base_url}/fapi/{path}?{total}",
                         headers={"X-MBX-APIKEY": c.api_key})  # fmt: skip


def test_an_order_signed_v3_fills_and_the_account_shows_it_over_v1_too(exchange):
    r = send_v3(exchange, "POST", "order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                            "quantity": "0.002", "newClientOrderId": "e-1",
                                            "newOrderRespType": "RESULT"})  # fmt: skip
    assert r.status_code == 200, r.text
    order = r.json()
    assert (order["status"], order["clientOrderId"], order["executedQty"]) == (
        "FILLED",
        "e-1",
        "0.002",
    )
    assert r.headers["X-MBX-ORDER-COUNT-10S"] == "1" and r.headers["X-MBX-ORDER-COUNT-1M"] == "1"
    assert "X-MBX-USED-WEIGHT-1M" in r.headers
    risk = send_v1(exchange, "GET", "v2/positionRisk", {"symbol": "BTCUSDT"}).json()
    assert risk[0]["positionAmt"] == "0.002" and risk[0]["entryPrice"] == order["avgPrice"]
    balance = send_v1(exchange, "GET", "v2/balance", {}).json()[0]
    fee = Decimal("0.002") * Decimal(order["avgPrice"]) * Decimal("0.00075")
    assert Decimal(balance["balance"]) == Decimal(500) - fee.quantize(Decimal("1e-8"))
    # the other account saw nothing
    assert send_v3(exchange, "GET", "positionRisk", {"symbol": "BTCUSDT"},
                   key=v3(exchange, 1)).json()[0]["positionAmt"] == "0"  # fmt: skip
    # by V1: query the order by its client id; ACK answers as placed
    got = send_v1(exchange, "GET", "v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "e-1"})
    assert got.json()["status"] == "FILLED"
    ack = send_v1(exchange, "POST", "v1/order", {"symbol": "BTCUSDT", "side": "SELL",
                                                 "type": "MARKET", "quantity": "0.002",
                                                 "reduceOnly": "true"}).json()  # fmt: skip
    assert ack["status"] == "NEW" and ack["executedQty"] == "0"
    assert send_v3(exchange, "GET", "positionRisk", {"symbol": "BTCUSDT"}).json()[0][
        "positionAmt"] == "0"  # fmt: skip


def test_what_the_exchange_refuses_before_touching_an_account(exchange):
    key = v3(exchange)
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002"}

    def code(r: httpx.Response) -> tuple[int, int]:
        return r.status_code, r.json()["code"]

    total = sign_v3(order, key, NONCES())
    tampered = total.replace("quantity=0.002", "quantity=0.02")
    r = httpx.post(f"{exchange.base_url}/fapi/v3/order", content=tampered,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert code(r) == (400, -1022)
    stranger = V3Key.of(key.user, "0x" + "11" * 32)  # a wallet nobody registered
    stranger = V3Key(key.user, stranger.signer, stranger.private_key)
    assert code(send_v3(exchange, "POST", "order", order, key=stranger)) == (401, -2015)
    nonce = NONCES()
    assert send_v3(exchange, "POST", "order", order, nonce=nonce).status_code == 200
    assert code(send_v3(exchange, "POST", "order", order, nonce=nonce)) == (400, -4225)
    stale = int(time.time() * 1_000_000) - 11_000_000
    assert code(send_v3(exchange, "POST", "order", order, nonce=stale)) == (400, -1021)
    assert code(send_v1(exchange, "GET", "v2/balance", {},
                        stamp=int(time.time() * 1000) - 6000)) == (400, -1021)  # fmt: skip
    r = httpx.get(f"{exchange.base_url}/fapi/v2/balance?timestamp=1&signature=00")
    assert code(r) == (401, -2014)
    # a user signing with the main wallet's own key (as ccxt does) is that user
    c = exchange.credentials[0]
    own = V3Key.of(c.user.address, c.user.private_key)
    assert send_v3(exchange, "GET", "balance", {}, key=own).status_code == 200
    # one order filled: the position is the first request's, nothing else touched
    risk = send_v3(exchange, "GET", "positionRisk", {"symbol": "BTCUSDT"}).json()
    assert risk[0]["positionAmt"] == "0.002"


def test_the_user_data_stream_reports_an_order_and_its_stop_as_the_clock_plays(exchange):
    from websockets.sync.client import connect

    key = send_v3(exchange, "POST", "listenKey", {}).json()["listenKey"]
    with connect(f"{exchange.ws_url}/ws/{key}") as ws:
        order = {"symbol": "ETHUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.05"}
        assert send_v3(exchange, "POST", "order", order).status_code == 200
        got = [json.loads(ws.recv(timeout=10)) for _ in range(3)]
        assert [(e["e"], e.get("o", {}).get("X")) for e in got] == [
            ("ORDER_TRADE_UPDATE", "NEW"), ("ORDER_TRADE_UPDATE", "FILLED"),
            ("ACCOUNT_UPDATE", None)]  # fmt: skip
        entry = Decimal(got[1]["o"]["L"])
        stop = (entry * Decimal("0.999")).quantize(Decimal("0.01"))
        r = send_v3(exchange, "POST", "order", {"symbol": "ETHUSDT", "side": "SELL",
                                                "type": "STOP_MARKET", "stopPrice": str(stop),
                                                "closePosition": "true",
                                                "newClientOrderId": "stop-1"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert json.loads(ws.recv(timeout=10))["o"]["X"] == "NEW"
        eth = exchange.accounts.engine.instruments["ETHUSDT"]
        for _ in range(96):  # half a bar at a time until the stop is reached, the key
            exchange.clock.advance(HOUR // 2)  # kept alive (it lasts an hour)
            assert send_v3(exchange, "PUT", "listenKey", {}).status_code == 200
            state = send_v3(exchange, "GET", "order", {"symbol": "ETHUSDT",
                                                       "origClientOrderId": "stop-1"}).json()  # fmt: skip
            if state["status"] != "NEW":
                break
        assert state["status"] == "FILLED"
        filled = json.loads(ws.recv(timeout=10))
        assert filled["o"]["c"] == "stop-1" and filled["o"]["X"] == "FILLED"
        assert filled["E"] in set(int(t) for t in eth.close_time)  # at a bar's close
        assert json.loads(ws.recv(timeout=10))["a"]["P"][0]["pa"] == "0"
        # the key expires: the stream says so, then nothing more
        assert exchange.accounts.expire_listen_key(exchange.credentials[0].user.address)
        assert json.loads(ws.recv(timeout=10)) == {"e": "listenKeyExpired",
                                                   "E": exchange.accounts.clock()}  # fmt: skip
        assert send_v3(exchange, "POST", "order", order).status_code == 200
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)


@pytest.mark.parametrize(
    ("fault", "placed"),
    [("lost=1", True), ("slow=1:3", True), ("drop=1", False), ("5xx=1", False),
     ("margin=1", False)],
)  # fmt: skip
def test_after_an_order_fault_its_client_id_tells_what_happened(exchange, fault, placed):
    """Each fault of an order's request, and the truth a client finds by asking for
    the order by its client id: ``lost`` (applied, the answer a 503 with -1007 or a
    dropped connection) and ``slow`` (applied, the answer later than the client waits)
    placed it, so sending it again would open a second position; ``drop`` and ``5xx``
    (refused before anything was applied) and ``margin`` (refused, -2019) did not, so
    it may be sent again."""
    exchange.set_faults(fault)
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002",
             "newClientOrderId": "f-1"}  # fmt: skip
    total = sign_v3(order, v3(exchange), NONCES())
    try:
        r = httpx.post(f"{exchange.base_url}/fapi/v3/order", content=total, timeout=1.0,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        answer = (r.status_code, r.json()["code"])
    except (httpx.RemoteProtocolError, httpx.ReadTimeout) as err:
        answer = type(err).__name__
    finally:
        exchange.set_faults(None)
    if fault == "lost=1":
        assert answer in ((503, -1007), "RemoteProtocolError")
    elif fault == "slow=1:3":
        assert answer == "ReadTimeout"
    elif fault == "margin=1":
        assert answer == (400, -2019)
    else:  # refused before anything was applied: a dropped connection or a 5xx
        assert answer == "RemoteProtocolError" or (isinstance(answer, tuple) and answer[0] >= 500)
    found = send_v3(exchange, "GET", "order", {"symbol": "BTCUSDT", "origClientOrderId": "f-1"})
    if placed:
        assert found.json()["status"] == "FILLED" and found.json()["executedQty"] == "0.002"
    else:
        assert found.json()["code"] == -2013  # never placed: safe to send again
        assert send_v3(exchange, "POST", "order", order).status_code == 200
    risk = send_v3(exchange, "GET", "positionRisk", {"symbol": "BTCUSDT"}).json()
    assert risk[0]["positionAmt"] == "0.002"  # one position either way


def test_after_the_listen_key_expires_a_new_key_streams_and_rest_tells_the_rest(exchange):
    """An expired key: ``listenKeyExpired``, then nothing on it; what happened meanwhile
    is on REST, and a new key streams from its connection on."""
    from websockets.sync.client import connect

    user = exchange.credentials[0].user.address
    key = send_v3(exchange, "POST", "listenKey", {}).json()["listenKey"]
    order = {"symbol": "ETHUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.05"}
    with connect(f"{exchange.ws_url}/ws/{key}") as ws:
        assert exchange.accounts.expire_listen_key(user)
        assert json.loads(ws.recv(timeout=10))["e"] == "listenKeyExpired"
        assert send_v3(exchange, "POST", "order", {**order, "newClientOrderId": "gap-1"}
                       ).status_code == 200  # fmt: skip
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)
    assert send_v3(exchange, "GET", "order", {"symbol": "ETHUSDT",
                                              "origClientOrderId": "gap-1"}).json()["status"] == "FILLED"  # fmt: skip
    fresh = send_v3(exchange, "POST", "listenKey", {}).json()["listenKey"]
    assert fresh != key
    with connect(f"{exchange.ws_url}/ws/{fresh}") as ws:
        assert send_v3(exchange, "POST", "order", {**order, "side": "SELL",
                                                   "newClientOrderId": "after-1"}).status_code == 200  # fmt: skip
        assert json.loads(ws.recv(timeout=10))["o"]["c"] == "after-1"


def test_new_orders_past_the_order_count_limit_are_429(exchange):
    """The account's order counts: 300 new orders in 10 s, then a 429 with -1015; the
    counts in the headers."""
    from asterai.exchange.replay.account_api import ORDER_LIMITS

    api = exchange.accounts
    user = exchange.credentials[0].user.address
    headers = api._count_orders(user, api.wall_ms(), 299)  # sent in the last moment
    assert headers == {"X-MBX-ORDER-COUNT-10S": "299", "X-MBX-ORDER-COUNT-1M": "299"}
    r = send_v3(exchange, "POST", "order", {"symbol": "BTCUSDT", "side": "BUY",
                                            "type": "MARKET", "quantity": "0.002"})  # fmt: skip
    assert r.status_code == 200 and r.headers["X-MBX-ORDER-COUNT-10S"] == "300"
    r = send_v3(exchange, "POST", "order", {"symbol": "BTCUSDT", "side": "BUY",
                                            "type": "MARKET", "quantity": "0.002"})  # fmt: skip
    assert (r.status_code, r.json()["code"]) == (429, -1015)
    assert ORDER_LIMITS[0][1] == 300


def test_ccxt_trades_on_the_replay_and_signs_as_the_project_does(exchange):
    """ccxt's own Aster client (an independent implementation of the V3 signature: the
    nonce, user and signer first, the user's wallet key as the signer; its builder fee
    off) loads the markets, reads klines, places a market order and a STOP_MARKET,
    reads the position and the balance, and cancels. For the same request the
    project's signer and ccxt's sign the same bytes, and the server recovers the signer
    from either."""
    ccxt = pytest.importorskip("ccxt")
    from asterai.exchange.signing import recover_v3, sign_v3_message, split_signature

    c = exchange.credentials[1]
    base = exchange.base_url
    ex = ccxt.aster({"privateKey": c.user.private_key,
                     "options": {"builderFee": False, "defaultType": "swap"}})  # fmt: skip
    ex.urls["api"] = {"fapiPublic": f"{base}/fapi", "fapiPrivate": f"{base}/fapi",
                      "sapiPublic": f"{base}/api", "sapiPrivate": f"{base}/api"}  # fmt: skip
    markets = ex.load_markets()
    assert "BTC/USDT:USDT" in markets and markets["BTC/USDT:USDT"]["precision"]["price"] == 0.1
    bars = ex.fetch_ohlcv("BTC/USDT:USDT", "1h", limit=3)
    btc = exchange.accounts.engine.instruments["BTCUSDT"]
    i = btc.bar_at(exchange.now_ms)
    assert [b[0] for b in bars] == [int(t) for t in btc.open_time[i - 3 : i]]  # closed bars
    entry = ex.create_order("BTC/USDT:USDT", "market", "buy", 0.002)
    stop = ex.create_order("BTC/USDT:USDT", "STOP_MARKET", "sell", 0.002, None,
                           {"stopPrice": 100000, "reduceOnly": True})  # fmt: skip
    assert ex.fetch_order(entry["id"], "BTC/USDT:USDT")["status"] == "closed"  # filled
    assert ex.fetch_positions(["BTC/USDT:USDT"])[0]["contracts"] == pytest.approx(0.002)
    balance = ex.fetch_balance()["USDT"]
    assert balance["total"] < 500 and balance["used"] > 0
    assert ex.cancel_order(stop["id"], "BTC/USDT:USDT")["status"] == "canceled"
    # the same request signed by both
    request = ex.sign("v3/order", ["fapiPrivate"], "POST", {"symbol": "BTCUSDT", "side": "BUY",
                                                            "type": "MARKET", "quantity": "0.002"})  # fmt: skip
    msg, theirs = split_signature(request["body"])
    own = V3Key.of(c.user.address, c.user.private_key)
    ours = sign_v3_message(msg, own)
    assert ours.lower() == ("0x" + theirs.removeprefix("0x")).lower()
    assert recover_v3(msg, theirs) == recover_v3(msg, ours) == c.user.address


def test_asterai_replay_accounts_prints_keys_that_trade(real_data):
    """``asterai replay --accounts 1``: the printed API wallet signs an order that fills,
    over the printed URL."""
    import re
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "asterai.cli", "replay", "--data", str(real_data), "--port", "0",
         "--play-from", "2025-10-10T04:00", "--speed", "60", "--accounts", "1",
         "--balance", "250"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines: list[str] = []
        while not any(line.lstrip().startswith("user-data stream") for line in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        text = "".join(lines)
        field = {
            k: re.search(rf"{k}\s+(\S+)", text).group(1)
            for k in ("user \\(main wallet\\)", "API wallet \\(signer\\)", "API wallet key", "REST")
        }
        assert "account 1: 250 USDT (replay keys, never real ones)" in text
        user, signer = field["user \\(main wallet\\)"], field["API wallet \\(signer\\)"]
        key = V3Key.of(user, field["API wallet key"], signer=signer)
        total = sign_v3({"symbol": "ETHUSDT", "side": "BUY", "type": "MARKET",
                         "quantity": "0.01", "newOrderRespType": "RESULT"}, key, NONCES())  # fmt: skip
        r = httpx.post(f"{field['REST']}/fapi/v3/order", content=total,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert r.status_code == 200 and r.json()["status"] == "FILLED", r.text
    finally:
        proc.terminate()
        proc.wait(30)


def test_user_data_events_come_duplicated_reordered_or_not_at_all_under_event_faults(recording):
    """With ``event_faults`` the stream does what the documentation warns of: events
    twice, out of order, or lost; the account's REST answers stay the truth."""
    from websockets.sync.client import connect

    from asterai.exchange.replay import ReplayServer

    btc = recording.series("BTCUSDT", "1h")
    start = int(btc.open_time[-100]) + 1000
    with ReplayServer(recording, clock_speed=0, play_from_ms=start, streams=True, accounts=1,
                      event_faults="dup=0.2,reorder=0.2,drop=0.2", seed=3) as server:  # fmt: skip
        key = send_v3(server, "POST", "listenKey", {}).json()["listenKey"]
        with connect(f"{server.ws_url}/ws/{key}") as ws:
            for k in range(12):
                side = "BUY" if k % 2 == 0 else "SELL"
                r = send_v3(server, "POST", "order", {"symbol": "BTCUSDT", "side": side,
                                                      "type": "MARKET", "quantity": "0.002",
                                                      "newClientOrderId": f"f-{k}"})  # fmt: skip
                assert r.status_code == 200, r.text
            got = []
            while True:
                try:
                    got.append(ws.recv(timeout=1.0))
                except TimeoutError:
                    break
        made = [json.dumps(e, separators=(",", ":"))
                for e in server.accounts.engine.accounts[server.credentials[0].user.address].events]  # fmt: skip
        orders = send_v3(server, "GET", "allOrders", {"symbol": "BTCUSDT"}).json()
    assert len(made) == 12 * 3  # NEW, FILLED and ACCOUNT_UPDATE for each order
    delivered = set(got)
    assert len(got) != len(set(got))  # some twice
    assert delivered < set(made)  # some lost, nothing invented
    order_of = {m: i for i, m in enumerate(made)}
    seq = [order_of[m] for m in dict.fromkeys(got)]
    assert seq != sorted(seq)  # some out of order
    assert [o["status"] for o in orders] == ["FILLED"] * 12  # REST: the truth


def test_malformed_requests_are_refused_by_name_never_a_500(exchange):
    """What a careless or hostile client sends: numbers that are not numbers, numbers
    too large for any market, a signature that is not hex. Each gets the documented
    error; the account is untouched and answers as before."""
    c = exchange.credentials[0]
    assert send_v3(exchange, "GET", "allOrders", {"symbol": "BTCUSDT", "orderId": "abc"}
                   ).json()["code"] == -1102  # fmt: skip
    assert send_v3(exchange, "GET", "income", {"endTime": "1.5"}).json()["code"] == -1102
    assert send_v3(exchange, "GET", "userTrades", {"symbol": "BTCUSDT", "fromId": "x"}
                   ).json()["code"] == -1102  # fmt: skip
    huge = send_v3(exchange, "POST", "order", {"symbol": "BTCUSDT", "side": "SELL",
                                               "type": "TAKE_PROFIT_MARKET", "stopPrice": "1e25",
                                               "closePosition": "true"})  # fmt: skip
    assert (huge.status_code, huge.json()["code"]) == (400, -4007)
    assert send_v3(exchange, "POST", "order", {"symbol": "BTCUSDT", "side": "BUY",
                                               "type": "MARKET", "quantity": "1e999999"}
                   ).json()["code"] == -4005  # fmt: skip
    r = httpx.get(f"{exchange.base_url}/fapi/v2/balance?timestamp=1&signature=%C3%A9",
                  headers={"X-MBX-APIKEY": c.api_key})  # fmt: skip
    assert (r.status_code, r.json()["code"]) == (400, -1022)
    assert send_v3(exchange, "GET", "openOrders", {}).json() == []  # nothing stuck


def test_a_signature_covers_the_query_and_the_body_as_each_scheme_defines_them(exchange):
    """V1 (the documentation's Example 3): the query string and the body concatenated as
    they are. V3: query and body joined by an "&", so moving bytes between them (the
    signed ``quantity=0.02`` read as ``quantity=0.0``) breaks the signature."""
    from urllib.parse import urlencode

    from asterai.exchange.signing import sign_v3_message, v1_signature

    c = exchange.credentials[0]
    query = "symbol=BTCUSDT&side=BUY&type=MARKET"
    body = urlencode({"quantity": "0.002", "timestamp": int(time.time() * 1000)})
    sig = v1_signature(c.api_secret, query + body)
    r = httpx.post(f"{exchange.base_url}/fapi/v1/order?{query}", content=f"{body}&signature={sig}",
                   headers={"X-MBX-APIKEY": c.api_key,
                            "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 200, r.text
    key = v3(exchange)
    signed = (f"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.02&nonce={NONCES()}"
              f"&user={key.user}&signer={key.signer}")  # fmt: skip
    sig = sign_v3_message(signed, key)
    cut = signed.index("quantity=0.0") + len("quantity=0.0")
    r = httpx.post(f"{exchange.base_url}/fapi/v3/order?{signed[:cut]}",
                   content=f"{signed[cut:]}&signature={sig}",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert (r.status_code, r.json()["code"]) == (400, -1022)
    head, tail = signed.split("&nonce=")
    sig = sign_v3_message(f"{head}&nonce={tail}", key)
    r = httpx.post(f"{exchange.base_url}/fapi/v3/order?{head}", content=f"nonce={tail}&signature={sig}",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 200, r.text


def test_a_closed_listen_key_ends_its_stream_and_a_countdown_cancels_on_the_wall_clock(exchange):
    """``DELETE listenKey`` closes its stream. ``countdownCancelAll`` runs on this
    machine's clock (a client renews it at its own pace, whatever the replay's speed):
    not renewed in time, the symbol's open orders are cancelled."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    key = send_v3(exchange, "POST", "listenKey", {}).json()["listenKey"]
    with connect(f"{exchange.ws_url}/ws/{key}") as ws:
        assert send_v3(exchange, "DELETE", "listenKey", {}).status_code == 200
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    btc = exchange.accounts.engine.instruments["BTCUSDT"]
    low = (Decimal(repr(float(btc.open[btc.bar_at(exchange.now_ms)]))) * Decimal("0.9")).quantize(
        btc.tick
    )
    send_v3(exchange, "POST", "order", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                                        "timeInForce": "GTC", "quantity": "0.001",
                                        "price": str(low), "newClientOrderId": "cd-1"})  # fmt: skip
    r = send_v3(
        exchange, "POST", "countdownCancelAll", {"symbol": "BTCUSDT", "countdownTime": "300"}
    )
    assert r.json() == {"symbol": "BTCUSDT", "countdownTime": "300"}
    assert send_v3(exchange, "GET", "openOrders", {"symbol": "BTCUSDT"}).json()  # still there
    time.sleep(0.5)  # not renewed
    assert send_v3(exchange, "GET", "openOrders", {"symbol": "BTCUSDT"}).json() == []
    assert send_v3(exchange, "GET", "order", {"symbol": "BTCUSDT", "origClientOrderId": "cd-1"}
                   ).json()["status"] == "CANCELED"  # fmt: skip
