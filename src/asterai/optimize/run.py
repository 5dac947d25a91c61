"""``asterai optimize``: run the study's trials (in one process or several), then grade
the best one honestly: on the final window it never saw, beside the defaults there,
deflated by the number of trials, with the probability that the search overfitted.

Outputs in ``data/optimization/{study}/`` (each written atomically): ``best_params.json``
(the settings ``asterai train --params`` takes), ``trials.csv`` and ``report.html``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing as mp
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from asterai import atomic
from asterai.config import Settings, load_settings
from asterai.intervals import iso_ms
from asterai.optimize import space, stats
from asterai.optimize.study import (
    complete_trials,
    fail_dead_trials,
    open_study,
    run_worker,
    storage_for,
    trial_returns,
    trial_returns_matrix,
    trial_settings_for,
)
from asterai.optimize.trial import evaluate
from asterai.optimize.workspace import OptimizeError, OptimizeUsageError, Workspace
from asterai.paths import DataPaths

log = logging.getLogger(__name__)

PARAMS_KIND = "asterai.best_params"
#: The study's user attributes that record each look at the final window.
LOOK_PREFIX = "final_window_look:"


@dataclass(slots=True)
class OptimizeResult:
    study: str
    folder: Path
    best_params: dict[str, Any]
    summary: dict[str, Any]
    interrupted: bool = False


def max_horizon(settings: Settings) -> int:
    opt = settings.optimize
    if "label_horizon" in space.searched(opt, opt.model):
        return int(opt.space.label_horizon.high)
    return settings.features.label_horizon


def _worker_main(root: str, overrides: dict[str, Any], target: int, worker: int,
                 timeout_s: float | None) -> None:  # fmt: skip
    """One process of ``--workers N``: its own workspace, the shared study."""
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    settings = load_settings(root, **overrides)
    if settings.train.threads:
        import torch

        torch.set_num_threads(settings.train.threads)
    ws = Workspace(settings, settings.optimize.model, max_horizon(settings))
    run_worker(settings, ws, target, worker, timeout_s)


def _overrides(settings: Settings) -> dict[str, Any]:
    """What a worker process rebuilds its settings from (only what was set; never
    written anywhere: it may hold the storage's password)."""
    return settings.given_dict()


def run_optimize(
    settings: Settings, progress: Callable[[int, int, float | None], None] | None = None
) -> OptimizeResult:
    """Add ``optimize.trials`` trials to the study and write its outputs."""
    opt = settings.optimize
    space.check(settings)  # a range the settings refuse: the error, before any work
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = storage_for(settings)  # an unreachable server: the error, before any work
    ws = Workspace(settings, opt.model, max_horizon(settings))
    study = open_study(settings, ws, storage=storage)
    fail_dead_trials(study, settings)
    before = len(study.get_trials(deepcopy=False))
    target = before + opt.trials

    def tick(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        if progress is not None:
            done = len(study.get_trials(deepcopy=False)) - before
            best = complete_trials(study)
            progress(done, opt.trials, max(t.value for t in best) if best else None)

    try:
        if opt.workers == 1:
            run_worker(settings, ws, target, 0, opt.timeout_s, callbacks=[tick], study=study)
        else:
            _run_processes(settings, target, study, before, progress)
    except KeyboardInterrupt:
        # a clean stop: the trials so far listed, no grading (that would train twice more
        # and look at the final window); a rerun continues the study and grades it
        study = open_study(settings, ws, storage=storage)
        fail_dead_trials(study, settings)
        folder = DataPaths.at(settings.data_root).study(opt.study)
        write_trials_csv(folder / "trials.csv", study.get_trials(deepcopy=False))
        log.warning("interrupted: the study keeps every finished trial; a rerun continues it")
        raise
    study = open_study(settings, ws, storage=storage)
    fail_dead_trials(study, settings)
    return finish(settings, ws, study)


def worker_threads(settings: Settings) -> int:
    """Each worker's share of the cores (``train.threads`` when set)."""
    if settings.train.threads:
        return settings.train.threads
    return max(1, (os.cpu_count() or 1) // settings.optimize.workers)


def _run_processes(settings, target, study, before, progress) -> None:
    ctx = mp.get_context("spawn")
    opt = settings.optimize
    overrides = _overrides(settings)
    overrides.setdefault("train", {})["threads"] = worker_threads(settings)
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(str(settings.data_root), overrides, target, i, opt.timeout_s),
            daemon=False,
        )
        for i in range(opt.workers)
    ]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(2.0)
            if progress is not None:
                trials = study.get_trials(deepcopy=False)
                done = [t for t in trials[before:] if t.state.is_finished()]
                best = [t.value for t in trials if t.state == TrialState.COMPLETE]
                progress(len(done), opt.trials, max(best) if best else None)
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        raise
    finally:
        for p in procs:
            p.join()
    bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if bad:
        log.warning("%d worker(s) exited with an error (codes %s)", len(bad), bad)


def finish(
    settings: Settings, ws: Workspace, study: optuna.Study, *, interrupted: bool = False
) -> OptimizeResult:
    """Grade the study's best trial and write the outputs."""
    opt = settings.optimize
    folder = DataPaths.at(settings.data_root).study(opt.study)
    trials = study.get_trials(deepcopy=False)
    done = complete_trials(study)
    write_trials_csv(folder / "trials.csv", trials)
    if not done:
        raise OptimizeError(
            f"no trial of study {opt.study!r} completed ({len(trials)} tried: see "
            f"{folder / 'trials.csv'}, column failure): widen the space, lower "
            "optimize.min_trades, or collect more history"
        )
    best = study.best_trial
    best_settings = trial_settings_for(
        settings.data_root, settings.given_dict(), best.params, ws.model
    )
    final_best = evaluate(best_settings, ws, final=True)
    final_default = evaluate(settings, ws, final=True)
    # one attribute per look (several machines may look at once: none is lost)
    look = {"at": iso_ms(int(time.time() * 1000)), "best_trial": best.number,
            "trials": len(trials), "host": socket.gethostname(), "pid": os.getpid()}  # fmt: skip
    study.set_user_attr(f"{LOOK_PREFIX}{time.time_ns()}-{os.getpid()}", look)
    looks = sorted(
        (v for k, v in study.user_attrs.items() if k.startswith(LOOK_PREFIX)),
        key=lambda v: v["at"],
    )

    # every trial tried counts in the deflation, not only those that finished: a pruned
    # trial with its returns up to the fold it was stopped at, a failed one with its own
    tried = [t for t in trials if t.user_attrs.get("daily_returns") is not None]
    sharpes = [stats.per_period_sharpe(trial_returns(t, "daily_returns")) for t in tried]
    dsr = stats.deflated_sharpe(trial_returns(best, "daily_returns"), sharpes, trials=len(tried))
    dsr["complete_trials"] = len(done)
    dsr["selected_by"] = opt.objective
    if opt.objective != "sharpe":
        dsr["note"] = (
            f"the best trial was chosen by {opt.objective}, not by its Sharpe: the "
            "deflation assumes the best Sharpe of the trials was chosen, so read it as a rough guide"
        )
    matrix, _ = trial_returns_matrix(done)
    pbo = (
        stats.probability_of_overfitting(matrix, opt.pbo_blocks)
        if matrix.size
        else {"pbo": None, "reason": "no returns"}
    )
    summary = {
        "study": opt.study,
        "model": ws.model,
        "objective": opt.objective,
        "trials": {
            "total": len(trials),
            **{
                s.name.lower(): sum(t.state == s for t in trials)
                for s in (
                    TrialState.COMPLETE,
                    TrialState.PRUNED,
                    TrialState.FAIL,
                    TrialState.RUNNING,
                )
            },
        },  # fmt: skip
        "split": ws.split.to_json(),
        "best_trial": best.number,
        "search_best": {"score": best.value, **best.user_attrs.get("figures", {})},
        "final_window": {
            "best_params": {"score": final_best.score, **final_best.figures},
            "default_params": {"score": final_default.score, **final_default.figures},
            "evaluations": looks,
        },
        "deflated_sharpe": dsr,
        "deflated_sharpe_sentence": stats.luck_sentence(dsr),
        "pbo": pbo,
        "space": space.describe(opt, ws.model),
        "storage": "journal file" if opt.storage is None else "postgresql",
        "interrupted": interrupted,
    }
    params_doc = {
        "kind": PARAMS_KIND,
        "study": opt.study,
        "model": ws.model,
        "best_trial": best.number,
        "objective": opt.objective,
        "search_score": best.value,
        "params": best.params,
        "settings": space.overrides(best.params, ws.model),
        "final_window": summary["final_window"]["best_params"],
        "deflated_sharpe_ratio": dsr["deflated_sharpe_ratio"],
        "note": "parameters that scored best on the search part of the history; the "
        "final window and the deflated Sharpe ratio say how much of that is luck",
    }
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_json(folder / "best_params.json", params_doc)
    atomic.write_json(folder / "summary.json", summary)
    from asterai.optimize.report import write_report

    write_report(folder / "report.html", study, summary)
    return OptimizeResult(opt.study, folder, params_doc, summary, interrupted)


CSV_FIXED = ("number", "state", "value", "seconds", "trades", "sharpe", "total_return",
             "mean_fold_ic", "median_trees", "failure", "worker")  # fmt: skip


def write_trials_csv(path: Path, trials: list[optuna.trial.FrozenTrial]) -> None:
    names = sorted({k for t in trials for k in t.params})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([*CSV_FIXED, *names])
    for t in trials:
        f = t.user_attrs.get("figures", {})
        worker = t.user_attrs.get("worker") or {}
        w.writerow(
            [
                t.number,
                t.state.name,
                t.value,
                t.user_attrs.get("seconds"),
                f.get("trades"),
                f.get("sharpe"),
                f.get("total_return"),
                f.get("mean_fold_ic"),
                f.get("median_trees"),
                t.user_attrs.get("failure", ""),
                f"{worker.get('host', '')}:{worker.get('pid', '')}" if worker else "",
                *(t.params.get(n) for n in names),
            ]  # fmt: skip
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, buf.getvalue())


def read_params(path: str | Path) -> dict[str, Any]:
    """``best_params.json``'s settings, checked (for ``asterai train --params``)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise OptimizeUsageError(f"{p} does not exist: run `asterai optimize` first") from None
    except json.JSONDecodeError as err:
        raise OptimizeUsageError(f"{p}: not valid JSON ({err})") from err
    if not isinstance(doc, dict) or doc.get("kind") != PARAMS_KIND or "settings" not in doc:
        raise OptimizeUsageError(f"{p} is not a best_params.json written by `asterai optimize`")
    return doc
