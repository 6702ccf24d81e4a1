"""3. Bad input on disk: each fault gives a clear error in ``status`` or is handled, and the
daemon keeps serving the rest.

One daemon watches a healthy G×S project (``good``) and a project that receives the faults
(``bad``), plus two projects that are deleted and moved away while watched. After each fault
the suite checks the fault's own outcome, then edits ``good`` and checks that exactly its
chain reruns: the rest is still served. The daemon runs without ``CAP_DAC_OVERRIDE`` (the
suite may run as root), so a ``chmod 000`` folder really is unreadable to it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ._faults import Daemon, Prober, Report, make_gs, pick, wait_for

DEEP = pick(1000, 1500)  # past the interpreter's recursion limit (1000 frames)
BULK_FILES = pick(2000, 10000)
HUGE_MB = pick(64, 256)

SAMPLE = "root:/../analysis/sample.py"


def _sample(parent: Path, name: str, data: str = "value\n1\n2\n") -> Path:
    folder = parent / name
    (folder / "raw").mkdir(parents=True)
    (folder / "_container.json").write_text(json.dumps({"type": "sample"}))
    (folder / "_scripts.json").write_text(json.dumps([{"script": SAMPLE}]))
    (folder / "raw" / "_asset.json").write_text(json.dumps({"type": "raw", "file": "data.csv"}))
    (folder / "raw" / "data.csv").write_text(data)
    return folder


def _can_drop_dac() -> list[str]:
    """A prefix that runs the daemon without the capabilities that bypass file modes."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a folder unreadable")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]


class Faults:
    def __init__(self, fd: Daemon, good: Path, reliability: Report) -> None:
        self.fd = fd
        self.good = good
        self.reliability = reliability
        self.problems: list[str] = []
        self.serial = 0

    def good_still_served(self) -> bool:
        """Edit one sample of the healthy project; its chain (3 runs) must run, all ok."""
        before = {r["id"] for r in self.fd.runs()}
        self.serial += 1
        data = self.good / "group-0" / "sample-000" / "raw" / "data.csv"
        data.write_text(f"value\n{self.serial}\n{self.serial * 7}\n")

        def chain() -> bool:
            new = [r for r in self.fd.runs() if r["id"] not in before
                   and r["container"].startswith(str(self.good)) and r["status"] != "running"]
            return sorted(Path(r["script"]).name for r in new) == [
                "group.py", "sample.py", "summary.py"] and all(r["status"] == "ok" for r in new)

        try:
            wait_for(chain, 120, "the healthy project's chain", 0.1)
        except AssertionError:
            return False
        return True

    def run(self, title: str, inject: Callable[[], Any], check: Callable[[Any], str | None],
            notes: str, tries: int = 1) -> None:
        """Inject the fault, then ``check`` it (None: as expected; polls with :func:`until`)."""
        row = self.reliability.row(title)
        with Prober(self.fd.socket, timeout=120) as prober:
            t0 = time.monotonic()
            ctx = inject()
            try:
                problem = check(ctx)
            except AssertionError as exc:
                problem = str(exc)
            took = time.monotonic() - t0
            served = self.good_still_served()
        row.tries = tries
        row.worst(prober)
        row.notes = f"{notes}; handled in {took:.1f} s"
        lost = []
        if problem:
            lost.append(problem)
        if not served:
            lost.append("the healthy project was not served afterwards")
        if prober.failures:
            lost.append(f"status failed: {prober.failures[:2]}")
        if not self.fd.alive():
            lost.append("the daemon died")
        if lost:
            row.lost = 1
            self.problems.append(f"{title}: {lost}")
            print(f"FAULT PROBLEM {title}: {lost}", flush=True)


def _invalid(fd: Daemon, root: Path) -> list[dict[str, Any]]:
    return fd.project(root)["invalid"]


def _errors_below(fd: Daemon, root: Path, folder: Path) -> list[dict[str, Any]]:
    return [e for e in _invalid(fd, root) if e["file"].startswith(str(folder))]


def until(cond: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    """Poll ``cond`` until truthy; AssertionError naming ``what`` at the deadline."""
    return wait_for(cond, timeout, what, 0.05)


@dataclass(frozen=True)
class Scene:
    """The projects the faults are applied to, watched by one daemon."""

    fd: Daemon
    good: Path  # healthy: its chain must rerun after every fault
    bad: Path  # receives the faults
    doomed: Path  # deleted while watched
    moving: Path  # moved away while watched
    tmp: Path


@dataclass(frozen=True)
class Fault:
    """One row: ``inject(scene)`` applies the fault, ``check(scene, what_inject_returned)``
    returns None when it was handled as expected, else what went wrong."""

    title: str
    inject: Callable[[Scene], Any]
    check: Callable[[Scene, Any], str | None]
    notes: str


def _scene(fd: Daemon, tmp_path: Path) -> Scene:
    """Start the daemon on the four projects and let it settle."""
    work = tmp_path / "work"
    good = make_gs(work, 2, 1)
    bad = work / "bad"
    bad.mkdir()
    (bad / "_container.json").write_text(json.dumps({"name": "bad"}))
    for i in range(2):
        _sample(bad, f"ok-{i}")
    doomed = make_gs(tmp_path / "doomed-work", 1, 1)
    moving = make_gs(tmp_path / "moving-work", 1, 1)
    fd.configure(pool={"workers": 2, "timeout_s": 60})
    fd.start()
    for project in (good, bad, doomed, moving):
        fd.add(project, wait=False)
    fd.wait_quiet(300)
    return Scene(fd, good, bad, doomed, moving, tmp_path)


def _malformed(sc: Scene) -> Path:
    bad = sc.bad
    s = _sample(bad, "malformed")
    path = s / "raw" / "_asset.json"
    path.write_text('{"type": "raw",\n  "file": ')
    return path


def _malformed_ok(sc: Scene, path: Path) -> str | None:
    fd, bad = sc.fd, sc.bad
    hits = until(lambda: [e for e in _invalid(fd, bad) if e["file"] == str(path)],
                 "the error in status")
    if hits[0]["line"] != 2 or "JSON" not in hits[0]["reason"]:
        return f"unclear error for {path}: {hits}"
    sample = str(path.parent.parent)
    if sample not in {b["container"] for b in fd.project(bad)["blocked"]}:
        return "the sample's run was not held"
    path.write_text('{"type": "raw", "file": "data.csv"}')
    until(lambda: not _errors_below(fd, bad, path.parent), "the fix to be seen")
    until((path.parent.parent / "stats" / "stats.txt").exists, "the fixed sample to run")
    return None


def _wrong_types(sc: Scene) -> Path:
    bad = sc.bad
    s = _sample(bad, "wrongtypes")
    (s / "_container.json").write_text(json.dumps({"tags": "x", "metadata": [1], "name": 5}))
    (s / "_scripts.json").write_text(json.dumps([{"script": 3, "priority": "high"}]))
    return s


def _wrong_types_ok(sc: Scene, s: Path) -> str | None:
    fd, bad = sc.fd, sc.bad
    want = {"tags", "metadata", "name", "[0].script", "[0].priority"}

    def fields() -> set[str]:
        return {e["field"] for e in _invalid(fd, bad) if e["file"].startswith(str(s))}

    try:
        until(lambda: want <= fields(), "every bad field in status")
    except AssertionError:
        return f"fields reported {fields()}, wanted {want}"
    shutil.rmtree(s)
    until(lambda: not _errors_below(fd, bad, s), "the error to go with the folder")
    return None


def _huge(sc: Scene) -> Path:
    bad = sc.bad
    s = bad / "huge"
    s.mkdir()
    blob = json.dumps({"type": "raw", "file": "d.csv", "description": "x" * (HUGE_MB << 20)})
    (s / "_asset.json").write_text(blob)
    (s / "d.csv").write_text("1\n")
    return s


def _huge_ok(sc: Scene, s: Path) -> str | None:
    fd, bad = sc.fd, sc.bad
    try:  # while it is being written it may first show as cut JSON
        until(lambda: [e for e in _invalid(fd, bad) if e["file"].startswith(str(s))
                       and "MiB" in e["reason"]], "the huge file's error")
    except AssertionError:
        return f"no clear error: {_invalid(fd, bad)}"
    shutil.rmtree(s)
    until(lambda: not _errors_below(fd, bad, s), "the error to go with the folder")
    return None


def _fifo(sc: Scene) -> Path:
    bad = sc.bad
    s = bad / "fifo"
    s.mkdir()
    os.mkfifo(s / "_asset.json")
    return s


def _fifo_ok(sc: Scene, s: Path) -> str | None:
    fd, bad = sc.fd, sc.bad
    hits = until(lambda: [e for e in _invalid(fd, bad) if e["file"].startswith(str(s))],
                 "the pipe's error")
    if "regular" not in hits[0]["reason"]:
        return f"unclear error: {hits}"
    shutil.rmtree(s)
    until(lambda: not _errors_below(fd, bad, s), "the error to go with the folder")
    return None


def _deep(sc: Scene) -> Path:
    bad = sc.bad
    top = bad / "deep"
    cur = top
    for _ in range(DEEP):
        cur.mkdir()
        (cur / "_container.json").write_text("{}")
        cur = cur / "d"
    return top


def _deep_ok(sc: Scene, top: Path) -> str | None:
    fd, bad = sc.fd, sc.bad
    def found() -> int:
        res = fd.rpc("query", {"project": str(bad), "start": str(bad), "kind": "container",
                               "search": {"name": "d"}})
        return len(res["objects"])

    try:
        until(lambda: found() == DEEP - 1, "the nested containers to be indexed")
    except AssertionError:
        st = fd.project(bad)
        return f"query found {found()} of {DEEP - 1}; error={st['error']}"
    if not fd.status()["watch_healthy"]:
        return "the watcher's reader thread died"
    subprocess.run(["rm", "-rf", str(top)], check=True)  # shutil.rmtree recurses too deep
    until(lambda: found() == 0, "the deep tree to leave the index")
    return None


def _loops(sc: Scene) -> Path:
    bad = sc.bad
    s = _sample(bad, "loops")
    os.symlink("..", s / "up")
    os.symlink(str(bad), s / "raw" / "root")
    os.symlink("self", s / "self")
    return s


def _loops_ok(sc: Scene, s: Path) -> str | None:
    fd, bad = sc.fd, sc.bad
    until((s / "stats" / "stats.txt").exists, "the sample beside the loops to run")
    fd.wait_quiet(60)
    st = fd.project(bad)
    if st["error"] or st["invalid"]:
        return f"status: {st['error']} {st['invalid']}"
    return None


def _not_utf8(sc: Scene) -> bytes:
    bad = sc.bad
    name = os.fsencode(bad) + b"/sample-\xff\xfe"
    os.mkdir(name)
    with open(name + b"/_container.json", "w") as fh:
        fh.write("{}")
    with open(name + b"/_scripts.json", "w") as fh:
        fh.write(json.dumps([{"script": SAMPLE}]))
    os.mkdir(name + b"/raw-\xe9")
    with open(name + b"/raw-\xe9/_asset.json", "w") as fh:
        fh.write(json.dumps({"type": "raw", "file": "data.csv"}))
    with open(name + b"/raw-\xe9/data.csv", "w") as fh:
        fh.write("value\n3\n")
    return name


def _not_utf8_ok(sc: Scene, name: bytes) -> str | None:
    fd, bad = sc.fd, sc.bad
    def outcome() -> str | None:
        runs = [r for r in fd.runs() if os.fsencode(r["container"]) == name
                and r["status"] != "running"]
        if runs:
            return f"ran: {runs[0]['status']}"
        blocked = [b for b in fd.project(bad)["blocked"] if os.fsencode(b["container"]) == name]
        return f"held: {blocked[0]['reason']}" if blocked else None

    try:
        result = until(outcome, "the sample to run or be explained", 60)
    except AssertionError:
        return "neither ran nor explained"
    for args in (("status",), ("runs",), ("plan",)):
        # PYTHONIOENCODING: a strict UTF-8 stdout, as under a typical desktop locale.
        text = fd.ctl(*args, env={"PYTHONIOENCODING": "utf-8"})
        if text.returncode != 0 and not (args == ("status",) and text.returncode == 1
                                         and not text.stderr):  # 1: held, so not healthy
            return f"thotctl {args[0]} failed: {text.stderr[-500:]}"
    shutil.rmtree(name)
    return None if result == "ran: ok" or result.startswith("held") else result


def _denied(sc: Scene) -> Path:
    fd, bad = sc.fd, sc.bad
    s = _sample(bad, "denied")
    fd.wait_quiet(120)
    os.chmod(s, 0)
    return s


def _denied_ok(sc: Scene, s: Path) -> str | None:
    fd, bad = sc.fd, sc.bad
    try:
        until(lambda: [e for e in _invalid(fd, bad) if e["file"].startswith(str(s))],
              "an error for the unreadable folder", 60)
    except AssertionError:
        return f"no error shown for the unreadable folder: {_invalid(fd, bad)}"
    finally:
        os.chmod(s, stat.S_IRWXU)
    until(lambda: not _errors_below(fd, bad, s), "the folder to be readable again")
    shutil.rmtree(s)
    return None


def _missing(sc: Scene) -> Path:
    bad = sc.bad
    s = _sample(bad, "missing")
    (s / "raw" / "_asset.json").write_text(json.dumps({"type": "raw", "file": "nope.csv"}))
    return s


def _missing_ok(sc: Scene, s: Path) -> str | None:
    fd, bad = sc.fd, sc.bad
    fails = until(lambda: [x for x in fd.project(bad)["failures"] if x["container"] == str(s)],
                  "the failure in status")
    if "nope.csv" not in "\n".join(fails[0]["tail"]):
        return f"failure not shown clearly: {fails}"
    (s / "raw" / "nope.csv").write_text("value\n4\n")
    until((s / "stats" / "stats.txt").exists, "the run to follow the file")
    return None


def _delete_root(sc: Scene) -> Path:
    doomed = sc.doomed
    shutil.rmtree(doomed)
    return doomed


def _gone_ok(sc: Scene, root: Path) -> str | None:
    fd = sc.fd
    err = wait_for(lambda: fd.project(root)["error"], 30, "the project error")
    return None if "gone" in err or "not" in err else f"unclear error: {err}"


def _move_root(sc: Scene) -> Path:
    moving = sc.moving
    os.rename(moving, moving.with_name("project-moved"))
    return moving


def _bulk(sc: Scene) -> int:
    fd, good, tmp_path = sc.fd, sc.good, sc.tmp
    src = tmp_path / "bulk-src" / "bulk"
    src.mkdir(parents=True)
    (src / "_container.json").write_text(json.dumps({"type": "bulk"}))
    assets = BULK_FILES // 2
    for i in range(assets):
        a = src / f"a{i:05d}"
        a.mkdir()
        (a / "_asset.json").write_text('{"type": "image", "file": "x.bin"}')
        (a / "x.bin").write_bytes(b"\0" * 16)
    before = fd.project(good)["objects"]
    subprocess.run(["cp", "-r", str(src), str(good / "group-1")], check=True)
    return before + assets + 1


def _bulk_ok(sc: Scene, expected: int) -> str | None:
    fd, good = sc.fd, sc.good
    try:
        until(lambda: fd.project(good)["objects"] == expected, "every copied object", 180)
    except AssertionError:
        return f"{fd.project(good)['objects']} objects indexed, {expected} on disk"
    res = fd.rpc("query", {"project": str(good), "start": str(good), "kind": "asset",
                           "search": {"type": "image"}})
    return None if len(res["objects"]) == BULK_FILES // 2 else "query misses copied assets"


FAULTS = [
    Fault("malformed JSON in an object file", _malformed, _malformed_ok,
          "shown in status with file, line and column; runs above it held; fixed file runs"),
    Fault("wrong types in object files", _wrong_types, _wrong_types_ok,
          "every bad field named by its JSON path"),
    Fault(f"huge object file ({HUGE_MB} MiB _asset.json)", _huge, _huge_ok,
          "refused with a clear error (limit 16 MiB), not parsed on the loop"),
    Fault("object file that is a named pipe", _fifo, _fifo_ok,
          "refused as not a regular file; no reader blocks on it"),
    Fault(f"deep tree ({DEEP} nested containers)", _deep, _deep_ok,
          "indexed and searchable; the watcher's thread survives (it walks new folders);"
          " deep paths make every file call slow, and the update runs on the daemon's loop"),
    Fault("symlink loops (.., the root, a link to itself)", _loops, _loops_ok,
          "links to folders are not followed; the sample beside them ran"),
    Fault("folder names that are not UTF-8", _not_utf8, _not_utf8_ok,
          "indexed with its bytes kept (surrogate escapes); its run is held with " "'not a UTF-8 name' (run state is UTF-8 text); thotctl prints the bytes"),
    Fault("permission-denied folder (chmod 000)", _denied, _denied_ok,
          "shown as unreadable, runs above it held rather than run without it"),
    Fault("asset whose data file is missing", _missing, _missing_ok,
          "the script fails with the missing path in the log tail in status;"
          " reruns when the file appears"),
    Fault("project root deleted while watched", _delete_root, _gone_ok,
          "the project shows an error and stays registered"),
    Fault("project root moved while watched", _move_root, _gone_ok,
          "the project shows an error and stays registered"),
    Fault(f"{BULK_FILES:,} files copied in at once", _bulk, _bulk_ok,
          "every object indexed (no lost events); nothing unrelated ran"),
]


def test_bad_input_on_disk(fd: Daemon, tmp_path: Path, reliability: Report) -> None:
    fd.prefix = _can_drop_dac()
    scene = _scene(fd, tmp_path)
    f = Faults(fd, scene.good, reliability)
    for fault in FAULTS:
        f.run(fault.title, functools.partial(fault.inject, scene),
              functools.partial(fault.check, scene), fault.notes)
    assert fd.alive()
    assert not f.problems, "\n".join(f.problems)
