"""Atomic file writes, bounded reads and hashing: a crash leaves the old file or the new one, never half
of one, and a file we cannot read is reported with the reason the OS gave (not found, a symlink loop,
permission denied, no space left...), naming it.

The bounds below are the one place where sst-edge says how much of a file it will read
(docs/troubleshooting.md, "Bounds"): every reader checks its input against one of them before reading
it, so no input, however hostile, can make a small device allocate gigabytes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import SSTEdgeError
from .text import printable

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock
    fcntl = None  # type: ignore[assignment]

# ------------------------------------------------------------------------------------------- the bounds
JSON_MAX_BYTES = 64 << 20  # a JSON document (card, gallery index, subnet, table, manifest...)
YAML_MAX_BYTES = 1 << 20  # a space or target YAML (a few kB)
DOC_MAX_DEPTH = 64  # nesting of a JSON or YAML document (ours nest 6 deep)
SPLIT_MAX_BYTES = 32 << 20  # a split file (the full SSv2 train list, 169k lines, is 6 MB)
SPLIT_MAX_LINES = 1_000_000
IMAGE_MAX_BYTES = 64 << 20  # one frame image, on the disk or in a zip archive (declared and actual size)
FRAME_MAX_PIXELS = 8192 * 8192  # width x height of a frame image or a video frame, checked before decoding

TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")  # atomic_write's temporary files (mkstemp's names)
_REASONS = {
    errno.ENOENT: "not found", errno.ELOOP: "a symbolic link loop", errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted", errno.ENOSPC: "no space left on the device",
    errno.EROFS: "read-only file system", errno.EISDIR: "is a directory", errno.ENOTDIR: "not a directory",
    errno.EDQUOT: "disk quota exceeded", errno.EIO: "input/output error (the disk or file system failed)",
    errno.ENAMETOOLONG: "file name too long", errno.EMFILE: "too many open files",
}


def os_reason(e: OSError) -> str:
    """What went wrong, in words, from an OSError's errno (without the file name the OS appends)."""
    return _REASONS.get(e.errno or -1) or (e.strerror or type(e).__name__)


def os_error(e: OSError, what: str = "", path: str | Path | None = None) -> SSTEdgeError:
    """An OSError as the SSTEdgeError the CLI prints: the file, what we were doing, and why it failed."""
    where = path if path is not None else (e.filename if e.filename is not None else None)
    return SSTEdgeError(f"{what + ': ' if what else ''}{os_reason(e)}", where)


def _default_mode() -> int:
    """rw for whom the umask allows, like open(): mkstemp's 0600 would hide tables and models from others."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_MODE = _default_mode()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OSError raised without a file name (a full disk fails `write`, not `open`) gets `path` as its
    name, so the one message the CLI prints says which file could not be written."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise type(e)(e.errno, e.strerror or os.strerror(e.errno), str(path)) from None


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then fsync and rename the temporary file over ``path``.

    ``write`` may write the file by any means (safetensors, onnx.save, ...) as long as it writes ``tmp_path``.
    An OSError that names no file is raised naming ``path``.
    """
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            write(tmp_path)
            os.chmod(tmp_path, _MODE)
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON only: NaN and Infinity are refused (they are not JSON; JavaScript's JSON.parse and most
    other readers reject them), so a non-finite number never reaches a file a user relies on."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)
    except ValueError as e:
        raise SSTEdgeError(f"refusing to write a non-finite number (NaN or Infinity) into this file: {e}",
                           path) from None
    return atomic_write_text(path, text + "\n")


def non_finite(doc: Any, where: str = "") -> list[str]:
    """Where a parsed document holds NaN or Infinity (Python's json reads them; they are not JSON)."""
    if isinstance(doc, float) and not math.isfinite(doc):
        return [f"{where or '(the document)'}: {doc} is not a JSON number (NaN and Infinity are not JSON)"]
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in non_finite(v, f"{where}.{k}" if where else str(k))]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in non_finite(v, f"{where}[{i}]")]
    return []


def too_large(size: int, max_bytes: int) -> str:
    """The words of every size refusal, so all of them read alike."""
    return f"{size:,} bytes, more than the {max_bytes:,} such a file can have"


def stat_file(path: str | Path, what: str = "file", max_bytes: int | None = None) -> os.stat_result:
    """The file's stat, or an SSTEdgeError saying why it cannot be one: not found, a symlink loop,
    permission denied, a directory, or larger than `max_bytes` (checked before anything is read)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise os_error(e, what, path) from None
    if not path.is_file():
        raise SSTEdgeError(f"{what}: not a regular file", path)
    if max_bytes is not None and st.st_size > max_bytes:
        raise SSTEdgeError(f"{what}: {too_large(st.st_size, max_bytes)}", path)
    return st


def read_bytes(path: str | Path, what: str = "file", max_bytes: int | None = None) -> bytes:
    """A whole file, its size checked first and never more than `max_bytes` read (a file that grows
    meanwhile is refused too); every OS failure becomes an error naming the file."""
    stat_file(path, what, max_bytes)
    try:
        with open(path, "rb") as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except OSError as e:
        raise os_error(e, what, path) from None
    if max_bytes is not None and len(data) > max_bytes:
        raise SSTEdgeError(f"{what}: it grew past {max_bytes:,} bytes while it was read", path)
    return data


def too_deep(doc: Any, limit: int = DOC_MAX_DEPTH) -> bool:
    """Whether `doc` nests lists and mappings more than `limit` deep. Iterative, and a node shared by
    YAML aliases is walked again only when reached deeper than before, so neither deep nesting nor an
    alias bomb (or an alias loop) can make it recurse or run long."""
    seen: dict[int, int] = {}
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list) or seen.get(id(node), 0) >= depth:
            continue
        if depth > limit:
            return True
        seen[id(node)] = depth
        stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


def _nested(what: str, path: str | Path | None) -> SSTEdgeError:
    return SSTEdgeError(f"not a valid {what}: nested too deeply (more than {DOC_MAX_DEPTH} levels)", path)


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Read strict JSON (no NaN/Infinity, bounded size and depth), turning every failure into an error
    that names the file."""
    return parse_json(read_bytes(path, what, JSON_MAX_BYTES), path, what)


def parse_json(data: bytes, path: str | Path | None = None, what: str = "JSON file") -> Any:
    """`read_json` for bytes already read (to hash exactly what was parsed, say)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise SSTEdgeError(f"not a valid {what}: not UTF-8 text ({e.reason} at byte {e.start})",
                           path) from None
    except (json.JSONDecodeError, ValueError) as e:
        raise SSTEdgeError(f"not a valid {what}: {e}", path) from None
    except RecursionError:
        raise _nested(what, path) from None
    if too_deep(doc):
        raise _nested(what, path)
    bad = non_finite(doc)
    if bad:
        raise SSTEdgeError(f"not a valid {what}: it holds NaN or Infinity", path, bad[:20])
    return doc


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """A YAML document read safely (`safe_load`: no tags run code), its size and depth bounded, every
    failure an error naming the file."""
    import yaml  # here, not at the top: the CLI's --help imports this module

    data = read_bytes(path, what, YAML_MAX_BYTES)
    try:
        doc = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise SSTEdgeError(f"not valid YAML: not UTF-8 text ({e.reason} at byte {e.start})", path) from None
    except yaml.YAMLError as e:
        raise SSTEdgeError(f"not valid YAML: {e}", path) from None
    except RecursionError:
        raise _nested(what, path) from None
    if too_deep(doc):
        raise _nested(what, path)
    return doc


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def utc_now() -> str:
    """The timestamp every record we write carries (ISO 8601, UTC, seconds)."""

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------- folders we write
def foreign_entries(folder: str | Path, ours: Callable[[str, bool], bool]) -> list[str]:
    """The names in `folder` that sst-edge did not write: every entry `ours(name, is_dir)` does not claim
    (a symbolic link is never ours). Empty when the folder does not exist."""
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise os_error(e, "cannot list the folder", folder) from None
    return sorted(e.name for e in entries
                  if e.is_symlink() or not ours(e.name, e.is_dir(follow_symlinks=False)))


def written_by_us(files: Iterable[str] = (), folders: Iterable[str] = (),
                  pattern: str | None = None) -> Callable[[str, bool], bool]:
    """The claim `refuse_foreign` takes for one kind of folder: the files it names (or whose names match
    `pattern`), the sub-folders it names, and atomic_write's temporary files."""
    names, dirs = frozenset(files), frozenset(folders)
    regex = re.compile(pattern) if pattern else None

    def ours(name: str, is_dir: bool) -> bool:
        if is_dir:
            return name in dirs
        return name in names or bool(TEMP_NAME.match(name)) or bool(regex and regex.fullmatch(name))

    return ours


def refuse_foreign(folder: str | Path, ours: Callable[[str, bool], bool], what: str) -> None:
    """Refuse to write into `folder` when it holds anything sst-edge did not write there (the rule of
    every folder we write: a gallery, a model, a run, a search, a bundle): nothing of the user's is ever
    overwritten or deleted."""
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise SSTEdgeError(f"the {what} must be a folder (not a file or a symbolic link)", folder)
    foreign = foreign_entries(folder, ours)
    if foreign:
        shown = [f"not written by sst-edge: {printable(n)}" for n in foreign[:10]]
        shown += [f"... and {len(foreign) - 10} more"] if len(foreign) > 10 else []
        raise SSTEdgeError(f"the {what} holds files sst-edge did not write: refusing to write into it "
                           "(nothing was changed); choose another folder, or move them away", folder, shown)


@contextlib.contextmanager
def exclusive_lock(path: str | Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (made if needed, removed after) for the block, or fail
    at once with `busy` when another process holds it: two writers of one folder never both proceed.

    The file is checked to be the one locked after the lock is taken, so removing it is safe: a process
    that locked a file another had just removed tries again."""
    path = Path(path)
    if fcntl is None:  # not POSIX: one writer at a time is the user's job
        yield
        return
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, _MODE)
        except OSError as e:
            raise os_error(e, "cannot create a lock file", path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SSTEdgeError(busy, path) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # still locked: nobody else holds this file now
        os.close(fd)


class _Held:
    came = False


@contextlib.contextmanager
def interrupts_held() -> Iterator[_Held]:
    """Ctrl-C (SIGINT) is held off during the block, so that a commit (a few renames) is never left
    halfway; whether one came is in the yielded object's `came`. The handler is restored afterwards
    unless the block replaced it. Outside the main thread nothing changes (signals only reach it)."""
    held = _Held()
    if threading.current_thread() is not threading.main_thread():
        yield held
        return

    def note(_signum: int, _frame: object) -> None:
        held.came = True

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield held
    finally:
        if signal.getsignal(signal.SIGINT) is note:
            signal.signal(signal.SIGINT, previous)
