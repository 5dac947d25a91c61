"""The signal service, run for real: uvicorn on loopback, following a replay of the real
recording, serving the model trained and exported from it.

The replay's clock runs (``clock_speed``): the recording ends at 2025-10-15 04:29 UTC, so
the bar of 03:00 is the newest closed one at the start, and the next one (04:00, still
open when the recording was taken) never comes: the service must call its data stale
once that bar is overdue. The service's clock runs at the same speed, so an hour of
exchange time passes in ``3600 / SPEED`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import ALL_CHECKS, FAST_EXCHANGE, Served, schemathesis_run, wait_healthy

from asterai.config import load_settings
from asterai.data.store import to_epoch_ms
from asterai.paths import DataPaths

SPEED = 120.0  # exchange seconds per real second: one 1h bar in 30 s
GRACE_S = 60.0  # exchange seconds a bar may be late before the data is stale
TOKEN = "test-token-7f3a9c0b5e2d4a6f8c1e3b5d7f9a0c2e"  # noqa: S105 - a test's own token
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def service(exported_root, recording):
    """(base url, follower, replay server, data root): the service, warmed up."""
    from asterai.deploy.follow import Follower
    from asterai.deploy.runtime import OnnxModel
    from asterai.deploy.service import create_app
    from asterai.exchange.replay import ReplayServer

    with ReplayServer(recording, clock_speed=SPEED) as replay:
        settings = load_settings(exported_root, base_url=replay.base_url, exchange=FAST_EXCHANGE)
        model = OnnxModel(DataPaths.at(exported_root).models("confluence") / "onnx")
        follower = Follower(settings, model, clock_rate=SPEED, grace_s=GRACE_S,
                            poll_delay_s=0.05, retry_s=0.2)  # fmt: skip
        app = create_app(model, follower, token=TOKEN, name="confluence")
        with Served(app) as url:
            deadline = time.monotonic() + 120
            while follower.state.snapshot is None:
                assert time.monotonic() < deadline, follower.state.last_error
                time.sleep(0.05)
            yield url, follower, replay, exported_root


def test_after_the_warm_up_it_is_healthy_and_serves_the_last_closed_bar(service) -> None:
    url, follower, _, _ = service
    public = httpx.get(f"{url}/health")  # no token needed: the status alone
    assert public.status_code == 200 and public.json() == {"status": "ok", "stale": False}
    health = httpx.get(f"{url}/health", headers=AUTH).json()  # the detail with the token
    assert health["status"] == "ok" and health["stale"] is False, health
    assert health["last_bar_open_time"] == "2025-10-15T03:00:00.000Z"
    assert health["next_bar_due"] == "2025-10-15T04:59:59.999Z"
    assert 0 < health["last_bar_age_s"] < 3600
    assert (
        health["refused_bars"] == 0
    )  # BTCUSDT's real 4h bar that opens outside its range is taken


def test_metrics_are_prometheus_text_with_the_token_and_say_what_health_says(service) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    url, follower, _, _ = service
    assert httpx.get(f"{url}/metrics").status_code == 401
    for _ in range(5):  # the replay plays on: read again if a poll came in between
        st = follower.state
        before = (st.snapshot, st.polls, st.exchange_errors, st.unexpected_errors)
        answer = httpx.get(f"{url}/metrics", headers=AUTH)
        health = httpx.get(f"{url}/health", headers=AUTH).json()
        if before == (st.snapshot, st.polls, st.exchange_errors, st.unexpected_errors):
            break
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(answer.text))
    samples = {s.name: s.value for f in families for s in f.samples if not s.labels}
    assert samples["asterai_service_stale"] == float(health["stale"])
    close = pd.Timestamp(health["last_bar_close_time"]).value // 1_000_000 + 1  # (…999 ms)
    assert samples["asterai_service_last_bar_close_timestamp_seconds"] == close / 1000
    snap = before[0]
    assert samples["asterai_service_close_to_signals_seconds"] == pytest.approx(
        max(snap.computed_at_ms - close, 0) / 1000)  # fmt: skip
    assert samples["asterai_service_polls_total"] == before[1]
    assert samples["asterai_exchange_weight_budget"] > 0
    errors = {s.labels["kind"]: s.value for f in families if f.name == "asterai_service_errors"
              for s in f.samples}  # fmt: skip
    assert errors == {"exchange": before[2], "unexpected": before[3]}


def test_serving_a_few_symbols_leaves_the_models_inputs_whole(service) -> None:
    """``asterai serve --symbols A,B``: the follower still follows every symbol of the
    export (the cross-sectional features read the whole universe, as in the batch) and
    serves the two; their probabilities equal the full service's at the same bar."""
    from asterai.deploy.follow import Follower
    from asterai.deploy.runtime import OnnxModel
    from asterai.exchange.client import AsterClient

    _, follower, replay, root = service
    settings = load_settings(root, base_url=replay.base_url, exchange=FAST_EXCHANGE)
    model = OnnxModel(DataPaths.at(root).models("confluence") / "onnx")
    few = Follower(settings, model, symbols=["ETHUSDT", "BTCUSDT"], clock_rate=SPEED)

    async def warm() -> None:
        async with AsterClient(settings.base_url, settings.exchange) as client:
            await few.warm_up(client)

    asyncio.run(warm())
    snap = few.state.snapshot
    assert snap.signals["symbol"].tolist() == ["BTCUSDT", "ETHUSDT"]
    assert few.live.symbols == follower.live.symbols  # every symbol followed
    full = follower.bar_signals[snap.bar_open_ms].set_index("symbol")
    for side in ("p_long", "p_short"):
        got = snap.signals.set_index("symbol")[side]
        np.testing.assert_allclose(got, full.loc[got.index, side], rtol=0, atol=1e-12)


def test_an_arriving_bar_without_volume_that_moves_the_price_is_refused(service) -> None:
    """The gate's rule where bars arrive: a bar without volume repeats the previous
    close, judged against the bar before it in the same answer, or for a pushed bar
    (the first of an answer) against the bar held one step before it."""
    from asterai.deploy.arriving import refused_rows

    _, follower, _, _ = service
    hour = 3_600_000
    j = follower.live.index["BTCUSDT"]
    panel = follower.live.rings["1h"].panel()
    t = int(panel.times[-2])  # held (the follower may add a newer bar meanwhile)
    held = float(panel.fields["close"][j][-2])
    assert np.isfinite(held)

    def bars(*rows: tuple[float, float]) -> dict[str, np.ndarray]:
        """Bars from the one after ``t``: (price, volume) each, built here."""
        price = np.array([p for p, _ in rows])
        volume = np.array([v for _, v in rows])
        return {"open_time": t + hour * np.arange(1, len(rows) + 1), "open": price,
                "high": price, "low": price, "close": price, "volume": volume,
                "quote_volume": volume * price, "taker_buy_base": np.full(len(rows), np.nan)}  # fmt: skip

    def refused(cols):
        return refused_rows(cols, follower._previous_closes("BTCUSDT", "1h", cols))

    assert not refused(bars((held, 0.0)))[0].any()  # the previous close repeated
    assert not refused(bars((held + 10.0, 2.5)))[0].any()  # a trade moves it
    bad, broken = refused(bars((held + 10.0, 0.0)))  # no trade, yet a new price
    assert bad.tolist() == [True] and broken == ["a bar without volume that moves the price"]
    # in one answer: each bar against the one before it
    bad, _ = refused(bars((held + 10.0, 2.5), (held + 10.0, 0.0), (held, 0.0)))
    assert bad.tolist() == [False, False, True]


def test_the_signals_of_the_last_bar_equal_the_batch_predictions(service) -> None:
    from asterai.backtest.kernel import entry_side
    from asterai.deploy.runtime import OnnxModel
    from asterai.entry import allowed_sides
    from asterai.models.registry import load

    url, _, _, root = service
    body = httpx.get(f"{url}/v1/signals", headers=AUTH).json()
    assert body["bar"]["open_time"] == "2025-10-15T03:00:00.000Z"
    got = pd.DataFrame(body["signals"]).set_index("symbol")
    table = pd.read_parquet(DataPaths.at(root).features("1h"))
    ms = to_epoch_ms(table["open_time"])
    last = ms == ms.max()
    assert sorted(got.index) == sorted(table.loc[last, "symbol"])
    onnx = OnnxModel(DataPaths.at(root).models("confluence") / "onnx").predict(table, targets=last)
    native = load(load_settings(root), "confluence").predict(table, targets=last)
    for preds, tolerance in ((onnx, 1e-6), (native, 1e-5)):  # the export's parity bound
        want = table.loc[last, ["symbol"]].join(preds).set_index("symbol").loc[got.index]
        for side in ("p_long", "p_short"):
            assert np.max(np.abs(got[side] - want[side])) <= tolerance, side
    threshold = body["threshold"]
    # the manifest's strategy.sides decides which sides are signalled
    sides = httpx.get(f"{url}/v1/models", headers=AUTH).json()["sides"]
    assert sides == load_settings(root).strategy.sides
    for symbol, row in got.iterrows():
        side = entry_side(row.p_long, row.p_short, threshold, *allowed_sides(sides))
        assert row.decision == {1: "long", -1: "short", 0: "flat"}[side], symbol
    # the tradeable flag is the point-in-time universe's for that bar
    universe = pd.read_parquet(DataPaths.at(root).universe)
    at = universe[to_epoch_ms(universe["open_time"]) == ms.max()].set_index("symbol")
    assert got["tradeable"].to_dict() == at.loc[got.index, "tradeable"].to_dict()
    assert got.loc[~got["tradeable"], "reason"].notna().all()
    narrowed = httpx.get(f"{url}/v1/signals?symbols=BTCUSDT,ETHUSDT", headers=AUTH).json()
    assert [s["symbol"] for s in narrowed["signals"]] == ["BTCUSDT", "ETHUSDT"]
    unknown = httpx.get(f"{url}/v1/signals?symbols=BTCUSDT,NOPEUSDT", headers=AUTH)
    assert unknown.status_code == 422 and "NOPEUSDT" in unknown.json()["detail"]


def test_the_tick_rule_where_bars_arrive_is_the_batch_universes(service) -> None:
    """The follower's tick is the exchange's (the exchangeInfo of its warm-up, served as
    discovery recorded it); under a tick share real bars cross (0.014%), its code at
    each held bar with a whole day held before it is the batch universe's over the
    collected bars; and a manifest exported before the rule leaves the rule off."""
    from types import SimpleNamespace

    from asterai.data.filters import read_filters
    from asterai.data.store import read_provenance, read_series
    from asterai.data.universe import REASONS, TICK_TOO_COARSE, BaseBars, build_universe
    from asterai.deploy.follow import Follower
    from asterai.intervals import DAY_MS

    _, follower, _, root = service
    paths = DataPaths.at(root)
    filters = read_filters(paths.discovery)
    symbols = list(follower.live.symbols)
    for symbol in symbols:
        assert follower.ticks[symbol] == filters[symbol]["tick_size"], symbol
    assert follower.rules.max_tick_share == 0.01  # exported with the rule, at its default
    share = 1.4e-4
    settings = load_settings(root)
    strict = settings.model_copy(
        update={"universe": settings.universe.model_copy(update={"max_tick_share": share})}
    )
    bases = {}
    for symbol in symbols:
        path = paths.klines(symbol, "1h")
        listing = (read_provenance(path) or {}).get("listing_open_time")
        frame = read_series(path, "klines").frame
        bases[symbol] = BaseBars.from_frame(frame, listing, filters[symbol]["tick_size"])
    batch = build_universe(bases, {}, strict)
    keys = zip(to_epoch_ms(batch["open_time"]).tolist(), batch["symbol"], strict=True)
    reasons = [None if ok else r for ok, r in zip(batch["tradeable"], batch["reason"], strict=True)]
    want = dict(zip(keys, reasons, strict=True))  # a str column holds NaN, REASONS None
    held = follower.live.rings["1h"].panel().times
    times = [int(t) for t in held if t >= held[0] + DAY_MS][-48:]
    saved = follower.rules
    try:
        follower.rules = saved._replace(max_tick_share=share)
        follower._changed()
        got = {t: follower.tradeable_at(t).copy() for t in times}
    finally:
        follower.rules = saved
        follower._changed()
    compared = []
    for t, codes in got.items():
        for j, symbol in enumerate(symbols):
            if codes[j] >= 0:
                compared.append((REASONS[codes[j]], want[(t, symbol)], t, symbol))
    assert len(compared) > 10 * len(times)
    assert [c[0] for c in compared] == [c[1] for c in compared]
    assert any(c[0] == REASONS[TICK_TOO_COARSE] for c in compared)
    # an older export's universe facts lack the share: its model knew no such rule
    manifest = json.loads(json.dumps(follower.model.manifest))
    del manifest["service"]["universe"]["max_tick_share"]
    old = Follower(settings, SimpleNamespace(manifest=manifest, folder=root))
    assert old.rules.max_tick_share == 0.0
    assert old.rules._replace(max_tick_share=0.01) == saved


def test_every_endpoint_but_health_needs_the_token(service, caplog) -> None:
    url, *_ = service
    caplog.set_level(logging.INFO)
    for method, path in (("GET", "/v1/models"), ("GET", "/v1/signals"),
                         ("GET", "/v1/openapi.json"), ("POST", "/v1/predict")):  # fmt: skip
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = httpx.request(method, f"{url}{path}", headers=headers, json={"rows": []})
            assert r.status_code == 401, (path, headers, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
    models = httpx.get(f"{url}/v1/models", headers=AUTH).json()
    assert models["model"] == "confluence" and len(models["features"]) > 50
    assert models["training_window"] and len(models["manifest_sha256"]) == 64
    schema = httpx.get(f"{url}/v1/openapi.json", headers=AUTH).json()
    assert {"/health", "/v1/models", "/v1/signals", "/v1/predict"} <= set(schema["paths"])
    assert httpx.get(f"{url}/docs").status_code == 404  # no unauthenticated schema either
    assert TOKEN not in caplog.text


def _rows(root: Path, n_bars: int = 1) -> tuple[pd.DataFrame, list[str]]:
    """The feature table's last ``n_bars`` bars, and the model's feature order."""
    features = httpx_models_features(root)
    table = pd.read_parquet(DataPaths.at(root).features("1h"))
    ms = to_epoch_ms(table["open_time"])
    keep = ms >= np.unique(ms)[-n_bars]
    return table[keep].reset_index(drop=True), features


def httpx_models_features(root: Path) -> list[str]:
    manifest = json.loads(
        (DataPaths.at(root).models("confluence") / "onnx/manifest.json").read_text()
    )
    return [f for f in manifest["inputs"]["features"] if not f.startswith("category_")]


def _payload(rows: pd.DataFrame, features: list[str], *, times: bool) -> dict:
    values = rows[features].to_numpy(dtype=float)
    opened = to_epoch_ms(rows["open_time"])
    out = []
    for i, symbol in enumerate(rows["symbol"]):
        item = {"symbol": symbol, "values": [None if np.isnan(v) else float(v) for v in values[i]]}
        if times:
            item["open_time"] = int(opened[i])
        out.append(item)
    return {"rows": out}


def test_predict_scores_feature_rows_as_the_batch_does(service) -> None:
    from asterai.deploy.runtime import OnnxModel

    url, _, _, root = service
    model = OnnxModel(DataPaths.at(root).models("confluence") / "onnx")
    # rows alone: no LSTM window, the XGBoost member answers, as for a row without history
    rows, features = _rows(root)
    r = httpx.post(f"{url}/v1/predict", headers=AUTH, json=_payload(rows, features, times=False))
    assert r.status_code == 200, r.text
    got = pd.DataFrame(r.json()["predictions"])
    alone = model.predict(rows)  # one bar: no row has a window
    assert np.max(np.abs(got["p_long"] - alone["p_long"].to_numpy())) <= 1e-6
    # 24 consecutive bars of each symbol with their open times: the LSTM reads its windows
    rows, _ = _rows(root, model.sequence_length)
    r = httpx.post(f"{url}/v1/predict", headers=AUTH, json=_payload(rows, features, times=True))
    assert r.status_code == 200, r.text
    got = pd.DataFrame(r.json()["predictions"])
    same = model.predict(rows)  # the same rows: only the last bar's have a full window
    assert np.max(np.abs(got["p_long"].to_numpy() - same["p_long"].to_numpy())) <= 1e-6
    table = pd.read_parquet(DataPaths.at(root).features("1h"))
    ms = to_epoch_ms(table["open_time"])
    batch = model.predict(table, targets=ms == ms.max())  # with its whole history
    last = to_epoch_ms(rows["open_time"]) == ms.max()
    assert last.sum() == len(batch) and batch["lstm_long"].notna().all()
    assert np.max(np.abs(got["p_long"].to_numpy()[last] - batch["p_long"].to_numpy())) <= 1e-6


def _duplicate(payload: dict) -> None:
    payload["rows"][0]["open_time"] = 0
    payload["rows"].append(dict(payload["rows"][0]))


@pytest.mark.parametrize(
    "mutate, status, field",
    [
        (lambda p: p["rows"][0]["values"].pop(), 422, "rows[0].values"),
        (lambda p: p["rows"][0].update(symbol="NOPEUSDT"), 422, "rows[0].symbol"),
        (lambda p: p["rows"][0].update(extra=1), 422, "rows[0].extra"),
        (lambda p: p["rows"][1].update(values="x"), 422, "rows[1].values"),
        (lambda p: p.update(rows=[]), 422, "rows"),
        (lambda p: p.update(rows=p["rows"] * 201), 422, "rows"),
        (lambda p: _duplicate(p), 422, "rows"),
        # on the hour grid, past what a timestamp holds: bounded, not a 500
        (lambda p: p["rows"][0].update(open_time=3_600_000 * 10**12), 422, "rows[0].open_time"),
        (lambda p: p["rows"][0].update(open_time=-3_600_000), 422, "rows[0].open_time"),
    ],
)
def test_malformed_predict_bodies_are_422_naming_the_field(service, mutate, status, field) -> None:
    url, _, _, root = service
    rows, features = _rows(root)
    payload = _payload(rows.head(5), features, times=False)
    mutate(payload)
    r = httpx.post(f"{url}/v1/predict", headers=AUTH, json=payload)
    assert r.status_code == status, r.text
    assert r.json()["detail"].startswith(field), r.json()
    assert r.json()["errors"][0]["field"] == field  # the one error body


def test_non_finite_values_and_broken_json_are_422_and_huge_bodies_413(service) -> None:
    url, _, _, root = service
    rows, features = _rows(root)
    text = json.dumps(_payload(rows.head(2), features, times=False))
    nan = text.replace("null", "NaN", 1) if "null" in text else text.replace("[", "[NaN, ", 1)
    r = httpx.post(f"{url}/v1/predict", headers={**AUTH, "content-type": "application/json"},
                   content=nan)  # fmt: skip
    assert r.status_code == 422 and "rows[0].values" in r.json()["detail"], r.text
    r = httpx.post(f"{url}/v1/predict", headers={**AUTH, "content-type": "application/json"},
                   content=text[:-5])  # fmt: skip
    assert r.status_code == 422, r.text
    huge = b'{"rows": [' + b" " * 3_000_000 + b"]}"
    r = httpx.post(f"{url}/v1/predict", headers={**AUTH, "content-type": "application/json"},
                   content=huge)  # fmt: skip
    assert r.status_code == 413

    def streamed():  # no Content-Length: the limit counts what arrives
        for _ in range(40):
            yield b" " * 100_000

    r = httpx.post(f"{url}/v1/predict", headers={**AUTH, "content-type": "application/json"},
                   content=streamed())  # fmt: skip
    assert r.status_code == 413


def test_fifty_concurrent_clients_get_no_error(service) -> None:
    url, _, _, root = service
    rows, features = _rows(root)
    payload = _payload(rows, features, times=False)

    async def client(k: int) -> list[int]:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as http:
            codes = []
            for i in range(6):
                if (k + i) % 3 == 0:
                    codes.append((await http.post("/v1/predict", json=payload)).status_code)
                else:
                    codes.append((await http.get("/v1/signals")).status_code)
            return codes

    async def all_clients() -> list[int]:
        return [c for codes in await asyncio.gather(*(client(k) for k in range(50))) for c in codes]

    codes = asyncio.run(all_clients())
    assert len(codes) == 300 and set(codes) == {200}


def test_a_follower_that_dies_makes_health_503_dead_at_once(exported_root, caplog) -> None:
    """The follower's task ends while the app runs (here: an error its loop does not
    catch): /health says ``dead`` with 503 at once, the signals are refused (they will
    never be new again), and the error is logged once, with its traceback."""
    from asterai.deploy.follow import Follower
    from asterai.deploy.runtime import OnnxModel
    from asterai.deploy.service import create_app

    model = OnnxModel(DataPaths.at(exported_root).models("confluence") / "onnx")
    follower = Follower(load_settings(exported_root), model)

    async def dies(stop=None) -> None:  # the loop, failing as no retry expects
        await asyncio.sleep(0.2)
        raise RuntimeError("an error the loop does not expect")

    follower.run = dies
    caplog.set_level(logging.INFO)
    with Served(create_app(model, follower, token=TOKEN, name="confluence")) as url:
        deadline = time.monotonic() + 10
        while (r := httpx.get(f"{url}/health")).json()["status"] != "dead":
            assert time.monotonic() < deadline, r.json()
            time.sleep(0.05)
        assert r.status_code == 503 and r.json() == {"status": "dead", "stale": True}
        detail = httpx.get(f"{url}/health", headers=AUTH).json()
        assert detail["follower_error"] == "RuntimeError: an error the loop does not expect"
        signals = httpx.get(f"{url}/v1/signals", headers=AUTH)
        assert signals.status_code == 503 and "stopped" in signals.json()["detail"]
        time.sleep(0.2)
        assert httpx.get(f"{url}/health").status_code == 503  # and stays so
    died = [r for r in caplog.records if "follower stopped" in r.getMessage()]
    assert len(died) == 1 and died[0].levelno == logging.ERROR
    assert died[0].exc_info and died[0].exc_info[0] is RuntimeError
    assert TOKEN not in caplog.text


def test_a_token_shorter_than_32_characters_is_refused(exported_root) -> None:
    from asterai.deploy.runtime import OnnxModel
    from asterai.deploy.service import create_app

    model = OnnxModel(DataPaths.at(exported_root).models("confluence") / "onnx")
    with pytest.raises(ValueError, match="31 characters; use at least 32"):
        create_app(model, None, token="x" * 31, name="confluence")
    create_app(model, None, token="x" * 32, name="confluence")
    create_app(model, None, token=None, name="confluence")  # --insecure-local


@pytest.fixture
def fresh_service(exported_root, recording):
    """The service on a replay played forward in real time from just after a bar's
    close: its data stays fresh (``/health`` 200) for the next hour."""
    from asterai.deploy.follow import Follower
    from asterai.deploy.runtime import OnnxModel
    from asterai.deploy.service import create_app
    from asterai.exchange.replay import ReplayServer

    start = int(pd.Timestamp("2025-10-10T04:00:01Z").value // 1_000_000)
    with ReplayServer(recording, clock_speed=1.0, play_from_ms=start) as replay:
        settings = load_settings(exported_root, base_url=replay.base_url, exchange=FAST_EXCHANGE)
        model = OnnxModel(DataPaths.at(exported_root).models("confluence") / "onnx")
        follower = Follower(settings, model, poll_delay_s=0.05, retry_s=0.2)
        with Served(create_app(model, follower, token=TOKEN, name="confluence")) as url:
            deadline = time.monotonic() + 120
            while httpx.get(f"{url}/health").status_code != 200:
                assert time.monotonic() < deadline, follower.state.last_error
                time.sleep(0.05)
            yield url




def test_the_service_does_what_its_openapi_document_says(fresh_service) -> None:
    """Schemathesis, all checks, against the running service and the schema it serves:
    no failure. Its phases (the schema's boundaries and each constraint broken one at a
    time, then fuzzing) send a few hundred requests in seconds. One rule JSON Schema
    cannot state, a (symbol, open_time) pair at most once in ``rows``, is in the
    body's description and its 422 documented; the generated valid bodies keep it."""
    import schemathesis
    from schemathesis.config import SchemathesisConfig

    config = SchemathesisConfig.from_dict({
        "seed": 33, "headers": AUTH, "generation": {"max-examples": 100},
    })  # fmt: skip
    schema = schemathesis.openapi.from_url(
        f"{fresh_service}/v1/openapi.json", config=config, headers=AUTH
    )

    @schema.hook
    def filter_case(context, case) -> bool:
        rows = case.body.get("rows") if isinstance(case.body, dict) else None
        if not case.meta.generation.mode.is_positive or not isinstance(rows, list):
            return True
        pairs = [(r["symbol"], r["open_time"]) for r in rows if r.get("open_time") is not None]
        return len(pairs) == len(set(pairs))

    failures, ran, requests = schemathesis_run(schema)
    assert not failures, "\n".join(sorted(set(failures)))
    assert ALL_CHECKS <= ran, ALL_CHECKS - ran
    assert requests > 150, requests


def test_an_exchange_that_stops_answering_makes_the_data_stale_within_a_bar(service) -> None:
    url, follower, replay, _ = service
    replay.set_faults("drop=1")  # every connection dropped from now on
    try:
        deadline = time.monotonic() + 3600 / SPEED * 1.5
        while not (health := httpx.get(f"{url}/health", headers=AUTH).json())["stale"]:
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
        assert health["status"] == "stale"
        # stale is 503, for anyone: a platform's health check restarts the instance
        public = httpx.get(f"{url}/health")
        assert public.status_code == 503 and public.json() == {"status": "stale", "stale": True}
        # stale once the next bar is overdue by the grace, not later than one bar after it
        now = pd.Timestamp(health["exchange_time"])
        due = pd.Timestamp(health["next_bar_due"])
        assert pd.Timedelta(seconds=GRACE_S) <= now - due <= pd.Timedelta(hours=1)
        signals = httpx.get(f"{url}/v1/signals", headers=AUTH).json()
        assert signals["stale"] is True
        assert signals["signals"] and all(s["stale"] for s in signals["signals"])
        assert signals["bar"]["open_time"] == "2025-10-15T03:00:00.000Z"  # the old bar, marked
        deadline = time.monotonic() + 10
        while follower.state.last_error is None:  # the follower says why
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert httpx.get(f"{url}/health", headers=AUTH).json()["last_error"]
        assert "last_error" not in httpx.get(f"{url}/health").json()  # not for strangers
    finally:
        replay.set_faults(None)


def test_the_command_refuses_to_start_without_a_token(exported_root) -> None:
    from click.testing import CliRunner

    from asterai.cli import main

    env = {k: v for k, v in os.environ.items() if k != "ASTERAI_SERVE_TOKEN"}
    runner = CliRunner(env={**env, "ASTERAI_SERVE_TOKEN": ""})
    r = runner.invoke(main, ["serve", "--data-root", str(exported_root)])
    assert r.exit_code == 2 and "ASTERAI_SERVE_TOKEN is not set" in r.output
    r = runner.invoke(main, ["serve", "--data-root", str(exported_root), "--insecure-local",
                             "--host", "0.0.0.0"])  # fmt: skip
    assert r.exit_code == 2 and "127.0.0.1 only" in r.output
    short = "s3cr3t-but-short-0123456789abcd"  # noqa: S105 - 31 characters
    r = runner.invoke(main, ["serve", "--data-root", str(exported_root)],
                      env={"ASTERAI_SERVE_TOKEN": short})  # fmt: skip
    assert r.exit_code == 2 and "31 characters" in r.output and "at least 32" in r.output
    assert short not in r.output
    r = runner.invoke(main, ["serve", "--data-root", str(exported_root / "nowhere")],
                      env={"ASTERAI_SERVE_TOKEN": TOKEN})  # fmt: skip
    assert r.exit_code == 1 and "export-onnx" in r.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_service_starts_as_its_container_starts_it(exported_root, recording, tmp_path) -> None:
    """``asterai serve`` in its own process, as the Dockerfile's command runs it: only the
    export folder in its data root, the token from the environment, following a replay."""
    from asterai.exchange.replay import ReplayServer

    root = tmp_path / "srv"
    shutil.copytree(DataPaths.at(exported_root).models("confluence") / "onnx",
                    root / "models" / "confluence" / "onnx")  # fmt: skip
    port = _free_port()
    with ReplayServer(recording) as replay:
        env = {**os.environ, "ASTERAI_SERVE_TOKEN": TOKEN}
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "asterai.cli", "serve", "--data-root", str(root), "--host",
             "127.0.0.1", "--port", str(port), "--base-url", replay.base_url],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc)
            ready_s = time.monotonic() - started
            r = httpx.get(f"http://127.0.0.1:{port}/v1/signals", headers=AUTH)
            assert r.status_code == 200 and len(r.json()["signals"]) > 10
            rss_kb = int(Path(f"/proc/{proc.pid}/status").read_text().split("VmRSS:")[1].split()[0])
            print(f"ready in {ready_s:.1f} s, resident {rss_kb / 1024:.0f} MB")
            assert rss_kb < 600 * 1024  # the benchmark measures it; this only catches a blow-up
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
    assert TOKEN not in out
    assert "following" in out


def test_following_the_kline_streams_it_serves_each_new_bar_as_the_batch_scores_it(
    exported_root, recording
) -> None:
    """The replay played forward at 600x (a bar every 6 s) with its kline streams: the
    service follows the pushed bars, no klines request for them (but for the symbols
    not listed yet), and each new bar's signals equal the batch predictions."""
    from asterai.deploy.follow import Follower
    from asterai.deploy.runtime import OnnxModel
    from asterai.deploy.service import create_app
    from asterai.exchange.replay import ReplayServer

    speed = 600.0
    start = int(pd.Timestamp("2025-10-10T04:00:01Z").value // 1_000_000)
    table = pd.read_parquet(DataPaths.at(exported_root).features("1h"))
    ms = to_epoch_ms(table["open_time"])
    model = OnnxModel(DataPaths.at(exported_root).models("confluence") / "onnx")
    with ReplayServer(recording, clock_speed=speed, play_from_ms=start, streams=True) as replay:
        settings = load_settings(exported_root, base_url=replay.base_url, ws_url=replay.ws_url,
                                 exchange=FAST_EXCHANGE)  # fmt: skip
        follower = Follower(settings, model, clock_rate=speed, grace_s=GRACE_S,
                            poll_delay_s=60.0, retry_s=0.2)  # fmt: skip
        app = create_app(model, follower, token=TOKEN, name="confluence")
        with Served(app) as url:
            seen: dict[str, dict] = {}
            deadline = time.monotonic() + 120
            while len(seen) < 3:
                assert time.monotonic() < deadline, (seen.keys(), follower.state.last_error)
                if follower.state.snapshot is not None:
                    body = httpx.get(f"{url}/v1/signals", headers=AUTH).json()
                    seen.setdefault(body["bar"]["open_time"], body)
                time.sleep(0.1)
            assert follower.streams is not None and follower.streams.state.pushed > 0
            klines = replay.stats.paths.get("/fapi/v1/klines", 0)
    first = min(seen)
    # after the warm-up, the bars came pushed: beside the warm-up's requests, at most one
    # poll's (a bar that closed while the streams were opening) and the symbols not
    # listed yet (their first bar is asked from REST)
    warm_up = 2 * 3 * len(follower.symbols)  # first kline and the history, 3 timeframes
    n = len(follower.symbols)
    assert klines <= warm_up + n + len(follower.unlisted) * len(seen), klines
    for when, body in seen.items():
        if when == first:
            continue
        t = int(pd.Timestamp(when).value // 1_000_000)
        at = ms == t
        got = pd.DataFrame(body["signals"]).set_index("symbol")
        preds = model.predict(table, targets=at)
        want = table.loc[at, ["symbol"]].join(preds).set_index("symbol").loc[got.index]
        for side in ("p_long", "p_short"):
            assert np.max(np.abs(got[side] - want[side])) <= 1e-6, (when, side)


@contextlib.contextmanager
def running(follower):
    """``follower.run`` on its own event loop in a thread (the thread yielded), stopped
    and joined on the way out."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(follower.run(stop),))
    thread.start()
    try:
        yield thread
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def test_an_unexpected_error_is_logged_counted_and_the_follower_goes_on(
    exported_root, recording, caplog
) -> None:
    """Anything but an exchange error (here a RuntimeError injected into one step, as a
    malformed field or a model runtime's error would be): logged with its traceback,
    counted, retried after a backoff, and the follower keeps serving each new bar."""
    from asterai.deploy.follow import Follower
    from asterai.deploy.runtime import OnnxModel
    from asterai.exchange.replay import ReplayServer

    speed = 600.0
    start = int(pd.Timestamp("2025-10-10T04:00:01Z").value // 1_000_000)
    model = OnnxModel(DataPaths.at(exported_root).models("confluence") / "onnx")
    with ReplayServer(recording, clock_speed=speed, play_from_ms=start) as replay:
        settings = load_settings(exported_root, base_url=replay.base_url, exchange=FAST_EXCHANGE)
        follower = Follower(settings, model, clock_rate=speed, grace_s=GRACE_S,
                            poll_delay_s=60.0, retry_s=0.2)  # fmt: skip
        real, calls = follower.follow, []

        async def flaky(client, stop=None):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("a malformed field (injected by the test)")
            return await real(client, stop)

        follower.follow = flaky
        with (
            caplog.at_level(logging.ERROR, logger="asterai.deploy.follow"),
            running(follower) as thread,
        ):
            deadline = time.monotonic() + 120
            while follower.state.snapshot is None:
                assert time.monotonic() < deadline, follower.state.last_error
                time.sleep(0.05)
            first = follower.state.snapshot.bar_open_ms
            while follower.state.snapshot.bar_open_ms < first + 2 * 3_600_000:
                assert thread.is_alive(), "the follower ended on the error"
                assert time.monotonic() < deadline, follower.state.last_error
                time.sleep(0.05)
    assert follower.state.unexpected_errors == 1 and follower.state.exchange_errors == 0
    health = follower.health()
    assert health["errors"] == {"exchange": 0, "unexpected": 1}
    assert health["last_error"] is None and health["last_error_at"] is not None  # recovered
    logged = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # with its traceback
    assert "RuntimeError: a malformed field" in logged[0].getMessage()


def test_pushed_bars_not_taken_are_bounded_and_a_day_of_base_bars_is_held() -> None:
    """While a stream group is down the others push on: at most ``PUSHED_PER_SERIES``
    bars per symbol and timeframe wait (the oldest go: REST has them). The universe's
    24-hour volume rule needs a day of base bars: with a 1m base, 1,441 are held."""
    from asterai.deploy.arriving import PUSHED_PER_SERIES, Bars, Pushed, bars_to_hold
    from asterai.deploy.live import KEEP_BARS

    hour = 3_600_000
    pushed = Pushed()
    for k in range(PUSHED_PER_SERIES + 10):
        pushed.add("BTCUSDT", "1h", {"open_time": np.array([k * hour])})
    pushed.add("ETHUSDT", "1h", {"open_time": np.array([0])})
    btc = sorted(t for s, _, t in pushed.bars if s == "BTCUSDT")
    assert btc == [k * hour for k in range(10, PUSHED_PER_SERIES + 10)]
    assert pushed.take("BTCUSDT", "1h", 10 * hour) is not None
    pushed.prune(lambda s, iv: 20 * hour if s == "BTCUSDT" else -1, Bars())
    assert sorted(t for s, _, t in pushed.bars if s == "BTCUSDT")[0] == 21 * hour
    assert pushed.has("ETHUSDT", "1h", 0)
    assert bars_to_hold(3_600_000) == KEEP_BARS == 750
    assert bars_to_hold(60_000) == 1441  # the bars in (t - 24h, t], and the one before


def test_a_failing_step_waits_its_retry_even_while_bars_are_pushed(
    exported_root, recording
) -> None:
    """An exchange that keeps failing (here every step after the warm-up raises, as
    under an IP ban) while the streams go on pushing: the follower retries every
    ``retry_s``, it does not spin on the pushes its failed steps never took."""
    from asterai.deploy.follow import Follower
    from asterai.deploy.runtime import OnnxModel
    from asterai.exchange.errors import TemporaryError
    from asterai.exchange.replay import ReplayServer

    speed = 600.0
    start = int(pd.Timestamp("2025-10-10T04:00:01Z").value // 1_000_000)
    model = OnnxModel(DataPaths.at(exported_root).models("confluence") / "onnx")
    with ReplayServer(recording, clock_speed=speed, play_from_ms=start, streams=True) as replay:
        settings = load_settings(exported_root, base_url=replay.base_url, ws_url=replay.ws_url,
                                 exchange=FAST_EXCHANGE)  # fmt: skip
        follower = Follower(settings, model, clock_rate=speed, grace_s=GRACE_S,
                            poll_delay_s=60.0, retry_s=0.5)  # fmt: skip
        calls: list[float] = []

        async def failing(client, stop=None):
            calls.append(time.monotonic())
            raise TemporaryError("the exchange keeps failing (injected by the test)")

        follower.follow = failing
        with running(follower):
            deadline = time.monotonic() + 120
            while follower.streams is None or follower.streams.state.pushed == 0:
                assert time.monotonic() < deadline, "no bar was pushed"
                time.sleep(0.05)
            first = len(calls)
            time.sleep(3.0)
            during = len(calls) - first
    assert 2 <= during <= 3.0 / 0.5 + 2, during  # every retry_s, not at every wake-up
    assert follower.state.exchange_errors == len(calls)
