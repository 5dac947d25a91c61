"""Readiness beyond data: versions, GPU and disk are reported, never failed on."""

from __future__ import annotations

import importlib.util

from asterai.config import load_settings
from asterai.readiness import environment_report


def test_environment_is_reported_without_failing_on_a_missing_gpu(tmp_path) -> None:
    env = environment_report(load_settings(tmp_path))
    assert env["python"].count(".") == 2
    assert env["libraries"]["pandas"] and env["libraries"]["pyarrow"]
    gpu = env["gpu"]
    assert gpu["training_device"] in ("cpu", "cuda")
    if importlib.util.find_spec("torch") is not None:
        import torch

        assert gpu["torch"]["cuda"] == torch.cuda.is_available()
    if gpu["training_device"] == "cpu":
        assert "CPU" in gpu["note"]
    disk = env["disk"]
    assert disk["free_bytes"] > 0 and disk["estimated_collection_bytes"] > 0
    assert disk["enough"] == (disk["free_bytes"] > disk["estimated_collection_bytes"])
