"""`make figures`: re-run the benches whose output the docs show, and write each as a generated table.

Each figure becomes docs/figures/NAME.md: when and where it was measured (UTC date, commit, the host's CPU
model and speed features, core count, library versions), the exact command, and what the bench printed.
A docs page shows it with the mark `<!-- figure: NAME -->` (docs/_hooks/formats.py includes the file), so
no measured number on those pages is typed by hand. Figures from other hosts are kept as they were written,
each with its own header: a figure is replaced only when this host runs it again.

Run: .venv/bin/python bench/figures.py [NAME ...]   (default: every figure; `--list` names them)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from sst_edge.device.fingerprint import cpu_count, cpu_features, cpu_model

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "figures"
PY = sys.executable
TMP = "/tmp/sst-edge-"


class Figure(NamedTuple):
    what: str            # what it measures
    command: list[str]   # run from the repository root
    plot: str = ""       # the plot the command draws (its own path in the command), copied beside the figure


FIGURES: dict[str, Figure] = {
    "runtime": Figure("the on-device runtime's latency per query and per enrolled clip (untrained sst_tiny "
                      "model, 1 ONNX Runtime thread)", [PY, "bench/runtime.py"]),
    "decode": Figure("clips/s of 8-frame sampling: decord vs PyAV, and frame folders vs video",
                     [PY, "bench/decode.py", "--rounds", "5"]),
    "ddp_unused": Figure("what DDP's find_unused_parameters costs a step (gloo, 2 CPU processes, sst_tiny, "
                         "one single-path model with and without the flag, alternating)",
                         [str(Path(PY).parent / "torchrun"), "--nproc_per_node", "2", "bench/ddp_unused.py",
                          "--rounds", "20"]),
    "train_step": Figure("one supernet training step in fp32 and bf16, side by side, for sst_tiny and "
                         "sst_paper (1 torch thread beside 1 loader worker)",
                         [PY, "bench/train_step.py", "--rounds", "3", "--json", TMP + "train_step.json",
                          "--plot", TMP + "train_step.png"], TMP + "train_step.png"),
    "open_set": Figure("the open-set rules on the demo's sst_tiny (needs `make demo` first)",
                       [PY, "bench/open_set.py", "--model", "demo_out/models/sst_tiny", "--data",
                        "demo_out/data"]),
    "hysteresis": Figure("watch's hysteresis margin on the demo's sst_tiny (needs `make demo` first)",
                         [PY, "bench/hysteresis.py", "--model", "demo_out/models/sst_tiny", "--data",
                          "demo_out/data"]),
    "latency_tables": Figure("the shipped latency tables' own validation, each on the host its fingerprint "
                             "names (read from latency_tables/*.json, nothing timed)",
                             [PY, "bench/latency_tables.py"]),
    "export": Figure("every CPU backend and recipe on the paper-cost subnet, and each recipe's accuracy "
                     "change on the demo's trained sst_tiny (needs `make demo` first)",
                     [PY, "bench/export.py", "--rounds", "6", "--run", "demo_out/run", "--subnet",
                      "demo_out/search/best.json", "--data", "demo_out/data", "--episodes", "2000"]),
    "live": Figure("25 fps sources `watch` sustains per model, with latency, CPU and memory",
                   [PY, "bench/live.py", "--seconds", "20", "--out", TMP + "live.json"],  # plot: OUT's .png
                   TMP + "live.png"),
    "precision": Figure("test accuracy of sst_tiny trained in fp32 and in bf16, everything else equal",
                        [PY, "bench/precision.py", "--out", "runs/precision", "--plot",
                         TMP + "precision.png"], TMP + "precision.png"),
    "ablation": Figure("what shrinking, search, the head and the window are worth (sst_tiny, synthetic set, "
                       "a reduced budget: 6 epochs x 80 episodes, 300 test episodes per figure)",
                       [PY, "bench/ablation.py", "--out", "runs/ablation", "--epochs", "6", "--episodes",
                        "80", "--eval-episodes", "300", "--seed", "0"], "runs/ablation/ablation.png"),
    "operators_search": Figure("a search over sst_plus_tiny against one over sst_tiny under one latency "
                               "budget",
                               [PY, "bench/operators_search.py", "--out", "runs/operators_search"]),
    "big_little": Figure("a search over sst_plus_bl_tiny against one over sst_plus_tiny, joint and "
                         "progressive",
                         [PY, "bench/operators_search.py", "--out", "runs/big_little", "--spaces",
                          "sst_plus_tiny", "sst_plus_bl_tiny", "--progressive", "--epochs", "4", "--episodes",
                          "60", "--eval-episodes", "200", "--trials", "16", "--seed", "0"]),
    "ood_stream": Figure("background footage streamed through the runtime and through `watch` over "
                         "MPEG-TS/TCP: spans answered unknown, enrolled actions found (the tests' sst_tiny; "
                         "the two tests print their counts with Wilson 95% intervals and assert the floors "
                         "the docs name)",
                         [PY, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                          "tests/test_ood.py::test_background_footage_is_unknown_while_enrolled_actions_are_found",
                          "tests/test_live_network.py::test_a_minute_of_camera_footage_is_mostly_unknown"]),
    "operators": Figure("per block at sst_plus's stage shapes: params, MACs (NNI vs fvcore), ONNX Runtime "
                        "latency side by side, export parity",
                        [PY, "bench/operators.py", "--out", TMP + "operators"]),
}
# what libraries print to stdout while a bench runs (progress bars, calibration chatter): not the figure
CHATTER = re.compile(r"━|^(Collecting tensor data|Finding optimal threshold|"
                     r"Number of (tensors|histogram bins|quantized bins)|Percentile :)")
VERSIONS = ("torch", "onnxruntime", "openvino", "av", "decord", "numpy", "nni")


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# what a figure depends on: a change here (not in the docs) makes the commit's figure another program's
MEASURED = ("sst_edge", "bench", "tests", "export", "search_spaces", "latency_tables", "pyproject.toml",
            "constraints.txt", "Makefile")


def commit() -> str:
    sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                         cwd=ROOT).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *MEASURED],
                           capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return f"{sha} (with uncommitted changes)" if dirty else sha


def header(name: str, what: str, command: list[str], seconds: float, sha: str,
           load: tuple[float, float]) -> str:
    features = ", ".join(f for f, on in cpu_features().items() if on) or "none of those checked"
    rows = [("date (UTC)", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")), ("commit", sha),
            ("CPU", f"{cpu_model()}, {cpu_count()} cores, {platform.machine()}"),
            ("CPU speed features", features),
            ("versions", ", ".join(f"{d} {version(d)}" for d in VERSIONS)),
            ("Python", platform.python_version()), ("took", f"{seconds:.0f} s"),
            ("machine load (1-min average, start / end)",
             f"{load[0]:.2f} / {load[1]:.2f} on {cpu_count()} cores")]
    program = "python" if command[0] == PY else Path(command[0]).name
    shown = " ".join([program, *command[1:]])
    return (f"<!-- generated by bench/figures.py ({name}); do not edit -->\n"
            f"**Generated figure `{name}`**: {what}. Command: `{shown}`.\n\n"
            "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows))


def run(name: str) -> Path:
    what, command, _ = FIGURES[name]
    needs_demo = any(c.startswith("demo_out/") for c in command)
    if needs_demo and not (ROOT / "demo_out" / "models" / "sst_tiny" / "card.json").is_file():
        raise SystemExit(f"bench/figures.py: {name} measures the demo's model: run `make demo` first")
    (OUT / f"{name}.png").unlink(missing_ok=True)  # never a plot of another run beside this one
    sha, load0, t0, started = commit(), os.getloadavg()[0], time.monotonic(), time.time()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"bench/figures.py: {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    text = header(name, what, command, time.monotonic() - t0, sha, (load0, os.getloadavg()[0]))
    kept = "\n".join(line for line in proc.stdout.rstrip().splitlines() if not CHATTER.search(line))
    text += f"\n```\n{kept}\n```\n"
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.md"
    path.write_text(text, encoding="utf-8")
    attach_plot(name, started)
    return path


def attach_plot(name: str, since: float) -> Path | None:
    """Copy the figure's plot beside it, only if its command drew it at or after `since` (epoch s)."""
    plot = FIGURES[name].plot
    src = ROOT / plot if plot else None
    if src is None or not src.is_file() or src.stat().st_mtime < since:
        return None
    dst = OUT / f"{name}.png"
    shutil.copyfile(src, dst)
    return dst


def attach(name: str) -> Path:
    """`--attach NAME`: the plot of the run that wrote docs/figures/NAME.md (drawn during that run)."""
    md = OUT / f"{name}.md"
    took = re.search(r"\| took \| (\d+) s \|", md.read_text(encoding="utf-8")) if md.is_file() else None
    if took is None:
        raise SystemExit(f"bench/figures.py: no generated figure {md} to attach a plot to")
    dst = attach_plot(name, md.stat().st_mtime - int(took.group(1)) - 5)
    if dst is None:
        plot = FIGURES[name].plot or "no plot"
        raise SystemExit(f"bench/figures.py: {plot} was not drawn by the run of {md}")
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help=f"figures to re-run (default all: {', '.join(FIGURES)})")
    p.add_argument("--list", action="store_true", help="name the figures and stop")
    p.add_argument("--attach", action="store_true",
                   help="only copy each named figure's plot beside it, if its last run drew it")
    args = p.parse_args()
    if args.list:
        for name, fig in FIGURES.items():
            print(f"{name}: {fig.what}")
        return
    unknown = [n for n in args.names if n not in FIGURES]
    if unknown:
        p.error(f"unknown figures {unknown}; known: {', '.join(FIGURES)}")
    for name in args.names or FIGURES:
        path = attach(name) if args.attach else run(name)
        print(f"figure {name}: {path.relative_to(ROOT)}", flush=True)


if __name__ == "__main__":
    main()
