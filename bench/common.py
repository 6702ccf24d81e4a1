"""What every bench shares: where things go, the machine record, throwaway venvs for the
anchors, timing summaries, the PASS/FAIL verdict and the result file.

Generated trees go to ``bench/work/``, venvs to ``bench/.venvs/`` and raw results to
``bench/results/``: all three are git-ignored. The current numbers live in
``bench/README.md``, one table per bench.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / "work"
RESULTS = BENCH / "results"
VENVS = BENCH / ".venvs"


def clean_env() -> dict[str, str]:
    """The environment for children: no PYTHON* / THOT_* leaking in from the caller."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "THOT_"))}


def _first_field(path: str, prefix: str) -> str | None:
    for line in Path(path).read_text().splitlines():
        if line.startswith(prefix):
            return line.split(":", 1)[1].strip()
    return None


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPUs, memory, load, Python, and the commit with
    the locally modified files of ``thotd/`` and ``thot/`` (the code under test moves)."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    try:
        info["cpu"] = _first_field("/proc/cpuinfo", "model name")
        mem = _first_field("/proc/meminfo", "MemTotal")
        info["mem_total_mb"] = int(mem.split()[0]) // 1024 if mem else None
        info["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    try:
        info["git_commit"] = _git("rev-parse", "HEAD").strip()
        info["git_dirty_files"] = [line[3:] for line in _git("status", "--porcelain", "thotd", "thot").splitlines()]
    except OSError:
        pass
    return info


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path, requirements: list[str], probe: str | None = None) -> Path:
    """A throwaway venv with ``requirements`` installed, for an anchor measured beside us;
    made when its python is missing or cannot run ``probe`` (isolated, from a temporary
    folder, so this checkout's packages cannot shadow the anchor's). Returns its python."""
    py = venv_python(venv)
    ok = py.exists() and (probe is None or subprocess.run(
        [str(py), "-I", "-c", probe], cwd=tempfile.gettempdir(), capture_output=True,
    ).returncode == 0)
    if not ok:
        print(f"creating {venv} with {' '.join(requirements)} ...", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *requirements], check=True)
    return py


# ---------------------------------------------------------------------------- timings


def pct(values: list[float], q: float) -> float:
    """Percentile by linear interpolation (q in 0..100)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(v: float | None, nd: int = 3, unit: str = "") -> str:
    return "-" if v is None else f"{v:.{nd}f}{unit}"


# ---------------------------------------------------------------------------- verdicts


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "FAIL")


def print_goals(goals: Mapping[str, bool]) -> bool:
    """Print ``goals: name=PASS, ...``; whether every goal passed."""
    print("goals: " + ", ".join(f"{k}={verdict(v)}" for k, v in goals.items()))
    return all(goals.values())


def stamp() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")


def now_iso() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def write_result(name: str, quick: bool, data: dict[str, Any]) -> Path:
    """``bench/results/<name>-<date-time>[-quick].json`` (git-ignored: copy the numbers that
    matter into ``bench/README.md``)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}-{stamp()}{'-quick' if quick else ''}.json"
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return out
