"""Benchmark: the signal service on loopback, as its container runs it, on one core.

``asterai serve`` is started in its own process (pinned to one CPU; the clients run on
another), with only the export folder in its data root and the token from the
environment, following a replay of the real recording; the model is the default
confluence model trained and exported from the recording (or ``--root``'s export).
Measured in one run:

* start-up: from launching the process to ``/health`` reporting ``ok`` (the warm-up
  history fetched from the replay, the first signals computed), and the resident memory
  (``VmRSS``) then and after the load below. Target: under 300 MB;
* ``POST /v1/predict`` with 200 real feature rows (the table's last bars with their open
  times, so the LSTM reads its windows), ``--requests`` sequential requests on one
  keep-alive connection: p50 and p99 round trip. Target: p99 under 20 ms;
* ``GET /v1/signals`` from 50 concurrent clients for ``--seconds`` seconds: requests per
  second and errors.

    python bench/serve.py
    python bench/serve.py --root /path/to/trained/root --requests 500 --json serve.json
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _recording import bench_parser, recording_missing

PREDICT_TARGET_MS = 20.0
RSS_TARGET_MB = 300.0
TOKEN = "bench-token-" + "0" * 32  # noqa: S105 - the benchmark's own (32+ characters)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def main() -> int:
    parser = bench_parser(__doc__, panel=False)
    parser.add_argument("--root", type=Path, default=None, help="a data root with an export")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if recording_missing(args):
        return 2
    import httpx
    import pandas as pd
    from live import trained_root

    from asterai.data.store import to_epoch_ms
    from asterai.exchange.replay import ReplayServer
    from asterai.exchange.replay.recording import load_recording

    work = Path(tempfile.mkdtemp(prefix="asterai-bench-serve-"))
    root = args.root or trained_root(args.data, work)
    srv = work / "srv"
    shutil.copytree(Path(root) / "models/confluence/onnx", srv / "models/confluence/onnx")
    table = pd.read_parquet(Path(root) / "data/features/1h.parquet")
    manifest = json.loads((srv / "models/confluence/onnx/manifest.json").read_text())
    features = [f for f in manifest["inputs"]["features"] if not f.startswith("category_")]
    rows = table.tail(200)
    values = rows[features].to_numpy(dtype=float)
    opened = to_epoch_ms(rows["open_time"])
    payload = {"rows": [
        {"symbol": s, "open_time": int(opened[i]),
         "values": [None if np.isnan(v) else float(v) for v in values[i]]}
        for i, s in enumerate(rows["symbol"])
    ]}  # fmt: skip
    body = json.dumps(payload).encode()  # encoded once: the client's cost is not the service's
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_core, client_cores = (cores[:1], cores[1:] or cores[:1]) if cores else ([], [])
    url = f"http://127.0.0.1:{args.port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    out: dict = {"cpu_count": os.cpu_count()}
    with ReplayServer(load_recording(args.data)) as replay:
        env = {**os.environ, "ASTERAI_SERVE_TOKEN": TOKEN, "OMP_NUM_THREADS": "1",
               "NUMBA_NUM_THREADS": "1"}  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "asterai.cli", "serve", "--data-root", str(srv), "--host",
             "127.0.0.1", "--port", str(args.port), "--base-url", replay.base_url],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=(lambda: os.sched_setaffinity(0, server_core)) if server_core else None,
        )  # fmt: skip
        if client_cores:
            os.sched_setaffinity(0, client_cores)
        try:
            while True:
                if proc.poll() is not None:
                    raise SystemExit("the service exited during its start")
                try:
                    if httpx.get(f"{url}/health", timeout=1).json().get("status") == "ok":
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            out["startup_s"] = time.monotonic() - started
            out["rss_after_start_mb"] = rss_mb(proc.pid)

            with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
                post = {"content": body, "headers": {"content-type": "application/json"}}
                for _ in range(20):
                    assert http.post("/v1/predict", **post).status_code == 200
                lat = []
                for _ in range(args.requests):
                    a = time.perf_counter()
                    r = http.post("/v1/predict", **post)
                    lat.append(time.perf_counter() - a)
                    assert r.status_code == 200, r.text
            out["predict_rows"] = len(payload["rows"])
            out["predict_p50_ms"] = float(np.percentile(lat, 50) * 1000)
            out["predict_p99_ms"] = float(np.percentile(lat, 99) * 1000)

            async def load() -> tuple[int, int]:
                done = errors = 0
                stop = time.monotonic() + args.seconds

                async def client() -> None:
                    nonlocal done, errors
                    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as h:
                        while time.monotonic() < stop:
                            try:
                                ok = (await h.get("/v1/signals")).status_code == 200
                            except httpx.HTTPError:
                                ok = False
                            done += ok
                            errors += not ok

                await asyncio.gather(*(client() for _ in range(50)))
                return done, errors

            a = time.monotonic()
            done, errors = asyncio.run(load())
            out["signals_clients"] = 50
            out["signals_per_s"] = done / (time.monotonic() - a)
            out["signals_errors"] = errors
            out["rss_after_load_mb"] = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    print(
        f"asterai serve on one core, following the replay ({len(manifest['service']['symbols'])} symbols)"
    )
    print(f"  start-up to healthy: {out['startup_s']:.1f} s; resident {out['rss_after_start_mb']:.0f} MB "
          f"after start, {out['rss_after_load_mb']:.0f} MB after the load (target < {RSS_TARGET_MB:.0f} MB: "
          f"{'MET' if max(out['rss_after_start_mb'], out['rss_after_load_mb']) < RSS_TARGET_MB else 'NOT MET'})")  # fmt: skip
    print(f"  POST /v1/predict, {out['predict_rows']} rows: p50 {out['predict_p50_ms']:.1f} ms, "
          f"p99 {out['predict_p99_ms']:.1f} ms (target p99 < {PREDICT_TARGET_MS:.0f} ms: "
          f"{'MET' if out['predict_p99_ms'] < PREDICT_TARGET_MS else 'NOT MET'})")  # fmt: skip
    print(
        f"  GET /v1/signals, 50 concurrent clients: {out['signals_per_s']:.0f} requests/s, "
        f"{out['signals_errors']} errors"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
