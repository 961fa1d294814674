"""The host's side of a remote search: the trial code folder, NNI's remote config, and the results.

A remote trial's record comes back inside its NNI final metric (trials.RECORD_KEY); `RemoteResults` reads
the experiment's trial jobs from NNI's REST API while it runs and writes each record into the search
folder's trials/, as a local trial would have. A trial that failed (its machine gone, a crash there) is
kept with its NNI log path and the machine that path names, for search.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._nni import nni_rest
from ..cost.latency import read_table
from ..fileio import atomic_write_json
from .machines import Machines
from .trials import CONTEXT_FILE, EPISODES_FILE, RECORD_KEY, TRIALS_DIR

CODE_DIR = "remote-code"  # inside the search folder: what NNI copies to every machine
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
FAILED_STATES = {"FAILED", "SYS_CANCELED", "EARLY_STOPPED", "USER_CANCELED"}


def stage_code(out: Path, ctx: dict[str, Any], ms: Machines, weights: str | Path, sha: str) -> Path:
    """Write the trial code folder: the context (with every machine's supernet path and the supernet's
    sha256), the cached episodes, the latency table and a custom space YAML, each under a plain name."""
    code = out / CODE_DIR
    code.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / EPISODES_FILE, code / EPISODES_FILE)
    remote = dict(ctx, remote=True)
    files = {"space": ctx.get("space"), "table": read_table(ctx["table"]).path if ctx.get("table") else None}
    for key, name in (("space", "space.yaml"), ("table", "latency_table.json")):
        if files[key] and Path(files[key]).is_file():
            shutil.copyfile(files[key], code / name)
            remote[key] = name
    host = str(Path(weights).resolve())
    remote["weights_candidates"] = list(dict.fromkeys([m.weights or host for m in ms.machines]))
    remote["supernet_sha256"] = sha
    atomic_write_json(code / CONTEXT_FILE, remote)
    (code / ".nniignore").write_text("trials/\n")
    return code


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """NNI's NAS experiment uploads the current directory as the trial code (it refuses any other)."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def remote_service(exp_config: Any, ms: Machines, device: str) -> None:
    """Point NNI's experiment config at the machines (RemoteConfig's machine list)."""
    from .._nni import RemoteMachineConfig

    service = exp_config.training_service
    machines = []
    for m in ms.machines:
        rm = RemoteMachineConfig()
        rm.host, rm.port, rm.user, rm.ssh_key_file, rm.python_path = m.host, m.port, m.user, m.key_file, \
            m.python_path
        if m.gpu_indices is not None:
            rm.gpu_indices = m.gpu_indices
            rm.use_active_gpu = True
        machines.append(rm)
    service.machine_list = machines
    if device == "cuda" or any(m.gpu_indices for m in ms.machines):
        exp_config.trial_gpu_number = 1
    if ms.nni_manager_ip:
        exp_config.nni_manager_ip = ms.nni_manager_ip
    elif all(m.host in LOOPBACK for m in ms.machines):
        exp_config.nni_manager_ip = "127.0.0.1"  # NNI would guess this host's outward address


class RemoteResults:
    """Trial records from NNI's final metrics, written into OUT/trials as they arrive; failures kept."""

    def __init__(self, out: Path, kind: str, machines: Machines):
        self.out, self.kind = out, kind
        # NNI names its workers remote-worker1.. in the machines file's order (a restarted one gets a new N)
        self.names = {f"remote-worker{i}": m.name for i, m in enumerate(machines.machines, 1)}
        self.written: set[str] = set()
        self.failed: dict[str, dict[str, Any]] = {}

    def sync(self, port: int, url_prefix: str | None = None) -> None:
        try:
            jobs = nni_rest.get(port, "/trial-jobs", url_prefix)
        except Exception:  # noqa: BLE001 - the manager is starting or gone: the next sync catches up
            return
        for job in jobs:
            tid = job.get("trialJobId")
            if not tid or tid in self.written:
                continue
            record = _record_of(job)
            if record is not None:
                record["nni_trial"] = tid
                worker = record.get("nni_worker")
                record["machine"] = self.names.get(worker, worker)
                atomic_write_json(self.out / TRIALS_DIR / f"{record['kind']}-{tid}.json", record)
                self.written.add(tid)
                self.failed.pop(tid, None)
            elif job.get("status") in FAILED_STATES:
                self.failed[tid] = {"nni_trial": tid, "status": job["status"], "kind": self.kind,
                                    "log": job.get("logPath") or job.get("stderrPath"),
                                    "machine": self.names.get(_worker_of(job) or "", _worker_of(job))}


def _record_of(job: dict[str, Any]) -> dict[str, Any] | None:
    for m in job.get("finalMetricData") or []:
        try:
            data = json.loads(json.loads(m["data"]))
            return json.loads(data[RECORD_KEY])
        except (KeyError, TypeError, ValueError):
            continue
    return None


def _worker_of(job: dict[str, Any]) -> str | None:
    """NNI's worker from a trial's log path (`host:~/nni-experiments/ID/environments/remote-worker2/...`)."""
    path = str(job.get("logPath") or job.get("stderrPath") or "")
    return next((p for p in path.split("/") if p.startswith("remote-worker")), None)
