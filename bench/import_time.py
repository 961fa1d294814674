"""Import time of the device half vs the host half, and the wall time of `sst-edge --help` and
`sst-edge classify --help`, each in fresh interpreters, interleaved round by round.

The device half (`import sst_edge.runtime.verbs, sst_edge.device.bundle`: enroll, classify, stream, gallery,
eval --model, profile --run-bundle) must start fast on a small device and never pull torch; the host half
(`import sst_edge.train.loop`) brings torch and NNI. Help must print in under 0.5 s with no torch (the
test `test_help_imports_nothing_heavy` checks what it imports). Prints the medians and their ratios to a
bare interpreter's start.

    .venv/bin/python bench/import_time.py --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

SNIPPETS = {
    "python alone": "pass",
    "device half": "import sst_edge.runtime.verbs, sst_edge.device.bundle",
    "host half": "import sst_edge.train.loop",
}


def once(code: str) -> float:
    probe = ("import time; t = time.perf_counter(); " + code + "; import sys; "
             "print(time.perf_counter() - t); "
             "assert ('torch' in sys.modules) == " + repr("train" in code))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


HELP = {"python -c pass": ["-c", "pass"], "sst-edge --help": ["-m", "sst_edge.cli", "--help"],
        "classify --help": ["-m", "sst_edge.cli", "classify", "--help"]}


def wall(args: list[str]) -> float:
    """Wall time of a whole process, start to exit."""
    t = time.perf_counter()
    subprocess.run([sys.executable, *args], capture_output=True, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in SNIPPETS}
    walls: dict[str, list[float]] = {k: [] for k in HELP}
    for _ in range(args.rounds):
        for name, code in SNIPPETS.items():
            times[name].append(once(code))
        for name, argv in HELP.items():
            walls[name].append(wall(argv))
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, v in times.items():
        print(f"  {name:<14} median {med[name]:.3f} s  (min {min(v):.3f}, max {max(v):.3f}, {len(v)} runs)")
    print(f"  host / device import time: {med['host half'] / med['device half']:.1f}x")
    base = statistics.median(walls["python -c pass"])
    for name, v in walls.items():
        m = statistics.median(v)
        print(f"  {name:<16} wall median {m:.3f} s  (max {max(v):.3f}; {m / base:.1f}x a bare interpreter)")


if __name__ == "__main__":
    main()
