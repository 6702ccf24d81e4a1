"""Index bench: cold load of a generated project, thotd vs the original thot-data 0.0.2.

Issue: index a generated project of 10,000 containers and 10,000 assets.  Goals: cold load
under 1 s (issue 12: at most 0.5 s), at least 10x faster than ``thot-data==0.0.2`` loading the same tree, under 100 MB
RSS; the ratio measured side by side in one run.

What is measured, per side, in a fresh subprocess (so nothing is cached in-process):

* original: ``from thot.thot import LocalProject``; ``p = LocalProject(root)`` (this eagerly
  walks the whole tree — twice, one LocalCollection for containers and one for assets);
  ``p.find_containers({})``; ``p.find_assets({})``.  Run with the throwaway venv's python in
  isolated mode (``-I``) from a temporary cwd, so the other ``thot`` (ours, in /work/main)
  cannot shadow it.
* thotd: ``from thotd.project.index import load_project``; ``idx = load_project(root)``;
  ``idx.find_containers({})``; ``idx.find_assets({})``.

``load`` = construct + both finds, timed inside the child with ``perf_counter`` after imports;
``wall`` = the whole child process (interpreter start + imports + load), timed by the parent.
Peak RSS is the child's ``getrusage(RUSAGE_SELF).ru_maxrss``.  Sides alternate, ``--repeat``
times each; median and min reported.  The ratio is original median / ours median.

Caveat: the page cache cannot be dropped here (it needs root on the host:
``echo 3 > /proc/sys/vm/drop_caches``), so "cold" means a fresh process, not a cold disk: the
tree was just written or read and sits in the page cache for both sides alike.

Usage::

    python bench/index_bench.py                    # 10k containers + 10k assets, 3 repeats
    python bench/index_bench.py --quick            # 1k + 1k
    python bench/index_bench.py --containers 20000 --assets 20000 --repeat 5
    python bench/index_bench.py --skip-original
    python bench/index_bench.py --original-containers 2000 --original-assets 2000
        # measure the original on a smaller tree and extrapolate linearly (labelled)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

sys.path.insert(0, str(BENCH))
import common  # noqa: E402
import gen  # noqa: E402
from common import REPO, VENVS, WORK, clean_env, fmt, print_goals, write_result  # noqa: E402

VENV = VENVS / "thot-orig"

ORIGINAL_REQ = ["thot-data==0.0.2", "pymongo"]

_CHILD_ORIGINAL = r"""
import json, resource, sys, time
root = sys.argv[1]
t0 = time.perf_counter()
from thot.thot import LocalProject
import thot
t1 = time.perf_counter()
p = LocalProject(root)
t2 = time.perf_counter()
cs = p.find_containers({})
as_ = p.find_assets({})
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "construct_s": t2 - t1, "find_s": t3 - t2,
                  "load_s": t3 - t1, "containers": len(cs), "assets": len(as_),
                  "module": thot.__path__[0],
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_CHILD_OURS = r"""
import json, resource, sys, time
root = sys.argv[1]
t0 = time.perf_counter()
from thotd.project.index import load_project
import thotd
t1 = time.perf_counter()
c1 = time.process_time()
idx = load_project(root)
t2 = time.perf_counter()
cs = idx.find_containers({})
as_ = idx.find_assets({})
t3 = time.perf_counter()
c3 = time.process_time()
print(json.dumps({"import_s": t1 - t0, "construct_s": t2 - t1, "find_s": t3 - t2,
                  "load_s": t3 - t1, "cpu_s": c3 - c1, "containers": len(cs), "assets": len(as_),
                  "module": thotd.__file__,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def venv_python() -> Path:
    return common.venv_python(VENV)


def ensure_venv() -> Path:
    """The throwaway venv with the original installed (made if missing); its python."""
    return common.ensure_venv(VENV, ORIGINAL_REQ, probe="import thot.thot")


def ensure_tree(containers: int, assets: int, seed: int, depth: int) -> Path:
    """Generate (once) the flat tree; a marker beside it says the generation completed."""
    WORK.mkdir(parents=True, exist_ok=True)
    name = f"index-{containers}c-{assets}a-d{depth}-s{seed}"
    root = WORK / name
    marker = WORK / f"{name}.complete"
    if not marker.exists():
        if root.exists():
            import shutil

            shutil.rmtree(root)
        t0 = time.perf_counter()
        gen.make_flat(root, containers, assets, depth=depth, seed=seed)
        marker.write_text("ok\n")
        print(f"generated {root} in {time.perf_counter() - t0:.1f} s", flush=True)
    return root


def run_child(argv: list[str], env: dict[str, str], timeout: float) -> dict:
    """Run one measurement child; return its JSON plus the wall time, or a timeout/error."""
    with tempfile.TemporaryDirectory(prefix="thotd-bench-") as cwd:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return {"timeout": True, "wall_s": time.perf_counter() - t0}
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-2000:], "wall_s": wall}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def original_cmd(root: Path) -> tuple[list[str], dict[str, str]]:
    # -I: no cwd / script dir / PYTHONPATH on sys.path, so /work/main's `thot` is invisible.
    return [str(venv_python()), "-I", "-c", _CHILD_ORIGINAL, str(root)], clean_env()


def ours_cmd(root: Path) -> tuple[list[str], dict[str, str]]:
    env = clean_env()
    env["PYTHONPATH"] = str(REPO)
    return [sys.executable, "-c", _CHILD_OURS, str(root)], env


def summarise(runs: list[dict], scale: float = 1.0) -> dict:
    good = [r for r in runs if "load_s" in r]
    out: dict = {"runs": runs, "ok": len(good), "scale": scale}
    if not good:
        out["timeouts"] = sum(1 for r in runs if r.get("timeout"))
        out["errors"] = [r["error"] for r in runs if "error" in r]
        return out
    for key in ("load_s", "wall_s", "construct_s", "find_s", "import_s", "cpu_s"):
        vals = [r[key] * scale for r in good if key in r]
        if not vals:
            continue
        out[f"{key}_median"] = statistics.median(vals)
        out[f"{key}_min"] = min(vals)
    out["maxrss_mb_max"] = max(r["maxrss_mb"] for r in good)
    out["containers"] = good[0]["containers"]
    out["assets"] = good[0]["assets"]
    return out


def machine_info() -> dict:
    """The engine bench's machine record, plus the original's Python."""
    info = common.machine_info()
    info["python_original"] = (
        subprocess.run(
            [str(venv_python()), "-I", "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if venv_python().exists()
        else None
    )
    return info


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--containers", type=int, default=10_000)
    ap.add_argument("--assets", type=int, default=10_000)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1,000 containers + 1,000 assets")
    ap.add_argument("--skip-original", action="store_true")
    ap.add_argument("--timeout", type=float, default=600.0,
                    help="per original run, seconds (reported as '> X s' when hit)")
    ap.add_argument("--original-containers", type=int,
                    help="measure the original on a smaller tree and extrapolate linearly")
    ap.add_argument("--original-assets", type=int)
    ap.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = ap.parse_args(argv)
    if args.quick:
        args.containers, args.assets = 1_000, 1_000
    return args


def _original_tree(args: argparse.Namespace, root: Path) -> tuple[Path, float]:
    """The tree the original loads, and the factor that scales its times to ``root``'s."""
    if not (args.original_containers or args.original_assets):
        return root, 1.0
    oc = args.original_containers or args.containers
    oa = args.original_assets if args.original_assets is not None else args.assets
    return ensure_tree(oc, oa, args.seed, args.depth), (args.containers + args.assets) / (oc + oa)


def _measure(label: str, argv_env: tuple[list[str], dict[str, str]], timeout: float, i: int) -> dict:
    r = run_child(*argv_env, timeout=timeout)
    print(f"  run {i + 1}: {label:<8} {fmt(r.get('load_s'))} s load, {fmt(r.get('wall_s'))} s wall"
          + (" TIMEOUT" if r.get("timeout") else "") + (" ERROR" if r.get("error") else ""),
          flush=True)
    if r.get("error"):
        print(r["error"], file=sys.stderr)
    return r


def _row(label: str, args: argparse.Namespace, summary: dict, ratio: str) -> str:
    """One line of the table: the measured numbers, a timeout or the errors."""
    if summary["ok"]:
        return (f"{label:<26}{summary['containers']:>11}{summary['assets']:>8}"
                f"{fmt(summary['load_s_median']):>10}{fmt(summary['load_s_min']):>9}"
                f"{fmt(summary['wall_s_median']):>11}{summary['maxrss_mb_max']:>12.1f}{ratio:>8}")
    if summary.get("timeouts"):
        return (f"{label:<26}{args.containers:>11}{args.assets:>8}{f'> {args.timeout:g}':>10}"
                f"   (timed out {summary['timeouts']} of {len(summary['runs'])} runs)")
    return f"{label:<26} FAILED: {summary.get('errors')}"


def _print_table(args: argparse.Namespace, root: Path, ours: dict, orig: dict | None,
                 scale: float, ratio: float | None) -> None:
    head = (f"{'tool':<26}{'containers':>11}{'assets':>8}{'median s':>10}{'min s':>9}"
            f"{'wall med s':>11}{'peak RSS MB':>12}{'ratio':>8}")
    print()
    print(f"tree: {root}  ({args.containers} containers, {args.assets} assets, depth {args.depth})")
    print(head)
    print("-" * len(head))
    if orig is not None:
        label = "thot-data 0.0.2" + (" (extrap.)" if scale != 1.0 else "")
        print(_row(label, args, orig, (fmt(ratio, 1) + "x") if ratio else "-"))
        if orig["ok"] and scale != 1.0:
            print(f"  (original measured on {orig['containers']}+{orig['assets']} objects, "
                  f"times x{scale:.2f} linearly; RSS is the measured one, not scaled)")
    print(_row("thotd (load_project)", args, ours, "1.0x"))
    if ours.get("cpu_s_median") is not None:
        print(f"thotd CPU time of the load (user + system, this process): median "
              f"{fmt(ours['cpu_s_median'])} s, min {fmt(ours['cpu_s_min'])} s "
              f"(on a shared machine the wall time also holds others' turns)")
    print("median/min s: in-process load (construct + find_containers({}) + find_assets({}));"
          " wall: whole child incl. interpreter start and imports.")
    print("page cache NOT dropped (needs host root): 'cold' = fresh process, warm disk cache.")


def _goals(args: argparse.Namespace, ours: dict, orig: dict | None, scale: float,
           ratio: float | None) -> dict[str, bool]:
    goals = {
        "load_at_most_0.5s": ours["load_s_median"] <= 0.5,  # issue 12, goal 6
        "load_under_1s": ours["load_s_median"] < 1.0,
        "wall_under_1s": ours["wall_s_median"] < 1.0,
        "rss_under_100mb": ours["maxrss_mb_max"] < 100.0,
    }
    if ratio is not None:
        goals["ratio_at_least_10x"] = ratio >= 10.0
    goals["counts_match_tree"] = (ours["containers"], ours["assets"]) == (args.containers, args.assets)
    if orig is not None and orig["ok"] and scale == 1.0:
        goals["counts_match_original"] = (orig["containers"], orig["assets"]) == (
            ours["containers"], ours["assets"])
    return goals


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    root = ensure_tree(args.containers, args.assets, args.seed, args.depth)
    do_orig = not args.skip_original
    orig_root, scale = root, 1.0
    if do_orig:
        ensure_venv()
        orig_root, scale = _original_tree(args, root)

    orig_runs: list[dict] = []
    our_runs: list[dict] = []
    for i in range(args.repeat):
        if do_orig:
            orig_runs.append(_measure("original", original_cmd(orig_root), args.timeout, i))
        our_runs.append(_measure("thotd", ours_cmd(root), args.timeout, i))

    ours = summarise(our_runs)
    orig = summarise(orig_runs, scale) if do_orig else None
    ratio = ratio_wall = None
    if orig is not None and orig["ok"] and ours["ok"]:
        ratio = orig["load_s_median"] / ours["load_s_median"]
        ratio_wall = orig["wall_s_median"] / ours["wall_s_median"]
    _print_table(args, root, ours, orig, scale, ratio)
    goals = _goals(args, ours, orig, scale, ratio) if ours["ok"] else {}
    if goals:
        print_goals(goals)

    if not args.no_save:
        write_result("index", args.quick, {
            "bench": "index",
            "date": common.now_iso(),
            "tree": {"root": str(root), "containers": args.containers, "assets": args.assets,
                     "depth": args.depth, "seed": args.seed},
            "repeat": args.repeat,
            "timeout_s": args.timeout,
            "machine": machine_info(),
            "page_cache_dropped": False,
            "original": orig and {**orig, "tree": str(orig_root), "extrapolated": scale != 1.0,
                                  "package": "thot-data==0.0.2"},
            "thotd": ours,
            "ratio_load_median": ratio,
            "ratio_wall_median": ratio_wall,
            "goals": goals,
        })
    return 0 if ours["ok"] and all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
