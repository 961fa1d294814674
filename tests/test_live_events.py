"""Events from spans (hysteresis, minimum duration, end reasons) and the sinks, against hand-made sequences.

The expected events below were worked out by hand from the rule in events.py's docstring; nothing here
calls the builder to find out what to expect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sst_edge.errors import SSTEdgeError
from sst_edge.runtime.live.events import EVENT_SCHEMA, EventBuilder, EventPolicy, SpanDecision
from sst_edge.runtime.live.sinks import FileSink, read_events
from sst_edge.schema import problems

THR = -1.0  # the calibrated score threshold; with margin 0.1 an open event holds down to -1.1
FAR = "far from every label: score {:.3f} < -1.000"


def span(k: int, label: str, score: float = -0.5, conf: float = 0.9, top: str | None = None,
         why: str = "") -> SpanDecision:
    """Span k of a 2 s span, 1 s stride grid; an "unknown" span names its nearest label in `top`."""
    if label == "unknown" and not why:
        why = FAR.format(score)
    wall = 1_000_000.0 + k + 2
    return SpanDecision(float(k), float(k + 2), label, conf, wall, top or label, score, THR, why)


def summary(events: list[dict]) -> list[tuple]:
    return [(e["kind"], e["label"], e["start_s"], e["end_s"], e["spans"], e.get("reason")) for e in events]


def run(builder: EventBuilder, spans: list[SpanDecision], final: str | None = "shutdown") -> list[dict]:
    out = [e for s in spans for e in builder.update(s)]
    return out + (builder.close(final) if final else [])


SEQUENCE = [span(0, "A"), span(1, "A"),
            span(2, "unknown", -1.05, top="A"),  # between the two levels: holds A
            span(3, "unknown", -1.2, top="A"),  # below the lower level: ends A
            span(4, "B"), span(5, "C")]


def test_hysteresis_and_reasons() -> None:
    b = EventBuilder("cam", EventPolicy(), "0" * 64)
    events = run(b, SEQUENCE)
    assert summary(events) == [
        ("start", "A", 0.0, 2.0, 1, None), ("end", "A", 0.0, 4.0, 3, "unknown"),
        ("start", "B", 4.0, 6.0, 1, None), ("end", "B", 4.0, 6.0, 1, "label changed"),
        ("start", "C", 5.0, 7.0, 1, None), ("end", "C", 5.0, 7.0, 1, "shutdown")]
    assert events[0]["id"] == events[1]["id"] != events[2]["id"]
    assert b.emitted == 3 and b.suppressed == 0
    for e in events:
        assert problems(e, EVENT_SCHEMA) == [], e
    assert events[1]["peak_confidence"] == 0.9 and events[1]["mean_confidence"] == 0.9


def test_no_margin_no_hold() -> None:
    events = run(EventBuilder("cam", EventPolicy(margin=0.0), "0" * 64), SEQUENCE[:3], final=None)
    assert summary(events) == [("start", "A", 0.0, 2.0, 1, None), ("end", "A", 0.0, 3.0, 2, "unknown")]


def test_a_content_problem_never_holds() -> None:
    blank = span(2, "unknown", -1.05, top="A", why="blank clip: its pixels vary by 0.3 levels (< 2)")
    events = run(EventBuilder("cam"), [span(0, "A"), blank], final=None)
    assert summary(events)[-1] == ("end", "A", 0.0, 2.0, 1, "unknown")


def test_min_duration() -> None:
    b = EventBuilder("cam", EventPolicy(min_duration=3.0), "0" * 64)
    events = run(b, SEQUENCE)
    # A: 0-2 is too short, 0-3 is announced; B (4-6) and C (5-7) end before lasting 3 s
    assert summary(events) == [("start", "A", 0.0, 3.0, 2, None), ("end", "A", 0.0, 4.0, 3, "unknown")]
    assert b.emitted == 1 and b.suppressed == 2


def test_confidence_levels() -> None:
    p = EventPolicy(enter=0.5, leave=0.3)
    b = EventBuilder("cam", p, "0" * 64)
    events = run(b, [span(0, "A", conf=0.4),  # too unsure to open
                     span(1, "A", conf=0.6), span(2, "A", conf=0.35),  # opens, holds
                     span(3, "A", conf=0.25)], final=None)  # ends: low confidence
    assert summary(events) == [("start", "A", 1.0, 3.0, 1, None), ("end", "A", 1.0, 4.0, 2, "low confidence")]
    assert events[1]["peak_confidence"] == 0.6 and events[1]["mean_confidence"] == pytest.approx(0.475)


@pytest.mark.parametrize("kw", [dict(enter=0.2, leave=0.4), dict(enter=1.5), dict(margin=-0.1),
                                dict(min_duration=float("nan"))])
def test_bad_policy(kw: dict) -> None:
    with pytest.raises(SSTEdgeError):
        EventPolicy(**kw)


def test_schema_catches_a_bad_event() -> None:
    ev = run(EventBuilder("cam", model="0" * 64), [span(0, "A")])[1]
    assert problems({**ev, "kind": "middle"}, EVENT_SCHEMA)
    del ev["reason"]
    assert problems(ev, EVENT_SCHEMA)  # an end says why


# -------------------------------------------------------------------------------------------- sinks
def _event(i: int) -> dict:
    return run(EventBuilder("cam", model="0" * 64), [span(i, "A")], final=None)[0]


def test_file_sink_appends_and_refuses_foreign(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    s = FileSink(path)
    s.emit(_event(0))
    s.close()
    s = FileSink(path)
    s.emit(_event(1))
    assert s.close()["written"] == 1
    assert [e["start_s"] for e in read_events(path)] == [0.0, 1.0]
    foreign = tmp_path / "notes.txt"
    foreign.write_text("my notes\n")
    with pytest.raises(SSTEdgeError, match="not an sst-edge events file"):
        FileSink(foreign)
    assert foreign.read_text() == "my notes\n"
    with pytest.raises(SSTEdgeError, match="folder"):
        FileSink(tmp_path)


def test_file_sink_after_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(_event(0)) + "\n" + '{"format": "sst-edge.ev')  # a crash mid-write
    s = FileSink(path)
    assert any("incomplete" in p for p in s.problems())
    s.emit(_event(1))
    s.close()
    assert [e["start_s"] for e in read_events(path)] == [0.0, 1.0]


def test_file_sink_survives_sigkill(tmp_path: Path) -> None:
    """A writer killed at a random moment: every event it reported written is in the file, whole."""
    path, log = tmp_path / "events.jsonl", tmp_path / "written.txt"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_live_events import _event
        from sst_edge.runtime.live.sinks import FileSink
        s = FileSink({str(path)!r})
        with open({str(log)!r}, "w", buffering=1) as log:
            for i in range(100000):
                s.emit(_event(i % 1000))
                log.write(f"{{i}}\\n")
        """)
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and len(log.read_text().splitlines()) > 50:
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    written = len(log.read_text().splitlines())
    assert written > 50
    events = read_events(path)
    assert len(events) >= written  # reported written (after fsync) -> in the file
    assert all(problems(e, EVENT_SCHEMA) == [] for e in events)
