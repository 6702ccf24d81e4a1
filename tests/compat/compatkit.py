"""The original Thot releases in throwaway virtual environments, and the project probed.

Each release is installed once into ``$XDG_CACHE_HOME/thotd-compat/v<version>`` (default
``~/.cache``), outside the checkout, so CI pays for it once. Their hosted-mode modules import
``pymongo``, ``bson`` and ``boto3`` without declaring all of them; small stand-ins (never
called by local projects) take their place instead of installing cloud clients.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

VERSIONS = ("0.0.2", "0.2.3", "0.6.3")
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

_STUBS = {
    "pymongo/__init__.py": "class MongoClient:\n    def __init__(self, *a, **k):\n        raise RuntimeError('stand-in')\n",
    "bson/__init__.py": "",
    "bson/objectid.py": "class ObjectId(str):\n    pass\n",
    "boto3/__init__.py": "",
    "botocore/__init__.py": "",
}

#: What the probes run on: containers with metadata (an int, a bool), notes, scripts in an
#: order their priorities do not follow, assets with and without optional fields.
PROJECT: dict[str, Any] = {
    "_container.json": {"type": "project", "metadata": {"lab": "B12"}},
    "_scripts.json": [{"script": "late.py", "priority": 2}, {"script": "early.py", "priority": 1},
                      {"script": "off.py", "autorun": False}],
    "a": {
        "_container.json": {"metadata": {"batch": 1, "flag": True}},
        "_notes": {"log.txt": "calibrated"},
        "raw-a": {"_asset.json": {"type": "raw", "file": "data.csv", "tags": ["x"],
                                  "description": None}},
    },
    "b": {
        "_container.json": {"name": "b", "metadata": {"batch": 2}},
        "raw-b": {"_asset.json": {"type": "raw", "file": "data.csv"}},
    },
}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "thotd-compat"


def _unreachable(output: str) -> bool:
    words = ("Could not find a version", "NewConnectionError", "Network is unreachable",
             "Temporary failure in name resolution", "ConnectTimeout", "ProxyError",
             "No matching distribution", "Max retries exceeded")
    return any(w in output for w in words)


def original_python(version: str) -> Path:
    """The interpreter of a venv holding ``thot-data==version``; skips the test, saying why,
    only when the package index cannot be reached."""
    venv = cache_dir() / f"v{version}"
    python = venv / "bin" / "python"
    if (venv / ".complete").is_file():
        return python
    tmp = cache_dir() / f".v{version}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True)
    done = subprocess.run([str(tmp / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                           f"thot-data=={version}"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        if _unreachable(done.stdout + done.stderr):
            pytest.skip(f"the package index is unreachable: cannot install thot-data=={version}")
        raise AssertionError(f"pip install thot-data=={version} failed:\n{done.stderr}")
    (tmp / ".complete").write_text(version + "\n")
    shutil.rmtree(venv, ignore_errors=True)
    try:
        tmp.rename(venv)  # scripts in the venv name tmp's path; only its python is used
    except OSError:  # another test process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return python


def stubs() -> Path:
    folder = cache_dir() / "stand-ins"
    for name, text in _STUBS.items():
        path = folder / name
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return folder


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("THOT", "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


def run_original(version: str, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    python = original_python(version)
    path = f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"  # `python` = the venv's
    return subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=clean_env(PYTHONPATH=str(stubs()), PATH=path, **env))


def run_ours(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=clean_env(PYTHONPATH=str(REPO), **env))


def probe_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
