"""Where events go: JSON lines on stdout, an events file, a broker (mqtt.py). One interface for all three:
emit(event) never raises on the way out (a full disk or a gone broker is a problem to report, not a
reason to stop watching), health() and close() say what was delivered and what was lost."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Protocol, TextIO

from ...errors import SSTEdgeError
from .events import EVENT_FORMAT


class Sink(Protocol):
    def emit(self, event: dict[str, Any]) -> None: ...

    def health(self) -> dict[str, Any]: ...

    def problems(self) -> list[str]: ...

    def close(self, timeout: float = 5.0) -> dict[str, Any]: ...


def event_line(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"


class _Counted:
    """What the stdout and file sinks share: events written and lost, and problems not yet reported."""

    def __init__(self) -> None:
        self.written = self.lost = 0
        self._problems: list[str] = []

    def problems(self) -> list[str]:
        """The problems since the last call (the watch loop prints them; a sink never prints)."""
        out, self._problems = self._problems, []
        return out


class StdoutSink(_Counted):
    """JSON lines on stdout (or `stream`), flushed per event so a pipe sees each at once."""

    def __init__(self, stream: TextIO | None = None):
        super().__init__()
        self.stream = stream or sys.stdout

    def emit(self, event: dict[str, Any]) -> None:
        try:
            self.stream.write(event_line(event))
            self.stream.flush()
            self.written += 1
        except (OSError, ValueError) as e:  # a closed pipe: counted, said once
            self.lost += 1
            if self.lost == 1:
                self._problems.append(f"stdout: cannot write events ({e})")

    def health(self) -> dict[str, Any]:
        return {"sink": "stdout", "written": self.written, "lost": self.lost}

    def close(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.health()


class FileSink(_Counted):
    """Events appended to a file, one JSON line each, each written whole and fsync'd before emit returns:
    a crash loses at most the event being written, never one written before. A torn last line (a crash
    mid-write) is left as it is and followed by a newline, so every later event is a line of its own. A
    file that exists and is not an events file (its first line not an event) is refused: we append only
    to what we wrote."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        if self.path.is_dir():
            raise SSTEdgeError("--events names a folder, not a file", self.path)
        torn = self._check_existing()
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise SSTEdgeError(f"cannot open the events file for appending: {e.strerror}",
                               self.path) from None
        if torn:
            self._write(b"\n")
            self._problems.append(f"{self.path}: its last line was incomplete (a crash while writing?): "
                                  "left as it is, later events start on a new line")

    def _check_existing(self) -> bool:
        """Whether the existing file ends in a torn line; refuse one that is not ours."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return False
        except OSError as e:
            raise SSTEdgeError(f"cannot read the events file: {e.strerror}", self.path) from None
        if size == 0:
            return False
        with open(self.path, "rb") as f:
            first = f.readline(65536)
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
        try:
            doc = json.loads(first)
            ours = isinstance(doc, dict) and doc.get("format") == EVENT_FORMAT
        except ValueError:
            ours = False
        if not ours:
            raise SSTEdgeError("exists and is not an sst-edge events file (its first line is not an event): "
                               "refusing to append to it; name a new file", self.path)
        return last != b"\n"

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        os.fsync(self.fd)

    def emit(self, event: dict[str, Any]) -> None:
        try:
            self._write(event_line(event).encode("ascii"))
            self.written += 1
        except OSError as e:
            self.lost += 1
            self._problems.append(f"{self.path}: event {event.get('id')} ({event.get('kind')}) not written: "
                                  f"{e.strerror}")

    def health(self) -> dict[str, Any]:
        return {"sink": "file", "path": str(self.path), "written": self.written, "lost": self.lost}

    def close(self, timeout: float = 5.0) -> dict[str, Any]:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        return self.health()


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The events of an events file, skipping a torn line (for tests and tools)."""
    out = []
    for line in Path(path).read_text(encoding="ascii", errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("format") == EVENT_FORMAT:
            out.append(doc)
    return out
