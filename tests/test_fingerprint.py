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
