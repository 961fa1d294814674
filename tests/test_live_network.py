"""`sst-edge watch` on real servers on 127.0.0.1 (tests/live_servers.py): GStreamer's RTSP server, MPEG-TS
over TCP from PyAV/FFmpeg, and mosquitto. What the live stream gives is compared with what the recorded
file gives (classify --stream's spans and an EventBuilder over them): the same events, boundaries within
one stride."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from live_scene import FPS, SPAN, STRIDE, recorded

from sst_edge.runtime.live.sinks import read_events

RTSP_TIMEOUT = 90


def watch_cmd(rt, gallery: Path, sources: list[str], *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "sst_edge.cli", "watch", "--model", str(rt.model_dir), "--gallery",
           str(gallery), "--span", str(SPAN), "--stride", str(STRIDE), *extra]
    for s in sources:
        cmd += ["--source", s]
    return cmd


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def same_events(live: list[dict], rec: list[dict], shift: float = 0.0) -> None:
    """The recorded file's events, in order, with the same labels; boundaries within one stride."""
    ends = [e for e in live if e["kind"] == "end"]
    want = [e for e in rec if e["kind"] == "end"]
    assert [e["label"] for e in ends] == [e["label"] for e in want], (ends, want)
    for a, b in zip(ends, want, strict=True):
        assert abs(a["start_s"] - shift - b["start_s"]) <= STRIDE + 1e-6
        assert abs(a["end_s"] - shift - b["end_s"]) <= STRIDE + 1e-6


@pytest.mark.parametrize("kind", ["rtsp", "tcp"])
def test_a_stream_gives_the_recorded_files_events(kind, live_servers, live_scene) -> None:
    rt, gallery, video, _, _ = live_scene
    _, rec = recorded(rt, gallery, video)
    server = live_servers.rtsp([video]) if kind == "rtsp" else live_servers.mpegts([video])
    run = subprocess.run(watch_cmd(rt, gallery, [server.url], "--max-reconnects", "0"), capture_output=True,
                         text=True, timeout=RTSP_TIMEOUT)
    live = events_of(run.stdout)
    assert run.returncode == 0, run.stderr
    # the stream's end is a drop for a live source: reported, then given up (--max-reconnects 0)
    assert "the stream ended" in run.stderr
    same_events([e for e in live if e.get("reason") != "source ended"],
                [e for e in rec if e.get("reason") != "source ended"])
    assert all(e["source"] == server.url for e in live)


def test_a_dropped_rtsp_server_is_reconnected(live_servers, live_scene, tmp_path: Path) -> None:
    """Killed mid-stream, restarted 1 s later: watch reconnects (backoff), the later events come, and the
    events file holds every event stdout showed, each event ended."""
    rt, gallery, video, _, _ = live_scene
    server = live_servers.rtsp([video], loops=2)
    events_file = tmp_path / "events.jsonl"
    proc = subprocess.Popen(watch_cmd(rt, gallery, [server.url], "--events", str(events_file),
                                      "--summary", str(tmp_path / "s.json"), "--max-reconnects", "5"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    try:  # from this thread: the server dies with the thread that started it (PR_SET_PDEATHSIG)
        time.sleep(6.0)
        server.kill()
        time.sleep(1.0)
        server.restart()
        out, err = proc.communicate(timeout=RTSP_TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["sources"][server.url]["reconnects"] >= 1
    assert "reconnecting in" in err
    printed, kept = events_of(out), read_events(events_file)
    assert kept == printed  # nothing lost from the events file
    reasons = [e.get("reason") for e in kept if e["kind"] == "end"]
    starts = {e["id"] for e in kept if e["kind"] == "start"}
    assert starts == {e["id"] for e in kept if e["kind"] == "end"}
    # the second connection starts its own grid later on the source's timeline, and gives events
    later = [e for e in kept if e["start_s"] > 6.0 + 1.0]
    assert later, (reasons, [(e["label"], e["start_s"]) for e in kept], err[-3000:])


def test_events_reach_the_broker(live_servers, live_scene) -> None:
    rt, gallery, video, _, _ = live_scene
    broker = live_servers.mosquitto()
    sub = live_servers.subscriber(broker, "cams/events", qos=1)
    sub.wait_subscribed(10)
    run = subprocess.run(watch_cmd(rt, gallery, [str(video)], "--mqtt", broker.url("cams/events")),
                         capture_output=True, text=True, timeout=RTSP_TIMEOUT)
    assert run.returncode == 0, run.stderr
    printed = events_of(run.stdout)
    got = sub.wait_for(len(printed), 10)
    assert [json.loads(m.payload) for m in got] == printed and printed
    assert {m.qos for m in got} == {1}


def test_a_broker_that_is_not_there_is_named_and_the_watch_goes_on(live_scene) -> None:
    rt, gallery, video, _, _ = live_scene
    from live_servers import free_port

    url = f"mqtt://127.0.0.1:{free_port()}/cams"
    run = subprocess.run(watch_cmd(rt, gallery, [str(video)], "--mqtt", url), capture_output=True, text=True,
                         timeout=RTSP_TIMEOUT)
    assert run.returncode == 0, run.stderr
    assert "Connection refused" in run.stderr and url in run.stderr
    assert events_of(run.stdout)  # stdout still has every event
    run = subprocess.run(watch_cmd(rt, gallery, [str(video)], "--mqtt", url, "--exit-on-error"),
                         capture_output=True, text=True, timeout=RTSP_TIMEOUT)
    assert run.returncode == 4, run.stderr


def test_a_minute_of_camera_footage_is_mostly_unknown(live_servers, live_scene, synth_dataset: Path,
                                                       tmp_path: Path) -> None:
    """A minute of footage over MPEG-TS/TCP at 12 fps, one 16-frame span a segment, in random order:
    moving 1/f textures, camera pans, synthetic classes never enrolled (the val split: never trained on
    either), and new clips of the 3 enrolled actions. Goal: >= 80% of the background's spans "unknown",
    the enrolled actions still found. Reached for textures and pans; not for never-enrolled synthetic
    classes (as like the training data as the enrolled ones: tests/test_ood.py, bench/open_set.py), for
    which a regression floor is asserted and the rate printed with its interval."""
    from sst_edge.data.encode import write_video
    from sst_edge.data.scenes import pan_frames, texture_frames
    from sst_edge.data.synth import render_clip, synth_classes
    from sst_edge.device.datasets import load_splits
    from sst_edge.device.evaluation import wilson
    from sst_edge.runtime.calibration import UNKNOWN
    from sst_edge.runtime.live.sources import parse_source
    from sst_edge.runtime.live.watch import Watch, WatchSettings

    rt, gallery, _, _, classes = live_scene
    specs = {c.name: c for c in synth_classes(24)}
    val = load_splits(synth_dataset).val.classes
    segments = [("enrolled", lb, render_clip(specs[lb], [0, specs[lb].unit, 10 + k], 16, 64))
                for lb in classes[:3] for k in range(5)]
    segments += [("moving texture", "", texture_frames(3000 + i, 16, 64, 86)) for i in range(10)]
    segments += [("camera pan", "", pan_frames(4000 + i, 16, 64, 86)) for i in range(10)]
    segments += [("never-enrolled class", "", render_clip(specs[val[i % len(val)]],
                                                          [0, specs[val[i % len(val)]].unit, 10 + i], 16, 64))
                 for i in range(10)]
    order = np.random.default_rng(0).permutation(len(segments))
    segments = [segments[i] for i in order]
    assert len(segments) * 16 / FPS == 60.0
    video = write_video(tmp_path / "camera.mp4", np.concatenate([f for _, _, f in segments]), fps=FPS)
    server = live_servers.mpegts([video])
    got = []
    err = io.StringIO()
    Watch(rt, gallery, [parse_source(server.url)], [], WatchSettings(span=16 / FPS, stride=16 / FPS,
                                                                    max_reconnects=0),
          err=err, on_span=lambda name, s: got.append(s)).run()
    assert [(s.start_frame, s.end_frame) for s in got] == [(16 * i, 16 * i + 16) for i in range(45)], \
        err.getvalue()
    rates = {}
    for kind in ("moving texture", "camera pan", "never-enrolled class"):
        idx = [i for i, (k, _, _) in enumerate(segments) if k == kind]
        k = sum(got[i].label == UNKNOWN for i in idx)
        rates[kind] = k / len(idx)
        lo, hi = wilson(k, len(idx))
        print(f"  {kind:<22} unknown {k}/{len(idx)} [{lo:.2f}, {hi:.2f}]")
    known = [i for i, (k, _, _) in enumerate(segments) if k == "enrolled"]
    hit = sum(got[i].label == segments[i][1] for i in known)
    lo, hi = wilson(hit, len(known))
    print(f"  enrolled actions found {hit}/{len(known)} [{lo:.2f}, {hi:.2f}]")
    assert rates["moving texture"] >= 0.8 and rates["camera pan"] >= 0.8
    assert rates["never-enrolled class"] >= 0.1  # a regression floor, not the goal (see the docstring)
    assert hit / len(known) >= 0.5
