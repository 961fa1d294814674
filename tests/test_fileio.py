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
import time
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
    assert fileio.JSON_MAX_BYTES == 64 * 1024 * 1024


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
    assert e.value.path == big and e.value.message == "table: 67,108,865 bytes, more than the 67,108,864 " \
        "such a file can have"
    for data, message in [(b"\xff", "not a valid JSON file: not UTF-8 text (invalid start byte at byte 0)"),
                          (b"{", "not a valid JSON file: Expecting property name enclosed in double quotes: "
                                 "line 1 column 2 (char 1)"),
                          (b"[" * 100_000, "not a valid JSON file: nested too deeply (more than 64 levels)"),
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

    def eio(*_a, **_k):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fileio, "open", eio, raising=False)  # the module's open(), the builtin elsewhere
    with pytest.raises(SSTEdgeError) as e:
        read_bytes(f, "model")
    assert e.value.path == f
    assert e.value.message == "model: input/output error (the disk or file system failed)"
    with pytest.raises(SSTEdgeError) as e:
        read_bytes(f)
    assert e.value.message.startswith("file: input/output error")


# --------------------------------------------------------------------- bounds, folders, locks (issue 25)
def test_depth_is_bounded_without_recursion_even_for_alias_bombs_and_loops() -> None:
    assert not fileio.too_deep({"a": [[1, 2], {"b": None}]}, 3)
    assert fileio.too_deep({"a": [[1, 2], {"b": {}}]}, 3)  # {} is the fourth level
    deep: list = []
    node = deep
    for _ in range(100_000):  # far past Python's recursion limit: walked without recursing
        node.append([])
        node = node[0]
    assert fileio.too_deep(deep, 64) and not fileio.too_deep(deep, 100_001)
    shared: list = [0] * 10  # a billion-laughs shape: 10 levels of 10 references to one list
    for _ in range(9):
        shared = [shared] * 10
    start = time.monotonic()
    assert not fileio.too_deep(shared, 10) and fileio.too_deep(shared, 9)
    assert time.monotonic() - start < 1.0  # each shared node walked once per depth, not 10^9 times
    loop: list = []
    loop.append(loop)  # a YAML alias can refer to its own parent
    assert fileio.too_deep(loop, 64)


def test_yaml_is_read_bounded_and_named(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("a: [1, {b: 2}]\n")
    assert fileio.read_yaml(p) == {"a": [1, {"b": 2}]}
    nested = "not a valid space: nested too deeply (more than 64 levels)"
    for text, message in [("a: " + "[" * 5000 + "]" * 5000, nested), ("a: " + "[" * 70 + "]" * 70, nested),
                          ("a: [", "not valid YAML"), ("!!python/object/apply:os.system [echo hi]",
                                                       "not valid YAML")]:
        p.write_text(text)
        with pytest.raises(SSTEdgeError) as e:
            fileio.read_yaml(p, "space")
        assert e.value.path == p and e.value.message.startswith(message), e.value.message
    p.write_bytes(b"a: \xff")
    with pytest.raises(SSTEdgeError, match="not UTF-8 text"):
        fileio.read_yaml(p)
    os.truncate(p, fileio.YAML_MAX_BYTES + 1)
    with pytest.raises(SSTEdgeError, match="1,048,577 bytes, more than the 1,048,576"):
        fileio.read_yaml(p)


def test_a_bounded_read_never_reads_past_its_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 10)
    real = os.stat

    def shrunk(path, *a, **k):  # the file grows between the size check and the read
        st = real(path, *a, **k)
        return os.stat_result((*st[:6], 5, *st[7:])) if Path(path) == f else st

    monkeypatch.setattr(fileio.Path, "stat", lambda self, **k: shrunk(self, **k))
    with pytest.raises(SSTEdgeError, match="grew past 5 bytes while it was read"):
        read_bytes(f, "f", max_bytes=5)


def test_an_os_error_without_a_name_is_named_by_the_writer(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # fsync and write name no file

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(OSError) as e:
        atomic_write_bytes(tmp_path / "doc.bin", b"new")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "doc.bin")
    assert _names(tmp_path) == []
    with pytest.raises(OSError) as e, fileio.naming("/x"):
        raise OSError(errno.EROFS, "ro", "/already/named")
    assert e.value.filename == "/already/named"


def test_foreign_files_are_named_and_nothing_is_touched(tmp_path: Path) -> None:
    ours = fileio.written_by_us({"run.json"}, {"trials"}, r"checkpoint-e\d{4}\.json")
    folder = tmp_path / "run"
    fileio.refuse_foreign(folder, ours, "run folder")  # absent: nothing to refuse
    folder.mkdir()
    (folder / "trials").mkdir()
    for name in ("run.json", "checkpoint-e0001.json", ".run.json.abc123_x.tmp"):
        (folder / name).write_text("ours")
    fileio.refuse_foreign(folder, ours, "run folder")
    for name, make in [("notes.txt", Path.write_text), ("checkpoint-e1.json", Path.write_text),
                       ("run.json.bak", Path.write_text), (".hidden", Path.write_text),
                       ("results", lambda p, _t: p.mkdir()), ("run.json/", None)]:
        if make is None:  # the right name, the wrong kind: a folder named run.json
            (folder / "run.json").unlink()
            (folder / "run.json").mkdir()
            name = "run.json"
        else:
            make(folder / name, "mine")
        with pytest.raises(SSTEdgeError) as e:
            fileio.refuse_foreign(folder, ours, "run folder")
        assert e.value.path == folder and "holds files sst-edge did not write" in e.value.message
        assert e.value.problems == [f"not written by sst-edge: {name}"], (name, e.value.problems)
        target = folder / name
        assert target.is_dir() or target.read_text() == "mine"  # named, never touched
        target.rmdir() if target.is_dir() else target.unlink()
    (tmp_path / "link").symlink_to(folder)
    with pytest.raises(SSTEdgeError, match="must be a folder"):
        fileio.refuse_foreign(tmp_path / "link", ours, "run folder")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "l").symlink_to(folder / "checkpoint-e0001.json")
    with pytest.raises(SSTEdgeError, match="did not write"):
        fileio.refuse_foreign(tmp_path / "other", lambda _n, _d: True, "run folder")  # a link is never ours


def test_an_exclusive_lock_refuses_a_second_holder_at_once(tmp_path: Path) -> None:
    lock = tmp_path / ".m.lock"
    with fileio.exclusive_lock(lock, "busy"):
        assert lock.is_file()
        start = time.monotonic()
        with pytest.raises(SSTEdgeError) as e, fileio.exclusive_lock(lock, "busy"):
            pass
        assert e.value.message == "busy" and e.value.path == lock and time.monotonic() - start < 1
        child = subprocess.run([sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1]); "
                                "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)", str(lock)],
                               capture_output=True, text=True, check=False)
        assert child.returncode != 0 and "BlockingIOError" in child.stderr  # another process: refused too
    assert not lock.exists()  # removed after
    with fileio.exclusive_lock(lock, "busy"):  # and free again
        pass


def test_interrupts_held_lets_the_block_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    before = signal.getsignal(signal.SIGINT)
    done = []
    with fileio.interrupts_held() as held:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        done.append(True)
    assert done and held.came and signal.getsignal(signal.SIGINT) is before
    with fileio.interrupts_held() as held:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the block chose to ignore it from now on: kept
    assert not held.came and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    signal.signal(signal.SIGINT, before)
