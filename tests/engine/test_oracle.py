"""The engine's oracle: after any sequence of edits, `thot run --changed` leaves the derived
assets exactly as a fresh full `thot run` of a copy of the tree would.

A hypothesis state machine edits a real G×S project (2 groups × 2 samples) in a temporary
folder, runs `thot run --changed` after every edit, and compares every asset made by a script
(its ``_asset.json`` minus ``creator``, and its data bytes) with a full run of a copy with a
fresh state db. Full runs are cached by the tree's content, so edits that change nothing
(touches, identical rewrites) cost only the incremental run, which must then run nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from corekit import (
    GS_SCRIPTS,
    add_sample,
    backup_db,
    derived_assets,
    make_gs,
    restore_tree,
    run_json,
    wait_past_racy_window,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

GROUPS = ["group-0", "group-1"]
SAMPLES = 1  # per group at the start; the machine adds more

# The sample script also records the metadata it inherits, so that a metadata change has a
# visible effect on a derived asset (the G×S scripts themselves ignore metadata).
SAMPLE_EXTENSION = """
_c = db.find_container({'_id': db.root})
_p = db.add_asset({'type': 'meta', 'name': name + ' meta', 'file': 'meta.txt'}, 'meta')
with open(_p, 'w', encoding='utf-8') as _f:
    _f.write('extra=%r\\n' % (_c.metadata.get('extra'),))
"""
# what each script writes last: a changed script appends a constant to it
LAST_OUTPUT = {"sample.py": "_p", "group.py": "path", "summary.py": "path"}


def tree_digest(work: Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    for dirpath, dirs, files in os.walk(work):
        dirs.sort()
        for name in sorted(files):
            path = Path(dirpath, name)
            h.update(os.path.relpath(path, work).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


class Oracle:
    """Full runs of copies, cached by the content of the tree they start from."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.cache: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, Any] = {}
        self.full_runs = 0

    def expected(self, work: Path) -> dict[str, Any]:
        key = self.last_key = tree_digest(work)
        if key not in self.cache:
            fresh = self.base / "fresh"
            restore_tree(work, fresh)
            state = self.base / f"fresh-state-{self.full_runs}" / "state.sqlite3"
            state.parent.mkdir()
            code, report = run_json(state, fresh / "project", "--jobs", "2")
            assert report["runs"], report
            self.cache[key] = derived_assets(fresh / "project")
            self.reports[key] = report
            self.full_runs += 1
            shutil.rmtree(state.parent)
        return self.cache[key]


def build_pristine(base: Path) -> tuple[Path, Path]:
    """The starting project, fully run once; saved to be restored for every example."""
    work = base / "cur"
    project = make_gs(work, len(GROUPS), SAMPLES)
    sample_py = work / "analysis" / "sample.py"
    text = sample_py.read_text()
    for name, var in LAST_OUTPUT.items():
        assert f"{var} = db.add_asset(" in GS_SCRIPTS[name] or name == "sample.py", name
    assert "db = " in text and "name = " in text and "path = db.add_asset(" in text
    sample_py.write_text(text + SAMPLE_EXTENSION)
    state = base / "state" / "state.sqlite3"
    state.parent.mkdir()
    code, report = run_json(state, project, "--jobs", "2")
    assert code == 0, report
    assert len(report["runs"]) == len(GROUPS) * (SAMPLES + 1) + 1
    saved = base / "pristine"
    shutil.copytree(work, saved)
    backup_db(state, base / "pristine.sqlite3")
    return saved, base / "pristine.sqlite3"


class GSMachine(RuleBasedStateMachine):
    base: Path
    oracle: Oracle

    def __init__(self) -> None:
        super().__init__()
        self.work = self.base / "cur"
        self.project = self.work / "project"
        restore_tree(self.base / "pristine", self.work)
        # a new db file per example: a connection left open by an earlier example can never
        # touch it
        self.state = Path(tempfile.mkdtemp(dir=self.base, prefix="state-")) / "state.sqlite3"
        backup_db(self.base / "pristine.sqlite3", self.state)
        self.counter = 0
        self.broken: dict[Path, bytes] = {}
        self.log: list[str] = []

    # ------------------------------------------------------------------ helpers

    def samples(self) -> list[Path]:
        return sorted(p.parent for p in self.project.glob("group-*/sample-*/_container.json"))

    def with_raw(self) -> list[Path]:
        return [s for s in self.samples() if (s / "raw" / "_asset.json").exists()]

    def derived(self) -> list[Path]:
        return sorted(self.project / rel for rel in derived_assets(self.project))

    def step(self, what: str, *, quiet: bool = False) -> None:
        """Run the changed runs, then hold the result against the oracle."""
        self.log.append(what)
        code, report = run_json(self.state, self.project, "--changed", "--jobs", "2")
        ran = [r for r in report["runs"] if r["status"] != "blocked"]
        if quiet:
            assert ran == [], f"{what}: nothing changed, yet {ran} ran"
        assert not [r for r in ran if r["status"] == "cycle"], report
        got = derived_assets(self.project)
        want = self.oracle.expected(self.work)
        if got != want:
            full = self.oracle.reports.get(self.oracle.last_key)
            raise AssertionError(
                f"after {self.log}: derived assets differ from a full run\n"
                f"incremental: {json.dumps(report, indent=1)}\nfull: {json.dumps(full, indent=1)}\n"
                f"got: {got}\nwant: {want}"
            )

    def pick(self, items: list[Path], n: int) -> Path:
        return items[n % len(items)]

    # ------------------------------------------------------------------ edits

    @rule(group=st.sampled_from(GROUPS))
    def new_sample(self, group: str) -> None:
        self.counter += 1
        add_sample(self.project, group, f"sample-{100 + self.counter}")
        self.step(f"new sample in {group}")

    @precondition(lambda self: self.with_raw())
    @rule(n=st.integers(0, 99), values=st.lists(st.integers(0, 999), min_size=1, max_size=4))
    def change_data(self, n: int, values: list[int]) -> None:
        sample = self.pick(self.with_raw(), n)
        (sample / "raw" / "data.csv").write_text("value\n" + "".join(f"{v}\n" for v in values))
        self.step(f"data of {sample.name} = {values}")

    @precondition(lambda self: self.samples())
    @rule(n=st.integers(0, 99))
    def delete_sample(self, n: int) -> None:
        sample = self.pick(self.samples(), n)
        shutil.rmtree(sample)
        self.broken.pop(sample / "_container.json", None)
        self.step(f"deleted {sample.name}")

    @precondition(lambda self: self.with_raw())
    @rule(n=st.integers(0, 99))
    def delete_raw_asset(self, n: int) -> None:
        sample = self.pick(self.with_raw(), n)
        shutil.rmtree(sample / "raw")
        self.step(f"deleted raw of {sample.name}")

    @precondition(lambda self: self.derived())
    @rule(n=st.integers(0, 99))
    def delete_derived_asset(self, n: int) -> None:
        target = self.pick(self.derived(), n)
        shutil.rmtree(target)
        self.step(f"deleted derived {os.path.relpath(target, self.project)}")

    @rule(group=st.sampled_from(GROUPS), value=st.integers(0, 3))
    def change_group_metadata(self, group: str, value: int) -> None:
        cfile = self.project / group / "_container.json"
        if cfile in self.broken:
            return
        doc = json.loads(cfile.read_text())
        doc["metadata"]["extra"] = value
        cfile.write_text(json.dumps(doc, indent=2))
        self.step(f"{group} metadata extra={value}")

    @rule(script=st.sampled_from(sorted(LAST_OUTPUT)))
    def change_script(self, script: str) -> None:
        self.counter += 1
        path = self.work / "analysis" / script
        var = LAST_OUTPUT[script]
        path.write_text(path.read_text() + (
            f"with open({var}, 'a', encoding='utf-8') as _f:\n"
            f"    _f.write('const {self.counter}\\n')\n"
        ))
        self.step(f"changed {script}")

    @precondition(lambda self: not self.broken)
    @rule(n=st.integers(0, 99))
    def break_json(self, n: int) -> None:
        folders = [self.project / g for g in GROUPS if (self.project / g).exists()] + self.samples()
        cfile = self.pick(folders, n) / "_container.json"
        self.broken[cfile] = cfile.read_bytes()
        cfile.write_bytes(self.broken[cfile][:-5])
        self.step(f"broke {os.path.relpath(cfile, self.project)}")

    @precondition(lambda self: self.broken)
    @rule()
    def fix_json(self) -> None:
        cfile, good = self.broken.popitem()
        cfile.write_bytes(good)
        self.step(f"fixed {os.path.relpath(cfile, self.project)}")

    @rule()
    def quiet_moment(self) -> None:
        """Time passes: the snapshot may now trust every file unread, so the next edits are
        found through its signatures and known-clean runs, not re-reads."""
        wait_past_racy_window(self.work)
        self.step("a quiet moment", quiet=True)

    @rule(n=st.integers(0, 99), rewrite=st.booleans())
    def touch_without_change(self, n: int, rewrite: bool) -> None:
        files = sorted(
            p for p in self.work.rglob("*")
            if p.is_file() and (p.suffix in (".csv", ".txt", ".py") or p.name.startswith("_"))
        )
        chosen = [files[(n + k * 7) % len(files)] for k in range(3)]
        stamp = 2_000_000_000 + self.counter
        self.counter += 1
        for path in chosen:
            if rewrite:
                data = path.read_bytes()
                path.unlink()
                path.write_bytes(data)
            else:
                os.utime(path, (stamp, stamp))
        self.step(f"touched {[p.name for p in chosen]}", quiet=True)


@pytest.mark.timeout(int(os.environ.get("THOTD_ORACLE_TIMEOUT", "600")))
def test_incremental_equals_full_run(tmp_path: Path) -> None:
    build_pristine(tmp_path)
    GSMachine.base = tmp_path
    GSMachine.oracle = Oracle(tmp_path)
    run_state_machine_as_test(
        GSMachine,
        settings=settings(
            max_examples=int(os.environ.get("THOTD_ORACLE_EXAMPLES", "8")),
            stateful_step_count=int(os.environ.get("THOTD_ORACLE_STEPS", "6")), deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    assert GSMachine.oracle.full_runs >= 5  # the oracle really ran
    print(f"oracle: {GSMachine.oracle.full_runs} full runs")
