"""Atomic file writes, careful reads and hashing: a crash leaves the old file or the new one, never half
of one, and a file we cannot read is reported with the reason the OS gave (not found, a symlink loop,
permission denied, no space left...), naming it."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import SSTEdgeError

JSON_MAX_BYTES = 256 << 20  # a document larger than this is not one of ours
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


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then fsync and rename the temporary file over ``path``.

    ``write`` may write the file by any means (safetensors, onnx.save, ...) as long as it writes ``tmp_path``.
    """
    path = Path(path)
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
        raise SSTEdgeError(f"{what}: {st.st_size:,} bytes, more than the {max_bytes:,} such a file can have",
                           path)
    return st


def read_bytes(path: str | Path, what: str = "file", max_bytes: int | None = None) -> bytes:
    """A whole file, its size checked first; every OS failure becomes an error naming the file."""
    stat_file(path, what, max_bytes)
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise os_error(e, what, path) from None


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Read strict JSON (no NaN/Infinity, bounded size and depth), turning every failure into an error
    that names the file."""
    return parse_json(read_bytes(path, what, JSON_MAX_BYTES), path, what)


def parse_json(data: bytes, path: str | Path | None = None, what: str = "JSON file") -> Any:
    """`read_json` for bytes already read (to hash exactly what was parsed, say)."""
    try:
        doc = json.loads(data.decode("utf-8"))
        bad = non_finite(doc)
    except UnicodeDecodeError as e:
        raise SSTEdgeError(f"not a valid {what}: not UTF-8 text ({e.reason} at byte {e.start})",
                           path) from None
    except (json.JSONDecodeError, ValueError) as e:
        raise SSTEdgeError(f"not a valid {what}: {e}", path) from None
    except RecursionError:
        raise SSTEdgeError(f"not a valid {what}: nested too deeply", path) from None
    if bad:
        raise SSTEdgeError(f"not a valid {what}: it holds NaN or Infinity", path, bad[:20])
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
