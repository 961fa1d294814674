"""Streaming: a sliding window over a long video made of clips of different actions, one after another."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from sst_edge.data.encode import write_video
from sst_edge.device.datasets import load_splits
from sst_edge.device.decoders import make_decoder
from sst_edge.errors import SSTEdgeError
from sst_edge.runtime import verbs
from sst_edge.runtime.classify import Classifier
from sst_edge.runtime.engine import FewShotRuntime
from sst_edge.runtime.gallery import Gallery
from sst_edge.runtime.stream import span_starts, stream_video


def test_window_starts() -> None:
    assert span_starts(48, 16, 8) == [0, 8, 16, 24, 32]
    assert span_starts(50, 16, 8) == [0, 8, 16, 24, 32, 34]  # the tail gets a window of its own
    assert span_starts(10, 16, 8) == [0]
    with pytest.raises(SSTEdgeError):
        span_starts(10, 0, 1)


@pytest.fixture(scope="module")
def scene(exported_model: Path, synth_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """A gallery of the test classes (5 clips each) and a video of three held-out clips of three classes,
    back to back: per class, the held-out clip the model recognises most surely on its own."""
    rt = FewShotRuntime(exported_model)
    tmp = tmp_path_factory.mktemp("stream")
    test = load_splits(synth_dataset)["test"]
    for c in test.classes:
        verbs.enroll(rt, tmp / "g", c, test.clips[c][:5], progress=False)
    cls = Classifier.from_gallery(Gallery.open(tmp / "g", rt.card), threshold=0.0)
    best = []
    for c in test.classes:
        preds = cls.predict(rt.embed_paths(test.clips[c][5:]))
        scored = [(p.ranking[0][2], path) for p, path in zip(preds, test.clips[c][5:], strict=True)
                  if p.ranking[0][0] == c]
        if scored:
            best.append((max(scored)[0], c, max(scored)[1]))
    best.sort(reverse=True)
    assert len(best) >= 3, "the test model recognises fewer than 3 classes"
    chosen = [(c, p) for _, c, p in best[:3]]
    dec = make_decoder("pyav")
    frames = [dec.read(p, range(dec.info(p).num_frames)) for _, p in chosen]
    video = write_video(tmp / "long.mp4", np.concatenate(frames), fps=12, crf=18)
    return rt, cls, video, [c for c, _ in chosen], [len(f) for f in frames], tmp / "g"


def test_stream_follows_the_action(scene) -> None:
    rt, cls, video, classes, lengths, _ = scene
    assert lengths == [16, 16, 16]
    spans = list(stream_video(rt, cls, video, span=16, stride=8, unit="frames"))
    assert [(w.start_frame, w.end_frame) for w in spans] == [(0, 16), (8, 24), (16, 32), (24, 40), (32, 48)]
    for w in spans:
        assert w.start_s == pytest.approx(w.start_frame / 12, abs=1e-3)
        assert w.end_s == pytest.approx(w.end_frame / 12, abs=1e-3)
        assert 0 < w.confidence <= 1 and w.label == w.raw_label  # no smoothing, threshold 0
    print([(w.start_s, w.label, round(w.confidence, 2)) for w in spans], classes)
    assert [spans[i].label for i in (0, 2, 4)] == classes  # the windows that cover one clip each
    # seconds: 16 frames at 12 fps = 4/3 s; smoothing averages the last 3 windows' probabilities
    smooth = list(stream_video(rt, cls, video, span=4 / 3, stride=2 / 3, smooth=3))
    assert [w.start_frame for w in smooth] == [0, 8, 16, 24, 32]
    assert smooth[0].label == spans[0].label
    assert smooth[0].confidence == pytest.approx(spans[0].confidence)
    for a, b in zip(smooth, spans, strict=True):  # smoothing leaves each window's own answer as it was
        assert (a.raw_label, a.start_s) == (b.raw_label, b.start_s)
        assert a.raw_confidence == pytest.approx(b.raw_confidence, abs=1e-5)


def test_stream_stops_its_decoder_thread(scene, tmp_path: Path) -> None:
    rt, cls, video, *_ = scene
    before = threading.active_count()
    gen = stream_video(rt, cls, video, span=8, stride=1, unit="frames", prefetch=1)
    next(gen)
    gen.close()  # the consumer stops early: the decoding thread must not linger
    assert threading.active_count() == before
    with pytest.raises(SSTEdgeError, match="unit"):
        next(stream_video(rt, cls, video, unit="minutes"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(SSTEdgeError) as e:
        next(stream_video(rt, cls, bad))
    assert e.value.path == bad


def test_stream_verb(scene) -> None:
    rt, _, video, classes, _, gallery = scene
    report = verbs.stream(rt, gallery, video, span=16, stride=16, unit="frames", threshold=0.0)
    assert [w.label for w in report.spans] == classes
    assert report.to_dict()["spans"][1]["start_frame"] == 16 and len(report.lines()) == 3


def test_smoothing_is_the_mean_of_the_last_k_probability_vectors(scene) -> None:
    """Brute force: every window's clip decoded and classified on its own, then, for window i, the mean
    of the probability vectors of windows max(0, i - k + 1)..i, by hand: its argmax and its maximum."""
    from sst_edge.device.preprocess import frames_to_array, resized_shape, sample_indices

    rt, cls, video, *_ = scene
    dec = make_decoder("pyav")
    info = dec.info(video)
    pre = rt.card.preprocess
    size = resized_shape(info.height, info.width, pre.resize)
    spans = [(0, 16), (8, 24), (16, 32), (24, 40), (32, 48)]
    probs = []
    for s, e in spans:
        clip = frames_to_array(dec.read(video, s + sample_indices(e - s, pre.frames, train=False), size), pre)
        probs.append(cls.probabilities(cls.logits(rt.embed(clip[None])))[0].astype(np.float64))
    for k in (1, 2, 3, 5):
        windows = list(stream_video(rt, cls, video, span=16, stride=8, unit="frames", smooth=k))
        assert [(w.start_frame, w.end_frame) for w in windows] == spans
        for i, w in enumerate(windows):
            last = probs[max(0, i - k + 1):i + 1]
            mean = [sum(p[c] for p in last) / len(last) for c in range(len(cls.labels))]
            top = max(range(len(mean)), key=mean.__getitem__)
            assert w.label == cls.labels[top] and w.confidence == pytest.approx(mean[top], abs=1e-5)
            own = max(range(len(mean)), key=probs[i].__getitem__)
            assert w.raw_label == cls.labels[own]
            assert w.raw_confidence == pytest.approx(probs[i][own], abs=1e-5)
    # the check can tell smoothing from none: somewhere the 3-window mean is not the window's own answer
    smooth = list(stream_video(rt, cls, video, span=16, stride=8, unit="frames", smooth=3))
    assert any(abs(w.confidence - w.raw_confidence) > 1e-3 for w in smooth)
    with pytest.raises(SSTEdgeError, match="smooth and prefetch must be >= 1"):
        next(stream_video(rt, cls, video, smooth=0))
