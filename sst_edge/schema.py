"""Every document we read or write (model card, gallery index, subnet, latency table, restriction) is
checked against a JSON Schema here, the same way on read as on write.

jsonschema reports every problem at once with where it is (`input.shape[1]: 'x' is not of type
'integer'`). Two rules are stricter than JSON Schema's defaults, because a document is a contract between
machines: an integer is an integer (not 12.0, not true), and a number is finite (read_json refuses NaN
and Infinity already; documents built in memory are checked before they are written).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from .errors import SSTEdgeError
from .text import LABEL_MAX, brief, is_label_text

HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
TEXT = {"type": "string", "format": "text", "maxLength": 4096}
LABEL = {"type": "string", "format": "label", "maxLength": LABEL_MAX}
POS_INT = {"type": "integer", "minimum": 1}
NONNEG_INT = {"type": "integer", "minimum": 0}
POS_NUMBER = {"type": "number", "exclusiveMinimum": 0}
NONNEG_NUMBER = {"type": "number", "minimum": 0}


def version_schema(version: int) -> dict[str, Any]:
    return {"type": "integer", "const": version}


@cache
def _validator_class() -> Any:

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine_many({
        "integer": lambda _c, v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda _c, v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    })
    return jsonschema.validators.extend(base, type_checker=checker)


@cache
def _format_checker() -> Any:

    fc = jsonschema.FormatChecker(formats=())
    fc.checks("label")(is_label_text)
    fc.checks("text")(lambda v: not isinstance(v, str) or v.isprintable())
    return fc


def _where(error: Any) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(the document)"


def _message(error: Any) -> str:
    if error.validator == "format":
        what = {"label": f"printable text of 1 to {LABEL_MAX} characters without leading or trailing spaces",
                "text": "printable text (no control characters)"}.get(error.validator_value)
        return f"{brief(error.instance, 60)!s} is not {what or error.validator_value}"
    if error.validator == "type" and isinstance(error.instance, float) and not math.isfinite(error.instance):
        return f"{error.instance} is not a finite number"
    return brief(error.message, 200)


def problems(doc: Any, schema: Mapping[str, Any]) -> list[str]:
    """Every way `doc` breaks `schema`, each as 'where: what', in document order."""
    validator = _validator_class()(schema, format_checker=_format_checker())
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{_where(e)}: {_message(e)}" for e in errors]


def check(doc: Any, schema: Mapping[str, Any], what: str, path: str | Path | None = None) -> Any:
    """`doc` if it fits `schema`; else an SSTEdgeError naming the file, the kind of document and every
    problem. Returns the document so that readers can write ``doc = check(read_json(p), ...)``."""
    found = problems(doc, schema)
    if found:
        raise SSTEdgeError(f"not a valid {what}", path, found[:50] + (
            [f"... and {len(found) - 50} more"] if len(found) > 50 else []))
    return doc


def check_header(doc: Any, fmt: str, version: int | tuple[int, ...], what: str,
                 path: str | Path | None = None) -> None:
    """Refuse, before any other check, a document that is not ours or that a newer sst-edge wrote: its
    other problems would only be noise. `version`: the one version read, or every version read."""
    versions = version if isinstance(version, tuple) else (version,)
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise SSTEdgeError(f"not an sst-edge {what} (expected format '{fmt}')", path)
    if doc.get("version") not in versions or isinstance(doc.get("version"), bool):
        readable = " or ".join(map(str, versions))
        raise SSTEdgeError(f"{what} version {brief(doc.get('version'))} is not supported (this sst-edge "
                           f"reads version {readable})", path)


def header_schema(fmt: str, version: int | None) -> dict[str, Any]:
    """The `format` and `version` entries every document starts with."""
    props: dict[str, Any] = {"format": {"const": fmt}}
    if version is not None:
        props["version"] = version_schema(version)
    return props
