"""Tests for thotd.service.watch end to end: real folders, the real inotify observer, a real
asyncio loop. The settle rules alone are driven without a kernel in ``test_settle``.

No sleep-and-hope: every test polls for a condition with a deadline (generous, for a
loaded machine) and asserts on what was delivered. The only sleeps are in writers
that must pause on purpose.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from corekit import await_for

from thotd.service import watch_limits as limits
from thotd.service.watch import Batch, Watcher

DEADLINE_S = 10.0

# watchdog 7.1 re-adds the watch of a new sub-folder when the folder's own IN_CREATE
# arrives after the parent's walk already added it, and warns; harmless.
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


class Recorder:
    """on_batch callback that keeps every batch with its arrival time and file sizes."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, str, Batch]] = []
        self.sizes: list[dict[str, int]] = []
        self.thread_ids: set[int] = set()

    def __call__(self, root: str, batch: Batch) -> None:
        self.thread_ids.add(threading.get_ident())
        self.batches.append((time.monotonic(), root, batch))
        # Size at delivery time: what a consumer would read right now.
        self.sizes.append({p: os.path.getsize(p) for p in batch.paths if os.path.isfile(p)})

    def paths(self, root: Path | str | None = None) -> set[str]:
        return {p for _, r, b in self.batches if root is None or r == str(root) for p in b.paths}

    def rescans(self, root: Path | str | None = None) -> set[str]:
        return {d for _, r, b in self.batches if root is None or r == str(root) for d in b.rescan}

    def covered(self, path: Path | str) -> bool:
        """In some batch's paths, or below some batch's rescan directory."""
        path = str(path)
        if path in self.paths():
            return True
        return any(path == d or path.startswith(d + os.sep) for d in self.rescans())

    def batches_with(self, path: Path | str) -> list[int]:
        return [i for i, (_, _, b) in enumerate(self.batches) if str(path) in b.paths]


def run(body: Callable[[Watcher, Recorder], Awaitable[None]], **kwargs: float) -> Recorder:
    """Run ``body(watcher, recorder)`` on a fresh loop; always close the watcher."""
    rec = Recorder()

    async def main() -> None:
        w = Watcher(asyncio.get_running_loop(), rec, **kwargs)  # type: ignore[arg-type]
        try:
            await body(w, rec)
        finally:
            w.close()

    asyncio.run(asyncio.wait_for(main(), 60))
    return rec


def write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ------------------------------------------------------------------------ basics


def test_create_then_modify_arrives_as_one_batch(tmp_path: Path) -> None:
    f = tmp_path / "data.csv"

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(tmp_path))
        with open(f, "w") as fh:
            for i in range(5):
                fh.write(f"{i},{i * i}\n")
                fh.flush()
        with open(f, "a") as fh:
            fh.write("5,25\n")
        await await_for(lambda: str(f) in rec.paths() and w.quiet(), what="data.csv delivered", timeout=DEADLINE_S)

    rec = run(body)
    assert len(rec.batches_with(f)) == 1
    assert rec.sizes[rec.batches_with(f)[0]][str(f)] == f.stat().st_size
    assert all(r == str(tmp_path) for _, r, _ in rec.batches)
    # on_batch ran on the loop thread, i.e. not on a watchdog thread
    assert rec.thread_ids == {threading.get_ident()}


@pytest.mark.parametrize("reopen", [False, True], ids=["kept-open", "reopened-per-chunk"])
def test_growing_file_is_delivered_only_after_it_stops_growing(
    tmp_path: Path, reopen: bool
) -> None:
    """Pauses are longer than settle_s, so the batch closes between chunks; the size/
    mtime looks must keep it pending. Reopening per chunk produces a close-write after
    every chunk, which must not count as "complete"."""
    f = tmp_path / "big.csv"
    chunk = b"0123456789," * 1000
    chunks, pause = 4, 0.25
    last_write: list[float] = []

    def writer() -> None:
        fh = open(f, "ab")  # noqa: SIM115 - the point is to keep it open across chunks
        try:
            for i in range(chunks):
                if reopen and i:
                    fh = open(f, "ab")  # noqa: SIM115
                fh.write(chunk)
                fh.flush()
                last_write.append(time.monotonic())
                if reopen:
                    fh.close()
                if i < chunks - 1:
                    time.sleep(pause)
        finally:
            fh.close()

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(tmp_path))
        t = threading.Thread(target=writer)
        t.start()
        try:
            await await_for(lambda: str(f) in rec.paths(), what="big.csv delivered", timeout=DEADLINE_S)
        finally:
            await asyncio.to_thread(t.join)

    # settle 0.15 s < pause 0.25 s < 5 looks * 0.15 s: the file is quiet long enough
    # for the batch to close, never long enough to be declared stable mid-write.
    rec = run(body, settle_s=0.15, stable_checks=5)
    first = rec.batches_with(f)[0]
    assert len(last_write) == chunks
    assert rec.batches[first][0] > last_write[-1]
    assert rec.sizes[first][str(f)] == chunks * len(chunk) == f.stat().st_size


def test_mkdir_then_files(tmp_path: Path) -> None:
    d = tmp_path / "run1"
    files = [d / f"s{i}.csv" for i in range(5)]

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(tmp_path))
        d.mkdir()
        for f in files:
            write(f)
        await await_for(lambda: all(rec.covered(f) for f in files) and w.quiet(), what="run1 files", timeout=DEADLINE_S)

    rec = run(body)
    assert str(d) in rec.rescans()
    assert str(d) in rec.paths()


def test_copytree_of_200_files_is_fully_covered(tmp_path: Path) -> None:
    root, src = tmp_path / "proj", tmp_path / "incoming"
    root.mkdir()
    expected = []
    for i in range(200):
        rel = Path(f"sub{i % 4}") / f"deep{i % 3}" / f"f{i:03d}.csv"
        write(src / rel, f"{i}\n" * 50)
        expected.append(root / "batch" / rel)

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(root))
        await asyncio.to_thread(shutil.copytree, src, root / "batch")
        await await_for(
            lambda: all(rec.covered(p) for p in expected) and w.quiet(), what="copied tree covered"
        , timeout=DEADLINE_S)

    rec = run(body)
    assert str(root / "batch") in rec.rescans()
    # within a batch, nested folders of the copy are collapsed into the outermost one
    for _, _, b in rec.batches:
        assert not any(d.startswith(o + os.sep) for d in b.rescan for o in b.rescan)
    missing = [p for p in expected if not rec.covered(p)]
    assert not missing


def test_atomic_save_delivers_the_final_name(tmp_path: Path) -> None:
    final = tmp_path / "notes.json"
    write(final, '{"v": 1}')

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(tmp_path))
        tmp = tmp_path / ".notes.json.XXXX.tmp"
        write(tmp, '{"v": 2}')
        os.replace(tmp, final)
        await await_for(lambda: str(final) in rec.paths() and w.quiet(), what="final name delivered", timeout=DEADLINE_S)

    rec = run(body)
    i = rec.batches_with(final)[0]
    assert rec.sizes[i][str(final)] == len('{"v": 2}')


def test_move_directory_within_root_gives_src_and_dest(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write(a / "inner" / "x.csv")

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(tmp_path))
        os.rename(a, b)
        await await_for(lambda: {str(a), str(b)} <= rec.paths() and w.quiet(), what="move delivered", timeout=DEADLINE_S)

    rec = run(body)
    assert str(b) in rec.rescans()
    assert rec.covered(b / "inner" / "x.csv")


def test_move_directory_out_of_root_delivers_its_path(tmp_path: Path) -> None:
    root, outside = tmp_path / "proj", tmp_path / "elsewhere"
    d = root / "old_run"
    write(d / "x.csv")
    outside.mkdir()

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(root))
        os.rename(d, outside / "old_run")
        await await_for(lambda: str(d) in rec.paths() and w.quiet(), what="moved-out dir delivered", timeout=DEADLINE_S)

    rec = run(body)
    assert not any(p.startswith(str(outside)) for p in rec.paths())


def test_delete_file_and_directory(tmp_path: Path) -> None:
    f, d = tmp_path / "gone.csv", tmp_path / "gone_dir"
    write(f)
    write(d / "inner.csv")

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(tmp_path))
        f.unlink()
        shutil.rmtree(d)
        await await_for(lambda: {str(f), str(d)} <= rec.paths() and w.quiet(), what="deletes", timeout=DEADLINE_S)

    run(body)


def test_two_projects_are_independent(tmp_path: Path) -> None:
    pa, pb = tmp_path / "A", tmp_path / "B"
    pa.mkdir()
    pb.mkdir()

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(pa))
        w.add(str(pb))
        write(pa / "a.csv")
        await await_for(lambda: str(pa / "a.csv") in rec.paths(pa) and w.quiet(), what="A batch", timeout=DEADLINE_S)
        write(pb / "b.csv")
        await await_for(lambda: str(pb / "b.csv") in rec.paths(pb) and w.quiet(), what="B batch", timeout=DEADLINE_S)
        assert w.status()[str(pa)]["mode"] == w.status()[str(pb)]["mode"] == "inotify"

    rec = run(body)
    assert rec.paths(pa) == {str(pa / "a.csv")}
    assert rec.paths(pb) == {str(pb / "b.csv")}


def test_remove_stops_events(tmp_path: Path) -> None:
    pa, pb = tmp_path / "A", tmp_path / "B"
    pa.mkdir()
    pb.mkdir()

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(pa))
        w.add(str(pb))
        w.remove(str(pa))
        assert str(pa) not in w.status()
        # Write to A first, then to B (still watched) as the positive control: once
        # B's change is through and nothing is pending, A's would have arrived too.
        write(pa / "ignored.csv")
        write(pb / "seen.csv")
        await await_for(lambda: str(pb / "seen.csv") in rec.paths() and w.quiet(), what="B batch", timeout=DEADLINE_S)
        await asyncio.sleep(0)  # let any straggling callback run before asserting

    rec = run(body)
    assert rec.paths(pa) == set()
    assert str(pa / "ignored.csv") not in rec.paths()


def test_add_missing_root_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    a_file = tmp_path / "file.txt"
    write(a_file)

    async def body(w: Watcher, rec: Recorder) -> None:
        with pytest.raises(FileNotFoundError, match="nope"):
            w.add(str(missing))
        with pytest.raises(NotADirectoryError):
            w.add(str(a_file))
        assert w.status() == {}

    run(body)


def test_quiet_is_false_during_a_burst_and_true_after_delivery(tmp_path: Path) -> None:
    files = [tmp_path / f"f{i}.csv" for i in range(20)]

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(tmp_path))
        assert w.quiet() and w.healthy()
        for f in files:
            write(f)
        await await_for(lambda: not w.quiet(), what="quiet() to turn False", timeout=DEADLINE_S)
        assert not rec.batches  # settle_s is 0.3 s: nothing can be delivered yet
        await await_for(lambda: w.status()[str(tmp_path)]["settling"], what="settling", timeout=DEADLINE_S)
        assert w.status()[str(tmp_path)]["pending"] > 0
        await await_for(w.quiet, what="quiet() to turn True", timeout=DEADLINE_S)
        assert {str(f) for f in files} <= rec.paths()
        st = w.status()[str(tmp_path)]
        assert st["pending"] == 0 and st["settling"] is False

    run(body, settle_s=0.3)


def test_healthy_and_close(tmp_path: Path) -> None:
    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(tmp_path))
        assert w.healthy()
        w.close()
        assert not w.healthy()
        with pytest.raises(RuntimeError):
            w.add(str(tmp_path))

    run(body)


def test_root_deleted_is_shown_degraded(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root / "x.csv")

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(root))
        shutil.rmtree(root)
        await await_for(lambda: w.status()[str(root)]["mode"] == "degraded", what="degraded", timeout=DEADLINE_S)
        await await_for(lambda: str(root) in rec.paths() and w.quiet(), what="root delivered", timeout=DEADLINE_S)

    run(body)


# ------------------------------------------------------- limits, fallbacks, lost events


def _count_dirs(root: Path) -> int:
    return sum(1 for _ in os.walk(root))


def test_enospc_falls_back_to_polling_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        (tmp_path / f"d{i}").mkdir()

    async def body(w: Watcher, rec: Recorder) -> None:
        def no_watches_left(*args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

        assert w._native is not None
        monkeypatch.setattr(w._native, "schedule", no_watches_left)
        w.add(str(tmp_path))
        st = w.status()[str(tmp_path)]
        assert st["mode"] == "degraded"
        limit = limits.read_int(limits.MAX_USER_WATCHES_FILE)
        assert st["max_user_watches"] == limit
        assert st["folders"] == _count_dirs(tmp_path) == 4
        assert f"max_user_watches={limit}" in st["reason"] and "4 folders" in st["reason"]
        assert "sudo sysctl fs.inotify.max_user_watches=" in st["fix"]
        assert "/etc/sysctl.d/" in st["fix"]
        write(tmp_path / "d1" / "polled.csv")
        await await_for(lambda: str(tmp_path / "d1" / "polled.csv") in rec.paths(), what="polled", timeout=DEADLINE_S)
        assert w.healthy()

    run(body, poll_fallback_s=0.2)


def test_a_watch_cap_polls_the_projects_above_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``THOTD_MAX_WATCHES`` takes the polling fallback for real (no faked kernel error):
    a project with more folders than the cap is polled, and the reason names the cap."""
    big, small = tmp_path / "big", tmp_path / "small"
    for i in range(3):
        (big / f"d{i}").mkdir(parents=True)
    small.mkdir()
    monkeypatch.setenv(limits.CAP_VAR, "2")

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(big))
        w.add(str(small))
        st = w.status()[str(big)]
        assert st["mode"] == "degraded"
        assert f"{limits.CAP_VAR}=2" in st["reason"] and "4 folders" in st["reason"]
        assert st["watch_cap"] == 2 and st["folders"] == 4
        assert limits.CAP_VAR in st["fix"]
        assert w.status()[str(small)]["mode"] == "inotify"  # 1 folder: under the cap
        write(big / "d2" / "polled.csv")
        await await_for(lambda: str(big / "d2" / "polled.csv") in rec.paths(), what="polled",
                        timeout=DEADLINE_S)

    run(body, poll_fallback_s=0.2)


def test_the_limit_named_is_the_containers_inside_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a user namespace (a container) the inotify limit is the namespace's own, not
    the host's ``sysctl``: the reason says which one was hit."""
    host = tmp_path / "host_uid_map"
    host.write_text("         0          0 4294967295\n")
    container = tmp_path / "container_uid_map"
    container.write_text("         0       1000          1\n")
    monkeypatch.setattr(limits, "UID_MAP_FILE", str(host))
    assert limits.limit_scope() == "the system's limit"
    monkeypatch.setattr(limits, "UID_MAP_FILE", str(container))
    assert "container" in limits.limit_scope()
    assert limits.MAX_USER_WATCHES_FILE in limits.limit_scope()
    (tmp_path / "p").mkdir()

    async def body(w: Watcher, rec: Recorder) -> None:
        def no_watches_left(*args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

        assert w._native is not None
        monkeypatch.setattr(w._native, "schedule", no_watches_left)
        w.add(str(tmp_path / "p"))
        reason = w.status()[str(tmp_path / "p")]["reason"]
        assert "max_user_watches=" in reason and "this container's own limit" in reason

    run(body, poll_fallback_s=0.2)


def test_watch_cap_reads_whole_numbers_only() -> None:
    assert limits.watch_cap({limits.CAP_VAR: "90000"}) == 90000
    assert limits.watch_cap({limits.CAP_VAR: "many"}) is None
    assert limits.watch_cap({}) is None


def test_watch_limit_hit_below_the_root_is_detected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """watchdog 7.1 swallows ENOSPC for sub-folders; the post-schedule probe catches it."""
    monkeypatch.setattr(limits, "watch_limit_reached", lambda path: True)

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(tmp_path))
        st = w.status()[str(tmp_path)]
        assert st["mode"] == "degraded" and "sysctl" in st["fix"]
        assert w._native is not None and not w._native.emitters  # inotify watch released
        write(tmp_path / "p.csv")
        await await_for(lambda: str(tmp_path / "p.csv") in rec.paths(), what="polled", timeout=DEADLINE_S)

    run(body, poll_fallback_s=0.2)


def test_watch_limit_probe_on_this_machine(tmp_path: Path) -> None:
    assert limits.watch_limit_reached(str(tmp_path)) is False


def test_network_filesystem_is_polled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "filesystem_type", lambda path: "nfs4")

    async def body(w: Watcher, rec: Recorder) -> None:
        w.add(str(tmp_path))
        st = w.status()[str(tmp_path)]
        assert st["mode"] == "polling" and "nfs4" in st["reason"]
        f = tmp_path / "remote.csv"
        write(f, "1\n")
        await await_for(lambda: str(f) in rec.paths() and w.quiet(), what="polled change", timeout=DEADLINE_S)

    run(body, poll_fallback_s=0.2)


def test_filesystem_type_from_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "server:/export /mnt/lab\\040share nfs4 rw 0 0\n"
        "tmpfs /mnt/lab\\040share/scratch tmpfs rw 0 0\n"
    )
    monkeypatch.setattr(limits, "MOUNTS_FILE", str(mounts))
    assert limits.filesystem_type("/mnt/lab share/p1") == "nfs4"
    assert limits.filesystem_type("/mnt/lab share/scratch/x") == "tmpfs"
    assert limits.filesystem_type("/mnt/lab sharex") == "ext4"
    assert limits.is_network_fs("nfs4") and limits.is_network_fs("fuse.sshfs")
    assert not limits.is_network_fs("ext4") and not limits.is_network_fs(None)


def test_real_inotify_queue_overflow_rescans_the_root(tmp_path: Path) -> None:
    """Make the kernel queue really overflow: hold watchdog's inotify reader off its
    lock while creating more files than fs.inotify.max_queued_events holds."""
    limit = limits.read_int("/proc/sys/fs/inotify/max_queued_events")
    if limit is None or limit > 65536:
        pytest.skip("max_queued_events unknown or too large to overflow quickly")
    n_files = limit // 2 + 4000  # each create is IN_CREATE + IN_CLOSE_WRITE
    burst = tmp_path / "burst"

    async def body(w: Watcher, rec: Recorder) -> None:
        lock = getattr(getattr(w._native, "_inotify_fd", None), "_lock", None)
        if lock is None:
            pytest.skip("watchdog internals changed; cannot stall the inotify reader")
        w.add(str(tmp_path))
        burst.mkdir()
        await await_for(lambda: str(burst) in rec.rescans() and w.quiet(), what="burst dir watched", timeout=DEADLINE_S)
        with lock:  # the reader thread blocks here; the kernel queue fills up
            for i in range(n_files):
                os.close(os.open(burst / f"f{i:05d}", os.O_CREAT | os.O_WRONLY, 0o644))
        await await_for(lambda: str(tmp_path) in rec.rescans(), what="root rescan after overflow", timeout=DEADLINE_S)
        await await_for(w.quiet, what="quiet after overflow", timeout=DEADLINE_S)
        assert w.healthy()
        # still watching after watchdog rebuilt its watches
        f = burst / "after.csv"
        write(f)
        await await_for(lambda: str(f) in rec.paths(), what="event after overflow", timeout=DEADLINE_S)

    run(body)
