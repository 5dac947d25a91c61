"""The funding rule: a funding history as the exchange keeps it.

No event after the collection time; times sorted, unique and on the hour grid (within a
minute; the spacing itself may change, as Aster moves a symbol between 8 h and 4 h
funding): any of these is ``contaminated``. Rates beyond the symbol's cap and floor
(the discovery file's, or +-``DEFAULT_FUNDING_CAP``) exclude the symbol.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from asterai.data.gate.model import CONTAMINATED, EXCLUDED, Finding, at_rows, passed
from asterai.data.gate.series import check_types
from asterai.data.store import FUNDING_SCHEMA
from asterai.intervals import HOUR_MS

DEFAULT_FUNDING_CAP = 0.03


def check_funding(
    schema: pa.Schema,
    times: np.ndarray,
    rates: np.ndarray | None,
    collected_at: int | None,
    cap: float | None,
    floor: float | None,
    name: str,
) -> Finding:
    bad = check_types(schema, FUNDING_SCHEMA, name)
    if bad is not None:
        return bad
    if len(times) == 0:
        return passed("funding", "no funding history on the exchange for this window")

    def fail(message: str, mask: np.ndarray, outcome: str = CONTAMINATED) -> Finding:
        return at_rows("funding", "fail", f"{name}: {message}", mask, times, outcome)

    diffs = np.diff(times)
    if (diffs <= 0).any():
        return fail("funding times not sorted and unique", np.r_[False, diffs <= 0])
    if isinstance(collected_at, int) and (times > collected_at).any():
        return fail("funding events after the collection time", times > collected_at)
    off_hour = np.minimum(times % HOUR_MS, HOUR_MS - times % HOUR_MS) > 60_000
    if off_hour.any():
        return fail("funding times off the hour grid", off_hour)
    cap = DEFAULT_FUNDING_CAP if cap is None else cap
    floor = -DEFAULT_FUNDING_CAP if floor is None else floor
    assert rates is not None  # the schema check above guarantees the column
    outside = ~np.isfinite(rates) | (rates > cap + 1e-12) | (rates < floor - 1e-12)
    if outside.any():
        return fail(f"rates outside the cap {cap:g} and floor {floor:g}", outside, EXCLUDED)
    return passed("funding", f"{len(times)} funding events, rates within {floor:g}..{cap:g}")
