"""The runner of ``asterai pipeline``: stages in order, resumed by content, one manifest.

A stage is **current**, and skipped, when its outputs exist unchanged and the hashes
of its inputs and of its settings equal those recorded the last time it ran
(``data/pipeline_runs/state.json``); otherwise it runs, and the reason is shown. A
stage that talks to the exchange counts the exchange's clock among its inputs (the last
closed bar of the finest interval), so a rerun within the same bar skips it and a later
one collects what is new. ``--force`` runs the selected stages whatever the records say.

A stage whose inputs are missing stops the run before it does anything, naming what is
missing and which stage makes it. A stage that fails stops the run (exit 1); its record
is dropped, so the next run resumes there without redoing the stages before it.

Every run writes ``data/pipeline_runs/{run_id}/manifest.json``: the settings (no
secrets), the library versions and the device, and per stage its status, reason, time,
inputs and outputs with their hashes, settings hash and key numbers. It is rewritten
after every stage, so an interrupted run leaves a manifest of what it did.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from asterai import atomic
from asterai.config import Settings
from asterai.data.access import OFFLINE_HINT
from asterai.intervals import INTERVAL_MS
from asterai.paths import DataPaths
from asterai.pipeline.stages import (
    ALL_STAGES,
    REGISTRY,
    STAGES,
    VALIDATE_ONLY,
    Stage,
    StageResult,
)

CONNECT_TIMEOUT_S = 5.0


class PipelineUsageError(ValueError):
    """An unknown stage name or an empty stage range."""


class ExchangeUnreachable(RuntimeError):
    """The exchange did not answer the connectivity check."""


def select_stages(
    start_from: str | None, stop_at: str | None, optimize: bool = False, export: bool = False
) -> list[str]:
    """The stages from ``start_from`` to ``stop_at``. The optional ones after the
    backtest run only when asked: the search with ``optimize``, the ONNX export with
    ``export``, or either when named in ``start_from`` / ``stop_at``."""
    for name in (start_from, stop_at):
        if name is not None and name not in ALL_STAGES:
            raise PipelineUsageError(
                f"unknown stage {name!r}; stages, in order: {', '.join(ALL_STAGES)}"
            )
    first = ALL_STAGES.index(start_from) if start_from else 0
    last = ALL_STAGES.index(stop_at) if stop_at else len(ALL_STAGES) - 1
    if first > last:
        raise PipelineUsageError(f"--start-from {start_from} comes after --stop-at {stop_at}")
    asked = {"optimization": optimize, "onnx_export": export}
    return [
        name
        for name in ALL_STAGES[first : last + 1]
        if name in STAGES or asked[name] or name in (start_from, stop_at)
    ]


# -- hashing ---------------------------------------------------------------------------


class Hasher:
    """sha256 of files, each read once per run (keyed by size and modification time)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[tuple[str, int, int, int, int], str] = {}

    def rel(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def file(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        if key not in self._cache:
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            self._cache[key] = digest.hexdigest()
        return self._cache[key]

    def files(self, paths: list[Path]) -> dict[str, str]:
        return {self.rel(p): self.file(p) for p in paths if p.is_file()}


def _config(stage: Stage, settings: Settings, opts: dict[str, Any]) -> dict[str, Any]:
    public = settings.public_dict()
    out = {key: public.get(key) for key in stage.config}
    if stage.name in ("data_collection", "data_validation") and opts.get("symbols"):
        out["symbols"] = sorted(opts["symbols"])
    return out


def _absent(files: list[Path]) -> bool:
    return not files or not all(p.exists() for p in files)


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# -- the exchange ------------------------------------------------------------------------


def exchange_clock(settings: Settings, timeout: float = CONNECT_TIMEOUT_S) -> int:
    """The exchange's time (ms), after a ping, through the same retrying client and
    limiter as every step: a 5xx, a dropped or truncated response and a 429 are retried
    with backoff (``Retry-After`` honoured). Raises ``ExchangeUnreachable`` saying how to
    work offline when the exchange cannot be reached at all (refused, unresolvable, TLS:
    within seconds), and saying it is the exchange's fault when it answers but keeps
    failing past the retry budget. When nothing fails it costs two requests."""
    from asterai.exchange.client import AsterClient
    from asterai.exchange.errors import (
        APIError,
        ExchangeError,
        IPBanned,
        RateLimited,
        RetriesExhausted,
        TemporaryError,
        Unreachable,
    )

    url = settings.base_url
    quick = settings.exchange.model_copy(
        update={"timeout_s": min(settings.exchange.timeout_s, timeout)}
    )

    async def clock() -> int:
        async with AsterClient(url, quick) as client:
            await client.ping()
            return await client.server_time()

    try:
        return asyncio.run(clock())
    except Unreachable as err:
        cause = err.__cause__ or err  # the last transport error, e.g. connection refused
        raise ExchangeUnreachable(
            f"cannot reach the exchange at {url} ({cause}). Check the network and --base-url; "
            f"{OFFLINE_HINT}"
        ) from err
    except IPBanned as err:
        raise ExchangeUnreachable(f"{url}: {err}") from err
    except APIError as err:  # a 4xx on /ping: something answers, but not Aster's API
        raise ExchangeUnreachable(
            f"{url} answers, but not as the Aster futures API ({err}): check --base-url; "
            f"{OFFLINE_HINT}"
        ) from err
    except RetriesExhausted as err:
        last = err.last
        if isinstance(last, TemporaryError) and "unparseable body" in str(last):
            why = "answers, but not with the Aster API's JSON: check --base-url"
        elif isinstance(last, RateLimited) or "HTTP 5" in str(last):
            why = "answers but keeps failing: a bad spell on its side, not your network"
        else:
            why = "stopped answering (timeouts or dropped connections)"
        raise ExchangeUnreachable(
            f"the exchange at {url} {why} ({err}); run the same command again in a few "
            f"minutes (it resumes where it stopped); {OFFLINE_HINT}"
        ) from err
    except ExchangeError as err:
        raise ExchangeUnreachable(f"the exchange at {url}: {err}; {OFFLINE_HINT}") from err


# -- records -------------------------------------------------------------------------------


def _state_path(paths: DataPaths) -> Path:
    return paths.data_dir / "pipeline_runs" / "state.json"


def load_state(paths: DataPaths) -> dict[str, Any]:
    path = _state_path(paths)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"stages": {}}  # absent or damaged: it only costs a rerun
    stages = doc.get("stages") if isinstance(doc, dict) else None
    if not isinstance(stages, dict):
        return {"stages": {}}
    return {"stages": {k: v for k, v in stages.items() if isinstance(v, dict)}}


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("asterai", "numpy", "pandas", "pyarrow", "numba", "xgboost", "torch",
                 "TA-Lib", "scikit-learn", "pydantic"):  # fmt: skip
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _device(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"train.device": settings.train.device}
    try:
        import torch

        out["cuda_available"] = bool(torch.cuda.is_available())
        if out["cuda_available"]:
            out["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        out["cuda_available"] = False
    return out


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


# -- the run ------------------------------------------------------------------------------


class Display(Protocol):
    def plan(self, run_id: str, names: list[str], estimates: dict[str, float | None]) -> None: ...
    def started(self, name: str, index: int, reason: str, eta_s: float | None) -> None: ...
    def finished(self, record: dict[str, Any]) -> None: ...


class _Quiet:
    def plan(self, run_id, names, estimates):  # noqa: D102
        pass

    def started(self, name, index, reason, eta_s):  # noqa: D102
        pass

    def finished(self, record):  # noqa: D102
        pass


@dataclass(slots=True)
class PipelineOutcome:
    ok: bool = True
    failure: str | None = None
    run_id: str = ""
    manifest: Path | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)

    def status(self, name: str) -> str | None:
        return next((s["status"] for s in self.stages if s["name"] == name), None)


def _why_run(
    stage: Stage,
    record: dict[str, Any] | None,
    inputs: dict[str, str],
    config_sha: str,
    outputs_now: dict[str, str],
    force: bool,
) -> str | None:
    """Why the stage must run, or None when it is current."""
    if force:
        return "forced (--force)"
    if record is None:
        return "never ran here" if not outputs_now else "no record of its last run"
    if record.get("config_sha256") != config_sha:
        return "its settings changed"
    before = record.get("inputs", {})
    for path in sorted(set(before) | set(inputs)):
        if before.get(path) != inputs.get(path):
            what = "new" if path not in before else "gone" if path not in inputs else "changed"
            return f"input {what}: {path}"
    recorded = record.get("outputs", {})
    for path, digest in sorted(recorded.items()):
        if outputs_now.get(path) != digest:
            return f"output {'missing' if path not in outputs_now else 'changed'}: {path}"
    if not recorded:
        return "it wrote nothing last time"
    return None


def run_pipeline(
    settings: Settings,
    *,
    start_from: str | None = None,
    stop_at: str | None = None,
    validate_only: bool = False,
    optimize: bool = False,
    export: bool = False,
    force: bool = False,
    symbols: list[str] | None = None,
    progress: bool = False,
    display: Display | None = None,
    train_bars: Callable[[], Any] | None = None,
    argv: list[str] | None = None,
) -> PipelineOutcome:
    """Run the selected stages in order, skipping the current ones; stop at the first
    that fails. Raises ``PipelineUsageError`` for a bad stage range and
    ``ExchangeUnreachable`` (before anything runs) when a network stage is selected and
    the exchange does not answer."""
    if validate_only and (start_from or stop_at):
        raise PipelineUsageError("--validate-only runs its own stages; drop --start-from/--stop-at")
    names = (
        list(VALIDATE_ONLY)
        if validate_only
        else select_stages(start_from, stop_at, optimize, export)
    )
    display = display or _Quiet()
    paths = DataPaths.at(settings.data_root)
    opts: dict[str, Any] = {"symbols": symbols, "progress": progress, "train_bars": train_bars}
    hasher = Hasher(paths.root)

    clock: dict[str, Any] | None = None
    if any(REGISTRY[n].network for n in names):
        now = exchange_clock(settings)  # raises ExchangeUnreachable, before anything runs
        finest = min(INTERVAL_MS[iv] for iv in settings.collect.intervals)
        clock = {
            "base_url": settings.base_url,
            "last_closed_bar_ms": (now // finest) * finest - finest,
        }

    state = load_state(paths)
    run_id = new_run_id()
    outcome = PipelineOutcome(run_id=run_id)
    folder = paths.data_dir / "pipeline_runs" / run_id
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "started_at": datetime.now(UTC).isoformat(),
        "finished_at": None,
        "status": "running",
        "command": argv,
        "selected": names,
        "validate_only": validate_only,
        "force": force,
        "data_root": str(paths.root),
        "settings": settings.public_dict(),
        "versions": _versions(),
        "device": _device(settings),
        "environment_variables": environment_note(),
        "stages": outcome.stages,
    }
    estimates = {n: (state["stages"].get(n) or {}).get("seconds") for n in names}
    display.plan(run_id, names, estimates)

    def save() -> None:
        atomic.write_json(folder / "manifest.json", manifest)

    save()
    started_run = time.perf_counter()
    for index, name in enumerate(names):
        stage = REGISTRY[name]
        config = _config(stage, settings, opts)
        config_sha = _sha(config)
        record = state["stages"].get(name)
        entry: dict[str, Any] = {"name": name, "config_sha256": config_sha}
        missing = [need for need in stage.needs if _absent(need.paths(paths, settings))]
        if missing:
            need = missing[0]
            entry.update(status="failed", reason="inputs missing", seconds=0.0)
            outcome.ok = False
            outcome.failure = (
                f"stage {name} cannot start: it needs {need.what}, which stage "
                f"{need.made_by} makes (run `asterai pipeline --start-from {need.made_by}`)"
            )
            entry["summary"] = outcome.failure
            outcome.stages.append(entry)
            display.finished(entry)
            break
        inputs = hasher.files(stage.reads(paths, settings))
        if stage.network and clock is not None:
            inputs["exchange"] = _sha(clock)
        outputs_now = hasher.files(stage.writes(paths, settings))
        reason = _why_run(stage, record, inputs, config_sha, outputs_now, force)
        remaining = [estimates.get(n) for n in names[index:]]
        eta = sum(r for r in remaining if r) if all(remaining) else None
        if reason is None:
            entry.update(
                status="skipped", reason="current: inputs, settings and outputs unchanged",
                seconds=0.0, summary=record.get("summary", ""), numbers=record.get("numbers", {}),
                inputs=inputs, outputs=outputs_now, last_run_id=record.get("run_id"),
            )  # fmt: skip
            outcome.stages.append(entry)
            display.finished(entry)
            continue
        display.started(name, index, reason, eta)
        # no record while it runs: a run killed in the middle (even by SIGKILL) leaves
        # the stage to run again, whatever it had written
        if state["stages"].pop(name, None) is not None:
            atomic.write_json(_state_path(paths), state)
        began = time.perf_counter()
        try:
            result: StageResult = stage.run(settings, opts)
        except BaseException as err:
            interrupted = isinstance(err, KeyboardInterrupt)
            entry.update(
                status="interrupted" if interrupted else "failed", reason=reason,
                seconds=time.perf_counter() - began, summary=f"{type(err).__name__}: {err}",
            )  # fmt: skip
            outcome.stages.append(entry)
            manifest.update(
                status="interrupted" if interrupted else "failed",
                failure=f"stage {name} {'interrupted' if interrupted else 'failed'}: "
                f"{type(err).__name__}: {err}",
                finished_at=datetime.now(UTC).isoformat(),
            )
            save()
            raise
        seconds = time.perf_counter() - began
        outputs = hasher.files(stage.writes(paths, settings))
        entry.update(
            status="ran" if result.ok else "failed", reason=reason, seconds=seconds,
            summary=result.summary, details=list(result.details), numbers=result.numbers,
            inputs=inputs, outputs=outputs,
        )  # fmt: skip
        outcome.stages.append(entry)
        if result.ok and result.complete:
            state["stages"][name] = {
                "run_id": run_id, "finished_at": datetime.now(UTC).isoformat(),
                "seconds": seconds, "config_sha256": config_sha, "inputs": inputs,
                "outputs": outputs, "summary": result.summary, "numbers": result.numbers,
            }  # fmt: skip
            atomic.write_json(_state_path(paths), state)
        save()
        display.finished(entry)
        if not result.ok:
            outcome.ok = False
            outcome.failure = f"stage {name} failed: {result.summary}"
            break
    manifest.update(
        status="ok" if outcome.ok else "failed",
        failure=outcome.failure,
        finished_at=datetime.now(UTC).isoformat(),
        seconds=time.perf_counter() - started_run,
    )
    save()
    outcome.manifest = folder / "manifest.json"
    return outcome


# -- past runs ------------------------------------------------------------------------------


def list_runs(paths: DataPaths) -> list[dict[str, Any]]:
    """Every manifest under ``data/pipeline_runs/``, oldest first (unreadable ones named)."""
    folder = paths.data_dir / "pipeline_runs"
    out = []
    for path in sorted(folder.glob("*/manifest.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            doc = f"unreadable manifest: {err}"
        if not isinstance(doc, dict):
            doc = {"run_id": path.parent.name, "status": str(doc)[:200]}
        out.append(doc)
    return sorted(out, key=lambda m: str(m.get("started_at") or ""))


def headline(manifest: dict[str, Any]) -> dict[str, Any]:
    """A run's key numbers, from its stages' records (a skipped stage carries the numbers
    of the run that made its outputs)."""
    numbers = {s["name"]: s.get("numbers") or {} for s in manifest.get("stages", [])}
    gate = numbers.get("data_validation", {})
    conf = numbers.get("model_training_confluence", {})
    native = numbers.get("model_training_aster_native", {})
    bt = numbers.get("backtesting", {})
    return {
        "trainable": gate.get("trainable"),
        "excluded": gate.get("excluded"),
        "contaminated": gate.get("contaminated"),
        "confluence_auc": (conf.get("auc_long"), conf.get("auc_short")),
        "aster_native_auc": (native.get("auc_long"), native.get("auc_short")),
        "sharpe": bt.get("sharpe_ratio"),
        "sharpe_interval_95": bt.get("sharpe_interval_95"),
        "total_return": bt.get("total_return"),
        "criteria": bt.get("criteria"),
    }


def environment_note() -> str:
    """What a manifest cannot record: set ASTERAI_* variables (names only)."""
    names = sorted(
        k for k in os.environ
        if k.startswith("ASTERAI_") and "KEY" not in k and "SECRET" not in k
    )  # fmt: skip
    return ", ".join(names)
