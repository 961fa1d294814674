"""The cpu-openvino target: OpenVINO against ONNX Runtime (a second implementation of the same graph), the
precision hint chosen on evidence, the export's checks, the runtime, and latency tables foreign across
backends. Both kinds of host are explicit: "native bf16" and "no native bf16" are set by monkeypatching
OpenVINO's capability, never assumed of the machine the tests run on."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sst_edge.cost.latency import foreign_problems, load_table
from sst_edge.cost.onnx_export import agreement, export_onnx
from sst_edge.cost.profile import profile_to_file
from sst_edge.deploy import checks
from sst_edge.deploy.export import export_model, load_export_subnet
from sst_edge.device import openvino as ov_backend
from sst_edge.device.card import MODEL_FILE, load_card
from sst_edge.device.session import cpu_session, make_session, ort_features
from sst_edge.device.targets import load_target, parse_target
from sst_edge.device.timing import TimingPolicy
from sst_edge.errors import SSTEdgeError
from sst_edge.runtime.engine import FewShotRuntime
from sst_edge.space.config import load_space
from sst_edge.space.supernet import build_supernet, freeze_subnet

OV = "cpu-openvino"


def _set_native(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(ov_backend, "native_bf16", lambda: native)


@pytest.fixture(scope="module")
def ov_model(trained_run: Path, tiny_subnet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ov") / "tiny-ov"
    export_model(tiny_subnet, trained_run, OV, out, measure=False, progress=False, ood_clips=24)
    return out


# ------------------------------------------------------------------------------------------- targets
def test_the_target_and_its_refusals() -> None:
    t = load_target(OV)
    assert (t.backend, t.provider, t.precision, t.precision_hint, t.threads) == \
        ("openvino", "OpenVINO:CPU", "fp32", "auto", 1)
    assert t.canonical()["precision_hint"] == "auto"
    # the ONNX Runtime targets' settings (and so their tables' hashes) do not gain the key
    assert "precision_hint" not in load_target("cpu-fp32").canonical()
    base = {"name": "x", "backend": "openvino", "device": "cpu", "execution_providers": ["OpenVINO:CPU"],
            "precision": "fp32"}
    for edit, problem in [({"precision": "int8"}, "precision: an openvino target ships the fp32 graph"),
                          ({"precision_hint": "fp16"}, "precision_hint: expected one of"),
                          ({"execution_providers": ["CPUExecutionProvider"]}, "runs on [OpenVINO:CPU]"),
                          ({"attention": "fused"}, "attention: 'fused'")]:
        with pytest.raises(SSTEdgeError) as e:
            parse_target(base | edit)
        assert any(problem in p for p in e.value.problems), e.value.problems
    ort_doc = base | {"backend": "onnxruntime", "execution_providers": ["CPUExecutionProvider"]}
    with pytest.raises(SSTEdgeError) as e:
        parse_target(ort_doc | {"precision_hint": "bf16"})
    assert e.value.problems == ["precision_hint: only an openvino target takes one"]


def test_hint_resolution_on_native_and_foreign_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_native(monkeypatch, True)
    assert [ov_backend.resolve_hint(h) for h in ("auto", None, "fp32", "bf16")] == ["bf16", "bf16", "fp32",
                                                                                   "bf16"]
    _set_native(monkeypatch, False)  # a CPU without AMX / AVX512-BF16 runs fp32 whatever the card says
    assert [ov_backend.resolve_hint(h) for h in ("auto", "fp32", "bf16")] == ["fp32", "fp32", "fp32"]
    with pytest.raises(SSTEdgeError, match="unknown OpenVINO precision hint 'f16'"):
        ov_backend.resolve_hint("f16")


# -------------------------------------------------------------------------- OpenVINO vs ONNX Runtime
def test_openvino_fp32_equals_onnx_runtime_on_the_same_file(tmp_path: Path) -> None:
    """Two runtimes, one ONNX file: OpenVINO's fp32 hint must give ONNX Runtime's features (1e-5)."""
    config = load_space("sst_tiny")
    torch.manual_seed(0)
    module = freeze_subnet(build_supernet(config), config, {k: v[0] for k, v in config.choices().items()})
    path = export_onnx(module.eval(), torch.zeros(config.input_shape(1)), tmp_path / "m.onnx", 17, True)
    x = np.random.default_rng(0).standard_normal(config.input_shape(3), dtype=np.float32)
    target = load_target(OV)
    ref = ort_features(cpu_session(path, target), x)
    sess = make_session(path, target, hint="fp32")
    got = ort_features(sess, x)
    assert got.shape == ref.shape == (3, config.frames, config.stages[-1].channels)
    assert np.abs(got - ref).max() <= 1e-5
    assert sess.get_providers() == ["OpenVINO:CPU (fp32)"]
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("input", [None, *config.input_shape(1)[1:]], "tensor(float)")
    assert (out.name, out.type) == ("output", "tensor(float)")
    # only named outputs come back, as ONNX Runtime's run does
    assert len(sess.run(["output"], {"input": x[:1]})) == 1


def test_an_unloadable_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(SSTEdgeError, match="OpenVINO cannot load this model") as e:
        ov_backend.OpenVINOSession(bad)
    assert e.value.path == bad


# ------------------------------------------------------------------------------------ the decision
def test_ratio_interval_by_hand() -> None:
    # per-round ratios 2, 2, 2: no spread, the interval is the point
    assert checks.ratio_interval(np.array([2.0, 4, 6]), np.array([1.0, 2, 3])) == pytest.approx((2, 2, 2))
    # ratios 1 and 4: geometric mean 2; log-spread sd = ln 4 / sqrt 2, t(0.975, 1) = 12.706
    g, lo, hi = checks.ratio_interval(np.array([1.0, 4.0]), np.array([1.0, 1.0]))
    half = 12.7062047 * (math.log(4) / math.sqrt(2)) / math.sqrt(2)
    assert (g, lo, hi) == pytest.approx((2, 2 * math.exp(-half), 2 * math.exp(half)), rel=1e-6)


@pytest.mark.parametrize("fp32_s,bf16_s,want", [
    ([0.010, 0.011, 0.010, 0.012, 0.010], [0.005, 0.0055, 0.005, 0.006, 0.005], "bf16"),  # 2x, tight
    ([0.010, 0.011, 0.010, 0.012, 0.010], [0.010, 0.0105, 0.011, 0.0115, 0.0095], "fp32"),  # within noise
    ([0.005, 0.005, 0.005, 0.005, 0.005], [0.010, 0.010, 0.011, 0.010, 0.010], "fp32"),  # bf16 slower
])
def test_auto_keeps_bf16_only_when_faster_beyond_the_noise(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          fp32_s: list, bf16_s: list, want: str) -> None:
    _set_native(monkeypatch, True)
    path, ref, clips = _small_model(tmp_path)
    monkeypatch.setattr(checks, "interleaved_seconds",
                        lambda runs, rounds: {"fp32": np.array(fp32_s), "bf16": np.array(bf16_s)})
    rec, done = checks.choose_hint(path, load_target(OV), ref, clips, "random")
    assert rec["precision_hint"] == want and rec["asked"] == "auto"
    assert rec["evidence"]["speedup"] == pytest.approx(float(np.exp(np.mean(np.log(np.array(fp32_s)
                                                                                   / bf16_s)))), rel=1e-3)
    assert [c["graph"] for c in done] == [f"openvino {want}"] and done[0]["passed"]


def test_auto_without_native_bf16_is_fp32_unmeasured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _set_native(monkeypatch, False)
    path, ref, clips = _small_model(tmp_path)
    monkeypatch.setattr(checks, "interleaved_seconds", lambda *a: pytest.fail("nothing to measure"))
    rec, done = checks.choose_hint(path, load_target(OV), ref, clips, "random")
    assert rec["precision_hint"] == "fp32" and "no native bf16" in rec["why"] and "evidence" not in rec
    t = dataclasses.replace(load_target(OV), precision_hint="bf16")
    with pytest.raises(SSTEdgeError, match="does not run natively"):
        checks.choose_hint(path, t, ref, clips, "random")


def test_a_graph_that_disagrees_fails_its_gate(tmp_path: Path) -> None:
    ref = np.ones((2, 4, 8), np.float32)
    bad = ref.copy()
    bad[1, 2] = -1.0  # one frame pointing the other way
    rec = checks.cosine_check("int8", ref, ref, "validation", "here", tmp_path, strict=False)
    assert rec["passed"] and rec["min_cosine"] == pytest.approx(1.0)
    with pytest.raises(SSTEdgeError, match="lowest frame cosine -1.00000 < 0.99 on 2 validation clips"):
        checks.cosine_check("int8", ref, bad, "validation", "here", tmp_path)
    nan = checks.cosine_check("int8", ref, bad * np.nan, "random", "here", tmp_path, strict=False)
    assert not nan["passed"]


def _small_model(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    config = load_space("sst_tiny")
    torch.manual_seed(1)
    module = freeze_subnet(build_supernet(config), config, {k: v[-1] for k, v in config.choices().items()})
    path = export_onnx(module.eval(), torch.zeros(config.input_shape(1)), tmp_path / "m.onnx", 17, True)
    clips = np.random.default_rng(2).standard_normal(config.input_shape(3), dtype=np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(clips)).numpy()
    return path, ref, clips


# ------------------------------------------------------------------------------- export and runtime
def test_export_records_the_hint_and_the_check(ov_model: Path, exported_model: Path) -> None:
    card = load_card(ov_model)
    assert card.target["backend"] == "openvino" and card.target["precision_hint"] == "auto"
    o = card.openvino
    assert o["precision_hint"] in ("fp32", "bf16") and o["version"] == ov_backend.version()
    assert o["asked"] == "auto" and o["why"]
    if ov_backend.native_bf16():
        assert o["evidence"]["rounds"] == checks.HINT_ROUNDS and len(o["evidence"]["ci95"]) == 2
    (c,) = card.checks
    assert c["graph"] == f"openvino {o['precision_hint']}" and c["clip_source"] == "validation"
    assert c["min_cosine"] >= c["gate_min_cosine"] and c["clips"] == 8
    # the shipped file is the fp32 graph as exported for cpu-fp32 (same subnet, same weights)
    assert card.files[MODEL_FILE] == load_card(exported_model).files[MODEL_FILE]
    assert card.ood["clips"] == 24
    pred = card.latency["predicted"]
    assert pred["table"] == "sst_tiny.cpu-openvino"
    if pred["ms"] is not None:  # the shipped table is native here: a hint other than its own is noted
        timed_at = load_table("sst_tiny.cpu-openvino").fingerprint["precision"]
        assert ("note" in pred) == (not timed_at.endswith(f"{o['precision_hint']} hint"))


def test_the_runtime_runs_the_card_and_agrees_with_cpu_fp32(ov_model: Path, exported_model: Path,
                                                            synth_dataset: Path) -> None:
    from sst_edge.device.datasets import load_splits

    rt_ov, rt_fp = FewShotRuntime(ov_model), FewShotRuntime(exported_model)
    hint = load_card(ov_model).openvino["precision_hint"]
    assert rt_ov.describe()["providers"] == [f"OpenVINO:CPU ({ov_backend.resolve_hint(hint)})"]
    paths = [p for p, _ in load_splits(synth_dataset).val.items()][:6]
    a, b = rt_ov.embed_paths(paths, batch=4), rt_fp.embed_paths(paths, batch=4)
    assert agreement(b, a)["min_cosine"] >= checks.MIN_COSINE[f"openvino {hint}"]
    with pytest.raises(SSTEdgeError, match="`providers` chooses ONNX Runtime providers"):
        FewShotRuntime(ov_model, providers=["CPUExecutionProvider"])


def test_a_card_whose_hint_was_edited_still_runs_what_the_cpu_can(ov_model: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _set_native(monkeypatch, False)
    rt = FewShotRuntime(ov_model)
    assert rt.precision_hint == "fp32"  # bf16 or not in the card, a CPU without it runs fp32


def test_without_openvino_the_error_says_what_to_install(ov_model: Path, monkeypatch: pytest.MonkeyPatch):
    import builtins

    real = builtins.__import__

    def no_openvino(name: str, *a, **k):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    ov_backend._core.cache_clear()
    try:
        with pytest.raises(SSTEdgeError, match=r"pip install 'sst-edge\[openvino\]'"):
            FewShotRuntime(ov_model)
    finally:
        monkeypatch.undo()
        ov_backend._core.cache_clear()


def test_the_paper_subnet_passes_the_bf16_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sst_paper's paper-cost subnet (the bench's workload) keeps its features under OpenVINO's bf16 where
    the CPU has it; fp32 everywhere."""
    config = load_space("sst_paper")
    torch.manual_seed(0)
    from sst_edge.train.artifacts import SUPERNET_FORMAT
    from sst_edge.train.checkpoint import save_tensors

    w = tmp_path / "supernet.safetensors"
    save_tensors(w, build_supernet(config).state_dict(),
                 {"format": SUPERNET_FORMAT, "space": config.name, "space_hash": config.hash})
    root = Path(__file__).resolve().parents[1]
    _, _, module, _ = load_export_subnet(root / "search_spaces" / "sst_paper.paper_cost.json", w)
    path = export_onnx(module.eval(), torch.zeros(config.input_shape(1)), tmp_path / "m.onnx", 17, True)
    x = np.random.default_rng(0).standard_normal(config.input_shape(2), dtype=np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    for hint in ("fp32", "bf16") if ov_backend.native_bf16() else ("fp32",):
        got = ort_features(make_session(path, load_target(OV), hint=hint), x)
        gate = checks.MIN_COSINE[f"openvino {hint}"]
        assert agreement(ref, got)["min_cosine"] >= gate, hint


# --------------------------------------------------------------------------------- latency tables
def test_a_table_of_one_backend_is_foreign_to_the_other(tmp_path: Path) -> None:
    tab, path = profile_to_file("sst_tiny", OV, tmp_path / "t.json", validate=2,
                                policy=TimingPolicy.quick(), progress=False)
    doc = json.loads(path.read_text())
    assert doc["backend"] == "openvino"
    assert doc["fingerprint"]["execution_provider"] == "OpenVINO:CPU"
    hint = ov_backend.resolve_hint("auto")
    assert doc["fingerprint"]["precision"] == f"fp32 graph, {hint} hint"
    assert "openvino" in doc["fingerprint"]["versions"]
    tiny = load_space("sst_tiny")
    assert foreign_problems(tab, tiny, load_target(OV)) == []
    assert foreign_problems(tab, tiny, load_target("cpu-fp32")) == [
        "made for target 'cpu-openvino', not 'cpu-fp32'",
        "backend: table has 'openvino', expected 'onnxruntime'",
        "execution_provider: table has 'OpenVINO:CPU', expected 'CPUExecutionProvider'",
        f"precision: table has 'fp32 graph, {hint} hint', expected 'fp32'"]
    shipped_fp32 = load_table("sst_tiny.cpu-fp32", tiny, "cpu-fp32", allow_foreign=True)
    problems = foreign_problems(shipped_fp32, tiny, load_target(OV))
    assert "backend: table has 'onnxruntime', expected 'openvino'" in problems
    with pytest.raises(SSTEdgeError, match="profile it with --backend openvino"):
        profile_to_file("sst_tiny", OV, tmp_path / "u.json", backend="onnxruntime",
                        policy=TimingPolicy.quick(), progress=False)
