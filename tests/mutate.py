"""`make mutate`: mutation testing (mutmut 3) of the core modules, each against its own tests.

    python -m tests.mutate                         every core module, one after the other
    python -m tests.mutate sst_edge/fileio.py      one module (`make mutate MODULE=sst_edge/fileio.py`)
    python -m tests.mutate --children 2 ...        mutants tested in parallel (default 1)

Each module runs in its own scratch folder, .mutmut/<module>/, which holds a pyproject.toml whose
[tool.mutmut] names that module alone and its own test files, and links to the package, the tests and the
data folders. mutmut copies them into .mutmut/<module>/mutants/ and imports the package from there, so the
editable install (which points at the checkout) is never the code under test. Workers are forked from a
fork server that has collected the tests but run none (mutmut's `process_isolation = "forkserver"`):
forking a process in which torch has already run is not safe.

Not part of `make test` or CI: a module takes minutes to an hour. Prints, per module, killed / total and
every surviving mutant's name (`mutmut show NAME` in the module's folder shows its diff).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutmut"

# Each core module and the test files that are its own. Tests that need the session's trained model
# (conftest's trained_run, exported_model) are left out where faster tests of the same code exist.
MODULES: dict[str, list[str]] = {
    "sst_edge/fewshot.py": ["tests/test_fewshot.py"],
    "sst_edge/device/heads.py": ["tests/test_fewshot.py"],
    "sst_edge/train/shrink.py": ["tests/test_train_shrink.py", "tests/test_shrink_boundaries.py"],
    "sst_edge/cost/latency.py": ["tests/test_latency_lookup.py"],
    "sst_edge/space/subnet.py": ["tests/test_subnet.py"],
    "sst_edge/space/restriction.py": ["tests/test_subnet.py"],
    "sst_edge/fileio.py": ["tests/test_fileio.py"],
    "sst_edge/runtime/gallery.py": ["tests/test_runtime_gallery.py"],
    "sst_edge/runtime/stream.py": ["tests/test_runtime_stream.py"],
    "sst_edge/device/bundle.py": ["tests/test_profile_bundle.py"],
    "sst_edge/schema.py": ["tests/test_hostile_input.py"],
    "sst_edge/deploy/quantize.py": ["tests/test_int8.py"],
    "sst_edge/space/ops.py": ["tests/test_operators.py"],
    "sst_edge/space/shift.py": ["tests/test_operators.py"],
}
LINKED = ["sst_edge", "tests", "search_spaces", "export", "latency_tables"]
KILLED = {1, 3}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(module: str, tests: list[str], tag: str = "") -> Path:
    """A fresh scratch folder for `module`: links to the checkout and a pyproject.toml of its own."""
    work = WORK / (module.replace("/", "_").removesuffix(".py") + tag)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in LINKED:
        (work / name).symlink_to(ROOT / name, target_is_directory=True)
    pytest_ini = (ROOT / "pyproject.toml").read_text().split("[tool.pytest.ini_options]", 1)[1]
    pytest_ini = pytest_ini.split("\n[", 1)[0]
    (work / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        'source_paths = ["sst_edge"]\n'
        f"only_mutate = {_toml_list([module])}\n"
        f"also_copy = {_toml_list(LINKED[2:])}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
        'process_isolation = "forkserver"\n'
        "use_git_change_detection = false\n"
        "\n[tool.pytest.ini_options]" + pytest_ini)
    return work


def results(work: Path) -> dict[str, int | None]:
    """Every mutant's exit code, from mutmut's .meta files."""
    out: dict[str, int | None] = {}
    for meta in (work / "mutants").rglob("*.meta"):
        out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def run(module: str, tests: list[str], children: int, tag: str = "", rerun: bool = False,
        resume: bool = False) -> dict:
    """Mutate `module`. `rerun`: test again only the last run's survivors (new tests included); `resume`:
    go on with the mutants an interrupted run did not test."""
    work = WORK / (module.replace("/", "_").removesuffix(".py") + tag)
    names: list[str] = []
    if rerun and (work / "mutants").is_dir():
        names = sorted(k for k, c in results(work).items() if c is not None and c not in KILLED)
    elif resume and (work / "mutants").is_dir():
        pass
    else:
        work = prepare(module, tests, tag)
    mutmut = Path(sys.executable).with_name("mutmut")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([str(mutmut), "run", "--max-children", str(children), *names], cwd=work, env=env,
                          capture_output=True, text=True)
    with open(work / "mutmut.log", "a") as log:
        log.write(proc.stdout + proc.stderr)
    codes = results(work)
    killed = sorted(k for k, c in codes.items() if c in KILLED)
    survived = sorted(k for k, c in codes.items() if c == 0)
    other = {k: c for k, c in codes.items() if c not in KILLED and c != 0 and c is not None}
    untested = sorted(k for k, c in codes.items() if c is None)
    return {"module": module, "tests": tests, "total": len(codes), "killed": len(killed),
            "survived": survived, "other": other, "untested": untested, "exit": proc.returncode}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help="modules to mutate (default: every core module)")
    ap.add_argument("--children", type=int, default=1, help="mutants tested at once (default 1)")
    ap.add_argument("--tests", nargs="+", help="test files to use instead of the module's own (one module)")
    ap.add_argument("--tag", default="", help="suffix of the scratch folder (keeps runs apart)")
    ap.add_argument("--rerun", action="store_true", help="test again only the last run's survivors")
    ap.add_argument("--resume", action="store_true", help="go on where an interrupted run stopped")
    args = ap.parse_args(argv)
    modules = args.modules or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        print(f"not a core module: {', '.join(unknown)}; known: {', '.join(MODULES)}", file=sys.stderr)
        return 2
    worst = 0
    for m in modules:
        r = run(m, args.tests or MODULES[m], args.children, args.tag, args.rerun, args.resume)
        pct = 100 * r["killed"] / r["total"] if r["total"] else 0.0
        print(f"{m}: {r['killed']}/{r['total']} killed ({pct:.1f}%), {len(r['survived'])} survived"
              + (f", {len(r['other'])} other" if r["other"] else "")
              + (f", {len(r['untested'])} not tested yet (--resume)" if r["untested"] else ""),
              flush=True)
        for name in r["survived"]:
            print(f"    survived: {name}")
        for name, code in sorted(r["other"].items()):
            print(f"    exit {code}: {name}")
        last = WORK / f"last{args.tag}.json"
        done = json.loads(last.read_text()) if last.exists() else {}
        last.write_text(json.dumps({**done, m: r}, indent=1))
        if r["exit"] != 0:
            where = f"{WORK.name}/{m.replace('/', '_')[:-3]}{args.tag}/mutmut.log"
            print(f"    mutmut exited {r['exit']}: see {where}",
                  file=sys.stderr)
            worst = 1
    return worst


if __name__ == "__main__":
    sys.exit(main())
