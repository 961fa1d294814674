"""What TensorRT needs, checked on exported graphs without TensorRT or a GPU."""

from __future__ import annotations

import random
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from sst_edge.cost.onnx_export import export_onnx
from sst_edge.deploy.tensorrt import check_graph, trtexec_command
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


def test_tensorrt_provider_options_are_pinned(tmp_path, monkeypatch):
    """The options every TensorRT session gets (export's check, profiling, the runtime), written out by
    hand: fp16 as the target says, LayerNorm's Pow/ReduceMean in fp32, engine and timing caches in one
    absolute folder per model file (never the working directory), one profile for batches 1..8, and the
    target's own options (workspace) on top."""
    import hashlib

    from sst_edge.device.session import TRT_CACHE_ENV, provider_list
    from sst_edge.device.targets import load_target

    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really a model, but a file with a sha256")
    monkeypatch.setenv(TRT_CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    cache = str((tmp_path / "cache" / hashlib.sha256(model.read_bytes()).hexdigest()[:16]).resolve())
    target = load_target("jetson-trt-fp16")
    got = provider_list(target.execution_providers, target.provider_options, model, True,
                        ["batch", 4, 3, 64, 64])
    assert got == [
        ("TensorrtExecutionProvider", {
            "device_id": 0, "trt_fp16_enable": True, "trt_layer_norm_fp32_fallback": True,
            "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
            "trt_profile_min_shapes": "input:1x4x3x64x64", "trt_profile_opt_shapes": "input:1x4x3x64x64",
            "trt_profile_max_shapes": "input:8x4x3x64x64", "trt_max_workspace_size": 1073741824}),
        ("CUDAExecutionProvider", {"device_id": 0}),
        ("CPUExecutionProvider", {}),
    ]
    monkeypatch.delenv(TRT_CACHE_ENV)  # the default root: the user's cache folder, absolute
    default = dict(provider_list(target.execution_providers, {}, model, False))["TensorrtExecutionProvider"]
    assert default["trt_engine_cache_path"].startswith(str(Path.home().resolve()))
    assert default["trt_fp16_enable"] is False and "trt_profile_min_shapes" not in default


def test_runtime_session_gets_the_pinned_options(exported_model, monkeypatch):
    """FewShotRuntime opens its session with provider_list's options (TensorRT's included), as export and
    profiling do: the providers and options it hands ONNX Runtime, seen through a stand-in session."""
    import onnxruntime as ort

    from sst_edge.runtime import engine

    seen = {}

    class Session(ort.InferenceSession):
        def __init__(self, path, so, providers, provider_options):
            seen["providers"], seen["options"] = providers, provider_options
            super().__init__(path, so, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(engine, "choose_providers", lambda available, wanted=None: list(wanted or available))
    monkeypatch.setattr(ort, "InferenceSession", Session)
    engine.FewShotRuntime(exported_model, providers=["TensorrtExecutionProvider", "CPUExecutionProvider"])
    trt = seen["options"][0]
    assert seen["providers"][0] == "TensorrtExecutionProvider"
    assert trt["trt_layer_norm_fp32_fallback"] is True and Path(trt["trt_engine_cache_path"]).is_absolute()
    assert trt["trt_profile_max_shapes"] == "input:8x4x3x64x64" and trt["trt_fp16_enable"] is False


def test_relative_engine_cache_in_a_target_is_refused(tmp_path):
    from sst_edge.device.targets import load_target

    text = (Path(load_target("jetson-trt-fp16").source).read_text()
            .replace("trt_fp16_enable: true", "trt_fp16_enable: true\n    trt_engine_cache_path: trt_cache"))
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(SSTEdgeError, match="trt_engine_cache_path must be an absolute path"):
        load_target(tmp_path / "t.yaml")


def test_a_bundles_tensorrt_cache_lies_inside_it_whatever_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`profile --run-bundle` caches TensorRT's engines in the bundle: a bundle read by a relative path
    opens its sessions (bundle_openers -> make_session) with the bundle's own absolute cache folder, not
    $SST_EDGE_TRT_CACHE nor the working directory, and the provider options point there."""
    import hashlib

    import sst_edge.device.bundle as bundle_mod
    from sst_edge.cost.profile import BUNDLE_FOLDER
    from sst_edge.device.bundle import TRT_CACHE_DIR, Bundle, BundleItem, bundle_openers
    from sst_edge.device.session import TRT_CACHE_ENV, provider_list
    from sst_edge.device.targets import load_target

    bundle_dir = tmp_path / "work" / "bundle_orin"
    bundle_dir.mkdir(parents=True)
    part = bundle_dir / "embed.onnx"
    part.write_bytes(b"a part's bytes")
    monkeypatch.setenv(TRT_CACHE_ENV, str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path / "work")
    target = load_target("jetson-trt-fp16")
    item = BundleItem("embed", "part", "embed.onnx", "0" * 64, 14, (1, 4, 3, 64, 64), 0)
    bundle = Bundle(Path("bundle_orin"), {}, "0" * 64, target, None, [item])  # type: ignore[arg-type]
    opened: dict = {}

    def spy(path, tgt, input_shape=None, hint=None, trt_cache=None):  # no TensorRT here: see what it gets
        opened.update(path=path, trt_cache=trt_cache)
        raise RuntimeError("stop")

    monkeypatch.setattr(bundle_mod, "make_session", spy)
    opener = bundle_openers(bundle)["embed"]
    monkeypatch.chdir(tmp_path)  # the cache does not move with the working directory
    with pytest.raises(RuntimeError, match="stop"), opener():
        pass
    cache = (bundle_dir / TRT_CACHE_DIR).resolve()
    assert opened["trt_cache"] == cache and cache.is_absolute()
    got = dict(provider_list(target.execution_providers, {}, part, True, None,
                             opened["trt_cache"]))["TensorrtExecutionProvider"]
    want = str(cache / hashlib.sha256(part.read_bytes()).hexdigest()[:16])
    assert got["trt_engine_cache_path"] == want and got["trt_timing_cache_path"] == want
    # the host's --from-bundle / --bundle --overwrite accept the folder the device added, and no other
    assert BUNDLE_FOLDER(TRT_CACHE_DIR, True) and not BUNDLE_FOLDER("other", True)
