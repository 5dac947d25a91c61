"""Shared fixtures: the real recording and a replay server over loopback.

The recording is read in place from ``../shared/aster-real`` (seen from the project
root); set ``ASTERAI_REAL_DATA`` to use a copy elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# Two xdist workers share the machine's cores (pyproject's addopts): each library's own
# thread pool (OpenMP in XGBoost and PyTorch, BLAS, numba) runs one thread per worker,
# or the pools of both workers spin on each other's cores. Set before any of them loads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: the files that take longest, started first so that the workers (which take whole
#: files, in order) finish together; the rest follow in their usual order
LONGEST_FIRST = (
    "test_docs.py", "test_optimize.py", "test_paper_trader.py", "test_models.py",
    "test_pipeline_faults.py", "test_deploy_service.py", "test_pipeline.py",
)  # fmt: skip


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept


REAL_DATA = Path(os.environ.get("ASTERAI_REAL_DATA", PROJECT_ROOT.parent / "shared" / "aster-real"))
SKIP_REASON = f"real Aster recording not found at {REAL_DATA}; set ASTERAI_REAL_DATA to a copy of shared/aster-real"

# Training small enough for an end-to-end run in seconds (asterai.toml text).
SMALL_TRAINING = """\
[train]
folds = 3
[train.lstm]
epochs = 1
hidden_size = 8
[train.xgboost]
n_estimators = 40
[aster_native.xgboost]
n_estimators = 40
"""

# Backoff short enough for tests, still exponential and jittered.
#: quick retries; and the whole weight budget for a long-running process, as the one
#: process on its replay's IP (``exchange.follower_share``: a test's accelerated clock
#: brings a bar every few seconds, so a third of the budget would hold its polls back)
FAST_EXCHANGE = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0,
                 "follower_share": 1.0}  # fmt: skip


def real_data_dir() -> Path:
    if not (REAL_DATA / "klines").is_dir():
        pytest.skip(SKIP_REASON)
    return REAL_DATA


@pytest.fixture(scope="session")
def real_data() -> Path:
    return real_data_dir()


@pytest.fixture(scope="session")
def recording(real_data: Path):
    from asterai.exchange.replay.recording import load_recording

    return load_recording(real_data)


#: training small enough for the export and service tests (settings overrides)
SMALL_EXPORT_TRAINING = {
    "folds": 2, "lstm": {"epochs": 1, "hidden_size": 8}, "xgboost": {"n_estimators": 30}
}  # fmt: skip


def shared_root(tmp_path_factory, name: str, build) -> Path:
    """A data root built once per test run, by whichever test (and xdist worker) asks for
    it first, under a lock beside the workers' own temp folders; every other test, in any
    worker, waits for it and reads the same folder. It is shared: a test that changes
    anything in it works on a copy (``copy_root``)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the run's folder, above the workers'
        base = base.parent
    root, built = base / f"shared-{name}", base / f"shared-{name}.built.json"
    with FileLock(str(base / f"shared-{name}.lock")):
        if not built.exists():
            shutil.rmtree(root, ignore_errors=True)  # a build that failed half-way
            root.mkdir()
            build(root)
            built.write_text(json.dumps(_listing(root)))
    _SHARED_USED[root] = built
    return root


#: the shared roots this process has handed out, and their listings as built
_SHARED_USED: dict[Path, Path] = {}


def _listing(root: Path) -> dict[str, list[int]]:
    """Every file under ``root``: its size and modification time."""
    return {
        str(p.relative_to(root)): [p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(root.rglob("*")) if p.is_file()
    }  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def shared_roots_stay_as_built():
    """After the run, every shared root this process used is as it was built: a test
    that wrote into one (instead of a copy) would change what later tests read."""
    yield
    for root, built in _SHARED_USED.items():
        now, then = _listing(root), json.loads(built.read_text())
        changed = sorted(set(now) ^ set(then) | {k for k in now if then.get(k) != now[k]})
        assert not changed, f"a test wrote into the shared data root {root.name}: {changed[:10]}"


def copy_root(src: Path, dest: Path) -> Path:
    """A writable copy of a data root (its ``data/``, ``models/`` and ``asterai.toml``)."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in ("data", "models"):
        if (src / folder).exists():
            shutil.copytree(src / folder, dest / folder)
    if (src / "asterai.toml").exists():
        shutil.copy2(src / "asterai.toml", dest / "asterai.toml")
    return dest


@pytest.fixture(scope="session")
def collected_root(tmp_path_factory, recording) -> Path:
    """Discovery and every recorded symbol collected over loopback (read-only: copy it)."""
    return shared_root(tmp_path_factory, "collected", lambda r: collect_everything(r, recording))


@pytest.fixture(scope="session")
def featured_root(tmp_path_factory, collected_root) -> Path:
    """``collected_root`` gated (READY, which writes the universe) and featured
    (read-only: copy it)."""

    def build(root: Path) -> None:
        copy_root(collected_root, root)
        gate_and_features(root)

    return shared_root(tmp_path_factory, "featured", build)


@pytest.fixture(scope="session")
def exported_root(tmp_path_factory, featured_root) -> Path:
    """``featured_root`` with both models trained small and exported to ONNX: shared by
    the deploy and paper tests, which copy it before changing anything in it."""
    from asterai.config import load_settings
    from asterai.deploy.export import export_onnx
    from asterai.models.train import walk_forward

    def build(root: Path) -> None:
        copy_root(featured_root, root)
        for name in ("confluence", "aster_native"):
            walk_forward(name, load_settings(root, train=SMALL_EXPORT_TRAINING))
            export_onnx(load_settings(root), name)

    return shared_root(tmp_path_factory, "exported", build)


@pytest.fixture
def replay(recording):
    """A replay server with the real exchange's rules (2400 weight per minute)."""
    from asterai.exchange.replay import ReplayServer

    with ReplayServer(recording) as server:
        yield server


def collect_everything(root: Path, recording):
    """Discovery plus every recorded symbol collected into ``root`` over loopback."""
    import asyncio

    from asterai.config import load_settings
    from asterai.data.collector import collect
    from asterai.data.discovery import run_discovery
    from asterai.exchange.replay import ReplayServer

    with ReplayServer(recording) as server:
        settings = load_settings(root, base_url=server.base_url, exchange=FAST_EXCHANGE)
        run_discovery(settings)
        symbols = sorted({s for s, _ in recording.klines})
        assert asyncio.run(collect(settings, symbols=symbols)).ok
    return load_settings(root, exchange=FAST_EXCHANGE)


def gate_and_features(root: Path):
    """The gate over a collected root (READY, which writes the universe), then the features."""
    from asterai.config import load_settings
    from asterai.data.gate import validate
    from asterai.features.build import run_features

    settings = load_settings(root, exchange=FAST_EXCHANGE)
    assert validate(settings, environment=False).ok
    run_features(settings, plots=False)
    return settings


#: Headless Chromium, for the HTML reports (.ci/run installs Debian's package).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium: `apt-get install chromium` (.ci/run installs it)"
)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars")


def browser(*args: str, timeout: float = 60) -> str:
    """Run headless Chromium with ``args``; its standard output."""
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=timeout,
        check=True,
    ).stdout  # fmt: skip


def rendered_dom(page: str) -> str:
    """The page's DOM after a real browser ran its scripts (the reports mark on <body>
    how many of their charts decoded)."""
    return browser("--virtual-time-budget=5000", "--dump-dom", page)


def wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    """Until an ``asterai serve`` process at ``url`` says it is warmed up (``ok``)."""
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "asterai serve exited"
        try:
            if httpx.get(f"{url}/health", timeout=1).json().get("status") == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"asterai serve did not become healthy at {url}")


def batch_inputs(root: Path, symbols: list[str], start: int, end: int):
    """The backtest's inputs over [start, end]: the collected market through the gate,
    and the exported model's predictions on the batch feature table."""
    import pandas as pd

    from asterai.backtest.inputs import market_inputs, with_predictions
    from asterai.config import load_settings
    from asterai.data.store import to_epoch_ms
    from asterai.deploy.runtime import OnnxModel
    from asterai.paths import DataPaths

    settings = load_settings(root)
    paths = DataPaths.at(root)
    model = OnnxModel(paths.models("confluence") / "onnx")
    table = pd.read_parquet(paths.features(settings.features.base_interval))
    ms = to_epoch_ms(table["open_time"])
    inside = (ms >= start) & (ms <= end)
    preds = model.predict(table, targets=inside)  # the rows' index order, targets only
    preds = preds.assign(symbol=table["symbol"].astype(str)[inside],
                         open_time=table["open_time"][inside])  # fmt: skip
    preds = preds[preds["symbol"].isin(symbols)]
    market = market_inputs(settings, symbols, start, end)
    return with_predictions(market, preds, start, end)


class Served:
    """An ASGI app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, app) -> None:
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="info")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def free_port() -> int:
    """A loopback port free now (for a process that binds it itself)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        size = int(self.headers.get("Content-Length", 0))
        self.server.bodies.append(json.loads(self.rfile.read(size)))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict]]]:
    """(an apprise URL posting to a webhook on loopback, the JSON bodies it received)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_address[1]}/", server.bodies  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def journal_query(path: Path, sql: str, *args) -> list[dict]:
    """Rows of a trader's journal, read as a second process would (read-only)."""
    from asterai.paper.journal import read_only

    with read_only(path) as conn:
        return [dict(r) for r in conn.execute(sql, args)]


#: every check schemathesis has for an OpenAPI service; the tests assert each ran
ALL_CHECKS = {
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_headers_conformance", "response_schema_conformance", "negative_data_rejection",
    "positive_data_acceptance", "missing_required_header", "unsupported_method",
    "ignored_auth", "use_after_free", "ensure_resource_availability",
}  # fmt: skip


def schemathesis_run(schema) -> tuple[list[str], set[str], int]:
    """Schemathesis' engine over ``schema``, every check: (the failures, the checks that
    ran, the requests sent)."""
    import schemathesis
    from schemathesis.engine import Status, events

    failures, ran, requests = [], set(), 0
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, (events.NonFatalError, events.FatalError)):
            failures.append(str(getattr(event, "value", None) or event.exception))
        if not isinstance(event, events.ScenarioFinished):
            continue
        requests += len(event.recorder.interactions)
        for case_id, checks in event.recorder.checks.items():
            for check in checks:
                ran.add(check.name)
                if check.status == Status.FAILURE:
                    answer = event.recorder.interactions[case_id].response
                    failures.append(f"{event.recorder.label} {check.name}: "
                                    f"{check.failure_info.failure.title}; {answer.status_code} "
                                    f"{answer.content[:300]!r}")  # fmt: skip
    return failures, ran, requests
