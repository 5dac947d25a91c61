"""The user-data stream of a replay with accounts: ``/ws/<listenKey>``.

Each connection streams its account's events (``ORDER_TRADE_UPDATE``,
``ACCOUNT_UPDATE``, ``listenKeyExpired``) from the moment it opened, as the engine
makes them (looked at as often as the kline streams look at the clock). After ``listenKeyExpired``
nothing more is sent on it: a client needs a new key (``POST listenKey``) and a new
connection, as on the exchange. The documentation warns that "user data stream payloads
are not guaranteed to be in order during heavy periods; make sure to order your
updates using E": ``EventFaults`` makes that happen, and worse: events duplicated,
delivered out of order (held back behind the next one) or lost, each drawn from a
seeded ``random.Random``.
"""

from __future__ import annotations

import json
import math
import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from asterai.exchange.replay.account_api import AccountAPI


@dataclass(frozen=True)
class EventFaults:
    """Shares of user-data events duplicated (``dup``), held back behind the next one
    (``reorder``) or lost (``drop``); each within 0..1, summing to at most 1."""

    dup: float = 0.0
    reorder: float = 0.0
    drop: float = 0.0

    KINDS: ClassVar[tuple[str, ...]] = ("dup", "reorder", "drop")

    def __post_init__(self) -> None:
        for kind in self.KINDS:
            share = getattr(self, kind)
            if not (isinstance(share, int | float) and 0.0 <= share <= 1.0):
                raise ValueError(
                    f"event fault share for {kind!r} must be within 0..1, got {share!r}"
                )
        if sum(getattr(self, k) for k in self.KINDS) > 1.0 + 1e-12:
            raise ValueError("event fault shares must not add up to more than 1")

    @classmethod
    def parse(cls, text: str | None) -> EventFaults:
        """``"dup=0.05,reorder=0.05,drop=0.02"``; empty or ``none``: no fault."""
        if text is None or text.strip().lower() in ("", "none", "off"):
            return cls()
        values: dict[str, float] = {}
        for raw in text.split(","):
            key, sep, value = raw.strip().partition("=")
            if not sep or key not in cls.KINDS or key in values:
                raise ValueError(f"bad event fault item {raw.strip()!r}: expected KIND=SHARE "
                                 f"with KIND one of {', '.join(cls.KINDS)}, each once")  # fmt: skip
            try:
                values[key] = float(value)
            except ValueError:
                raise ValueError(f"bad event fault item {raw.strip()!r}: not a number") from None
            if not math.isfinite(values[key]):
                raise ValueError(f"bad event fault item {raw.strip()!r}: not a number")
        return cls(**values)

    def draw(self, rng: random.Random) -> str | None:
        r, acc = rng.random(), 0.0
        for kind in self.KINDS:
            acc += getattr(self, kind)
            if r < acc:
                return kind
        return None


class UserStream:
    """Streams one account's events to one connection, with the faults."""

    def __init__(self, api: AccountAPI, key: str, user: str, since: int, faults: EventFaults,
                 rng: random.Random, rng_lock: threading.Lock) -> None:  # fmt: skip
        self.api = api
        self.key = key
        self.user = user
        self.faults = faults
        self._rng, self._rng_lock = rng, rng_lock
        self.sent = since  # the account's events when the connection opened: from then on
        self.held: list[dict] = []
        self.expired = False

    def due(self) -> list[str] | None:
        """The messages to send now (JSON), faults applied; [] once the key expired;
        None once the key was closed (``DELETE listenKey``): the connection ends."""
        if self.user is None or self.expired:
            return []
        self.api.tick()
        if self.key not in self.api.listen_keys and not self._expiring():
            return None
        fresh = self.api.engine.accounts[self.user].events[self.sent :]
        self.sent += len(fresh)  # appended meanwhile: taken next time
        out: list[dict] = []
        for event in fresh:
            if event["e"] == "listenKeyExpired" and event.get("listenKey") != self.key:
                continue  # another key of this account
            with self._rng_lock:
                fault = self.faults.draw(self._rng) if event["e"] != "listenKeyExpired" else None
            if fault == "drop":
                continue
            if fault == "reorder":
                self.held.append(event)
                continue
            out.append(event)
            if fault == "dup":
                out.append(event)
            out.extend(self.held)
            self.held = []
            if event["e"] == "listenKeyExpired":
                self.expired = True
                break
        return [json.dumps({k: v for k, v in e.items() if k != "listenKey"},
                           separators=(",", ":")) for e in out]  # fmt: skip

    def _expiring(self) -> bool:
        """Whether this key's ``listenKeyExpired`` waits to be sent (it expired: the
        stream says so before it goes quiet)."""
        events = self.api.engine.accounts[self.user].events
        return any(e["e"] == "listenKeyExpired" and e.get("listenKey") == self.key
                   for e in events[self.sent :])  # fmt: skip
