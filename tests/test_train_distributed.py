"""`sst-edge train` under torchrun: 2 CPU processes on gloo, one subnet per step, episodes per rank."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from sst_edge.space.config import load_space
from sst_edge.space.supernet import build_supernet
from sst_edge.train.loop import episode_indices, subnet_for_step

HERE = Path(__file__).parent
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def test_ranks_share_subnets_and_split_episodes() -> None:
    config = load_space("sst_tiny")
    restriction = {label: list(values) for label, values in config.choices().items()}
    assert subnet_for_step(config, 0, 7, restriction) == subnet_for_step(config, 0, 7, restriction)
    assert subnet_for_step(config, 0, 7, restriction) != subnet_for_step(config, 0, 8, restriction)
    restriction["s1_l1_heads"] = [12]
    assert all(subnet_for_step(config, 0, s, restriction)["s1_l1_heads"] == 12 for s in range(20))
    # 2 ranks x 6 episodes per epoch, one per step: step i takes 2i on rank 0 and 2i + 1 on rank 1
    assert episode_indices(1, 0, 2, 6) == [0, 2, 4, 6, 8, 10]
    assert episode_indices(1, 1, 2, 6) == [1, 3, 5, 7, 9, 11]
    assert episode_indices(2, 1, 2, 6) == [13, 15, 17, 19, 21, 23]
    # one process with 2 episodes per step takes, step by step, what the two ranks take together
    assert episode_indices(2, 0, 1, 12, 2) == [12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]
    # 2 ranks x 2 per step: rank 1 takes episodes 2, 3 of each group of 4
    assert episode_indices(1, 1, 2, 4, 2) == [2, 3, 6, 7]


def test_torchrun_two_processes_on_gloo(synth_dataset: Path, tmp_path: Path) -> None:
    """2 ranks x 1 episode per step, then the same run as one process taking 2 episodes per step: the
    weights come out bit-identical (every step averages the gradients of the same two episodes through
    the same subnet; halving a loss is exact in floating point, and a sum of two is commutative). What
    differs, by design, is BatchNorm's running statistics, which only evaluation uses: DDP keeps rank
    0's (broadcast before each forward), one process updates them with both episodes of a step."""
    out, single = tmp_path / "ddp", tmp_path / "single"
    torchrun = Path(sys.executable).parent / "torchrun"
    common = ["train", "--space", "sst_tiny", "--data", str(synth_dataset),
              "--way", "3", "--query", "1", "--epochs", "2", "--val-episodes", "4",
              "--warmup", "0", "--shrink-period", "1", "--drop-percent", "10", "--confidence", "0.9",
              "--min-count", "1", "--workers", "0", "--threads", "1", "--log-every", "2", "--no-progress",
              "--device", "cpu", "--precision", "fp32"]
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(HERE / "ddp_train.py"), *common,
           "--out", str(out), "--episodes", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("unsampled parameters without gradient") == 2
    assert proc.stdout.count("trained 2 epochs (8 steps)") == 1  # rank 0 reports, rank 1 does not
    record = json.loads((out / "run.json").read_text())
    assert record["world_size"] == 2 and record["status"] == "finished"
    assert record["result"]["in_sync"] is True  # every rank ends with the same weights
    assert record["result"]["steps"] == 8 and len(record["result"]["val_acc"]) == 2
    history = json.loads((out / "restriction.json").read_text())["history"]
    assert len(history) == 2 and len(history[0]["candidates"]) == 45  # 4 steps: too few to drop
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if r["kind"] == "step"] == [2, 4, 6, 8]  # written once, by rank 0

    one = subprocess.run([sys.executable, "-m", "sst_edge.cli", *common, "--out", str(single),
                          "--episodes", "8", "--episodes-per-step", "2"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = (load_file(str(d / "supernet.safetensors")) for d in (out, single))
    differ = sorted(k for k in a if not torch.equal(a[k], b[k]))
    assert differ and all(k.startswith("embed.convs.") and k.rsplit(".", 1)[1] in BN_BUFFERS for k in differ)
    assert torch.equal(a["embed.convs.1.num_batches_tracked"] * 2, b["embed.convs.1.num_batches_tracked"])
    params = dict(build_supernet(load_space("sst_tiny")).named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in params)  # every weight, bit for bit
    losses = [[r["loss"] for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
               if r["kind"] == "step"] for d in (out, single)]
    assert losses[0] == losses[1]  # the same losses, so the same shrink decisions
    history = [json.loads((d / "restriction.json").read_text())["history"] for d in (out, single)]
    assert [h["candidates"] for h in history[0]] == [h["candidates"] for h in history[1]]


TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def node(rank: int, port: int, out: Path | str, args: list[str], *extra: str,
         cwd: Path | None = None) -> subprocess.Popen:
    """One torchrun agent as node `rank` of 2 on 127.0.0.1 (rendezvous c10d), in its own process group;
    a relative `out` under its own `cwd` stands for a node's own disk."""
    cmd = [TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank), "--rdzv_backend",
           "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "sst-two-nodes",
           str(HERE / "ddp_train.py"), *args, "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc): torchrun starts its workers in sessions of their own, so
    killing the agent's process group leaves them running."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        me = todo.pop()
        kids = [c for c, p in parent.items() if p == me]
        found += kids
        todo += kids
    return found


def kill_node(p: subprocess.Popen) -> None:
    """The node is gone, as a machine that lost power: its agent and every worker, at once."""
    for pid in [p.pid, *descendants(p.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    p.wait()


def finish(nodes: list[subprocess.Popen], timeout: float = 300) -> list[str]:
    try:
        return [p.communicate(timeout=timeout)[0] for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                kill_node(p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_nodes_train_as_one_node_with_the_same_world_size(synth_dataset: Path,
                                                                       tmp_path: Path) -> None:
    """`--nnodes 2 --nproc_per_node 1` (two torchrun agents on 127.0.0.1 as two nodes, rendezvous c10d,
    gloo) against `--nnodes 1 --nproc_per_node 2`: the same world size, so the same weights bit for bit,
    BatchNorm's running statistics included (DDP broadcasts rank 0's in both), over 3 epochs with their
    checkpoints."""
    args = ["train", "--space", "sst_tiny", "--data", str(synth_dataset), "--way", "3", "--query", "1",
            "--epochs", "3", "--val-episodes", "2", "--episodes", "4", "--warmup", "0", "--workers", "0",
            "--threads", "1", "--no-progress", "--device", "cpu", "--precision", "fp32"]
    port = free_port()
    nodes = [node(r, port, tmp_path / "two-nodes", args) for r in (0, 1)]
    two = finish(nodes)
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(log[-2000:] for log in two)
    assert "trained 3 epochs" in two[0] and (tmp_path / "two-nodes" / "checkpoint-e0003.json").exists()
    one = subprocess.run([TORCHRUN, "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
                          str(HERE / "ddp_train.py"), *args, "--out", str(tmp_path / "one-node")],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]
    status = json.loads((tmp_path / "two-nodes" / "run.json").read_text())["status"]
    assert status == "finished", two[0][-2000:]
    runs = [json.loads((tmp_path / d / "run.json").read_text()) for d in ("two-nodes", "one-node")]
    assert [r["world_size"] for r in runs] == [2, 2] and all(r["result"]["in_sync"] for r in runs)
    a, b = (load_file(str(tmp_path / d / "supernet.safetensors")) for d in ("two-nodes", "one-node"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_node_restarted_on_its_own_disk_resumes_with_the_others(synth_dataset: Path,
                                                                  tmp_path: Path) -> None:
    """Two nodes, each with its own disk (`--out run` under its own folder): node 1 is killed after the
    first checkpoint, which takes node 0 down too (its collective fails); both are started again with
    `--resume`. Node 1 holds no copy of the run, so it resumes from the checkpoint rank 0 sends it, and the
    run ends with the weights, bit for bit, of the same run never interrupted (`--nnodes 1
    --nproc_per_node 2`)."""
    args = ["train", "--space", "sst_tiny", "--data", str(synth_dataset), "--way", "3", "--query", "1",
            "--epochs", "4", "--val-episodes", "2", "--episodes", "4", "--warmup", "0", "--workers", "0",
            "--threads", "1", "--no-progress", "--device", "cpu", "--precision", "fp32"]
    disks = [tmp_path / "node0", tmp_path / "node1"]
    for disk in disks:
        disk.mkdir()
    run0 = disks[0] / "run"
    port = free_port()
    nodes = [node(r, port, "run", args, cwd=disks[r]) for r in (0, 1)]
    deadline = time.monotonic() + 240
    while not (run0 / "checkpoint-e0001.json").exists():
        assert time.monotonic() < deadline and all(p.poll() is None for p in nodes), finish(nodes, 5)
        time.sleep(0.02)
    kill_node(nodes[1])
    crashed = finish(nodes, 120)
    assert nodes[0].returncode != 0, crashed[0][-2000:]  # node 0 cannot go on alone, and says what to do
    newest = max(int(p.stem[-4:]) for p in run0.glob("checkpoint-e*.json"))
    assert "rank 0 lost another rank mid-run" in crashed[0], crashed[0][-2000:]
    assert f"checkpoint, epoch {newest}, is in --out on rank 0's node" in crashed[0], crashed[0][-2000:]
    assert json.loads((run0 / "run.json").read_text())["status"] != "finished"
    assert not (run0 / "checkpoint-e0004.json").exists()
    assert not list(disks[1].rglob("checkpoint-*")), "node 1 has its own copy: the test proves nothing"

    other = [a if a != "4" or args[i - 1] != "--episodes" else "6" for i, a in enumerate(args)]
    port = free_port()
    nodes = [node(r, port, "run", other, "--resume", cwd=disks[r]) for r in (0, 1)]
    refused = finish(nodes, 120)  # every rank stops, with rank 0's reason, instead of waiting for it
    assert [p.returncode != 0 for p in nodes] == [True, True]
    assert all("cannot resume: the run was started differently" in log
               and "episodes: 4 in the checkpoint, 6 now" in log for log in refused), "\n".join(refused)

    port = free_port()
    nodes = [node(r, port, "run", args, "--resume", cwd=disks[r]) for r in (0, 1)]
    again = finish(nodes)
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(log[-2000:] for log in again)
    assert "resuming run after epoch" in again[0], again[0][-2000:]
    record = json.loads((run0 / "run.json").read_text())
    assert record["status"] == "finished" and len(record["resumed"]) == 1 and record["result"]["in_sync"]

    one = subprocess.run([TORCHRUN, "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
                          str(HERE / "ddp_train.py"), *args, "--out", str(tmp_path / "one-node")],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]
    a, b = (load_file(str(d / "supernet.safetensors")) for d in (run0, tmp_path / "one-node"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
