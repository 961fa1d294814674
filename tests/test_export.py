"""`sst-edge export`: parity with PyTorch, the model card, int8 with its accuracy change, TensorRT's needs,
and exports that fail leaving nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sst_edge.cli import main
from sst_edge.cost.onnx_export import agreement
from sst_edge.deploy import export as export_mod
from sst_edge.deploy.export import export_model, load_export_subnet
from sst_edge.deploy.quantize import calibration_clips
from sst_edge.device.card import CARD_FILE, MODEL_FILE, load_card, verify_files
from sst_edge.device.ood import OOD_FILE
from sst_edge.device.session import make_session, ort_features
from sst_edge.device.targets import load_target
from sst_edge.errors import SSTEdgeError
from sst_edge.fileio import sha256_file
from sst_edge.space.config import load_space
from sst_edge.space.subnet import load_subnet
from sst_edge.space.supernet import build_supernet, freeze_subnet
from sst_edge.train.artifacts import SUPERNET_FORMAT, load_supernet
from sst_edge.train.checkpoint import save_tensors


def _frozen(weights: Path, subnet: Path) -> torch.nn.Module:
    sub, config = load_subnet(subnet)
    supernet, _ = load_supernet(weights, config)
    return freeze_subnet(supernet, config, sub.sample).eval()


def test_export_card_parity_and_static_graph(exported_model: Path, trained_run: Path, tiny_subnet: Path):
    card = load_card(exported_model)
    config = load_space("sst_tiny")
    sub, _ = load_subnet(tiny_subnet)
    assert card.space == "sst_tiny" and card.space_hash == config.hash and card.subnet == sub.sample
    assert card.files[MODEL_FILE]["sha256"] == sha256_file(exported_model / MODEL_FILE)
    verify_files(card)
    assert card.parity["max_abs_diff"] <= 1e-4
    assert card.cost["gflops"] > 0 and card.cost["mparams"] > 0
    # the shipped sst_tiny.cpu-fp32 table, native or foreign to this host: see test_card_predicted_latency
    assert card.latency["predicted"]["table"] == "sst_tiny.cpu-fp32"
    assert card.tensorrt["ok"], card.tensorrt

    # T, H, W fixed, batch dynamic, output pinned to [batch, T, C]
    model = onnx.load(str(exported_model / MODEL_FILE))
    in_dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert in_dims == ["batch", config.frames, 3, config.size, config.size]
    assert out_dims == ["batch", config.frames, config.stages[-1].channels]
    assert card.input["shape"] == in_dims and card.output["shape"] == out_dims
    assert model.opset_import[0].version >= 17

    # the shipped file against PyTorch on other clips, batch of 3 at once
    x = torch.randn(config.input_shape(3), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = _frozen(trained_run, tiny_subnet)(x).numpy()
    sess = ort.InferenceSession(str(exported_model / MODEL_FILE), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4


def test_card_predicted_latency_from_a_table_of_the_target_timed_anywhere(
        trained_run: Path, tiny_subnet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The card predicts the target's latency from a table that describes the target, whichever machine
    exports: the host's CPU does not matter (faked as another one here), nor the device that timed the
    table (an Orin's fingerprint); a table timed another way (4 threads for a 1-thread target) is refused."""
    from sst_edge.cost.latency import foreign_problems, read_table
    from sst_edge.deploy.export import card_summary, predicted_latency
    from sst_edge.device import fingerprint

    config, target = load_space("sst_tiny"), load_target("cpu-fp32")
    sample = load_subnet(tiny_subnet)[0].sample
    shipped = read_table("sst_tiny.cpu-fp32")
    monkeypatch.setattr(fingerprint, "cpu_model", lambda: "Some Other CPU")
    assert foreign_problems(shipped, config, target) == []
    card = export_model(tiny_subnet, trained_run, target, tmp_path / "m", measure=False, progress=False)
    pred = card.latency["predicted"]
    assert pred["table"] == "sst_tiny.cpu-fp32" and pred["ms"] == round(shipped.predict_ms(sample), 4) > 0
    assert any(f"{pred['ms']:.2f} ms" in line for line in card_summary(card) if "predicted" in line)

    doc = json.loads(shipped.path.read_text())
    doc["fingerprint"].update(cpu_model="ARMv8 Processor rev 1 (v8l)", gpu="Orin")
    orin = tmp_path / "jetson.json"
    orin.write_text(json.dumps(doc))
    assert predicted_latency(config, sample, target, orin)["ms"] == pred["ms"]

    doc["fingerprint"]["threads"] = 4
    four = tmp_path / "four-threads.json"
    four.write_text(json.dumps(doc))
    assert foreign_problems(read_table(four), config, target) == ["threads: table has 4, expected 1"]
    away = predicted_latency(config, sample, target, four)
    assert away["ms"] is None and "another space, target or device" in away["why"]


def test_tampered_model_is_refused(exported_model: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(exported_model, copy)
    data = bytearray((copy / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(SSTEdgeError, match="does not match the sha256") as e:
        verify_files(load_card(copy))
    assert str(copy / MODEL_FILE) in str(e.value)


def test_int8_dynamic_and_static_report_accuracy_and_speed(trained_run: Path, tiny_subnet: Path,
                                                           synth_dataset: Path, tmp_path: Path):
    dyn = export_model(tiny_subnet, trained_run, "cpu-int8", tmp_path / "dyn", data=synth_dataset,
                       episodes=30, progress=False)
    q = dyn.quantization
    assert q["mode"] == "dynamic"
    # the shipped int8 graph, against PyTorch fp32 on real validation clips (deploy/checks.py)
    (c,) = dyn.checks
    assert (c["graph"], c["clip_source"], c["clips"], c["passed"]) == ("int8", "validation", 8, True)
    assert c["gate_min_cosine"] <= c["min_cosine"] <= 1.0
    acc = q["accuracy"]
    # 5-way: chance is 0.2; both models are above it beyond their 95% intervals (30 episodes)
    assert acc["episodes"] == 30 and acc["fp32"] <= 1 and acc["int8"] <= 1
    assert acc["fp32"] - acc["fp32_ci95"] > 0.2 and acc["int8"] - acc["int8_ci95"] > 0.2
    assert abs(acc["change_points"] - 100 * (acc["int8"] - acc["fp32"])) < 0.01
    lat = q["latency"]  # the speed-up is the ratio of the two measured medians, as recorded
    assert lat["fp32_ms"] > 0 and lat["int8_ms"] > 0
    assert lat["speedup"] == pytest.approx(lat["fp32_ms"] / lat["int8_ms"], abs=5e-4)
    assert dyn.latency["measured"]["median_ms"] == lat["int8_ms"]
    assert q["agreement_with_fp32"]["mean_cosine"] > 0.99
    model = onnx.load(str(tmp_path / "dyn" / MODEL_FILE))
    assert any("Integer" in n.op_type or "Dynamic" in n.op_type for n in model.graph.node)
    # cpu-int8 fuses attention: one MultiHeadAttention per attention block (3 stages x 3 choice blocks + 2
    # downsample blocks in sst_tiny), no unfused Softmax left, and the fused fp32 graph passed parity
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MultiHeadAttention") == 11 and "Softmax" not in ops
    assert dyn.parity["max_abs_diff"] <= 1e-4
    # faithful to PyTorch eager on real clips: 8-bit weights saturate u8 x s8 sums on AVX2 CPUs without
    # VNNI (min cosine 0.9973 on this run's kind of model), 7-bit weights do not (0.9998)
    config, _, module, _ = load_export_subnet(tiny_subnet, trained_run)
    clips = np.concatenate(calibration_clips(synth_dataset, config, 8, seed=1, split="val"))
    with torch.no_grad():
        ref = module.eval()(torch.from_numpy(clips)).numpy()
    got = ort_features(make_session(tmp_path / "dyn" / MODEL_FILE, load_target("cpu-int8")), clips)
    assert agreement(ref, got)["min_cosine"] > 0.999
    assert acc["episodes"] == 30 and acc["ci95_points"] >= 0 and isinstance(acc["significant"], bool)

    st = export_model(tiny_subnet, trained_run, "cpu-int8", tmp_path / "static", data=synth_dataset,
                      quantization="static", episodes=30, measure=False, progress=False)
    q = st.quantization
    assert q["mode"] == "static" and q["calibration"]["clips"] > 0 and "int8" in q["accuracy"]
    model = onnx.load(str(tmp_path / "static" / MODEL_FILE))
    assert any(n.op_type in ("QuantizeLinear", "QLinearMatMul", "DequantizeLinear") for n in model.graph.node)
    verify_files(st)

    with pytest.raises(SSTEdgeError, match="--data"):
        export_model(tiny_subnet, trained_run, "cpu-int8", tmp_path / "nodata", quantization="static",
                     progress=False)
    assert not (tmp_path / "nodata").exists()


def test_tensorrt_target_without_tensorrt(trained_run: Path, tiny_subnet: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch):
    """TensorRT's absence simulated, whatever this host has: `import tensorrt` fails, and ONNX Runtime offers
    no TensorRT provider."""
    import sys

    from sst_edge.device import session

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    cpu_only = [p for p in session.available_providers() if "Tensorrt" not in p and "CUDA" not in p]
    monkeypatch.setattr(session, "available_providers", lambda: cpu_only)
    monkeypatch.setattr(export_mod, "available_providers", lambda: cpu_only)
    card = export_model(tiny_subnet, trained_run, "jetson-trt-fp16", tmp_path / "trt", progress=False)
    t = card.tensorrt
    assert t["ok"] and t["engine"] is None and "first session on the device" in t["why"]
    # no engine file: the runtime's engine is ONNX Runtime's (the other file: the training features)
    assert sorted(card.files) == ["model.onnx", OOD_FILE]
    shipped = card.parity["shipped"]
    assert shipped["graph"] == "fp16 TensorRT engine" and shipped["checked"] is False
    assert "--onnx=model.onnx" in t["trtexec"] and "--fp16" in t["trtexec"]
    assert "x".join(map(str, load_space("sst_tiny").input_shape(1)[1:])) in t["trtexec"]
    assert "why" in card.latency["measured"]  # no TensorRT provider here


def test_failed_export_leaves_nothing_and_keeps_the_old_model(
        trained_run: Path, tiny_subnet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "m"
    export_model(tiny_subnet, trained_run, "cpu-fp32", out, measure=False, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(SSTEdgeError, match="already exists"):
        export_model(tiny_subnet, trained_run, "cpu-fp32", out, measure=False, progress=False)
    monkeypatch.setattr(export_mod, "PARITY_TOL", -1.0)  # every export now fails its parity check
    with pytest.raises(SSTEdgeError, match="parity check failed"):
        export_model(tiny_subnet, trained_run, "cpu-fp32", out, measure=False, overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging directory left behind
    with pytest.raises(SSTEdgeError):
        export_model(tiny_subnet, trained_run, "cpu-fp32", tmp_path / "new", measure=False, progress=False)
    assert not (tmp_path / "new").exists()


def test_bad_inputs_named(trained_run: Path, tiny_subnet: Path, tmp_path: Path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SSTEdgeError, match="not a model sst-edge wrote"):
        export_model(tiny_subnet, trained_run, "cpu-fp32", other, overwrite=True, progress=False)
    assert (other / "notes.txt").read_text() == "mine"

    wrong = tmp_path / "wrong.json"
    doc = json.loads(tiny_subnet.read_text())
    doc["sample"]["s1_l1_heads"] = 99
    wrong.write_text(json.dumps(doc))
    with pytest.raises(SSTEdgeError) as e:
        export_model(wrong, trained_run, "cpu-fp32", tmp_path / "x", progress=False)
    assert "wrong.json" in str(e.value) and "s1_l1_heads" in str(e.value)

    paper = load_space("sst_paper")
    paper_weights = tmp_path / "paper.safetensors"
    save_tensors(paper_weights, {"w": torch.zeros(1)},
                 {"format": SUPERNET_FORMAT, "space": paper.name, "space_hash": paper.hash})
    with pytest.raises(SSTEdgeError, match="sst_paper"):
        export_model(tiny_subnet, paper_weights, "cpu-fp32", tmp_path / "y", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_export(trained_run: Path, tiny_subnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "cli"
    rc = main(["export", "--subnet", str(tiny_subnet), "--weights", str(trained_run), "--target", "cpu-fp32",
               "--out", str(out), "--no-measure", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0 and (out / CARD_FILE).is_file()
    assert "parity" in text and "sha256" in text and "GFLOPs" in text
    rc = main(["export", "--subnet", str(tmp_path / "missing.json"), "--weights", str(trained_run),
               "--out", str(tmp_path / "z")])
    assert rc == 2 and "missing.json" in capsys.readouterr().err


def test_sst_paper_subnet_passes_parity(tmp_path: Path):
    """The paper's model (8x224x224) with freshly initialised supernet weights: the export is exact."""
    config = load_space("sst_paper")
    torch.manual_seed(0)
    supernet = build_supernet(config)
    weights = tmp_path / "supernet.safetensors"
    save_tensors(weights, supernet.state_dict(),
                 {"format": SUPERNET_FORMAT, "space": config.name, "space_hash": config.hash})
    subnet = Path(__file__).parents[1] / "search_spaces" / "sst_paper.paper_cost.json"
    card = export_model(subnet, weights, "cpu-fp32", tmp_path / "paper", measure=False, progress=False)
    assert card.parity["max_abs_diff"] <= 1e-4
    assert card.input["shape"] == ["batch", 8, 3, 224, 224]
    assert card.tensorrt["ok"], card.tensorrt
    assert abs(card.cost["gflops"] - 13.62) < 0.01


def test_int8_and_fp32_are_scored_on_the_same_episodes(exported_model: Path, synth_dataset: Path):
    """README: the accuracy change of int8 is paired, episode by episode. Two copies of one model scored
    together give the same accuracy on every episode, which holds only if both saw the same episodes (the
    accuracies vary from episode to episode, so other episodes would show)."""
    from sst_edge.deploy.quantize import episode_accuracy
    from sst_edge.device.heads import HeadConfig

    model = exported_model / MODEL_FILE
    acc = episode_accuracy({"fp32": model, "int8": model}, load_target("cpu-fp32"), load_space("sst_tiny"),
                           synth_dataset, HeadConfig(), episodes=12)
    assert list(acc) == ["fp32", "int8"] and acc["fp32"].shape == (12,)
    assert len(set(acc["fp32"].tolist())) > 1  # it varies between episodes
    np.testing.assert_array_equal(acc["fp32"], acc["int8"])
    again = episode_accuracy({"x": model}, load_target("cpu-fp32"), load_space("sst_tiny"), synth_dataset,
                             HeadConfig(), episodes=12, seed=1)["x"]
    assert not np.array_equal(again, acc["fp32"])  # other episodes (another seed) do show
