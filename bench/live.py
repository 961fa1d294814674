"""How many 25 fps sources `sst-edge watch` sustains in real time here, per model, with what latency and CPU.

Models (untrained: speed does not depend on the weights): sst_tiny's largest subnet (cpu-fp32), and the
paper-cost subnet of sst_paper (search_spaces/sst_paper.paper_cost.json, 13.6 GFLOPs a clip) for cpu-fp32
and cpu-int8. Source: a 25 fps H.264 video of synthetic actions at 240x320 (`--size`), played at its own
rate (`--realtime`, the pacing a camera imposes) by N sources at once, N = 1, 2, 4, ... Each run is one
`sst-edge watch` process (span 2 s, stride 1 s, the defaults), `--seconds` long, with a gallery of 3 labels
x 2 clips; its --summary gives spans scored and skipped, span and event latency (p50/p99), CPU share (CPU
seconds per wall second, of the whole process: decoding included) and peak RSS.

Sustained: no span skipped and the p99 span latency below the stride (1 s); the largest such N is the
model's figure. Prints the host's CPU features; writes bench/live.json and bench/live.png.

Run: .venv/bin/python bench/live.py [--seconds 30] [--max-sources 16] [--models tiny,paper-fp32,paper-int8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from runtime import untrained_model  # noqa: E402  (bench/runtime.py)

from sst_edge.data.encode import write_video  # noqa: E402
from sst_edge.data.synth import generate_synthetic  # noqa: E402
from sst_edge.device.datasets import load_splits  # noqa: E402
from sst_edge.device.decoders import make_decoder  # noqa: E402
from sst_edge.device.fingerprint import cpu_features  # noqa: E402
from sst_edge.runtime import verbs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "search_spaces" / "sst_paper.paper_cost.json"
MODELS = {"tiny": ("sst_tiny", "cpu-fp32", None), "paper-fp32": ("sst_paper", "cpu-fp32", PAPER),
          "paper-int8": ("sst_paper", "cpu-int8", PAPER)}
FPS = 25


def source_video(data: Path, out: Path, seconds: float) -> Path:
    """`seconds` of 25 fps video: the dataset's clips back to back, looped."""
    splits = load_splits(data)
    clips = [p for c in splits["test"].classes for p in splits["test"].clips[c]]
    dec = make_decoder("pyav")
    frames, i = [], 0
    while sum(len(f) for f in frames) < seconds * FPS:
        p = clips[i % len(clips)]
        frames.append(dec.read(p, range(dec.info(p).num_frames)))
        i += 1
    return write_video(out, np.concatenate(frames)[:int(seconds * FPS)], fps=FPS, crf=23)


def run_watch(model: Path, gallery: Path, videos: list[Path], seconds: float, work: Path) -> dict:
    summary = work / "summary.json"
    cmd = [str(Path(sys.executable).parent / "sst-edge"), "watch", "--model", str(model), "--gallery",
           str(gallery), "--realtime", "--no-stdout", "--duration", str(seconds), "--summary", str(summary)]
    for v in videos:
        cmd += ["--source", str(v)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=seconds + 120)
    return json.loads(summary.read_text())


def measure(name: str, work: Path, data: Path, video: Path, seconds: float, max_sources: int) -> dict:
    space, target, subnet = MODELS[name]
    model = untrained_model(work / name / "model", space, target, subnet)
    gallery = work / name / "gallery"
    test = load_splits(data)["test"]
    for c in test.classes[:3]:
        verbs.enroll(model, gallery, c, test.clips[c][:2], progress=False)
    rows, n = [], 1
    while n <= max_sources:
        videos = []
        for k in range(n):  # one file per source: nothing shared but the model
            videos.append(Path(shutil.copy(video, work / f"source{k}.mp4")))
        s = run_watch(model, gallery, videos, seconds, work)
        scored = sum(v["spans"] for v in s["sources"].values())
        skipped = sum(v["skipped"] for v in s["sources"].values())
        p99 = s["span_latency_s"]["p99"]
        ok = skipped == 0 and p99 is not None and p99 < 1.0
        ev = s["event_latency_s"]
        row = {"sources": n, "scored": scored, "skipped": skipped, "span_p50": s["span_latency_s"]["p50"],
               "span_p99": p99, "event_p50": ev["p50"], "event_p99": ev["p99"],
               "cpu_share": s["cpu_share"], "peak_rss_mb": s["peak_rss_mb"], "sustained": ok,
               "fps": [round(v["fps"], 2) for v in s["sources"].values()]}
        rows.append(row)
        print(f"  {name:<11} {n:>3} sources: {scored:>5} spans scored, {skipped:>4} skipped, span latency "
              f"p50 {row['span_p50']} p99 {p99} s, event p50 {row['event_p50']} p99 {row['event_p99']} s, "
              f"CPU {row['cpu_share']:.2f} cores, RSS {row['peak_rss_mb']:.0f} MB -> "
              f"{'sustained' if ok else 'NOT sustained'}", flush=True)
        if not ok:
            break
        n *= 2
    best = max([r["sources"] for r in rows if r["sustained"]], default=0)
    return {"model": name, "space": space, "target": target, "sustained_sources": best, "runs": rows}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for r in results:
        xs = [x["sources"] for x in r["runs"]]
        a.plot(xs, [x["span_p99"] for x in r["runs"]], "o-", label=f"{r['model']} p99")
        b.plot(xs, [x["cpu_share"] for x in r["runs"]], "o-", label=r["model"])
    a.axhline(1.0, color="grey", ls=":", label="stride (1 s)")
    a.set(xscale="log", yscale="log", xlabel="25 fps sources", ylabel="span latency p99 (s)")
    b.set(xscale="log", xlabel="25 fps sources", ylabel="CPU (cores)")
    for ax in (a, b):
        ax.legend(fontsize=8)
    fig.suptitle("sst-edge watch: sources in real time (bench/live.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--max-sources", type=int, default=16)
    ap.add_argument("--size", type=int, default=240, help="source frame height (default 240: 240x320)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("live.json"))
    args = ap.parse_args()
    feats = cpu_features()
    print("CPU features:", ", ".join(k for k, v in feats.items() if v) or "none of those checked")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = generate_synthetic(work / "synth", classes=6, clips=4, size=args.size, progress=False)
        video = source_video(data, work / "source.mp4", args.seconds + 5)
        for name in args.models.split(","):
            results.append(measure(name, work, data, video, args.seconds, args.max_sources))
    doc = {"cpu_features": feats, "seconds": args.seconds, "fps": FPS, "size": args.size, "results": results}
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    for r in results:
        print(f"{r['model']}: {r['sustained_sources']} sources of 25 fps sustained in real time")


if __name__ == "__main__":
    main()
