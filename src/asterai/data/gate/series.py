"""Schema and completeness: the shape of a series and whether it is all there.

Schema failures are ``contaminated`` (the collector never writes such a file);
completeness failures are ``excluded`` (a short or gappy history is real, just unfit).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from asterai.data.gate.model import CONTAMINATED, EXCLUDED, Finding, at_rows, failed, passed
from asterai.intervals import INTERVAL_MS, iso_ms, last_closed_open_time


def check_types(schema: pa.Schema, expected: pa.Schema, name: str) -> Finding | None:
    """A failing finding when columns are missing or of the wrong type, else None."""
    missing = [f.name for f in expected if f.name not in schema.names]
    if missing:
        return failed("schema", CONTAMINATED, f"{name}: missing columns {missing}")
    wrong = [
        f"{f.name} is {schema.field(f.name).type}, expected {f.type}"
        for f in expected
        if schema.field(f.name).type != f.type
    ]
    if wrong:
        return failed("schema", CONTAMINATED, f"{name}: wrong dtypes: " + "; ".join(wrong))
    return None


def check_times(
    times: np.ndarray, close_times: np.ndarray, interval: str, collected_at: int, name: str
) -> Finding:
    """Open times sorted, unique, on the grid; close times exact; nothing open or future."""
    step = INTERVAL_MS[interval]
    diffs = np.diff(times)

    def bad(message: str, mask: np.ndarray) -> Finding:
        return at_rows("schema", "fail", f"{name}: {message}", mask, times, CONTAMINATED)

    if (diffs == 0).any():
        return bad("duplicate bars", np.r_[False, diffs == 0])
    if (diffs < 0).any():
        return bad("bars not sorted", np.r_[False, diffs < 0])
    off_grid = times % step != 0
    if off_grid.any():
        return bad(f"open times off the {interval} grid", off_grid)
    wrong_close = close_times != times + step - 1
    if wrong_close.any():
        return bad(f"close_time is not open_time + {interval} - 1 ms", wrong_close)
    future = times > collected_at
    if future.any():
        return bad("bars in the future of the collection time", future)
    still_open = times + step > collected_at
    if still_open.any():
        return bad("a bar still open at the collection time was stored", still_open)
    return passed("schema")


def completeness(
    times: np.ndarray, interval: str, max_missing: float, collected_at: int | None, name: str
) -> tuple[Finding, float, int]:
    """The finding, the missing share and the longest gap in bars.

    A series must reach the last bar closed at its collection time and miss at most
    ``max_missing`` of the bars between its first and last.
    """
    step = INTERVAL_MS[interval]
    if len(times) == 0:
        return failed("completeness", EXCLUDED, f"{name}: no bars"), 1.0, 0
    expected = int((times[-1] - times[0]) // step + 1)
    missing = expected - len(times)
    share = missing / expected
    jumps = np.diff(times) // step - 1
    longest = int(jumps.max()) if len(jumps) else 0
    if isinstance(collected_at, int):
        expected_last = last_closed_open_time(collected_at, interval)
        if times[-1] < expected_last:
            short = int((expected_last - times[-1]) // step)
            return (
                Finding(
                    "completeness",
                    "fail",
                    f"{name}: ends at {iso_ms(int(times[-1]))} (row {len(times) - 1}), {short} "
                    f"bar(s) before the last bar closed at the collection time "
                    f"({iso_ms(expected_last)})",
                    (len(times) - 1,),
                    (iso_ms(int(times[-1])) or "",),
                    EXCLUDED,
                ),
                share,
                longest,
            )
    msg = f"{missing} of {expected} bars missing ({share:.2%}), longest gap {longest} bars"
    if share > max_missing:
        return (
            at_rows(
                "completeness",
                "fail",
                f"{name}: {msg}, above {max_missing:.0%}; bars right after a gap at",
                np.r_[False, jumps > 0],
                times,
                EXCLUDED,
            ),
            share,
            longest,
        )
    return passed("completeness", msg), share, longest


def history_length(times: np.ndarray, minimum: int, name: str) -> Finding:
    """Too short a history to learn or trade on (``discovery.min_history_bars``): excluded."""
    if len(times) < minimum:
        return failed(
            "completeness",
            EXCLUDED,
            f"{name}: only {len(times)} bars of history; at least {minimum} are needed "
            "(discovery.min_history_bars)",
        )
    return passed("completeness", f"{len(times)} bars of history")
