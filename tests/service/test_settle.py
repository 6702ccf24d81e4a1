"""The settle state machine, driven without a kernel: scripted events, a fake clock and
scripted looks at the files (watchfiles' ``MockRustNotify`` idea). The real-inotify
end-to-end cases stay in ``test_watch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from thotd.service.settle import Batch, Settle, Tuning, outermost

Signature = tuple[int, int, int]

TUNING = Tuning.of(settle_s=0.1, stable_checks=2, max_delay_s=1.0)


@dataclass
class Scripted:
    """A folder whose files look as the test says (a path not on ``disk`` is gone or a
    folder); the clock only moves when told."""

    tuning: Tuning = TUNING
    disk: dict[str, Signature] = field(default_factory=dict)
    now: float = 0.0
    delivered: list[tuple[float, Batch]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.settle = Settle(self.disk.get)

    def write(self, path: str, size: int, kind: str = "modified") -> None:
        self.disk[path] = (size, int(self.now * 1e9), 1)
        self.settle.event(kind, path, "", False, self.now, self.tuning)

    def event(self, kind: str, src: str, dest: str = "", is_dir: bool = False) -> None:
        self.settle.event(kind, src, dest, is_dir, self.now, self.tuning)

    def advance(self, to: float) -> None:
        """Move the clock to ``to``, running every tick that falls due on the way."""
        while self.settle.due is not None and self.settle.due <= to:
            self.now = self.settle.due
            batch = self.settle.tick(self.now, self.tuning)
            if batch is not None:
                self.delivered.append((self.now, batch))
        self.now = to

    def paths(self) -> list[set[str]]:
        return [b.paths for _, b in self.delivered]


def test_a_burst_on_one_file_is_one_batch_after_the_quiet_period() -> None:
    f = Scripted()
    for i in range(5):  # a write every 20 ms
        f.write("/p/data.csv", 10 * (i + 1))
        f.advance(f.now + 0.02)
    last = f.now - 0.02
    f.advance(5.0)
    assert f.paths() == [{"/p/data.csv"}]
    # one settle period after the last event: the look at the event and the one now agree
    assert f.delivered[0][0] >= last + TUNING.settle_s
    assert f.settle.due is None and not f.settle.settling


def test_a_growing_file_waits_while_a_stable_one_beside_it_goes() -> None:
    f = Scripted()
    f.write("/p/script.py", 100)
    f.write("/p/acquisition.raw", 1000)
    f.advance(0.05)
    f.disk["/p/acquisition.raw"] = (2000, 2, 1)  # grew without an event (mmap, NFS)
    f.advance(0.15)  # first tick: the script held still, the acquisition grew
    assert f.paths() == [{"/p/script.py"}]  # the growing one is held back
    f.advance(0.35)
    assert f.paths() == [{"/p/script.py"}, {"/p/acquisition.raw"}]  # stable again: goes


def test_a_batch_stays_whole_while_looks_are_still_confirming() -> None:
    f = Scripted(tuning=Tuning.of(0.1, 3, 5.0))
    f.write("/p/a.csv", 1)
    f.advance(0.05)
    f.write("/p/b.csv", 1)
    f.advance(0.16)  # a has had two looks, b one: nobody is growing, so nothing goes yet
    assert f.delivered == []
    f.advance(1.0)
    assert f.paths() == [{"/p/a.csv", "/p/b.csv"}]


def test_a_constant_trickle_cannot_postpone_quiet_paths_forever() -> None:
    f = Scripted()
    f.write("/p/edited.py", 5)
    while f.now < 3.0:  # a logger appends every 50 ms, for ever
        f.advance(f.now + 0.05)
        f.write("/p/log.txt", int(f.now * 100))
    first_time, first = f.delivered[0]
    assert first.paths == {"/p/edited.py"}
    assert first_time <= TUNING.max_delay_s + 2 * TUNING.settle_s
    assert all("/p/log.txt" not in b.paths for _, b in f.delivered)  # still hot


def test_a_rescan_folder_waits_for_the_files_below_it() -> None:
    f = Scripted()
    f.event("created", "/p/new", is_dir=True)
    f.write("/p/new/big.bin", 10, kind="created")
    f.advance(0.05)
    f.disk["/p/new/big.bin"] = (20, 2, 1)  # still being copied
    f.advance(0.15)
    assert f.delivered[0][1] == Batch(paths={"/p/new"}, rescan=set())  # the folder's path only
    f.advance(0.5)
    assert f.delivered[-1][1] == Batch(paths={"/p/new/big.bin"}, rescan={"/p/new"})


def test_deleted_paths_and_both_ends_of_a_move_go_at_once() -> None:
    f = Scripted()
    f.event("deleted", "/p/gone.csv")
    f.event("moved", "/p/a", "/p/b", is_dir=True)
    f.advance(0.1)
    assert f.delivered == [(0.1, Batch(paths={"/p/gone.csv", "/p/a", "/p/b"}, rescan={"/p/b"}))]


def test_lost_events_rescan_the_root() -> None:
    f = Scripted()
    f.settle.lost_events("/p", f.now, f.tuning)
    f.advance(0.2)
    assert f.delivered == [(0.1, Batch(paths=set(), rescan={"/p"}))]


def test_a_new_event_restarts_the_proof_of_stability() -> None:
    f = Scripted()
    f.write("/p/x", 1)
    f.advance(0.09)
    f.write("/p/x", 1)  # same size, new event: the quiet period starts again
    f.advance(0.15)
    assert f.delivered == []
    f.advance(0.3)
    assert f.paths() == [{"/p/x"}]


def test_tuning_is_clamped() -> None:
    assert Tuning.of(0, 0, 0) == Tuning(0.001, 1, 0.001)


def test_outermost_rescan_dirs() -> None:
    dirs = {"/p/a", "/p/a/b", "/p/a/b/c", "/p/a-x", "/p/a-x/y", "/q"}
    assert outermost(dirs) == {"/p/a", "/p/a-x", "/q"}
