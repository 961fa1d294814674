"""At export: every graph a model ships against PyTorch fp32, by feature cosine on real clips, and the
OpenVINO precision hint chosen on evidence.

The fp32 graph is held to a max abs diff (export.PARITY_TOL); graphs that compute in lower precision
(int8, OpenVINO's bf16) cannot be, and instead must keep every frame's feature direction: the lowest
per-frame cosine against PyTorch fp32 on clips of the run's data (random clips only when export has no
data, which the card says) must reach a gate. The card records each check (`checks`).

`precision_hint: auto` is decided here, on the exporting CPU: fp32 and bf16 sessions of the shipped file
are timed interleaved (shuffled order every round, the thread clock, one inference thread), and bf16 is
kept only when the 95% interval of its speed-up (geometric mean of per-round ratios, t over rounds)
lies above 1 and its features pass the gate. Without native bf16 there is nothing to measure: fp32.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ..cost.onnx_export import agreement
from ..device import openvino as ov_backend
from ..device.fingerprint import cpu_model
from ..device.session import INPUT_NAME, make_session, ort_features
from ..device.targets import Target
from ..errors import SSTEdgeError

# lowest per-frame feature cosine vs PyTorch fp32, per graph kind: bf16 rounding gives > 0.9999 on these
# models (bench/export.py), int8 recipes ~0.999, an overflow or a broken recipe far less
MIN_COSINE = {"openvino bf16": 0.999, "openvino fp32": 0.9999, "int8": 0.99}
HINT_ROUNDS = 5
HINT_RUNS = 3  # per round and session (the median is kept)


def ratio_interval(num: np.ndarray, den: np.ndarray) -> tuple[float, float, float]:
    """Geometric mean of the per-round ratios num/den with its 95% interval (t over rounds)."""
    logs = np.log(np.asarray(num, np.float64) / np.asarray(den, np.float64))
    if len(logs) < 2:
        return float(np.exp(logs.mean())), 0.0, math.inf
    half = float(stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs)))
    m = float(logs.mean())
    return math.exp(m), math.exp(m - half), math.exp(m + half)


def interleaved_seconds(runs: dict[str, Callable[[], object]], rounds: int, per_round: int = HINT_RUNS,
                        on_round: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Per-round median thread-CPU seconds of each run; a fresh shuffled order every round (`on_round`
    is told each round done, from 1)."""
    for run in runs.values():
        run()  # warm-up
    out: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds):
        order = list(runs)
        random.Random(r).shuffle(order)
        for key in order:
            samples = []
            for _ in range(per_round):
                t = time.thread_time()
                runs[key]()
                samples.append(time.thread_time() - t)
            out[key].append(float(np.median(samples)))
        if on_round is not None:
            on_round(r + 1)
    return {k: np.asarray(v) for k, v in out.items()}


def cosine_check(graph: str, ref: np.ndarray, got: np.ndarray, clip_source: str, where: str,
                 path: Path, strict: bool = True) -> dict[str, Any]:
    """The card's record of one shipped graph against PyTorch; when it misses its gate, an SSTEdgeError
    (`strict`) or `passed: false`."""
    gate = MIN_COSINE[graph]
    a = agreement(ref, got)
    rec = {"graph": graph, "checked": True, "runtime": where, "clips": a["clips"], "clip_source": clip_source,
           "min_cosine": round(a["min_cosine"], 6), "mean_cosine": round(a["mean_cosine"], 6),
           "max_abs_diff": a["max_abs_diff"], "gate_min_cosine": gate}
    rec["passed"] = bool(np.isfinite(got).all() and a["min_cosine"] >= gate)
    if strict and not rec["passed"]:
        raise SSTEdgeError(f"the {graph} graph this model ships disagrees with PyTorch fp32: lowest frame "
                           f"cosine {a['min_cosine']:.5f} < {gate} on {a['clips']} {clip_source} clips "
                           f"({where})", path)
    return rec


def check_line(c: dict[str, Any]) -> str:
    """One check in words, as export prints it and `card_summary` shows it."""
    return (f"{c['graph']} vs PyTorch fp32: lowest frame cosine {c['min_cosine']:.5f} "
            f"(gate {c['gate_min_cosine']}) on {c['clips']} {c['clip_source']} clips")


def choose_hint(model: Path, target: Target, ref: np.ndarray, clips: np.ndarray, clip_source: str,
                rounds: int = HINT_ROUNDS) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The card's `openvino` section and the check of the hint it ships (and of bf16 when it was tried)."""
    asked = target.precision_hint or "auto"
    if asked == "bf16" and not ov_backend.native_bf16():
        raise SSTEdgeError("the target asks for OpenVINO bf16, which this CPU does not run natively (no AMX "
                           "or AVX512-BF16): export with precision_hint auto or fp32", target.source or None)
    hints = [h for h in ("fp32", "bf16")
             if asked in ("auto", h) and (h == "fp32" or ov_backend.native_bf16())]
    sessions = {h: make_session(model, target, hint=h) for h in hints}
    # under auto a bf16 that misses its gate is not an error: fp32 is shipped instead
    checks = {h: cosine_check(f"openvino {h}", ref, ort_features(s, clips), clip_source,
                              f"OpenVINO {ov_backend.version()} CPU, {h}", model,
                              strict=not (asked == "auto" and h == "bf16")) for h, s in sessions.items()}
    if asked != "auto":
        return ov_backend.record(asked, asked, "fixed by the target"), [checks[asked]]
    if "bf16" not in sessions:
        return (ov_backend.record("fp32", asked, f"this CPU ({cpu_model()}) has no native bf16"),
                [checks["fp32"]])
    x = clips[:1]
    feeds = {INPUT_NAME: x}
    secs = interleaved_seconds({h: (lambda s=s: s.run(None, feeds)) for h, s in sessions.items()}, rounds)
    speedup, lo, hi = ratio_interval(secs["fp32"], secs["bf16"])
    faster, faithful = lo > 1.0, checks["bf16"]["passed"]
    hint = "bf16" if faster and faithful else "fp32"
    why = (f"bf16 {speedup:.2f}x fp32 [95% CI {lo:.2f}, {hi:.2f}] over {rounds} interleaved rounds on "
           f"{cpu_model()}, " + ("faster beyond the noise" if faster else "not faster beyond the noise")
           + f"; its lowest frame cosine vs PyTorch {checks['bf16']['min_cosine']:.5f} "
           + ("passes" if faithful else "misses") + f" the gate {MIN_COSINE['openvino bf16']}")
    evidence = {"fp32_ms": round(float(np.median(secs["fp32"])) * 1e3, 3),
                "bf16_ms": round(float(np.median(secs["bf16"])) * 1e3, 3),
                "speedup": round(speedup, 4), "ci95": [round(lo, 4), round(hi, 4)], "rounds": rounds,
                "clock": "thread", "cpu": cpu_model()}
    return ov_backend.record(hint, asked, why, evidence), [checks[hint]]


def with_hint(target: Target, hint: str) -> Target:
    """`target` fixed to the precision hint export chose: what the shipped model's sessions run."""
    return replace(target, precision_hint=hint)
