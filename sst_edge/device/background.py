"""How busy the rest of the machine was while we timed: CPU time of other processes, in cores.

On this 2-vCPU machine another process on the other vCPU slows our single thread by up to 1.5-2x even on
the thread clock (shared caches, memory bandwidth, and possibly the same physical core), and the load
comes and goes (training jobs, NNI trials). The profiler measures this background load around every round
it times, redoes a disturbed round once the machine is quiet again (within limits), and records how much
background there was, so a table says whether its numbers can be trusted.

Linux only (/proc/stat); elsewhere the load reads as unknown (None) and nothing is redone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

try:
    _TICK = float(os.sysconf("SC_CLK_TCK"))
except (AttributeError, ValueError, OSError):
    _TICK = 100.0


def _busy_s() -> float | None:
    """CPU-seconds all CPUs have been busy since boot (user, nice, system, irq, softirq, steal)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:9]]
    return (sum(v) - v[3] - v[4]) / _TICK  # minus idle and iowait


class LoadMeter:
    """Background load since construction, in cores: (busy CPU time - this process's) / elapsed."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.busy0 = _busy_s()
        self.own0 = time.process_time()

    def cores(self) -> float | None:
        busy = _busy_s()
        elapsed = time.perf_counter() - self.t0
        if busy is None or self.busy0 is None or elapsed <= 0:
            return None
        others = (busy - self.busy0) - (time.process_time() - self.own0)
        return max(0.0, others / elapsed)


def wait_quiet(threshold: float, max_wait_s: float, window_s: float = 0.25) -> bool:
    """Sleep in short windows until one shows background load <= threshold; False on timeout."""
    deadline = time.perf_counter() + max_wait_s
    while True:
        meter = LoadMeter()
        time.sleep(window_s)
        load = meter.cores()
        if load is None or load <= threshold:
            return True
        if time.perf_counter() >= deadline:
            return False


@dataclass
class BackgroundLog:
    """Per-pool summary stored in a table: how loaded the machine was and how many rounds were redone."""

    threshold_cores: float
    loads: list[float] = field(default_factory=list)
    redone: int = 0
    disturbed: int = 0  # rounds kept although loaded (retries exhausted)

    def to_dict(self) -> dict[str, Any]:
        n = len(self.loads)
        return {
            "threshold_cores": self.threshold_cores,
            "rounds": n,
            "redone": self.redone,
            "disturbed": self.disturbed,
            "mean_cores": round(sum(self.loads) / n, 3) if n else None,
            "max_cores": round(max(self.loads), 3) if n else None,
        }
