"""The device fingerprint stored in a latency table, and the comparison that refuses foreign tables.

A table is a measurement of one device running one target: the CPU (or GPU) model, its core count, the
thread count, the execution provider, the precision and the backend all change the numbers, so they are
recorded and compared. Library versions are recorded for the record but not compared (a patch release
rarely moves timings by more than the noise; a reader can still see them).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import openvino as ov_backend
from .targets import Target

# Fields of the fingerprint that make a table foreign when they differ.
DEVICE_KEYS = ("cpu_model", "cpu_count")
GPU_KEYS = ("gpu",)
RUN_KEYS = ("backend", "execution_provider", "precision", "threads")


@cache
def cpu_model() -> str:
    """The CPU's marketing name (x86 `model name`; ARM boards give `Model` or `Hardware`)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and value.strip():
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if key in fields:
            return fields[key]
    return platform.processor() or platform.machine() or "unknown"


# CPU features that change which precision or int8 recipe is fastest (lscpu / /proc/cpuinfo flag names).
SPEED_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                  "amx_tile", "asimd", "bf16", "i8mm")


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (x86 `flags`, ARM `Features`); empty where /proc/cpuinfo is not readable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_features() -> dict[str, bool]:
    """Which of `SPEED_FEATURES` this CPU has: what a bench prints beside its figures."""
    flags = cpu_flags()
    return {f: f in flags for f in SPEED_FEATURES}


def native_bf16_cpu() -> bool:
    """True if the CPU multiplies bf16 natively (AMX or AVX512-BF16); without it PyTorch's CPU bf16 is
    emulated and slower than fp32 (measured: docs/train.md, "Training on GPUs and CPUs")."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, which containers narrow), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name (nvidia-smi), or a Jetson's board name (its device tree); None if neither.

    No torch: the device half reads it from the driver's tools, which desktop GPUs and Jetsons both have."""
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10, check=False).stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError):
            out = []
        if out and out[0].strip():
            return out[0].strip()
    try:
        with open("/proc/device-tree/model", encoding="utf-8", errors="replace") as f:
            model = f.read().strip("\x00\n ")
    except OSError:
        return None
    return model if "jetson" in model.lower() or "nvidia" in model.lower() else None


def library_versions() -> dict[str, str]:

    out: dict[str, str] = {"python": platform.python_version()}
    for dist in ("sst-edge", "torch", "onnxruntime", "onnxruntime-gpu", "openvino", "onnx", "numpy", "nni"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def run_precision(target: Target) -> str:
    """The precision the target runs at here: an OpenVINO target's hint as this CPU resolves it
    (`auto`: bf16 where it is native), which changes its timings as much as a precision does."""
    if target.openvino:
        return f"{target.precision} graph, {ov_backend.resolve_hint(target.precision_hint)} hint"
    return target.precision


def execution_provider(target: Target, backend: str) -> str:
    """What runs the model: an ORT provider, or `torch-cpu` / `torch-cuda` for PyTorch eager."""
    if backend == "torch":
        return f"torch-{target.device}"
    return target.provider


def device_fingerprint(uses_gpu: bool) -> dict[str, Any]:
    """This machine: CPU model and count, and the GPU's name when the work runs on one."""
    return {
        "cpu_model": cpu_model(),
        "cpu_count": cpu_count(),
        "gpu": gpu_name() if uses_gpu else None,
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
    }


def fingerprint(target: Target, backend: str) -> dict[str, Any]:
    """Everything about this machine and run settings that a table's numbers depend on."""
    return {
        **device_fingerprint(target.uses_gpu),
        "backend": backend,
        "execution_provider": execution_provider(target, backend),
        "precision": run_precision(target),
        "threads": target.threads,
        "versions": library_versions(),
    }


def device_mismatches(stored: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """Differences in the device itself (CPU model and count; the GPU when the table used one)."""
    keys = DEVICE_KEYS + (GPU_KEYS if stored.get("gpu") else ())
    return [f"device {k}: table has {stored.get(k)!r}, this machine has {here.get(k)!r}"
            for k in keys if stored.get(k) != here.get(k)]


def run_mismatches(stored: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Differences in how the model runs (backend, provider, precision, threads)."""
    return [f"{k}: table has {stored.get(k)!r}, expected {expected.get(k)!r}"
            for k in RUN_KEYS if stored.get(k) != expected.get(k)]
