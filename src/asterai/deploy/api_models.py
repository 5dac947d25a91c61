"""The signal service's published contract: request and response bodies, one error body,
and the constraints an app fills in from its model (``contract``).

The schema at ``/v1/openapi.json`` is built from these and says what the service does:
each route lists the statuses it answers with, every 4xx/5xx body is an ``ErrorBody``,
and the rules known only when the app is created (the served symbols, the feature count,
the bar grid) are written into the schema as ``enum``, ``minItems``/``maxItems`` and
``multipleOf``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: the largest request body accepted (bytes): 1,000 rows of ~120 features fit
MAX_BODY = 2_000_000
MAX_ROWS = 1_000
#: open times are epoch ms before 2100-01-01: far past any bar a model scores, far inside
#: what pandas (2262) and Python's datetime (9999) represent, so no valid-looking time
#: reaches a conversion that overflows
OPEN_TIME_END_MS = 4_102_444_800_000
#: a bearer token shorter than this is refused at start (``openssl rand -hex 32`` gives 64)
MIN_TOKEN_CHARS = 32

Finite = Annotated[float, Field(allow_inf_nan=False)]


class PredictRow(BaseModel):
    # strict: JSON's types as the schema states them (no true for 1, no "1.5" for 1.5)
    model_config = ConfigDict(extra="forbid", strict=True)
    symbol: str = Field(min_length=1, max_length=40, description="a served symbol")
    values: list[Finite | None] = Field(
        description="the features in /v1/models' order; null for a missing value"
    )
    open_time: int | None = Field(
        None, ge=0, lt=OPEN_TIME_END_MS,
        description="the bar's open time, epoch ms (UTC) on the bar grid, before 2100-01-01",
    )  # fmt: skip

    @field_validator("open_time", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        """JSON's 3600000.0 is the integer JSON Schema says it is; 0.5 or true are not."""
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    rows: list[PredictRow] = Field(
        min_length=1, max_length=MAX_ROWS,
        description="a (symbol, open_time) pair at most once; rows of one symbol at "
        "consecutive open times form the LSTM's windows",
    )  # fmt: skip


class FieldError(BaseModel):
    field: str = Field(description="where: rows[3].values, symbols, body")
    message: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer."""

    detail: str = Field(description="what is wrong, for a person (422: the first fields)")
    errors: list[FieldError] = Field(
        default_factory=list, description="422: each field and what is wrong with it"
    )


HealthStatus = Literal["starting", "ok", "stale", "dead"]


class Health(BaseModel):
    """``status`` and ``stale`` for anyone; the rest only with the bearer token."""

    status: HealthStatus
    stale: bool
    following: bool | None = None
    exchange_time: str | None = None
    last_bar_open_time: str | None = None
    last_bar_close_time: str | None = None
    last_bar_age_s: float | None = None
    next_bar_due: str | None = None
    last_error: str | None = None
    refused_bars: int | None = None
    follower_error: str | None = Field(None, description="why the follower stopped (dead)")


Decision = Literal["long", "short", "flat"]


class Bar(BaseModel):
    open_time: str
    close_time: str


class Signal(BaseModel):
    symbol: str
    p_long: float | None = Field(description="null: no score for the symbol at this bar")
    p_short: float | None
    decision: Decision
    bar_open_time: str
    tradeable: bool
    reason: str | None
    stale: bool


class Signals(BaseModel):
    model: str
    threshold: float
    bar: Bar
    stale: bool
    signals: list[Signal]


class Prediction(BaseModel):
    symbol: str
    p_long: float | None = Field(description="null: the model gave no finite score")
    p_short: float | None
    decision: Decision
    open_time: str | None = None


class Predictions(BaseModel):
    model: str
    threshold: float
    predictions: list[Prediction]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries: each status with the one error body."""
    said = {
        401: "no valid bearer token",
        404: "this service does not follow the market (predict only)",
        413: f"the body is over {MAX_BODY:,} bytes",
        422: "a malformed request: the field and what is wrong with it",
        503: "no signals to serve: warming up, or the market follower has stopped",
    }
    return {s: {"model": ErrorBody, "description": said[s]} for s in statuses}


def contract(
    schema: dict[str, Any], *, symbols: list[str], width: int, step_ms: int
) -> dict[str, Any]:
    """The app's OpenAPI document with the rules its model fixes written in: the served
    symbols as an ``enum`` (the predict rows' and the signals' filter), the feature count
    as ``minItems``/``maxItems`` of ``values``, the bar grid as ``multipleOf``."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    defs = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(defs.pop("$defs", {}))
    components["PredictRequest"] = defs
    row = components["PredictRow"]["properties"]
    if symbols:
        row["symbol"]["enum"] = symbols
    row["values"].update(minItems=width, maxItems=width)
    for option in row["open_time"].get("anyOf", []):
        if option.get("type") == "integer":
            option["multipleOf"] = step_ms
    for parameter in schema["paths"]["/v1/signals"]["get"].get("parameters", []):
        if parameter["name"] == "symbols":
            items: dict[str, Any] = {"type": "string", "enum": symbols} if symbols else {
                "type": "string"
            }  # fmt: skip
            parameter.update(style="form", explode=False, schema={
                "type": "array", "items": items, "minItems": 1,
                "description": "only these symbols: ?symbols=BTCUSDT,ETHUSDT",
            })  # fmt: skip
    return schema
