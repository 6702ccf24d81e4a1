"""thotd.fingerprint: when a file counts as unchanged, on real files.

A signature taken within the racy window is not trusted (a same-size rewrite in the same
clock tick would keep it); a touch moves the stat but not the content hash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from thotd import fingerprint
from thotd.fingerprint import (
    FOLDER,
    MISSING,
    RACY_NS,
    Hasher,
    content_hash,
    look,
    path_key,
    racy_from,
    stat_key,
    stat_of,
    trusted_key,
    unmoved,
)


def test_a_same_size_rewrite_with_its_old_mtime_is_not_trusted(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(b"1,2,3\n")
    before = os.stat(data)
    # Rewritten in place, same size, its mtime set back: only ctime (and the content) moved.
    data.write_bytes(b"4,5,6\n")
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(data)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    # Looked at now, inside the racy window: no signature to trust, so it is read again.
    assert trusted_key(after, racy_from()) is None
    assert path_key(str(data), racy_from()) is None
    assert not unmoved(str(data), None)
    # Outside the window (looking from far enough later) it is trusted, and its key is not
    # the old one (ctime moved).
    later = racy_from(max(after.st_ctime_ns, after.st_mtime_ns) + RACY_NS + 1)
    assert trusted_key(after, later) == stat_key(after) != stat_key(before)


def test_the_racy_window_starts_racy_ns_before_now() -> None:
    assert racy_from(5 * RACY_NS) == 4 * RACY_NS


def test_a_touch_does_not_change_the_content_hash(tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 3000)
    hasher = Hasher()
    recorded = hasher.fingerprint(str(data))
    assert recorded is not None and recorded["hash"] == content_hash(str(data))
    st = os.stat(data)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert stat_of(str(data)) != recorded["stat"]
    assert content_hash(str(data)) == recorded["hash"]
    assert not hasher.changed(str(data), recorded)
    data.write_bytes(b"y" * 3000)  # same size, new bytes
    assert hasher.changed(str(data), recorded)


def test_missing_files_and_folders(tmp_path: Path) -> None:
    gone = str(tmp_path / "gone")
    assert stat_of(gone) is None and stat_of(None) is None and stat_of("a\0b") is None
    assert content_hash(gone) is None
    assert path_key(gone, racy_from()) == MISSING and unmoved(gone, MISSING)
    assert look(gone) is None and look(str(tmp_path)) == FOLDER
    (tmp_path / "f").write_text("x")
    assert look(str(tmp_path / "f")) == stat_key(os.stat(tmp_path / "f"))
    assert Hasher().changed(gone, None) is False
    assert Hasher().changed(str(tmp_path / "f"), None) is True  # appeared


def test_content_is_read_in_one_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every content read goes through one function (where a check on what may be opened
    belongs): replacing it changes what every hash sees."""
    data = tmp_path / "d"
    data.write_bytes(b"abc")
    monkeypatch.setattr(fingerprint, "_read_regular", lambda path: iter([b"other"]))
    assert content_hash(str(data)) == content_hash(str(tmp_path / "anything"))
    assert Hasher().fingerprint(str(data)) == {"stat": stat_of(str(data)), "hash": content_hash(str(data))}


def test_a_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO as an asset's file blocked ``open()`` forever (no writer ever comes): it is
    refused before it is opened, and said to be a pipe."""
    pipe = tmp_path / "data.csv"
    os.mkfifo(pipe)
    assert content_hash(str(pipe)) is None
    with pytest.raises(fingerprint.NotRegular, match="named pipe"):
        fingerprint.checked_hash(str(pipe))
    hasher = Hasher()
    assert hasher.fingerprint(str(pipe)) == {"stat": stat_of(str(pipe)), "hash": None}
    assert "named pipe" in hasher.refused[str(pipe)]


def test_a_link_to_an_endless_device_is_refused(tmp_path: Path) -> None:
    """A symlink to /dev/zero read forever: a character device is never read."""
    link = tmp_path / "zeros.bin"
    link.symlink_to("/dev/zero")
    assert content_hash(str(link)) is None
    hasher = Hasher()
    assert hasher.hash(str(link), stat_of(str(link))) is None
    assert "character device" in hasher.refused[str(link)]


def test_a_pipe_swapped_in_after_the_check_does_not_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The type is checked again on the descriptor, opened non-blocking: a regular file
    replaced by a pipe between the check and the open is still refused, at once."""
    path = tmp_path / "data"
    os.mkfifo(path)
    regular_file = tmp_path / "reg"
    regular_file.write_bytes(b"x")
    regular = os.stat(regular_file)
    # The check before opening sees a regular file (the swap has not happened yet).
    monkeypatch.setattr(os, "stat", lambda *_a, **_k: regular)
    with pytest.raises(fingerprint.NotRegular, match="named pipe"):
        fingerprint.checked_hash(str(path))


def test_a_file_over_the_size_budget_is_fingerprinted_by_its_signature(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"a" * 100)
    before = content_hash(str(big))
    monkeypatch.setattr(fingerprint, "HASH_LIMIT_BYTES", 10)
    sig = content_hash(str(big))
    assert sig is not None and sig != before
    # Not read: rewriting the bytes in place, keeping size and mtime, keeps the hash...
    st = os.stat(big)
    big.write_bytes(b"b" * 100)
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert content_hash(str(big)) == sig
    # ...and a touch changes it (the price of not reading it).
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert content_hash(str(big)) != sig


def test_a_hasher_that_does_not_read_names_what_it_wants(tmp_path: Path) -> None:
    """The daemon's hasher reads nothing itself: a miss is wanted, hashed elsewhere
    (``hash_files``, in a worker thread), then learnt."""
    data = tmp_path / "d"
    data.write_bytes(b"abc")
    hasher = Hasher(read=False)
    st = stat_of(str(data))
    assert hasher.hash(str(data), st) is None
    wanted = hasher.take_wanted()
    assert st is not None and wanted == {(str(data), st[0], st[1])}
    assert hasher.take_wanted() == set()
    hasher.learn(fingerprint.hash_files(wanted))
    assert hasher.hash(str(data), st) == content_hash(str(data))
    assert hasher.wanted == set()


def test_a_file_that_moved_while_hashed_is_left_for_later(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.write_bytes(b"abc")
    stale_key = (str(data), 3, 1)  # a size and mtime it no longer has
    assert fingerprint.hash_files([stale_key]) == {}
