"""Timing many things on a machine that may be shared: warm-up, interleaved rounds, one session at a time.

A machine shared with other processes slows down for stretches. So every item is timed in several rounds,
in a fresh shuffled order each round, and its samples from all rounds are pooled: a slow stretch lands on
many items a little instead of on one item a lot. Only one runtime session exists at a time (live
sessions with spinning threads compete for the cores). An item whose median is not yet stable (95%
confidence interval of the median wider than `rel_ci`) gets extra rounds.

Clocks: `wall` is what a user waits; `thread` is the CPU time of the calling thread. With one intra-op
thread, ONNX Runtime and PyTorch compute on the calling thread, so `thread` time is the wall time the same
work takes on a core of its own, and it does not count the time other processes held the core. So
single-thread CPU targets are timed on the `thread` clock; GPU and multi-thread targets need `wall`. No
clock removes what a busy neighbour does to caches and memory bandwidth, so `background.py` measures the
load around every round and redoes disturbed rounds when the machine is quiet again. (What these choices
were measured to do on our machines: docs/measurements.md and docs/profile.md.)
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..schema import NONNEG_NUMBER, POS_INT, POS_NUMBER
from .background import BackgroundLog, LoadMeter, wait_quiet

TIMING_SCHEMA = {"type": "object", "required": ["median_ms", "p10_ms", "p90_ms", "count"],
                 "properties": {"median_ms": POS_NUMBER, "p10_ms": NONNEG_NUMBER, "p90_ms": NONNEG_NUMBER,
                                "count": POS_INT}}
Run = Callable[[], object]
Opener = Callable[[], contextlib.AbstractContextManager[Run]]
CLOCKS = {"wall": time.perf_counter_ns, "thread": time.thread_time_ns}


@dataclass(frozen=True)
class Timing:
    """Per-call latency of one item, pooled over rounds (milliseconds, rounded to 0.1 us)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    count: int

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> Timing:
        a = np.asarray(samples_ms, dtype=np.float64)
        p10, med, p90 = np.percentile(a, [10, 50, 90])
        return cls(round(float(med), 4), round(float(p10), 4), round(float(p90), 4), int(a.size))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timing:
        return cls(float(d["median_ms"]), float(d["p10_ms"]), float(d["p90_ms"]), int(d["count"]))


@dataclass(frozen=True)
class TimingPolicy:
    """How long to time each item: `rounds` interleaved rounds of `min_runs`..`max_runs` runs after a
    warm-up, pooled; up to `max_rounds` for an item whose median's 95% interval is wider than `rel_ci`.
    The defaults give ~80 runs per item, what a median needs to be good to ~1% when single runs spread
    by 10-20% (p10 to p90)."""

    warmup_runs: int = 3  # per round, after the session is created (first runs allocate, TensorRT builds)
    warmup_s: float = 0.1  # ...and at least this long
    rounds: int = 8
    max_rounds: int = 10  # extra rounds for items whose median is not yet stable
    min_runs: int = 10  # per round
    max_runs: int = 200  # per round
    min_time_s: float = 0.3  # per round, once min_runs are done
    rel_ci: float = 0.01  # target half-width of the median's 95% confidence interval, relative
    clock: str = "auto"  # "wall" or "thread" (see the module docstring); profile.py resolves "auto"
    max_background: float = 0.25  # cores busy elsewhere above which a round counts as disturbed
    retries: int = 2  # times a disturbed round is redone, each once a quiet moment has been seen
    quiet_wait_s: float = 5.0  # longest wait for a quiet moment before a redo
    wait_budget_s: float = 300.0  # total waiting per pool (and none after 3 waits in a row saw no quiet)

    @classmethod
    def quick(cls) -> TimingPolicy:
        """For tests and smoke runs: a handful of runs, numbers not worth keeping."""
        return cls(warmup_runs=1, warmup_s=0.0, rounds=1, max_rounds=1, min_runs=3, max_runs=5,
                   min_time_s=0.0, rel_ci=1.0, retries=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_ci_halfwidth(samples: list[float]) -> float:
    """Half-width of a distribution-free 95% confidence interval of the median, relative to the median."""
    n = len(samples)
    if n < 6:
        return math.inf
    x = sorted(samples)
    half = 1.96 * math.sqrt(n) / 2
    lo, hi = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    med = x[n // 2] if n % 2 else (x[n // 2 - 1] + x[n // 2]) / 2
    return (x[hi] - x[lo]) / 2 / med if med > 0 else math.inf


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def time_round(opener: Opener, policy: TimingPolicy) -> list[float]:
    """Open one session, warm it up, and time calls until the round's run and time quota are met."""
    out: list[float] = []
    clock = CLOCKS[policy.clock]
    with opener() as run, _gc_paused():
        t_end = time.perf_counter() + policy.warmup_s
        k = 0
        while k < policy.warmup_runs or (time.perf_counter() < t_end and k < 10 * policy.warmup_runs + 10):
            run()
            k += 1
        start = time.perf_counter()
        while len(out) < policy.max_runs:
            t0 = clock()
            run()
            out.append((clock() - t0) / 1e6)
            if len(out) >= policy.min_runs and time.perf_counter() - start >= policy.min_time_s:
                break
    return out


def time_items(openers: dict[str, Opener], policy: TimingPolicy, seed: int = 0,
               progress: Callable[[str], None] | None = None,
               extra_round: Callable[[int], None] | None = None,
               ) -> tuple[dict[str, Timing], BackgroundLog]:
    """Time every item in interleaved rounds (shuffled order per round); returns pooled timings and the
    background-load log.

    A round during which other processes used more than `policy.max_background` cores is thrown away
    and redone once a quiet moment is seen, at most `policy.retries` times; if none comes (or the pool's
    waiting budget is spent) it is kept and counted as disturbed.
    `progress(key)` is called after each (round, item); `extra_round(n)` before each round beyond
    `policy.rounds`, with the number of items it will time (to grow a progress bar).
    """
    if policy.clock not in CLOCKS:
        raise ValueError(f"unknown clock {policy.clock!r} (known: {', '.join(CLOCKS)})")
    rng = random.Random(seed)
    log = BackgroundLog(policy.max_background)
    budget = policy.wait_budget_s
    timeouts = 0  # consecutive waits that saw no quiet moment: after 3, the load is sustained
    samples: dict[str, list[float]] = {k: [] for k in openers}
    pending = list(openers)
    for r in range(policy.max_rounds):
        if r >= policy.rounds:
            pending = [k for k in pending if median_ci_halfwidth(samples[k]) > policy.rel_ci]
            if not pending:
                break
            if extra_round is not None:
                extra_round(len(pending))
        order = list(pending)
        rng.shuffle(order)
        for key in order:
            for attempt in range(policy.retries + 1):
                meter = LoadMeter()
                got = time_round(openers[key], policy)
                load = meter.cores()
                if load is None or load <= policy.max_background:
                    timeouts = 0  # the machine has quiet moments again: worth waiting for them
                    break
                quiet = False
                if attempt < policy.retries and budget > 0 and timeouts < 3:
                    t0 = time.perf_counter()
                    quiet = wait_quiet(policy.max_background, min(policy.quiet_wait_s, budget))
                    budget -= time.perf_counter() - t0
                    timeouts = 0 if quiet else timeouts + 1
                if not quiet:
                    log.disturbed += 1
                    break
                log.redone += 1
            if load is not None:
                log.loads.append(load)
            samples[key] += got
            if progress is not None:
                progress(key)
    return {k: Timing.from_samples(v) for k, v in samples.items()}, log
