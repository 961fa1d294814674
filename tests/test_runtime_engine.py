"""The runtime engine: a verified ONNX Runtime session, and evaluation through it equal to PyTorch's."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sst_edge.device.card import MODEL_FILE, load_card
from sst_edge.device.session import choose_providers
from sst_edge.errors import SSTEdgeError
from sst_edge.runtime.engine import FewShotRuntime
from sst_edge.runtime.verbs import eval_model_episodes

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def test_embed_shapes_and_load(exported_model: Path, synth_dataset: Path) -> None:
    rt = FewShotRuntime(exported_model)
    t, c = rt.feature_shape
    clip = rt.load(next(synth_dataset.glob("*/*.mp4")))
    assert clip.shape == rt.clip_shape and clip.dtype == np.float32
    out = rt.embed(np.stack([clip, clip, clip]))
    assert out.shape == (3, t, c) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], out[2], atol=1e-6)  # a batch of 3 and its items agree
    np.testing.assert_allclose(rt.embed(clip[None])[0], out[0], atol=1e-5)
    with pytest.raises(SSTEdgeError, match="add a leading axis"):
        rt.embed(clip)
    with pytest.raises(SSTEdgeError, match="takes clips"):
        rt.embed(np.zeros((1, t + 1, 3, 8, 8), np.float32))
    assert FewShotRuntime(exported_model, decoder="pyav").load(next(synth_dataset.glob("*/*.mp4"))).shape \
        == clip.shape


def test_tampered_model_is_refused(exported_model: Path, tmp_path: Path) -> None:
    model = shutil.copytree(exported_model, tmp_path / "tampered")
    f = model / MODEL_FILE
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    f.write_bytes(bytes(data))
    with pytest.raises(SSTEdgeError, match="does not match the sha256") as e:
        FewShotRuntime(model)
    assert e.value.path == f
    (model / MODEL_FILE).unlink()
    with pytest.raises(SSTEdgeError, match="missing"):
        FewShotRuntime(model)


def test_provider_order_and_restriction(exported_model: Path) -> None:
    assert choose_providers([CPU, CUDA, TRT, "AzureExecutionProvider"]) == [TRT, CUDA, CPU]
    assert choose_providers([CPU, CUDA], [CPU]) == [CPU]
    with pytest.raises(SSTEdgeError, match="not in this onnxruntime"):
        choose_providers([CPU], [CUDA])
    with pytest.raises(SSTEdgeError, match="unknown provider"):
        choose_providers([CPU], ["NoSuchExecutionProvider"])
    rt = FewShotRuntime(exported_model, threads=2, providers=[CPU])
    assert rt.session.get_providers() == [CPU] and rt.threads == 2


def test_ort_evaluation_equals_pytorch(exported_model: Path, trained_run: Path, synth_dataset: Path) -> None:
    """Same subnet, same weights, same seeded episodes: `evaluate` (PyTorch) and `eval_model` (ONNX
    Runtime) agree episode by episode, to at most one query."""
    import sst_edge.train.evaluate as ev

    card = load_card(exported_model)
    kw = {"split": "test", "way": 5, "shot": 1, "query": 2, "episodes": 8, "seed": 3}
    heads = ("alignment", "prototype")
    ours, per_ep = eval_model_episodes(exported_model, synth_dataset, heads=heads, progress=False, **kw)
    theirs = ev.evaluate("sst_tiny", trained_run, synth_dataset, sample=dict(card.subnet), heads=heads,
                         tau=card.head.tau, window=card.head.window, workers=0, threads=1, progress=False,
                         **kw)
    ref = theirs.per_episode
    assert per_ep.shape == ref.shape == (2, 8)
    assert np.abs(per_ep - ref).max() <= 1 / 10 + 1e-9  # at most one query of 10 per episode differs
    for h in heads:
        assert ours.accuracy[h] == pytest.approx(theirs.accuracy[h], abs=1 / 80 + 1e-9)
    assert ours.episodes == theirs.episodes == 8 and ours.sample == theirs.sample == dict(card.subnet)
    assert "ONNX Runtime" in ours.subnet_source and ours.lines()
    print("per-episode |ORT - PyTorch| max", np.abs(per_ep - ref).max(), ours.accuracy, theirs.accuracy)
