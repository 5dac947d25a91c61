"""The signal service: FastAPI on onnxruntime, CPU only, run under uvicorn.

Endpoints (everything but ``/health`` needs ``Authorization: Bearer $ASTERAI_SERVE_TOKEN``,
compared in constant time):

* ``GET /health``: status (starting, ok, stale), the last bar seen, its age, whether
  the data is stale;
* ``GET /v1/models``: the model, its config's sha256, the export manifest's sha256, the
  features ``POST /v1/predict`` takes (in order), the training window, the threshold;
* ``GET /v1/signals[?symbols=A,B]``: per symbol of the newest bar: ``p_long``,
  ``p_short``, the decision at the threshold (the backtest's rule,
  ``backtest.kernel.entry_side``), the bar, the tradeable flag and its reason from the
  universe rules, and ``stale``;
* ``POST /v1/predict``: feature rows in (``{"rows": [{"symbol", "values", "open_time"?}]}``,
  ``values`` in ``/v1/models``' order, ``null`` for a missing value), probabilities out;
  rows of one symbol at consecutive ``open_time`` s form the LSTM's windows as in the
  batch, a row without its window is scored by the XGBoost member alone;
* ``GET /v1/openapi.json``: the schema.

No request names a path or a file: the model is the one the service started with.
Bodies over ``max_body`` bytes are refused with 413, malformed ones with 422 and a
message naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from asterai import __version__
from asterai.deploy.follow import Follower
from asterai.deploy.runtime import MANIFEST, OnnxModel
from asterai.entry import allowed_sides, entry_side
from asterai.intervals import INTERVAL_MS, iso_ms

#: the largest request body accepted (bytes): 1,000 rows of ~120 features fit
MAX_BODY = 2_000_000
MAX_ROWS = 1_000
DECISIONS = {1: "long", -1: "short", 0: "flat"}

Finite = Annotated[float, Field(allow_inf_nan=False)]


class PredictRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: str = Field(min_length=1, max_length=40)
    values: list[Finite | None]
    open_time: int | None = Field(None, ge=0, description="the bar's open time, epoch ms")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[PredictRow] = Field(min_length=1, max_length=MAX_ROWS)


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
    body = json.dumps({"detail": f"request body over {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def _field(loc: tuple | list) -> str:
    """``("body", "rows", 3, "values", 7)`` -> ``rows[3].values[7]``."""
    out = ""
    for part in loc:
        if part in ("body", "query"):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


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
    """The ASGI app. ``token`` None: no authentication (``--insecure-local`` only).
    ``follow``: run ``follower`` in the app's lifespan (its event loop)."""
    manifest_sha = hashlib.sha256((model.folder / MANIFEST).read_bytes()).hexdigest()
    base = [f for f in model.features if not f.startswith("category_")]
    served = set(follower.symbols) if follower is not None else set(
        model.manifest.get("service", {}).get("symbols", [])
    )  # fmt: skip
    step = INTERVAL_MS[model.inputs["label"]["base_interval"]]
    threshold = float(model.manifest["threshold"])
    allow_long, allow_short = allowed_sides(model.manifest.get("sides", "both"))
    expected = token.encode() if token is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(follower.run(stop)) if follow and follower else None
        yield
        stop.set()
        if task is not None:
            # the follower stops between steps; a step in flight may be retrying an
            # exchange that does not answer (up to exchange.retry_budget_s), so the
            # service stops once it is done or after STOP_GRACE_S, whichever comes first
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(task, STOP_GRACE_S)

    app = FastAPI(
        title="AsterAI signals",
        version=__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )

    def authorized(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    auth = [Depends(authorized)]

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        text = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return JSONResponse({"detail": text, "errors": errors[:50]}, status_code=422)

    def unprocessable(field: str, message: str) -> HTTPException:
        return HTTPException(422, f"{field}: {message}")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        if follower is None:
            return {"status": "ok", "stale": False, "following": False}
        return follower.health()

    @app.get("/v1/models", dependencies=auth)
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

    @app.get("/v1/signals", dependencies=auth)
    async def signals(
        symbols: Annotated[str | None, Query(max_length=4000)] = None,
    ) -> dict[str, Any]:
        if follower is None:
            raise HTTPException(404, "this service does not follow the market (predict only)")
        snap = follower.state.snapshot
        if snap is None:
            raise HTTPException(503, "warming up: no bar computed yet")
        frame = snap.signals
        if symbols:
            wanted = [s.strip().upper() for s in symbols.split(",") if s.strip()]
            unknown = sorted(set(wanted) - served)
            if unknown:
                raise unprocessable("symbols", f"not served: {', '.join(unknown)}")
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
                "symbol": r.symbol, "p_long": float(r.p_long), "p_short": float(r.p_short),
                "decision": DECISIONS[side], "bar_open_time": bar["open_time"],
                "tradeable": bool(r.tradeable), "reason": r.reason, "stale": stale,
            })  # fmt: skip
        return {"model": name, "threshold": threshold, "bar": bar, "stale": stale, "signals": rows}

    def score(body: PredictRequest) -> dict[str, Any]:
        width = len(base)
        for i, row in enumerate(body.rows):
            if row.symbol not in served:
                raise unprocessable(f"rows[{i}].symbol", f"{row.symbol!r} is not a served symbol")
            if len(row.values) != width:
                raise unprocessable(
                    f"rows[{i}].values", f"{len(row.values)} values, the model takes {width}"
                )
            if row.open_time is not None and row.open_time % step:
                raise unprocessable(f"rows[{i}].open_time", f"not on the {step // 60_000} min grid")
        cells = np.array([row.values for row in body.rows], dtype=object)
        X = np.where(cells == None, np.nan, cells).astype(float)  # noqa: E711 - null: missing
        # a row without an open time stands alone: no LSTM window reaches it
        times = np.array(
            [r.open_time if r.open_time is not None else -(2 * i + 2) * step
             for i, r in enumerate(body.rows)], dtype=np.int64,
        )  # fmt: skip
        symbols = [r.symbol for r in body.rows]
        if len(set(zip(symbols, times.tolist(), strict=True))) != len(symbols):
            raise unprocessable("rows", "a (symbol, open_time) appears twice")
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
            item = {"symbol": row.symbol, "p_long": float(p_long[i]),
                    "p_short": float(p_short[i]), "decision": DECISIONS[side]}  # fmt: skip
            if row.open_time is not None:
                item["open_time"] = iso_ms(int(row.open_time))
            out.append(item)
        return {"model": name, "threshold": threshold, "predictions": out}

    @app.post(
        "/v1/predict",
        dependencies=auth,
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
        # pydantic parses and checks the raw body in one pass (several times faster than
        # decoding it to Python objects first, as a model-typed parameter would)
        try:
            body = PredictRequest.model_validate_json(await request.body())
        except ValidationError as err:
            raise RequestValidationError(err.errors()) from None
        return JSONResponse(await asyncio.to_thread(score, body))

    @app.get("/v1/openapi.json", dependencies=auth)
    async def openapi() -> dict[str, Any]:
        schema = app.openapi()
        defs = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs.pop("$defs", {}))
        components["PredictRequest"] = defs
        return schema

    return _BodyLimit(app, max_body)
