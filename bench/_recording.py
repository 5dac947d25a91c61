"""What the benchmarks share: the real recording collected over loopback, and tiling.

Benchmarks run as scripts (``python bench/NAME.py``), so this sits beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import pandas as pd

from asterai.config import Settings, load_settings
from asterai.data.collector import collect
from asterai.data.discovery import run_discovery
from asterai.data.store import to_epoch_ms
from asterai.exchange.replay import ReplayServer
from asterai.exchange.replay.recording import load_recording
from asterai.intervals import INTERVAL_MS

#: The recording beside the project; the benchmarks let ASTERAI_REAL_DATA or --data override it.
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "aster-real"


def bench_parser(doc: str | None, *, panel: bool = True) -> argparse.ArgumentParser:
    """The options every benchmark shares: ``--data`` (the recording), and for those
    that build the scaled panel ``--symbols`` x ``--months``."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("ASTERAI_REAL_DATA", DEFAULT_DATA))
    )
    if panel:
        parser.add_argument("--symbols", type=int, default=200)
        parser.add_argument("--months", type=int, default=6)
    return parser


def recording_missing(args: argparse.Namespace) -> bool:
    """True (and says how to point at one) when ``--data`` holds no recording."""
    if (args.data / "klines").is_dir():
        return False
    print(f"no recording at {args.data}; set ASTERAI_REAL_DATA or --data", file=sys.stderr)
    return True


def collect_recording(data: Path, root: Path, *, discover: bool = True) -> Settings:
    """Every recorded symbol, discovered and collected into ``root`` through the replay server."""
    recording = load_recording(data)
    with ReplayServer(recording) as server:
        settings = load_settings(root, base_url=server.base_url)
        if discover:
            run_discovery(settings)
        asyncio.run(collect(settings, symbols=sorted({s for s, _ in recording.klines})))
    return settings


def tile(frame: pd.DataFrame, interval: str, start_ms: int) -> pd.DataFrame:
    """``frame`` repeated back to back, earlier in time, from ``start_ms`` on."""
    step = INTERVAL_MS[interval]
    times = to_epoch_ms(frame["open_time"])
    span = int(times[-1] - times[0]) + step
    copies = max(0, -(-(int(times[0]) - start_ms) // span)) + 1
    parts = []
    for k in range(copies - 1, -1, -1):
        shifted = frame.copy()
        delta = pd.Timedelta(milliseconds=span * k)
        shifted["open_time"] = shifted["open_time"] - delta
        if "close_time" in shifted:
            shifted["close_time"] = shifted["close_time"] - delta
        parts.append(shifted)
    tiled = pd.concat(parts, ignore_index=True)
    return tiled[to_epoch_ms(tiled["open_time"]) >= start_ms].reset_index(drop=True)
