"""The settings of a search, with their defaults (the CLI shows these): torch-free, so `sst-edge search
--help` and scripts that only build settings import nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SSTEdgeError


@dataclass
class SearchSettings:
    trials: int = 40
    population: int = 12
    sample_size: int = 4
    seed: int = 0
    way: int = 5
    shot: int = 1
    query: int = 2
    episodes: int = 40
    split: str = "val"
    split_dir: str | None = None
    concurrency: int = 1
    budget_ms: float | None = None
    budget_gflops: float | None = None
    table: str | None = None
    allow_foreign_table: bool = False
    target: str | None = None           # the target the latency table must describe (None: the one it names)
    head: str | None = None             # None: the kind the run trained through (run.json)
    tau: float | None = None            # None: the run's
    window: int | None | str = "run"    # "run": the run's; None: every support frame
    rescore_top: int = 5                # re-score this many best of the evolution and of the baseline
    rescore_episodes: int = 200         # on this many other validation episodes
    baseline: bool = True
    threads: int | None = None
    port: int = 8745
    device: str = "auto"                # where trials embed (train/device.py); several GPUs: one per trial
    progressive: bool = False           # also search in phases (structure, ops, heads): search/progressive.py
    verbose: bool = False               # NNI's log lines on stdout too (else only OUT/nni/nni.log)
    training_service: str = "local"     # NNI's: local (this machine) or remote (--machines, over SSH)
    machines: str | None = None         # the machines file of a remote search (search/machines.py)


def check_settings(s: SearchSettings) -> None:
    problems = [f"{name} must be >= 1, got {getattr(s, name)}"
                for name in ("trials", "episodes", "rescore_top", "rescore_episodes")
                if getattr(s, name) < 1]
    if s.training_service not in ("local", "remote"):
        problems.append(f"training_service must be local or remote, got {s.training_service!r}")
    elif (s.training_service == "remote") != bool(s.machines):
        problems.append("--training-service remote needs --machines FILE, and --machines needs it")
    if problems:
        raise SSTEdgeError("invalid search settings", problems=problems)
