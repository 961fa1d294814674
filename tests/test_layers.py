"""The device half's contract, read from the source: `sst_edge/device/` and `sst_edge/runtime/` import
nothing from the host half (space, train, search, deploy, cost, data, fewshot) nor any host-only library,
at module level or inside functions; `device/` imports nothing from `runtime/` above it; the runtime's
modules form no import circle. A second check to tests/test_device_half.py, which runs the verbs with the
host libraries made unimportable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "sst_edge"
HOST_PACKAGES = ("space", "train", "search", "deploy", "cost", "data", "fewshot", "demo", "_nni")
HOST_LIBS = ("torch", "nni", "fvcore", "onnx", "onnxscript", "lightning", "pytorch_lightning", "matplotlib",
             "scipy")


def imports(path: Path, package: list[str] | None = None) -> list[str]:
    """Absolute module names imported anywhere in `path` (relative imports resolved against `package`,
    by default the file's own)."""
    if package is None:
        package = list(path.relative_to(PKG.parent).with_suffix("").parts)[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out += [mod] + [f"{mod}.{a.name}" for a in node.names]
    return out


def device_modules(folder: str) -> list[Path]:
    return sorted((PKG / folder).glob("*.py"))


@pytest.mark.parametrize("path", device_modules("device") + device_modules("runtime"), ids=lambda p: p.name)
def test_device_half_imports_no_host(path: Path) -> None:
    bad = [m for m in imports(path)
           if m.split(".")[0] in HOST_LIBS
           or (m.startswith("sst_edge.") and m.split(".")[1] in HOST_PACKAGES)
           or (path.parent.name == "device" and m.startswith("sst_edge.runtime"))]
    assert not bad, f"{path.relative_to(PKG.parent)} imports {sorted(set(bad))}"


def test_runtime_has_no_import_circle() -> None:
    graph = {p.stem: {m.split(".")[2] for m in imports(p) if m.startswith("sst_edge.runtime.")} - {p.stem}
             for p in device_modules("runtime")}

    def reach(start: str, seen: set[str]) -> set[str]:
        for nxt in graph.get(start, ()):
            if nxt not in seen:
                seen.add(nxt)
                reach(nxt, seen)
        return seen

    circles = [m for m in graph if m in reach(m, set())]
    assert not circles, f"runtime modules in an import circle: {circles}"


def test_the_checker_sees_a_planted_import(tmp_path: Path) -> None:
    """The rule can fail: a function-level torch import in a device-like module is found."""
    f = tmp_path / "planted.py"
    f.write_text("def f():\n    from ..fewshot import head_logits\n    import torch\n")
    found = imports(f, ["sst_edge", "device"])
    assert "torch" in found and "sst_edge.fewshot" in found
