"""The dashboard: one page and its REST API over one or several accounts' journals.

``create_app(roots, token=...)`` serves, for every paper or live journal under the data
roots (``views.sources``), read-only:

* ``GET /``: the page (``watch.page``): self-contained (no CDN; it works offline), it
  asks for the token, then polls the API and shows each account, updating itself when a
  bar is journaled;
* ``GET /api/v1/accounts``, ``status``, ``positions``, ``trades``, ``equity``,
  ``events``, ``rejections`` (``?account=ID``, default the first);
* ``POST /api/v1/kill`` and ``/api/v1/pause`` (``{"account": ID, "confirm": true}``):
  the controls, by the files the traders watch (``watch.controls``);
* ``GET /api/v1/openapi.json``: the schema; ``GET /metrics``: the trader's Prometheus
  metrics when the app runs in its process (``--watch-port``).

Everything but the page itself needs ``Authorization: Bearer <token>`` (compared in
constant time); every error is an ``ErrorBody``. The page holds no data: without the
token it shows nothing and its buttons change nothing.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError

from asterai import __version__
from asterai.deploy.api_models import MIN_TOKEN_CHARS
from asterai.watch import views
from asterai.watch.controls import ControlRefused, ask
from asterai.watch.page import PAGE
from asterai.watch.schema import (
    Account,
    ControlAnswer,
    ControlRequest,
    Equity,
    Event,
    Position,
    Rejection,
    Status,
    Trade,
    errors,
)
from asterai.webapi import Bearer, install_error_handlers

TOKEN_ENV = "ASTERAI_DASHBOARD_TOKEN"
AccountId = Annotated[str | None, Query(max_length=200, description="an id from /api/v1/accounts "
                                        "(default: the first)")]  # fmt: skip


def create_app(
    roots: list[Path],
    *,
    token: str | None,
    always: tuple[str, ...] = (),
    live_settings: tuple[float, float] = (14.0, 0.01),
    registry: CollectorRegistry | None = None,
    feed: Callable[[views.Source], dict[str, Any] | None] | None = None,
    now_ms: Callable[[], int] | None = None,
) -> FastAPI:
    """The app over ``roots``. ``token`` None: no authentication (loopback only, by the
    caller); else at least ``MIN_TOKEN_CHARS`` characters. ``always``: the account kinds
    listed before their journal exists (a trader's own); ``registry``: served at
    ``/metrics``; ``feed``: a running trader's live state for its account; ``now_ms``:
    the clock the bar ages are told by (a replay's, in tests)."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the dashboard's token has {len(token)} characters; use at least "
                         f"{MIN_TOKEN_CHARS} (openssl rand -hex 32)")  # fmt: skip
    roots = [Path(r).resolve() for r in roots]
    clock = now_ms or (lambda: int(time.time() * 1000))
    app = FastAPI(title="AsterAI dashboard", version=__version__, openapi_url=None,
                  docs_url=None, redoc_url=None)  # fmt: skip
    install_error_handlers(app)
    # the journal reads in threads of their own: in a trader's process (--watch-port) the
    # event loop's default pool steps the bars, and a page must never delay one
    pool = ThreadPoolExecutor(2, thread_name_prefix="watch")

    async def off_loop(func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, func, *args)

    bearer = Bearer(token, TOKEN_ENV)
    auth = [Depends(bearer.dependency())]

    def source(account: str | None) -> views.Source:
        found = views.sources(roots, always)
        if account is None and found:
            return found[0]
        for s in found:
            if s.id == account:
                return s
        raise HTTPException(404, f"no account {account!r}: see /api/v1/accounts")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})

    @app.get("/api/v1/accounts", dependencies=auth, responses=errors(401))
    async def accounts() -> list[Account]:
        """Every account under the dashboard's data roots."""
        return [Account(id=s.id, kind=s.kind, root=str(s.root), journal=s.exists)
                for s in views.sources(roots, always)]  # fmt: skip

    @app.get("/api/v1/status", dependencies=auth, responses=errors(401, 404, 422))
    async def status(account: AccountId = None) -> Status:
        """The account at a glance: equity, PnL, the last bar and its age, the controls,
        for live the reconciliation and the ramp line."""
        s = source(account)
        live = feed(s) if feed is not None else None
        return Status(**await off_loop(views.status, s, clock(), live_settings, live))

    @app.get("/api/v1/positions", dependencies=auth, responses=errors(401, 404, 422))
    async def positions(account: AccountId = None) -> list[Position]:
        """Open positions with their stop, target and unrealised PnL at the newest close."""
        return [Position(**p) for p in await off_loop(views.positions, source(account))]

    @app.get("/api/v1/trades", dependencies=auth, responses=errors(401, 404, 422))
    async def trades(account: AccountId = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Trade]:  # fmt: skip
        """Closed trades, the newest first."""
        rows = await off_loop(views.trades, source(account), limit)
        return [Trade(**t) for t in rows]

    @app.get("/api/v1/equity", dependencies=auth, responses=errors(401, 404, 422))
    async def equity(account: AccountId = None) -> Equity:
        """The equity curves: the account's, its shadow, the backtest and the baselines."""
        return Equity(**await off_loop(views.equity, source(account)))

    @app.get("/api/v1/events", dependencies=auth, responses=errors(401, 404, 422))
    async def events(account: AccountId = None,
                     after: Annotated[int, Query(ge=0, lt=2**62)] = 0,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Event]:  # fmt: skip
        """The journal's events after ``after`` (a ``seq``), oldest first."""
        rows = await off_loop(views.events, source(account), after, limit)
        return [Event(**e) for e in rows]

    @app.get("/api/v1/rejections", dependencies=auth, responses=errors(401, 404, 422))
    async def rejections(account: AccountId = None,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Rejection]:  # fmt: skip
        """Refused orders, the newest first, with their reasons."""
        rows = await off_loop(views.rejections, source(account), limit)
        return [Rejection(**r) for r in rows]

    def control(which: str, body: ControlRequest) -> ControlAnswer:
        s = source(body.account)
        try:
            done = ask(which, s.journal, s.kill, s.pause, s.kind, "the dashboard")
        except ControlRefused as err:
            raise HTTPException(409, str(err)) from None
        return ControlAnswer(account=s.id, file=str(done.file), message=done.message)

    async def body_of(request: Request) -> ControlRequest:
        # parsed here, so a body that is not JSON is a 422 naming it, like any other
        try:
            return ControlRequest.model_validate_json(await request.body())
        except ValidationError as err:
            raise RequestValidationError(err.errors()) from None

    posted = {
        "dependencies": auth, "response_model": ControlAnswer,
        "responses": errors(401, 404, 409, 422),
        "openapi_extra": {"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ControlRequest"}}}}},
    }  # fmt: skip

    @app.post("/api/v1/kill", **posted)
    async def kill(request: Request) -> ControlAnswer:
        """The kill switch: paper exits every position at the next open and stops; live
        cancels its orders, closes at market and stops. For good."""
        return await off_loop(control, "kill", await body_of(request))

    @app.post("/api/v1/pause", **posted)
    async def pause(request: Request) -> ControlAnswer:
        """No new entry until the next UTC day; exits go on."""
        return await off_loop(control, "pause", await body_of(request))

    @app.get("/api/v1/openapi.json", dependencies=auth, responses=errors(401))
    async def openapi() -> dict[str, Any]:
        """The schema, with the accounts there are now written in as ``account``'s enum."""
        return with_accounts(app.openapi(), [s.id for s in views.sources(roots, always)])

    if registry is not None:

        @app.get("/metrics", dependencies=auth, include_in_schema=False)
        async def metrics() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def with_accounts(schema: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """``schema`` (left as it is) with ``account`` restricted to ``ids`` wherever it is
    asked for (a query parameter, the controls' body); unchanged while there is none."""
    doc = copy.deepcopy(schema)
    body = ControlRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    doc.setdefault("components", {}).setdefault("schemas", {})["ControlRequest"] = body
    if not ids:
        return doc
    enum = {"type": "string", "enum": ids}
    for path in doc["paths"].values():
        for op in path.values():
            for p in op.get("parameters", []):
                if p["name"] == "account":
                    p["schema"] = dict(enum, description=p["schema"].get("description", ""))
    doc["components"]["schemas"]["ControlRequest"]["properties"]["account"] = enum
    return doc
