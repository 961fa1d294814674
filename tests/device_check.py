"""`make device-check`: the device half installed as a user installs it, run end to end on a real model.

    python -m tests.device_check --python python3      (from the repository root, with the full .venv)

1. A fresh `.venv-device` made with `--python`'s interpreter gets `pip install -c constraints.txt '.[cpu]'`
   (a built wheel, not editable; torch is never installed first). Its `pip list` is printed and none of
   the host's libraries may be in it; the size on disk of .venv-device and .venv is printed with the ratio.
2. The full install (this interpreter, .venv) plays the host: `sst-edge data synth`, a short
   `sst-edge train`, `sst-edge space sample` and `sst-edge export --no-measure`.
3. `.venv-device/bin/sst-edge` runs the device verbs as the README shows them (enroll, classify, classify
   --json, classify --stream, gallery list / rename / remove, eval --model) and the device step of
   profiling (`profile --run-bundle`, between the host's --bundle and --from-bundle); the full install
   runs the same verbs on the same clips.
4. The two installs must agree: every enrolled clip's features (max abs diff <= 1e-5), the classify labels
   and confidences, the stream windows, the eval accuracies; and the device's features must equal those of
   the evaluation preprocessing written out here independently (`reference_clip`), so a preprocessing bug
   that both installs share is caught too.

Any failing command stops the check with a non-zero exit that names it. Work happens in a temporary
folder (kept with --keep); .venv-device stays (gitignored) for inspection.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEVICE_VENV = ROOT / ".venv-device"
FULL_VENV = ROOT / ".venv"
# Distributions the device half must not pull in (pip names).
HOST_DISTRIBUTIONS = ("torch", "torchvision", "nni", "fvcore", "onnx", "onnxscript", "lightning",
                      "pytorch-lightning", "matplotlib", "scipy")
FEATURE_TOL = 1e-5
SIZE_GOAL = 0.2  # the device venv under a fifth of the full one

TIMES: dict[str, float] = {}  # seconds per stage
STAGE = ["setup"]


class CheckFailed(Exception):
    pass


# ----------------------------------------------------------------------------------------- reference
def reference_clip(path: str | Path, preprocess: dict[str, Any], decoder: Any) -> Any:
    """The evaluation preprocessing of a model card, written out without `sst_edge.device.preprocess`:
    T frames at the centres of T equal segments, decoded with the shorter side resized to `resize`
    (aspect kept; the decoder resizes), a centre crop of size x size, RGB / 255 normalised by the card's
    mean and std, float32 ``[T, 3, size, size]``. `decoder` is an `sst_edge` decoder (it supplies pixels)."""
    import numpy as np

    info = decoder.info(path)
    n, t = info.num_frames, int(preprocess["frames"])
    r, s = int(preprocess["resize"]), int(preprocess["size"])
    idx = [min(n - 1, math.floor((i + 0.5) * (n / t))) for i in range(t)]
    h, w = info.height, info.width
    size = (r, max(r, int(round(w * r / h)))) if h <= w else (max(r, int(round(h * r / w))), r)
    frames = decoder.read(path, idx, size)  # uint8 [T, H, W, 3]
    top, left = (frames.shape[1] - s) // 2, (frames.shape[2] - s) // 2
    crop = frames[:, top:top + s, left:left + s].astype(np.float64) / 255.0
    x = (crop - np.asarray(preprocess["mean"], np.float64)) / np.asarray(preprocess["std"], np.float64)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


# ------------------------------------------------------------------------------------------ commands
def say(text: str) -> None:
    print(text, flush=True)


def stage(name: str, title: str) -> None:
    STAGE[0] = name
    say(f"\n== {title}")


def run(step: str, cmd: Sequence[str | Path], cwd: Path = ROOT, capture: bool = False,
        timeout: float = 900) -> str:
    """Run one command; on a non-zero exit, print its output and stop the check naming the command."""
    argv = [str(c) for c in cmd]
    shown = " ".join(argv).replace(str(ROOT) + "/", "")
    say(f"$ {shown}")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if argv[0].startswith(str(DEVICE_VENV)) or argv[1:3] == ["-m", "venv"]:  # nothing from outside it
        env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    t0 = time.perf_counter()
    try:
        r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
                           check=False)
    except subprocess.TimeoutExpired as e:
        raise CheckFailed(f"{step}: `{shown}` did not finish in {timeout:.0f} s") from e
    TIMES[STAGE[0]] = TIMES.get(STAGE[0], 0.0) + time.perf_counter() - t0
    if r.returncode != 0:
        say(r.stdout[-4000:])
        say(r.stderr[-4000:])
        raise CheckFailed(f"{step}: `{shown}` exited {r.returncode}")
    if not capture:
        for line in [ln for ln in r.stdout.splitlines() if ln.strip()][:25]:
            say(f"    {line}")
    return r.stdout


def du_bytes(path: Path) -> int:
    """Size on disk (`du -skD`), in bytes."""
    out = subprocess.run(["du", "-skD", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) * 1024


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


# -------------------------------------------------------------------------------------------- stages
def make_device_venv(python: str) -> dict[str, Any]:
    stage("device install", f"1. the device half: {DEVICE_VENV.name} ({python}), "
                            "pip install -c constraints.txt '.[cpu]'")
    if DEVICE_VENV.exists():
        shutil.rmtree(DEVICE_VENV)
    run("device venv", [python, "-m", "venv", DEVICE_VENV])
    py = DEVICE_VENV / "bin" / "python"
    run("device install", [py, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", ".[cpu]"])
    listing = json.loads(run("device pip list", [py, "-m", "pip", "list", "--format", "json"], capture=True))
    say("    " + ", ".join(f"{d['name']}=={d['version']}" for d in listing))
    names = {d["name"].lower().replace("_", "-") for d in listing}
    found = sorted(names & set(HOST_DISTRIBUTIONS))
    if found:
        raise CheckFailed(f"the device install pulled host-only libraries: {', '.join(found)}")
    where = run("device sst_edge", [py, "-c", "import sst_edge; print(sst_edge.__file__)"], cwd=Path("/"),
                capture=True).strip()
    if not where.startswith(str(DEVICE_VENV)):
        raise CheckFailed(f"the device venv imports sst_edge from {where}, not from its own site-packages")
    dev, full = du_bytes(DEVICE_VENV), du_bytes(FULL_VENV)
    ratio = dev / full
    say(f"    size on disk: {DEVICE_VENV.name} {mib(dev)}, {FULL_VENV.name} {mib(full)}, ratio {ratio:.3f} "
        f"(goal < {SIZE_GOAL}: {'met' if ratio < SIZE_GOAL else 'NOT met'})")
    return {"device_bytes": dev, "full_bytes": full, "ratio": ratio, "packages": len(listing)}


def host_half(work: Path, full: Path) -> dict[str, Any]:
    stage("host half", "2. the host half (full install): data, a short training run, a subnet, the export")
    run("data synth", [full, "data", "synth", "--out", "data", "--classes", "12", "--clips", "6"], cwd=work)
    run("train", [full, "train", "--space", "sst_tiny", "--data", "data", "--out", "runs/tiny", "--way", "3",
                  "--episodes", "12", "--epochs", "1", "--lr-warmup", "4", "--val-episodes", "0",
                  "--workers", "0", "--no-progress"], cwd=work)
    run("space sample", [full, "space", "sample", "--space", "sst_tiny", "--seed", "3", "--out", "best.json"],
        cwd=work)
    run("export", [full, "export", "--subnet", "best.json", "--weights", "runs/tiny", "--target", "cpu-fp32",
                   "--out", "models/tiny", "--no-measure", "--no-progress"], cwd=work)

    from sst_edge.data.encode import write_video
    from sst_edge.device.datasets import load_splits
    from sst_edge.device.decoders import make_decoder

    test = load_splits(work / "data").test
    labels = test.classes[:3]
    enroll = {lb: [str(p.relative_to(work)) for p in test.clips[lb][:3]] for lb in labels}
    queries = [str(test.clips[lb][-1].relative_to(work)) for lb in labels]
    dec = make_decoder("pyav")
    frames = [dec.read(work / q, range(dec.info(work / q).num_frames)) for q in queries]
    import numpy as np

    write_video(work / "long.mp4", np.concatenate(frames))  # 3 actions back to back, 12 fps
    return {"labels": labels, "enroll": enroll, "queries": queries, "long": "long.mp4"}


def device_verbs(tag: str, exe: Path, work: Path, scene: dict[str, Any], full_check: bool) -> dict[str, Any]:
    """The README's device verbs with `exe` (.venv-device/bin/sst-edge or .venv/bin/sst-edge)."""
    gallery = f"gallery-{tag}"
    for lb, clips in scene["enroll"].items():
        run(f"{tag} enroll", [exe, "enroll", "--model", "models/tiny", "--gallery", gallery, "--label", lb,
                              *clips, "--no-progress"], cwd=work)
    if full_check:
        run(f"{tag} classify", [exe, "classify", "--model", "models/tiny", "--gallery", gallery,
                                scene["queries"][0], "--no-progress"], cwd=work)
    out = {"classify": json.loads(run(f"{tag} classify --json", [
        exe, "classify", "--model", "models/tiny", "--gallery", gallery, *scene["queries"], "--json",
        "--no-progress"], cwd=work, capture=True))}
    stream = [exe, "classify", "--model", "models/tiny", "--gallery", gallery, "--stream", scene["long"],
              "--span", "2", "--stride", "1", "--smooth", "3"]
    if full_check:
        run(f"{tag} stream", stream, cwd=work)
    out["stream"] = json.loads(run(f"{tag} stream --json", [*stream, "--json"], cwd=work, capture=True))
    if full_check:
        run(f"{tag} gallery list", [exe, "gallery", "list", gallery], cwd=work)
    out["gallery"] = json.loads(run(f"{tag} gallery list --json", [exe, "gallery", "list", gallery, "--model",
                                                                    "models/tiny", "--json"],
                                    cwd=work, capture=True))
    if full_check:
        edit = f"{gallery}-edit"
        shutil.copytree(work / gallery, work / edit)
        first, second = scene["labels"][:2]
        run(f"{tag} gallery rename", [exe, "gallery", "rename", edit, first, "renamed"], cwd=work)
        run(f"{tag} gallery remove", [exe, "gallery", "remove", edit, "--label", second], cwd=work)
        left = json.loads(run(f"{tag} gallery list", [exe, "gallery", "list", edit, "--json"], cwd=work,
                              capture=True))
        if sorted(left["labels"]) != sorted(["renamed", scene["labels"][2]]):
            raise CheckFailed(f"{tag}: after rename and remove the gallery holds {sorted(left['labels'])}")
    run(f"{tag} eval --model", [exe, "eval", "--model", "models/tiny", "--data", "data", "--way", "3",
                                "--episodes", "20", "--head", "both", "--out", f"eval-{tag}.json",
                                "--no-progress"], cwd=work)
    out["eval"] = json.loads((work / f"eval-{tag}.json").read_text())
    out["gallery_dir"] = work / gallery
    return out


def bundle_steps(work: Path, full: Path, device: Path) -> None:
    """Profiling without torch: the host writes a bundle, the device times it, the host builds the table."""
    run("host profile --bundle", [full, "profile", "--space", "sst_tiny", "--target", "cpu-fp32", "--bundle",
                                  "bundle", "--validate", "2", "--quick", "--no-progress"], cwd=work)
    run("device profile --run-bundle", [device, "profile", "--run-bundle", "bundle", "--quick",
                                        "--no-progress"], cwd=work)
    run("host profile --from-bundle", [full, "profile", "--from-bundle", "bundle", "--out",
                                       "sst_tiny.cpu-fp32.json", "--no-progress"], cwd=work)
    run("host profile --table", [full, "profile", "--table", "sst_tiny.cpu-fp32.json"], cwd=work)


def compare(work: Path, scene: dict[str, Any], dev: dict[str, Any], ful: dict[str, Any]) -> dict[str, float]:
    import numpy as np

    from sst_edge.device.card import load_card
    from sst_edge.device.decoders import make_decoder
    from sst_edge.runtime.engine import FewShotRuntime
    from sst_edge.runtime.gallery import Gallery

    stage("compare", "4. the device half against the full install")
    card = load_card(work / "models" / "tiny")
    g_dev, g_full = Gallery.open(dev["gallery_dir"], card), Gallery.open(ful["gallery_dir"], card)
    by_source = {r.source: g_full.features(r) for recs in g_full.labels.values() for r in recs}
    rt = FewShotRuntime(work / "models" / "tiny")
    dec = make_decoder(rt.decoder_name)
    install_diff = ref_diff = 0.0
    n = 0
    for recs in g_dev.labels.values():
        for r in recs:
            f = g_dev.features(r)
            install_diff = max(install_diff, float(np.abs(f - by_source[r.source]).max()))
            src = Path(r.source) if Path(r.source).is_absolute() else work / r.source
            ref = rt.embed(reference_clip(src, card.preprocess.to_dict(), dec)[None])[0]
            ref_diff = max(ref_diff, float(np.abs(f - ref).max()))
            n += 1
    say(f"    features of {n} enrolled clips: device vs full install max abs diff {install_diff:.2e}; "
        f"device vs the preprocessing written out here {ref_diff:.2e} (limit {FEATURE_TOL:g})")
    if n != sum(len(v) for v in scene["enroll"].values()) or len(by_source) != n:
        raise CheckFailed(f"{n} clips in the device gallery, {len(by_source)} in the full one")
    if install_diff > FEATURE_TOL:
        raise CheckFailed(f"the device's features differ from the full install's by {install_diff:.3g}")
    if ref_diff > FEATURE_TOL:
        raise CheckFailed(f"the device's features differ by {ref_diff:.3g} from those of the card's "
                          "preprocessing written out in reference_clip (a preprocessing bug both share?)")

    conf_diff = 0.0
    for a, b in zip(dev["classify"]["results"], ful["classify"]["results"], strict=True):
        if (a["clip"], a["label"], [x["label"] for x in a["ranking"]]) != \
                (b["clip"], b["label"], [x["label"] for x in b["ranking"]]):
            raise CheckFailed(f"classify: device says {a['label']} for {a['clip']}, full install "
                              f"{b['label']}")
        conf_diff = max([conf_diff, *(abs(x["confidence"] - y["confidence"])
                                      for x, y in zip(a["ranking"], b["ranking"], strict=True))])
    labels = [r["label"] for r in dev["classify"]["results"]]
    say(f"    classify: same labels {labels} (queries of {scene['labels']}), confidences within "
        f"{conf_diff:.1e}")
    sw = [(w["start_frame"], w["end_frame"], w["label"]) for w in dev["stream"]["spans"]]
    if sw != [(w["start_frame"], w["end_frame"], w["label"]) for w in ful["stream"]["spans"]]:
        raise CheckFailed(f"stream windows differ: device {sw}, full {ful['stream']['windows']}")
    say(f"    stream: same {len(sw)} windows {[w[2] for w in sw]}")
    if dev["eval"]["accuracy"] != ful["eval"]["accuracy"]:
        raise CheckFailed(f"eval --model: device {dev['eval']['accuracy']}, full {ful['eval']['accuracy']}")
    say(f"    eval --model: same accuracies {dev['eval']['accuracy']}")
    cal = {k: (v["temperature"], v["threshold"]) for k, v in dev["gallery"]["calibration"].items()}
    if cal != {k: (v["temperature"], v["threshold"]) for k, v in ful["gallery"]["calibration"].items()}:
        raise CheckFailed("the galleries' calibrations differ")
    if conf_diff > FEATURE_TOL:
        raise CheckFailed(f"classify confidences differ by {conf_diff:.2e}")
    return {"install_diff": install_diff, "reference_diff": ref_diff, "confidence_diff": conf_diff}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default="python3", help="interpreter for .venv-device (default python3)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)
    if Path(sys.prefix).resolve() != FULL_VENV.resolve():
        say(f"note: running under {sys.prefix}, not {FULL_VENV} (make device-check uses .venv/bin/python)")
    full = Path(sys.prefix) / "bin" / "sst-edge"
    device = DEVICE_VENV / "bin" / "sst-edge"
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="sst-edge-device-check-"))
    try:
        sizes = make_device_venv(args.python)
        scene = host_half(work, full)
        stage("device verbs", "3. the device verbs with .venv-device/bin/sst-edge, then the same with the "
                              "full install")
        run("device --help", [device, "--help"], cwd=work, capture=True)
        dev = device_verbs("device", device, work, scene, full_check=True)
        STAGE[0] = "profiling bundle"
        bundle_steps(work, full, device)
        STAGE[0] = "full-install verbs"
        ful = device_verbs("full", full, work, scene, full_check=False)
        diffs = compare(work, scene, dev, ful)
    except CheckFailed as e:
        say(f"\ndevice-check FAILED: {e}" + (f"\n(work folder kept: {work})" if args.keep else ""))
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - t0
    say("\n== summary")
    say("  " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMES.items()) + f"; total {total:.0f} s")
    say(f"  .venv-device {mib(sizes['device_bytes'])} ({sizes['packages']} packages), .venv "
        f"{mib(sizes['full_bytes'])}: ratio {sizes['ratio']:.3f}")
    say(f"  features: device vs full max abs diff {diffs['install_diff']:.2e}, vs reference preprocessing "
        f"{diffs['reference_diff']:.2e}")
    if args.keep:
        say(f"  work folder kept: {work}")
    say("device-check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
