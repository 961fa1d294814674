"""What the shipped latency tables say of themselves: the host each was profiled on, and its validation.

Reads latency_tables/*.json (no timing here): for every table, the CPU and runtime of its fingerprint, when
it was made, and its validation on random subnets measured whole: the share of subnets whose prediction is
within 5% / 10% of the measured median, RMSPE, mean error and Kendall's tau, raw (the plain sum of parts)
and corrected (the table's affine correction, leave-one-out), plus the correction itself. A table is
"native" only on a device with the same fingerprint; on any other it is foreign and `sst-edge search`
refuses it unless told otherwise.

Run: .venv/bin/python bench/latency_tables.py [TABLE.json ...]   (default: latency_tables/*.json)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def row(path: Path) -> str:
    doc = json.loads(path.read_text(encoding="utf-8"))
    fp, val = doc["fingerprint"], doc.get("validation") or {}
    host = f"{fp['cpu_model']}, {fp['cpu_count']} cores"
    runtime = f"{fp['backend']} {fp['versions'].get(fp['backend'], '?')}, {fp['precision']}"
    if not val:
        return (f"| {doc['space']} | {doc['target']['name']} | {host} | {runtime} | {doc['created'][:10]} "
                "| not validated |||||")
    figs = val["figures"]
    raw, loo = figs["raw"], figs["corrected_loo"]
    corr = doc.get("correction") or {}
    fit = (f"{corr['scale']:.3f} x sum {corr['offset_ms']:+.2f} ms" if corr.get("kind") == "affine"
           else f"{corr.get('scale', 1):.3f} x sum" if corr else "none")
    return (f"| {doc['space']} | {doc['target']['name']} | {host} | {runtime} | {val['created'][:10]} "
            f"| {val['subnets']} ({val['duration_s'] / 60:.0f} min) "
            f"| {100 * raw['within_10pct']:.0f}% / {raw['mean_error_pct']:+.1f}% "
            f"| {100 * loo['within_5pct']:.0f}% / {100 * loo['within_10pct']:.0f}% "
            f"| {loo['rmspe_pct']:.1f}% | {loo['kendall_tau']:.2f} | {fit} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", nargs="*", type=Path)
    args = ap.parse_args()
    tables = args.tables or sorted((ROOT / "latency_tables").glob("*.json"))
    print("| space | target | profiled on | runtime, precision | validated | subnets (time) "
          "| raw: within 10% / mean error | corrected (leave-one-out): within 5% / 10% | RMSPE | Kendall tau "
          "| correction |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in tables:
        print(row(path))


if __name__ == "__main__":
    main()
