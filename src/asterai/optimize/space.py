"""The search space: which settings each searched parameter sets, and how a trial
draws them.

The ranges are ``config.SearchSpace`` (typed, validated, narrowed in ``asterai.toml``
under ``[optimize.space]``); this module says where each value goes in the settings
(``PARAMETERS``), which parameters apply to which model, and turns a trial's draws into
the nested overrides ``load_settings`` takes, the form ``best_params.json`` stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from asterai.config import OptimizeSettings, Range, SearchSpace


@dataclass(frozen=True, slots=True)
class Parameter:
    path: tuple[str, ...]  # where the value goes in the settings
    integer: bool
    models: tuple[str, ...]  # the models it applies to
    what: str
    #: the model's XGBoost section, for the XGBoost parameters
    xgboost: bool = False
    labels: bool = False  # the labels (and the purge) change with it


BOTH = ("confluence", "aster_native")
CONFLUENCE = ("confluence",)


def _xgb(name: str, integer: bool, what: str) -> Parameter:
    return Parameter(("train", "xgboost", name), integer, BOTH, what, xgboost=True)


PARAMETERS: dict[str, Parameter] = {
    "max_depth": _xgb("max_depth", True, "XGBoost tree depth"),
    "learning_rate": _xgb("learning_rate", False, "XGBoost learning rate (eta)"),
    "n_estimators": _xgb("n_estimators", True, "XGBoost's most boosting rounds"),
    "subsample": _xgb("subsample", False, "XGBoost's row share per tree"),
    "colsample_bytree": _xgb("colsample_bytree", False, "XGBoost's column share per tree"),
    "min_child_weight": _xgb("min_child_weight", False, "XGBoost's smallest leaf (hessian)"),
    "reg_lambda": _xgb("reg_lambda", False, "XGBoost's L2 regularisation"),
    "lstm_hidden_size": Parameter(
        ("train", "lstm", "hidden_size"), True, CONFLUENCE, "LSTM units"
    ),
    "lstm_sequence_length": Parameter(
        ("train", "lstm", "sequence_length"), True, CONFLUENCE, "LSTM window, in bars"
    ),
    "lstm_weight": Parameter(
        ("ensemble", "lstm_weight"), False, CONFLUENCE,
        "the LSTM's ensemble weight (XGBoost's is 1 minus it)",
    ),
    "threshold": Parameter(("train", "threshold"), False, BOTH, "probability that trades"),
    "tp_atr": Parameter(
        ("features", "tp_atr"), False, BOTH, "take-profit barrier, in ATR", labels=True
    ),
    "sl_atr": Parameter(("features", "sl_atr"), False, BOTH, "stop barrier, in ATR", labels=True),
    "label_horizon": Parameter(
        ("features", "label_horizon"), True, BOTH, "bars to the time limit (and the purge)",
        labels=True,
    ),
}  # fmt: skip

assert set(PARAMETERS) == set(SearchSpace.model_fields), "every range has its settings"


class SpaceError(ValueError):
    """The search space cannot be used as configured; the message names the setting."""


def searched(opt: OptimizeSettings, model: str | None = None) -> list[str]:
    """The parameters this study searches, in ``PARAMETERS``' order."""
    model = model or opt.model
    names = list(opt.search) if opt.search is not None else list(PARAMETERS)
    unusable = [n for n in names if model not in PARAMETERS[n].models]
    if opt.search is not None and unusable:
        raise SpaceError(
            f"optimize.search names {unusable}, which the {model} model does not have "
            "(the LSTM's parameters belong to the confluence model)"
        )
    return [n for n in PARAMETERS if n in names and n not in unusable]


def check(settings) -> None:
    """Every searched parameter's range, checked before any work: the model has it, an
    integer's ends and step are whole, and both ends are values its setting accepts (a
    trial drawing one would otherwise fail the settings' own validation mid-search)."""
    from asterai.config import ConfigError, load_settings

    opt = settings.optimize
    base = settings.given_dict()
    for name, spec in describe(opt, opt.model).items():
        r: Range = getattr(opt.space, name)
        if spec["integer"] and any(
            v is not None and float(v) != int(v) for v in (r.low, r.high, r.step)
        ):
            raise SpaceError(
                f"optimize.space.{name}: an integer parameter needs whole ends and step, "
                f"got {r.low:g}..{r.high:g}" + (f" step {r.step:g}" if r.step else "")
            )
        for end in (spec["low"], spec["high"]):
            try:
                load_settings(
                    settings.data_root, **merge_settings(base, overrides({name: end}, opt.model))
                )
            except ConfigError as err:
                reason = str(err).splitlines()[-1].strip()
                raise SpaceError(
                    f"optimize.space.{name}: {end} is outside what {spec['sets']} accepts "
                    f"({reason})"
                ) from None


def merge_settings(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = (
            merge_settings(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def describe(opt: OptimizeSettings, model: str | None = None) -> dict[str, dict[str, Any]]:
    """The searched ranges, as the study records them (a resumed study must match)."""
    out = {}
    for name in searched(opt, model):
        r: Range = getattr(opt.space, name)
        p = PARAMETERS[name]
        out[name] = {
            "low": int(r.low) if p.integer else r.low,
            "high": int(r.high) if p.integer else r.high,
            "log": r.log,
            "step": (int(r.step or 1) if p.integer else r.step),
            "integer": p.integer,
            "sets": ".".join(_section(p, model or opt.model)),
        }
    return out


def _section(p: Parameter, model: str) -> tuple[str, ...]:
    """The settings path, with the Aster-native model's own XGBoost section."""
    if p.xgboost and model == "aster_native":
        return ("aster_native", "xgboost", p.path[-1])
    return p.path


def suggest(trial: optuna.Trial, opt: OptimizeSettings, model: str | None = None) -> dict:
    """One trial's draws, by name."""
    values: dict[str, Any] = {}
    for name, spec in describe(opt, model).items():
        if spec["integer"]:
            values[name] = trial.suggest_int(
                name, spec["low"], spec["high"], step=spec["step"] if not spec["log"] else 1,
                log=spec["log"],
            )  # fmt: skip
        else:
            values[name] = trial.suggest_float(
                name, spec["low"], spec["high"], step=spec["step"], log=spec["log"]
            )
    return values


def overrides(values: dict[str, Any], model: str) -> dict[str, Any]:
    """The nested settings a trial's draws stand for (``load_settings(root, **them)``)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in PARAMETERS:
            raise SpaceError(f"unknown parameter {name!r}; known: {', '.join(PARAMETERS)}")
        path = _section(PARAMETERS[name], model)
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        if name == "lstm_weight":
            out["ensemble"]["xgboost_weight"] = 1.0 - float(value)
    return out


def changes_labels(values: dict[str, Any]) -> bool:
    return any(PARAMETERS[n].labels for n in values)
