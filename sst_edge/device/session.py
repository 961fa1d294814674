"""ONNX Runtime for every sst-edge session: the import (with advice when none is installed), the choice of
execution providers, session options, and sessions that refuse a silent fall-back to the CPU.

Profiling, export checks and the runtime all open their sessions here, so a latency table, a parity check
and an enrollment run a model the same way. No torch: this is the device half.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SSTEdgeError
from ..fileio import sha256_file
from . import openvino as ov_backend
from .targets import TRT_PROVIDER, Target

if TYPE_CHECKING:
    import onnxruntime as ort

INPUT_NAME = "input"
OUTPUT_NAME = "output"
# Fastest first; ORT assigns each node to the first provider in the list that supports it.
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# TensorRT: the engine cache (engines are built per model, GPU and TensorRT version, tens of seconds each on
# a Jetson) lives under this root, one folder per model file, whatever the working directory
TRT_CACHE_ENV = "SST_EDGE_TRT_CACHE"
TRT_MAX_BATCH = 8  # the engine's optimisation profile: batches 1..8 (support clips are embedded 8 at a time)
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


def tensorrt_cache_dir(model_path: str | Path, root: str | Path | None = None) -> Path:
    """Where the TensorRT provider caches the engine of this model file: `root` (a profile bundle's own
    cache), else $SST_EDGE_TRT_CACHE (default ~/.cache/sst-edge/tensorrt), /<first 16 hex of the file's
    sha256>, absolute. Never relative to the working directory, and never inside a model folder (its
    card lists every file in it)."""
    root = root or os.environ.get(TRT_CACHE_ENV) or Path.home() / ".cache" / "sst-edge" / "tensorrt"
    return (Path(root) / sha256_file(model_path)[:16]).resolve()


def tensorrt_options(model_path: str | Path, fp16: bool, input_shape: Sequence[int] | None = None,
                     given: Mapping[str, Any] | None = None,
                     cache_root: str | Path | None = None) -> dict[str, Any]:
    """The TensorRT provider's options for one model, the same for export, profiling and the runtime:

    - fp16 engines keep LayerNorm's Pow and ReduceMean in fp32 (`trt_layer_norm_fp32_fallback`): they
      overflow in fp16 after attention;
    - the engine and timing caches in `tensorrt_cache_dir` (absolute);
    - with a clip shape [T, 3, H, W] (`input_shape` with or without its batch), one optimisation profile
      for batches 1..TRT_MAX_BATCH, so a batch of support clips does not rebuild the engine.
    `given` (the target's provider_options) overrides any of them."""
    cache = str(tensorrt_cache_dir(model_path, cache_root))
    opts: dict[str, Any] = {"device_id": 0, "trt_fp16_enable": bool(fp16),
                            "trt_layer_norm_fp32_fallback": True, "trt_engine_cache_enable": True,
                            "trt_engine_cache_path": cache,
                            "trt_timing_cache_enable": True, "trt_timing_cache_path": cache}
    if input_shape is not None:
        clip = "x".join(str(int(d)) for d in list(input_shape)[-4:])
        opts |= {"trt_profile_min_shapes": f"{INPUT_NAME}:1x{clip}",
                 "trt_profile_opt_shapes": f"{INPUT_NAME}:1x{clip}",
                 "trt_profile_max_shapes": f"{INPUT_NAME}:{TRT_MAX_BATCH}x{clip}"}
    return opts | dict(given or {})


def provider_list(providers: Sequence[str], options: Mapping[str, Mapping[str, Any]], model_path: str | Path,
                  fp16: bool, input_shape: Sequence[int] | None = None,
                  cache_root: str | Path | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(provider, options) pairs as InferenceSession takes them: the given options, and for TensorRT
    `tensorrt_options` under them."""
    return [(p, tensorrt_options(model_path, fp16, input_shape, options.get(p), cache_root)
             if p == TRT_PROVIDER else dict(options.get(p, {}))) for p in providers]


def backend_available(target: Target) -> bool:
    """True when this machine has what runs `target` (its ONNX Runtime provider, or OpenVINO)."""
    if target.openvino:
        return ov_backend.available()
    try:
        return target.provider in available_providers()
    except SSTEdgeError:
        return False


def make_session(path: str | Path, target: Target, input_shape: Sequence[int] | None = None,
                 hint: str | None = None,
                 trt_cache: str | Path | None = None) -> ort.InferenceSession | ov_backend.OpenVINOSession:
    """An InferenceSession with the target's providers (in order), options, threads and optimisation;
    `input_shape` (a clip's) fixes TensorRT's optimisation profile. An OpenVINO target gets an
    `OpenVINOSession` (the same interface) with `hint` (default: the target's precision_hint, as this
    machine resolves it: device/openvino.py). `trt_cache`: the TensorRT engine cache's root
    (`tensorrt_cache_dir`).

    Refuses rather than silently falling back when the target's main provider is missing or fails to load
    (ORT would run everything on the CPU and every timing would be of the wrong device).
    """
    if target.openvino:
        if not ov_backend.available():
            ov_backend.openvino()  # names what to install
            raise SSTEdgeError("OpenVINO has no CPU device here", target.source or None)
        return ov_backend.OpenVINOSession(path, target.threads,
                                          ov_backend.resolve_hint(hint or target.precision_hint))
    rt = onnxruntime()
    have = available_providers()
    if target.provider not in have:
        raise SSTEdgeError(f"target '{target.name}' runs on {target.provider}, which this onnxruntime "
                           f"({rt.__version__}) does not have (available: {', '.join(have)})",
                           target.source or None)
    chosen = provider_list([p for p in target.execution_providers if p in have], target.provider_options,
                           path, target.precision == "fp16", input_shape, trt_cache)
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
    """An ONNX Runtime CPU session with the target's threads: parity and agreement are checked on the CPU
    (an OpenVINO target's fp32 graph too: ONNX Runtime's CPU provider is the reference runtime)."""
    cpu = replace(target, backend="onnxruntime", execution_providers=("CPUExecutionProvider",),
                  provider_options={}, precision_hint=None)
    return make_session(path, cpu)


def ort_features(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """Run in a batch of 2 and then batches of 1, which exercises the dynamic batch axis."""
    parts = [sess.run(None, {INPUT_NAME: x[:2]})[0]]
    parts += [sess.run(None, {INPUT_NAME: x[i:i + 1]})[0] for i in range(2, len(x))]
    return np.concatenate(parts)
