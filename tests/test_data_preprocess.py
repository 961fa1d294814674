"""Segment sampling, resize + crop, flip, normalisation, and the Preprocess record of the model card."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sst_edge.device.decoders import PyAVDecoder, make_decoder
from sst_edge.device.preprocess import Preprocess, load_clip, resized_shape, sample_indices
from sst_edge.errors import SSTEdgeError


def test_eval_sampling_takes_segment_centres():
    assert sample_indices(16, 8, train=False).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert sample_indices(50, 4, train=False).tolist() == [6, 18, 31, 43]
    assert sample_indices(1, 8, train=False).tolist() == [0] * 8


def test_short_clip_repeats_frames_evenly():
    idx = sample_indices(3, 8, train=False)
    assert len(idx) == 8 and list(idx) == sorted(idx)
    assert set(idx.tolist()) == {0, 1, 2}
    assert max(np.bincount(idx)) - min(np.bincount(idx)) <= 1


def test_train_sampling_stays_in_its_segment_and_is_seeded():
    for seed in range(20):
        idx = sample_indices(40, 8, train=True, rng=np.random.default_rng(seed))
        assert all(5 * k <= i < 5 * (k + 1) for k, i in enumerate(idx)), idx
    a = sample_indices(40, 8, train=True, rng=np.random.default_rng(3))
    b = sample_indices(40, 8, train=True, rng=np.random.default_rng(3))
    assert np.array_equal(a, b)
    draws = {tuple(sample_indices(40, 8, train=True, rng=np.random.default_rng(s))) for s in range(10)}
    assert len(draws) > 1


def test_resized_shape_keeps_aspect():
    assert resized_shape(120, 160, 64) == (64, 85)
    assert resized_shape(160, 120, 64) == (85, 64)
    assert resized_shape(64, 64, 64) == (64, 64)


def test_load_clip_eval_is_deterministic_and_normalised(bframe_video):
    pre = Preprocess(frames=8, size=56, resize=64, decoder="pyav")
    x = load_clip(bframe_video, pre)
    assert x.shape == (8, 3, 56, 56) and x.dtype == np.float32
    assert np.array_equal(x, load_clip(bframe_video, pre))
    # by hand: segment centres, decode to 64x85, centre crop, (x/255 - mean) / std
    raw = PyAVDecoder().read(bframe_video, sample_indices(50, 8, train=False), (64, 85))
    crop = raw[:, 4:60, 14:70].astype(np.float32) / 255.0
    want = (crop - np.array(pre.mean, np.float32)) / np.array(pre.std, np.float32)
    assert np.allclose(x.transpose(0, 2, 3, 1), want, atol=1e-5)


def test_load_clip_same_with_both_decoders(bframe_video):
    pre = Preprocess(frames=8, size=56, resize=64)
    a = load_clip(bframe_video, pre, decoder=make_decoder("pyav"))
    b = load_clip(bframe_video, pre, decoder=make_decoder("auto"))
    assert np.array_equal(a, b)


def test_train_crop_and_flip_follow_the_rng(bframe_video):
    pre = Preprocess(frames=4, size=48, resize=64, decoder="pyav")
    flip = Preprocess(frames=4, size=48, resize=64, decoder="pyav", hflip=True)

    def clip(p, seed):
        return load_clip(bframe_video, p, train=True, rng=np.random.default_rng(seed))

    assert np.array_equal(clip(pre, 1), clip(pre, 1))
    assert not np.array_equal(clip(pre, 1), clip(pre, 2))
    flipped = 0
    for seed in range(8):
        a, b = clip(pre, seed), clip(flip, seed)
        if np.array_equal(a, b):
            continue
        assert np.array_equal(b, a[..., ::-1]), "a flip must mirror the same crop"
        flipped += 1
    assert 0 < flipped < 8
    assert np.array_equal(load_clip(bframe_video, flip), load_clip(bframe_video, pre)), "no flip in eval"


def test_preprocess_round_trip_through_json():
    pre = Preprocess(frames=16, size=112, resize=128, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                     decoder="pyav", hflip=True)
    d = json.loads(json.dumps(pre.to_dict()))
    assert Preprocess.from_dict(d) == pre
    partial = Preprocess.from_dict({"frames": 4, "size": 32, "resize": 40})
    assert partial == Preprocess(frames=4, size=32, resize=40)


@pytest.mark.parametrize("bad, message", [
    ({"frames": 8, "colour": "rgb"}, "unknown preprocessing keys: colour"),
    ({"size": 256, "resize": 224}, "resize"),
    ({"frames": 0}, "frames must be >= 1"),
    ({"decoder": "opencv"}, "decoder must be one of"),
    ({"std": [0.2, 0.0, 0.2]}, "std must be > 0"),
    ({"mean": [0.5, 0.5]}, "3 values"),
    ({"frames": "eight"}, "invalid preprocessing"),
])
def test_preprocess_rejects_bad_records(bad, message):
    with pytest.raises(SSTEdgeError, match=message):
        Preprocess.from_dict(bad)
