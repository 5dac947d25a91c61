"""The exchange's exception tree: temporary (retry), rate limited (wait),
banned (stop), rejected by the API (fail with its code and message)."""

from __future__ import annotations


class ExchangeError(Exception):
    """Base class of everything the exchange layer raises."""


class TemporaryError(ExchangeError):
    """A failure worth retrying: 5xx, timeout, dropped connection, garbled body."""


class RetriesExhausted(ExchangeError):
    """A temporary failure that persisted through every allowed retry."""

    def __init__(
        self, what: str, attempts: int, last: BaseException, waited_s: float | None = None
    ) -> None:
        over = "" if waited_s is None else f" over {waited_s:.1f} s"
        super().__init__(f"{what} failed after {attempts} attempts{over}; the last error: {last}")
        self.what = what
        self.attempts = attempts
        self.last = last
        self.waited_s = waited_s


class Unreachable(ExchangeError):
    """The base URL cannot be reached at all (DNS, refused, no route)."""


class RateLimited(ExchangeError):
    """HTTP 429: the weight limit was crossed; wait ``retry_after`` seconds."""

    def __init__(self, retry_after: float, message: str = "") -> None:
        super().__init__(message or f"rate limited (HTTP 429); retry after {retry_after:g} s")
        self.retry_after = retry_after


class IPBanned(ExchangeError):
    """HTTP 418: the IP is banned. Stop at once; never make a ban worse."""

    def __init__(self, retry_after: float | None, message: str = "") -> None:
        wait = f"; the server says retry after {retry_after:g} s" if retry_after else ""
        said = f": {message}" if message else ""
        super().__init__(
            f"the exchange banned this IP (HTTP 418{said})"
            + wait
            + ". AsterAI stopped all requests. Wait for the ban to end before running again."
        )
        self.retry_after = retry_after


class APIError(ExchangeError):
    """The exchange rejected the request (4xx with ``{"code": ..., "msg": ...}``)."""

    def __init__(self, status: int, code: int | None, msg: str, path: str = "") -> None:
        where = f" on {path}" if path else ""
        super().__init__(f"exchange error {code}{where} (HTTP {status}): {msg}")
        self.status = status
        self.code = code
        self.msg = msg
        self.path = path


class InvalidSymbol(APIError):
    """-1121 Invalid symbol."""


class InvalidInterval(APIError):
    """-1120 Invalid interval."""


API_ERROR_CLASSES: dict[int, type[APIError]] = {-1121: InvalidSymbol, -1120: InvalidInterval}


def api_error(status: int, code: int | None, msg: str, path: str = "") -> APIError:
    cls = API_ERROR_CLASSES.get(code or 0, APIError)
    return cls(status, code, msg, path)
