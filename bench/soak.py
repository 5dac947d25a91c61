"""Soak: the signal service and the paper trader together, unattended, for a month.

The market: the replay server in its own process, playing the recording forward on a
running clock (``--speed`` exchange seconds a second) over ``--days`` simulated days.
To reach ``--symbols`` symbols it serves renamed copies of the recorded series, tiled
back in time so that a month of history lies before the first played bar
(``bench/pipeline.py``'s panel: the same real bars under other names, a load, not a
market). The README's fault mix is switched on (``--faults``: 5xx, 429, slow,
truncated and dropped responses), the kline streams are dropped every ``--drop-every``
simulated hours, and the feed pauses once for ``--pause-hours`` simulated hours (the
exchange's clock goes on, no bar closes: the data is stale for that long).

The processes, each in its own:
- the service: the confluence model exported from the recording (its manifest widened
  to the copies), following the market by the streams (REST for what they lack), under
  uvicorn, with one unexpected exception injected into one step of its follower (a
  RuntimeError, as a malformed field or a model runtime's error would be);
- the paper trader: ``asterai paper`` on the same export and market.

Every ``--probe`` seconds the script asks the service's ``/health`` (public and with the
token) and reads both processes' resident memory. Reported: crashes (target 0), the
resident memory of each after the warm-up (the first simulated day) and at the end
(target: within 10%), every bar journaled exactly once (the paper journal's bars, one
per hour from its first to its last, none twice, none missing), ``/health`` at every
probe against the truth (stale exactly while the feed is paused, after the missed bar's
due time and grace; ok otherwise; and, whatever the feed, ``untrue``: probes whose
health contradicts the service's own newest bar on the replay's clock), and the errors
counted (the service's counts, the
lines logged). At the end both processes get SIGTERM: a graceful stop (exit 0).

    python bench/soak.py                                  # 200 symbols, 30 days at 600x
    python bench/soak.py --symbols 20 --days 1 --warm-days 0.5  # a quick look
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _recording import bench_parser, recording_missing

HOUR = 3_600_000
DAY = 24 * HOUR
FAULTS = "5xx=0.1,429=0.05,slow=0.05:0.5,truncate=0.05,drop=0.05"
TOKEN_ENV = "ASTERAI_SERVE_TOKEN"
#: the exchange's clock when the recording was taken (its order books' ``E``)
RECORDING_END = "2025-10-15T04:00:00Z"


def replay_child(
    folder: str, speed: float, start: int, faults: str, weight_limit: int, conn
) -> None:
    """The replay server, steered through ``conn``: its URLs first, then commands."""
    from pipeline import RECORDING_NOW_MS

    from asterai.exchange.replay import ReplayServer
    from asterai.exchange.replay.recording import load_recording

    rec = load_recording(Path(folder), now_ms=RECORDING_NOW_MS)
    with ReplayServer(
        rec, clock_speed=speed, play_from_ms=start, streams=True, faults=faults, seed=1,
        weight_limit=weight_limit,
    ) as server:
        conn.send((server.base_url, server.ws_url, sorted(rec.symbols)))
        while True:
            cmd = conn.recv()
            if cmd == "stop":
                return
            if cmd == "drop":
                server.drop_streams()
            elif cmd == "pause":
                server.clock.pause()
            elif cmd == "resume":
                server.clock.resume()
            conn.send(
                {
                    "now_ms": server.clock.now_ms(),
                    "data_ms": server.clock.data_ms(),
                    "paused": server.clock.paused,
                    "stats": server.stats.snapshot() if cmd == "stats" else None,
                }
            )


def service_child(argv: list[str]) -> None:
    """``--service-child ROOT URL WS PORT SPEED GRACE INJECT_MS``: the service, its
    follower's step raising once at the first bar at or after ``INJECT_MS``."""
    import uvicorn

    from asterai.config import load_settings
    from asterai.deploy.follow import Follower
    from asterai.deploy.runtime import OnnxModel
    from asterai.deploy.service import create_app

    root, url, ws, port, speed, grace, inject = argv
    settings = load_settings(Path(root), base_url=url, ws_url=ws)
    model = OnnxModel(Path(root) / "models" / "confluence" / "onnx")
    follower = Follower(settings, model, clock_rate=float(speed), grace_s=float(grace))
    real, injected = follower.follow, []

    async def once(client, stop=None):
        snap = follower.state.snapshot
        if not injected and snap is not None and snap.bar_open_ms >= int(inject):
            injected.append(snap.bar_open_ms)
            raise RuntimeError("injected by bench/soak.py: one unexpected error")
        return await real(client, stop)

    follower.follow = once
    app = create_app(model, follower, token=os.environ[TOKEN_ENV], name="confluence")
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="info", access_log=False)


def rss_mb(pid: int) -> float | None:
    """A process's resident memory (VmRSS), MB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_root(source: Path, root: Path, names: list[str], grace_s: float) -> None:
    """The export of ``source`` in ``root``, its symbols widened to the copies."""
    shutil.copytree(source / "models" / "confluence" / "onnx", root / "models/confluence/onnx")
    manifest_path = root / "models/confluence/onnx/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["service"]["symbols"] = names  # the copies, as if trained on them
    manifest_path.write_text(json.dumps(manifest, indent=2))
    (root / "asterai.toml").write_text(
        "[paper]\n"
        f"grace_s = {grace_s}\nmax_delay_s = {min(3 * grace_s, 3000.0)}\n"
        "daily_loss_limit = 0.0\n"
    )


def _untrue(probe: dict, grace_ms: int, slack_ms: int) -> bool:
    """Whether a probe's health contradicts its own data on the replay's clock (the
    probe's ``at_ms``): stale says the bar due after the newest held one is overdue by
    more than the grace; ok says it is not (two real seconds of slack either way)."""
    import pandas as pd

    detail = probe.get("detail") or {}
    last = detail.get("last_bar_open_time")
    if "error" in probe or last is None:
        return False
    due = int(pd.Timestamp(last).value // 1_000_000) + 2 * HOUR - 1
    late = probe["at_ms"] - due - grace_ms
    stale = bool(probe["public"].get("stale"))
    return (stale and late < -slack_ms) or (not stale and late > slack_ms)


def journal_bars(root: Path) -> dict:
    import sqlite3

    from asterai.paths import DataPaths

    path = DataPaths.at(root).paper_journal
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        times = [r[0] for r in db.execute("SELECT open_ms FROM bars ORDER BY open_ms")]
        late = db.execute("SELECT COUNT(*) FROM bars WHERE late").fetchone()[0]
        errors = db.execute(
            "SELECT COUNT(*) FROM events WHERE kind LIKE '%error%'"
        ).fetchone()[0]
    missing = sum((b - a) // HOUR - 1 for a, b in zip(times, times[1:], strict=False))
    return {
        "bars": len(times),
        "first": times[0] if times else None,
        "last": times[-1] if times else None,
        "twice": len(times) - len(set(times)),
        "missing": int(missing),
        # traded more than paper.max_delay_s after their close: their signals not acted on
        "late": int(late),
        "error_events": int(errors),
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--service-child":
        service_child(sys.argv[2:])
        return 0
    parser = bench_parser(__doc__, panel=False)
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--days", type=float, default=30.0, help="simulated days measured")
    parser.add_argument(
        "--warm-days", type=float, default=2.0,
        help="simulated days played before the measured ones, for the warm-ups (under "
        "faults and at high speed a warm-up takes many simulated hours)",
    )  # fmt: skip
    parser.add_argument(
        "--speed", type=float, default=600.0,
        help="exchange seconds a second: 600 is a bar every 6 s, which leaves the "
        "client's retries and the streams' reconnects (in real seconds) inside a bar",
    )  # fmt: skip
    parser.add_argument(
        "--weight-limit", type=int, default=2400,
        help="the weight a minute (real seconds) the replay declares and enforces: 2,400 "
        "is Aster's. At --speed x a simulated hour lasts 3600/x real seconds, so the "
        "budget per bar is x times smaller than live; --weight-limit 24000 at 500x "
        "still leaves each bar 50 times less weight than live",
    )  # fmt: skip
    parser.add_argument("--faults", default=FAULTS)
    parser.add_argument("--drop-every", type=float, default=6.0, help="simulated hours")
    parser.add_argument("--pause-hours", type=float, default=2.0)
    parser.add_argument("--probe", type=float, default=0.5, help="real seconds")
    parser.add_argument("--root", type=Path, default=None, help="a data root with an export")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if recording_missing(args):
        return 2
    import httpx
    import pandas as pd
    from live import trained_root
    from pipeline import write_panel

    from asterai.config import load_settings
    from asterai.data.discovery import run_discovery

    work = Path(tempfile.mkdtemp(prefix="asterai-bench-soak-"))
    source = args.root or trained_root(args.data, work / "trained")
    panel = work / "panel"
    write_panel(args.data, panel, args.symbols, months=2)
    end = int(pd.Timestamp(RECORDING_END).value // 1_000_000)
    measured = end - int(args.days * DAY)
    start = measured - int(args.warm_days * DAY) + 1000  # a second into a bar
    # the grace before the data counts as stale, in exchange seconds: live it is two
    # minutes, which the client's retries and the streams' reconnects (real seconds)
    # fit in; at ``speed`` those take ``speed`` times longer on the exchange's clock, so
    # the soak allows them five real seconds (under a bar at 600x; the paused feed
    # still goes stale: the pause outlasts the next bar's due time plus the grace)
    grace_s = max(120.0, args.speed * 5.0)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    replay = ctx.Process(
        target=replay_child,
        args=(str(panel), args.speed, start, args.faults, args.weight_limit, child),
    )
    replay.start()
    url, ws, names = parent.recv()

    def ask(cmd: str = "now") -> dict:
        parent.send(cmd)
        return parent.recv()

    root = work / "soak"
    prepare_root(Path(source), root, names, grace_s)
    run_discovery(load_settings(root, base_url=url))  # the copies' filters, for paper
    token = os.urandom(24).hex()
    env = dict(os.environ, **{TOKEN_ENV: token})
    logs = work / "logs"
    logs.mkdir()
    port = free_port()
    # into the measured days (a day, or a quarter of a shorter run), before the pause
    inject_ms = measured + min(DAY, int(args.days * DAY / 4))
    service = subprocess.Popen(
        [sys.executable, __file__, "--service-child", str(root), url, ws, str(port),
         str(args.speed), str(grace_s), str(inject_ms)],
        env=env, stdout=open(logs / "service.out", "w"), stderr=subprocess.STDOUT,
        cwd=Path(__file__).parent,
    )  # fmt: skip
    paper = subprocess.Popen(
        ["asterai", "paper", "--data-root", str(root), "--base-url", url, "--ws-url", ws,
         "--clock-rate", str(args.speed)],
        env=env, stdout=open(logs / "paper.out", "w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {token}"}
    pause_at = measured + int(args.days * DAY * 0.5) // HOUR * HOUR + HOUR // 2
    resume_at = pause_at + int(args.pause_hours * HOUR)
    next_drop = measured + int(args.drop_every * HOUR)
    probes, rss, crashes = [], {"service": [], "paper": []}, []
    paused_spans: list[tuple[int, int]] = []
    drops = 0
    started = time.perf_counter()
    print(f"soak: {len(names)} symbols, {args.days:g} days at {args.speed:g}x, work {work}",
          flush=True)  # fmt: skip
    try:
        while True:
            clock = ask()
            now = clock["now_ms"]
            if now >= end:
                break
            for name, proc in (("service", service), ("paper", paper)):
                if proc.poll() is not None and name not in [c["process"] for c in crashes]:
                    crashes.append({"process": name, "exit": proc.returncode, "at_ms": now})
            if crashes:
                print(f"crashed: {crashes}", flush=True)
                break
            if now >= next_drop:
                ask("drop")
                drops += 1
                next_drop += int(args.drop_every * HOUR)
            if not clock["paused"] and pause_at <= now < resume_at and not paused_spans:
                ask("pause")
                paused_spans.append((now, 0))
            elif clock["paused"] and now >= resume_at:
                ask("resume")
                paused_spans[-1] = (paused_spans[-1][0], now)
            try:
                public = httpx.get(f"{base}/health", timeout=5)
                detail = httpx.get(f"{base}/health", headers=auth, timeout=5).json()
                probes.append({"at_ms": now, "code": public.status_code, "public": public.json(),
                               "detail": detail, "paused": clock["paused"]})  # fmt: skip
            except httpx.HTTPError as err:
                probes.append({"at_ms": now, "error": f"{type(err).__name__}: {err}"})
            for name, proc in (("service", service), ("paper", paper)):
                rss[name].append((now, rss_mb(proc.pid)))
            time.sleep(args.probe)
        stats = ask("stats")["stats"]
    finally:
        exits = {}
        for name, proc in (("service", service), ("paper", paper)):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    exits[name] = proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    exits[name] = "killed after 60 s"
            else:
                exits[name] = proc.returncode
        parent.send("stop")
        replay.join(30)
    seconds = time.perf_counter() - started
    out = report(args, probes, rss, crashes, exits, paused_spans, drops, grace_s, measured,
                 root, logs, stats, seconds, len(names))  # fmt: skip
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0 if not crashes else 1


def report(args, probes, rss, crashes, exits, paused_spans, drops, grace_s, measured, root,
           logs, stats, seconds, symbols) -> dict:  # fmt: skip
    """The soak's figures over the measured days (from ``measured``, once both processes
    have warmed up): memory, crashes, the journal, the health probes' truth."""
    ready = [p["at_ms"] for p in probes if p.get("code") == 200
             and p["public"].get("status") == "ok"]  # fmt: skip
    warm = max(measured, ready[0]) if ready else measured
    timeline = [
        [round((p["at_ms"] - measured) / HOUR, 2), p.get("code"),
         (p.get("public") or {}).get("status", p.get("error", "")[:30]), p.get("paused")]
        for p in probes
    ]  # fmt: skip
    probes = [p for p in probes if p["at_ms"] >= warm]

    def memory(series):
        after = [m for t, m in series if t >= warm and m is not None]
        return {
            "after_warm_up_mb": round(after[0], 1) if after else None,
            "end_mb": round(after[-1], 1) if after else None,
            "max_mb": round(max(after), 1) if after else None,
            "end_over_warm_up": round(after[-1] / after[0], 3) if after else None,
        }

    # the truth at each probe: stale while a bar is overdue by more than the grace
    # because the feed is paused (from the close of the bar that was open when the
    # pause began, plus the grace, to the resume), ok outside the pauses (two real
    # seconds of slack either side); outside, a stale probe means the processes fell
    # more than the grace behind the market (faults, dropped streams): counted
    slack = int(args.speed * 2 * 1000)  # two real seconds of exchange time
    grace = int(grace_s * 1000)
    wrong, stale_while_paused, ok_outside = [], 0, 0
    for p in probes:
        if "error" in p:
            wrong.append(p)
            continue
        t = p["at_ms"]
        stale = bool(p["public"].get("stale"))
        inside = [
            (a, b) for a, b in paused_spans
            if (a // HOUR + 1) * HOUR + grace + slack <= t <= (b or t)
        ]  # fmt: skip
        near = [
            (a, b) for a, b in paused_spans
            if (a // HOUR + 1) * HOUR + grace - slack <= t <= (b or t) + slack
        ]  # fmt: skip
        if inside:
            stale_while_paused += stale
            if not stale or p["code"] != 503:
                wrong.append(p)
        elif not near:
            ok_outside += not stale
            if stale or p["code"] != 200:
                wrong.append(p)
    last = next((p["detail"] for p in reversed(probes) if "detail" in p), {})
    lines = {n: (logs / f"{n}.out").read_text(errors="replace") for n in ("service", "paper")}
    return {
        "symbols": symbols,
        "days": args.days,
        "warm_ms": warm,
        "warm_after_h": round((warm - measured) / HOUR, 2),
        "speed": args.speed,
        "weight_limit": args.weight_limit,
        "faults": args.faults,
        "stream_drops": drops,
        "paused": [[a, b] for a, b in paused_spans],
        "run_s": round(seconds, 1),
        "crashes": crashes,
        "exit_on_sigterm": exits,
        # uvicorn re-raises the SIGTERM it handled once it has shut down (exit -15)
        "graceful_stop": {
            "service": "Application shutdown complete" in lines["service"],
            "paper": exits.get("paper") == 0,
        },
        "memory": {name: memory(series) for name, series in rss.items()},
        "journal": journal_bars(root),
        "health": {
            "probes": len(probes),
            "wrong": len(wrong),
            "wrong_examples": wrong[:5],
            "stale_while_paused": stale_while_paused,
            "ok_outside_pauses": ok_outside,
            "stale_outside_pauses": sum(
                1 for p in probes if "public" in p and p["public"].get("stale")
                and not any(a - slack <= p["at_ms"] <= (b or p["at_ms"]) + slack
                            for a, b in paused_spans)
            ),
            # the health against the service's own data on the replay's clock: stale
            # exactly when the bar after the newest held one is overdue by the grace
            # (whether or not the feed is paused); beyond two real seconds of slack
            "untrue": sum(1 for p in probes if _untrue(p, grace, slack)),
        },
        "service_errors": last.get("errors"),
        "logged": {
            n: {
                "unexpected": text.count("unexpected error"),
                "tracebacks": text.count("Traceback"),
            }
            for n, text in lines.items()
        },
        "timeline": timeline,
        "replay": {k: stats.get(k) for k in ("requests", "faults", "sent_429", "sent_418")}
        if stats
        else None,
    }


if __name__ == "__main__":
    sys.exit(main())
