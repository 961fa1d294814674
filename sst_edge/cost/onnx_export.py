"""ONNX export and precision conversion as a target deploys a module, shared by profiling and deployment.

Latency tables are only worth anything if blocks are timed exactly as the deployed model runs, so the
profiler and the model exporter both go through these functions. Choices (docs/measurements.md):
- the TorchScript exporter (dynamo=False) at opset 17 turns SDPA into plain MatMul/Softmax and its GELU is
  fused by ORT (its graph measured faster than the dynamo exporter's);
- INT8 is dynamic quantization of MatMul/Gemm only, after ORT's `quant_pre_process` (quantized
  convolutions measured slower than fp32; bench/export.py compares the recipes);
- a target with `attention: fused` exports each attention as ORT's com.microsoft MultiHeadAttention;
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

import numpy as np
import onnx
import torch
from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16
from torch import nn

from ..device.session import INPUT_NAME, OUTPUT_NAME
from ..device.targets import Target
from ..errors import SSTEdgeError
from ..fileio import atomic_write
from ..space.attention import ORT_DOMAIN, fused_attention_export


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
                dynamic_batch: bool = True, fused_attention: bool = False) -> Path:
    """Export `module` (in eval mode) with the TorchScript exporter; one input and one output.

    With `dynamic_batch` the first axis of input and output is symbolic ("batch"): timing showed no cost
    for it in ORT, and one file then serves single clips and batches of support clips. With
    `fused_attention` each attention is one com.microsoft MultiHeadAttention node (ONNX Runtime only).
    """
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    fused = fused_attention_export() if fused_attention else contextlib.nullcontext()
    custom = {ORT_DOMAIN: 1} if fused_attention else None
    was_training = module.training
    module.eval()

    def write(tmp: Path) -> None:
        with _quiet(), torch.no_grad(), fused:
            torch.onnx.export(module, (example_input,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                              do_constant_folding=True, custom_opsets=custom)

    try:
        return atomic_write(path, write)
    finally:
        module.train(was_training)


def quantize_dynamic_int8(src: str | Path, dst: str | Path, op_types: tuple[str, ...] = ("MatMul", "Gemm"),
                          per_channel: bool = False, reduce_range: bool = False,
                          activation_matmuls: bool = False) -> Path:
    """ORT's `quant_pre_process` (shape inference, graph clean-up), then dynamic INT8 of `op_types` only.
    `activation_matmuls` also quantizes MatMuls of two activations (unfused attention's QK^T and AV)."""
    dst = Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent if dst.parent.exists() else None) as tmp:
        pre = Path(tmp) / "pre.onnx"
        with _quiet():
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)

        def write(out: Path) -> None:
            with _quiet():
                quantize_dynamic(pre, out, op_types_to_quantize=list(op_types), per_channel=per_channel,
                                 reduce_range=reduce_range, weight_type=QuantType.QInt8,
                                 extra_options={"MatMulConstBOnly": not activation_matmuls})

        return atomic_write(dst, write)


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """An fp16 copy of an fp32 graph for the CUDA provider; inputs and outputs stay fp32."""

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
    fused = target.fused_attention
    if not needs_step:
        return export_onnx(module, example_input, path, target.opset, dynamic_batch, fused)
    fp32 = path.with_name(path.stem + ".fp32.onnx")
    export_onnx(module, example_input, fp32, target.opset, dynamic_batch, fused)
    try:
        if target.precision == "int8":
            q = target.quantization
            if q is not None and q.mode != "dynamic":  # static ranges come from a dataset's clips
                raise SSTEdgeError(f"quantization mode {q.mode!r} needs calibration clips, which profiling "
                                   "a block has not: profile with mode 'dynamic'",
                                   target.source or target.name)
            kw = {} if q is None else {"op_types": q.op_types, "per_channel": q.per_channel,
                                       "reduce_range": q.reduce_range}
            return quantize_dynamic_int8(fp32, path, **kw)
        return convert_fp16(fp32, path)
    finally:
        fp32.unlink(missing_ok=True)


def agreement(ref: np.ndarray, got: np.ndarray) -> dict[str, float | int]:
    """How far two feature arrays [B, T, C] are apart: max abs diff and per-frame cosine."""
    a, b = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, got.shape[-1])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {"clips": int(ref.shape[0]), "max_abs_diff": float(np.abs(ref - got).max()),
            "mean_abs": float(np.abs(ref).mean()), "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean())}
