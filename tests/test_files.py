"""The one atomic-write primitive: text, bytes or a writer; nothing half-written is ever left."""

from __future__ import annotations

import errno
import hashlib
import os

import numpy as np
import pytest

from landscape import files, reports


def test_write_atomic_takes_text_bytes_or_a_writer(tmp_path):
    target = tmp_path / "new" / "folder" / "a.txt"
    assert files.write_atomic(target, "héllo") == target  # parents are created
    assert target.read_text(encoding="utf-8") == "héllo"
    files.write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    arrays = {"x": np.arange(3.0)}
    files.write_atomic(tmp_path / "a.npz", lambda handle: np.savez(handle, **arrays))
    with np.load(tmp_path / "a.npz") as npz:
        np.testing.assert_array_equal(npz["x"], arrays["x"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "new"]  # no temporary file
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_a_failing_writer_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def half(handle):
        handle.write(b"half of it")
        raise KeyboardInterrupt  # Ctrl-C in the middle of a write

    with pytest.raises(KeyboardInterrupt):
        files.write_atomic(target, half)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_an_os_error_names_the_target_not_the_temporary_file(tmp_path):
    target = tmp_path / "a.json"
    target.mkdir()  # os.replace onto a folder fails, as on a read-only folder

    with pytest.raises(OSError) as info:
        files.write_atomic(target, "{}")
    assert info.value.filename == str(target)
    assert files.cannot_write(info.value, tmp_path).startswith(f"cannot write {target}: ")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert (
        files.cannot_write(full, tmp_path)
        == f"cannot write {tmp_path}: {os.strerror(errno.ENOSPC)}"
    )


def test_file_record_is_size_and_sha256(tmp_path):
    data = os.urandom(3 * 1024 + 7)
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert files.file_record(path) == expected
    assert files.sha256(path, chunk=1000) == expected["sha256"]  # read in chunks


def test_reports_keeps_its_names_for_the_primitives():
    assert reports.write_atomic is files.write_atomic
    assert reports.file_entry is files.file_record
