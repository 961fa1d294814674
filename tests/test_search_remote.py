"""The search on NNI's remote training service, through a real sshd on loopback (Debian's openssh-server).

One sshd on a free 127.0.0.1 port, with a throwaway key, stands for the machines: the machines file lists it
twice (two machines, one port), or once beside a second sshd that is killed mid-search. The trials log in
over SSH, run in the code folder NNI copied, and their records come back in NNI's final metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from live_servers import Sshd

from sst_edge.errors import SSTEdgeError
from sst_edge.search.machines import load_machines
from sst_edge.space.subnet import load_subnet

VENV_BIN = str(Path(sys.executable).parent)
SEARCH = ["--space", "sst_tiny", "--budget-gflops", "1", "--population", "2", "--sample-size", "2",
          "--episodes", "3", "--no-baseline", "--rescore-top", "1", "--rescore-episodes", "2",
          "--training-service", "remote"]


@pytest.fixture
def sshd(tmp_path: Path):
    with Sshd(workdir=tmp_path / "sshd") as server:  # make system-packages installs openssh-server
        yield server


def machines_file(path: Path, servers: list[Sshd], **extra) -> Path:
    lines = ["machines:"]
    for s in servers:
        lines += ["  - host: 127.0.0.1", f"    port: {s.port}", f"    user: {s.user}",
                  f"    key_file: {s.key}",
                  f"    python_path: {VENV_BIN}"]
        lines += [f"    {k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def processes_under(folder: str) -> list[int]:
    """Pids whose command line, working directory or environment points into `folder`."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            seen = [(d / "cmdline").read_bytes(), (d / "environ").read_bytes(),
                    os.readlink(d / "cwd").encode()]
        except OSError:
            continue
        if any(folder.encode() in x for x in seen):
            found.append(int(d.name))
    return found


def experiment_id(out: Path) -> str:
    (exp,) = [d.name for d in (out / "nni").iterdir() if d.is_dir() and d.name != "_latest"]
    return exp


def running_on_b(out: Path, deadline: float) -> None:
    """Wait until machine b (NNI's remote-worker2) runs a trial that has not reported yet."""
    while time.monotonic() < deadline:
        nni = out / "nni"
        if nni.is_dir() and any(d.is_dir() and d.name != "_latest" for d in nni.iterdir()):
            exp = experiment_id(out)
            trials = Path.home() / "nni-experiments" / exp / "environments" / "remote-worker2" / "trials"
            if trials.is_dir():
                done = {json.loads(f.read_text())["nni_trial"] for f in (out / "trials").glob("*.json")}
                if any(processes_under(f"/{exp}/environments/remote-worker2/trials/{d.name}")
                       for d in trials.iterdir() if d.name not in done):
                    return
        time.sleep(0.1)
    raise AssertionError("machine b ran no trial within the time given")


def kill_machine(server: Sshd, out: Path, worker: str) -> list[int]:
    """Machine `worker` is gone as a crashed host is: its sshd, its sessions, and what NNI runs there (its
    trial keeper, detached from the SSH session, talks to the manager over a websocket of its own)."""
    server.kill()
    pids = processes_under(f"/{experiment_id(out)}/environments/{worker}/")
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def nni_processes() -> list[int]:
    """Pids of NNI managers and trial keepers left on this machine."""
    left = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "nni_node" in cmd or "nni.tools.trial_tool" in cmd or "trial_runner" in cmd:
                left.append(int(d.name))
    return left


def search(out: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The verb in a child process: bounded in time, and its NNI processes are its own."""
    cmd = [sys.executable, "-m", "sst_edge.cli", "search", *SEARCH, "--out", str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_a_remote_search_runs_its_trials_through_sshd(sshd: Sshd, trained_run: Path, synth_dataset: Path,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    machines = machines_file(tmp_path / "machines.yaml", [sshd, sshd])
    out = tmp_path / "search"
    before = sshd.logins()
    done = search(out, "--weights", str(trained_run), "--data", str(synth_dataset), "--trials", "4",
                  "--machines", str(machines))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    best = load_subnet(out / "best.json")[0]
    assert best.metrics["accuracy"] >= 0
    summary = json.loads((out / "search.json").read_text())
    service = summary["training_service"]
    assert service["platform"] == "remote" and service["lost_trials"] == []
    assert len(service["machines"]) == 1  # one name: the same sshd twice
    records = sorted((out / "trials").glob("evolution-*.json"))
    assert len(records) == 4
    for f in records:
        rec = json.loads(f.read_text())
        assert rec["nni_trial"] and f.name == f"evolution-{rec['nni_trial']}.json"
    # the trials ran through sshd: its key logins (the check, then one per NNI worker), and the trial
    # folders NNI made on "each machine" (one home folder here), named by trial id
    assert sshd.logins() >= before + 3
    exp = experiment_id(out)
    remote = Path.home() / "nni-experiments" / exp / "environments"
    try:
        ran = {w: {d.name for d in (remote / w / "trials").iterdir()}
               for w in ("remote-worker1", "remote-worker2")}
        ids = {json.loads(f.read_text())["nni_trial"] for f in records}
        assert ran["remote-worker1"] | ran["remote-worker2"] == ids and all(ran.values())
        assert sum(service["trials_by_host"].values()) == 4
        assert "trials ran on" in done.stdout
    finally:
        shutil.rmtree(Path.home() / "nni-experiments" / exp, ignore_errors=True)
    assert nni_processes() == [] and sshd.sessions() == []


def test_a_missing_supernet_on_a_machine_is_named_before_anything_starts(
        sshd: Sshd, trained_run: Path, synth_dataset: Path, tmp_path: Path) -> None:
    machines = machines_file(tmp_path / "machines.yaml", [sshd], weights=str(tmp_path / "not-copied"))
    out = tmp_path / "search"
    done = search(out, "--weights", str(trained_run), "--data", str(synth_dataset), "--trials", "2",
                  "--machines", str(machines), timeout=120)
    assert done.returncode == 2
    assert str(machines) in done.stderr and f"{sshd.user}@127.0.0.1:{sshd.port}" in done.stderr
    assert f"{tmp_path / 'not-copied'}: no such folder" in done.stderr
    assert not (out / "val_episodes.safetensors").exists()  # nothing decoded, no experiment started
    assert not (out / "nni").exists() or not any(d.is_dir() and d.name != "_latest"
                                                 for d in (out / "nni").iterdir())
    bad = tmp_path / "bad.yaml"
    bad.write_text("machines:\n  - host: 127.0.0.1\n    port: 99999\n    user: u\n")
    with pytest.raises(SSTEdgeError) as e:
        load_machines(bad)
    assert e.value.path == bad and "machines[0]: missing key_file, python_path" in e.value.problems


def test_a_machine_lost_mid_search_ends_with_a_result_that_names_the_lost_trials(
        trained_run: Path, synth_dataset: Path, tmp_path: Path) -> None:
    a, b = Sshd(workdir=tmp_path / "a"), Sshd(workdir=tmp_path / "b")
    with a, b:
        machines = machines_file(tmp_path / "machines.yaml", [a, b])
        out = tmp_path / "search"
        cmd = [sys.executable, "-m", "sst_edge.cli", "search", *SEARCH, "--out", str(out), "--weights",
               str(trained_run), "--data", str(synth_dataset), "--trials", "8", "--machines", str(machines)]
        with open(tmp_path / "search.log", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                running_on_b(out, deadline=time.monotonic() + 300)  # b is in the middle of a trial
                killed = kill_machine(b, out, "remote-worker2")
                code = proc.wait(timeout=600)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        text = (tmp_path / "search.log").read_text()
        assert code == 0, text[-4000:]
        service = json.loads((out / "search.json").read_text())["training_service"]
        assert killed, "nothing of machine b was running"
        assert service["lost_trials"], service  # the trial b was running when it went
        for lost in service["lost_trials"]:
            assert lost["machine"] == f"{b.user}@127.0.0.1:{b.port}" and "remote-worker2" in lost["log"]
            assert f"lost trial     {lost['nni_trial']} on {lost['machine']}" in text
        finished = sorted((out / "trials").glob("evolution-*.json"))
        assert len(finished) + len(service["lost_trials"]) == 8  # the rest ran (after the kill, all on a)
        assert service["trials_by_host"][f"{a.user}@127.0.0.1:{a.port}"] >= len(finished) - 1
        assert service["note"].startswith(f"{len(service['lost_trials'])} trials failed")
        shutil.rmtree(Path.home() / "nni-experiments" / experiment_id(out), ignore_errors=True)
        assert load_subnet(out / "best.json")[0].metrics["accuracy"] >= 0
    assert nni_processes() == []
