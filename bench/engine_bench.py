"""Engine bench: ``thot run --changed`` reacting to one new sample, vs Snakemake.

Issue: a 100 × 10 project (1,111 runs). After one new sample: the runs executed (3), the wall
time of ``thot run --changed``, and the engine's own share (wall time minus the three
scripts' run time). Side by side in the same run, Snakemake (installed by the bench into a
throwaway venv under ``bench/.venvs/``) with an equivalent Snakefile reacting to the same
change. Goals: the engine's share under 200 ms, and the whole reaction at least 5× faster
than Snakemake's. Report the ratio.

What it does:

1. ``make_gs(G, S)`` twice (two identical trees, one per tool, under
   ``bench/work/engine-<G>x<S>-<stamp>/``).
2. thotd: ``thot --state X run --root P -j 2`` once (every run: G·S + G + 1 of them).
   Snakemake: ``snakemake --cores 2`` once on the equivalent Snakefile (same count of jobs).
3. ``--drops`` times: ``add_sample`` into a group of each tree (a new sample each time, the
   same one on both sides; the order of the two sides alternates from drop to drop), then
   time, as a subprocess from the parent (wall):

   * ``thot --state X run --root P --changed --json`` — checks that exactly the three
     expected runs executed (the sample's, its group's, the root's), all ``ok``; the engine's
     share is wall minus the sum of the three runs' ``duration_s`` (each: spawn to exit of
     the script's process, interpreter start-up included);
   * ``snakemake --cores 2`` — checks it ran 3 jobs.

   Both sides' ``summary.txt`` are compared with the expected summary computed in the bench
   from the raw files (so a wrong or missing run shows up as a failed check).
4. Prints a table of medians and writes ``bench/results/engine-<date-time>[-quick].json``.

Snakemake's rules (``--snakemake-mode``): ``shell`` (default) runs each step as
``<this python> step.py ...`` — one process per job, like thotd's runs, with the same tiny
computation but *without* the Thot library (no index query, no asset file written); ``run``
computes in ``run:`` blocks — which Snakemake 8's local executor runs by spawning a whole
Snakemake process per job (``executors/local.py``: "run directive jobs are spawned into
subprocesses"), so it is the slower of the two here (about 0.6 s per job).

Usage::

    python bench/engine_bench.py               # 100 x 10, 5 drops
    python bench/engine_bench.py --quick       # 10 x 10, 3 drops
    python bench/engine_bench.py --skip-snakemake
    python bench/engine_bench.py --snakemake-mode run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SNAKEMAKE_REQ = "snakemake==8.30.0"  # 8.x supports Python 3.11; pinned for comparable numbers

sys.path.insert(0, str(BENCH))
import gen  # noqa: E402
from common import (  # noqa: E402
    REPO,
    VENVS,
    WORK,
    clean_env,
    ensure_venv,
    fmt,
    machine_info,
    med,
    now_iso,
    print_goals,
    write_result,
)

SMK_VENV = VENVS / "snakemake"
THOT_VENV = VENVS / "thotd"

def pick_drop(k: int, groups: int, samples: int) -> tuple[str, str]:
    """The k-th new sample: spread over the groups, a fresh name each time."""
    gw = len(str(max(groups - 1, 1)))
    sw = max(3, len(str(max(samples - 1, 1))))
    g = (k * 7) % groups
    return f"group-{g:0{gw}d}", f"sample-{samples + k:0{sw}d}"


Layout = dict[str, dict[str, list[float]]]  # group -> sample -> raw numbers


def read_layout(project: Path) -> Layout:
    """Every sample's raw numbers, read from the ``raw/data.csv`` files on disk."""
    out: Layout = {}
    for gdir in sorted(project.iterdir()):
        if not gdir.name.startswith("group-") or not (gdir / "_container.json").exists():
            continue
        samples = out.setdefault(gdir.name, {})
        for sdir in sorted(gdir.iterdir()):
            data = sdir / "raw" / "data.csv"
            if sdir.name.startswith("sample-") and data.exists():
                rows = data.read_text(encoding="utf-8").split()
                samples[sdir.name] = [float(x) for x in rows[1:] if x]
    return out


def summary_from_layout(layout: Layout) -> str:
    """What ``summary.txt`` must hold for these raw numbers.

    Mirrors ``bench/gen.py``'s three scripts (same order of sums, same float formatting,
    numbers passing through ``repr`` text as they do between the scripts), so it is an oracle
    independent of both tools.
    """
    out = []
    grand = 0.0
    n_samples = 0
    for g in sorted(layout):
        total = 0.0
        for s in sorted(layout[g]):
            nums = layout[g][s]
            total += float(repr(sum(nums) / len(nums)))
        out.append(f"{g} samples={len(layout[g])} sum={total!r}")
        n_samples += len(layout[g])
        grand += float(repr(total))
    head = f"groups={len(out)} samples={n_samples} sum={grand!r}\n"
    return head + "".join(line + "\n" for line in out)


def expected_summary(project: Path) -> str:
    """The expected ``summary.txt`` for the raw files now on disk."""
    return summary_from_layout(read_layout(project))


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


# --- thotd side ------------------------------------------------------------------------------


def thot_python() -> Path:
    return THOT_VENV / "bin" / "python"


def ensure_thotd() -> str:
    """Install this checkout into its own throwaway venv, the way a user installs it (and
    the way Snakemake is measured): a regular ``pip install``, bytecode compiled, no
    development import hook. Measured in the development interpreter instead, every
    process of ours would also pay an editable install's finder and whatever ``.pth`` files
    that interpreter carries (~20 ms each here) that a user's install does not. Returns the
    installed version."""
    py = thot_python()
    if py.exists():  # the code under test moves: reinstall it (its dependencies stay)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(REPO)],
            check=True,
        )
    else:
        ensure_venv(THOT_VENV, [str(REPO)])
    shutil.rmtree(REPO / "build", ignore_errors=True)  # what an in-tree build leaves
    out = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('thotd'))"],
                         capture_output=True, text=True, check=True, env=clean_env())
    return out.stdout.strip()


def thot_cmd(state: Path, *args: str) -> list[str]:
    return [str(thot_python()), "-m", "thotd.cli.thot", "--state", str(state), *args]


@dataclass
class ThotSide:
    """A G×S tree run by ``thot run``; its state database beside it."""

    work: Path
    groups: int
    samples: int
    jobs: int = 2
    project: Path = field(init=False)
    state: Path = field(init=False)
    full: dict[str, Any] = field(default_factory=dict)

    def setup(self) -> None:
        self.project = gen.make_gs(self.work / "tree", self.groups, self.samples)
        self.state = self.work / "state" / "thot.db"
        self.state.parent.mkdir(parents=True, exist_ok=True)

    def full_run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        proc = subprocess.run(
            thot_cmd(
                self.state, "run", "--root", str(self.project), "-j", str(self.jobs), "--json"
            ),
            capture_output=True,
            text=True,
            env=clean_env(),
        )
        wall = time.perf_counter() - t0
        out: dict[str, Any] = {"wall_s": wall, "exit": proc.returncode}
        try:
            rep = json.loads(proc.stdout)
            out.update(
                counts=rep["counts"],
                considered=rep["considered"],
                elapsed_s=rep["elapsed_s"],
                scripts_s=sum(r["duration_s"] for r in rep["runs"]),
            )
        except (json.JSONDecodeError, KeyError):
            out["error"] = (proc.stderr or proc.stdout)[-2000:]
        out["summary_ok"] = read_text(self.summary_file()) == expected_summary(self.project)
        self.full = out
        return out

    def summary_file(self) -> Path:
        return self.project / "summary" / "summary.txt"

    def expected_keys(self, group: str, sample: str) -> set[tuple[str, str]]:
        scripts = self.work / "tree" / "analysis"
        return {
            (str(self.project / group / sample), str(scripts / "sample.py")),
            (str(self.project / group), str(scripts / "group.py")),
            (str(self.project), str(scripts / "summary.py")),
        }

    def noop(self) -> dict[str, Any]:
        """``thot run --changed`` with nothing stale: the engine's fixed cost alone."""
        t0 = time.perf_counter()
        proc = subprocess.run(
            thot_cmd(self.state, "run", "--root", str(self.project), "--changed", "--json"),
            capture_output=True,
            text=True,
            env=clean_env(),
        )
        wall = time.perf_counter() - t0
        try:
            rep = json.loads(proc.stdout)
            return {"wall_s": wall, "runs": len(rep["runs"]), "in_process_s": rep["elapsed_s"]}
        except (json.JSONDecodeError, KeyError):
            return {"wall_s": wall, "error": (proc.stderr or proc.stdout)[-2000:]}

    def react(self, group: str, sample: str) -> dict[str, Any]:
        gen.add_sample(self.project, group, sample)
        expected = expected_summary(self.project)
        t0 = time.perf_counter()
        proc = subprocess.run(
            thot_cmd(self.state, "run", "--root", str(self.project), "--changed", "--json"),
            capture_output=True,
            text=True,
            env=clean_env(),
        )
        wall = time.perf_counter() - t0
        out: dict[str, Any] = {
            "group": group,
            "sample": sample,
            "wall_s": wall,
            "exit": proc.returncode,
        }
        try:
            rep = json.loads(proc.stdout)
        except json.JSONDecodeError:
            out["error"] = (proc.stderr or proc.stdout)[-2000:]
            out["ok"] = False
            return out
        runs = rep["runs"]
        scripts = sum(r["duration_s"] for r in runs)
        keys = {(r["container"], r["script"]) for r in runs}
        out.update(
            runs=len(runs),
            run_list=[
                {
                    "container": r["container"],
                    "script": os.path.basename(r["script"]),
                    "status": r["status"],
                    "duration_s": r["duration_s"],
                    "reasons": r["reasons"],
                }
                for r in runs
            ],
            scripts_s=scripts,
            engine_share_s=wall - scripts,
            in_process_s=rep["elapsed_s"],
            in_process_share_s=rep["elapsed_s"] - scripts,
            considered=rep["considered"],
            expected_runs=keys == self.expected_keys(group, sample) and len(runs) == 3,
            all_ok=all(r["status"] == "ok" for r in runs),
            summary_ok=read_text(self.summary_file()) == expected,
        )
        out["ok"] = out["expected_runs"] and out["all_ok"] and out["summary_ok"]
        return out


# --- Snakemake side ------------------------------------------------------------------------

from snakefiles import _SMK_GROUP, _SMK_SAMPLE, _SMK_SUMMARY, SNAKEFILES  # noqa: E402

_STEPS_RE = re.compile(r"(\d+) of (\d+) steps \(100%\) done")
_JOB_RE = re.compile(r"^\s*(?:local)?rule (\w+):", re.M)


def snakemake_bin() -> Path:
    return SMK_VENV / "bin" / "snakemake"


def ensure_snakemake() -> tuple[str | None, str | None]:
    """Create the throwaway venv with Snakemake if missing. Returns (version, error)."""
    exe = snakemake_bin()

    def version() -> str | None:
        if not exe.exists():
            return None
        p = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=clean_env())
        return p.stdout.strip() if p.returncode == 0 else None

    v = version()
    if v:
        return v, None
    try:
        ensure_venv(SMK_VENV, [SNAKEMAKE_REQ], probe="import snakemake")
    except (subprocess.CalledProcessError, OSError) as exc:
        return None, f"cannot install {SNAKEMAKE_REQ}: {exc}"
    v = version()
    return (v, None) if v else (None, f"{exe} does not run after install")


@dataclass
class SnakemakeSide:
    """The same G×S tree driven by an equivalent Snakefile."""

    work: Path
    groups: int
    samples: int
    mode: str = "shell"
    cores: int = 2
    full: dict[str, Any] = field(default_factory=dict)

    @property
    def project(self) -> Path:
        return self.work / "project"

    def setup(self) -> None:
        gen.make_gs(self.work, self.groups, self.samples)  # same raw files; Thot files ignored
        steps = self.work / "steps"
        steps.mkdir(exist_ok=True)
        for name, text in (
            ("sample.py", _SMK_SAMPLE),
            ("group.py", _SMK_GROUP),
            ("summary.py", _SMK_SUMMARY),
        ):
            (steps / name).write_text(text, encoding="utf-8")
        (self.work / "Snakefile").write_text(SNAKEFILES[self.mode], encoding="utf-8")

    def cmd(self) -> list[str]:
        return [
            str(snakemake_bin()),
            "--cores",
            str(self.cores),
            "--snakefile",
            str(self.work / "Snakefile"),
            "--directory",
            str(self.work),
            "--config",
            f"python={SMK_VENV / 'bin' / 'python'}",
        ]

    def invoke(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        proc = subprocess.run(
            self.cmd(), capture_output=True, text=True, env=clean_env(), cwd=self.work
        )
        wall = time.perf_counter() - t0
        text = proc.stdout + proc.stderr
        # Jobs that did work: one "rule X:" block per job; the aggregate target `all` (a
        # localrule with no action, counted in Snakemake's "N of M steps") is left out.
        names = [n for n in _JOB_RE.findall(text) if n != "all"]
        m = _STEPS_RE.findall(text)
        steps = int(m[-1][0]) if m else (0 if "Nothing to be done" in text else None)
        by_rule: dict[str, int] = {}
        for n in names:
            by_rule[n] = by_rule.get(n, 0) + 1
        out: dict[str, Any] = {
            "wall_s": wall,
            "exit": proc.returncode,
            "jobs": len(names),
            "jobs_by_rule": by_rule,
            "steps": steps,
        }
        if proc.returncode != 0:
            out["error"] = text[-3000:]
        return out

    def full_run(self) -> dict[str, Any]:
        out = self.invoke()
        out["summary_ok"] = read_text(self.summary_file()) == expected_summary(self.project)
        self.full = out
        return out

    def summary_file(self) -> Path:
        return self.project / "summary" / "summary.txt"

    def react(self, group: str, sample: str) -> dict[str, Any]:
        gen.add_sample(self.project, group, sample)
        expected = expected_summary(self.project)
        out = self.invoke()
        out.update(
            group=group, sample=sample, summary_ok=read_text(self.summary_file()) == expected
        )
        out["ok"] = (
            out["exit"] == 0
            and out["summary_ok"]
            and out["jobs_by_rule"] == {"sample": 1, "group": 1, "summary": 1}
        )
        return out


def snakemake_reaction(
    work: Path,
    groups: int,
    samples: int,
    drops: int,
    *,
    mode: str = "shell",
    cores: int = 2,
    log: Any = print,
) -> dict[str, Any]:
    """Set up a Snakemake side, run it fully, then time ``drops`` reactions (for daemon_bench)."""
    version, err = ensure_snakemake()
    if err:
        return {"available": False, "error": err}
    side = SnakemakeSide(work, groups, samples, mode=mode, cores=cores)
    side.setup()
    log(f"snakemake {version}: full run of {groups * samples + groups + 1} jobs ...")
    full = side.full_run()
    log(f"  full run: {full['wall_s']:.1f} s, {full['jobs']} jobs, exit {full['exit']}")
    if full["exit"] != 0:
        return {"available": False, "version": version, "error": full.get("error"), "full": full}
    reacts = []
    for k in range(drops):
        g, s = pick_drop(k, groups, samples)
        r = side.react(g, s)
        reacts.append(r)
        log(
            f"  drop {k + 1}: snakemake {r['wall_s']:.3f} s, {r['jobs']} jobs"
            + ("" if r["ok"] else "  CHECK FAILED")
        )
    walls = [r["wall_s"] for r in reacts]
    return {
        "available": True,
        "version": version,
        "mode": mode,
        "cores": cores,
        "full": full,
        "drops": reacts,
        "wall_s_median": med(walls),
        "wall_s_min": min(walls),
        "all_ok": all(r["ok"] for r in reacts),
    }


def baseline(repeat: int = 5) -> dict[str, Any]:
    """Fixed costs any process-per-invocation tool pays here: interpreter start-up, and
    start-up plus the imports ``thot run`` needs."""

    def timed(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([str(thot_python()), "-c", code], check=True, env=clean_env())
        return time.perf_counter() - t0

    imports = "import thotd.cli.thot, thotd.engine.oneshot, thotd.engine.staleness, thotd.project.index, thotd.engine.state"
    return {
        "python_start_s_median": med([timed("pass") for _ in range(repeat)]),
        "python_thotd_imports_s_median": med([timed(imports) for _ in range(repeat)]),
    }


# --- main --------------------------------------------------------------------------------


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--drops", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2, help="-j of the initial full thot run")
    ap.add_argument("--quick", action="store_true", help="10 x 10 project, 3 drops")
    ap.add_argument("--skip-snakemake", action="store_true")
    ap.add_argument("--snakemake-mode", choices=sorted(SNAKEFILES), default="shell")
    ap.add_argument("--keep", action="store_true", help="keep the generated trees")
    ap.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = ap.parse_args(argv)
    if args.quick:
        args.groups, args.samples, args.drops = 10, 10, 3
    return args


@dataclass
class Sides:
    """Both tools after their full runs (``smk`` None when Snakemake is not measured)."""

    thot: ThotSide
    full: dict[str, Any]
    smk: SnakemakeSide | None = None
    smk_version: str | None = None
    smk_error: str | None = None


def _full_runs(args: argparse.Namespace, work: Path, n_runs: int) -> Sides:
    G, S = args.groups, args.samples
    thot = ThotSide(work / "thot", G, S, jobs=args.jobs)
    thot.setup()
    print(f"thot: full run of {n_runs} runs (-j {args.jobs}) on {thot.project} ...", flush=True)
    full = thot.full_run()
    print(f"  full run: {full['wall_s']:.1f} s, {full.get('counts')}, summary "
          f"{'ok' if full['summary_ok'] else 'WRONG'}", flush=True)
    if full.get("error"):
        print(full["error"], file=sys.stderr)
    sides = Sides(thot, full)
    if args.skip_snakemake:
        return sides
    sides.smk_version, sides.smk_error = ensure_snakemake()
    if sides.smk_error:
        print(f"snakemake unavailable: {sides.smk_error}", flush=True)
        return sides
    smk = SnakemakeSide(work / "snakemake", G, S, mode=args.snakemake_mode)
    smk.setup()
    print(f"snakemake {sides.smk_version} ({args.snakemake_mode} rules): full run of "
          f"{n_runs} jobs (--cores 2) ...", flush=True)
    sf = smk.full_run()
    print(f"  full run: {sf['wall_s']:.1f} s, {sf['jobs']} jobs, exit {sf['exit']}, "
          f"summary {'ok' if sf['summary_ok'] else 'WRONG'}", flush=True)
    if sf["exit"] != 0:
        sides.smk_error = f"full run failed: {sf.get('error')}"
        print(sides.smk_error, flush=True)
    else:
        sides.smk = smk
    return sides


def _drops(args: argparse.Namespace, sides: Sides) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Drop a new sample ``--drops`` times; each side reacts, which goes first alternates."""
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for k in range(args.drops):
        g, s = pick_drop(k, args.groups, args.samples)
        order = ["thot", "smk"] if k % 2 == 0 else ["smk", "thot"]
        parts = {"thot": "", "smk": ""}
        for side in order:
            if side == "thot":
                r = sides.thot.react(g, s)
                ours.append(r)
                parts["thot"] = (f" thot {r['wall_s']:.3f} s wall, {r.get('runs')} runs, "
                                 f"engine {fmt(r.get('engine_share_s'))} s"
                                 + ("" if r["ok"] else " CHECK FAILED"))
            elif sides.smk is not None:
                r = sides.smk.react(g, s)
                theirs.append(r)
                parts["smk"] = (f" | snakemake {r['wall_s']:.3f} s, {r['jobs']} jobs"
                                + ("" if r["ok"] else " CHECK FAILED"))
        print(f"  drop {k + 1} ({g}/{s}, {order[0]} first):{parts['thot']}{parts['smk']}", flush=True)
        if not ours[-1]["ok"]:
            print(json.dumps(ours[-1], indent=2), file=sys.stderr)
    return ours, theirs


def _summarise(ours: list[dict[str, Any]], noops: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in ours if "engine_share_s" in r]
    return {
        "wall_s_median": med([r["wall_s"] for r in good]),
        "wall_s_min": min((r["wall_s"] for r in good), default=None),
        "scripts_s_median": med([r["scripts_s"] for r in good]),
        "engine_share_s_median": med([r["engine_share_s"] for r in good]),
        "engine_share_s_max": max((r["engine_share_s"] for r in good), default=None),
        "in_process_share_s_median": med([r["in_process_share_s"] for r in good]),
        "runs_executed": [r.get("runs") for r in ours],
        "noop_wall_s_median": med([r["wall_s"] for r in noops]),
        "noop_runs": [r.get("runs") for r in noops],
        "noop": noops,
        **baseline(),
        "all_ok": bool(ours) and all(r["ok"] for r in ours),
    }


def _summarise_smk(args: argparse.Namespace, sides: Sides, theirs: list[dict[str, Any]]) -> dict[str, Any] | None:
    if sides.smk is None or not theirs:
        return None
    return {
        "version": sides.smk_version,
        "mode": args.snakemake_mode,
        "wall_s_median": med([r["wall_s"] for r in theirs]),
        "wall_s_min": min(r["wall_s"] for r in theirs),
        "jobs": [r["jobs"] for r in theirs],
        "all_ok": all(r["ok"] for r in theirs),
    }


def _print_table(args: argparse.Namespace, n_runs: int, sides: Sides, summ: dict[str, Any],
                 smk_summ: dict[str, Any] | None, ratio: float | None) -> None:
    print()
    print(f"project: {args.groups} x {args.samples} ({n_runs} runs), {args.drops} drops, medians")
    head = (f"{'tool':<28}{'runs/jobs':>10}{'wall s':>9}{'scripts s':>11}"
            f"{'own share s':>13}{'full run s':>12}{'ratio':>8}")
    print(head)
    print("-" * len(head))
    print(f"{'thot run --changed':<28}{str(sorted(set(summ['runs_executed']))):>10}"
          f"{fmt(summ['wall_s_median']):>9}{fmt(summ['scripts_s_median']):>11}"
          f"{fmt(summ['engine_share_s_median']):>13}{sides.full['wall_s']:>12.1f}{'1.0x':>8}")
    if smk_summ:
        label = f"snakemake {sides.smk_version} ({args.snakemake_mode})"
        print(f"{label:<28}{str(sorted(set(smk_summ['jobs']))):>10}"
              f"{fmt(smk_summ['wall_s_median']):>9}{'-':>11}{'-':>13}"
              f"{sides.smk.full['wall_s'] if sides.smk else 0:>12.1f}{fmt(ratio, 1, 'x'):>8}")
    elif not args.skip_snakemake:
        print(f"{'snakemake':<28} NOT MEASURED: {sides.smk_error}")
    print("wall: the whole `thot run --changed` process (interpreter start, imports, index "
          "load, staleness, the runs); scripts: sum of the 3 runs' durations; own share = "
          "wall - scripts.")
    print(f"own share, broken down: in-process run_project minus scripts "
          f"{fmt(summ['in_process_share_s_median'])} s; `thot run --changed` with nothing "
          f"stale {fmt(summ['noop_wall_s_median'])} s (runs: {summ['noop_runs']}); "
          f"python start-up {fmt(summ['python_start_s_median'])} s, + thotd imports "
          f"{fmt(summ['python_thotd_imports_s_median'])} s")


def _goals(ours: list[dict[str, Any]], summ: dict[str, Any], full: dict[str, Any],
           ratio: float | None) -> dict[str, bool]:
    share = summ["engine_share_s_median"]
    goals: dict[str, bool] = {
        "three_runs_each_drop": all(r.get("runs") == 3 and r.get("expected_runs") for r in ours),
        "noop_runs_nothing": all(r.get("runs") == 0 for r in summ["noop"]),
        "results_correct": summ["all_ok"] and bool(full["summary_ok"]),
        "engine_share_under_200ms": share is not None and share < 0.2,
    }
    if ratio is not None:
        goals["at_least_5x_faster_than_snakemake"] = ratio >= 5.0
    return goals


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    G, S = args.groups, args.samples
    n_runs = G * S + G + 1
    work = WORK / f"engine-{G}x{S}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    machine = machine_info()
    machine["thotd_venv"] = str(THOT_VENV)
    machine["thotd_version"] = ensure_thotd()
    try:
        sides = _full_runs(args, work, n_runs)
        ours, theirs = _drops(args, sides)
        summ = _summarise(ours, [sides.thot.noop() for _ in range(3)])
        smk_summ = _summarise_smk(args, sides, theirs)
        ratio = (smk_summ["wall_s_median"] / summ["wall_s_median"]
                 if smk_summ and summ["wall_s_median"] else None)
        _print_table(args, n_runs, sides, summ, smk_summ, ratio)
        goals = _goals(ours, summ, sides.full, ratio)
        passed = print_goals(goals)
        if ratio is None and not args.skip_snakemake:
            print("ratio goal: not measured (snakemake unavailable)")
        if not args.no_save:
            write_result("engine", args.quick, {
                "bench": "engine",
                "date": now_iso(),
                "project": {"groups": G, "samples": S, "runs": n_runs, "work": str(work)},
                "drops": args.drops,
                "machine": machine,
                "thot": {"full": sides.full, "drops": ours, **summ},
                "snakemake": smk_summ and {**smk_summ, "full": sides.smk.full if sides.smk else None,
                                           "drops": theirs},
                "snakemake_error": sides.smk_error,
                "ratio_wall_median": ratio,
                "goals": goals,
            })
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
