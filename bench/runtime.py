"""On-device latency of the few-shot runtime: per query decode, embed and match; enrollment per clip.

What a device does for one query clip: decode and preprocess it (the card's `Preprocess`: segment centres,
shorter side resized while decoding, centre crop, normalise), embed it with ONNX Runtime (the model's
target threads, batch 1), and match the features against the gallery (numpy heads, both kinds). And for
enrollment: probe and hash, decode, embed, commit (feature file and index written atomically with fsync),
plus the recalibration each enrollment call ends with. Each stage is timed on its own, interleaved query by
query in one process (2 shared vCPUs drift between runs), and reported as median and 90th percentile.

Without --model it builds what it needs: a synthetic dataset (--size sets the frame height; 64 gives the
64x86 clips of the tests, 240 gives 240x320) and an sst_tiny model exported by `export_model` from an
untrained supernet (the largest subnet): timings do not depend on the weights, accuracy does not matter.

Run: .venv/bin/python bench/runtime.py [--model models/NAME --data DATA] [--labels 6 --shots 5 --queries 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sst_edge.data.synth import generate_synthetic
from sst_edge.device.datasets import load_splits
from sst_edge.fileio import sha256_file
from sst_edge.runtime.classify import Classifier
from sst_edge.runtime.engine import FewShotRuntime
from sst_edge.runtime.gallery import Gallery


def untrained_model(out: Path, space: str = "sst_tiny", target: str = "cpu-fp32",
                    subnet: Path | None = None) -> Path:
    """An exported model of an untrained supernet (the real export path): `subnet` (a subnet document),
    or the space's largest subnet. Timings do not depend on the weights."""
    import torch

    from sst_edge.cost.flops import extreme_sample
    from sst_edge.deploy.export import export_model
    from sst_edge.space.config import load_space
    from sst_edge.space.subnet import make_subnet
    from sst_edge.space.supernet import build_supernet
    from sst_edge.train.artifacts import SUPERNET_FORMAT
    from sst_edge.train.checkpoint import save_tensors

    config = load_space(space)
    torch.manual_seed(0)
    out.parent.mkdir(parents=True, exist_ok=True)
    weights = save_tensors(out.parent / f"{space}.supernet.safetensors", build_supernet(config).state_dict(),
                           {"format": SUPERNET_FORMAT, "space": config.name, "space_hash": config.hash})
    if subnet is None:
        largest = extreme_sample(config, None, largest=True)
        subnet = make_subnet(config, largest).save(out.parent / "best.json")
    export_model(subnet, weights, target, out, measure=False, progress=False)
    return out


def ms(xs: list[float]) -> tuple[float, float]:
    return 1e3 * statistics.median(xs), 1e3 * float(np.percentile(xs, 90))


def row(name: str, xs: list[float], note: str = "") -> None:
    med, p90 = ms(xs)
    print(f"  {name:<34} {med:>9.2f} {p90:>9.2f}  {note}")


def bench(model: Path, data: Path, labels: int, shots: int, queries: int, threads: int | None) -> None:
    rt = FewShotRuntime(model, threads=threads)
    d = rt.describe()
    print(f"model '{d['model']}' ({rt.card.space}, clip {list(rt.clip_shape)} -> features "
          f"{list(rt.feature_shape)}), {', '.join(d['providers'])}, {d['threads']} thread(s), decoder "
          f"{d['decoder']}")
    splits = load_splits(data)
    clips = {c: list(p) for s in ("test", "val", "train") for c, p in splits[s].clips.items()}
    classes = [c for c in clips if len(clips[c]) > shots][:labels]
    if len(classes) < 2:
        sys.exit(f"{data}: need >= 2 classes with more than {shots} clips")
    dec = rt.decoder()
    for p in clips[classes[0]][:3]:  # warm-up: libraries loaded, session and decoder primed
        rt.embed(rt.load(p, dec)[None])

    with tempfile.TemporaryDirectory() as tmp:
        g = Gallery.create(Path(tmp) / "gallery", rt.card)
        t: dict[str, list[float]] = {k: [] for k in ("probe", "decode", "embed", "commit", "calib", "whole")}
        for c in classes:
            for p in clips[c][:shots]:
                t0 = time.perf_counter()
                dec.info(p)
                digest = sha256_file(p)
                t1 = time.perf_counter()
                x = rt.load(p, dec)
                t2 = time.perf_counter()
                f = rt.embed(x[None])[0]
                t3 = time.perf_counter()
                g.add(c, f, p, digest, recalibrate=False)
                t4 = time.perf_counter()
                for k, v in zip(("probe", "decode", "embed", "commit"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3),
                                strict=True):
                    t[k].append(v)
            t0 = time.perf_counter()
            g.recalibrate()
            t["calib"].append(time.perf_counter() - t0)
        # the whole verb path, clip by clip, into a second gallery (probe, hash, decode, embed, commit)
        g2 = Gallery.create(Path(tmp) / "whole", rt.card)
        for c in classes[:2]:
            t0 = time.perf_counter()
            g2.enroll(rt, c, clips[c][:shots], progress=False)
            t["whole"].append((time.perf_counter() - t0) / shots)
        n_clips = len(classes) * shots
        print(f"\nenrollment: {len(classes)} labels x {shots} clips   (ms; median, p90)")
        print(f"  {'stage':<34} {'median':>9} {'p90':>9}")
        row("probe + sha256", t["probe"], "checked before anything is written")
        row("decode + preprocess", t["decode"])
        row("embed (ONNX Runtime)", t["embed"])
        row("commit (features + index, fsync)", t["commit"])
        row("recalibrate (per enroll call)", t["calib"], f"leave-one-out, both heads, up to {n_clips} clips")
        row("enroll(), per clip, end to end", t["whole"], f"{shots}-clip calls, incl. recalibration")

        q: dict[str, list[float]] = {k: [] for k in ("decode", "embed", "alignment", "prototype", "total")}
        heads = {h: Classifier.from_gallery(g, h) for h in ("alignment", "prototype")}
        pool = [p for c in classes for p in clips[c][shots:]]
        correct = 0
        for i in range(queries):
            p = pool[i % len(pool)]
            t0 = time.perf_counter()
            x = rt.load(p, dec)
            t1 = time.perf_counter()
            f = rt.embed(x[None])
            t2 = time.perf_counter()
            pred = heads["alignment"].predict(f)[0]
            t3 = time.perf_counter()
            heads["prototype"].predict(f)
            t4 = time.perf_counter()
            correct += pred.ranking[0][0] == Path(p).parent.name
            for k, v in zip(("decode", "embed", "alignment", "prototype", "total"),
                            (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t3 - t0), strict=True):
                q[k].append(v)
        print(f"\nper query: {queries} clips against {len(classes)} labels x {shots} shots   "
              "(ms; median, p90)")
        print(f"  {'stage':<34} {'median':>9} {'p90':>9}")
        row("decode + preprocess", q["decode"])
        row("embed (ONNX Runtime)", q["embed"])
        row("match, alignment head", q["alignment"], "logits, softmax, ranking")
        row("match, prototype head", q["prototype"])
        row("total (decode + embed + alignment)", q["total"], f"top-1 {correct}/{queries} (weights may be "
            "untrained)")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="an exported model directory (default: build one, untrained)")
    ap.add_argument("--data", type=Path, help="a dataset (default: generate a synthetic one)")
    ap.add_argument("--size", type=int, default=64, help="synthetic frame height (default 64: 64x86)")
    ap.add_argument("--labels", type=int, default=6, help="labels to enroll (default 6)")
    ap.add_argument("--shots", type=int, default=5, help="clips per label (default 5)")
    ap.add_argument("--queries", type=int, default=30, help="query clips timed (default 30)")
    ap.add_argument("--threads", type=int, help="ONNX Runtime threads (default: the card's target)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        data = args.data or generate_synthetic(Path(tmp) / "synth", classes=args.labels + 2,
                                               clips=args.shots + 5, size=args.size, progress=False)
        model = args.model or untrained_model(Path(tmp) / "model")
        if not (args.data and args.model):
            print(f"prepared {'data ' if not args.data else ''}{'model ' if not args.model else ''}in "
                  f"{time.perf_counter() - t0:.1f} s")
        bench(model, data, args.labels, args.shots, args.queries, args.threads)


if __name__ == "__main__":
    main()
