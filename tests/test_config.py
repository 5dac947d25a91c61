"""Settings: documented defaults, asterai.toml, ASTERAI_* variables, command line."""

from __future__ import annotations

import pytest

from asterai.config import REAL_EXCHANGE_URL, ConfigError, load_settings


def test_defaults_are_the_documented_strategy(tmp_path, monkeypatch) -> None:
    for var in ("ASTERAI_BASE_URL", "ASTERAI_DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings(tmp_path)
    assert s.base_url == REAL_EXCHANGE_URL == "https://fapi.asterdex.com"
    assert (s.strategy.capital, s.strategy.risk_per_trade, s.strategy.max_positions) == (
        50.0,
        0.01,
        5,
    )
    assert (s.strategy.maker_fee, s.strategy.taker_fee) == (0.0005, 0.00075)
    assert s.collect.intervals == ("1h", "4h", "1d") and s.collect.days == 180
    assert s.quality.max_missing_share == 0.05
    assert (s.ensemble.xgboost_weight, s.ensemble.lstm_weight) == (0.6, 0.4)
    assert s.data_root == tmp_path.resolve()


def test_toml_then_environment_then_command_line(tmp_path, monkeypatch) -> None:
    (tmp_path / "asterai.toml").write_text(
        'base_url = "http://127.0.0.1:1"\n[collect]\ndays = 30\nintervals = ["1h"]\n[exchange]\nconcurrency = 2\n'
    )
    s = load_settings(tmp_path)
    assert (s.base_url, s.collect.days, s.collect.intervals, s.exchange.concurrency) == (
        "http://127.0.0.1:1",
        30,
        ("1h",),
        2,
    )
    monkeypatch.setenv("ASTERAI_COLLECT__DAYS", "7")
    monkeypatch.setenv("ASTERAI_BASE_URL", "http://127.0.0.1:2/")
    s = load_settings(tmp_path)
    assert (s.base_url, s.collect.days, s.collect.intervals) == ("http://127.0.0.1:2", 7, ("1h",))
    s = load_settings(
        tmp_path, base_url="http://127.0.0.1:3", collect={"days": 3, "intervals": None}
    )
    assert (s.base_url, s.collect.days, s.collect.intervals) == ("http://127.0.0.1:3", 3, ("1h",))


def test_settings_are_frozen(tmp_path) -> None:
    s = load_settings(tmp_path)
    with pytest.raises(Exception, match="frozen"):
        s.collect.days = 1  # type: ignore[misc]


def test_bad_values_name_the_file_and_the_key(tmp_path) -> None:
    (tmp_path / "asterai.toml").write_text("[collect]\ndays = -4\n")
    with pytest.raises(ConfigError, match=r"asterai.toml(.|\n)*collect.days"):
        load_settings(tmp_path)
    (tmp_path / "asterai.toml").write_text("[collect]\nintervals = ['1h', '7h']\n")
    with pytest.raises(ConfigError, match="unknown interval '7h'"):
        load_settings(tmp_path)
    (tmp_path / "asterai.toml").write_text("[colect]\ndays = 4\n")
    with pytest.raises(ConfigError, match="colect"):
        load_settings(tmp_path)
    (tmp_path / "asterai.toml").write_text("days = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(tmp_path)


def test_api_keys_come_from_the_environment_and_never_reach_reports(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ASTERAI_API_KEY", "k-very-secret")
    monkeypatch.setenv("ASTERAI_API_SECRET", "s-very-secret")
    s = load_settings(tmp_path)
    assert s.api_key.get_secret_value() == "k-very-secret"
    dumped = str(s.public_dict()) + repr(s) + s.model_dump_json()
    assert "very-secret" not in dumped


def test_credentials_in_the_base_url_are_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="must not carry credentials"):
        load_settings(tmp_path, base_url="http://user:secretpw@127.0.0.1:8765")


def test_a_partial_model_section_keeps_the_models_own_defaults(tmp_path) -> None:
    # [train.xgboost] max_depth = 6 must not turn the ranker into the generic member, nor
    # [aster_native.xgboost] max_depth = 4 undo the Aster-native model's regularisation
    (tmp_path / "asterai.toml").write_text(
        "[train.xgboost]\nmax_depth = 6\n[aster_native.xgboost]\nmax_depth = 4\n"
    )
    s = load_settings(tmp_path)
    assert s.train.xgboost.max_depth == 6 and s.train.xgboost.objective == "rank_pairwise"
    native = s.aster_native.xgboost
    assert native.max_depth == 4
    assert (native.min_child_weight, native.reg_lambda, native.n_estimators) == (20.0, 10.0, 300)
    assert native.objective == "binary"
    # a plain XGBoostSettings in code: what it sets, over the model's own defaults
    from asterai.config import AsterNativeSettings, TrainSettings, XGBoostSettings

    assert TrainSettings(xgboost=XGBoostSettings(max_depth=2)).xgboost.objective == "rank_pairwise"
    assert AsterNativeSettings(xgboost=XGBoostSettings(max_depth=2)).xgboost.reg_lambda == 10.0
    defaults = load_settings(tmp_path / "nowhere").train
    assert (defaults.target, defaults.stopping_metric) == ("cross_sectional", "auc")
