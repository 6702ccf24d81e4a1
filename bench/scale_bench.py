"""Does the initial full run slow down as the project grows? (issue 12, goal 3)

``--full-run`` generates ``bench/gen.py`` G×S projects, replaces their three scripts with a
trivial one (``pass``: what is left of a run's time is thotd's own overhead), runs ``thot run``
on each from an empty state database and prints the time per run, overall and steady (from
the runs' finish times in the state database: start-up left out). PASS when the steady
per-run overhead of the largest size is within 1.5x of the smallest's (ratios within one run
of this script, on one machine).

    python bench/scale_bench.py --full-run            # 10x10 and 100x100
    python bench/scale_bench.py --full-run --big      # and 300x100 (slow: 30,301 runs)
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import gen  # noqa: E402
from bench.common import REPO, clean_env  # noqa: E402

#: The largest size's per-run overhead may be this many times the smallest's.
FLAT = 1.5
SIZES = [(10, 10), (100, 100)]
BIG = (300, 100)


def full_run(work: Path, groups: int, samples: int, jobs: int) -> dict[str, float]:
    """One size: generate, trivialise the scripts, ``thot run``; per-run times in ms."""
    tree = work / f"g{groups}x{samples}"
    project = gen.make_gs(tree, groups, samples)
    for script in (tree / "analysis").glob("*.py"):
        script.write_text("pass\n", encoding="utf-8")
    state = work / f"state-{groups}x{samples}" / "thot.db"
    state.parent.mkdir(parents=True)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "thotd.cli.thot", "--state", str(state),
           "run", "--root", str(project), "-j", str(jobs), "--json"]
    env = {**clean_env(), "PYTHONPATH": str(REPO)}  # this checkout's thot
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    rep = json.loads(proc.stdout)
    runs = len(rep["runs"])
    ok = rep["counts"].get("ok", 0)
    if proc.returncode != 0 or ok != runs:
        raise SystemExit(f"{groups}x{samples}: thot run failed: {rep['counts']}\n{proc.stderr[-2000:]}")
    return {"runs": runs, "wall_s": wall, "ms_per_run": 1000 * rep["elapsed_s"] / runs,
            **steady(state)}


def steady(state: Path) -> dict[str, float]:
    """Time per finished run in the run's first and last fifths, and between its 10th and
    90th percentile (start-up and the fork server's warm-up left out): a queue that costs
    O(queue) per run shows as a gap between the first fifth (queue full) and the last."""
    db = sqlite3.connect(state)
    ends = sorted(r[0] for r in db.execute("SELECT finished FROM history"))
    db.close()
    n = len(ends)

    def per_run(a: float, b: float) -> float:
        i, j = int(a * (n - 1)), int(b * (n - 1))
        return 1000 * (ends[j] - ends[i]) / max(1, j - i)

    return {"steady_ms": per_run(0.1, 0.9), "first_ms": per_run(0.1, 0.3),
            "last_ms": per_run(0.7, 0.9)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full-run", action="store_true", required=True,
                    help="per-run overhead of the initial full run (the only mode so far)")
    ap.add_argument("--big", action="store_true", help=f"add {BIG[0]}x{BIG[1]}")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    sizes = SIZES + ([BIG] if args.big else [])
    rows = []
    # (a fork server may still be closing its files as the folder goes)
    with tempfile.TemporaryDirectory(prefix="thotd-scale-", ignore_cleanup_errors=True) as tmp:
        for g, s in sizes:
            print(f"{g}x{s}: full run ...", flush=True)
            rows.append(((g, s), full_run(Path(tmp), g, s, args.jobs)))
            print(f"  {rows[-1][1]}", flush=True)
    print(f"| G×S | runs | wall | elapsed / run | steady / run (10-90 %) "
          f"| early (10-30 %) | late (70-90 %) |  (-j {args.jobs}, ms)")
    print("|---|---|---|---|---|---|---|")
    for (g, s), r in rows:
        print(f"| {g}×{s} | {r['runs']:.0f} | {r['wall_s']:.1f} s | {r['ms_per_run']:.1f} "
              f"| {r['steady_ms']:.1f} | {r['first_ms']:.1f} | {r['last_ms']:.1f} |")
    ratio = rows[-1][1]["steady_ms"] / rows[0][1]["steady_ms"]
    verdict = "PASS" if ratio <= FLAT else "FAIL"
    (g, s), _ = rows[-1]
    print(f"{verdict}: steady per-run overhead at {g}×{s} is {ratio:.2f}x that at "
          f"{rows[0][0][0]}×{rows[0][0][1]} (flat within {FLAT}x)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
