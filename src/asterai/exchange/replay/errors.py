"""The exchange's error answers: :class:`ApiError` (an HTTP status with the
documented ``{"code": ..., "msg": ...}`` body), the helpers that build the common ones,
and the compact JSON every body is written in."""

from __future__ import annotations

import json

JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg

    def body(self) -> bytes:
        return JSON({"code": self.code, "msg": self.msg}).encode()


def mandatory(name: str) -> ApiError:
    return ApiError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def bad_value(name: str) -> ApiError:
    return ApiError(400, -1130, f"Data sent for parameter '{name}' is not valid.")
