"""`make device-check-lowest` installs the lowest versions pyproject.toml allows: `lowest_pins` derives
them from the `>=` bounds (checked here against hand-written pins; no venv is built)."""

from __future__ import annotations

import pytest
from device_check import ROOT, CheckFailed, check_lowest_installed, lowest_pins

PYPROJECT = """
[project]
name = "Demo_Pkg"
version = "1.0"
dependencies = [
    "numpy>=1.26,<3",
    "av >= 12",
    "decord>=0.6; platform_machine == 'x86_64' or platform_machine == 'AMD64'",
    "requests[socks]>=2.31",
    "foo~=2.4.1",
    "bar==3.1",
    "baz>=1.0,>=1.2,!=1.3",
    "demo-pkg[tools]",
]

[project.optional-dependencies]
cpu = ["onnxruntime>=1.17"]
gpu = ["onnxruntime-gpu>=1.17"]
all = ["demo_pkg[cpu,tools]", "numpy>=1.26,<3"]
tools = ["rich>=13; python_version >= '3.11'"]
"""

RICH = 'rich==13; python_version >= "3.11"'
BASE = ["numpy==1.26", "av==12",
        'decord==0.6; platform_machine == "x86_64" or platform_machine == "AMD64"',
        "requests==2.31", "foo==2.4.1", "bar==3.1", "baz==1.2", RICH]  # RICH: demo-pkg[tools]


def test_pins_from_bounds_markers_and_extras() -> None:
    assert lowest_pins(PYPROJECT, ()) == BASE
    assert lowest_pins(PYPROJECT, ("cpu",)) == [*BASE, "onnxruntime==1.17"]
    # the project's own extras inside an extra are followed; a pin given twice is listed once
    assert lowest_pins(PYPROJECT, ("all",)) == [*BASE, "onnxruntime==1.17"]


@pytest.mark.parametrize("dep, says", [
    ("numpy<3", "states no lowest version"),
    ("numpy", "states no lowest version"),
    ("numpy>1.26", "states no lowest version"),
    ("numpy==1.*", "states no lowest version"),
    ("numpy>=1.26,!=1.26", "its lowest bound 1.26 is itself excluded"),
])
def test_a_range_without_a_testable_bottom_is_named(dep: str, says: str) -> None:
    text = f'[project]\nname = "x"\nversion = "1"\ndependencies = ["{dep}"]\n'
    with pytest.raises(CheckFailed, match=says) as e:
        lowest_pins(text, ())
    assert dep in str(e.value)


def test_unknown_extra_is_named() -> None:
    with pytest.raises(CheckFailed, match=r"no extra \[cuda\] \(it has cpu, gpu, all, tools\)"):
        lowest_pins(PYPROJECT, ("cuda",))


def test_the_repositorys_device_half_has_a_bottom_for_every_dependency() -> None:
    pins = lowest_pins((ROOT / "pyproject.toml").read_text(), ("cpu",))
    names = [p.split("==")[0] for p in pins]
    assert {"numpy", "av", "onnxruntime", "safetensors", "jsonschema", "PyYAML", "tqdm", "rich"} <= set(names)
    assert not {"torch", "nni", "onnx", "onnxruntime-gpu"} & set(names)


def test_installed_versions_are_checked_against_the_pins() -> None:
    pins = ["numpy==1.26", "av==12", "nowhere==1.0; platform_machine == 'no-such-machine'"]
    listing = [{"name": "numpy", "version": "1.26.0"}, {"name": "av", "version": "12.0.0"}]
    assert check_lowest_installed(pins, listing).startswith("numpy 1.26.0, av 12.0.0, nowhere not here")
    with pytest.raises(CheckFailed, match="av 12.3.0 is installed, not 12"):
        check_lowest_installed(pins, [listing[0], {"name": "av", "version": "12.3.0"}])
    with pytest.raises(CheckFailed, match=r"av 12 \(pyproject.toml's lowest\) is not installed"):
        check_lowest_installed(pins, listing[:1])
