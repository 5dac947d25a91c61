"""The faults the replay makes on the raw socket (see :class:`FaultSpec`).

Each request draws at most one fault from a seeded ``random.Random``: answered 500,
502 or 503, a spurious 429, answered slowly, truncated, or dropped without an answer.
The socket layer (``http.py``) applies them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class FaultSpec:
    """Shares of requests that get each fault (each in [0, 1], summing to at most 1).

    ``error_5xx``: answered 500, 502 or 503 with an error body;
    ``burst_429``: answered a spurious 429 with ``Retry-After: 1`` (not counted
    toward a ban); ``slow``: answered normally after ``slow_seconds``;
    ``truncate``: full ``Content-Length`` sent, then half the body and the
    connection closed; ``drop``: connection closed without any response (nothing
    applied). For the signed account endpoints also ``lost``: the request applied (an
    order placed, say) and its answer lost, a 503 with -1007 ("execution status
    unknown") or the connection dropped, half and half; and ``margin``: a new order
    refused with -2019 (insufficient margin), nothing applied (other requests: no fault).
    """

    error_5xx: float = 0.0
    burst_429: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 1.0
    truncate: float = 0.0
    drop: float = 0.0
    lost: float = 0.0
    margin: float = 0.0

    KINDS: ClassVar[tuple[str, ...]] = (
        "5xx", "429", "slow", "truncate", "drop", "lost", "margin",
    )  # fmt: skip
    _FIELDS: ClassVar[dict[str, str]] = {
        "5xx": "error_5xx",
        "429": "burst_429",
        "slow": "slow",
        "truncate": "truncate",
        "drop": "drop",
        "lost": "lost",
        "margin": "margin",
    }

    def __post_init__(self) -> None:
        for kind, name in self._FIELDS.items():
            share = getattr(self, name)
            if not (isinstance(share, (int, float)) and 0.0 <= share <= 1.0):
                raise ValueError(f"fault share for {kind!r} must be within 0..1, got {share!r}")
        if not (self.slow_seconds >= 0 and math.isfinite(self.slow_seconds)):
            raise ValueError(f"slow delay must be >= 0 seconds, got {self.slow_seconds!r}")
        if self.total > 1.0 + 1e-12:
            raise ValueError(f"fault shares add up to {self.total:g}; they must not exceed 1")

    @property
    def total(self) -> float:
        return sum(getattr(self, name) for name in self._FIELDS.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def share(self, kind: str) -> float:
        return float(getattr(self, self._FIELDS[kind]))

    @classmethod
    def parse(cls, text: str | None) -> FaultSpec:
        """Parse ``"5xx=0.1,429=0.05,slow=0.05:0.5,truncate=0.05,drop=0.05"``.

        ``slow=SHARE[:SECONDS]`` (1 s when the delay is left out). An empty
        string or ``"none"`` means no faults. Raises ``ValueError`` naming the
        offending item.
        """
        values: dict[str, float] = {}
        if text is None or text.strip().lower() in ("", "none", "off"):
            return cls()
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            if not sep or key not in cls._FIELDS:
                raise ValueError(
                    f"bad fault item {item!r}: expected KIND=SHARE with KIND one of "
                    f"{', '.join(cls.KINDS)} (slow=SHARE:SECONDS)"
                )
            if cls._FIELDS[key] in values:
                raise ValueError(f"bad fault item {item!r}: {key!r} given twice")
            share_text, colon, seconds_text = value.partition(":")
            if colon and key != "slow":
                raise ValueError(f"bad fault item {item!r}: only 'slow' takes ':SECONDS'")
            try:
                share = float(share_text)
                seconds = float(seconds_text) if colon else None
            except ValueError:
                raise ValueError(f"bad fault item {item!r}: not a number") from None
            if not (0.0 <= share <= 1.0):
                raise ValueError(f"bad fault item {item!r}: share must be within 0..1")
            if seconds is not None:
                if not (seconds >= 0 and math.isfinite(seconds)):
                    raise ValueError(f"bad fault item {item!r}: delay must be >= 0 seconds")
                values["slow_seconds"] = seconds
            values[cls._FIELDS[key]] = share
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"bad fault spec {text!r}: {exc}") from None

    def __str__(self) -> str:
        parts = []
        for kind in self.KINDS:
            share = self.share(kind)
            if share:
                extra = f":{self.slow_seconds:g}" if kind == "slow" else ""
                parts.append(f"{kind}={share:g}{extra}")
        return ",".join(parts) or "none"

    def draw(self, rng: random.Random) -> str | None:
        """One draw: the fault kind for a request, or ``None``."""
        if not self:
            return None
        r = rng.random()
        acc = 0.0
        for kind in self.KINDS:
            acc += self.share(kind)
            if r < acc:
                return kind
        return None
