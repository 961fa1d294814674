"""A zip archive as a dataset root, read in place (TRX reads its frame datasets from one zip per dataset).

A path that runs through a ``.zip`` file (``/data/ssv2.zip/<class>/<clip>``) names a member of it. The
archive's central directory is read once into a tree of folders; images are read with `zipfile` from one
handle per thread and process (a handle must not be shared across threads or a fork). Only frame folders
are read from archives: videos inside one would have to be copied out for the decoders.
"""

from __future__ import annotations

import os
import stat
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError, VideoError
from ..fileio import os_reason, too_large
from ..text import printable


@dataclass(frozen=True)
class Entry:
    """One name in a folder: a real one (os.scandir) or an archive member."""

    name: str
    path: Path
    is_dir: bool
    is_file: bool
    size: int = -1  # bytes (archive members; -1 when not known without a stat)


class Archive:
    """The folder tree of one zip file, from its central directory (nothing is extracted)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            st = path.stat()
            with zipfile.ZipFile(path) as z:
                infos = z.infolist()
        except (OSError, zipfile.BadZipFile) as e:
            why = os_reason(e) if isinstance(e, OSError) else f"not a readable zip archive ({e})"
            raise DatasetError(why, path) from None
        problems = _member_problems(infos)
        if problems:
            raise DatasetError(f"refusing this zip archive: {len(problems)} member name(s) it cannot hold",
                               path, problems[:10] + ([f"... and {len(problems) - 10} more"]
                                                      if len(problems) > 10 else []))
        self.stamp = (st.st_size, st.st_mtime_ns)
        self.folders: dict[str, dict[str, tuple[bool, int]]] = {"": {}}  # folder -> name -> (is_dir, size)
        for info in infos:
            parts = [p for p in info.filename.split("/") if p]
            for k in range(len(parts)):
                parent, name = "/".join(parts[:k]), parts[k]
                last = k == len(parts) - 1
                is_dir = not last or info.is_dir()
                self.folders.setdefault(parent, {})
                if name not in self.folders[parent] or is_dir:
                    self.folders[parent][name] = (is_dir, -1 if is_dir else info.file_size)
                if is_dir:
                    self.folders.setdefault("/".join(parts[:k + 1]), {})
        self._local = threading.local()

    def read(self, inner: str, shown: Path, max_bytes: int) -> bytes:
        """A member's bytes, refused unread when it declares more than `max_bytes` and refused when it
        decompresses to more (at most `max_bytes` + 1 are ever decompressed); `VideoError` naming
        ``shown`` if it cannot be read."""
        z = getattr(self._local, "zip", None)
        if z is None or getattr(self._local, "pid", None) != os.getpid():
            z = self._local.zip = zipfile.ZipFile(self.path)
            self._local.pid = os.getpid()
        try:
            info = z.getinfo(inner)
            if info.file_size > max_bytes:
                raise VideoError(f"archive member declares {too_large(info.file_size, max_bytes)}", shown)
            with z.open(info) as f:
                data = f.read(max_bytes + 1)
        except (KeyError, OSError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError,
                ValueError) as e:
            raise VideoError(f"unreadable archive member ({e})", shown) from None
        if len(data) > max_bytes:
            raise VideoError(f"archive member decompresses to more than the {max_bytes:,} bytes such a file "
                             "can have", shown)
        return data


def _member_problems(infos: list[zipfile.ZipInfo]) -> list[str]:
    """What makes an archive's member names unusable as a folder tree: absolute names, '..' parts,
    symbolic links (never followed) and names given twice (which member is meant?)."""
    out, seen = [], set()
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        shown = printable(name)
        if name.startswith(("/", "\\")) or (len(parts[0]) == 2 and parts[0][1] == ":"):
            out.append(f"member {shown!r} has an absolute name")
        elif ".." in parts:
            out.append(f"member {shown!r} leaves the archive ('..')")
        elif stat.S_ISLNK(info.external_attr >> 16):
            out.append(f"member {shown!r} is a symbolic link (not followed)")
        elif name.rstrip("/") in seen:
            out.append(f"member {shown!r} is given twice")
        seen.add(name.rstrip("/"))
    return out


_archives: dict[str, Archive] = {}
_lock = threading.Lock()


def _archive(path: Path) -> Archive:
    key = str(path)
    with _lock:
        found = _archives.get(key)
        st = path.stat()
        if found is None or found.stamp != (st.st_size, st.st_mtime_ns):
            found = _archives[key] = Archive(path)
        return found


def locate(path: str | Path) -> tuple[Archive, str] | None:
    """(archive, member path) when ``path`` runs through a zip file (the archive itself: member ''), else
    None. Only path parts ending in .zip are looked at, so ordinary paths cost no system call."""
    path = Path(path)
    chain = [path, *path.parents]
    for k, p in enumerate(chain):
        if p.suffix.lower() != ".zip":
            continue
        try:
            if not stat.S_ISREG(p.stat().st_mode):
                continue
        except OSError:
            continue
        inner = "/".join(path.parts[len(p.parts):]) if k else ""
        return _archive(p), inner
    return None


def scandir(path: str | Path) -> list[Entry]:
    """The entries of a folder or of a folder inside an archive; OSError like os.scandir if there is none."""
    path = Path(path)
    hit = locate(path)
    if hit is None:
        with os.scandir(path) as it:
            return [Entry(e.name, Path(e.path), e.is_dir(), e.is_file()) for e in it]
    arc, inner = hit
    names = arc.folders.get(inner)
    if names is None:
        raise FileNotFoundError(2, "No such file or directory", str(path))
    return [Entry(n, path / n, d, not d, size) for n, (d, size) in names.items()]


def is_dir(path: str | Path) -> bool:
    """A folder, or a folder inside an archive (an archive's root included)."""
    hit = locate(path)
    if hit is None:
        try:
            return stat.S_ISDIR(os.stat(path).st_mode)
        except (OSError, ValueError):
            return False
    arc, inner = hit
    return inner in arc.folders


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """A file's bytes, from the disk or from an archive, refused (`VideoError` naming it) when larger than
    `max_bytes`, which is checked before reading and never exceeded while reading; OSError if unreadable."""
    hit = locate(path)
    if hit is not None:
        arc, inner = hit
        return arc.read(inner, path, max_bytes)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise VideoError(too_large(size, max_bytes), path)
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise VideoError(f"it grew past {max_bytes:,} bytes while it was read", path)
    return data


def file_size(path: Path) -> int:
    """A file's size in bytes, on the disk or in an archive; OSError if there is no such file."""
    hit = locate(path)
    if hit is None:
        return path.stat().st_size
    arc, inner = hit
    parent, _, name = inner.rpartition("/")
    found = arc.folders.get(parent, {}).get(name)
    if found is None or found[0]:
        raise FileNotFoundError(2, "No such file in the archive", str(path))
    return found[1]
