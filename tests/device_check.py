"""`make device-check` and `make device-check-lowest`: the device half installed as a user installs it, run
end to end on a real model and compared with the full install.

    python -m tests.device_check --python python3 [--lowest] [--host-work DIR]   (repository root, .venv)

1. A fresh venv made with `--python`'s interpreter gets `pip install -c PINS '.[cpu,openvino]'` (a built
   wheel, not editable; torch is never installed first). PINS is constraints.txt (`.venv-device`: the versions
   verified together), or with --lowest the lowest versions pyproject.toml allows (`.venv-device-lowest`:
   `lowest_pins` reads its `>=` bounds at run time; what they do not pin resolves as pip resolves it). Its
   `pip list` is printed, with --lowest each pinned version is checked, and none of the host's libraries
   may be in it; the size on disk of the venv and of .venv is printed with the ratio.
2. The full install (this interpreter, .venv) plays the host: `sst-edge data synth` (and a query clip
   written with a display-rotation flag, as phone videos have), a short `sst-edge train`, `sst-edge space
   sample`, `sst-edge export --no-measure` (and a cca run and model), the device verbs (`VERBS`) and
   `profile --bundle`. With
   --host-work all of this is kept in DIR and reused while nothing it depends on changed (`fingerprint`):
   `make device-check` and `make device-check-lowest` share one, so the second runs only the device's part.
3. The venv's `sst-edge` runs the device verbs as the README shows them (`VERBS`: enroll, classify,
   classify --json, classify --stream, gallery list / rename / remove, eval --model, and enroll + classify
   --head cca with the cca model: the numpy cca head from its head.safetensors) and the device step
   of profiling (`profile --run-bundle`, between the host's --bundle and --from-bundle).
4. The two installs must agree (each verb's `same`): every enrolled clip's features (max abs diff <=
   1e-5), the classify labels and confidences, the stream windows, the calibrations, the eval accuracies;
   and the device's features must equal those of the evaluation preprocessing written out here
   independently (`reference_clip`), so a preprocessing bug that both installs share is caught too.

Any failing command stops the check with a non-zero exit that names it (its verb and install). Work happens
in --host-work or a temporary folder (kept with --keep); the venv stays (gitignored) for inspection.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FULL_VENV = ROOT / ".venv"
# Distributions the device half must not pull in (pip names).
HOST_DISTRIBUTIONS = ("torch", "torchvision", "nni", "fvcore", "onnx", "onnxscript", "lightning",
                      "pytorch-lightning", "matplotlib", "scipy")
FEATURE_TOL = 1e-5
SIZE_GOAL = 0.2  # the device venv under a fifth of the full one
DEVICE_EXTRAS = ("cpu", "openvino")  # the device half as the README installs it: '.[cpu,openvino]'
OPENVINO_MODEL = "models/tiny-ov"  # the same subnet and weights exported for cpu-openvino (hint: auto)
CCA_MODEL = "models/tiny-cca"  # the same subnet of a run trained through the cca head (cpu-fp32)
# ... and with the bf16 hint fixed (a copy of the target), where the host runs bf16 natively (AMX or
# AVX512-BF16): auto keeps fp32 for sst_tiny where bf16 is not faster, and bf16 is where OpenVINO differs
OPENVINO_BF16_MODEL = "models/tiny-ov-bf16"
# the lowest frame cosine between the cpu-openvino and cpu-fp32 models' features: OpenVINO's bf16 hint
# (where export chose it) against ONNX Runtime fp32, the gate export holds it to (deploy/checks.py)
OPENVINO_MIN_COSINE = 0.999
OPENVINO_EVAL_POINTS = 2.0  # eval --model accuracy: at most this far from cpu-fp32's, in points

TIMES: dict[str, float] = {}  # seconds per stage
STAGE = ["setup"]


class CheckFailed(Exception):
    pass


@dataclass(frozen=True)
class Install:
    """One way to install the device half: its venv, the tag of its outputs, and the pins pip gets."""

    tag: str  # names its galleries and files, and its failures ("device-lowest enroll: ...")
    venv: Path
    lowest: bool  # True: the lowest versions pyproject.toml allows; False: constraints.txt

    @property
    def check(self) -> str:
        return "device-check-lowest" if self.lowest else "device-check"


PINNED = Install("device", ROOT / ".venv-device", lowest=False)
LOWEST = Install("device-lowest", ROOT / ".venv-device-lowest", lowest=True)


# -------------------------------------------------------------------------------------- lowest pins
LOWER_BOUNDS = (">=", "~=", "==")  # operators whose version is the lowest one allowed


def lowest_pins(pyproject: str, extras: Sequence[str] = DEVICE_EXTRAS) -> list[str]:
    """`name==version[; marker]` for every dependency of the project and of `extras` (the project's own
    extras named inside an extra are followed), at the lowest version its specifier allows: so the
    declared bottom of each range is what gets installed and tested. Extras of a dependency are dropped
    (pip constraints take none); markers are kept. A dependency without a lowest version (only `<`,
    `>`, `!=`, a wildcard) or whose bound is itself excluded is a `CheckFailed` naming it."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10 (requires-python's lowest): pip's copy of tomli
        from pip._vendor import tomli as tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    project = tomllib.loads(pyproject)["project"]
    own = canonicalize_name(project["name"])
    optional = project.get("optional-dependencies", {})
    texts: list[str] = []
    todo: list[str] = []  # extras to read: the project's own named in its dependencies, then `extras`
    seen: set[str] = set()

    def take(group: Sequence[str]) -> None:
        for text in group:
            req = Requirement(text)
            if canonicalize_name(req.name) == own:
                todo.extend(sorted(req.extras))
            else:
                texts.append(text)

    take(project.get("dependencies", []))
    todo.extend(extras)
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise CheckFailed(f"pyproject.toml: no extra [{extra}] (it has {', '.join(optional) or 'none'})")
        seen.add(extra)
        take(optional[extra])
    pins: list[str] = []
    for text in texts:
        req = Requirement(text)
        lows = [s.version for s in req.specifier if s.operator in LOWER_BOUNDS]
        if not lows or any("*" in v for v in lows):
            raise CheckFailed(f"pyproject.toml: {text!r} states no lowest version (>=, ~= or ==), so its "
                              "bottom cannot be installed and tested")
        low = max(lows, key=Version)
        if not req.specifier.contains(low, prereleases=True):
            raise CheckFailed(f"pyproject.toml: {text!r}: its lowest bound {low} is itself excluded")
        pin = f"{req.name}=={low}" + (f"; {req.marker}" if req.marker is not None else "")
        if pin not in pins:
            pins.append(pin)
    return pins


def check_lowest_installed(pins: Sequence[str], listing: Sequence[dict[str, str]]) -> str:
    """Each pin's version is the one installed (or its marker is false here): a line for the log."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    have = {canonicalize_name(d["name"]): d["version"] for d in listing}
    shown = []
    for pin in pins:
        req = Requirement(pin)
        want = next(iter(req.specifier)).version
        got = have.get(canonicalize_name(req.name))
        if got is None:
            if req.marker is None or req.marker.evaluate():
                raise CheckFailed(f"{req.name} {want} (pyproject.toml's lowest) is not installed")
            shown.append(f"{req.name} not here ({req.marker})")
        elif Version(got) != Version(want):
            raise CheckFailed(f"{req.name} {got} is installed, not {want}, the lowest pyproject.toml allows")
        else:
            shown.append(f"{req.name} {got}")
    return ", ".join(shown)


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
    if argv[0].startswith(str(ROOT / ".venv-device")) or argv[1:3] == ["-m", "venv"]:  # nothing from outside
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


def fingerprint(work: Path) -> str:
    """What the host half depends on: the package's code and data, pyproject.toml, constraints.txt, this
    file, the full install's interpreter and distributions, and where the work lies (galleries hold
    absolute paths). A change to any of them makes --host-work build the host half again."""
    h = hashlib.sha256()
    files = [p for top in ("sst_edge", "search_spaces", "export", "latency_tables")
             for p in sorted((ROOT / top).rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    for p in [*files, ROOT / "pyproject.toml", ROOT / "constraints.txt", Path(__file__).resolve()]:
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    dists = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
    h.update("\n".join([sys.prefix, sys.version, str(work.resolve()), *dists]).encode())
    return h.hexdigest()[:16]


# -------------------------------------------------------------------------------------------- stages
def make_device_venv(python: str, install: Install) -> dict[str, Any]:
    venv = install.venv
    pins_file = ROOT / "constraints.txt"
    pins: list[str] = []
    if install.lowest:
        pins = lowest_pins((ROOT / "pyproject.toml").read_text(), DEVICE_EXTRAS)
        what = "the lowest versions pyproject.toml allows: " + ", ".join(p.split(";")[0] for p in pins)
    else:
        what = f"pip install -c constraints.txt '.[{','.join(DEVICE_EXTRAS)}]'"
    stage("device install", f"1. the device half: {venv.name} ({python}), {what}")
    if venv.exists():
        shutil.rmtree(venv)
    run("device venv", [python, "-m", "venv", venv])
    py = venv / "bin" / "python"
    if install.lowest:
        pins_file = venv / "lowest-constraints.txt"  # kept in the venv for inspection
        pins_file.write_text("# the lowest versions pyproject.toml allows (tests/device_check.py)\n"
                             + "\n".join(pins) + "\n")
    run("device install", [py, "-m", "pip", "install", "-q", "-c", pins_file,
                           f".[{','.join(DEVICE_EXTRAS)}]"])
    listing = json.loads(run("device pip list", [py, "-m", "pip", "list", "--format", "json"], capture=True))
    say("    " + ", ".join(f"{d['name']}=={d['version']}" for d in listing))
    if install.lowest:
        say("    at pyproject.toml's lowest: " + check_lowest_installed(pins, listing))
    names = {d["name"].lower().replace("_", "-") for d in listing}
    found = sorted(names & set(HOST_DISTRIBUTIONS))
    if found:
        raise CheckFailed(f"the device install pulled host-only libraries: {', '.join(found)}")
    where = run("device sst_edge", [py, "-c", "import sst_edge; print(sst_edge.__file__)"], cwd=Path("/"),
                capture=True).strip()
    if not where.startswith(str(venv)):
        raise CheckFailed(f"the device venv imports sst_edge from {where}, not from its own site-packages")
    dev, full = du_bytes(venv), du_bytes(FULL_VENV)
    ratio = dev / full
    say(f"    size on disk: {venv.name} {mib(dev)}, {FULL_VENV.name} {mib(full)}, ratio {ratio:.3f} "
        f"(goal < {SIZE_GOAL}: {'met' if ratio < SIZE_GOAL else 'NOT met'})")
    return {"device_bytes": dev, "full_bytes": full, "ratio": ratio, "packages": len(listing)}


def host_half(work: Path, full: Path) -> dict[str, Any]:
    run("data synth", [full, "data", "synth", "--out", "data", "--classes", "12", "--clips", "6"], cwd=work)
    run("train", [full, "train", "--space", "sst_tiny", "--data", "data", "--out", "runs/tiny", "--way", "3",
                  "--episodes", "12", "--epochs", "1", "--lr-warmup", "4", "--val-episodes", "0",
                  "--workers", "0", "--no-progress"], cwd=work)
    # the learned head: a run trained through cca ships its weights (head.safetensors) for numpy on the device
    run("train --head cca", [full, "train", "--space", "sst_tiny", "--data", "data", "--out", "runs/tiny-cca",
                             "--way", "3", "--episodes", "12", "--epochs", "1", "--lr-warmup", "4",
                             "--val-episodes", "0", "--workers", "0", "--head", "cca", "--no-progress"],
        cwd=work)
    run("space sample", [full, "space", "sample", "--space", "sst_tiny", "--seed", "3", "--out", "best.json"],
        cwd=work)
    from sst_edge.device.openvino import native_bf16
    from sst_edge.resources import resolve

    exports = [("cpu-fp32", "models/tiny"), ("cpu-openvino", OPENVINO_MODEL)]
    if native_bf16():
        bf16 = work / "cpu-openvino-bf16.yaml"
        bf16.write_text(resolve("target", "cpu-openvino").read_text()
                        .replace("name: cpu-openvino", "name: cpu-openvino-bf16")
                        .replace("precision_hint: auto", "precision_hint: bf16"))
        exports.append((str(bf16), OPENVINO_BF16_MODEL))
    for target, out in exports:
        run(f"export {Path(target).stem}", [full, "export", "--subnet", "best.json", "--weights",
                                            "runs/tiny", "--target", target, "--out", out, "--no-measure",
                                            "--no-progress"], cwd=work)
    run("export cca", [full, "export", "--subnet", "best.json", "--weights", "runs/tiny-cca", "--target",
                       "cpu-fp32", "--out", CCA_MODEL, "--no-measure", "--no-progress"], cwd=work)

    from sst_edge.data.encode import write_video
    from sst_edge.device.datasets import load_splits
    from sst_edge.device.decoders import make_decoder

    test = load_splits(work / "data").test
    labels = test.classes[:3]
    enroll = {lb: [str(p.relative_to(work)) for p in test.clips[lb][:3]] for lb in labels}
    queries = [str(test.clips[lb][-1].relative_to(work)) for lb in labels]
    dec = make_decoder("pyav")

    def frames(clip: str | Path) -> Any:
        return dec.read(work / clip, range(dec.info(work / clip).num_frames))

    import numpy as np

    write_video(work / "long.mp4", np.concatenate([frames(q) for q in queries]))  # 3 actions back to back
    # a clip stored sideways with a display-rotation flag, as phone videos are: read upright (PyAV < 14.1
    # has no VideoFrame.rotation: sst_edge/device/avcompat.py)
    write_video(work / "rotated.mp4", np.rot90(frames(test.clips[labels[0]][3]), k=-1, axes=(1, 2)).copy(),
                rotation=90)
    queries.append("rotated.mp4")  # a query of labels[0], and enrolled alone in a gallery of its own
    return {"labels": labels, "enroll": enroll, "queries": queries, "long": "long.mp4",
            "rotated": "rotated.mp4", "openvino_models": [out for _, out in exports[1:]]}


# --------------------------------------------------------------------------------------- device verbs
@dataclass(frozen=True)
class VerbRun:
    """One install's run of the verbs: `exe` is its sst-edge; its outputs go to `work/tag/`."""

    tag: str
    exe: Path
    work: Path
    scene: dict[str, Any]
    full_check: bool  # also the human-readable forms and the gallery edits (the device install only)
    model: str = "models/tiny"  # the cpu-fp32 model; OPENVINO_MODEL for the cpu-openvino verbs

    @property
    def gallery(self) -> str:
        return f"{self.tag}/gallery"

    def run(self, verb: str, args: Sequence[str | Path], capture: bool = False) -> str:
        return run(f"{self.tag} {verb}", [self.exe, *args], cwd=self.work, capture=capture)

    def json(self, verb: str, args: Sequence[str | Path]) -> Any:
        return json.loads(self.run(verb, args, capture=True))


def do_enroll(v: VerbRun) -> dict[str, Any]:
    for lb, clips in v.scene["enroll"].items():
        v.run("enroll", ["enroll", "--model", v.model, "--gallery", v.gallery, "--label", lb, *clips,
                         "--no-progress"])
    rotated = f"{v.tag}/rotated"  # its features are compared: a clip read the wrong way up differs a lot
    v.run("enroll", ["enroll", "--model", v.model, "--gallery", rotated, "--label", "rotated",
                     v.scene["rotated"], "--no-progress"])
    return {"gallery": str(v.work / v.gallery), "rotated": str(v.work / rotated)}


def do_classify(v: VerbRun) -> Any:
    args = ["classify", "--model", v.model, "--gallery", v.gallery]
    if v.full_check:
        v.run("classify", [*args, v.scene["queries"][0], "--no-progress"])
    return v.json("classify --json", [*args, *v.scene["queries"], "--json", "--no-progress"])


def do_cca(v: VerbRun) -> Any:
    """enroll and classify with the cca model: the numpy cca head from the model's head.safetensors."""
    gallery = f"{v.tag}/cca-gallery"
    for lb, clips in v.scene["enroll"].items():
        v.run("cca enroll", ["enroll", "--model", CCA_MODEL, "--gallery", gallery, "--label", lb, *clips,
                             "--no-progress"])
    out = v.json("cca classify --json", ["classify", "--model", CCA_MODEL, "--gallery", gallery, "--head",
                                         "cca", *v.scene["queries"], "--json", "--no-progress"])
    cal = json.loads((v.work / gallery / "gallery.json").read_text())["calibration"]
    if "cca" not in cal:
        raise CheckFailed(f"cca: the gallery of {CCA_MODEL} holds no calibration of the cca head")
    return out


def same_cca(work: Path, scene: dict[str, Any], dev: Any, ful: Any) -> str:
    line = same_classify(work, scene, dev, ful).split(" (queries")[0]  # the same comparison
    return f"cca {line}, numpy cca head from {CCA_MODEL}/head.safetensors (queries of {scene['labels']})"


def do_stream(v: VerbRun) -> Any:
    args = ["classify", "--model", v.model, "--gallery", v.gallery, "--stream", v.scene["long"],
            "--span", "2", "--stride", "1", "--smooth", "3"]
    if v.full_check:
        v.run("classify --stream", args)
    return v.json("classify --stream --json", [*args, "--json"])


def do_gallery(v: VerbRun) -> Any:
    if v.full_check:
        v.run("gallery list", ["gallery", "list", v.gallery])
        edit = f"{v.gallery}-edit"
        shutil.copytree(v.work / v.gallery, v.work / edit)
        first, second = v.scene["labels"][:2]
        v.run("gallery rename", ["gallery", "rename", edit, first, "renamed"])
        v.run("gallery remove", ["gallery", "remove", edit, "--label", second])
        left = v.json("gallery list", ["gallery", "list", edit, "--json"])
        if sorted(left["labels"]) != sorted(["renamed", v.scene["labels"][2]]):
            raise CheckFailed(f"{v.tag}: after rename and remove the gallery holds {sorted(left['labels'])}")
    return v.json("gallery list --json", ["gallery", "list", v.gallery, "--model", v.model, "--json"])


def do_eval(v: VerbRun) -> Any:
    out = f"{v.tag}/eval.json"
    v.run("eval --model", ["eval", "--model", v.model, "--data", "data", "--way", "3", "--episodes",
                           "20", "--head", "both", "--out", out, "--no-progress"])
    return json.loads((v.work / out).read_text())


def do_watch(v: VerbRun) -> Any:
    """watch on the long video as a file source (read as fast as inference takes it: every span scored),
    events on stdout and in an events file."""
    events = f"{v.tag}/events.jsonl"
    out = v.run("watch", ["watch", "--model", v.model, "--gallery", v.gallery, "--source",
                          v.scene["long"], "--span", "2", "--stride", "1", "--smooth", "3", "--events",
                          events], capture=True)
    printed = [json.loads(line) for line in out.splitlines() if line.strip()]
    kept = [json.loads(line) for line in (v.work / events).read_text().splitlines() if line.strip()]
    if printed != kept:
        raise CheckFailed(f"{v.tag} watch: the events file differs from stdout")
    return [{k: e[k] for k in ("kind", "label", "start_s", "end_s", "spans", "peak_confidence",
                               "mean_confidence") if k in e} | {"reason": e.get("reason")} for e in printed]


def same_features(work: Path, scene: dict[str, Any], dev: Any, ful: Any) -> str:
    import numpy as np

    from sst_edge.device.card import load_card
    from sst_edge.device.decoders import make_decoder
    from sst_edge.runtime.engine import FewShotRuntime
    from sst_edge.runtime.gallery import Gallery

    card = load_card(work / "models" / "tiny")
    g_dev = [Gallery.open(dev[k], card) for k in ("gallery", "rotated")]
    g_full = [Gallery.open(ful[k], card) for k in ("gallery", "rotated")]
    by_source = {r.source: g.features(r) for g in g_full for recs in g.labels.values() for r in recs}
    rt = FewShotRuntime(work / "models" / "tiny")
    dec = make_decoder(rt.decoder_name)
    install_diff = ref_diff = 0.0
    n = 0
    for gallery, r in [(g, r) for g in g_dev for recs in g.labels.values() for r in recs]:
        f = gallery.features(r)
        if r.source not in by_source:
            raise CheckFailed(f"enroll: the device enrolled {r.source}, the full install did not")
        install_diff = max(install_diff, float(np.abs(f - by_source[r.source]).max()))
        src = Path(r.source) if Path(r.source).is_absolute() else work / r.source
        ref = rt.embed(reference_clip(src, card.preprocess.to_dict(), dec)[None])[0]
        ref_diff = max(ref_diff, float(np.abs(f - ref).max()))
        n += 1
    if n != sum(len(v) for v in scene["enroll"].values()) + 1 or len(by_source) != n:
        raise CheckFailed(f"enroll: {n} clips in the device gallery, {len(by_source)} in the full one")
    if install_diff > FEATURE_TOL:
        raise CheckFailed(f"enroll: the device's features differ from the full install's by "
                          f"{install_diff:.3g}")
    if ref_diff > FEATURE_TOL:
        raise CheckFailed(f"enroll: the device's features differ by {ref_diff:.3g} from those of the card's "
                          "preprocessing written out in reference_clip (a preprocessing bug both share?)")
    return (f"features of {n} enrolled clips (one rotated): device vs full install max abs diff "
            f"{install_diff:.2e}; device vs the preprocessing written out here {ref_diff:.2e} "
            f"(limit {FEATURE_TOL:g})")


def same_classify(work: Path, scene: dict[str, Any], dev: Any, ful: Any) -> str:
    conf_diff = 0.0
    for a, b in zip(dev["results"], ful["results"], strict=True):
        if (a["clip"], a["label"], [x["label"] for x in a["ranking"]]) != \
                (b["clip"], b["label"], [x["label"] for x in b["ranking"]]):
            raise CheckFailed(f"classify: device says {a['label']} for {a['clip']}, full install "
                              f"{b['label']}")
        conf_diff = max([conf_diff, *(abs(x["confidence"] - y["confidence"])
                                      for x, y in zip(a["ranking"], b["ranking"], strict=True))])
    if conf_diff > FEATURE_TOL:
        raise CheckFailed(f"classify: confidences differ by {conf_diff:.2e}")
    labels = [r["label"] for r in dev["results"]]
    return (f"classify: same labels {labels} (queries of {scene['labels']}, then a rotated one of the "
            f"first), confidences within {conf_diff:.1e}")


def same_stream(work: Path, scene: dict[str, Any], dev: Any, ful: Any) -> str:
    def windows(doc: Any) -> list[tuple[int, int, str]]:
        return [(w["start_frame"], w["end_frame"], w["label"]) for w in doc["spans"]]

    if windows(dev) != windows(ful):
        raise CheckFailed(f"classify --stream: windows differ: device {windows(dev)}, full {windows(ful)}")
    return f"stream: same {len(windows(dev))} windows {[w[2] for w in windows(dev)]}"


CALIBRATION = ("temperature", "threshold", "score_threshold", "loo_accuracy")  # compared, within FEATURE_TOL


def same_gallery(work: Path, scene: dict[str, Any], dev: Any, ful: Any) -> str:
    def cal(doc: Any) -> dict[str, tuple[float, ...]]:
        return {k: tuple(float(v[f]) for f in CALIBRATION) for k, v in sorted(doc["calibration"].items())}

    a, b = cal(dev), cal(ful)
    if a.keys() != b.keys() or any(abs(x - y) > FEATURE_TOL for k in a
                                   for x, y in zip(a[k], b[k], strict=True)):
        raise CheckFailed(f"gallery list: the galleries' calibrations ({', '.join(CALIBRATION)}) differ: "
                          f"device {a}, full {b}")
    return f"gallery: same calibrations ({', '.join(CALIBRATION)}) {a}"


def same_watch(work: Path, scene: dict[str, Any], dev: Any, ful: Any) -> str:
    def key(e: dict[str, Any]) -> tuple:
        return (e["kind"], e["label"], e["start_s"], e["end_s"], e["spans"], e["reason"])

    if [key(e) for e in dev] != [key(e) for e in ful]:
        raise CheckFailed(f"watch: events differ: device {[key(e) for e in dev]}, "
                          f"full {[key(e) for e in ful]}")
    diff = max([0.0, *(abs(a[k] - b[k]) for a, b in zip(dev, ful, strict=True)
                       for k in ("peak_confidence", "mean_confidence"))])
    if diff > FEATURE_TOL:
        raise CheckFailed(f"watch: event confidences differ by {diff:.2e}")
    kinds = [(e["kind"], e["label"]) for e in dev]
    return f"watch: same {len(dev)} events {kinds}, confidences within {diff:.1e}"


def same_eval(work: Path, scene: dict[str, Any], dev: Any, ful: Any) -> str:
    if dev["accuracy"] != ful["accuracy"]:
        raise CheckFailed(f"eval --model: device {dev['accuracy']}, full {ful['accuracy']}")
    return f"eval --model: same accuracies {dev['accuracy']}"


@dataclass(frozen=True)
class Verb:
    """A device verb of the README: `run` it with one install (its result must be JSON: the full
    install's is kept with the host half), then `same` checks the device's against the full install's
    (raises `CheckFailed`, returns a line for the log)."""

    name: str
    run: Callable[[VerbRun], Any]
    same: Callable[[Path, dict[str, Any], Any, Any], str]


# In order: enroll makes the gallery the others read. One entry per verb.
VERBS: tuple[Verb, ...] = (
    Verb("enroll", do_enroll, same_features),
    Verb("classify", do_classify, same_classify),
    Verb("classify --stream", do_stream, same_stream),
    Verb("gallery", do_gallery, same_gallery),
    Verb("eval --model", do_eval, same_eval),
    Verb("watch", do_watch, same_watch),
    Verb("cca", do_cca, same_cca),
)


# What runs on the cpu-openvino model, compared with the same install's cpu-fp32 answers (`same_openvino`).
OPENVINO_VERBS = ("enroll", "classify", "classify --stream", "eval --model")


def run_openvino(v: VerbRun) -> dict[str, Any]:
    """The device verbs the issue names on the cpu-openvino model (outputs in work/TAG-openvino/)."""
    shutil.rmtree(v.work / v.tag, ignore_errors=True)
    (v.work / v.tag).mkdir()
    return {verb.name: verb.run(v) for verb in VERBS if verb.name in OPENVINO_VERBS}


def same_openvino(work: Path, model: str, ov: dict[str, Any], fp32: dict[str, Any]) -> list[str]:
    """cpu-openvino against cpu-fp32 in one install: the same labels (classify, stream windows), enrolled
    features within OPENVINO_MIN_COSINE, eval accuracies within OPENVINO_EVAL_POINTS."""
    import numpy as np

    from sst_edge.device.card import load_card
    from sst_edge.runtime.gallery import Gallery

    card_ov, card_fp = load_card(work / model), load_card(work / "models" / "tiny")
    g_ov = Gallery.open(ov["enroll"]["gallery"], card_ov)
    g_fp = Gallery.open(fp32["enroll"]["gallery"], card_fp)
    ref = {r.source: g_fp.features(r) for recs in g_fp.labels.values() for r in recs}
    worst = 1.0
    for recs in g_ov.labels.values():
        for r in recs:
            a = g_ov.features(r).reshape(-1, card_ov.feature_dim)
            b = ref[r.source].reshape(-1, card_fp.feature_dim)
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
            worst = min(worst, float(cos.min()))
    if worst < OPENVINO_MIN_COSINE:
        raise CheckFailed(f"{model} enroll: lowest frame cosine {worst:.5f} vs cpu-fp32 < "
                          f"{OPENVINO_MIN_COSINE}")
    hint = (card_ov.openvino or {}).get("precision_hint")
    labels = [[r["label"] for r in doc["results"]] for doc in (ov["classify"], fp32["classify"])]
    if labels[0] != labels[1]:
        raise CheckFailed(f"{model} classify: labels {labels[0]}, cpu-fp32 {labels[1]}")
    spans = [[w["label"] for w in doc["spans"]]
             for doc in (ov["classify --stream"], fp32["classify --stream"])]
    if spans[0] != spans[1]:
        raise CheckFailed(f"{model} classify --stream: windows {spans[0]}, cpu-fp32 {spans[1]}")
    acc = [doc["accuracy"] for doc in (ov["eval --model"], fp32["eval --model"])]
    diffs = {k: 100 * abs(float(acc[0][k]) - float(acc[1][k])) for k in acc[1]}
    if max(diffs.values(), default=0.0) > OPENVINO_EVAL_POINTS:
        raise CheckFailed(f"{model} eval --model: accuracies {acc[0]}, cpu-fp32 {acc[1]}")
    return [f"{model} (cpu-openvino, precision hint {hint}) vs cpu-fp32: enrolled features' lowest frame "
            f"cosine {worst:.6f} (gate {OPENVINO_MIN_COSINE}); same classify labels {labels[0]}; same stream "
            f"windows {spans[0]}; eval accuracies within {max(diffs.values(), default=0.0):.2f} points"]


def run_verbs(v: VerbRun) -> dict[str, Any]:
    shutil.rmtree(v.work / v.tag, ignore_errors=True)  # a reused work folder: this install's last outputs
    (v.work / v.tag).mkdir()
    return {verb.name: verb.run(v) for verb in VERBS}


def compare(work: Path, scene: dict[str, Any], dev: dict[str, Any], ful: dict[str, Any]) -> None:
    stage("compare", "4. the device half against the full install")
    for verb in VERBS:
        say("    " + verb.same(work, scene, dev[verb.name], ful[verb.name]))


def host_bundle(work: Path, full: Path) -> None:
    run("host profile --bundle", [full, "profile", "--space", "sst_tiny", "--target", "cpu-fp32", "--bundle",
                                  "bundle", "--validate", "2", "--quick", "--no-progress"], cwd=work)


def bundle_steps(work: Path, full: Path, device: Path, tag: str) -> None:
    """Profiling without torch: the host wrote a bundle (`host_bundle`), the device times a copy of it,
    the host builds the table."""
    shutil.copytree(work / "bundle", work / tag / "bundle")
    run(f"{tag} profile --run-bundle", [device, "profile", "--run-bundle", f"{tag}/bundle", "--quick",
                                        "--no-progress"], cwd=work)
    run("host profile --from-bundle", [full, "profile", "--from-bundle", f"{tag}/bundle", "--out",
                                       f"{tag}/sst_tiny.cpu-fp32.json", "--no-progress"], cwd=work)
    run("host profile --table", [full, "profile", "--table", f"{tag}/sst_tiny.cpu-fp32.json"], cwd=work)


HOST_FILE = "host.json"  # in --host-work: the fingerprint, the scene and the full install's answers
MADE_HERE = ".device-check"  # in --host-work from its start: the folder may be emptied


def host_work(work: Path, full: Path, reuse: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The host half and the full install's verbs in `work`: reused from an earlier run when `reuse` and
    its fingerprint still matches, else made anew (and recorded for the next run)."""
    stamp = work / HOST_FILE
    mark = fingerprint(work) if reuse else ""
    if reuse and stamp.is_file():
        doc = json.loads(stamp.read_text())
        if doc.get("fingerprint") == mark:
            stage("host half", f"2. the host half (full install): reused from {work} (fingerprint {mark}: "
                               "code, data and the full install as when it was made)")
            return doc["scene"], doc["full"]
        say(f"\n(the host half in {work} is out of date: made again)")
    if reuse:
        if work.is_dir() and any(work.iterdir()) and not (work / MADE_HERE).is_file():
            raise CheckFailed(f"--host-work {work} holds files but no {MADE_HERE}: not a folder this check "
                              "made, so it is not emptied (name a new or empty folder)")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / MADE_HERE).write_text("made by tests/device_check.py, which may empty it\n")
    stage("host half", "2. the host half (full install): data, a short training run, a subnet, the export, "
                       "the device verbs, the profiling bundle")
    scene = host_half(work, full)
    results = run_verbs(VerbRun("full", full, work, scene, full_check=False))
    host_bundle(work, full)
    if reuse:
        tmp = stamp.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fingerprint": mark, "scene": scene, "full": results}, indent=1))
        tmp.replace(stamp)
    return scene, results


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default="python3", help="interpreter for the device venv (default python3)")
    ap.add_argument("--lowest", action="store_true",
                    help="install the lowest versions pyproject.toml allows (.venv-device-lowest), not those "
                         "of constraints.txt (.venv-device)")
    ap.add_argument("--host-work", type=Path, default=None,
                    help="work here and keep the host half for the next run, which reuses it while its "
                         "fingerprint matches (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    args = ap.parse_args(argv)
    install = LOWEST if args.lowest else PINNED
    if Path(sys.prefix).resolve() != FULL_VENV.resolve():
        say(f"note: running under {sys.prefix}, not {FULL_VENV} (make device-check uses .venv/bin/python)")
    full = Path(sys.prefix) / "bin" / "sst-edge"
    device = install.venv / "bin" / "sst-edge"
    t0 = time.perf_counter()
    reuse = args.host_work is not None
    work = args.host_work.resolve() if reuse else Path(tempfile.mkdtemp(prefix="sst-edge-device-check-"))
    try:
        sizes = make_device_venv(args.python, install)
        scene, ful = host_work(work, full, reuse)
        stage("device verbs", f"3. the device verbs with {install.venv.name}/bin/sst-edge")
        run(f"{install.tag} --help", [device, "--help"], cwd=work, capture=True)
        dev = run_verbs(VerbRun(install.tag, device, work, scene, full_check=True))
        STAGE[0] = "openvino verbs"
        dev_ov = {m: run_openvino(VerbRun(f"{install.tag}-{Path(m).name}", device, work, scene,
                                          full_check=False, model=m))
                  for m in scene.get("openvino_models", [OPENVINO_MODEL])}
        STAGE[0] = "profiling bundle"
        bundle_steps(work, full, device, install.tag)
        compare(work, scene, dev, ful)
        for m, answers in dev_ov.items():
            for line in same_openvino(work, m, answers, dev):
                say("    " + line)
    except CheckFailed as e:
        kept = f"\n(work folder kept: {work})" if args.keep or reuse else ""
        say(f"\n{install.check} FAILED: {e}{kept}")
        return 1
    finally:
        if not args.keep and not reuse:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - t0
    say("\n== summary")
    say("  " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMES.items()) + f"; total {total:.0f} s")
    say(f"  {install.venv.name} {mib(sizes['device_bytes'])} ({sizes['packages']} packages), .venv "
        f"{mib(sizes['full_bytes'])}: ratio {sizes['ratio']:.3f}")
    if args.keep or reuse:
        say(f"  work folder kept: {work}")
    say(f"{install.check} passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
