"""What the shipped latency tables say of themselves: where each was profiled, and its validation.

Reads latency_tables/*.json (no timing here) and prints, for every table, what `sst-edge profile --table`
prints (`sst_edge.cost.profile.describe`): the device of its fingerprint and whether that is this host
(native) or another (foreign), the parts, the correction, and its validation on random subnets measured
whole (within 5% / 10%, RMSPE, mean error, Kendall's tau; raw, corrected leave-one-out and in-sample).

Run: .venv/bin/python bench/latency_tables.py [TABLE.json ...]   (default: latency_tables/*.json)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sst_edge.cost.latency import read_table
from sst_edge.cost.profile import describe

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", nargs="*", type=Path)
    args = ap.parse_args()
    for path in args.tables or sorted((ROOT / "latency_tables").glob("*.json")):
        print(describe(read_table(os.path.relpath(path))) + "\n")  # relative: no machine's paths in docs


if __name__ == "__main__":
    main()
