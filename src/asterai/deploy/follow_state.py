"""What the follower publishes (``Snapshot``) and what it knows of itself
(``FollowState``): its errors and the health ``/health`` and the paper trader show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from asterai.intervals import iso_ms


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the endpoints read: replaced whole after each bar, never edited."""

    bar_open_ms: int
    signals: pd.DataFrame  # symbol, p_long, p_short, the members, tradeable, reason
    computed_at_ms: int  # the exchange's clock when it was computed


@dataclass(slots=True)
class FollowState:
    started: bool = False
    snapshot: Snapshot | None = None
    last_error: str | None = None
    last_poll_ms: int | None = None
    refused_bars: int = 0
    polls: int = 0
    #: errors since the start: the exchange's (retried every ``retry_s``) and any other
    #: (a malformed field, a model runtime's error: logged with its traceback, retried
    #: with a growing delay); the follower never ends on one
    exchange_errors: int = 0
    unexpected_errors: int = 0
    #: failed steps in a row (0 after a step that went through): the backoff's exponent
    failing: int = 0
    last_error_at: str | None = None  # local UTC time of the latest error

    def failed(self, err: Exception, now_ms: int) -> None:
        """A step failed with ``err`` (at local UTC ``now_ms``)."""
        self.last_error = f"{type(err).__name__}: {err}"
        self.failing += 1
        self.last_error_at = iso_ms(now_ms)

    def health(self, now: int | None, step_ms: int, grace_ms: int) -> dict[str, Any]:
        """Status, the newest bar, its age and whether the data is stale, at the
        exchange's ``now``: stale once the bar after the newest held one is more than
        ``grace_ms`` overdue."""
        snap = self.snapshot
        out: dict[str, Any] = {
            "status": "starting",
            "exchange_time": iso_ms(now) if now is not None else None,
            "last_bar_open_time": None,
            "last_bar_close_time": None,
            "last_bar_age_s": None,
            "next_bar_due": None,
            "stale": True,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "errors": {"exchange": self.exchange_errors, "unexpected": self.unexpected_errors},
            "refused_bars": self.refused_bars,
        }
        if snap is None or now is None:
            return out
        close = snap.bar_open_ms + step_ms - 1
        due = close + step_ms  # the next bar's close
        stale = now > due + grace_ms
        out.update(
            status="stale" if stale else "ok",
            last_bar_open_time=iso_ms(snap.bar_open_ms),
            last_bar_close_time=iso_ms(close),
            last_bar_age_s=round((now - close) / 1000, 3),
            next_bar_due=iso_ms(due),
            stale=stale,
        )
        return out
