"""The Optuna study: its storage, its identity, the workers that run its trials.

Storage: Optuna's journal file ``data/optimization/{study}/journal.log`` by default
(append-only, file-locked: safe for several processes on one machine, where SQLite is
not under concurrent writers), or a PostgreSQL URL shared by workers on several
machines (Optuna's ``RDBStorage``, with heartbeats: a worker that dies mid-trial has
its trial marked failed by the next worker that looks). The journal has no heartbeat;
each trial records its worker's host and process id, and a run that finds a trial
RUNNING under a process of this host that no longer exists marks it FAIL. A failed or
pruned trial never counts as complete.

Identity: the study records what it was created on (the data's hashes, the settings
that shape a trial, the model, the objective, the searched space and the final window);
resuming it on anything else is refused with the difference named.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import time
import warnings
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from asterai import __version__
from asterai.config import Settings, redact_url
from asterai.optimize import space
from asterai.optimize.trial import Evaluation, TooFewTrades, evaluate, fold_scorer
from asterai.optimize.workspace import OptimizeError, OptimizeUsageError, Workspace
from asterai.paths import DataPaths

log = logging.getLogger(__name__)

IDENTITY_KEY = "asterai"
JOURNAL = "journal.log"
#: A RUNNING trial with no worker recorded after this long is taken as dead.
ORPHAN_S = 120
#: How long a worker waits for a just-created study's identity to appear.
IDENTITY_WAIT_S = 10.0


def journal_path(settings: Settings) -> str:
    return str(DataPaths.at(settings.data_root).study(settings.optimize.study) / JOURNAL)


def storage_for(settings: Settings) -> optuna.storages.BaseStorage:
    """The study's storage, or a clear error (a URL Optuna cannot use, a server that
    does not answer)."""
    url = settings.optimize.storage
    if url is None:
        from optuna.storages.journal import JournalFileBackend

        path = journal_path(settings)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    if not url.startswith(("postgresql://", "postgresql+psycopg://")):
        raise OptimizeUsageError(
            f"optimize.storage = {redact_url(url)!r}: give a postgresql:// URL for several "
            "machines, or leave it unset for the journal file (SQLite is not offered: it "
            "is not safe under concurrent writers)"
        )
    if url.startswith("postgresql://"):  # psycopg 3 (a dependency), not SQLAlchemy's default
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's words
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=30,
                grace_period=90,
                engine_kwargs={"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}},
            )
    except Exception as err:  # sqlalchemy's OperationalError, a missing driver, ...
        raise OptimizeUsageError(
            f"optimize.storage: cannot reach {redact_url(url)}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ) from err


def identity(settings: Settings, ws: Workspace) -> dict[str, Any]:
    """What makes two runs the same study."""
    opt = settings.optimize
    shaping = settings.public_dict()
    for k in ("data_root", "base_url", "exchange", "collect", "optimize", "params_from"):
        shaping.pop(k, None)
    for k in ("threads", "device"):  # where a trial runs, not what it computes
        shaping["train"].pop(k, None)
    return {
        "model": ws.model,
        "objective": opt.objective,
        "min_trades": opt.min_trades,
        "final_share": opt.final_share,
        "space": space.describe(opt, ws.model),
        "final_window": ws.split.to_json(),
        "data_sha256": ws.data_identity,
        "settings_sha256": hashlib.sha256(
            json.dumps(shaping, sort_keys=True, default=str).encode()
        ).hexdigest(),
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    names = {
        "model": "the model", "objective": "optimize.objective",
        "min_trades": "optimize.min_trades", "final_share": "optimize.final_share",
        "space": "the searched space (optimize.search / optimize.space)",
        "final_window": "the final window (other data or another horizon range)",
        "data_sha256": "the data (the verified bars, the features built on them, or the "
        "universe changed)",
        "settings_sha256": "the settings that shape a trial (train, features, strategy, ...)",
    }  # fmt: skip
    return [names.get(k, k) for k in names if old.get(k) != new.get(k)]


def open_study(
    settings: Settings,
    ws: Workspace,
    *,
    create: bool = True,
    storage: optuna.storages.BaseStorage | None = None,
) -> optuna.Study:
    """The study, created on first use; a resumed one must have the same identity."""
    opt = settings.optimize
    storage = storage or storage_for(settings)
    mine = identity(settings, ws)
    try:
        study = optuna.load_study(study_name=opt.study, storage=storage, sampler=_sampler(opt))
    except KeyError:
        if not create:
            raise OptimizeError(f"no study {opt.study!r} in the storage") from None
        study = optuna.create_study(
            study_name=opt.study,
            storage=storage,
            direction="maximize",
            sampler=_sampler(opt),
            pruner=_pruner(opt),
            load_if_exists=True,  # another worker may have created it meanwhile
        )
        if IDENTITY_KEY not in study.user_attrs:
            study.set_user_attr(IDENTITY_KEY, mine)
            study.set_user_attr("asterai_version", __version__)
    # the identity is written right after the creation: a worker that looks in between
    # waits for it; whoever created the study, a resume must match it
    deadline = time.monotonic() + IDENTITY_WAIT_S
    theirs = study.user_attrs.get(IDENTITY_KEY)
    while theirs is None and time.monotonic() < deadline:
        time.sleep(0.5)
        theirs = optuna.load_study(study_name=opt.study, storage=storage).user_attrs.get(
            IDENTITY_KEY
        )
    if theirs is None:
        raise OptimizeUsageError(f"study {opt.study!r} was not made by asterai optimize: refused")
    diff = _differences(theirs, mine)
    if diff:
        raise OptimizeUsageError(
            f"study {opt.study!r} was created under other conditions, so its trials do not "
            f"compare with new ones: {'; '.join(diff)} differ. Resume it with the same data "
            "and settings, or start another study (--study NAME)"
        )
    study.pruner = _pruner(opt)
    return study


def _sampler(opt, worker: int = 0, offset: int = 0) -> optuna.samplers.BaseSampler:
    """Seeded TPE: each worker, and each run of a resumed study (``offset``: the trials
    it holds), its own seed, or they would draw the same points again; with several
    workers, running trials count as their likely score (constant liar)."""
    return optuna.samplers.TPESampler(
        seed=opt.seed + 1000 * worker + offset,
        n_startup_trials=opt.startup_trials,
        constant_liar=opt.workers > 1,
    )


def _pruner(opt) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=opt.startup_trials, n_warmup_steps=1)


def fail_dead_trials(study: optuna.Study, settings: Settings | None = None) -> list[int]:
    """RUNNING trials of processes of this host that no longer exist (or that never
    recorded a worker, long ago) are marked FAIL; their numbers. A process id the
    system has given to another process since counts as dead (its start time differs).
    On PostgreSQL Optuna's heartbeat does this across machines, so only the journal
    file's trials are checked (``settings``: None checks them all)."""
    if settings is not None and settings.optimize.storage is not None:
        return []
    host = socket.gethostname()
    now = time.time()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        dead = False
        if worker is None:
            started = t.datetime_start.timestamp() if t.datetime_start else now
            dead = now - started > ORPHAN_S
        elif worker.get("host") == host:
            pid = int(worker["pid"])
            dead = not _alive(pid) or (
                worker.get("started") is not None and process_started(pid) != worker["started"]
            )
        if dead:
            study._storage.set_trial_user_attr(t._trial_id, "failure", "its worker died")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed.append(t.number)
    if failed:
        log.warning("marked failed (their worker died): trials %s", failed)
    return failed


def process_started(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (Linux's /proc; None where
    there is none): with the pid, it names one process, even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19])  # field 22, starttime; fields[0] is field 3, the state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: how a packed series starts: float64 little-endian, zlib, base64
PACKED = "f8z:"


def pack_returns(values: np.ndarray) -> str:
    """A return series as a short string for a trial's user attributes: lossless
    float64, compressed (flat bars are exact zeros). A JSON list of 4,380 hourly
    returns (six months) takes ~90 kB per trial, in a journal every worker replays
    in full; packed it takes a fraction of that (``bench/optimize.py`` prints it)."""
    raw = np.ascontiguousarray(values, dtype="<f8").tobytes()
    return PACKED + base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def unpack_returns(value: Any) -> np.ndarray:
    """A series stored by :func:`pack_returns`, or as a plain list (studies written
    before packing), as float64; an absent one as an empty array."""
    if value is None:
        return np.empty(0)
    if isinstance(value, str):
        if not value.startswith(PACKED):
            raise OptimizeError(f"a trial's returns are in an unknown format ({value[:8]!r})")
        raw = zlib.decompress(base64.b64decode(value[len(PACKED) :]))
        return np.frombuffer(raw, dtype="<f8").astype(float)
    return np.asarray(value, dtype=float)


def trial_returns(trial: optuna.trial.FrozenTrial, key: str) -> np.ndarray | None:
    """A trial's ``daily_returns`` or ``bar_returns``; None where it has none."""
    value = trial.user_attrs.get(key)
    return None if value is None else unpack_returns(value)


def _record(trial: optuna.Trial, ev: Evaluation) -> None:
    trial.set_user_attr("figures", ev.figures)
    trial.set_user_attr("seconds", round(ev.seconds, 3))
    trial.set_user_attr("folds", ev.folds)
    trial.set_user_attr("daily_returns", pack_returns(ev.daily_returns))
    trial.set_user_attr("bar_returns", pack_returns(ev.bar_returns))
    trial.set_user_attr("bar_start_ms", ev.bar_start)


def objective_for(settings: Settings, ws: Workspace) -> Callable[[optuna.Trial], float]:
    """The function a worker optimises: draw, evaluate on the search part, record."""
    root = settings.data_root
    base = settings.given_dict()

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(
            "worker",
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": process_started(os.getpid()),
                "threads": settings.train.threads,
            },
        )
        values = space.suggest(trial, settings.optimize, ws.model)
        trial_settings = trial_settings_for(root, base, values, ws.model)

        def report(fold: int, value: float, daily: np.ndarray) -> None:
            trial.report(value, fold)
            if trial.should_prune():
                # a pruned trial is still a trial tried: its returns so far count in the
                # deflated Sharpe ratio's number of trials and their spread
                trial.set_user_attr("daily_returns", pack_returns(daily))
                trial.set_user_attr("pruned_after_fold", fold)
                raise optuna.TrialPruned(f"fold {fold + 1}: below the median of earlier trials")

        try:
            ev = evaluate(trial_settings, ws, on_fold=fold_scorer(trial_settings, ws, report))
        except TRIAL_ERRORS as err:
            trial.set_user_attr("failure", f"{type(err).__name__}: {err}")
            raise TrialError(str(err)) from err
        _record(trial, ev)
        if ev.figures["trades"] < settings.optimize.min_trades:
            trial.set_user_attr(
                "failure",
                f"{ev.figures['trades']} out-of-sample trades, fewer than "
                f"optimize.min_trades = {settings.optimize.min_trades}",
            )
            raise TooFewTrades(trial.user_attrs["failure"])
        if ev.score is None:
            trial.set_user_attr("failure", f"{settings.optimize.objective} is not defined")
            raise TooFewTrades(trial.user_attrs["failure"])
        return float(ev.score)

    return objective


class TrialError(RuntimeError):
    """A trial that could not be evaluated with its parameters (recorded as failed)."""


def _trial_errors() -> tuple[type[Exception], ...]:
    from asterai.backtest.inputs import BacktestInputError
    from asterai.models.data import TrainingDataError
    from asterai.models.errors import TrainingError
    from asterai.models.splits import SplitError

    return (TrainingError, TrainingDataError, SplitError, BacktestInputError)


#: What a trial's parameters can provoke (too little history for a fold at a long
#: horizon, no test row, ...): the trial fails, the search goes on.
TRIAL_ERRORS = _trial_errors()


def trial_settings_for(root, base: dict[str, Any], values: dict[str, Any], model: str) -> Settings:
    """The base settings (``Settings.given_dict()``: only what was set) with a trial's
    parameters, validated like any settings."""
    from asterai.config import load_settings

    return load_settings(root, **space.merge_settings(base, space.overrides(values, model)))


def run_worker(settings: Settings, ws: Workspace, target: int, worker: int = 0,
               timeout_s: float | None = None, callbacks: list | None = None,
               study: optuna.Study | None = None) -> None:  # fmt: skip
    """Run trials on the study until it holds ``target`` trials (of any state) or the
    timeout; a trial that fails is recorded as failed and the worker goes on. ``study``:
    the caller's, already opened and swept of dead workers' trials."""
    if study is None:  # a worker process of its own: open it (the caller did otherwise)
        study = open_study(settings, ws)
        fail_dead_trials(study, settings)
    done = len(study.get_trials(deepcopy=False))
    study.sampler = _sampler(settings.optimize, worker, done)
    if done >= target:
        return
    study.optimize(
        objective_for(settings, ws),
        n_trials=target - done,
        timeout=timeout_s,
        catch=(TooFewTrades, TrialError),
        callbacks=[optuna.study.MaxTrialsCallback(target, states=None), *(callbacks or [])],
        gc_after_trial=True,
    )


def complete_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def trial_returns_matrix(trials: list[optuna.trial.FrozenTrial]) -> tuple[np.ndarray, list[int]]:
    """The trials' per-bar returns on the bars they all share (periods x trials): every
    trial's backtest ends at the search part's last bar, and starts at its first
    prediction (which moves with the label horizon), so the common bars are the tail."""
    series = [unpack_returns(t.user_attrs.get("bar_returns")) for t in trials]
    if not series:
        return np.empty((0, 0)), []
    length = min(len(r) for r in series)
    return np.column_stack([r[len(r) - length :] for r in series]), [t.number for t in trials]
