"""The dashboard's REST API bodies (``/api/v1``), as its OpenAPI document states them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from asterai.deploy.api_models import ErrorBody

Kind = Literal["paper", "live"]


class Account(BaseModel):
    id: str = Field(description="the account's id in every other request (?account=)")
    kind: Kind
    root: str = Field(description="its data root")
    journal: bool = Field(description="whether its journal exists yet")


class Controls(BaseModel):
    kill_asked: bool = Field(description="the KILL file waits for the trader")
    pause_asked: bool = Field(description="the PAUSE file waits for the trader")
    killed: bool = Field(description="the kill switch ended the account: its journal is final")
    paused: bool = Field(description="new entries paused until the next UTC day")
    breaker: bool = Field(description="the drawdown breaker has stopped new entries")
    reduce_only: str = Field(description="live: why new entries are stopped ('' if not)")


class Status(BaseModel):
    account: str
    kind: Kind
    root: str
    journal: bool
    state: Literal["starting", "ok", "stale", "stopped"]
    controls: Controls
    feed: dict[str, int | float | str | bool | None] | None = Field(
        None, description="what only a running trader knows: its streams, its last error"
    )
    start: str | None = None
    bars: int = 0
    late_bars: int | None = None
    last_bar: str | None = Field(None, description="the newest bar journaled (its open)")
    last_bar_age_s: float | None = Field(None, description="seconds since that bar's close")
    next_bar_due: str | None = None
    stale: bool | None = None
    capital: float | None = None
    equity: float | None = Field(None, description="the account's equity (live: the exchange's)")
    shadow_equity: float | None = Field(None, description="live: its shadow's equity")
    live_last_bar: str | None = None
    cash: float | None = None
    today_pnl: float | None = None
    realised_pnl: float | None = None
    unrealised_pnl: float | None = Field(None, description="at the newest close")
    fees: float | None = None
    funding: float | None = None
    trades: int | None = None
    open_positions: int | None = None
    errors: int | None = None
    last_error: str | None = None
    reconciliation: str | None = Field(None, description="live: the journal against the exchange")
    ramp: str | None = Field(None, description="live: hold, or may raise the allotment")


class Position(BaseModel):
    symbol: str
    side: Literal["long", "short"]
    quantity: float
    entry_price: float
    entry_time: str
    stop: float | None
    target: float | None
    last_close: float | None
    unrealised_pnl: float | None


class Trade(BaseModel):
    symbol: str
    side: Literal["long", "short"]
    entry_time: str | None
    exit_time: str | None
    entry_price: float | None
    exit_price: float | None
    quantity: float
    fees: float
    funding: float
    pnl: float
    exit_reason: str | None


class Equity(BaseModel):
    capital: float | None
    curves: dict[str, list[list[float]]] = Field(
        description="name -> [[close epoch ms, equity USDT], ...]: the account's, its "
        "shadow (live), the backtest over the same bars and the baselines (paper, as of "
        "its last report)"
    )


class Event(BaseModel):
    seq: int
    at: str
    kind: str
    detail: str


class Rejection(BaseModel):
    time: str
    symbol: str
    side: str
    reason: str
    by: Literal["strategy", "exchange"]


class ControlRequest(BaseModel):
    account: str = Field(min_length=1, max_length=200)
    confirm: Literal[True] = Field(description="true: the person confirmed it")


class ControlAnswer(BaseModel):
    account: str
    file: str
    message: str


def errors(*statuses: int) -> dict[int | str, dict]:
    said = {
        401: "no valid bearer token",
        404: "no such account",
        409: "the control cannot apply: no journal yet, or the account is final",
        422: "a malformed request: the field and what is wrong with it",
    }
    return {s: {"model": ErrorBody, "description": said[s]} for s in statuses}
