"""What paper trading is checked against before anything is written: ``prepare``.

``prepare(settings)`` opens the export, checks its feature set against the data root's
settings and the symbols against its universe, takes the strategy the model was
trained for from the export (``export_strategy``: the threshold and sides the service
decides by, the barriers and horizon the account trades), and builds the account: the
kernel's parameters and the exchange's filters. ``check_journal`` refuses an existing
journal of another account. Both raise ``PaperSettingsError`` (exit 2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from asterai.backtest.engine import account_liquidation_fee, params
from asterai.backtest.inputs import exchange_filters
from asterai.config import FeatureSettings, Settings, redact_url
from asterai.deploy.runtime import ExportMissing, OnnxModel
from asterai.features import catalog as cat
from asterai.intervals import INTERVAL_MS
from asterai.paper.journal import Account, Journal
from asterai.paths import DataPaths

log = logging.getLogger(__name__)


class PaperSettingsError(ValueError):
    """Settings paper trading cannot start with (exit 2; nothing is written)."""


class PaperStopped(RuntimeError):
    """The journal's account was stopped by the kill switch: it is final."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything checked before the first write."""

    settings: Settings
    model: OnnxModel
    symbols: list[str]
    account: Account  # start_ms is set when the first bar is known
    notes: list[str]


def _export_checks(settings: Settings, model: OnnxModel) -> FeatureSettings:
    facts = model.manifest.get("service")
    if not facts:
        raise PaperSettingsError(
            f"{model.folder} was exported before the service facts were recorded: run "
            "`asterai export-onnx` again"
        )
    fs = FeatureSettings(**facts["features"])
    here = settings.features
    if (fs.base_interval, fs.higher_intervals) != (here.base_interval, here.higher_intervals):
        raise PaperSettingsError(
            f"{model.folder}: the model was trained on features of {fs.base_interval} with "
            f"{', '.join(fs.higher_intervals)}; this data root's settings build "
            f"{here.base_interval} with {', '.join(here.higher_intervals)}: export a model "
            "trained on these features, or use the settings it was trained with"
        )
    known = set(cat.feature_names(fs.higher_intervals))
    base = [f for f in model.features if not f.startswith("category_")]
    foreign = sorted(set(base) - known - {"listing_age_h"})
    if foreign:
        raise PaperSettingsError(
            f"{model.folder}: the model reads features this version does not build "
            f"({', '.join(foreign[:5])}): it is from another feature set; train and "
            "export it again"
        )
    return fs


#: the strategy a model was trained for, as its export records it: (section, setting,
#: where the manifest keeps it); the service decides by the first two, the account
#: trades the barriers and the horizon
EXPORT_STRATEGY = (
    ("train", "threshold", ("threshold",)),
    ("strategy", "sides", ("sides",)),
    ("features", "tp_atr", ("label", "take_profit_atr")),
    ("features", "sl_atr", ("label", "stop_atr")),
    ("features", "label_horizon", ("label", "horizon_bars")),
)


def export_strategy(settings: Settings, model: OnnxModel) -> tuple[Settings, list[str]]:
    """``settings`` with the strategy the export records (its threshold, sides,
    barriers and horizon: what the model was trained for and what ``asterai serve``
    decides by), and a note for each value that replaced a differing setting or that
    the export does not record (then the setting's is kept)."""
    m = model.manifest
    notes: list[str] = []
    changed: dict[str, dict[str, Any]] = {}
    for section, key, where in EXPORT_STRATEGY:
        value: Any = m
        for k in where:
            value = value.get(k) if isinstance(value, dict) else None
        if value is None and key == "sides":
            value = "both"  # exported before strategy.sides existed: it traded both
        here = getattr(getattr(settings, section), key)
        if value is None:
            notes.append(f"{section}.{key} = {here!r} from the settings (the export does "
                         f"not record it: exported before it was)")  # fmt: skip
            continue
        if value != here:
            notes.append(f"{section}.{key} = {value!r} from the export ({here!r} in the "
                         "settings)")  # fmt: skip
            changed.setdefault(section, {})[key] = value
    update = {}
    for section, values in changed.items():
        current = getattr(settings, section)
        try:
            update[section] = type(current).model_validate(
                current.model_dump(exclude_unset=True) | values
            )
        except ValueError as err:
            raise PaperSettingsError(
                f"{model.folder}: the export records a strategy these settings cannot "
                f"take ({err}): export the model again"
            ) from err
    for note in notes:
        log.warning("paper trading: %s", note)
    return settings.model_copy(update=update), notes


def prepare(settings: Settings) -> Plan:
    """The checked plan for ``settings`` (``PaperSettingsError`` on bad settings)."""
    ps = settings.paper
    paths = DataPaths.at(settings.data_root)
    try:
        model = OnnxModel(paths.models(ps.model) / "onnx")
    except ExportMissing as err:
        raise PaperSettingsError(f"no exported {ps.model} model: {err}") from err
    fs = _export_checks(settings, model)
    settings, notes = export_strategy(settings, model)
    trained = list(model.manifest["service"]["symbols"])
    symbols = sorted(ps.symbols) if ps.symbols else sorted(trained)
    unknown = sorted(set(symbols) - set(trained))
    if unknown:
        raise PaperSettingsError(
            f"paper.symbols: {', '.join(unknown)} not in the model's universe (it was "
            f"trained on {', '.join(trained)})"
        )
    step_ms = INTERVAL_MS[fs.base_interval]
    if ps.max_delay_s * 1000 >= step_ms:
        raise PaperSettingsError(
            f"paper.max_delay_s = {ps.max_delay_s:g} is not below one {fs.base_interval} bar: "
            "a signal acted on that late fills at an open long gone"
        )
    if not paths.discovery.exists():
        raise PaperSettingsError(
            f"{paths.discovery} does not exist: the account's tick, lot and minimum "
            "notional come from discovery (`asterai discover`)"
        )
    tick, lot, min_notional, fees = exchange_filters(paths, symbols, settings, notes)
    p = params(settings)._replace(
        liquidation_fee=account_liquidation_fee(settings, fees, len(symbols))
    )
    facts = {
        "model": ps.model,
        "model_config_sha256": model.manifest.get("model_config_sha256"),
        "features": model.manifest["service"]["features"],
        "daily_loss_limit": ps.daily_loss_limit,
        "max_delay_s": ps.max_delay_s,
        "exchange": redact_url(settings.base_url),
    }
    account = Account(symbols, p, tick, lot, min_notional, -1, step_ms, facts)
    return Plan(settings, model, symbols, account, notes)


def check_journal(plan: Plan, journal: Journal) -> None:
    """An existing journal must be this account's (the same symbols, parameters,
    filters and model), else continuing it would mix two accounts."""
    have, want = journal.account, plan.account
    diffs = []
    if have.symbols != want.symbols:
        diffs.append(f"symbols {have.symbols} vs {want.symbols}")
    if have.params != want.params:
        a, b = have.params._asdict(), want.params._asdict()
        diffs += [f"{k} {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k]]
    for name in ("tick", "step", "min_notional"):
        if not np.array_equal(getattr(have, name), getattr(want, name)):
            diffs.append(f"the exchange's {name} filters changed")
    for key in ("model", "model_config_sha256", "daily_loss_limit", "max_delay_s"):
        if have.facts.get(key) != want.facts.get(key):
            diffs.append(f"{key} {have.facts.get(key)!r} vs {want.facts.get(key)!r}")
    if diffs:
        raise PaperSettingsError(
            f"{journal.path} is another account's journal ({'; '.join(diffs)}): move it "
            "away to start a new one, or run with the settings it was started with"
        )
