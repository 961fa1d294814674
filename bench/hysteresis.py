"""watch's hysteresis margin, measured: events per enrolled action and how many are right, per margin.

Videos of held-out synthetic clips back to back (4 actions a video, 2 clips of each, 12 fps) against a
gallery of the test classes (5 clips each); spans of 2 clips' length, a stride of one clip's half
(classify --stream's code: SpanScorer), turned into events by EventBuilder with each margin. An action
segment is found when an event of its label overlaps it; fragments: events of the right label beyond the
first within one segment (flicker); wrong: events whose label is not the one of the segment they overlap
most. The same spans feed every margin (paired). 95% intervals: bootstrap over videos.

Run: .venv/bin/python bench/hysteresis.py --model models/tiny --data data/synth [--videos 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from sst_edge.data.encode import write_video
from sst_edge.device.datasets import load_splits
from sst_edge.device.decoders import make_decoder
from sst_edge.runtime import verbs
from sst_edge.runtime.classify import Classifier
from sst_edge.runtime.engine import FewShotRuntime
from sst_edge.runtime.gallery import Gallery
from sst_edge.runtime.live.events import EventBuilder, EventPolicy, SpanDecision
from sst_edge.runtime.stream import stream_video

MARGINS = (0.0, 0.05, 0.1, 0.2, 0.3)
FPS = 12


def score(events: list[dict], segments: list[tuple[float, float, str]]) -> tuple[int, int, int]:
    """(segments found, fragments, wrong events) of one video's completed events."""
    ends = [e for e in events if e["kind"] == "end"]
    found = frag = wrong = 0
    for a, b, label in segments:
        hits = [e for e in ends if e["label"] == label and e["start_s"] < b and e["end_s"] > a]
        found += bool(hits)
        frag += max(0, len(hits) - 1)
    for e in ends:
        overlap = [(min(b, e["end_s"]) - max(a, e["start_s"]), label) for a, b, label in segments]
        wrong += max(overlap)[1] != e["label"]
    return found, frag, wrong


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rt = FewShotRuntime(args.model)
    test = load_splits(args.data)["test"]
    rng = np.random.default_rng(args.seed)
    dec = make_decoder("pyav")
    rows = {m: [] for m in MARGINS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for c in test.classes:
            verbs.enroll(rt, work / "g", c, test.clips[c][:5], progress=False)
        cls = Classifier.from_gallery(Gallery.open(work / "g", rt.card), ood=rt.ood, ood_why=rt.ood_why)
        for v in range(args.videos):
            chosen = rng.choice(test.classes, 4, replace=False)
            frames, segments, t = [], [], 0.0
            for c in chosen:
                clips = rng.choice(test.clips[c][5:], 2, replace=False)
                f = np.concatenate([dec.read(p, range(dec.info(p).num_frames)) for p in clips])
                frames.append(f)
                segments.append((t, t + len(f) / FPS, str(c)))
                t += len(f) / FPS
            video = write_video(work / f"v{v}.mp4", np.concatenate(frames), fps=FPS, crf=18)
            span = 16 / FPS
            spans = list(stream_video(rt, cls, video, 2 * span, span / 2))
            for m in MARGINS:
                b = EventBuilder("v", EventPolicy(margin=m), rt.card.sha256)
                events = [e for s in spans for e in b.update(SpanDecision(
                    s.start_s, s.end_s, s.label, s.confidence, 0.0, s.top, s.score, cls.score_threshold,
                    s.why))]
                rows[m].append(score(events + b.close("source ended"), segments))
    boot = np.random.default_rng(1)
    print(f"{args.videos} videos x 4 actions; per margin: segments found, fragments per segment, wrong "
          "events per segment (95% bootstrap intervals over videos)")
    for m in MARGINS:
        a = np.asarray(rows[m], float)  # videos x (found, frag, wrong)
        means = a.mean(0) / 4
        idx = boot.integers(0, len(a), (2000, len(a)))
        lo, hi = np.percentile(a[idx].mean(1) / 4, [2.5, 97.5], axis=0)
        print(f"  margin {m:<4}: found {means[0]:.1%} [{lo[0]:.1%}, {hi[0]:.1%}], fragments {means[1]:.2f} "
              f"[{lo[1]:.2f}, {hi[1]:.2f}], wrong {means[2]:.2f} [{lo[2]:.2f}, {hi[2]:.2f}]")
    base = np.asarray(rows[0.0], float)
    for m in MARGINS[1:]:
        d = (np.asarray(rows[m], float) - base)[:, 1] / 4  # fragments per segment, paired by video
        idx = boot.integers(0, len(d), (2000, len(d)))
        lo, hi = np.percentile(d[idx].mean(1), [2.5, 97.5])
        sig = "significant" if hi < 0 or lo > 0 else "not significant"
        print(f"  fragments, margin {m} - margin 0: {d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] ({sig})")


if __name__ == "__main__":
    main()
