"""The files an ONNX model loads besides itself (its external data), read from the protobuf directly.

ONNX Runtime loads every tensor whose `data_location` is EXTERNAL from the file its `external_data`
entry `location` names, relative to the model's folder. The runtime hashes only what the card lists, so
it must know those names before a session opens; the device half has no `onnx` package, so this walks
the protobuf wire format itself, entering only the messages that can hold a tensor (graphs, nodes,
attributes, sparse tensors, functions, training graphs) and skipping everything else by its length.
"""

from __future__ import annotations

import mmap
import posixpath
from pathlib import Path

from ..errors import SSTEdgeError
from ..fileio import os_error

# message -> {field number: message it holds}, from onnx.proto (only the fields on a path to a tensor)
_HOLDS: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}
_MAX_DEPTH = 64  # messages inside messages (graphs nest through If/Loop attributes)


class _Malformed(Exception):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed(pos)
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> list[tuple[int, int, int]]:
    """(field number, start, end) of the length-delimited fields of one message; the rest is skipped."""
    out, pos = [], start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            out.append((key >> 3, pos, pos + n))
            pos += n
        else:
            raise _Malformed(pos)
        if pos > end:
            raise _Malformed(pos)
    return out


def _entry(buf: memoryview, start: int, end: int) -> tuple[str, str]:
    """A StringStringEntryProto: (key, value)."""
    kv = {f: bytes(buf[a:b]).decode("utf-8", "replace")
          for f, a, b in _fields(buf, start, end) if f in (1, 2)}
    return kv.get(1, ""), kv.get(2, "")


def external_locations(buf: memoryview) -> set[str]:
    """The `location` of every tensor held as external data in a serialized ModelProto."""
    found: set[str] = set()
    stack = [("model", 0, len(buf), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise _Malformed(start)
        holds = _HOLDS[kind]
        for field, a, b in _fields(buf, start, end):
            inner = holds.get(field)
            if inner == "entry":
                key, value = _entry(buf, a, b)
                if key == "location":
                    found.add(value)
            elif inner is not None:
                stack.append((inner, a, b, depth + 1))
    return found


def external_files(model: Path) -> set[str]:
    """The files `model` loads as external data, as written in it (relative to its folder); an
    SSTEdgeError naming it when it is not a readable ONNX protobuf."""
    try:
        with open(model, "rb") as f:
            if not f.seek(0, 2):
                return set()
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                view = memoryview(m)
                try:
                    return external_locations(view)
                finally:
                    view.release()
    except _Malformed as e:
        raise SSTEdgeError(f"not a readable ONNX model (malformed protobuf near byte {e.args[0]})",
                           model) from None
    except OSError as e:
        raise os_error(e, "reading the model", model) from None


def unlisted_external_data(model: Path, listed: set[str]) -> list[str]:
    """Every external-data file `model` names that is not one of `listed` (plain names in its folder),
    or that lies outside its folder: what would be loaded without its sha256 being checked."""
    out = []
    for loc in sorted(external_files(model)):
        norm = posixpath.normpath(loc.replace("\\", "/"))
        if norm.startswith(("/", "../")) or norm == ".." or "/" in norm:
            out.append(f"{loc!r}: outside the model's folder")
        elif norm not in listed:
            out.append(f"{loc!r}: not listed in the card")
    return out
