"""Every lower bound in pyproject.toml is a version some check installs: the device half's by
`make device-check-lowest` (tests/device_check.py reads them), everything else only at constraints.txt's
pins, so there the bound must be the pin. A bound below what anything installs is a guess, and fails here."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
DEVICE_TESTED_AT_LOWEST = ("cpu", "openvino")  # tests/device_check.py DEVICE_EXTRAS
NOT_INSTALLED_HERE = {"onnxruntime-gpu"}  # needs an NVIDIA GPU: said in docs/install.md


def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", line.strip()):
            out[m.group(1).lower().replace("_", "-")] = Version(m.group(2))
    return out


def lowest(req: Requirement) -> Version | None:
    versions = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    return min(versions) if versions else None


def test_bounds_outside_the_device_half_are_the_tested_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned, wrong = pins(), []
    for extra, reqs in project["optional-dependencies"].items():
        if extra in DEVICE_TESTED_AT_LOWEST:
            continue
        for text in reqs:
            req = Requirement(text)
            name = req.name.lower().replace("_", "-")
            if name in NOT_INSTALLED_HERE:
                continue
            low = lowest(req)
            if low is None or name not in pinned or low != pinned[name]:
                wrong.append(f"[{extra}] {text}: constraints.txt installs {pinned.get(name)}")
    assert not wrong, "lower bounds nothing installs:\n" + "\n".join(wrong)


def test_the_device_half_has_a_lowest_version_for_every_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for e in DEVICE_TESTED_AT_LOWEST
                                      for r in project["optional-dependencies"][e]]
    assert all(lowest(Requirement(r)) is not None for r in reqs), reqs
