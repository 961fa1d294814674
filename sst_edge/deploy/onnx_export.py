"""ONNX export, precision conversion and ONNX Runtime sessions, shared by profiling and deployment.

Latency tables are only worth anything if blocks are timed exactly as the deployed model runs, so the
profiler and the model exporter both go through these functions. Choices (../shared/notes/measurements.md):
- the TorchScript exporter (dynamo=False) at opset 17 turns SDPA into plain MatMul/Softmax and its GELU is
  fused by ORT; it runs 5-6% faster than the dynamo exporter's graph;
- INT8 is dynamic quantization of MatMul/Gemm only, after ORT's `quant_pre_process` (quantized
  convolutions are slower than fp32 on this CPU);
- fp16 for the CUDA provider converts the graph (fp32 inputs and outputs); TensorRT builds its own fp16
  engine from the fp32 graph.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..errors import SSTEdgeError
from ..fileio import atomic_write
from .targets import Target

if TYPE_CHECKING:
    import onnxruntime as ort

INPUT_NAME = "input"
OUTPUT_NAME = "output"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and the quantizer's chatter (tracer warnings, deprecation, INFO logs)."""
    loggers = [logging.getLogger(n) for n in ("root", "onnxruntime", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


def export_onnx(module: nn.Module, example_input: torch.Tensor, path: str | Path, opset: int = 17,
                dynamic_batch: bool = True) -> Path:
    """Export `module` (in eval mode) with the TorchScript exporter; one input and one output.

    With `dynamic_batch` the first axis of input and output is symbolic ("batch"): timing showed no cost
    for it in ORT, and one file then serves single clips and batches of support clips.
    """
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    was_training = module.training
    module.eval()

    def write(tmp: Path) -> None:
        with _quiet(), torch.no_grad():
            torch.onnx.export(module, (example_input,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                              do_constant_folding=True)

    try:
        return atomic_write(path, write)
    finally:
        module.train(was_training)


def quantize_dynamic_int8(src: str | Path, dst: str | Path, op_types: tuple[str, ...] = ("MatMul", "Gemm"),
                          per_channel: bool = False, reduce_range: bool = False) -> Path:
    """ORT's `quant_pre_process` (shape inference, graph clean-up), then dynamic INT8 of `op_types` only."""
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    dst = Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent if dst.parent.exists() else None) as tmp:
        pre = Path(tmp) / "pre.onnx"
        with _quiet():
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)

        def write(out: Path) -> None:
            with _quiet():
                quantize_dynamic(pre, out, op_types_to_quantize=list(op_types), per_channel=per_channel,
                                 reduce_range=reduce_range, weight_type=QuantType.QInt8)

        return atomic_write(dst, write)


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """An fp16 copy of an fp32 graph for the CUDA provider; inputs and outputs stay fp32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    with _quiet():
        half = convert_float_to_float16(model, keep_io_types=True)
    return atomic_write(dst, lambda p: onnx.save(half, str(p)))


def export_for_target(module: nn.Module, example_input: torch.Tensor, path: str | Path,
                      target: Target) -> Path:
    """Export with the target's opset and batch axis, then apply its precision step (int8 quantization,
    fp16 conversion for the CUDA provider): the file the target's session should load."""
    path = Path(path)
    dynamic_batch = target.dynamic_batch
    needs_step = target.precision == "int8" or (
        target.precision == "fp16" and target.provider != "TensorrtExecutionProvider")
    if not needs_step:
        return export_onnx(module, example_input, path, target.opset, dynamic_batch)
    fp32 = path.with_name(path.stem + ".fp32.onnx")
    export_onnx(module, example_input, fp32, target.opset, dynamic_batch)
    try:
        if target.precision == "int8":
            q = target.quantization
            if q is not None and q.mode != "dynamic":
                raise SSTEdgeError(f"quantization mode {q.mode!r} is not implemented yet (only 'dynamic')",
                                   target.source or target.name)
            kw = {} if q is None else {"op_types": q.op_types, "per_channel": q.per_channel,
                                       "reduce_range": q.reduce_range}
            return quantize_dynamic_int8(fp32, path, **kw)
        return convert_fp16(fp32, path)
    finally:
        fp32.unlink(missing_ok=True)


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def session_options(target: Target) -> ort.SessionOptions:
    """Threads and graph optimisation from the target; sequential execution (one clip, no inter-op)."""
    return make_session_options(target.graph_optimization, target.threads)


def make_session_options(graph_optimization: str = "all", threads: int = 1) -> ort.SessionOptions:
    """SessionOptions as every sst-edge session uses them (profiling, export checks, the runtime)."""
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    so = ort.SessionOptions()
    so.graph_optimization_level = levels.get(graph_optimization, levels["all"])
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def make_session(path: str | Path, target: Target) -> ort.InferenceSession:
    """An InferenceSession with the target's providers (in order), options, threads and optimisation.

    Refuses rather than silently falling back when the target's main provider is missing or fails to load
    (ORT would run everything on the CPU and every timing would be of the wrong device).
    """
    import onnxruntime as ort

    have = available_providers()
    if target.provider not in have:
        raise SSTEdgeError(f"target '{target.name}' runs on {target.provider}, which this onnxruntime "
                           f"({ort.__version__}) does not have (available: {', '.join(have)})",
                           target.source or None)
    chosen = [(p, o) for p, o in target.ort_providers() if p in have]
    try:
        sess = ort.InferenceSession(str(path), session_options(target), providers=[p for p, _ in chosen],
                                    provider_options=[o for _, o in chosen])
    except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        raise SSTEdgeError(f"ONNX Runtime cannot load this model for target '{target.name}': {e}",
                           path) from None
    if sess.get_providers()[0] != target.provider:
        raise SSTEdgeError(f"{target.provider} failed to start (the session fell back to "
                           f"{sess.get_providers()[0]}); check the CUDA/TensorRT libraries", path)
    return sess


# ------------------------------------------------------------------- checks shared by export and int8
def cpu_session(path: Path, target: Target) -> ort.InferenceSession:
    """A CPU session with the target's threads: parity and agreement are checked on the CPU here."""
    from dataclasses import replace

    cpu = replace(target, execution_providers=("CPUExecutionProvider",), provider_options={})
    return make_session(path, cpu)


def ort_features(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """Run in a batch of 2 and then batches of 1, which exercises the dynamic batch axis."""
    parts = [sess.run(None, {INPUT_NAME: x[:2]})[0]]
    parts += [sess.run(None, {INPUT_NAME: x[i:i + 1]})[0] for i in range(2, len(x))]
    return np.concatenate(parts)


def agreement(ref: np.ndarray, got: np.ndarray) -> dict[str, float | int]:
    """How far two feature arrays [B, T, C] are apart: max abs diff and per-frame cosine."""
    a, b = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, got.shape[-1])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {"clips": int(ref.shape[0]), "max_abs_diff": float(np.abs(ref - got).max()),
            "mean_abs": float(np.abs(ref).mean()), "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean())}
