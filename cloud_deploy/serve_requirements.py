"""Print the ``serve`` extra of pyproject.toml, one requirement per line.

The container installs the project with ``--no-deps`` and then exactly this list, so the
service carries no PyTorch, XGBoost or scikit-learn (``pip install asterai[serve]``
would also pull the base dependencies, which include the training stack).

    python cloud_deploy/serve_requirements.py > requirements-serve.txt
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def serve_requirements(path: Path = PYPROJECT) -> list[str]:
    extras = tomllib.loads(path.read_text())["project"]["optional-dependencies"]
    return list(extras["serve"])


if __name__ == "__main__":
    sys.stdout.write("".join(f"{r}\n" for r in serve_requirements()))
