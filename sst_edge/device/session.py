"""ONNX Runtime for every sst-edge session: the import (with advice when none is installed), the choice of
execution providers, session options, and sessions that refuse a silent fall-back to the CPU.

Profiling, export checks and the runtime all open their sessions here, so a latency table, a parity check
and an enrollment run a model the same way. No torch: this is the device half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SSTEdgeError
from .targets import Target

if TYPE_CHECKING:
    import onnxruntime as ort

INPUT_NAME = "input"
OUTPUT_NAME = "output"
# Fastest first; ORT assigns each node to the first provider in the list that supports it.
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
INSTALL_ADVICE = ("install one ONNX Runtime: `pip install 'sst-edge[cpu]'` (onnxruntime, CPU), "
                  "`pip install 'sst-edge[gpu]'` (onnxruntime-gpu, CUDA and TensorRT), or on a Jetson the "
                  "onnxruntime-gpu wheel that matches your JetPack, before sst-edge")


def onnxruntime() -> ModuleType:
    """The onnxruntime module, telemetry off; an SSTEdgeError saying what to install when it is missing.

    onnxruntime, onnxruntime-gpu and JetPack's build all install the same module, so which one is here
    is the user's choice, not ours."""
    try:
        import onnxruntime as ort_module  # optional extra ([cpu], [gpu] or JetPack's): named if missing
    except ImportError as e:
        raise SSTEdgeError(f"ONNX Runtime is not installed ({e}): {INSTALL_ADVICE}") from None
    disable = getattr(ort_module, "disable_telemetry_events", None)
    if disable is not None:
        disable()
    return ort_module


def available_providers() -> list[str]:
    return list(onnxruntime().get_available_providers())


def choose_providers(available: Sequence[str], wanted: Sequence[str] | None = None) -> list[str]:
    """TensorRT, CUDA, CPU: those available, in that order; `wanted` restricts the set (each must exist)."""
    if wanted is not None:
        unknown = [p for p in wanted if p not in PROVIDER_ORDER]
        missing = [p for p in wanted if p in PROVIDER_ORDER and p not in available]
        if unknown or missing or not wanted:
            problems = [f"unknown provider {p!r} (known: {', '.join(PROVIDER_ORDER)})" for p in unknown]
            have = ", ".join(available)
            problems += [f"{p} is not in this onnxruntime (available: {have})" for p in missing]
            problems += ["no provider given"] if not wanted else []
            raise SSTEdgeError("cannot use the requested execution providers", None, problems)
    chosen = [p for p in PROVIDER_ORDER if p in available and (wanted is None or p in wanted)]
    if not chosen:
        raise SSTEdgeError(f"this onnxruntime has none of {', '.join(PROVIDER_ORDER)} "
                           f"(available: {', '.join(available)})")
    return chosen


def make_session_options(graph_optimization: str = "all", threads: int = 1) -> ort.SessionOptions:
    """SessionOptions as every sst-edge session uses them: sequential execution (one clip, no inter-op),
    the target's intra-op threads and graph optimisation, warnings and above only."""
    rt = onnxruntime()
    levels = {"disable": rt.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": rt.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": rt.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": rt.GraphOptimizationLevel.ORT_ENABLE_ALL}
    so = rt.SessionOptions()
    so.graph_optimization_level = levels.get(graph_optimization, levels["all"])
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = rt.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def session_options(target: Target) -> ort.SessionOptions:
    return make_session_options(target.graph_optimization, target.threads)


def make_session(path: str | Path, target: Target) -> ort.InferenceSession:
    """An InferenceSession with the target's providers (in order), options, threads and optimisation.

    Refuses rather than silently falling back when the target's main provider is missing or fails to load
    (ORT would run everything on the CPU and every timing would be of the wrong device).
    """
    rt = onnxruntime()
    have = available_providers()
    if target.provider not in have:
        raise SSTEdgeError(f"target '{target.name}' runs on {target.provider}, which this onnxruntime "
                           f"({rt.__version__}) does not have (available: {', '.join(have)})",
                           target.source or None)
    chosen = [(p, o) for p, o in target.ort_providers() if p in have]
    try:
        sess = rt.InferenceSession(str(path), session_options(target), providers=[p for p, _ in chosen],
                                   provider_options=[o for _, o in chosen])
    except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        raise SSTEdgeError(f"ONNX Runtime cannot load this model for target '{target.name}': {e}",
                           path) from None
    if sess.get_providers()[0] != target.provider:
        raise SSTEdgeError(f"{target.provider} failed to start (the session fell back to "
                           f"{sess.get_providers()[0]}); check the CUDA/TensorRT libraries", path)
    return sess


def cpu_session(path: Path, target: Target) -> ort.InferenceSession:
    """A CPU session with the target's threads: parity and agreement are checked on the CPU."""
    cpu = replace(target, execution_providers=("CPUExecutionProvider",), provider_options={})
    return make_session(path, cpu)


def ort_features(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """Run in a batch of 2 and then batches of 1, which exercises the dynamic batch axis."""
    parts = [sess.run(None, {INPUT_NAME: x[:2]})[0]]
    parts += [sess.run(None, {INPUT_NAME: x[i:i + 1]})[0] for i in range(2, len(x))]
    return np.concatenate(parts)
