"""Deployment targets: the shipped ones load, and a bad one names its file and every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from sst_edge.device.targets import load_target
from sst_edge.errors import SSTEdgeError
from sst_edge.resources import available

SHIPPED = ["cpu-fp32", "cpu-int8", "cuda-fp16", "jetson-trt-fp16"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_targets_load(name: str) -> None:
    t = load_target(name)
    assert t.name == name
    assert t.opset == 17 and t.backend == "onnxruntime"
    assert t.execution_providers[-1] == "CPUExecutionProvider"  # unsupported nodes fall back to the CPU
    assert len(t.hash) == 16
    assert name in available("target")


def test_cpu_targets_pin_one_thread() -> None:
    for name in ("cpu-fp32", "cpu-int8"):
        t = load_target(name)
        assert t.threads == 1 and not t.uses_gpu
    q = load_target("cpu-int8").quantization
    assert q is not None and q.mode == "dynamic" and q.op_types == ("MatMul", "Gemm")


def test_gpu_targets_name_their_providers() -> None:
    trt = load_target("jetson-trt-fp16")
    assert trt.provider == "TensorrtExecutionProvider" and trt.uses_gpu
    assert trt.provider_options["TensorrtExecutionProvider"]["trt_fp16_enable"] is True
    assert [p for p, _ in trt.ort_providers()] == list(trt.execution_providers)
    assert load_target("cuda-fp16").provider == "CUDAExecutionProvider"


def test_target_by_path_and_hash_tracks_settings(tmp_path: Path) -> None:
    text = load_target("cpu-fp32").source
    a = tmp_path / "a.yaml"
    a.write_text(Path(text).read_text().replace("threads: 1", "threads: 2"))
    t = load_target(a)
    assert t.threads == 2 and t.hash != load_target("cpu-fp32").hash


def test_bad_target_lists_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbackend: tensorflow\ndevice: cpu\n"
                   "execution_providers: [CUDAExecutionProvider]\nprecision: fp8\nthreads: -1\nspeed: fast\n")
    with pytest.raises(SSTEdgeError) as e:
        load_target(bad)
    msg = str(e.value)
    assert str(bad) in msg
    for words in ("backend", "fp8", "GPU provider on a 'cpu' device", "threads", "unknown key 'speed'"):
        assert words in msg


def test_fp16_tensorrt_needs_the_fp16_flag(tmp_path: Path) -> None:
    bad = tmp_path / "trt.yaml"
    bad.write_text("name: trt\nbackend: onnxruntime\ndevice: cuda\nprecision: fp16\n"
                   "execution_providers: [TensorrtExecutionProvider, CPUExecutionProvider]\n")
    with pytest.raises(SSTEdgeError, match="trt_fp16_enable"):
        load_target(bad)


def test_unknown_target_name() -> None:
    with pytest.raises(SSTEdgeError, match="no such target"):
        load_target("no-such-target")
