"""Benchmark: one new bar for 200 symbols, live features plus ONNX inference, on one core.

The model: the default confluence model trained on the real recording (collected through
the replay server, gated, turned into features, trained and exported exactly as a user
would), or the export of an existing data root (``--root``).

The panel: the features benchmark's, ``--symbols`` renamed copies of the recorded
series tiled back ``--months`` months (BTCUSDT and ETHUSDT keep their names, since
the cross-asset features read them). The live features start from all but the last
``--bars`` bars; then, bar by bar, every symbol's closed 1h bar (and the 4h and 1d bars
that close with it) is handed over as parsed arrays, and the newest bar's signals are
computed (``deploy.signals.LiveSignals``: live features, the LSTM's window of the
previous feature rows, the exported graphs on onnxruntime with one thread). Printed:
p50 and p99 over those bars of the whole step, and of its parts (taking the bars,
the features, the inference), against the batch pipeline's time per bar measured in
the same run: ``build_features`` over the held bars of every symbol plus the model on
that table, which is what recomputing the newest row without the live path costs.
Target: a whole step under 50 ms.

    python bench/live.py                         # 200 symbols, 200 bars
    python bench/live.py --symbols 50 --bars 50 --root /path/to/trained/root
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # one core, before numpy and numba load

import numpy as np  # noqa: E402
from _recording import bench_parser, recording_missing  # noqa: E402

TARGET_MS = 50.0


def trained_root(data: Path, work: Path) -> Path:
    """The recording collected, gated, featured, the confluence model trained and exported."""
    from train import recorded_root

    from asterai.config import load_settings
    from asterai.deploy.export import export_onnx
    from asterai.models.train import walk_forward

    root = recorded_root(data, work)
    settings = load_settings(root)
    walk_forward("confluence", settings)
    export_onnx(settings, "confluence")
    return root


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> int:
    parser = bench_parser(__doc__)
    parser.set_defaults(months=2)
    parser.add_argument("--bars", type=int, default=200, help="new bars timed")
    parser.add_argument("--root", type=Path, default=None, help="a data root with an export")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if recording_missing(args):
        return 2
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from features import scaled_inputs

    from asterai.config import load_settings
    from asterai.data.store import to_epoch_ms
    from asterai.deploy.live import COLUMNS, KEEP_BARS, LiveFeatures
    from asterai.deploy.runtime import OnnxModel
    from asterai.deploy.signals import LiveSignals
    from asterai.features.build import build_features, load_inputs
    from asterai.intervals import INTERVAL_MS

    work = Path(tempfile.mkdtemp(prefix="asterai-bench-live-"))
    root = args.root or trained_root(args.data, work)
    settings = load_settings(root)
    fs = settings.features
    model = OnnxModel(Path(root) / "models" / "confluence" / "onnx", threads=1)
    inputs, _ = load_inputs(settings)
    panel = scaled_inputs(inputs, args.symbols, args.months, fs)
    step = INTERVAL_MS[fs.base_interval]
    times = np.unique(np.concatenate([to_epoch_ms(i.bars[fs.base_interval]["open_time"])
                                      for i in panel]))  # fmt: skip
    if len(times) < KEEP_BARS + args.bars:
        raise SystemExit(f"{len(times)} bars: raise --months to hold {KEEP_BARS} + {args.bars}")
    first_new = int(times[-args.bars])

    # what a client hands over once it has parsed the klines: arrays per symbol and interval
    arrays, warm = {}, []
    for inp in panel:
        bars = {}
        for iv, f in inp.bars.items():
            ms = to_epoch_ms(f["open_time"])
            closes = ms + INTERVAL_MS[iv] - 1
            arrays[(inp.symbol, iv)] = (
                ms,
                closes,
                {k: f[c].to_numpy(dtype=float) for k, c in COLUMNS.items()},
            )
            bars[iv] = f[closes < first_new].reset_index(drop=True)
        warm.append(type(inp)(inp.symbol, bars, inp.funding, inp.listing_ms, inp.tick))

    started = time.perf_counter()
    live = LiveFeatures(fs, warm, history=model.sequence_length)
    signals = LiveSignals(live, model)
    start_s = time.perf_counter() - started
    signals.newest()  # warm (the newest warm-up bar again)

    take, feats, infer, whole = [], [], [], []
    for t in times[-args.bars :]:
        close = int(t) + step - 1
        # the closed bars a poll of every symbol returns, parsed, handed over as the
        # follower hands them: one call per bar time with all its symbols
        polled: dict[str, tuple[int, list[str], dict[str, list[float]]]] = {}
        for (symbol, iv), (ms, closes, values) in arrays.items():
            hit = np.searchsorted(closes, close)
            if hit < len(closes) and closes[hit] == close:
                _, names, got = polled.setdefault(iv, (int(ms[hit]), [], {k: [] for k in values}))
                names.append(symbol)
                for k, v in values.items():
                    got[k].append(v[hit])
        a = time.perf_counter()
        for iv, (open_ms, names, got) in polled.items():
            live.add_closed(iv, open_ms, names, {k: np.asarray(v) for k, v in got.items()})
        b = time.perf_counter()
        rows = live.newest()
        c = time.perf_counter()
        out = signals.predict(rows)
        d = time.perf_counter()
        take.append(b - a)
        feats.append(c - b)
        infer.append(d - c)
        whole.append(d - a)
    rss_mb = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
    # the timed path is the served one: its last bar equals the model on the whole table
    frame = live.recent()
    want = model.predict(frame, targets=to_epoch_ms(frame["open_time"]) == rows.open_time)
    assert np.allclose(out["p_long"].to_numpy(), want["p_long"].to_numpy(), atol=1e-6)

    # the batch pipeline's time per bar: the feature build on the held bars, then the model
    held = []
    for inp in panel:
        bars = {iv: f.iloc[-KEEP_BARS:].reset_index(drop=True) for iv, f in inp.bars.items()}
        held.append(type(inp)(inp.symbol, bars, inp.funding, inp.listing_ms, inp.tick))
    batch = []
    for _ in range(3):
        a = time.perf_counter()
        table = build_features(held, fs).frame
        last = to_epoch_ms(table["open_time"]) == to_epoch_ms(table["open_time"]).max()
        model.predict(table, targets=last)
        batch.append(time.perf_counter() - a)
    batch_s = min(batch)

    out = {
        "symbols": args.symbols,
        "bars": args.bars,
        "keep_bars": KEEP_BARS,
        "start_s": start_s,
        **{f"{name}_p50_ms": pct(v, 50) for name, v in
           (("step", whole), ("take", take), ("features", feats), ("inference", infer))},
        **{f"{name}_p99_ms": pct(v, 99) for name, v in
           (("step", whole), ("take", take), ("features", feats), ("inference", infer))},
        "batch_per_bar_ms": batch_s * 1000,
        "rss_mb": rss_mb,
    }  # fmt: skip
    out["batch_over_live_p50"] = out["batch_per_bar_ms"] / out["step_p50_ms"]
    print(
        f"{args.symbols} symbols, {args.bars} new 1h bars, one core; the live features hold "
        f"{KEEP_BARS} bars per timeframe (started in {start_s:.1f} s; resident {rss_mb:.0f} MB "
        "with the model and the panel's bars)"
    )
    for name in ("take", "features", "inference", "step"):
        print(
            f"  {name:<10} p50 {out[f'{name}_p50_ms']:7.1f} ms   p99 {out[f'{name}_p99_ms']:7.1f} ms"
        )
    met = out["step_p99_ms"] < TARGET_MS
    print(
        f"  target: a whole step under {TARGET_MS:.0f} ms: p50 "
        f"{'MET' if out['step_p50_ms'] < TARGET_MS else 'NOT MET'}, p99 {'MET' if met else 'NOT MET'}"
    )
    print(
        f"  the batch pipeline per bar (features over the held bars + the model): "
        f"{out['batch_per_bar_ms']:.0f} ms = x{out['batch_over_live_p50']:.0f} the live step's p50"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
