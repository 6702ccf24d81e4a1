"""The one readiness rule (thotd.engine.dispatch), driven by scripted plans: a parent waits
while anything below it is queued or running, runs of one container go in priority order,
independent subtrees do not wait for each other; and the spec a run starts from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from corekit import make_tree
from hypothesis import given, settings
from hypothesis import strategies as st

from thotd.engine.dispatch import (
    Dispatcher,
    Pending,
    ReadyQueue,
    Untrusted,
    dispatcher_for,
    launch,
)
from thotd.engine.staleness import Engine, Planned, RunKey
from thotd.engine.state import Store
from thotd.engine.trust import TrustPolicy
from thotd.project.index import Index

ROOT = "/p"


def plan_of(runs: list[tuple[str, str]]) -> list[Planned]:
    """A plan from (container below ROOT, script) pairs, given in run order (children
    first, then priority), as Engine.plan builds one."""
    out = []
    for order, (rel, script) in enumerate(runs):
        container = ROOT if rel == "." else f"{ROOT}/{rel}"
        out.append(Planned((container, f"/s/{script}"), priority=order, order=order,
                           depth=container.count("/") - 1))
    return out


#: /p has a and b; a has a/x. Every container has runs; /p has two, in priority order.
PLAN = plan_of([("a/x", "x.py"), ("a", "a.py"), ("b", "b.py"), (".", "first.py"),
                (".", "second.py")])
X, A, B, FIRST, SECOND = PLAN


def ready_now(queued: list[Planned], running: list[Planned] = ()) -> list[Planned]:
    d = Dispatcher(PLAN)
    pending = d.pending(p.key for p in [*queued, *running])
    return list(d.ready_runs(pending, {p.order for p in running}))


def test_a_parent_waits_while_anything_below_it_is_queued() -> None:
    assert ready_now([X, A, B, FIRST, SECOND]) == [X, B]


def test_a_parent_waits_while_a_grandchild_runs() -> None:
    # x runs; a (its parent) and the root (above both) wait; b is a sibling subtree.
    assert ready_now([A, B, FIRST], running=[X]) == [B]
    assert ready_now([A, FIRST], running=[]) == [A]


def test_runs_of_one_container_go_in_priority_order() -> None:
    assert ready_now([FIRST, SECOND]) == [FIRST]
    assert ready_now([SECOND], running=[FIRST]) == []
    assert ready_now([SECOND]) == [SECOND]


def test_a_run_finished_on_the_way_lets_the_next_through_in_the_same_pass() -> None:
    d = Dispatcher(PLAN)
    pending = d.pending(p.key for p in PLAN)
    seen = []
    for p in d.ready_runs(pending):
        seen.append(p)
        pending.discard(p.order)  # skipped at once (up to date), as the one-shot runner does
    assert seen == PLAN


def test_a_pending_run_gone_from_the_plan_still_holds_the_runs_above_it() -> None:
    d = Dispatcher(PLAN)
    gone: RunKey = (f"{ROOT}/b/old", "/s/old.py")  # its association was removed while queued
    pending = d.pending([gone, FIRST.key])
    assert not d.ready(FIRST, pending)
    assert d.ready(A, pending)
    assert d.ready(B, d.pending([(f"{ROOT}/b", "/s/other.py")]))  # same folder: not below


def test_pending_answers_windows() -> None:
    pending = Pending([5, 1, 9])
    assert pending.any_in(0, 2) and pending.any_in(5, 6) and not pending.any_in(2, 5)
    assert not pending.any_in(10, 20) and not pending.any_in(6, 9)
    pending.discard(1)
    pending.discard(7)  # not there: nothing happens
    assert pending.orders() == [5, 9] and len(pending) == 2 and 5 in pending and 1 not in pending


# ---------------------------------------------------------------- the rule, against paths

_FOLDERS = ["a", "a/x", "a/x/y", "a/z", "b", "b/c"]


def _postorder(folders: set[str]) -> list[str]:
    """Containers children first, siblings by name (the root last)."""
    out: list[str] = []

    def visit(rel: str) -> None:
        for child in sorted(f for f in folders if os.path.dirname(f) == rel):
            visit(child)
        out.append(rel if rel else ".")

    visit("")
    return out


@settings(max_examples=200, deadline=None)
@given(
    folders=st.sets(st.sampled_from(_FOLDERS)),
    runs_per=st.lists(st.integers(0, 2), min_size=len(_FOLDERS) + 1, max_size=len(_FOLDERS) + 1),
    data=st.data(),
)
def test_the_rule_is_below_or_earlier_in_the_container(folders: set[str], runs_per: list[int],
                                                       data: st.DataObject) -> None:
    """Whatever the tree and the pending runs: a run is ready exactly when no pending run is
    in a container below its own, or earlier (by priority) in its own."""
    folders = {f for f in folders if all(a in folders for a in _ancestors(f))}
    runs = [(c, f"s{i}.py") for n, c in zip(runs_per, _postorder(folders), strict=False)
            for i in range(n)]
    plan = plan_of(runs)
    if not plan:
        return
    pending_runs = data.draw(st.sets(st.sampled_from(plan), max_size=len(plan)))
    d = Dispatcher(plan)
    pending = d.pending(q.key for q in pending_runs)
    for p in plan:
        below = p.container + "/"
        expected = not any(
            q.key != p.key and (q.container.startswith(below)
                                or (q.container == p.container and q.order < p.order))
            for q in pending_runs
        )
        assert d.ready(p, pending) == expected, (p, pending_runs)


def _random_plan(folders: set[str], runs_per: list[int]) -> list[Planned]:
    folders = {f for f in folders if all(a in folders for a in _ancestors(f))}
    return plan_of([(c, f"s{i}.py") for n, c in zip(runs_per, _postorder(folders), strict=False)
                    for i in range(n)])


def _brute_ready(d: Dispatcher, queued: set[RunKey], started: set[RunKey]) -> list[int]:
    """The queued runs the rule lets start, judged one by one over everything pending."""
    pending = d.pending(queued | started)
    return [p.order for p in d.plan if p.key in queued and d.ready(p, pending)]


def _all_ready(rq: ReadyQueue) -> list[int]:
    out, after = [], -1
    while (p := rq.next_ready(after)) is not None:
        out.append(after := p.order)
    return out


@settings(max_examples=300, deadline=None)
@given(
    folders=st.sets(st.sampled_from(_FOLDERS)),
    runs_per=st.lists(st.integers(0, 2), min_size=len(_FOLDERS) + 1, max_size=len(_FOLDERS) + 1),
    data=st.data(),
)
def test_the_ready_queue_follows_the_rule_after_every_step(
        folders: set[str], runs_per: list[int], data: st.DataObject) -> None:
    """Whatever the plan and the order runs are queued, started and finished in (strays
    included, or the whole queue handed over at once): after every step the incremental
    ready set is the rule's answer."""
    plan = _random_plan(folders, runs_per)
    strays: list[RunKey] = [(f"{ROOT}/{f}/old", "/s/old.py") for f in ("a", "b/c")]
    keys = [p.key for p in plan] + strays
    d = Dispatcher(plan)
    queued = set(data.draw(st.sets(st.sampled_from(keys))))
    started: set[RunKey] = set()
    rq = ReadyQueue(d, queued)
    for _ in range(data.draw(st.integers(0, 3 * len(keys)))):
        assert _all_ready(rq) == _brute_ready(d, queued, started)
        assert len(rq) == len(queued | started)
        key = data.draw(st.sampled_from(keys))
        step = data.draw(st.sampled_from(["queue", "start", "finish", "sync"]))
        if step == "sync":  # the daemon's way: its whole queue and running runs, changed
            started = set(data.draw(st.sets(st.sampled_from(keys))))
            fresh = set(data.draw(st.sets(st.sampled_from(keys)))) - started
            assert rq.sync(fresh, started) == fresh - queued
            queued = fresh
        elif step == "queue":
            rq.queue(key)
            queued.add(key)
            started.discard(key)
        elif step == "start":
            rq.start(key)
            queued.discard(key)
            started.add(key)
        else:
            rq.discard(key)
            queued.discard(key)
            started.discard(key)
        assert (key in rq) == (key in queued | started)
    assert _all_ready(rq) == _brute_ready(d, queued, started)


def test_a_full_run_drains_in_plan_order_one_judgement_per_leaving_run() -> None:
    """The one-shot runner's use: start the first ready run, finish it, again; every run is
    met once, and a parent only once all below it are done."""
    d = Dispatcher(PLAN)
    rq = ReadyQueue(d, (p.key for p in PLAN))
    assert _all_ready(rq) == [X.order, B.order]
    seen = []
    while (p := rq.next_ready()) is not None:
        rq.start(p.key)
        seen.append(p)
        rq.discard(p.key)
    assert seen == PLAN and len(rq) == 0


def _ancestors(rel: str) -> list[str]:
    out = []
    while (rel := os.path.dirname(rel)):
        out.append(rel)
    return out


# ---------------------------------------------------------------- the spec

def test_launch_builds_the_spec_every_runner_starts_from(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "project", {
        "_container.json": {},
        "_scripts.json": [{"script": "run.py"}],
        "run.py": "print('hi')\n",
    })
    engine = Engine(Index.load(root), Store(tmp_path / "state.sqlite3"))
    (p,) = engine.plan()
    run = launch(engine, p, ["never ran"], "test", trust=TrustPolicy(), started_in=str(tmp_path),
                 query_socket="/run/q.sock", timeout_s=3.0,
                 log_cap_bytes=1000, grace_s=0.5, base_env={"HOME": "/home/x"})
    # a Python script starts where its runner was started (the script API moves it)
    assert run.spec.script == Path(p.script) and run.spec.cwd == tmp_path
    assert run.spec.env["THOTD_QUERY_SOCKET"] == "/run/q.sock"
    assert run.spec.env["THOT_CONTAINER_ID"] == p.container
    assert run.spec.env["THOT_RECORD"] == run.record and run.spec.env["HOME"] == "/home/x"
    assert (run.spec.timeout_s, run.spec.log_cap_bytes, run.spec.grace_s) == (3.0, 1000, 0.5)
    assert str(run.spec.log_path) == run.log
    assert engine.rows[p.key].status == "running"  # the engine knows it started
    # Without a socket the script walks the disk itself.
    other = launch(engine, p, ["again"], "test", trust=TrustPolicy(), started_in=root,
                   query_socket=None, timeout_s=None, log_cap_bytes=1000)
    assert "THOTD_QUERY_SOCKET" not in other.spec.env
    # The dispatcher of a plan is kept while the index's shape holds.
    assert dispatcher_for(engine) is dispatcher_for(engine)
    assert dispatcher_for(engine, manual=True) is not dispatcher_for(engine)


def test_launch_refuses_a_run_others_can_write_before_it_starts(tmp_path: Path) -> None:
    """The trust check of both runners: refused before anything is marked started."""
    root = make_tree(tmp_path / "project", {
        "_container.json": {},
        "_scripts.json": [{"script": "run.py"}],
        "run.py": "print('hi')\n",
    })
    os.chmod(os.path.join(root, "_scripts.json"), 0o646)
    store = Store(tmp_path / "state.sqlite3")
    engine = Engine(Index.load(root), store)
    (p,) = engine.plan()
    with pytest.raises(Untrusted) as refused:
        launch(engine, p, ["never ran"], "test", trust=TrustPolicy(), started_in=root,
               query_socket=None, timeout_s=None, log_cap_bytes=1000)
    assert refused.value.refusal.path == os.path.join(root, "_scripts.json")
    assert "untrusted _scripts.json" in str(refused.value)
    assert p.key not in engine.rows and store.history() == []
    # The one-run override lets it through.
    launch(engine, p, ["never ran"], "test", trust=TrustPolicy(anyone=True), started_in=root,
           query_socket=None, timeout_s=None, log_cap_bytes=1000)
    assert engine.rows[p.key].status == "running"
