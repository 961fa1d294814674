"""The live tests' servers themselves (tests/live_servers.py): what a reader gets is the clips, in real time.

The reference is the clip files decoded by PyAV from disk; the streams are read from the real servers
(GStreamer's RTSP server, the MPEG-TS muxer over TCP and UDP, mosquitto) on 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import moving_frames
from live_servers import MpegTsServer, clip_sequence, decode_file, read_stream

from sst_edge.data.encode import write_video

FPS = 12


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two H.264 clips of 18 and 12 frames (2.5 s at 12 fps), every frame different."""
    d = tmp_path_factory.mktemp("clips")
    return [write_video(d / "a.mp4", moving_frames(18, 96, 128, seed=1), fps=FPS),
            write_video(d / "b.mp4", moving_frames(12, 96, 128, seed=2), fps=FPS)]


@pytest.fixture(scope="module")
def reference(clips: list[Path]) -> np.ndarray:
    return np.concatenate([decode_file(c) for c in clips])


def check_stream(frames: np.ndarray, arrivals: list[float], reference: np.ndarray, fps: float) -> None:
    """All frames, equal to the files' (remuxed, not re-encoded), arriving at the clips' rate, not faster."""
    assert frames.shape == reference.shape
    assert np.abs(frames.astype(int) - reference).max() <= 2
    duration = (len(reference) - 1) / fps
    assert 0.8 * duration <= arrivals[-1] <= duration + 6.0  # paced; the reader's probing buffers the start


def test_clip_sequence_is_the_clips(clips: list[Path], reference: np.ndarray, tmp_path: Path) -> None:
    seq = clip_sequence(clips, tmp_path / "seq.mp4", loops=2)
    assert (seq.frames, seq.fps, seq.size) == (60, FPS, (96, 128))
    assert np.array_equal(decode_file(seq.path), np.concatenate([reference, reference]))
    other = write_video(tmp_path / "small.mp4", moving_frames(4, 64, 64), fps=FPS)
    with pytest.raises(ValueError, match="encoded unlike"):
        clip_sequence([clips[0], other], tmp_path / "bad.mp4")


def test_rtsp_serves_the_clips_in_real_time(live_servers, clips: list[Path], reference: np.ndarray) -> None:
    t0 = time.monotonic()
    rtsp = live_servers.rtsp(clips)
    assert time.monotonic() - t0 < 10
    assert rtsp.url == f"rtsp://127.0.0.1:{rtsp.port}/live"
    frames, arrivals = read_stream(rtsp.url, timeout=20)
    check_stream(frames, arrivals, reference, FPS)


def test_rtsp_killed_mid_stream_and_restarted(live_servers, clips: list[Path], reference: np.ndarray) -> None:
    rtsp = live_servers.rtsp(clips, loops=3)  # 90 frames, 7.5 s
    port = rtsp.port
    assert rtsp.frames == 3 * len(reference)
    killer = threading.Timer(3.0, rtsp.kill)
    killer.start()
    t0 = time.monotonic()
    try:
        frames, _ = read_stream(rtsp.url, timeout=15)
    except Exception:  # noqa: BLE001 - FFmpeg reports a dead server as an error or as the end
        frames = np.zeros((0,))
    killer.join()
    assert len(frames) < rtsp.frames and time.monotonic() - t0 < 10
    assert not rtsp.running
    rtsp.restart()
    assert rtsp.port == port and rtsp.running
    frames, _ = read_stream(rtsp.url, timeout=10, max_frames=5)  # from the first frame again
    assert np.abs(frames.astype(int) - reference[:5]).max() <= 2


def test_mpegts_over_tcp(live_servers, clips: list[Path], reference: np.ndarray) -> None:
    ts = live_servers.mpegts(clips, transport="tcp")
    assert ts.url == f"tcp://127.0.0.1:{ts.port}"
    frames, arrivals = read_stream(ts.url, timeout=20)
    check_stream(frames, arrivals, reference, FPS)
    frames, _ = read_stream(ts.url, timeout=20)  # a reader that comes again is served again
    assert frames.shape == reference.shape


def test_mpegts_over_udp_at_another_rate(live_servers, clips: list[Path], reference: np.ndarray) -> None:
    """UDP has no end and no connection: the reader listens first, and misses at most the last frames."""
    ts: MpegTsServer = live_servers.mpegts(clips, transport="udp", fps=24, loops=2, start=False)
    reference = np.concatenate([reference, reference])
    got: dict = {}

    def read() -> None:
        got["frames"], got["arrivals"] = read_stream(ts.url + "?timeout=1500000", timeout=20,
                                                     options={"analyzeduration": "0", "probesize": "32768"})

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.5)  # the reader binds the port
    ts.start()
    reader.join(25)
    frames, arrivals = got["frames"], got["arrivals"]
    assert len(reference) - 3 <= len(frames) <= len(reference)
    assert np.abs(frames.astype(int) - reference[:len(frames)]).max() <= 2
    # The first frames come in a burst (the reader waits for a keyframe) and a read timeout flushes the
    # last ones; between, frames come at 24 fps (0.042 s apart), not at the file's 12 (0.083 s)
    steady = np.median(np.diff(arrivals[len(arrivals) // 2:-3]))
    assert 0.6 / 24 < steady < 1.4 / 24


def test_mosquitto_delivers_and_restarts(live_servers) -> None:
    broker = live_servers.mosquitto()
    assert broker.url("a/b") == f"mqtt://127.0.0.1:{broker.port}/a/b"
    sub = live_servers.subscriber(broker, "a/b", qos=1)
    import paho.mqtt.client as mqtt

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    pub.publish("a/b", b"hello", qos=1).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    assert [(m.payload, m.qos) for m in sub.wait_for(1, timeout=5)] == [(b"hello", 1)]
    broker.kill()
    assert not broker.running
    broker.restart()
    sub.wait_subscribed(10, times=2)  # reconnected and subscribed again
