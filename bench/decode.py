"""Clips per second for 8-frame segment sampling: decord vs PyAV (vs OpenCV if importable).

Two vCPUs shared with a host are too noisy to compare numbers from separate runs, so every variant runs in
this one process, interleaved round by round (A B C, B C A, ...), one decoding thread each, and the result
is quoted as ratios to decord (median over rounds). Workloads, all generated here:
- the synthetic dataset (64x86 clips of 16 frames, GOP 8, B-frames);
- a 640x480 clip of 150 frames with one keyframe (long GOP), at native size and decoded to 128 px;
- the same clip with a keyframe every 12 frames;
- frames vs video: the synthetic set and the 640x480 clip also as folders of extracted frames (JPEG at
  FFmpeg's quantiser 2, as ``ffmpeg -q:v 2 %08d.jpg`` writes them, and PNG), read by the same decoder
  interface; 8 frames per clip, at native size and decoded to a 128 px shorter side.
Probes are cached after a warm-up pass, as they are when a training worker re-reads clips every epoch.

Run: .venv/bin/python bench/decode.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sst_edge.data.encode import write_video
from sst_edge.data.frames import write_frames
from sst_edge.data.synth import generate_synthetic
from sst_edge.device.decoders import DecordDecoder, PyAVDecoder, decord_available
from sst_edge.device.preprocess import resized_shape, sample_indices

FRAMES = 8


def big_clip(path: Path, gop: int, n: int = 150, h: int = 480, w: int = 640) -> Path:
    """A textured scene with moving objects, so the encoder has real work (not a flat image)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    texture = (rng.normal(0, 25, (h // 16 + 1, w // 16 + 1, 3))).repeat(16, 0).repeat(16, 1)[:h, :w]
    base = np.stack([xx * 200 / w, yy * 200 / h, (xx + yy) * 100 / (w + h)], -1) + texture
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        img = base.copy()
        for k in range(3):
            cx, cy = (60 + 3 * i * (k + 1)) % w, h / 2 + 120 * np.sin(i / 10 + k)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < (30 + 10 * k) ** 2] = (230, 80 * k, 255 - 80 * k)
        frames[i] = np.clip(img + rng.normal(0, 3, img.shape), 0, 255)
    return write_video(path, frames, fps=25, crf=23, gop=gop, bframes=2, preset="veryfast")


def opencv_reader() -> Callable[[Path, list[int], tuple[int, int] | None], np.ndarray] | None:
    try:
        import cv2
    except ImportError:
        return None
    cv2.setNumThreads(1)

    def read(path: Path, indices: list[int], size: tuple[int, int] | None) -> np.ndarray:
        cap = cv2.VideoCapture(str(path))
        out = []
        for i in indices:
            cap.set(cv2.CAP_PROP_POS_FRAMES, i)
            ok, bgr = cap.read()
            if not ok:
                raise RuntimeError(f"{path}: OpenCV could not read frame {i}")
            if size is not None:
                bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            out.append(bgr[:, :, ::-1])
        cap.release()
        return np.stack(out)

    return read


Job = tuple[Path, list[int], tuple[int, int] | None]


def workload(paths: list[Path], shorter: int | None, probe) -> list[Job]:
    jobs = []
    for p in paths:
        info = probe(p)
        size = None if shorter is None else resized_shape(info.height, info.width, shorter)
        jobs.append((p, sample_indices(info.num_frames, FRAMES, train=False).tolist(), size))
    return jobs


def as_frames(videos: list[Path], out: Path, reader: PyAVDecoder) -> dict[str, dict[Path, Path]]:
    """Every video also as a JPEG and a PNG frame folder: {"jpg": {video: folder}, "png": {...}}."""
    folders: dict[str, dict[Path, Path]] = {"jpg": {}, "png": {}}
    for v in dict.fromkeys(videos):
        frames = reader.read(v, range(reader.info(v).num_frames))
        for ext, found in folders.items():
            found[v] = write_frames(out / ext / v.parent.name / v.stem, frames, ext)
    return folders


def frames_vs_video(video: Callable, folders: dict[str, dict[Path, Path]], frames: PyAVDecoder) -> dict[str,
                                                                                                      Callable]:
    """Readers keyed by the video path of a job: the video itself, or its frame folder of each format."""
    out = {"video": video}
    for ext, found in folders.items():
        out[f"{ext} frames"] = lambda p, idx, size, found=found: frames.read(found[p], idx, size)
    return out


def run(name: str, jobs, methods: dict[str, Callable], rounds: int) -> None:
    for read in methods.values():  # warm-up: probes cached, libraries loaded
        for p, idx, size in jobs[:3]:
            read(p, idx, size)
    rates: dict[str, list[float]] = {m: [] for m in methods}
    order = list(methods)
    for r in range(rounds):
        for m in order[r % len(order):] + order[:r % len(order)]:
            t0 = time.perf_counter()
            for p, idx, size in jobs:
                methods[m](p, idx, size)
            rates[m].append(len(jobs) / (time.perf_counter() - t0))
    ref = "decord" if "decord" in methods else order[0]
    print(f"\n{name}  ({len(jobs)} clips x {rounds} rounds, 1 thread, {FRAMES} frames per clip)")
    print(f"  {'decoder':<10} {'clips/s (median)':>17} {'vs ' + ref + ' (median ratio)':>26}")
    for m in order:
        ratio = statistics.median(a / b for a, b in zip(rates[m], rates[ref], strict=True))
        print(f"  {m:<10} {statistics.median(rates[m]):>17.1f} {ratio:>26.2f}")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    pyav = PyAVDecoder(threads=1)
    methods: dict[str, Callable] = {}
    if decord_available():
        decord = DecordDecoder(threads=1)
        methods["decord"] = decord.read
    methods["pyav"] = pyav.read
    cv = opencv_reader()
    if cv is not None:
        methods["opencv"] = cv
    print("decoders:", ", ".join(methods), "" if cv else "(OpenCV not importable: skipped)")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        synth = generate_synthetic(Path(tmp) / "synth", classes=12, clips=5, progress=False)
        long_gop = big_clip(Path(tmp) / "640x480_gop250.mp4", gop=250)
        short_gop = big_clip(Path(tmp) / "640x480_gop12.mp4", gop=12)
        print(f"generated test videos in {time.perf_counter() - t0:.1f} s")
        clips = sorted(synth.glob("*/*.mp4"))
        run("synthetic set, 64x86, 16 frames, GOP 8", workload(clips, None, pyav.info), methods, args.rounds)
        run("640x480, 150 frames, one keyframe, native size", workload([long_gop] * 3, None, pyav.info),
            methods, args.rounds)
        run("640x480, 150 frames, one keyframe, decoded to 128x171", workload([long_gop] * 3, 128, pyav.info),
            methods, args.rounds)
        run("640x480, 150 frames, keyframe every 12, native size", workload([short_gop] * 3, None, pyav.info),
            methods, args.rounds)
        t0 = time.perf_counter()
        folders = as_frames([*clips, long_gop], Path(tmp) / "frames", pyav)
        print(f"\nextracted every frame as JPEG and PNG folders in {time.perf_counter() - t0:.1f} s "
              f"(video: {'decord' if 'decord' in methods else 'pyav'}; frames: PyAV image decoders)")
        frames = frames_vs_video(methods.get("decord", pyav.read), folders, PyAVDecoder(threads=1))
        run("frames vs video: synthetic set, 64x86, native size", workload(clips, None, pyav.info), frames,
            args.rounds)
        run("frames vs video: synthetic set, decoded to 73x98 (sst_tiny's resize)",
            workload(clips, 73, pyav.info), frames, args.rounds)
        run("frames vs video: 640x480, 150 frames, one keyframe, decoded to 128x171",
            workload([long_gop] * 3, 128, pyav.info), frames, args.rounds)
        run("frames vs video: 640x480, 150 frames, one keyframe, native size",
            workload([long_gop] * 3, None, pyav.info), frames, args.rounds)


if __name__ == "__main__":
    main()
