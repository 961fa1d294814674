"""A non-editable install finds the data folders inside the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_data_folders(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, timeout=300)
    wheel = next(tmp_path.glob("sst_edge-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("sst_edge/_data/search_spaces/sst_tiny.yaml", "sst_edge/_data/search_spaces/sst_paper.yaml"):
        assert f in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import sst_edge, sst_edge.resources as r; "
            f"assert sst_edge.__file__.startswith({str(site)!r}), sst_edge.__file__; "
            "print(r.resolve('space', 'sst_paper'))")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(site)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("sst_edge/_data/search_spaces/sst_paper.yaml")
