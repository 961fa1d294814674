"""Find spaces, targets and tables by name or path: ./<folder>, then the repository, then the wheel."""

from __future__ import annotations

from pathlib import Path

from .errors import SSTEdgeError

_PACKAGE_DIR = Path(__file__).resolve().parent
FOLDERS = {"space": "search_spaces", "target": "export", "table": "latency_tables"}
SUFFIXES = {"space": ".yaml", "target": ".yaml", "table": ".json"}


def data_dirs(kind: str) -> list[Path]:
    """Folders searched for a named resource, first match wins.

    The current directory comes first so a project can keep its own tables; then the source checkout
    (editable installs); then the copy shipped inside the wheel.
    """
    folder = FOLDERS[kind]
    candidates = [Path.cwd() / folder, _PACKAGE_DIR.parent / folder, _PACKAGE_DIR / "_data" / folder]
    seen: list[Path] = []
    for c in candidates:
        if c.is_dir() and c.resolve() not in [s.resolve() for s in seen]:
            seen.append(c)
    return seen


def available(kind: str) -> list[str]:
    names: set[str] = set()
    for d in data_dirs(kind):
        names.update(p.stem for p in d.glob(f"*{SUFFIXES[kind]}"))
    return sorted(names)


def resolve(kind: str, name_or_path: str | Path) -> Path:
    """A file name (``sst_tiny``) or a path (``my/space.yaml``) -> an existing file, or a clear error."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    if len(p.parts) == 1:  # a bare name, maybe with dots ("sst_tiny.cpu-fp32") or its suffix
        stem = p.name[: -len(SUFFIXES[kind])] if p.name.endswith(SUFFIXES[kind]) else p.name
        for d in data_dirs(kind):
            cand = d / f"{stem}{SUFFIXES[kind]}"
            if cand.is_file():
                return cand
    names = ", ".join(available(kind)) or "none"
    raise SSTEdgeError(f"no such {kind} (known {FOLDERS[kind]}: {names})", p)
