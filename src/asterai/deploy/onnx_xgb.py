"""An XGBoost member as an ONNX graph: ONNX-ML's ``TreeEnsembleRegressor`` with one
target per direction, then the member's link, so the graph's output is exactly what
``XGBMember.predict`` returns: (rows, 2) long and short.

Hand-written from XGBoost's own JSON model rather than onnxmltools' converter, which
(measured with xgboost 3.2, onnxmltools 1.16) reads the member's booster, two outputs
from one booster (``multi_strategy="one_output_per_tree"``), as a two-class classifier
and converts it without an error into a model that is wrong by up to 0.99 (0.48 on the
recording's Aster-native model, measured in the same way). The JSON is
the documented, stable format XGBoost saves; the mapping is one node per tree node:

- a split sends a row left when ``x < split_condition`` (``BRANCH_LT``), and a missing
  value (NaN) where ``default_left`` says (``nodes_missing_value_tracks_true``);
- a leaf adds its value to its tree's target (``tree_info``); the trees are summed;
- the base margin is XGBoost's ``base_score`` in margin space (``logit`` of it for
  ``binary:logistic``; as it is for ``rank:pairwise`` and the regressions).

The binary member's link is the sigmoid per output, and so is the regression member's
(its margin is the predicted R-multiple: ``sigmoid(R)``); the ranking member's one score
``s`` becomes ``[sigmoid(s), sigmoid(-s)]``, as in ``xgb.py``. The booster is already
cut to its best iteration when it is trained, and its ``best_iteration`` is checked
here: an export never carries trees the validation did not keep.

Only numerical splits are mapped (the members have no categorical feature); any other
split type is refused by name.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

#: the ONNX opsets the export targets (ai.onnx.ml 3 has TreeEnsembleRegressor with
#: float attributes, which every onnxruntime since 1.10 runs)
OPSET = 15
ML_OPSET = 3
INPUT = "features"
OUTPUT = "raw"


class ExportError(ValueError):
    """A model the export cannot map faithfully; the message says what."""


def _base_margin(learner: dict[str, Any], targets: int) -> list[float]:
    text = learner["learner_model_param"]["base_score"]
    values = json.loads(text) if text.startswith("[") else [float(text)]
    values = [float(v) for v in values]
    if len(values) == 1:
        values = values * targets
    objective = learner["objective"]["name"]
    if objective == "binary:logistic":
        return [math.log(v / (1 - v)) for v in values]
    if objective.startswith("rank:") or objective in ("reg:squarederror", "reg:pseudohubererror"):
        return values
    raise ExportError(f"objective {objective!r} is not one the export maps")


def booster_graph(model_json: bytes | str, features: int, *, ranking: bool) -> onnx.ModelProto:
    """The ONNX model of a booster saved as XGBoost JSON (``Booster.save_raw("json")``):
    input ``features`` float32 (rows, ``features``), output ``raw`` float32 (rows, 2)."""
    doc = json.loads(model_json)
    learner = doc["learner"]
    gb = learner["gradient_booster"]
    if gb.get("name") != "gbtree":
        raise ExportError(f"booster {gb.get('name')!r}: only gbtree is exported")
    model = gb["model"]
    trees = model["trees"]
    tree_info = model["tree_info"]
    n_features = int(learner["learner_model_param"]["num_feature"])
    if n_features != features:
        raise ExportError(
            f"the booster takes {n_features} features, the model config lists {features}"
        )
    targets = max(1, int(learner["learner_model_param"].get("num_target", "1")))
    expected = 1 if ranking else 2
    if targets != expected:
        raise ExportError(f"the booster has {targets} outputs, the member {expected}")
    node: dict[str, list] = {k: [] for k in (
        "treeids", "nodeids", "featureids", "values", "modes", "truenodeids",
        "falsenodeids", "missing")}  # fmt: skip
    leaf: dict[str, list] = {k: [] for k in ("treeids", "nodeids", "ids", "weights")}
    for t, tree in enumerate(trees):
        if any(int(s) != 0 for s in tree.get("split_type", [])):
            raise ExportError(f"tree {t} has a categorical split: not exported")
        if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise ExportError(f"tree {t} has vector leaves (multi_output_tree): not exported")
        left, right = tree["left_children"], tree["right_children"]
        for i, (lo, hi) in enumerate(zip(left, right, strict=True)):
            node["treeids"].append(t)
            node["nodeids"].append(i)
            is_leaf = lo == -1
            node["featureids"].append(0 if is_leaf else int(tree["split_indices"][i]))
            node["values"].append(0.0 if is_leaf else float(tree["split_conditions"][i]))
            node["modes"].append("LEAF" if is_leaf else "BRANCH_LT")
            node["truenodeids"].append(0 if is_leaf else int(lo))
            node["falsenodeids"].append(0 if is_leaf else int(hi))
            node["missing"].append(0 if is_leaf else int(tree["default_left"][i]))
            if is_leaf:
                leaf["treeids"].append(t)
                leaf["nodeids"].append(i)
                leaf["ids"].append(int(tree_info[t]))
                leaf["weights"].append(float(tree["split_conditions"][i]))
    base = _base_margin(learner, targets)
    ensemble = helper.make_node(
        "TreeEnsembleRegressor",
        [INPUT],
        ["margin"],
        domain="ai.onnx.ml",
        n_targets=targets,
        aggregate_function="SUM",
        post_transform="NONE",
        base_values=base,
        nodes_treeids=node["treeids"],
        nodes_nodeids=node["nodeids"],
        nodes_featureids=node["featureids"],
        nodes_values=node["values"],
        nodes_modes=node["modes"],
        nodes_truenodeids=node["truenodeids"],
        nodes_falsenodeids=node["falsenodeids"],
        nodes_missing_value_tracks_true=node["missing"],
        target_treeids=leaf["treeids"],
        target_nodeids=leaf["nodeids"],
        target_ids=leaf["ids"],
        target_weights=leaf["weights"],
    )
    nodes = [ensemble]
    inits = []
    if ranking:  # one score s -> [s, -s]
        inits.append(helper.make_tensor("signs", TensorProto.FLOAT, [1, 2], [1.0, -1.0]))
        nodes.append(helper.make_node("Mul", ["margin", "signs"], ["margins"]))
        nodes.append(helper.make_node("Sigmoid", ["margins"], [OUTPUT]))
    else:
        nodes.append(helper.make_node("Sigmoid", ["margin"], [OUTPUT]))
    graph = helper.make_graph(
        nodes,
        "xgboost_member",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["rows", features])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["rows", 2])],
        initializer=inits,
    )
    out = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="asterai",
    )
    out.ir_version = 8
    onnx.checker.check_model(out)
    return out


def member_graph(member: Any, features: int) -> onnx.ModelProto:
    """The ONNX model of a trained ``XGBMember`` (its booster already at its best
    iteration; refused if it carries more rounds)."""
    booster = member._require()
    rounds = booster.num_boosted_rounds()
    if member.best_iteration is not None and rounds != member.best_iteration + 1:
        raise ExportError(
            f"the booster has {rounds} rounds, its best iteration is {member.best_iteration}: "
            "cut it to the best iteration before export"
        )
    return booster_graph(booster.save_raw("json"), features, ranking=member.ranking)


def run(model: onnx.ModelProto | bytes, X: np.ndarray) -> np.ndarray:
    """The graph's output for ``X`` with onnxruntime on one CPU thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {INPUT: np.asarray(X, dtype=np.float32)})[0]
