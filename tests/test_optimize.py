"""The strategy search on the real recording: no trial sees the final window, a trial
measures what training and the backtest would, the statistics are the papers', and the
study survives several workers, a resume and a killed worker."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import needs_chromium, rendered_dom
from scipy.stats import norm

from asterai.config import load_settings
from asterai.optimize import stats
from asterai.optimize.workspace import LABEL_COLUMNS, Workspace, relabelled
from asterai.paths import DataPaths

#: Small trials: two folds, a one-epoch LSTM, few trees, three parameters searched.
TRAIN = {"folds": 2, "lstm": {"epochs": 1, "hidden_size": 8}, "xgboost": {"n_estimators": 30}}
OPTIMIZE = {
    "search": ["max_depth", "learning_rate", "threshold", "label_horizon"],
    "space": {"label_horizon": {"low": 12, "high": 36, "step": 12}},
    "min_trades": 0,
    "startup_trials": 2,
}


def small(root: Path, **optimize) -> object:
    # both sides: the search's machinery needs trials that trade on a month of data
    # (longs alone, the default, leave the small trials without a trade to score)
    return load_settings(
        root, train=TRAIN, optimize={**OPTIMIZE, **optimize}, strategy={"sides": "both"}
    )


@pytest.fixture(scope="module")
def prepared(featured_root) -> Path:
    return featured_root  # shared: the tests copy its data


@pytest.fixture
def root(prepared, tmp_path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(prepared / "data", copy / "data")
    return copy


@pytest.fixture(scope="module")
def searched(prepared, tmp_path_factory):
    """A finished study of 4 trials on the recording (one worker)."""
    from asterai.optimize.run import run_optimize

    root = tmp_path_factory.mktemp("searched")
    shutil.copytree(prepared / "data", root / "data")
    settings = small(root, trials=4)
    return root, settings, run_optimize(settings)


def _study(root: Path, name: str = "confluence") -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend

    path = DataPaths.at(root).study(name) / "journal.log"
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return optuna.load_study(study_name=name, storage=storage)


# -- the statistics --------------------------------------------------------------------


def test_the_deflated_sharpe_ratio_is_the_papers() -> None:
    from asterai.backtest.metrics import psr_from_moments

    # Bailey and López de Prado (2014), section 4's example: 100 trials whose annualised
    # Sharpes vary by 1/2, a best of 2.5 annualised over 1,250 days, skew -3, kurtosis 10:
    # DSR 0.9004 (their figure), through the code the search and the backtest use
    sr0 = stats.expected_max_sharpe(0.5 / 250, 100)
    assert sr0 * math.sqrt(250) == pytest.approx(1.7894, abs=1e-3)
    dsr = psr_from_moments(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=1e-4)
    # one trial: nothing to deflate by; no spread among trials: neither
    assert stats.expected_max_sharpe(0.5 / 250, 1) == 0.0
    assert stats.expected_max_sharpe(0.0, 100) == 0.0


def test_the_deflated_sharpe_ratio_matches_a_hand_computation(recording) -> None:
    # the best trial's returns: BTCUSDT's real daily returns in the recording
    bars = recording.klines[("BTCUSDT", "1h")]
    close = pd.Series(bars.close.astype(float),
                      index=pd.to_datetime(bars.open_time, unit="ms", utc=True))  # fmt: skip
    r = close.resample("1D").last().pct_change().dropna().to_numpy()
    assert len(r) > 20
    sharpes = [0.21, -0.05, 0.11, 0.02, -0.13, 0.08, float(r.mean() / r.std(ddof=1))]
    out = stats.deflated_sharpe(r, sharpes)
    # by hand, from the formulas
    n, v = len(sharpes), float(np.var(sharpes, ddof=1))
    g = 0.5772156649015329
    sr0 = math.sqrt(v) * ((1 - g) * norm.ppf(1 - 1 / n) + g * norm.ppf(1 - 1 / (n * math.e)))
    sr = r.mean() / r.std(ddof=1)
    z = (r - r.mean()) / r.std(ddof=0)
    skew, kurt = float(np.mean(z**3)), float(np.mean(z**4))
    want = norm.cdf(
        (sr - sr0) * math.sqrt(len(r) - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    )
    assert out["expected_max_sharpe"] == pytest.approx(sr0, rel=1e-12)
    assert out["deflated_sharpe_ratio"] == pytest.approx(want, rel=1e-9)
    assert out["trials"] == n and out["sharpe_variance"] == pytest.approx(v)
    # more trials of the same spread: a higher bar, a lower DSR
    more = stats.deflated_sharpe(r, sharpes * 10)
    assert more["expected_max_sharpe"] > out["expected_max_sharpe"]
    assert more["deflated_sharpe_ratio"] < out["deflated_sharpe_ratio"]
    assert "not distinguishable from luck" in stats.luck_sentence(more)


def test_the_probability_of_overfitting_follows_cscv(recording) -> None:
    bars = recording.klines[("ETHUSDT", "1h")]
    r = np.diff(np.log(bars.close.astype(float)))[:400]
    # a trial that is the other one plus a constant wins in every half: never overfit
    dominated = np.column_stack([r, r - 1e-4])
    assert stats.probability_of_overfitting(dominated, 4)["pbo"] == 0.0
    # two trials, each the better one in the blocks where the other is worse: whichever
    # wins in sample loses out of sample, in every split
    half = len(r) // 2
    a = np.concatenate([np.abs(r[:half]), -np.abs(r[half:])])
    b = np.concatenate([-np.abs(r[:half]), np.abs(r[half:])])
    out = stats.probability_of_overfitting(np.column_stack([a, b]), 2)
    assert out["splits"] == 2 and out["pbo"] == 1.0
    # C(8, 4) = 70 splits of the real hourly returns of three unrelated "trials"
    three = np.column_stack([r, -r, np.roll(r, 7)])
    out = stats.probability_of_overfitting(three, 8)
    assert out["splits"] == 70 and 0.0 <= out["pbo"] <= 1.0
    with pytest.raises(ValueError, match="even"):
        stats.probability_of_overfitting(three, 3)


# -- the final window and the trials ---------------------------------------------------


def test_relabelling_reproduces_the_features_stage(root) -> None:
    from asterai.features.build import run_features

    settings = load_settings(root)
    ws = Workspace(settings, "confluence", settings.features.label_horizon)
    table, _ = ws.table
    same, _ = relabelled(ws.table, ws.label_inputs(), settings.features)
    for name in LABEL_COLUMNS:
        np.testing.assert_array_equal(same.column(name).to_numpy(), table.column(name).to_numpy())
    # another horizon and other barriers: the label columns of a feature table that
    # the features stage itself built with them, bit for bit; every feature column as it was
    other = load_settings(root, features={"label_horizon": 12, "tp_atr": 2.5, "sl_atr": 1.5})
    changed, meta = relabelled(ws.table, ws.label_inputs(), other.features)
    run_features(other, plots=False)
    rebuilt = Workspace(other, "confluence", 12).table[0]
    for name in LABEL_COLUMNS:
        np.testing.assert_array_equal(
            changed.column(name).to_numpy(), rebuilt.column(name).to_numpy()
        )
    assert not np.array_equal(
        changed.column("label_fwd_ret").to_numpy(), table.column("label_fwd_ret").to_numpy(),
        equal_nan=True,
    )  # fmt: skip
    assert meta["settings"]["label_horizon"] == 12
    assert changed.column("rsi_14").equals(table.column("rsi_14"))


def test_a_trial_rebuilds_only_what_was_set(root) -> None:
    from asterai.optimize.study import trial_settings_for

    base = load_settings(root, optimize={"storage": "postgresql://u:s3cret@db/studies"})
    trial = trial_settings_for(root, base.given_dict(), {"max_depth": 3}, "confluence")
    assert trial.train.xgboost.max_depth == 3
    # train.folds stays a default, so it may still shrink with a short history as
    # `asterai train`'s does, instead of turning into an explicit request
    assert "folds" not in trial.train.model_fields_set
    # the storage's password: in what a worker rebuilds from, never in what is written
    assert "s3cret" in json.dumps(base.given_dict())
    assert "s3cret" not in json.dumps(base.public_dict())
    assert base.public_dict()["optimize"]["storage"] == "postgresql://u:***@db/studies"


def test_no_trial_sees_a_bar_of_the_final_window(searched) -> None:
    root, settings, result = searched
    split = result.summary["split"]
    final_start, search_end = split["final_start_ms"], split["search_end_ms"]
    # the gap covers the longest horizon the space allows, plus one, plus the embargo
    assert (final_start - search_end) // 3_600_000 == split["gap_bars"]
    assert split["max_horizon"] == 36  # the longest horizon searched, not the default 24
    assert split["gap_bars"] == split["max_horizon"] + 1 + settings.train.embargo_bars
    trials = [t for t in _study(root).get_trials() if t.user_attrs.get("folds")]
    assert len(trials) >= 3
    for t in trials:
        for fold in t.user_attrs["folds"]:
            # every fit, validation and test row, and every bar its label reads
            assert fold["train_start_ms"] < fold["test_start_ms"] <= fold["test_end_ms"]
            assert fold["test_end_ms"] <= search_end
            assert fold["label_reach_ms"] < final_start
        assert t.user_attrs["figures"]["last_bar"] <= search_end  # the backtest stops there
    # the final window's evaluations start at the final window, after the search's end
    for key in ("best_params", "default_params"):
        assert result.summary["final_window"][key]["first_bar"] == final_start


def test_a_trials_backtest_is_the_backtest_stages(root) -> None:
    from asterai.backtest.engine import backtest_model
    from asterai.models.train import walk_forward
    from asterai.optimize.trial import backtest_figures

    settings = load_settings(root, train=TRAIN)
    walk_forward("confluence", settings)
    preds = pd.read_parquet(DataPaths.at(root).predictions("confluence"))
    stage = backtest_model(settings, "confluence").metrics
    ws = Workspace(settings, "confluence", settings.features.label_horizon)
    figures, daily, _, _ = backtest_figures(settings, ws, preds, int(ws.market.times[-1]))
    assert figures["trades"] == stage["trades"] > 0
    assert figures["total_return"] == pytest.approx(stage["total_return"], abs=1e-12)
    assert figures["sharpe"] == pytest.approx(stage["sharpe_ratio"], abs=1e-12)
    # and the walk-forward a trial runs is training's own: the same predictions
    again = walk_forward("confluence", settings, panel=ws.panel(settings), write=False)
    pd.testing.assert_frame_equal(
        again.predictions.reset_index(drop=True), preds.reset_index(drop=True),
        check_dtype=False,
    )  # fmt: skip


# -- the study ---------------------------------------------------------------------------


def test_the_study_writes_its_outputs_and_a_resume_continues_it(searched) -> None:
    from asterai.optimize.run import run_optimize

    root, settings, result = searched
    folder = DataPaths.at(root).study("confluence")
    doc = json.loads((folder / "best_params.json").read_text())
    study = _study(root)
    assert doc["best_trial"] == study.best_trial.number
    assert doc["params"] == study.best_trial.params
    assert doc["settings"]["train"]["xgboost"]["max_depth"] == doc["params"]["max_depth"]
    trials = pd.read_csv(folder / "trials.csv")
    assert list(trials["number"]) == list(range(4))
    summary = json.loads((folder / "summary.json").read_text())
    # the deflation counts every trial tried (pruned and failed ones with their returns
    # so far), not only the ones that completed
    complete = int((trials["state"] == "COMPLETE").sum())
    assert summary["deflated_sharpe"]["complete_trials"] == complete
    assert complete < summary["deflated_sharpe"]["trials"] <= len(trials)
    assert "distinguishable from luck" in summary["deflated_sharpe_sentence"]
    # features rebuilt from the same bars (new files, new timestamps): the same data,
    # and a rerun adds its trials to the same study, numbered on
    from asterai.features.build import run_features

    run_features(load_settings(root), plots=False)
    more = run_optimize(small(root, trials=2))
    numbers = [t.number for t in _study(root).get_trials()]
    assert numbers == list(range(6))
    assert more.summary["trials"]["total"] == 6
    assert len(more.summary["final_window"]["evaluations"]) == 2  # each look is recorded


def test_a_study_made_under_other_settings_is_refused(searched) -> None:
    from asterai.optimize.run import run_optimize
    from asterai.optimize.workspace import OptimizeUsageError

    root, _, _ = searched
    other = load_settings(
        root, train=TRAIN, strategy={"risk_per_trade": 0.02}, optimize={**OPTIMIZE, "trials": 1}
    )
    before = len(_study(root).get_trials())
    with pytest.raises(OptimizeUsageError, match="settings that shape a trial"):
        run_optimize(other)
    with pytest.raises(OptimizeUsageError, match="searched space"):
        run_optimize(small(root, trials=1, search=["max_depth"]))
    assert len(_study(root).get_trials()) == before


def test_a_trials_stored_returns_are_its_backtests_exactly_and_compact(searched) -> None:
    from asterai.optimize.study import pack_returns, trial_returns, unpack_returns

    root, _, _ = searched
    done = [t for t in _study(root).get_trials() if t.state.name == "COMPLETE"]
    assert done
    for t in done:
        bars = trial_returns(t, "bar_returns")
        # the per-bar returns compound to the trial's reported total return
        assert np.prod(1 + bars) - 1 == pytest.approx(t.user_attrs["figures"]["total_return"])
        packed = t.user_attrs["bar_returns"]
        assert len(packed) < len(json.dumps(bars.tolist()))  # smaller than the plain list
        assert unpack_returns(bars.tolist()).tobytes() == bars.tobytes()  # older studies
        assert unpack_returns(pack_returns(bars)).tobytes() == bars.tobytes()  # lossless
    with pytest.raises(Exception, match="unknown format"):
        unpack_returns("f4x:AAAA")


def test_two_workers_complete_one_study_on_the_journal_file(root) -> None:
    from asterai.optimize.run import run_optimize

    result = run_optimize(small(root, trials=4, workers=2, study="pair"))
    study = _study(root, "pair")
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) >= 4  # each trial recorded once
    assert all(t.state.is_finished() for t in trials)
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes did them
    share = max(1, (os.cpu_count() or 1) // 2)  # XGBoost's threads: each its share
    assert {t.user_attrs["worker"]["threads"] for t in trials} == {share}
    # the best the run reports is the one a reader of the storage sees
    assert result.summary["best_trial"] == study.best_trial.number


WORKER = """
import sys
from asterai.config import load_settings
from asterai.optimize.run import max_horizon
from asterai.optimize.study import run_worker
from asterai.optimize.workspace import Workspace
settings = load_settings(sys.argv[1], train={train}, optimize={optimize})
ws = Workspace(settings, "confluence", max_horizon(settings))
run_worker(settings, ws, 50)
"""


def test_a_worker_killed_mid_trial_leaves_the_study_consistent(root) -> None:
    from asterai.optimize.run import max_horizon, run_optimize
    from asterai.optimize.study import open_study

    # the study made; a worker process then starts trials on it (thresholds that trade)
    killed = {**OPTIMIZE, "study": "killed",
              "space": {**OPTIMIZE["space"], "threshold": {"low": 0.5, "high": 0.55}}}  # fmt: skip
    settings = load_settings(root, train=TRAIN, optimize={**killed, "trials": 1})
    open_study(settings, Workspace(settings, "confluence", max_horizon(settings)))
    code = WORKER.format(train=TRAIN, optimize=killed)
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)])
    try:
        deadline = time.time() + 120
        running = []
        while time.time() < deadline and not running:
            time.sleep(0.2)
            running = [
                t for t in _study(root, "killed").get_trials()
                if t.state == optuna.trial.TrialState.RUNNING
                and (t.user_attrs.get("worker") or {}).get("pid") == proc.pid
            ]  # fmt: skip
        assert running, "the worker never started a trial"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    victim = running[0].number
    result = run_optimize(settings)
    trials = {t.number: t for t in _study(root, "killed").get_trials()}
    assert trials[victim].state == optuna.trial.TrialState.FAIL
    assert trials[victim].user_attrs["failure"] == "its worker died"
    assert all(t.state.is_finished() for t in trials.values())
    complete = [n for n, t in trials.items() if t.state == optuna.trial.TrialState.COMPLETE]
    assert victim not in complete
    assert result.summary["trials"]["complete"] == len(complete)
    assert result.summary["trials"]["running"] == 0


# -- the command line ------------------------------------------------------------------


def _cli(root: Path, *args: str, toml: str | None = None) -> subprocess.CompletedProcess:
    if toml is not None:
        (root / "asterai.toml").write_text(toml)
    return subprocess.run(
        [sys.executable, "-m", "asterai.cli", *args, "--data-root", str(root)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("toml", "args", "message"),
    [
        ("[optimize]\nsearch = ['depth']\n", (), "unknown parameter(s) ['depth']"),
        ("[optimize.space.max_depth]\nlow = 6\nhigh = 3\n", (), "empty or inverted range"),
        ("[optimize.space.threshold]\nlow = 0.5\nhigh = 1.5\n", (), "strictly inside 0..1"),
        ("", ("--storage", "postgresql://asterai:secret@127.0.0.1:9/none"), "cannot reach"),
        ("", ("--storage", "sqlite:///study.db"), "SQLite is not offered"),
    ],
)
def test_bad_settings_exit_2_and_write_nothing(root, toml, args, message) -> None:
    out = _cli(root, "optimize", "--trials", "1", *args, toml=toml)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "secret" not in out.stderr + out.stdout  # a password never reaches a log
    assert not DataPaths.at(root).optimization.exists()


def test_train_takes_the_searchs_parameters(searched, tmp_path) -> None:
    root, _, _ = searched
    params = DataPaths.at(root).study("confluence") / "best_params.json"
    doc = json.loads(params.read_text())
    copy = tmp_path / "trained"
    shutil.copytree(root / "data", copy / "data")
    (copy / "asterai.toml").write_text(
        "[train]\nfolds = 2\n[train.lstm]\nepochs = 1\nhidden_size = 8\n"
    )
    # the best trial's horizon is not the feature table's: training refuses until the
    # features are rebuilt with the same parameters
    out = _cli(copy, "features", "--no-plots", "--params", str(params))
    assert out.returncode == 0, out.stderr
    out = _cli(copy, "train", "confluence", "--params", str(params))
    assert out.returncode == 0, out.stderr
    out = _cli(copy, "train", "aster-native", "--params", str(params))
    assert out.returncode == 2 and "not the aster_native model's" in out.stderr
    config = json.loads(
        (DataPaths.at(copy).models("confluence") / "ensemble_config.json").read_text()
    )
    assert str(params.resolve()) in config["params_from"]
    assert config["threshold"] == pytest.approx(doc["params"]["threshold"])
    member = config["members"]["xgboost"]["settings"]
    assert member["max_depth"] == doc["params"]["max_depth"]
    assert member["learning_rate"] == pytest.approx(doc["params"]["learning_rate"])
    # parameters that move the labels need the features rebuilt with them first
    moved = tmp_path / "moved.json"
    other = 12 if doc["params"]["label_horizon"] != 12 else 24
    moved.write_text(json.dumps({**doc, "settings": {"features": {"label_horizon": other}}}))
    out = _cli(copy, "train", "confluence", "--params", str(moved))
    assert out.returncode == 1 and "built with other labels" in out.stderr
    out = _cli(copy, "train", "confluence", "--params", str(tmp_path / "missing.json"))
    assert out.returncode == 2 and "does not exist" in out.stderr


@needs_chromium
def test_the_report_renders_whole_in_a_real_browser(searched) -> None:
    root, _, _ = searched
    folder = DataPaths.at(root).study("confluence")
    summary = json.loads((folder / "summary.json").read_text())
    dom = rendered_dom((folder / "report.html").resolve().as_uri())
    assert 'data-charts="2/2"' in dom  # the history and the importances, decoded
    verdict = dom.index('class="verdict')
    assert verdict < dom.index("<h2>")
    assert summary["deflated_sharpe_sentence"] in dom
    for table in ("comparison", "dsr", "best-params", "trials"):
        assert f'id="{table}"' in dom


# -- several machines: one study on PostgreSQL -------------------------------------------


def _postgres_url() -> str:
    url = os.environ.get("ASTERAI_TEST_POSTGRES_URL")
    if not url:
        pytest.skip(
            'no PostgreSQL for the shared-study test: run `eval "$(.ci/postgres start)"` '
            "(Debian's postgresql package; .ci/run does it) or set ASTERAI_TEST_POSTGRES_URL"
        )
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=5).close()
    except Exception as err:
        pytest.skip(f"ASTERAI_TEST_POSTGRES_URL does not answer ({type(err).__name__}: {err})")
    return url


def test_two_workers_complete_one_study_on_postgresql(root) -> None:
    from asterai.optimize.run import run_optimize

    url = _postgres_url()
    name = f"pg-{os.getpid()}-{int(time.time())}"
    result = run_optimize(small(root, trials=4, workers=2, study=name, storage=url))
    # a reader of the storage (another machine would be one) sees the same study
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) >= 4
    assert all(t.state.is_finished() for t in trials)
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2
    assert result.summary["best_trial"] == study.best_trial.number
    assert result.summary["storage"] == "postgresql"
    # the journal file is not used, and the password-free URL is all a report could show
    assert not (DataPaths.at(root).study(name) / "journal.log").exists()
    # a rerun on another "machine" (a fresh process) continues the same study
    run_optimize(small(root, trials=1, study=name, storage=url))
    assert len(optuna.load_study(study_name=name, storage=url).get_trials()) == len(trials) + 1


def test_the_pipeline_runs_the_search_only_when_asked(root) -> None:
    from asterai.pipeline.runner import run_pipeline, select_stages
    from asterai.pipeline.stages import STAGES

    assert select_stages(None, None) == list(STAGES)  # off by default
    assert select_stages(None, None, optimize=True) == [*STAGES, "optimization"]
    assert select_stages("optimization", None) == ["optimization"]
    assert select_stages("backtesting", "optimization") == ["backtesting", "optimization"]
    settings = small(root, trials=2)
    first = run_pipeline(settings, start_from="optimization")
    assert first.ok, first.failure
    (stage,) = first.stages
    assert stage["name"] == "optimization" and stage["status"] == "ran"
    assert stage["numbers"]["trials"]["total"] == 2
    assert "distinguishable from luck" in stage["summary"]
    # current: the next run skips it; a changed [optimize] setting runs it again
    again = run_pipeline(settings, start_from="optimization")
    assert again.stages[0]["status"] == "skipped"
    more = run_pipeline(small(root, trials=3), start_from="optimization")
    assert more.stages[0]["status"] == "ran"
    assert more.stages[0]["numbers"]["trials"]["total"] == 5


def test_ctrl_c_stops_cleanly_and_a_rerun_continues(root) -> None:
    (root / "asterai.toml").write_text(
        "[train]\nfolds = 2\n[train.lstm]\nepochs = 1\nhidden_size = 8\n"
        "[train.xgboost]\nn_estimators = 30\n"
        "[optimize]\nmin_trades = 0\nstartup_trials = 2\nsearch = ['max_depth', 'threshold']\n"
        "[optimize.space.threshold]\nlow = 0.5\nhigh = 0.55\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "asterai.cli", "optimize", "--trials", "50", "--data-root",
         str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 180
    finished = 0
    while time.time() < deadline and finished < 2:
        time.sleep(0.5)
        try:
            finished = sum(t.state.is_finished() for t in _study(root).get_trials())
        except (KeyError, FileNotFoundError):  # no study yet
            continue
    assert finished >= 2, "no trial finished in time"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    trials = _study(root).get_trials()
    assert all(t.state.is_finished() for t in trials)  # the interrupted one: FAIL, not RUNNING
    listed = pd.read_csv(DataPaths.at(root).study("confluence") / "trials.csv")
    assert list(listed["number"]) == [t.number for t in trials]
    assert not (DataPaths.at(root).study("confluence") / "report.html").exists()  # no grading
    out = _cli(root, "optimize", "--trials", "1")
    assert out.returncode == 0, out.stderr
    assert [t.number for t in _study(root).get_trials()] == list(range(len(trials) + 1))


def test_a_reused_process_id_does_not_keep_a_dead_trial_running(tmp_path) -> None:
    import socket

    from optuna.storages.journal import JournalFileBackend

    from asterai.optimize.study import fail_dead_trials, process_started

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "j.log")))
    study = optuna.create_study(study_name="s", storage=storage)
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    alive = study.ask()
    alive.set_user_attr("worker", {**me, "started": process_started(os.getpid())})
    # the same pid, another process: the one that ran this trial started at another time
    reused = study.ask()
    reused.set_user_attr("worker", {**me, "started": process_started(os.getpid()) - 1})
    assert fail_dead_trials(study) == [reused.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[alive.number] == optuna.trial.TrialState.RUNNING
    assert states[reused.number] == optuna.trial.TrialState.FAIL
