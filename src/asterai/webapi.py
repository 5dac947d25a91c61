"""What the project's HTTP APIs share (the signal service, the dashboard's REST API): the
bearer token compared in constant time, and one error body (``api_models.ErrorBody``)
for every 4xx and 5xx answer, a 422 naming each malformed field."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from asterai.deploy.api_models import ErrorBody, FieldError


class Unprocessable(HTTPException):
    """A 422 naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(422, f"{field}: {message}")
        self.field, self.message = field, message


def error_response(status: int, detail: str, fields: list[FieldError] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    body = ErrorBody(detail=detail, errors=fields or [])
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def field_name(loc: tuple | list) -> str:
    """``("body", "rows", 3, "values", 7)`` -> ``rows[3].values[7]``."""
    out = ""
    for part in loc:
        if part in ("body", "query"):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def credentials(variable: str) -> Any:
    """The bearer token's parameter type (declared in the schema, named by ``variable``);
    a route checks it with ``Bearer``."""
    return Annotated[
        HTTPAuthorizationCredentials | None,
        Depends(HTTPBearer(auto_error=False, description=variable)),
    ]


class Bearer:
    """The token check: ``token`` None lets anyone in (loopback only, by the caller)."""

    def __init__(self, token: str | None, variable: str) -> None:
        self.expected = token.encode() if token is not None else None
        self.type = credentials(variable)

    def valid(self, given: HTTPAuthorizationCredentials | None) -> bool:
        if self.expected is None:
            return True
        raw = given.credentials.strip().encode() if given is not None else b""
        return hmac.compare_digest(raw, self.expected)

    def dependency(self) -> Callable[..., None]:
        """A FastAPI dependency that answers 401 without a valid token."""

        def authorized(given) -> None:  # noqa: ANN001 - its annotation is set below
            if not self.valid(given):
                raise HTTPException(
                    401, "a valid bearer token is required",
                    headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip

        # (an object, not a string: FastAPI reads it as the parameter's type)
        authorized.__annotations__ = {"given": self.type, "return": None}
        return authorized


def install_error_handlers(app: FastAPI) -> None:
    """Every error answered with ``ErrorBody``: a 422 listing each field, an HTTP error
    with its status and headers, anything else a 500 (uvicorn logs the traceback)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            FieldError(field=field_name(e.get("loc", ())), message=e.get("msg", "invalid"))
            for e in exc.errors()
        ]
        text = "; ".join(f"{e.field}: {e.message}" for e in fields[:5])
        return error_response(422, text, fields[:50])

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        fields = [FieldError(field=exc.field, message=exc.message)] if isinstance(
            exc, Unprocessable
        ) else None  # fmt: skip
        return error_response(exc.status_code, str(exc.detail), fields,
                              getattr(exc, "headers", None))  # fmt: skip

    @app.exception_handler(Exception)
    async def broken(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, "internal error")
