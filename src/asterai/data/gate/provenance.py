"""The provenance rule: the file carries the collector's record and the record matches it.

Every failure here is ``contaminated``: without a credible record nobody can say the
bars came from the exchange.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from asterai.data.gate.model import CONTAMINATED, Finding, failed, passed
from asterai.intervals import HOUR_MS, iso_ms

SOURCE = "aster"
KLINES_ENDPOINT = "/fapi/v1/klines"
FUNDING_ENDPOINT = "/fapi/v1/fundingRate"

_INT_FIELDS = (
    "rows",
    "requests",
    "collected_at",
    "first_open_time",
    "last_open_time",
    "first_funding_time",
    "last_funding_time",
)


def check_provenance(
    prov: dict[str, Any] | None,
    *,
    name: str,
    symbol: str,
    interval: str | None,
    rows: int,
    times: np.ndarray | None,
    now_ms: int | None = None,
) -> Finding:
    """``interval`` is None for a funding file. ``times``: the file's open or funding times."""
    if prov is None:
        return failed(
            "provenance", CONTAMINATED, f"{name}: unverified: no asterai.provenance record"
        )
    if prov.get("source") != SOURCE:
        return failed(
            "provenance",
            CONTAMINATED,
            f"{name}: unverified: source is {prov.get('source')!r}, not {SOURCE!r}",
        )
    for key in _INT_FIELDS:
        value = prov.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 10**15
        ):
            return failed(
                "provenance",
                CONTAMINATED,
                f"{name}: provenance field {key} is not a plausible integer: {value!r}",
            )
    endpoint = KLINES_ENDPOINT if interval is not None else FUNDING_ENDPOINT
    problems = []
    if prov.get("endpoint") != endpoint:
        problems.append(f"endpoint {prov.get('endpoint')!r} is not {endpoint!r}")
    if prov.get("symbol") != symbol or prov.get("interval") != interval:
        problems.append(
            f"record is for {prov.get('symbol')} {prov.get('interval')}, the file name says "
            f"{symbol} {interval}"
        )
    if prov.get("rows") != rows:
        problems.append(f"record says {prov.get('rows')} rows, the file holds {rows}")
    if times is not None and len(times):
        first_key, last_key = (
            ("first_open_time", "last_open_time")
            if interval
            else ("first_funding_time", "last_funding_time")
        )
        if prov.get(first_key) != int(times[0]) or prov.get(last_key) != int(times[-1]):
            problems.append(
                f"record spans {iso_ms(prov.get(first_key))}..{iso_ms(prov.get(last_key))}, the "
                f"file {iso_ms(int(times[0]))}..{iso_ms(int(times[-1]))}"
            )
    collected = prov.get("collected_at")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if not isinstance(collected, int) or collected > now + HOUR_MS:
        problems.append(f"collection time {collected!r} is not a time in the past")
    if not isinstance(prov.get("sha256"), list) or prov.get("requests") != len(
        prov.get("sha256") or []
    ):
        problems.append("request count and response hashes do not agree")
    if problems:
        return failed(
            "provenance",
            CONTAMINATED,
            f"{name}: provenance does not match: " + "; ".join(problems),
        )
    return passed(
        "provenance", f"collected from {prov.get('base_url')} at {iso_ms(prov.get('collected_at'))}"
    )
