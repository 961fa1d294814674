"""fileio: atomic writes (a crash inside the write, a writer killed with SIGKILL mid-write), strict JSON,
careful reads and hashing, each against values worked out here, not by the code under test."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

import sst_edge
from sst_edge import fileio
from sst_edge.errors import SSTEdgeError
from sst_edge.fileio import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    non_finite,
    os_error,
    os_reason,
    parse_json,
    read_bytes,
    read_json,
    sha256_bytes,
    sha256_file,
    stat_file,
    utc_now,
)

OLD = b"the old file, whole\n" * 50


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _same_sst_edge_env() -> dict[str, str]:
    """The environment of a child that imports this very sst_edge (the copy under test, not another)."""
    root = str(Path(sst_edge.__file__).resolve().parent.parent)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))


# ----------------------------------------------------------------------------------------- atomic writes
def test_write_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "sub2" / "doc.bin"  # the folders are made
    assert atomic_write_bytes(dest, OLD) == dest
    assert dest.read_bytes() == OLD
    assert atomic_write_text(dest, "né\n") == dest
    assert dest.read_bytes() == "né\n".encode()
    assert _names(dest.parent) == ["doc.bin"]


def test_the_writer_writes_a_hidden_temporary_file_beside_the_destination(tmp_path: Path) -> None:
    dest = tmp_path / "doc.json"
    dest.write_bytes(OLD)
    seen = []

    def write(p: Path) -> None:
        seen.append(p)
        assert p != dest and p.parent == dest.parent and p.name.startswith(".doc.json.")
        assert p.name.endswith(".tmp")
        assert dest.read_bytes() == OLD  # the destination is untouched while the new one is written
        p.write_bytes(b"new")

    atomic_write(dest, write)
    assert len(seen) == 1 and not seen[0].exists() and dest.read_bytes() == b"new"


def test_a_crash_inside_the_write_keeps_the_old_file_and_leaves_no_partial_file(tmp_path: Path) -> None:
    dest = tmp_path / "doc.json"
    dest.write_bytes(OLD)

    def crash(p: Path) -> None:
        with open(p, "wb") as f:
            f.write(b"half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(dest, crash)
    assert dest.read_bytes() == OLD
    assert _names(tmp_path) == ["doc.json"]
    # KeyboardInterrupt (a BaseException) too
    def interrupted(p: Path) -> None:
        p.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(dest, interrupted)
    assert dest.read_bytes() == OLD and _names(tmp_path) == ["doc.json"]
    # a writer that removed its own temporary file before failing: its error is the one raised
    def gone(p: Path) -> None:
        p.unlink()
        raise RuntimeError("mine")

    with pytest.raises(RuntimeError, match="mine"):
        atomic_write(dest, gone)
    assert dest.read_bytes() == OLD
    # a crash on a file that did not exist yet leaves no file at all
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "new.json", crash)
    assert _names(tmp_path) == ["doc.json"]


KILLED_WRITER = """
import sys, time
from sst_edge.fileio import atomic_write

def write(p):
    with open(p, "wb") as f:
        f.write(b"N" * 4096)
        f.flush()
        print(p, flush=True)  # half written: the parent kills us now
        time.sleep(120)
        f.write(b"never")

atomic_write(sys.argv[1], write)
"""


def test_a_writer_killed_mid_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    dest = tmp_path / "doc.json"
    dest.write_bytes(OLD)
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(dest)], stdout=subprocess.PIPE,
                             text=True, env=_same_sst_edge_env())
    try:
        tmp = Path(child.stdout.readline().strip())
        assert tmp.parent == tmp_path and tmp.read_bytes() == b"N" * 4096  # mid-write, for sure
        assert dest.read_bytes() == OLD
    finally:
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
        child.stdout.close()
    assert dest.read_bytes() == OLD  # whole, not a prefix of the new one
    # What a killed writer leaves is its own hidden temporary file, never a partial destination.
    assert _names(tmp_path) == sorted(["doc.json", tmp.name]) and tmp.name.startswith(".doc.json.")
    atomic_write_bytes(dest, b"next")  # the next write is not disturbed by it
    assert dest.read_bytes() == b"next"


def test_fsync_before_the_rename_then_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode), os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(a, b) -> None:
        events.append(("replace", Path(b).name))
        real_replace(a, b)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    monkeypatch.setattr(fileio.os, "replace", replace)
    atomic_write_bytes(tmp_path / "f.bin", b"12345")
    assert events == [("fsync", False, 5), ("replace", "f.bin"), ("fsync", True, events[2][2])]


def test_new_files_follow_the_umask_not_mkstemp(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        mode = fileio._default_mode()
    finally:
        os.umask(old)
    assert mode == 0o644
    path = atomic_write_bytes(tmp_path / "f", b"x")
    assert stat.S_IMODE(path.stat().st_mode) == fileio._MODE == 0o666 & ~old


def test_json_is_strict_and_indented(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "d.json", {"b": [1, 2.5], "a": "é"})
    assert path.read_text() == '{\n  "b": [\n    1,\n    2.5\n  ],\n  "a": "\\u00e9"\n}\n'
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(SSTEdgeError, match="non-finite") as e:
            atomic_write_json(tmp_path / "d.json", {"x": [bad]})
        assert e.value.path == tmp_path / "d.json"
    assert json.loads(path.read_text()) == {"b": [1, 2.5], "a": "é"}  # the refused writes changed nothing


# ------------------------------------------------------------------------------------------------ reads
def test_non_finite_names_every_place() -> None:
    nan, inf = float("nan"), float("inf")
    doc = {"a": [1.0, nan, {"b": inf}], "c": 2, "d": {"e": [[-inf]]}}
    assert non_finite(doc) == [
        "a[1]: nan is not a JSON number (NaN and Infinity are not JSON)",
        "a[2].b: inf is not a JSON number (NaN and Infinity are not JSON)",
        "d.e[0][0]: -inf is not a JSON number (NaN and Infinity are not JSON)"]
    assert non_finite(nan) == ["(the document): nan is not a JSON number (NaN and Infinity are not JSON)"]
    assert non_finite([inf]) == ["[0]: inf is not a JSON number (NaN and Infinity are not JSON)"]
    assert non_finite({"x": [1, "inf", None, True]}) == []


def test_read_json_refuses_what_is_not_strict_json(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_text('{"a": 1, "b": [true, null]}')
    assert read_json(p) == {"a": 1, "b": [True, None]}
    p.write_text('{"a": NaN, "b": [Infinity]}')
    with pytest.raises(SSTEdgeError) as e:
        read_json(p, "table")
    assert e.value.path == p and "not a valid table: it holds NaN or Infinity" in str(e.value)
    assert "a: nan is not a JSON number" in str(e.value) and "b[0]: inf" in str(e.value)
    p.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(SSTEdgeError, match=r"not a valid JSON file: not UTF-8 text \(invalid start byte at "
                                           r"byte 7\)"):
        read_json(p)
    p.write_text('{"a": ')
    with pytest.raises(SSTEdgeError, match="not a valid card: Expecting value"):
        read_json(p, "card")
    with pytest.raises(SSTEdgeError, match="nested too deeply"):
        parse_json(b"[" * 100_000 + b"]" * 100_000, p)
    assert parse_json(b"[1]") == [1]


def test_reads_name_the_file_and_the_reason(tmp_path: Path) -> None:
    with pytest.raises(SSTEdgeError) as e:
        read_bytes(tmp_path / "nope", "model")
    assert e.value.path == tmp_path / "nope" and e.value.message == "model: not found"
    with pytest.raises(SSTEdgeError, match="gallery: not a regular file"):
        stat_file(tmp_path, "gallery")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(SSTEdgeError, match="a symbolic link loop"):
        read_bytes(loop)
    f = tmp_path / "f"
    f.write_bytes(b"x" * 10)
    assert stat_file(f, max_bytes=10).st_size == 10 and read_bytes(f, max_bytes=10) == b"x" * 10
    with pytest.raises(SSTEdgeError, match="f: 10 bytes, more than the 9 such a file can have"):
        read_bytes(f, "f", max_bytes=9)
    os.truncate(f, 12_345_678)  # sparse: checked by its size before anything is read
    with pytest.raises(SSTEdgeError, match="12,345,678 bytes, more than the 1,000"):
        stat_file(f, max_bytes=1000)
    assert fileio.JSON_MAX_BYTES == 256 * 1024 * 1024


def test_os_reasons_in_words() -> None:
    assert os_reason(OSError(errno.ENOSPC, "x")) == "no space left on the device"
    assert os_reason(OSError(errno.EACCES, "x")) == "permission denied"
    assert os_reason(OSError(errno.EXDEV, "Invalid cross-device link")) == "Invalid cross-device link"
    assert os_reason(OSError()) == "OSError"
    assert os_reason(FileNotFoundError()) == "FileNotFoundError"
    e = os_error(OSError(errno.EROFS, "ro", "/some/file"), "saving the index")
    assert e.message == "saving the index: read-only file system" and e.path == Path("/some/file")
    e = os_error(OSError(errno.EIO, "io"), path="/x")
    assert e.path == Path("/x") and e.message.startswith("input/output error")
    assert os_error(OSError(errno.EIO, "io")).path is None


def test_hashes_match_published_values(tmp_path: Path) -> None:
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2, "abc"
    assert sha256_bytes(b"abc") == abc
    (tmp_path / "abc").write_bytes(b"abc")
    assert sha256_file(tmp_path / "abc") == abc
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == empty
    million_a = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"  # FIPS 180-2
    (tmp_path / "a").write_bytes(b"a" * 1_000_000)
    assert sha256_file(tmp_path / "a", chunk=4096) == million_a == sha256_file(tmp_path / "a")


def test_utc_now_is_iso_seconds_utc() -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    s = utc_now()
    t = datetime.fromisoformat(s)
    assert s.endswith("+00:00") and len(s) == len("2026-01-01T00:00:00+00:00")
    assert before <= t <= datetime.now(timezone.utc)


def test_every_error_names_its_file_and_what_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "missing.json"
    for call, message in [(lambda: read_bytes(missing), "file: not found"),
                          (lambda: stat_file(missing), "file: not found"),
                          (lambda: read_json(missing), "JSON file: not found"),
                          (lambda: read_json(missing, "card"), "card: not found"),
                          (lambda: stat_file(tmp_path), "file: not a regular file")]:
        with pytest.raises(SSTEdgeError) as e:
            call()
        assert e.value.message == message and e.value.path in (missing, tmp_path)
    big = tmp_path / "big.json"
    big.write_bytes(b"")
    os.truncate(big, fileio.JSON_MAX_BYTES + 1)  # sparse; refused by its size before it is read
    with pytest.raises(SSTEdgeError) as e:
        read_json(big, "table")
    assert e.value.path == big and e.value.message == "table: 268,435,457 bytes, more than the 268,435,456 " \
        "such a file can have"
    for data, message in [(b"\xff", "not a valid JSON file: not UTF-8 text (invalid start byte at byte 0)"),
                          (b"{", "not a valid JSON file: Expecting property name enclosed in double quotes: "
                                 "line 1 column 2 (char 1)"),
                          (b"[" * 100_000, "not a valid JSON file: nested too deeply"),
                          (b"[NaN]", "not a valid JSON file: it holds NaN or Infinity")]:
        with pytest.raises(SSTEdgeError) as e:
            parse_json(data, big)
        assert e.value.message == message and e.value.path == big
    with pytest.raises(SSTEdgeError) as e:
        parse_json(json.dumps([float("nan")] * 25).encode(), big)
    assert len(e.value.problems) == 20 and e.value.problems[19].startswith("[19]: nan")
    # the OS fails the read itself, after the file was found: the reason and the file are named
    f = tmp_path / "f.bin"
    f.write_bytes(b"x")

    def eio(self):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "read_bytes", eio)
    with pytest.raises(SSTEdgeError) as e:
        read_bytes(f, "model")
    assert e.value.path == f
    assert e.value.message == "model: input/output error (the disk or file system failed)"
    with pytest.raises(SSTEdgeError) as e:
        read_bytes(f)
    assert e.value.message.startswith("file: input/output error")
