"""decord and PyAV decoders: same frames for the same indices, at native and at reduced size."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from sst_edge.device.decoders import (
    DecordDecoder,
    PyAVDecoder,
    decord_available,
    get_decoder,
    make_decoder,
)
from sst_edge.device.probe import probe_video
from sst_edge.errors import SSTEdgeError

needs_decord = pytest.mark.skipif(not decord_available(), reason="decord is not installed (aarch64)")


def reference_frames(path) -> np.ndarray:
    """Every frame by a plain sequential PyAV decode: the ground truth, independent of our code."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_file_really_has_bframes_and_several_gops(bframe_video):
    with av.open(str(bframe_video)) as c:
        packets = [p for p in c.demux(video=0) if p.size]
    pts = [p.pts for p in packets]
    assert pts != sorted(pts), "decode order must differ from presentation order (B-frames)"
    assert sum(p.is_keyframe for p in packets) >= 5
    info = probe_video(bframe_video)
    assert (info.num_frames, info.height, info.width) == (50, 120, 160)


def test_pyav_matches_sequential_decode(bframe_video):
    ref = reference_frames(bframe_video)
    dec = PyAVDecoder()
    assert np.array_equal(dec.read(bframe_video, range(50)), ref)
    # scattered, unsorted, repeated, across and at GOP boundaries: the seeking path
    for idx in ([3, 17, 30, 49], [49, 0, 0, 25, 7], [7, 8, 9], [15, 16, 40], [48, 2]):
        assert np.array_equal(dec.read(bframe_video, idx), ref[idx]), idx


@needs_decord
def test_decoders_identical_at_native_size(bframe_video):
    ref = reference_frames(bframe_video)
    a = PyAVDecoder().read(bframe_video, range(50))
    b = DecordDecoder().read(bframe_video, range(50))
    assert a.shape == b.shape == (50, 120, 160, 3)
    assert np.array_equal(a, b)
    assert np.array_equal(b, ref)


@needs_decord
@pytest.mark.parametrize("size", [(64, 85), (90, 120), (240, 320)])
def test_decoders_identical_at_reduced_and_enlarged_size(bframe_video, size):
    pyav, decord = PyAVDecoder(), DecordDecoder()
    for idx in ([1, 7, 13, 19, 25, 31, 37, 43], [44, 3, 3, 20]):
        a = pyav.read(bframe_video, idx, size)
        b = decord.read(bframe_video, idx, size)
        assert a.shape == (len(idx), *size, 3)
        assert np.array_equal(a, b), (size, idx)


def test_reduced_size_is_a_resize_of_the_native_frames(bframe_video):
    """Decoding straight to 60x80 gives the native frames shrunk (not other frames, not a crop)."""
    idx = [5, 20, 35]
    small = PyAVDecoder().read(bframe_video, idx, (60, 80)).astype(float)
    ref = reference_frames(bframe_video).astype(float)
    pooled = ref[idx].reshape(3, 60, 2, 80, 2, 3).mean(axis=(2, 4))
    assert np.abs(small - pooled).mean() < 6
    wrong = ref[[6, 21, 36]].reshape(3, 60, 2, 80, 2, 3).mean(axis=(2, 4))
    assert np.abs(small - wrong).mean() > np.abs(small - pooled).mean() + 5


@pytest.mark.parametrize("name", ["pyav", pytest.param("decord", marks=needs_decord)])
def test_rotated_clip_is_decoded_upright(make_video, name):
    path = make_video("rot.mp4", n=6, h=48, w=64, rotation=90)
    raw = reference_frames(path)  # as stored: 48x64
    info = probe_video(path)
    assert (info.rotation, info.height, info.width) == (90, 64, 48)
    got = make_decoder(name).read(path, [0, 5])
    assert got.shape == (2, 64, 48, 3)
    assert np.array_equal(got, np.rot90(raw[[0, 5]], k=1, axes=(1, 2)))


def test_decoder_by_name():
    assert isinstance(make_decoder("pyav"), PyAVDecoder)
    assert isinstance(make_decoder("auto"), PyAVDecoder)  # maintained, and as fast (resolve_decoder_name)
    if decord_available():
        assert isinstance(make_decoder("decord"), DecordDecoder)
    with pytest.raises(SSTEdgeError, match="unknown video decoder 'opencv'"):
        make_decoder("opencv")


def test_get_decoder_is_per_thread():
    mine = get_decoder("pyav")
    assert get_decoder("pyav") is mine
    other = []
    t = threading.Thread(target=lambda: other.append(get_decoder("pyav")))
    t.start()
    t.join()
    assert other[0] is not mine


def test_out_of_range_index_is_an_error(bframe_video):
    with pytest.raises(ValueError, match="out of range"):
        PyAVDecoder().read(bframe_video, [0, 50])
