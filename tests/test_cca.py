"""The cca head (RENet's cross-correlational attention over frames): torch vs numpy vs a brute-force loop
written from the definition (DESIGN.md, device/cca.py), its training, storage and the device's use of it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sst_edge.device.cca import cca_logits_np, cca_shapes, check_params, load_head_file, save_head_file
from sst_edge.device.heads import head_logits_np
from sst_edge.device.settings import HeadConfig
from sst_edge.errors import SSTEdgeError
from sst_edge.fewshot import head_logits
from sst_edge.fewshot_cca import CCAHead


# ---------------------------------------------------------------------------- a second implementation
def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / max(n, 1e-12) for x in v]


def _conv(grid: list[list[list[float]]], w: np.ndarray, b: np.ndarray) -> list[list[list[float]]]:
    """Cross-correlation with zero padding 1, channel by channel, pixel by pixel."""
    cin, h, wd = len(grid), len(grid[0]), len(grid[0][0])
    out = []
    for o in range(w.shape[0]):
        plane = []
        for i in range(h):
            row = []
            for j in range(wd):
                acc = float(b[o])
                for c in range(cin):
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            if 0 <= i + dy < h and 0 <= j + dx < wd:
                                acc += float(w[o, c, dy + 1, dx + 1]) * grid[c][i + dy][j + dx]
                row.append(acc)
            plane.append(row)
        out.append(plane)
    return out


def _stack(m: list[list[float]], p: dict) -> list[list[float]]:
    h = _conv([m], p["conv1.weight"], p["conv1.bias"])
    h = [[[max(x, 0.0) for x in row] for row in plane] for plane in h]
    return _conv(h, p["conv2.weight"], p["conv2.bias"])[0]


def _softmax_normalised(v: list[float]) -> list[float]:
    mean = sum(v) / len(v)
    var = sum((x - mean) ** 2 for x in v) / len(v)  # population variance
    z = [(x - mean) / math.sqrt(var + 1e-5) / 5.0 for x in v]
    e = [math.exp(x - max(z)) for x in z]
    return [x / sum(e) for x in e]


def brute_cca(query: np.ndarray, support: np.ndarray, p: dict, tau: float) -> np.ndarray:
    """RENet's CCA over frames, one (query, class, shot) at a time, in float64 Python loops."""
    nq, t_q, c = query.shape
    n, k, t_s, _ = support.shape
    w = p["reduce"]

    def reduced(frame: np.ndarray) -> list[float]:
        m = sum(frame) / c
        return _unit([max(0.0, sum(float(w[j, i]) * (frame[i] - m) for i in range(c)))
                      for j in range(w.shape[0])])

    out = np.zeros((nq, n))
    for q in range(nq):
        qr = [reduced(query[q, t]) for t in range(t_q)]
        qn = [_unit(list(query[q, t])) for t in range(t_q)]
        for cls in range(n):
            s_acc, q_acc = [0.0] * c, [0.0] * c
            for shot in range(k):
                sr = [reduced(support[cls, shot, t]) for t in range(t_s)]
                sn = [_unit(list(support[cls, shot, t])) for t in range(t_s)]
                corr = [[sum(a * b for a, b in zip(sr[i], qr[j], strict=True)) for j in range(t_q)]
                        for i in range(t_s)]
                transposed = [[corr[i][j] for i in range(t_s)] for j in range(t_q)]
                back = _stack(transposed, p)
                direct = _stack(corr, p)
                r = [[direct[i][j] + back[j][i] for j in range(t_q)] for i in range(t_s)]
                attn_s = [0.0] * t_s
                for j in range(t_q):  # the support side: over support frames, for each query frame
                    col = _softmax_normalised([r[i][j] for i in range(t_s)])
                    for i in range(t_s):
                        attn_s[i] += col[i]
                attn_q = [0.0] * t_q
                for i in range(t_s):
                    row = _softmax_normalised(r[i])
                    for j in range(t_q):
                        attn_q[j] += row[j]
                for ch in range(c):
                    s_acc[ch] += sum(attn_s[i] * sn[i][ch] for i in range(t_s)) / k
                    q_acc[ch] += sum(attn_q[j] * qn[j][ch] for j in range(t_q)) / k
            out[q, cls] = sum(a * b for a, b in zip(_unit(s_acc), _unit(q_acc), strict=True)) / tau
    return out


def random_params(c: int, seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in cca_shapes(c).items()}


# -------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize(("q", "n", "k", "t", "c"), [(3, 2, 1, 4, 5), (2, 3, 2, 4, 6), (2, 2, 3, 8, 4),
                                                     (1, 2, 1, 8, 70)])
def test_torch_numpy_and_brute_force_agree(q: int, n: int, k: int, t: int, c: int) -> None:
    rng = np.random.default_rng(q * 100 + k * 10 + t)
    query = rng.standard_normal((q, t, c))
    support = rng.standard_normal((n, k, t, c))
    p = random_params(c, seed=t + c)
    want = brute_cca(query, support, p, 0.2)
    got_np = cca_logits_np(query, support, p, 0.2)
    p64 = {kk: torch.from_numpy(v.astype(np.float64)) for kk, v in p.items()}
    from sst_edge.fewshot_cca import cca_logits
    got_t = cca_logits(torch.from_numpy(query), torch.from_numpy(support), p64, 0.2).numpy()
    np.testing.assert_allclose(got_np, want, atol=1e-9, rtol=0)
    np.testing.assert_allclose(got_t, want, atol=1e-9, rtol=0)
    # the float32 paths, as training and the device run them
    head = HeadConfig("cca", 0.2, params=p)
    f32 = head_logits_np(query.astype(np.float32), support.astype(np.float32), head)
    module = CCAHead(c)
    module.load(p)
    t32 = head_logits(torch.from_numpy(query).float(), torch.from_numpy(support).float(), head, module)
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32, t32.detach().numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(f32, want, atol=1e-5, rtol=0)


def test_the_symmetric_term_and_the_weights_matter() -> None:
    """Not a cosine of means: the refinement's weights change the logits (guards a silent identity)."""
    rng = np.random.default_rng(0)
    query, support = rng.standard_normal((2, 4, 6)), rng.standard_normal((3, 1, 4, 6))
    a = cca_logits_np(query, support, random_params(6, 1), 0.2)
    b = cca_logits_np(query, support, random_params(6, 2), 0.2)
    assert np.abs(a - b).max() > 1e-3


def test_head_config_defaults_and_records() -> None:
    assert HeadConfig("cca").tau == 0.2 and HeadConfig("cca").window is None
    assert HeadConfig("cca", window=3) == HeadConfig("cca")  # window is ignored by cca
    assert HeadConfig().to_dict() == {"kind": "alignment", "tau": 0.1, "window": 1}  # records unchanged
    assert hash(HeadConfig()) == hash(HeadConfig("alignment", 0.1, 1))
    with_w = HeadConfig("cca", params=random_params(4, 0))
    assert with_w == HeadConfig("cca") and with_w.to_dict() == {"kind": "cca", "tau": 0.2, "window": None}
    assert HeadConfig.from_dict({"kind": "prototype", "tau": 0.1, "window": 1}).tau == 0.1
    assert HeadConfig("cca").as_kind("alignment") == HeadConfig()
    with pytest.raises(SSTEdgeError, match="no weights"):
        head_logits_np(np.zeros((1, 4, 4), np.float32), np.zeros((1, 1, 4, 4), np.float32), HeadConfig("cca"))


def test_bad_weights_are_refused(tmp_path) -> None:
    p = random_params(5, 0)
    with pytest.raises(SSTEdgeError, match="conv1.weight has shape"):
        check_params({**p, "conv1.weight": np.zeros((3, 1, 3, 3), np.float32)}, 5)
    f = save_head_file(tmp_path / "head.safetensors", p)
    assert set(load_head_file(f, 5)) == set(p)
    with pytest.raises(SSTEdgeError, match="reduce has shape"):
        load_head_file(f, 7)
    f.write_bytes(b"garbage")
    with pytest.raises(SSTEdgeError, match="head.safetensors"):
        load_head_file(f, 5)
    with pytest.raises(SSTEdgeError, match="missing"):
        load_head_file(tmp_path / "nope.safetensors", 5)


# ------------------------------------------------------------------ training, storage and the device
@pytest.fixture(scope="module")
def cca_run(synth_dataset, tmp_path_factory: pytest.TempPathFactory):
    """A tiny supernet trained through the cca head (2 epochs of 40 episodes, ~15 s on 2 cores)."""
    from sst_edge.train.config import ShrinkConfig, TrainConfig
    from sst_edge.train.loop import train_supernet

    out = tmp_path_factory.mktemp("ccarun") / "tiny"
    cfg = TrainConfig(space="sst_tiny", data=str(synth_dataset), episodes=40, epochs=2, val_episodes=6,
                      lr_warmup=20, workers=0, threads=1, head=HeadConfig("cca"),
                      shrink=ShrinkConfig(warmup=1, period=1, min_count=3))
    train_supernet(cfg, out, progress=False)
    return out, cfg


@pytest.fixture(scope="module")
def cca_model(cca_run, tmp_path_factory: pytest.TempPathFactory):
    from sst_edge.cost.flops import extreme_sample
    from sst_edge.deploy.export import export_model
    from sst_edge.space.config import load_space
    from sst_edge.space.subnet import make_subnet
    from sst_edge.train.artifacts import run_restriction

    run, _ = cca_run
    config = load_space("sst_tiny")
    sample = extreme_sample(config, run_restriction(run, config), largest=True)
    subnet = make_subnet(config, sample).save(tmp_path_factory.mktemp("ccasubnet") / "best.json")
    out = tmp_path_factory.mktemp("ccamodels") / "tiny"
    export_model(subnet, run, "cpu-fp32", out, measure=False, progress=False)
    return out


def _head_tensors(path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k[len("fewshot."):]: v for k, v in load_file(str(path)).items() if k.startswith("fewshot.")}


def test_the_head_trains_and_is_saved_with_the_run(cca_run) -> None:
    import json

    from sst_edge.train.artifacts import choose_head, head_params
    from sst_edge.train.checkpoint import checkpoint_paths

    run, _ = cca_run
    final = _head_tensors(run / "supernet.safetensors")
    first = _head_tensors(checkpoint_paths(run, 1)[0])
    last = _head_tensors(checkpoint_paths(run, 2)[0])
    assert set(final) == set(first) == {"reduce", "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"}
    assert all(np.array_equal(final[k], last[k]) for k in final)  # the final file is the last checkpoint's
    assert max(np.abs(final[k] - first[k]).max() for k in final) > 1e-4  # it trained between epochs
    rec = json.loads((run / "run.json").read_text())
    assert rec["config"]["head"] == {"kind": "cca", "tau": 0.2, "window": None}
    assert rec["head_weights"]["prefix"] == "fewshot." and rec["head_weights"]["shapes"]["reduce"] == [64, 64]
    head = choose_head(run).head
    assert head.kind == "cca" and all(np.array_equal(head.params[k], final[k]) for k in final)
    assert all(np.array_equal(head_params(checkpoint_paths(run, 1)[0])[k], first[k]) for k in first)


def test_resume_keeps_the_head(cca_run, tmp_path) -> None:
    import shutil
    from dataclasses import replace

    from sst_edge.train.checkpoint import checkpoint_paths, load_checkpoint
    from sst_edge.train.distributed import init_distributed
    from sst_edge.train.loop import _Trainer

    run, cfg = cca_run
    out = tmp_path / "copy"
    shutil.copytree(run, out)
    doc, tensors = load_checkpoint(out)
    trainer = _Trainer(replace(cfg, epochs=3), out, init_distributed("cpu"), None, None, False)
    trainer.start((doc, tensors))
    saved = _head_tensors(checkpoint_paths(out, 2)[0])
    assert all(np.array_equal(trainer.fewshot.arrays()[k], saved[k]) for k in saved)
    assert len(trainer.optimizer.param_groups) == 4  # the supernet's two, the head's two
    # a checkpoint without the head's tensors is refused, naming the file
    from sst_edge.train.checkpoint import save_tensors

    weights = checkpoint_paths(out, 2)[0]
    bare = {k: v for k, v in tensors.items() if not k.startswith("fewshot.")}
    save_tensors(weights, bare, {})
    fresh = _Trainer(replace(cfg, epochs=3), out, init_distributed("cpu"), None, None, False)
    with pytest.raises(SSTEdgeError, match="no cca head weights") as e:
        fresh.load_position(doc, bare)
    assert str(weights) in str(e.value)


def test_weights_without_a_cca_head_are_a_named_error(cca_run, tmp_path) -> None:
    import json
    import shutil

    from sst_edge.train.artifacts import choose_head
    from sst_edge.train.checkpoint import load_tensors, save_tensors

    run, _ = cca_run
    bare = tmp_path / "bare"
    bare.mkdir()
    tensors, meta = load_tensors(run / "supernet.safetensors")
    save_tensors(bare / "supernet.safetensors", {k: v for k, v in tensors.items()
                                                 if not k.startswith("fewshot.")}, meta)
    shutil.copy(run / "run.json", bare / "run.json")
    with pytest.raises(SSTEdgeError, match="no cca head weights") as e:
        choose_head(bare, warn=False)
    assert str(bare / "supernet.safetensors") in str(e.value)
    rec = json.loads((bare / "run.json").read_text())
    rec["config"]["head"] = {"kind": "alignment", "tau": 0.1, "window": 1}
    (bare / "run.json").write_text(json.dumps(rec))
    assert choose_head(bare, warn=False).head.kind == "alignment"  # the other heads need no weights
    with pytest.raises(SSTEdgeError, match="train --head cca"):
        choose_head(bare, ["cca"], warn=False)


def test_export_ships_the_head_and_the_device_runs_it(cca_run, cca_model, synth_dataset, tmp_path,
                                                      capsys: pytest.CaptureFixture) -> None:
    import json

    from sst_edge.cli import main
    from sst_edge.device.card import load_card
    from sst_edge.device.datasets import load_splits
    from sst_edge.fileio import sha256_file

    run, _ = cca_run
    card = load_card(cca_model)
    assert card.head.to_dict() == {"kind": "cca", "tau": 0.2, "window": None}
    rec = card.head_weights
    assert rec["file"] == "head.safetensors" and rec["sha256"] == sha256_file(cca_model / "head.safetensors")
    assert card.files["head.safetensors"]["sha256"] == rec["sha256"]
    assert rec["shapes"]["conv2.weight"] == [1, 16, 3, 3]
    assert rec["constants"]["temperature_attn"] == 5.0 and rec["constants"]["variance"] == "population"
    shipped = load_head_file(cca_model / "head.safetensors")
    trained = _head_tensors(run / "supernet.safetensors")
    assert all(np.array_equal(shipped[k], trained[k]) for k in trained)

    test = load_splits(synth_dataset).test
    labels = test.classes[:3]
    gallery = tmp_path / "gallery"
    for label in labels:
        assert main(["enroll", "--model", str(cca_model), "--gallery", str(gallery), "--label", label,
                     *[str(p) for p in test.clips[label][:4]], "--no-progress"]) == 0
    index = json.loads((gallery / "gallery.json").read_text())
    assert set(index["calibration"]) == {"alignment", "prototype", "cca"}
    assert index["calibration"]["cca"]["loo_accuracy"] is not None
    queries = [(lb, str(p)) for lb in labels for p in test.clips[lb][4:]]
    capsys.readouterr()
    assert main(["classify", "--model", str(cca_model), "--gallery", str(gallery), "--head", "cca",
                 "--threshold", "0", "--json", "--no-progress", *[q for _, q in queries]]) == 0
    out = json.loads(capsys.readouterr().out)
    hits = [r["label"] == lb for (lb, _), r in zip(queries, out["results"], strict=True)]
    assert np.mean(hits) > 1 / 3 + 0.1, np.mean(hits)  # 3-way: chance is 1/3
    # without --head, classify uses the model's own head: the same answers as --head cca
    assert main(["classify", "--model", str(cca_model), "--gallery", str(gallery),
                 "--threshold", "0", "--json", "--no-progress", *[q for _, q in queries]]) == 0
    default = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in default["results"]] == [r["label"] for r in out["results"]]
    assert [r["confidence"] for r in default["results"]] == [r["confidence"] for r in out["results"]]
    # the gallery's calibration of the cca head is the one a fresh calibration computes
    from sst_edge.runtime.calibration import calibrate, calibration_key, group_ids
    from sst_edge.runtime.gallery import Gallery

    g = Gallery.open(gallery, card)
    head = g.head_config("cca")
    supports = g.supports(labels)
    key = calibration_key(group_ids(g.labels, labels), head)
    fresh = calibrate([supports[lb] for lb in labels], head, key)
    assert fresh["score_threshold"] == index["calibration"]["cca"]["score_threshold"]
    assert fresh["score_threshold"] < 1 / 0.2  # below a perfect match's logit (cosine 1 / tau)

    capsys.readouterr()
    assert main(["eval", "--model", str(cca_model), "--data", str(synth_dataset), "--episodes", "6",
                 "--no-progress", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert "cca" in r["accuracy"] and r["heads"]["cca"]["kind"] == "cca"


def test_a_tampered_or_missing_head_file_is_refused(cca_model, synth_dataset, tmp_path,
                                                    capsys: pytest.CaptureFixture) -> None:
    import json
    import shutil

    from sst_edge.cli import main
    from sst_edge.device.datasets import load_splits

    clip = str(load_splits(synth_dataset).test.clips[load_splits(synth_dataset).test.classes[0]][0])
    tampered = tmp_path / "tampered"
    shutil.copytree(cca_model, tampered)
    data = bytearray((tampered / "head.safetensors").read_bytes())
    data[-1] ^= 1
    (tampered / "head.safetensors").write_bytes(bytes(data))
    assert main(["enroll", "--model", str(tampered), "--gallery", str(tmp_path / "g1"), "--label", "a",
                 clip, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "head.safetensors" in err and "sha256" in err
    # a model without cca weights: asking for the cca head names the card
    plain = tmp_path / "plain"
    shutil.copytree(cca_model, plain)
    doc = json.loads((plain / "card.json").read_text())
    doc.pop("head_weights")
    doc["head"] = {"kind": "alignment", "tau": 0.1, "window": 1}
    (plain / "card.json").write_text(json.dumps(doc))
    assert main(["enroll", "--model", str(plain), "--gallery", str(tmp_path / "g2"), "--label", "a",
                 clip, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["classify", "--model", str(plain), "--gallery", str(tmp_path / "g2"), "--head", "cca", clip,
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "ships no cca head weights" in err and "card.json" in err
