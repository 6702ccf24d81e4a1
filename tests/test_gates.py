"""The gates CI holds: ruff (with its complexity limit) and mypy in strict mode are clean.

They run as tests so that the one test command is the whole of CI. Caches go to the test's
temporary folder: a test never writes into the checkout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    done = _run([sys.executable, "-m", "ruff", "check", "--no-cache", "thotd", "thot", "tests",
                 "bench"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_is_clean(tmp_path: Path) -> None:
    done = _run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy")])
    assert done.returncode == 0, done.stdout + done.stderr
