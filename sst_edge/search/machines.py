"""The machines of a remote search (`search --training-service remote --machines FILE`).

NNI's remote training service logs into each machine over SSH and runs trials there. What a trial needs
travels two ways: the search's own small files (its context, the cached validation episodes, the latency
table, a custom space YAML) go in the trial code folder NNI copies to every machine; the supernet run, which
can be large, must already be on each machine, at the path the file gives for it. Before the experiment
starts, every machine is logged into with OpenSSH's client and checked (sst-edge importable by its python,
the supernet there and the same file as the host's, by sha256), so a missing file is named up front, not
in a failed trial. The file (YAML):

    nni_manager_ip: 10.0.0.1        # optional: the address the machines reach this host at
    machines:
      - host: 10.0.0.2
        port: 22                    # default 22
        user: sst
        key_file: ~/.ssh/id_ed25519
        python_path: /opt/sst-edge/.venv/bin   # the folder of the python that has sst-edge
        gpu_indices: [0]            # optional: the GPUs trials may use there
        weights: /data/runs/tiny    # the supernet run on that machine (default: the search's --weights)
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SSTEdgeError
from ..fileio import read_yaml, sha256_file
from ..train.artifacts import WEIGHTS_FILE  # the probe imports torch there too, as trials will

FIELDS = {"host", "port", "user", "key_file", "python_path", "gpu_indices", "weights"}
SSH_TIMEOUT = 60.0  # seconds for one machine's check (log in, start python, hash the supernet)


@dataclass
class Machine:
    host: str
    user: str
    key_file: str
    python_path: str
    port: int = 22
    gpu_indices: list[int] | None = None
    weights: str | None = None  # the supernet run on that machine; None: the host's --weights path

    @property
    def name(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass
class Machines:
    machines: list[Machine]
    nni_manager_ip: str | None = None
    path: Path | None = None


def _machine(i: int, doc: Any, problems: list[str]) -> Machine | None:
    where = f"machines[{i}]"
    if not isinstance(doc, dict):
        problems.append(f"{where}: expected a mapping (host, user, key_file, python_path, ...), got {doc!r}")
        return None
    unknown = sorted(set(doc) - FIELDS)
    if unknown:
        problems.append(f"{where}: unknown keys {unknown} (known: {sorted(FIELDS)})")
    missing = [k for k in ("host", "user", "key_file", "python_path") if not doc.get(k)]
    if missing:
        problems.append(f"{where}: missing {', '.join(missing)}")
        return None
    port = doc.get("port", 22)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        problems.append(f"{where}: port must be an integer in 1..65535, got {port!r}")
        return None
    gpus = doc.get("gpu_indices")
    if gpus is not None and (not isinstance(gpus, list)
                             or not all(isinstance(g, int) and g >= 0 for g in gpus)):
        problems.append(f"{where}: gpu_indices must be a list of GPU numbers, got {gpus!r}")
        return None
    key = Path(str(doc["key_file"])).expanduser()
    if not key.is_file():
        problems.append(f"{where}: key_file {key}: no such file on this host (NNI logs in with it from here)")
    return Machine(host=str(doc["host"]), user=str(doc["user"]), key_file=str(key),
                   python_path=str(doc["python_path"]), port=port, gpu_indices=gpus,
                   weights=str(doc["weights"]) if doc.get("weights") else None)


def load_machines(path: str | Path) -> Machines:
    """Read and validate the machines file; every problem is named at once, with the file."""
    path = Path(path)
    doc = read_yaml(path, "machines file")
    if isinstance(doc, list):
        doc = {"machines": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("machines"), list) or not doc["machines"]:
        raise SSTEdgeError("a machines file lists its machines under 'machines:' (host, user, key_file, "
                           "python_path, ...)", path)
    problems: list[str] = []
    unknown = sorted(set(doc) - {"machines", "nni_manager_ip"})
    if unknown:
        problems.append(f"unknown top-level keys {unknown} (known: machines, nni_manager_ip)")
    found = [_machine(i, m, problems) for i, m in enumerate(doc["machines"])]
    if problems:
        raise SSTEdgeError("invalid machines file", path, problems)
    ip = doc.get("nni_manager_ip")
    return Machines([m for m in found if m is not None], str(ip) if ip else None, path)


def ssh_command(m: Machine, known_hosts: Path, remote: str) -> list[str]:
    """OpenSSH's client, logging in as NNI will (that key, no password prompt, a bounded wait)."""
    return ["ssh", "-i", m.key_file, "-p", str(m.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=15",
            "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "IdentitiesOnly=yes", f"{m.user}@{m.host}", remote]


def check_machines(ms: Machines, weights: str | Path, known_hosts: Path,
                   sha: str) -> dict[str, dict[str, Any]]:
    """Log into every machine and check what its trials will read; SSTEdgeError naming each problem.

    `sha`: the host's supernet file's sha256. Returns what each machine reported (its python, sst-edge
    version, the supernet path it will use)."""
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    seen: dict[str, dict[str, Any]] = {}
    for m in ms.machines:
        where = m.weights or str(Path(weights).resolve())
        probe = json.dumps({"weights": where, "sha256": sha})
        remote = (f"PATH={shlex.quote(m.python_path)}:$PATH python -m sst_edge.search.machines "
                  f"{shlex.quote(probe)}")
        try:
            done = subprocess.run(ssh_command(m, known_hosts, remote), capture_output=True, text=True,
                                  timeout=SSH_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            problems.append(f"{m.name}: no answer within {SSH_TIMEOUT:g} s")
            continue
        except FileNotFoundError:
            raise SSTEdgeError("OpenSSH's client (ssh) is not installed on this host: the remote search "
                               "checks its machines with it") from None
        lines = done.stdout.strip().splitlines()
        try:
            report = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            report = None
        if done.returncode != 0 or not isinstance(report, dict):
            tail = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
            problems.append(f"{m.name}: the check did not run (exit {done.returncode}): {tail}")
            continue
        problems += [f"{m.name}: {p}" for p in report.get("problems", [])]
        seen[m.name] = report
    if problems:
        raise SSTEdgeError("the remote machines are not ready for this search (nothing was started)",
                           ms.path, problems)
    return seen


def probe(request: dict[str, Any]) -> dict[str, Any]:
    """Run on a machine: is its supernet run there, and the same file as the host's?"""
    from .. import __version__

    problems: list[str] = []
    run = Path(request["weights"])
    f = run / WEIGHTS_FILE
    if not run.is_dir():
        problems.append(f"{run}: no such folder (copy the supernet run there, or set 'weights:' for it)")
    elif not f.is_file():
        problems.append(f"{f}: missing")
    elif sha256_file(f) != request["sha256"]:
        problems.append(f"{f}: not the host's supernet (sha256 differs): copy it again")
    return {"python": sys.executable, "sst_edge": __version__, "weights": str(run), "problems": problems}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    print(json.dumps(probe(json.loads(args[0]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
