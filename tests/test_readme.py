"""Every command in the README runs, so none of them can rot.

The ``bash`` blocks of README.md are run in order, as a new user would type them, in
an empty project folder (with the project's ``scripts/`` and ``local_training/``
beside it). "The live exchange" is the replay server of the real recording
(``ASTERAI_BASE_URL``); the README's own ``asterai replay`` line is started as written,
on a free port; training uses small settings (``ASTERAI_TRAIN__*``) to stay quick.
The install and test commands are the ones ``.ci/run`` runs, verbatim; the benchmark
commands take minutes, so here they only have to parse (``--help``).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, REAL_DATA

README = PROJECT_ROOT / "README.md"
SMALL = {
    "ASTERAI_TRAIN__FOLDS": "2",
    "ASTERAI_TRAIN__LSTM__EPOCHS": "1",
    "ASTERAI_TRAIN__LSTM__HIDDEN_SIZE": "8",
    "ASTERAI_TRAIN__LSTM__SEQUENCE_LENGTH": "8",
    "ASTERAI_TRAIN__LSTM__WINDOW_STRIDE": "4",
    "ASTERAI_TRAIN__XGBOOST__N_ESTIMATORS": "20",
    "ASTERAI_ASTER_NATIVE__XGBOOST__N_ESTIMATORS": "20",
}
#: commands whose exit status is the backtest's verdict: 1 when the criteria fail
GRADED = re.compile(r"(asterai backtest|backtest_confluence_strategy\.py)")


def readme_commands() -> list[str]:
    """The commands of the README's ``bash`` blocks, continuation lines joined."""
    out: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        pending = ""
        for line in block.splitlines():
            line = pending + line.strip()
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            if line and not line.startswith("#"):
                out.append(line)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_readme_shows_commands() -> None:
    commands = readme_commands()
    assert len(commands) > 20
    assert "python -m pytest -q" in commands and "asterai pipeline" in commands


def test_install_and_test_commands_are_the_ones_ci_runs() -> None:
    ci = (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()
    ci = [line.strip().removeprefix("python -m ") for line in ci]
    for command in readme_commands():
        if command.startswith(("pip install", "python -m pytest")):
            assert command.removeprefix("python -m ") in ci, command


def test_every_readme_command_runs(tmp_path, replay) -> None:
    if not (REAL_DATA / "klines").is_dir():
        pytest.skip("no recording")
    project = tmp_path / "project"
    project.mkdir()
    for folder in ("scripts", "local_training"):
        (project / folder).symlink_to(PROJECT_ROOT / folder)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASTERAI_")},
        **SMALL,
        "HOME": str(tmp_path / "home"),
        "ASTERAI_BASE_URL": replay.base_url,
        "COLUMNS": "160",
    }
    (tmp_path / "home").mkdir()
    port = str(free_port())
    server = None
    ran = []
    try:
        for command in readme_commands():
            if command.startswith(("pip install", "python -m pytest")):
                continue  # CI runs these (the test above)
            if command.startswith("python bench/"):
                script = command.split()[1]
                done = subprocess.run(
                    [sys.executable, script, "--help"], cwd=PROJECT_ROOT, env=env,
                    capture_output=True, text=True, timeout=120, check=False,
                )  # fmt: skip
                assert done.returncode == 0, (command, done.stderr[-2000:])
                ran.append(command)
                continue
            line = command.replace("../shared/aster-real", str(REAL_DATA)).replace("8765", port)
            if line.startswith("asterai replay") and line.endswith("&"):
                server = subprocess.Popen(
                    ["bash", "-c", f"exec {line[:-1]}"], cwd=project, env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                wait_for(f"http://127.0.0.1:{port}")
                ran.append(command)
                continue
            began = time.perf_counter()
            done = subprocess.run(
                ["bash", "-c", line], cwd=project, env=env, capture_output=True, text=True,
                timeout=300, check=False,
            )  # fmt: skip
            print(f"{time.perf_counter() - began:6.1f} s  {command}")  # shown with -s
            allowed = {0, 1} if GRADED.search(line) else {0}
            assert done.returncode in allowed, (command, done.stdout[-3000:], done.stderr[-3000:])
            if done.returncode == 1:
                assert "criteria not met" in done.stderr, (command, done.stderr[-2000:])
            ran.append(command)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
    assert "asterai replay --data ../shared/aster-real --port 8765 &" in ran
    # what the commands made is where the README says
    assert (project / "data" / "backtest_results" / "report.html").exists()
    assert (
        tmp_path / "home" / "aster-offline" / "data" / "backtest_results" / "metrics.json"
    ).exists()
    assert list((project / "data" / "pipeline_runs").glob("*/manifest.json"))


def wait_for(url: str, seconds: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/fapi/v1/ping", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"the README's replay server did not answer at {url}")


def test_the_readme_screenshot_exists() -> None:
    assert (PROJECT_ROOT / "docs" / "backtest_report.png").stat().st_size > 10_000
    assert Path("docs/backtest_report.png").as_posix() in README.read_text()
