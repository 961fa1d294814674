"""sst_edge/device/avcompat.py: the PyAV 12-14.0 paths, checked here against today's PyAV (FFmpeg's own
`av_display_rotation_get` behind `VideoFrame.rotation`, and `streams.best`). `make device-check-lowest`
runs them at PyAV 12 itself."""

from __future__ import annotations

from types import SimpleNamespace

import av
import pytest
from conftest import moving_frames

from sst_edge.data.encode import write_video
from sst_edge.device.avcompat import best_video_stream, display_matrix_rotation, frame_rotation
from sst_edge.device.probe import probe_video


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_display_matrix_rotation_is_ffmpegs(tmp_path, rotation):
    path = write_video(tmp_path / f"r{rotation}.mp4", moving_frames(3, 32, 48), rotation=rotation)
    with av.open(str(path)) as container:
        frame = next(container.decode(container.streams.video[0]))
        ours = display_matrix_rotation(frame)
        assert ours == pytest.approx(float(frame.rotation), abs=1e-9)  # FFmpeg's C, through PyAV >= 14.1
        assert round(ours) % 360 == rotation  # the flag write_video set (counter-clockwise degrees)
        # a frame of PyAV < 14.1 has no `rotation`: the fallback reads the same (real) side data
        assert frame_rotation(SimpleNamespace(side_data=frame.side_data)) == pytest.approx(ours)
    info = probe_video(path)
    assert (info.rotation, info.width, info.height) == \
        ((rotation, 32, 48) if rotation in (90, 270) else (rotation, 48, 32))


def test_best_video_stream_old_and_new(tmp_path):
    path = write_video(tmp_path / "c.mp4", moving_frames(2, 32, 48))
    with av.open(str(path)) as container:
        assert best_video_stream(container) is not None
        assert best_video_stream(container).index == container.streams.best("video").index
        # PyAV 12's StreamContainer has no `best`: the first video stream
        old = SimpleNamespace(streams=SimpleNamespace(video=container.streams.video))
        assert best_video_stream(old).index == container.streams.video[0].index
    assert best_video_stream(SimpleNamespace(streams=SimpleNamespace(video=()))) is None
