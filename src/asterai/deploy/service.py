"""The signal service: FastAPI on onnxruntime, CPU only, run under uvicorn.

Endpoints (everything but ``/health`` needs ``Authorization: Bearer $ASTERAI_SERVE_TOKEN``,
compared in constant time; a token shorter than 32 characters is refused at start):

* ``GET /health``: 200 when the data is fresh (``ok``), 503 while warming up
  (``starting``), when the data is stale (``stale``) or when the market follower has
  stopped (``dead``), so a platform's health check restarts the instance. Anyone gets
  ``status`` and ``stale``; with the token, the detail (the last bar seen, its age, the
  exchange's clock, the last exchange error, refused bars, why the follower stopped);
* ``GET /v1/models``: the model, its config's sha256, the export manifest's sha256, the
  features ``POST /v1/predict`` takes (in order), the training window, the threshold;
* ``GET /v1/signals[?symbols=A,B]``: per symbol of the newest bar: ``p_long``,
  ``p_short``, the decision at the threshold (the backtest's rule,
  ``backtest.kernel.entry_side``), the bar, the tradeable flag and its reason from the
  universe rules, and ``stale``. Stale data is still served, every signal marked
  ``stale: true``; once the follower has stopped (it never updates again) the answer is
  503;
* ``POST /v1/predict``: feature rows in (``{"rows": [{"symbol", "values", "open_time"?}]}``,
  ``values`` in ``/v1/models``' order, ``null`` for a missing value), probabilities out;
  rows of one symbol at consecutive ``open_time`` s form the LSTM's windows as in the
  batch, a row without its window is scored by the XGBoost member alone;
* ``GET /metrics``: Prometheus' text format (``watch.metrics.ServiceCollector``);
* ``GET /v1/openapi.json``: the schema, with the served symbols, the feature count and
  the bar grid written in (``api_models.contract``).

No request names a path or a file: the model is the one the service started with.
Every 4xx/5xx body is ``api_models.ErrorBody``: bodies over ``max_body`` bytes are
refused with 413, malformed ones with 422 naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from asterai import __version__
from asterai.deploy.api_models import (
    MAX_BODY,
    MIN_TOKEN_CHARS,
    Health,
    Predictions,
    PredictRequest,
    Signals,
    contract,
    errors,
)
from asterai.deploy.follow import Follower
from asterai.deploy.runtime import MANIFEST, OnnxModel
from asterai.entry import allowed_sides, entry_side
from asterai.intervals import INTERVAL_MS, iso_ms
from asterai.watch.metrics import service_registry
from asterai.webapi import Bearer, Unprocessable, credentials, install_error_handlers

log = logging.getLogger(__name__)

DECISIONS = {1: "long", -1: "short", 0: "flat"}
#: what anyone may read of /health; the rest needs the token
PUBLIC_HEALTH = ("status", "stale")
#: the bearer token, parsed (and declared in the schema); checked by the routes
Credentials = credentials("ASTERAI_SERVE_TOKEN")


def _prob(p: float) -> float | None:
    """A probability for JSON: a symbol without a score (not listed yet at that bar) has
    NaN, which JSON cannot carry: null."""
    p = float(p)
    return p if np.isfinite(p) else None


class _BodyLimit:
    """ASGI middleware: a body longer than ``limit`` bytes is answered 413, whether it
    declares its length or streams it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        seen, exceeded, started = 0, False, False

        async def limited() -> dict:
            nonlocal seen, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # a streamed body: stop reading, answer 413 below
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: dict) -> None:
            nonlocal started
            if exceeded:
                return  # the app's own answer to a cut body is replaced by the 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _too_large(send, self.limit)


async def _too_large(send: Any, limit: int) -> None:
    body = json.dumps({"detail": f"request body over {limit} bytes", "errors": []}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


#: seconds a stopping service waits for the follower's step in flight before cancelling it
STOP_GRACE_S = 5.0


def create_app(
    model: OnnxModel,
    follower: Follower | None,
    *,
    token: str | None,
    name: str,
    max_body: int = MAX_BODY,
    follow: bool = True,
) -> Any:
    """The ASGI app. ``token`` None: no authentication (``--insecure-local`` only); else
    at least ``MIN_TOKEN_CHARS`` characters (ValueError). ``follow``: run ``follower`` in
    the app's lifespan (its event loop), watched: if it ends while the app runs,
    ``/health`` says ``dead`` (503) and the reason is logged once, with its traceback."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"the bearer token has {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
            "(openssl rand -hex 32)"
        )
    manifest_sha = hashlib.sha256((model.folder / MANIFEST).read_bytes()).hexdigest()
    base = [f for f in model.features if not f.startswith("category_")]
    served = set(follower.symbols) if follower is not None else set(
        model.manifest.get("service", {}).get("symbols", [])
    )  # fmt: skip
    step = INTERVAL_MS[model.inputs["label"]["base_interval"]]
    threshold = float(model.manifest["threshold"])
    allow_long, allow_short = allowed_sides(model.manifest.get("sides", "both"))
    running: dict[str, Any] = {"task": None, "stop": None}

    def died(task: asyncio.Task) -> None:
        """The follower's task is done: unless the app is stopping, it died; say why once."""
        if running["stop"].is_set():
            return
        exc = None if task.cancelled() else task.exception()
        log.error("the market follower stopped: %s; /health answers 503 (dead)",
                  death(), exc_info=exc)  # fmt: skip

    def death() -> str | None:
        """Why the follower is no longer running while the app is, or None."""
        task, stop = running["task"], running["stop"]
        if task is None or not task.done() or stop.is_set():
            return None
        if task.cancelled():
            return "cancelled"
        exc = task.exception()
        return f"{type(exc).__name__}: {exc}" if exc is not None else "returned"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(follower.run(stop)) if follow and follower else None
        running.update(task=task, stop=stop)
        if task is not None:
            task.add_done_callback(died)
        yield
        stop.set()
        if task is not None:
            # the follower stops between steps; a step in flight may be retrying an
            # exchange that does not answer (up to exchange.retry_budget_s), so the
            # service stops once it is done or after STOP_GRACE_S, whichever comes first
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(task, STOP_GRACE_S)

    app = FastAPI(
        title="AsterAI signals",
        version=__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    bearer = Bearer(token, "ASTERAI_SERVE_TOKEN")
    valid = bearer.valid
    auth = [Depends(bearer.dependency())]
    install_error_handlers(app)

    @app.get(
        "/health",
        response_model=None,
        responses={200: {"model": Health, "description": "fresh data (ok)"},
                   503: {"model": Health, "description": "starting, stale or dead"}},
        openapi_extra={"security": [{}, {"HTTPBearer": []}]},
    )  # fmt: skip
    async def health(credentials: Credentials) -> JSONResponse:
        """200 when the data is fresh, else 503 (a platform's health check restarts the
        instance); ``status`` and ``stale`` for anyone, the detail with the token."""
        if follower is None:
            out: dict[str, Any] = {"status": "ok", "stale": False, "following": False}
        else:
            out = follower.health()
            reason = death()
            if reason is not None:
                out.update(status="dead", stale=True, follower_error=reason)
        if not (credentials is not None and valid(credentials)):
            out = {k: out[k] for k in PUBLIC_HEALTH}
        return JSONResponse(out, status_code=200 if out["status"] == "ok" else 503)

    registry = service_registry(follower if follow else None)

    @app.get("/metrics", dependencies=auth, include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus' text format (``watch.metrics.ServiceCollector``), with the token."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", dependencies=auth, responses=errors(401))
    async def models() -> dict[str, Any]:
        m = model.manifest
        return {
            "model": name,
            "model_config_sha256": m["model_config_sha256"],
            "manifest_sha256": manifest_sha,
            "features": base,
            "inputs": model.features,
            "sequence_length": model.sequence_length,
            "members": {
                k: {"file": v["file"], "sha256": v["sha256"]} for k, v in m["members"].items()
            },
            "ensemble": m["ensemble"],
            "threshold": threshold,
            "sides": model.manifest.get("sides", "both"),
            "training_window": m.get("training_window"),
            "symbols": sorted(served),
            "versions": m.get("versions"),
            "parity_max_abs_diff": m.get("parity", {}).get("max_abs_diff"),
        }

    @app.get(
        "/v1/signals",
        dependencies=auth,
        response_model=None,
        responses={200: {"model": Signals}, **errors(401, 404, 422, 503)},
    )
    async def signals(symbols: Annotated[str | None, Query()] = None) -> JSONResponse:
        """Stale data is served with every signal marked ``stale: true``; a stopped
        follower (it never updates again) is 503."""
        if follower is None:
            raise HTTPException(404, "this service does not follow the market (predict only)")
        if death() is not None:
            raise HTTPException(503, "the market follower has stopped: no new signals")
        snap = follower.state.snapshot
        if snap is None:
            raise HTTPException(503, "warming up: no bar computed yet")
        frame = snap.signals
        if symbols is not None:
            wanted = symbols.split(",")
            unknown = sorted(set(wanted) - served)
            if unknown:
                raise Unprocessable("symbols", f"not served: {', '.join(map(repr, unknown))}")
            frame = frame[frame["symbol"].isin(wanted)]
        stale = bool(follower.health()["stale"])
        bar = {
            "open_time": iso_ms(snap.bar_open_ms),
            "close_time": iso_ms(snap.bar_open_ms + step - 1),
        }
        rows = []
        for r in frame.itertuples(index=False):
            side = int(entry_side(
                float(r.p_long), float(r.p_short), threshold, allow_long, allow_short
            ))
            rows.append({
                "symbol": r.symbol, "p_long": _prob(r.p_long), "p_short": _prob(r.p_short),
                "decision": DECISIONS[side], "bar_open_time": bar["open_time"],
                "tradeable": bool(r.tradeable),
                "reason": r.reason if isinstance(r.reason, str) else None, "stale": stale,
            })  # fmt: skip
        return JSONResponse(
            {"model": name, "threshold": threshold, "bar": bar, "stale": stale, "signals": rows}
        )

    def score(body: PredictRequest) -> dict[str, Any]:
        width = len(base)
        for i, row in enumerate(body.rows):
            if row.symbol not in served:
                raise Unprocessable(f"rows[{i}].symbol", f"{row.symbol!r} is not a served symbol")
            if len(row.values) != width:
                raise Unprocessable(
                    f"rows[{i}].values", f"{len(row.values)} values, the model takes {width}"
                )
            if row.open_time is not None and row.open_time % step:
                raise Unprocessable(f"rows[{i}].open_time", f"not on the {step // 60_000} min grid")
        cells = np.array([row.values for row in body.rows], dtype=object)
        X = np.where(cells == None, np.nan, cells).astype(float)  # noqa: E711 - null: missing
        # a row without an open time stands alone: no LSTM window reaches it
        times = np.array(
            [r.open_time if r.open_time is not None else -(2 * i + 2) * step
             for i, r in enumerate(body.rows)], dtype=np.int64,
        )  # fmt: skip
        symbols = [r.symbol for r in body.rows]
        if len(set(zip(symbols, times.tolist(), strict=True))) != len(symbols):
            raise Unprocessable("rows", "a (symbol, open_time) appears twice")
        frame = pd.DataFrame(X, columns=base)
        frame.insert(0, "open_time", pd.to_datetime(times, unit="ms", utc=True).as_unit("ms"))
        frame.insert(0, "symbol", symbols)
        preds = model.predict(frame)
        p_long, p_short = preds["p_long"].to_numpy(), preds["p_short"].to_numpy()
        out = []
        for i, row in enumerate(body.rows):
            side = int(entry_side(
                float(p_long[i]), float(p_short[i]), threshold, allow_long, allow_short
            ))
            item = {"symbol": row.symbol, "p_long": _prob(p_long[i]),
                    "p_short": _prob(p_short[i]), "decision": DECISIONS[side]}  # fmt: skip
            if row.open_time is not None:
                item["open_time"] = iso_ms(int(row.open_time))
            out.append(item)
        return {"model": name, "threshold": threshold, "predictions": out}

    @app.post(
        "/v1/predict",
        dependencies=auth,
        response_model=None,
        responses={200: {"model": Predictions}, **errors(401, 413, 422)},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
                },
            }
        },
    )
    async def predict(request: Request) -> JSONResponse:
        """422 also for what the schema cannot state: a (symbol, open_time) pair twice."""
        # pydantic parses and checks the raw body in one pass (several times faster than
        # decoding it to Python objects first, as a model-typed parameter would)
        try:
            body = PredictRequest.model_validate_json(await request.body())
        except ValidationError as err:
            raise RequestValidationError(err.errors()) from None
        return JSONResponse(await asyncio.to_thread(score, body))

    published: dict[str, Any] = {}

    @app.get("/v1/openapi.json", dependencies=auth, responses=errors(401))
    async def openapi() -> dict[str, Any]:
        if not published:
            published.update(contract(
                app.openapi(), symbols=sorted(served), width=len(base), step_ms=step
            ))  # fmt: skip
        return published

    return _BodyLimit(app, max_body)
