"""`sst-edge watch` on files (as fast as possible and at their own rate): the spans and events of the
recorded file (classify --stream's code path and an EventBuilder over its spans, the second route),
signals, the events file, a gallery changed mid-watch, sources that fail, and overload."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from live_scene import FPS, SPAN, STRIDE, recorded

from sst_edge.errors import SSTEdgeError
from sst_edge.runtime import verbs
from sst_edge.runtime.engine import FewShotRuntime
from sst_edge.runtime.live.events import EVENT_SCHEMA
from sst_edge.runtime.live.sinks import FileSink, StdoutSink, read_events
from sst_edge.runtime.live.sources import parse_source
from sst_edge.runtime.live.watch import EXIT_SOURCE, Watch, WatchSettings
from sst_edge.schema import problems


def watched(rt: FewShotRuntime, gallery: Path, videos: list[Path], **kw) -> tuple[dict, list, object]:
    got: dict[str, list] = {}
    out = io.StringIO()
    settings = WatchSettings(span=SPAN, stride=STRIDE, **kw)
    w = Watch(rt, gallery, [parse_source(str(v)) for v in videos], [StdoutSink(out)], settings,
              err=io.StringIO(), on_span=lambda name, s: got.setdefault(name, []).append(s))
    report = w.run()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    return got, events, report


def _key(e: dict) -> tuple:
    return (e["kind"], e["label"], e["start_s"], e["end_s"], e["spans"], e.get("reason"))


def test_watch_gives_the_recorded_files_spans_and_events(live_scene) -> None:
    rt, gallery, video, _, classes = live_scene
    spans, events = recorded(rt, gallery, video)
    assert len(spans) == 11 and {s.label for s in spans} & set(classes[:3])
    got, live_events, report = watched(rt, gallery, [video])
    live = got[str(video)]
    assert [(s.start_frame, s.end_frame, s.label, s.top) for s in live] == \
        [(s.start_frame, s.end_frame, s.label, s.top) for s in spans]
    assert np.allclose([s.confidence for s in live], [s.confidence for s in spans], atol=1e-5)
    assert [(s.start_s, s.end_s) for s in live] == [(s.start_s, s.end_s) for s in spans]
    assert [_key(e) for e in live_events] == [_key(e) for e in events] and events
    assert all(problems(e, EVENT_SCHEMA) == [] for e in live_events)
    assert report.exit_code == 0 and report.sources[str(video)]["skipped"] == 0


def test_watch_at_the_files_own_rate(live_scene, tmp_path: Path) -> None:
    """Two sources (the same file twice) at 12 fps: real time, the same spans as the recorded file."""
    rt, gallery, video, _, _ = live_scene
    spans, events = recorded(rt, gallery, video)
    copy = shutil.copy(video, tmp_path / "again.mp4")
    t0 = time.monotonic()
    got, live_events, report = watched(rt, gallery, [video, Path(copy)], realtime=True)
    took = time.monotonic() - t0
    assert took >= 48 / FPS * 0.9, "played faster than its frame rate"
    for name in (str(video), str(copy)):
        assert [(s.start_frame, s.label) for s in got[name]] == [(s.start_frame, s.label) for s in spans]
        assert report.sources[name]["skipped"] == 0
        assert [_key(e) for e in live_events if e["source"] == name] == [_key(e) for e in events]
    assert report.event_latency["p99"] < 1.0


def test_a_span_that_waits_is_replaced_and_counted(live_scene) -> None:
    """A live source whose spans come faster than they are taken skips, and says so: every span it cut
    is either scored or counted skipped."""
    rt, gallery, video, _, _ = live_scene
    from sst_edge.runtime.live.sources import LiveSource

    src = LiveSource(parse_source(str(video)), rt.card.preprocess, SPAN, 1 / FPS, realtime=True)
    src.realtime = True
    src.start()
    taken = []
    while not src.done:
        time.sleep(0.5)  # a slow consumer: ~6 spans cut per take
        s = src.take()
        if s is not None:
            taken.append(s)
    src.join(5)
    assert src.stats.spans == len(taken) + src.stats.skipped
    assert src.stats.skipped > len(taken)
    assert all(a.start_s < b.start_s for a, b in zip(taken, taken[1:], strict=False))


def test_max_fps_keeps_fewer_frames(live_scene) -> None:
    """--max-fps 6 on a 12 fps video: every other frame kept (hand count: 96 frames -> 48), the spans on
    the same grid, each sampled from the frames it kept."""
    rt, gallery, video, _, _ = live_scene
    spans, _ = recorded(rt, gallery, video)
    got, _, report = watched(rt, gallery, [video], max_fps=6.0)
    s = report.sources[str(video)]
    assert (s["frames"], s["kept"]) == (96, 48)
    assert [(x.start_frame, x.end_frame) for x in got[str(video)]] == \
        [(x.start_frame, x.end_frame) for x in spans]


def test_sigterm_closes_the_open_events(live_scene, tmp_path: Path) -> None:
    rt, gallery, video, _, _ = live_scene
    events_file = tmp_path / "events.jsonl"
    cmd = [sys.executable, "-m", "sst_edge.cli", "watch", "--model", str(rt.model_dir), "--gallery",
           str(gallery), "--source", str(video), "--realtime", "--span", str(SPAN), "--stride", str(STRIDE),
           "--events", str(events_file), "--no-stdout", "--summary", str(tmp_path / "summary.json")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (events_file.exists() and read_events(events_file)):
            time.sleep(0.1)
        assert read_events(events_file), "no event within 60 s"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    events = read_events(events_file)
    starts = {e["id"] for e in events if e["kind"] == "start"}
    ends = {e["id"]: e for e in events if e["kind"] == "end"}
    assert starts == set(ends), "an event was left open"
    assert events[-1]["kind"] == "end"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["seconds"] < 48 / FPS


def test_a_gallery_enrolled_mid_watch_is_used(live_scene, tmp_path: Path) -> None:
    rt, gallery, video, later_clips, classes = live_scene
    g = Path(shutil.copytree(gallery, tmp_path / "g"))
    got: list = []
    w = Watch(rt, g, [parse_source(str(video))], [], WatchSettings(span=SPAN, stride=STRIDE, realtime=True),
              err=io.StringIO(), on_span=lambda name, s: got.append(s))
    t = threading.Thread(target=w.run)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        verbs.enroll(rt, g, classes[3], later_clips, progress=False)
    finally:
        t.join(60)
    assert not t.is_alive()
    assert w.reloads == 1
    assert classes[3] in w.classifier.labels
    before = {s.top for s in got[:1]}
    assert classes[3] not in before


def test_sources_named_and_refused(tmp_path: Path) -> None:
    for bad, words in [("ftp://host/x", "unsupported scheme"), ("rtsp://", "names no host"),
                       (str(tmp_path / "nope.mp4"), "no such video file"), ("/dev/videoX", "/dev/videoN"),
                       (str(tmp_path), "folder of frames")]:
        with pytest.raises(SSTEdgeError, match=words):
            parse_source(bad)
    spec = parse_source("rtsp://admin:secret@10.0.0.2:554/stream1")
    assert "secret" not in spec.name and spec.name == "rtsp://admin:***@10.0.0.2:554/stream1"
    assert parse_source("/dev/video0").kind == "v4l2"


def test_a_source_that_never_opens(live_scene) -> None:
    """No camera here (no V4L2 in this sandbox): /dev/video99 and a refused TCP port are each named,
    retried with backoff, given up; with no source left and none delivered, the exit status says so."""
    rt, gallery, video, _, _ = live_scene
    err = io.StringIO()
    specs = [parse_source("/dev/video99"), parse_source("tcp://127.0.0.1:9")]
    report = Watch(rt, gallery, specs, [], WatchSettings(max_reconnects=2, backoff_max=0.2), err=err).run()
    text = err.getvalue()
    assert "/dev/video99: cannot open" in text and "tcp://127.0.0.1:9: cannot open" in text
    assert "reconnecting in 0.2 s" in text and "gave up after 2 reconnects" in text  # capped backoff
    assert report.exit_code == EXIT_SOURCE
    # with --exit-on-error a good source does not keep the watch going past the first problem
    t0 = time.monotonic()
    report = Watch(rt, gallery, [parse_source(str(video)), specs[1]], [],
                   WatchSettings(exit_on_error=True, realtime=True), err=io.StringIO()).run()
    assert report.exit_code == EXIT_SOURCE and time.monotonic() - t0 < 48 / FPS


def test_a_sink_problem_is_named_and_the_watch_goes_on(live_scene, tmp_path: Path) -> None:
    rt, gallery, video, _, _ = live_scene
    sink = FileSink(tmp_path / "events.jsonl")
    os.close(sink.fd)  # the disk went away: every write fails
    sink.fd = os.open(os.devnull, os.O_RDONLY)
    err = io.StringIO()
    report = Watch(rt, gallery, [parse_source(str(video))], [sink], WatchSettings(span=SPAN, stride=STRIDE),
                   err=err).run()
    assert report.exit_code == 0 and report.sinks[0]["lost"] > 0
    assert "not written" in err.getvalue()
