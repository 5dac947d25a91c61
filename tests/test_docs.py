"""Every command in the README and the documentation site runs, so none of them can rot,
and the site builds without a broken link.

The ``bash`` blocks of README.md, then of the site's pages (``docs/``, in the order
below), are run in order, as a new user would type them, in an empty project folder
(with the project's ``scripts/`` and ``local_training/`` beside it). "The live
exchange" is the replay server of the real recording (``ASTERAI_BASE_URL``); the
README's own ``asterai replay`` line is started as written, on a free port; training
uses small settings (``ASTERAI_TRAIN__*``) to stay quick. The install and test
commands are the ones ``.ci/run`` runs, verbatim; the benchmark commands take minutes,
so here they only have to parse (``--help``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, REAL_DATA, free_port, wait_healthy

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
#: the site's pages in the order their commands run: the site's own order (mkdocs.yml),
#: except that Troubleshooting's commands (which retrain on the default labels) run
#: before Tuning rebuilds the features with a search's labels, as a reader who fixes
#: the data before tuning would type them
RUN_ORDER = (
    "index.md", "getting-started.md", "pipeline.md", "data.md", "features.md",
    "training.md", "backtest.md", "configuration.md", "troubleshooting.md", "tuning.md",
    "serving.md", "paper-trading.md", "watching.md", "live-trading.md", "replay.md",
    "benchmarks.md", "design.md", "contributing.md",
)  # fmt: skip
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


def documents() -> list[Path]:
    return [README, *(DOCS / name for name in RUN_ORDER)]


def doc_sections() -> list[tuple[str, list[str]]]:
    """("page: section title", its commands) for every ``#`` or ``##`` section with
    ``bash`` blocks, page by page in run order; continuation lines joined. A page's
    ``--8<--`` lines include the README's sections, whose commands run from the README."""
    out: list[tuple[str, list[str]]] = []
    for doc in documents():
        title, commands, fence, pending = "", [], None, ""
        for raw in [*doc.read_text().splitlines(), "# end"]:
            line = raw.strip()
            if fence is None and re.match(r"#{1,2} ", raw):  # a heading, outside code
                if commands:
                    out.append((f"{doc.name}: {title}", commands))
                title, commands = raw.lstrip("#").strip(), []
            elif line.startswith("```"):
                fence = line[3:] if fence is None else None
            elif fence == "bash":
                line = pending + line
                pending = ""
                if line.endswith("\\"):
                    pending = line[:-1] + " "
                elif line and not line.startswith("#"):
                    commands.append(line)
    return out


def doc_commands() -> list[str]:
    return [c for _, cs in doc_sections() for c in cs]


def test_the_site_lists_every_page_and_runs_its_commands_in_order() -> None:
    import yaml

    nav = yaml.safe_load((PROJECT_ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(items) -> list[str]:
        return [p for i in items for v in i.values()
                for p in (pages(v) if isinstance(v, list) else [v])]  # fmt: skip

    assert sorted(pages(nav)) == sorted(RUN_ORDER) == sorted(p.name for p in DOCS.glob("*.md"))


def test_the_docs_show_commands() -> None:
    commands = doc_commands()
    assert len(commands) > 20
    assert "python -m pytest -q" in commands and "asterai pipeline" in commands


def test_install_and_test_commands_are_the_ones_ci_runs() -> None:
    ci = (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()
    ci = [line.strip().removeprefix("python -m ") for line in ci]
    for command in doc_commands():
        if command.startswith(("pip install", "python -m pytest")):
            assert command.removeprefix("python -m ") in ci, command


class Sandbox:
    """A new user's empty project folder, the environment the commands see, and the
    README's replay server once its line has run."""

    def __init__(self, root: Path, base_url: str) -> None:
        self.root = root
        self.project = root / "project"
        self.project.mkdir()
        for folder in ("scripts", "local_training", "cloud_deploy"):
            (self.project / folder).symlink_to(PROJECT_ROOT / folder)
        (root / "home").mkdir()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ASTERAI_")},
            **SMALL,
            "HOME": str(root / "home"),
            "ASTERAI_BASE_URL": base_url,
            "COLUMNS": "160",
        }
        self.port = str(free_port())
        self.serve_port = str(free_port())
        self.dashboard_port = str(free_port())
        self.dashboard: subprocess.Popen | None = None
        self.server: subprocess.Popen | None = None
        self.paper: subprocess.Popen | None = None
        self.service: subprocess.Popen | None = None
        self.ran: list[str] = []

    def run(self, command: str) -> None:
        if command.startswith(("pip install", "python -m pytest")):
            return  # CI runs these (test_install_and_test_commands_are_the_ones_ci_runs)
        if command.startswith("python bench/"):
            done = subprocess.run(
                [sys.executable, command.split()[1], "--help"], cwd=PROJECT_ROOT, env=self.env,
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert done.returncode == 0, (command, done.stderr[-2000:])
            self.ran.append(command)
            return
        line = command.replace("../shared/aster-real", str(REAL_DATA)).replace("8765", self.port)
        line = line.replace("8780", self.serve_port).replace("8790", self.dashboard_port)
        servers = {  # run until the end, in the background: (attribute, ready when)
            "asterai dashboard": ("dashboard", lambda proc: wait_page(
                f"http://127.0.0.1:{self.dashboard_port}/", proc)),
            "asterai serve": ("service", lambda proc: wait_healthy(
                f"http://127.0.0.1:{self.serve_port}", proc)),
        }  # fmt: skip
        for name, (attribute, ready) in servers.items():
            if name in line and line.endswith("&"):
                proc = subprocess.Popen(
                    ["bash", "-c", f"exec env {line[:-1]}"], cwd=self.project, env=self.env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                setattr(self, attribute, proc)
                ready(proc)
                self.ran.append(command)
                return
        head = line.split("#")[0].strip()
        if head.startswith("asterai paper") and not re.search(
            r"--(status|report|help|kill|pause)", head
        ):
            # it runs until stopped: in the background, until its first bar is journaled
            self.paper = subprocess.Popen(
                ["bash", "-c", f"exec {head}"], cwd=self.project, env=self.env,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            journal = self.project / "data" / "paper" / "journal.sqlite"
            deadline = time.monotonic() + 120
            while not (journal.exists() and _bars(journal)):  # its first bar is journaled
                assert self.paper.poll() is None, self.paper.stderr.read().decode()[-3000:]
                assert time.monotonic() < deadline, "asterai paper journaled no bar"
                time.sleep(0.2)
            self.ran.append(command)
            return
        if line.startswith("asterai replay") and line.endswith("&"):
            self.server = subprocess.Popen(
                ["bash", "-c", f"exec {line[:-1]}"], cwd=self.project, env=self.env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_for(f"http://127.0.0.1:{self.port}")
            self.ran.append(command)
            return
        began = time.perf_counter()
        done = subprocess.run(
            ["bash", "-c", line], cwd=self.project, env=self.env, capture_output=True,
            text=True, timeout=300, check=False,
        )  # fmt: skip
        print(f"{time.perf_counter() - began:6.1f} s  {command}")  # shown with -s
        allowed = {0, 1} if GRADED.search(line) else {0}
        assert done.returncode in allowed, (command, done.stdout[-3000:], done.stderr[-3000:])
        if done.returncode == 1:
            assert "criteria not met" in done.stderr, (command, done.stderr[-2000:])
        self.ran.append(command)

    def close(self) -> None:
        if self.paper is not None:  # the sandbox is thrown away: -9 (SIGTERM is a stop too)
            self.paper.kill()
            self.paper.wait(timeout=30)
        if self.dashboard is not None:
            self.dashboard.terminate()
            self.dashboard.wait(timeout=30)
        if self.service is not None:
            self.service.terminate()
            self.service.wait(timeout=30)
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=10)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, recording):
    from asterai.exchange.replay import ReplayServer

    if not (REAL_DATA / "klines").is_dir():
        pytest.skip("no recording")
    with ReplayServer(recording) as live:
        box = Sandbox(tmp_path_factory.mktemp("docs"), live.base_url)
        try:
            yield box
        finally:
            box.close()


#: each section's commands run after the ones before it, as a reader would type them
@pytest.mark.e2e
@pytest.mark.parametrize("title", [title for title, _ in doc_sections()])
def test_every_documented_command_runs(sandbox, title) -> None:
    (commands,) = [cs for t, cs in doc_sections() if t == title]
    for command in commands:
        sandbox.run(command)
    project, home = sandbox.project, sandbox.root / "home"
    if title.startswith("README.md: Two commands"):
        assert (project / "data" / "backtest_results" / "report.html").exists()
        assert list((project / "data" / "pipeline_runs").glob("*/manifest.json"))
    if title.startswith("paper-trading.md"):
        assert (project / "data" / "paper" / "report" / "reconciliation.json").exists()
        assert (project / "data" / "paper" / "KILL").exists()
    if title.startswith("README.md: Offline"):
        assert "asterai replay --data ../shared/aster-real --port 8765 &" in sandbox.ran
        assert (home / "aster-offline" / "data" / "backtest_results" / "metrics.json").exists()


def _bars(journal: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM bars").fetchone()[0]
    except sqlite3.OperationalError:  # the file is there, its schema not yet
        return 0


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


def wait_page(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, f"{url}: the process ended"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"nothing answered at {url}"
        time.sleep(0.2)


def test_the_screenshots_exist_and_are_shown() -> None:
    for name, page in (("backtest_report.png", "backtest.md"), ("optimize_report.png", "tuning.md"),
                       ("dashboard.png", "watching.md")):  # fmt: skip
        assert (DOCS / name).stat().st_size > 10_000
        assert f"({name})" in (DOCS / page).read_text()


def test_the_readme_stays_short() -> None:
    assert len(README.read_text().splitlines()) < 200


def test_the_site_builds_strictly(tmp_path) -> None:
    """``mkdocs build --strict``: a broken link, an anchor that does not exist, a page
    missing from the navigation or a README section a page includes and that is gone
    fails the build."""
    pytest.importorskip("material", reason="the docs extra: pip install -e '.[docs]'")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    index = (tmp_path / "site" / "index.html").read_text()
    assert "What it promises" in index  # the README's section, included once
    started = (tmp_path / "site" / "getting-started" / "index.html").read_text()
    assert re.sub(r"<[^>]+>", "", started).count("pip install -e") == 1
