"""What TensorRT needs, checked on exported graphs without TensorRT or a GPU."""

from __future__ import annotations

import random

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from sst_edge.cost.onnx_export import export_onnx
from sst_edge.deploy.tensorrt import build_engine, check_graph, trtexec_command
from sst_edge.errors import SSTEdgeError
from sst_edge.space.config import load_space
from sst_edge.space.model import SSTSpace
from sst_edge.space.supernet import random_sample


def test_exported_subnet_uses_only_tensorrt_ops(tmp_path):
    config = load_space("sst_tiny")
    model = SSTSpace(config).freeze(random_sample(config, random.Random(0)))
    path = export_onnx(model, torch.randn(config.input_shape(1)), tmp_path / "m.onnx")
    report = check_graph(path)
    assert report.unsupported == [] and report.int64_arithmetic == []
    assert report.ops["MatMul"] > 0 and report.ops["Softmax"] > 0  # attention as plain MatMul/Softmax
    assert "--fp16" in trtexec_command("m.onnx", "m.engine", config.input_shape(1))


def test_unsupported_op_and_dynamic_dims_are_reported(tmp_path):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "frames"])
    y = helper.make_tensor_value_info("output", TensorProto.INT64, ["batch", "n"])
    graph = helper.make_graph([helper.make_node("NonZero", ["input"], ["output"])], "g", [x], [y])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    report = check_graph(path)
    assert not report.ok and report.unsupported == ["NonZero"]
    assert "input[1]" in report.dynamic_dims and "output[1]" in report.dynamic_dims


def test_engine_without_tensorrt_says_what_is_needed(tmp_path, monkeypatch):
    """Where TensorRT is missing (this machine; elsewhere its absence is simulated) the error says why."""
    import sst_edge.deploy.tensorrt as trt

    monkeypatch.setattr(trt, "tensorrt_available", lambda: False)
    with pytest.raises(SSTEdgeError, match="TensorRT is not installed.*NVIDIA GPU"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", (1, 4, 3, 64, 64))
