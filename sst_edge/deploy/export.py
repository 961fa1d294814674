"""`sst-edge export`: one subnet with its trained weights -> a model directory a device can run.

Graphs that compute in lower precision than fp32 (int8, OpenVINO's bf16) are also checked against
PyTorch by feature cosine on real clips, and an OpenVINO target's precision hint is chosen there on
evidence (deploy/checks.py).

Steps, each of which can fail the export (nothing is left at `out` then): freeze the subnet with the
weights it inherits (or was fine-tuned with), export fp32 ONNX (TorchScript exporter, the target's opset,
dynamic batch, T/H/W fixed and the output pinned to [batch, T, C]), `onnx.checker` with the full check,
the static TensorRT check (a failure only fails TensorRT targets), parity against PyTorch on random clips
(max abs diff <= 1e-4; PyTorch on `--device`, TF32 off), then the target's precision step (int8
quantization, fp16) and the check of the graph it ships where that is not the fp32 one (the fp16 graph, or
the fp16 engine TensorRT builds, against PyTorch by feature cosine, wherever the provider is at hand), ONNX
Runtime's graph optimisation (checked by the parity session, which optimises at the target's level), a
latency measurement, and `card.json` with every file's sha256. The directory is built beside `out` and
renamed into place at the end.

TensorRT: the engine is the one ONNX Runtime's TensorRT provider builds, with the options every sst-edge
session passes (`device.session.tensorrt_options`), at export where the provider is installed (it is then
checked and cached) and otherwise at the first session on the device. The runtime loads that engine;
the card's trtexec command builds a standalone one for other runtimes (DeepStream), which sst-edge does not
load.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from tqdm import tqdm

from .. import __version__
from ..cost.flops import subnet_cost
from ..cost.latency import load_table
from ..cost.onnx_export import agreement, convert_fp16, export_onnx
from ..cost.profile import ort_opener, resolve_clock, timed
from ..device.card import CARD_FILE, ENGINE_FILE, MODEL_FILE, ModelCard, file_record, load_card
from ..device.cca import HEAD_FILE, save_head_file
from ..device.cca import card_record as cca_card_record
from ..device.evaluation import head_notes
from ..device.session import (
    INPUT_NAME,
    OUTPUT_NAME,
    available_providers,
    backend_available,
    cpu_session,
    make_session,
    ort_features,
)
from ..device.settings import HeadConfig
from ..device.targets import Target, load_target
from ..device.timing import TimingPolicy
from ..errors import SSTEdgeError
from ..fileio import exclusive_lock, interrupts_held, naming, sha256_file, utc_now
from ..space.config import SpaceConfig
from ..space.subnet import load_subnet
from ..space.supernet import freeze_subnet
from ..text import printable
from ..train.artifacts import choose_head, load_supernet
from ..train.device import exact_fp32, resolve_device
from .checks import check_line, choose_hint, cosine_check, with_hint
from .features import DEFAULT_CLIPS, check_clips, training_features
from .quantize import quantize_for_target
from .tensorrt import check_graph, trtexec_command

PARITY_TOL = 1e-4
PARITY_CLIPS = 3  # a batch of 2 and a batch of 1: the batch axis is dynamic
# The fp16 graph (or engine) a target ships, against PyTorch fp32: the lowest per-frame feature cosine
# allowed. fp16 rounding alone gives > 0.9999 on these models; an overflow gives NaN or far less.
FP16_MIN_COSINE = 0.999



def _sayer(progress: bool) -> Callable[[str], None]:
    """Step lines that do not break the progress bars around them (or nothing)."""

    return tqdm.write if progress else (lambda _msg: None)


# ---------------------------------------------------------------------------------------------- inputs
def load_export_subnet(subnet: str | Path, weights: str | Path) -> tuple[SpaceConfig, dict[str, Any],
                                                                         nn.Module, dict[str, Any]]:
    """The subnet document's space, its sample, the frozen module with trained weights, and the weights'
    metadata. Fine-tuned weights (one subnet) must be of this very subnet."""
    sub, config = load_subnet(subnet)
    supernet, meta = load_supernet(weights, config)
    tuned = meta.get("subnet")
    if tuned is not None and dict(tuned) != dict(sub.sample):
        diff = [f"{k}: weights {tuned[k]!r}, subnet {sub.sample[k]!r}" for k in sub.sample
                if tuned.get(k) != sub.sample[k]]
        raise SSTEdgeError("the weights were fine-tuned for another subnet", meta["path"], diff[:10])
    try:
        module = freeze_subnet(supernet, config, sub.sample)
    except SSTEdgeError as e:
        raise SSTEdgeError(f"cannot take this subnet from the weights: {e.message}", subnet,
                           e.problems) from None
    return config, dict(sub.sample), module.eval(), {**meta, "metrics": sub.metrics}


def _subnet_head_notes(metrics: dict[str, Any], head: HeadConfig, subnet: str | Path) -> list[str]:
    """A subnet document found with another head than the one exported (best.json records its head)."""

    searched = metrics.get("head") if isinstance(metrics, dict) else None
    if not isinstance(searched, dict):
        return []
    try:
        searched_head = HeadConfig.from_dict(searched)
    except (SSTEdgeError, TypeError, ValueError):
        return [f"the head recorded in {subnet} is not valid: {searched!r}"]
    return head_notes(searched_head, [head], str(subnet), "the subnet was searched with")


# ------------------------------------------------------------------------------------------ graph steps
def pin_output_shape(path: Path, frames: int, channels: int) -> None:
    """The exporter leaves output dims 1 and 2 symbolic (reshapes with -1 under a dynamic batch): pin them
    to (T, C), which TensorRT's "static apart from the batch" and the runtime's checks need."""
    model = onnx.load(str(path))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) != 3:
        raise SSTEdgeError(f"the exported output has {len(dims)} dimensions, expected 3 ([batch, T, C])",
                           path)
    for d, v in zip(dims[1:], (frames, channels), strict=True):
        d.ClearField("dim_param")
        d.dim_value = v
    onnx.save(model, str(path))


def check_onnx(path: Path) -> None:
    """onnx.checker with the full check (strict shape inference: the pinned output must be consistent)."""

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # onnx raises ValidationError, InferenceError...
        raise SSTEdgeError(f"onnx.checker rejected the exported model: {e}", path) from None


def parity_clips(config: SpaceConfig, n: int = PARITY_CLIPS, seed: int = 0) -> torch.Tensor:
    """Random clips as preprocessing makes them (normalised pixels, roughly N(0, 1))."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(config.input_shape(n), generator=g)


def reference_features(module: nn.Module, clips: torch.Tensor, device: torch.device) -> Any:
    """PyTorch's fp32 features of `clips` on `device` (TF32 off), as a numpy array: what every exported
    graph is compared with."""
    with torch.no_grad(), exact_fp32(device):
        return module.to(device)(clips.to(device)).cpu().numpy()


def parity(ref: Any, path: Path, target: Target, clips: torch.Tensor) -> dict[str, Any]:
    """Max abs diff between PyTorch's features `ref` and ONNX Runtime's (CPU) of the same clips."""
    got = ort_features(cpu_session(path, target), clips.numpy())
    if got.shape != ref.shape:
        raise SSTEdgeError(f"ONNX Runtime output shape {got.shape} differs from PyTorch's {ref.shape}", path)
    return agreement(ref, got)


def shipped_check(ref: Any, final: Path, target: Target, clips: torch.Tensor,
                  input_shape: tuple[int, ...]) -> dict[str, Any] | None:
    """The graph the target ships against PyTorch, where it is not the fp32 graph parity checked: the fp16
    graph of a CUDA target (on its provider, else on ONNX Runtime's CPU provider, which runs it too), the
    fp16 engine of a TensorRT target (only where the TensorRT provider is installed). None for fp32 and
    int8 targets (quantization checks int8 on episodes). A check that fails fails the export."""
    if target.precision != "fp16":
        return None
    trt = target.provider == "TensorrtExecutionProvider"
    sess, where = None, None
    if target.provider in available_providers():
        try:
            sess, where = make_session(final, target, input_shape), target.provider
        except SSTEdgeError as e:
            why = e.message
        else:
            why = ""
    else:
        why = f"{target.provider} is not installed here"
    if sess is None and trt:
        return {"graph": "fp16 TensorRT engine", "checked": False,
                "why": f"{why}: the engine is built, and can be checked, on the device (`sst-edge eval "
                       "--model` on a dataset)"}
    if sess is None:
        sess, where = cpu_session(final, target), "CPUExecutionProvider"
    got = ort_features(sess, clips.numpy())
    a = agreement(ref, got)
    rec = {"graph": "fp16 TensorRT engine" if trt else "fp16 graph", "checked": True, "provider": where,
           "min_cosine": a["min_cosine"], "mean_cosine": a["mean_cosine"],
           "max_abs_diff": a["max_abs_diff"], "gate_min_cosine": FP16_MIN_COSINE, "clips": a["clips"]}
    if not (np.isfinite(got).all() and a["min_cosine"] >= FP16_MIN_COSINE):
        raise SSTEdgeError(f"the {rec['graph']} this target ships disagrees with PyTorch: lowest frame "
                           f"cosine {a['min_cosine']:.4f} < {FP16_MIN_COSINE} on {where} (an fp16 "
                           "overflow?); export for an fp32 target instead", final)
    return rec


# ----------------------------------------------------------------------------------------- directories
def owned_model(out: Path) -> set[str] | None:
    """The names of a model folder that sst-edge wrote (its card's `files` and the card, exactly the
    folder's files), None when `out` does not exist or is empty; an SSTEdgeError naming what is not
    ours otherwise, with nothing touched. Only such a folder may be replaced."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise SSTEdgeError("the output exists and is not a folder (a file or a symbolic link): refusing to "
                           "replace it; choose another --out", out)
    names = {e.name for e in os.scandir(out)} if out.exists() else set()
    if not names:
        return None
    why: list[str] = []
    ours: set[str] = set()
    try:
        card = load_card(out)
        ours = {CARD_FILE, *card.files}
    except SSTEdgeError as e:
        why = [f"{CARD_FILE}: {printable(e.message)}"] if (out / CARD_FILE).exists() else []
    foreign = sorted(n for n in names if n not in ours or not (out / n).is_file() or (out / n).is_symlink())
    if foreign:
        raise SSTEdgeError("the output folder is not a model sst-edge wrote (a valid card whose files are "
                           "exactly the folder's): refusing to replace it, nothing was deleted; choose "
                           "another --out, or move these away", out,
                           why + [f"not written by sst-edge: {printable(n)}" for n in foreign[:10]])
    return names


def _check_out(out: Path, overwrite: bool) -> set[str] | None:
    owned = owned_model(out)
    if owned is not None and not overwrite:
        raise SSTEdgeError("a model already exists here (pass --overwrite to replace it)", out)
    return owned


@contextlib.contextmanager
def staging(out: Path, overwrite: bool = True,
            on_commit: Callable[[], None] | None = None) -> Iterator[Path]:
    """A directory beside `out` that replaces it only when the block succeeds (old model kept until then).

    One export at a time per `out`: a second one fails at once, cleanly, rather than replacing the first
    one's model behind its back (the lock is a hidden file beside `out`, removed after). The commit
    checks `out` again (it may have changed during the export), then renames with Ctrl-C held off, so it
    is never left halfway; `on_commit` runs inside it, once the new model is in place. Of the old model
    only the files it consists of are deleted; anything that appeared in it meanwhile is kept."""
    out.parent.mkdir(parents=True, exist_ok=True)
    busy = f"another sst-edge export is writing {out} now: wait for it, or choose another --out"
    with exclusive_lock(out.parent / f".{out.name}.export.lock", busy):
        yield from _staged(out, overwrite, on_commit)


def _staged(out: Path, overwrite: bool, on_commit: Callable[[], None] | None) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        with naming(out), interrupts_held():
            owned = _check_out(out, overwrite)
            old = None
            if owned is not None:
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
                os.replace(out, old / "model")
            os.replace(tmp, out)
            if on_commit is not None:
                on_commit()
        if old is not None:
            _remove_model(old, owned or set())
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_model(old: Path, names: set[str]) -> None:
    """Delete the replaced model's own files and its folders; keep (and say so) anything else in it."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (old / "model" / name).unlink()
    try:
        (old / "model").rmdir()
        old.rmdir()
    except OSError:
        warnings.warn(f"the replaced model's folder held files that appeared during the export; kept them "
                      f"in {old / 'model'}", stacklevel=2)


# ---------------------------------------------------------------------------------------------- latency
def measure_latency(paths: dict[str, Path], target: Target, config: SpaceConfig, rounds: int = 3,
                    progress: bool = False) -> dict[str, dict[str, Any]]:
    """Per-clip latency (batch 1) of each model file on the target, interleaved in one pool of rounds.
    Empty when the target's provider is not on this machine (a GPU target exported on a CPU box)."""
    if not backend_available(target):
        return {}
    x = parity_clips(config, 1).numpy()
    policy = replace(TimingPolicy(rounds=rounds, max_rounds=rounds + 2), clock=resolve_clock(target))
    openers = {k: ort_opener(p, target, x) for k, p in paths.items()}
    timings, _ = timed(openers, policy, 0, "measure latency", progress)
    return {k: {**t.to_dict(), "clock": policy.clock} for k, t in timings.items()}


def predicted_latency(config: SpaceConfig, sample: dict[str, Any], target: Target,
                      table: str | Path | None = None, hint: str | None = None) -> dict[str, Any]:
    """From `table`, else the local or shipped table of this space x target, if it describes the target
    (timed on whichever machine: the card predicts the target's latency, not the host's). An OpenVINO
    model's `hint` (the one export chose) noted when the table was timed at another."""

    name = str(table) if table is not None else f"{config.name}.{target.name}"
    try:
        table = load_table(name, config, target)
    except SSTEdgeError as e:
        return {"ms": None, "table": name, "why": e.message}
    rec = {"ms": round(table.predict_ms(sample), 4), "raw_ms": round(table.predict_ms(sample, raw=True), 4),
           "table": name}
    timed_at = str(table.fingerprint.get("precision", ""))
    if hint is not None and target.openvino and not timed_at.endswith(f"{hint} hint"):
        rec["note"] = f"the table was timed at '{timed_at}', the model runs at the {hint} hint export chose"
    return rec


# ------------------------------------------------------------------------------------------------ export
def export_model(subnet: str | Path, weights: str | Path, target: str | Path | Target, out: str | Path, *,
                 data: str | Path | None = None, quantization: str | None = None,
                 episodes: int = 100, latency_table: str | Path | None = None, measure: bool = True,
                 overwrite: bool = False, progress: bool = True, head_kind: str | None = None,
                 tau: float | None = None, window: int | None | str = "run",
                 device: str = "auto", on_commit: Callable[[], None] | None = None,
                 ood_clips: int = DEFAULT_CLIPS) -> ModelCard:
    """The `export` verb. `data`: a dataset directory for static-quantization calibration clips and the
    int8 accuracy check on validation episodes; `quantization` overrides the target's mode;
    `latency_table` predicts the latency (default: the table named SPACE.TARGET).

    `ood_clips` training clips (the run's dataset, from run.json, else `data`'s training split; 0: none)
    are embedded by the shipped graph and their distribution stored as train_features.safetensors, for
    the device's check of clips unlike the training data (deploy/features.py, device/ood.py).

    The card's head (what the runtime uses) is the run's: run.json beside the weights (`choose_head`);
    `head_kind`, `tau`, `window` ("run": the run's) override it. The card's `head_source` records where
    it came from, what was given, and every difference from the run's head or from the head the subnet
    document was searched with. `device`: where PyTorch computes the reference features (train/device.py).

    `out` is replaced only if it is a model sst-edge wrote (`owned_model`), and only by one export at a
    time; `on_commit` runs once the new model is in place (the CLI then ignores Ctrl-C: the model is
    complete, only its report is left)."""
    out = Path(out)
    dev = resolve_device(device)
    target = load_target(target)
    _check_out(out, overwrite)  # at once; again when the model is complete
    config, sample, module, meta = load_export_subnet(subnet, weights)
    choice = choose_head(weights, [head_kind] if head_kind else None, tau, window)
    head = choice.head
    head_source = choice.to_dict()
    searched = _subnet_head_notes(meta.get("metrics") or {}, head, subnet)
    for note in searched:
        warnings.warn(note, stacklevel=2)
    head_source["notes"] = head_source["notes"] + searched

    say = _sayer(progress)
    extra: dict[str, Any] = {"created": utc_now(), "sst_edge": __version__}
    with staging(out, overwrite, on_commit) as tmp:
        fp32 = tmp / "model.fp32.onnx"
        say(f"export  {config.name} subnet -> ONNX opset {target.opset} ({target.name})")
        export_onnx(module, torch.zeros(config.input_shape(1)), fp32, target.opset, target.dynamic_batch,
                    target.fused_attention)
        pin_output_shape(fp32, config.frames, config.stages[-1].channels)
        check_onnx(fp32)
        trt = check_graph(fp32)
        trt.trtexec = trtexec_command(MODEL_FILE, ENGINE_FILE, config.input_shape(1), fp16=target.precision
                                      == "fp16")
        if target.provider == "TensorrtExecutionProvider" and not trt.ok:
            raise SSTEdgeError("the graph is not what TensorRT takes", subnet, trt.problems())
        clips = parity_clips(config)
        ref = reference_features(module, clips, dev)
        module.cpu()
        par = parity(ref, fp32, target, clips)
        say(f"parity  PyTorch vs ONNX Runtime fp32: max abs diff {par['max_abs_diff']:.2e} "
            f"(limit {PARITY_TOL:g}) on {par['clips']} random clips")
        if not par["max_abs_diff"] <= PARITY_TOL:
            raise SSTEdgeError(f"parity check failed: max abs diff {par['max_abs_diff']:.3g} > "
                               f"{PARITY_TOL:g} between PyTorch and ONNX Runtime", subnet)
        final = tmp / MODEL_FILE
        extra["parity"] = {**par, "tolerance": PARITY_TOL, "reference": f"PyTorch eager, fp32, on {dev}",
                           "checked": "fp32 graph on CPUExecutionProvider"}
        if target.precision == "int8":
            extra["quantization"] = quantize_for_target(
                fp32, final, target, config, mode=quantization, data=data, clips=clips.numpy(),
                episodes=episodes, head=head, progress=progress, say=say)
        elif target.precision == "fp16" and target.provider != "TensorrtExecutionProvider":
            convert_fp16(fp32, final)
        else:
            os.replace(fp32, final)
        run_target = target  # what the shipped model's sessions run (an OpenVINO target: the chosen hint)
        if target.precision == "int8" or target.openvino:
            real, clip_source = check_clips(config, weights, data, clips.numpy())
            real_ref = reference_features(module, torch.from_numpy(real), dev)
            module.cpu()
            if target.openvino:
                extra["openvino"], extra["checks"] = choose_hint(final, target, real_ref, real, clip_source)
                run_target = with_hint(target, extra["openvino"]["precision_hint"])
                say(f"openvino precision hint {extra['openvino']['precision_hint']}: "
                    f"{extra['openvino']['why']}")
            else:
                extra["checks"] = [cosine_check("int8", real_ref, ort_features(cpu_session(final, target),
                                                                               real), clip_source,
                                                "ONNX Runtime CPUExecutionProvider", final)]
            for c in extra["checks"]:
                say(f"check   {check_line(c)}")
        shipped = shipped_check(ref, final, target, clips, config.input_shape(1))
        if shipped is not None:
            extra["parity"]["shipped"] = shipped
            if shipped["checked"]:
                say(f"parity  {shipped['graph']} on {shipped['provider']}: lowest frame cosine "
                    f"{shipped['min_cosine']:.5f} (gate {FP16_MIN_COSINE})")
        # model.onnx holds the graph as exported; ONNX Runtime optimises it at this level when a session
        # starts, for the provider of the device it runs on
        extra["graph_optimization"] = {"level": target.graph_optimization, "when": "at session start"}
        extra["tensorrt"] = _tensorrt_record(trt, target, shipped)
        extra["cost"] = _cost(config, sample)
        extra["latency"] = {"predicted": predicted_latency(config, sample, target, latency_table,
                                                           run_target.precision_hint),
                            "measured": None}
        if measure:
            refs = {"model": final}
            if target.precision == "int8":
                refs["fp32"] = fp32
            m = measure_latency(refs, run_target, config, progress=progress)
            extra["latency"]["measured"] = m.get("model") or {
                "why": f"{target.provider} is not available here; measure on the device"}
            if target.openvino and m.get("model"):
                extra["latency"]["measured"]["precision_hint"] = run_target.precision_hint
            if "fp32" in m and "quantization" in extra:
                extra["quantization"]["latency"] = {
                    "fp32_ms": m["fp32"]["median_ms"], "int8_ms": m["model"]["median_ms"],
                    "speedup": round(m["fp32"]["median_ms"] / m["model"]["median_ms"], 3)}
        fp32.unlink(missing_ok=True)
        extra["ood"] = training_features(final, run_target, config, weights, data, tmp, ood_clips,
                                         progress=progress, say=say)
        extra["weights"] = {"path": str(meta["path"]), "sha256": sha256_file(meta["path"])}
        if meta.get("metrics"):
            extra["subnet_metrics"] = meta["metrics"]
        extra["head_source"] = head_source
        if head.kind == "cca":  # the learned head ships beside the graph, read on the device by numpy
            head_file = save_head_file(tmp / HEAD_FILE, head.params)
            extra["head_weights"] = {**cca_card_record(head_file, head.params, config.stages[-1].channels),
                                     "source": str(meta["path"])}
        files = {p.name: file_record(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        io = ({"name": INPUT_NAME, "shape": ["batch", *config.input_shape(1)[1:]], "dtype": "float32"},
              {"name": OUTPUT_NAME, "shape": ["batch", config.frames, config.stages[-1].channels],
               "dtype": "float32"})
        card = ModelCard(out.name, config.name, config.hash, sample, _target_record(target),
                         config.eval_preprocess(), *io, head, files, **extra)
        card.save(tmp / CARD_FILE)
    card.path = out / CARD_FILE
    return card


def _tensorrt_record(trt: Any, target: Target, shipped: dict[str, Any] | None) -> dict[str, Any]:
    """The static check, and for a TensorRT target where its engine comes from: ONNX Runtime's TensorRT
    provider builds it from model.onnx with `tensorrt_options` (fp16, LayerNorm in fp32, one profile for
    batches 1..8), here when the provider is installed (then `shipped_check` has built, cached and checked
    it), else at the first session on the device."""
    rec = trt.to_dict()
    if target.provider != "TensorrtExecutionProvider":
        return rec
    built = bool(shipped and shipped.get("checked"))
    rec["engine"] = "onnxruntime-tensorrt" if built else None
    rec["why"] = ("built and checked here by ONNX Runtime's TensorRT provider; the device builds its own at "
                  "its first session (engines are not portable across GPUs or TensorRT versions) and "
                  "caches it under ~/.cache/sst-edge/tensorrt" if built else
                  "TensorRT is not installed here: ONNX Runtime's TensorRT provider builds the engine from "
                  "model.onnx at the first session on the device (tens of seconds on a Jetson) and caches "
                  "it under ~/.cache/sst-edge/tensorrt (or $SST_EDGE_TRT_CACHE)")
    return rec


def _cost(config: SpaceConfig, sample: dict[str, Any]) -> dict[str, Any]:

    c = subnet_cost(config, sample)
    return {"gflops": float(f"{c.gflops:.5g}"), "mparams": float(f"{c.mparams:.5g}"),
            "convention": "multiply-adds (fvcore)"}


def _target_record(target: Target) -> dict[str, Any]:
    return {**target.canonical(), "hash": target.hash}


@dataclass
class ExportReport:
    """What `sst-edge export` reports: the card it wrote (`to_dict`) and the figures to check (`lines`)."""

    card: ModelCard

    def to_dict(self) -> dict[str, Any]:
        return self.card.to_dict()

    def lines(self) -> list[str]:
        return card_summary(self.card)


def card_summary(card: ModelCard) -> list[str]:
    """What `sst-edge export` prints: the figures a user checks before shipping the directory."""
    lines = [f"model     {card.path.parent if card.path else card.name}  ({card.space}, target "
             f"{card.target['name']}, input {'x'.join(str(d) for d in card.input['shape'])})"]
    for name, rec in card.files.items():
        lines.append(f"file      {name}  {rec['bytes'] / 1e6:.2f} MB  sha256 {rec['sha256'][:16]}...")
    if card.cost is not None:
        c = card.cost
        lines.append(f"cost      {c['gflops']} GFLOPs (multiply-adds), {c['mparams']} M params")
    if card.parity is not None:
        lines.append(
            f"parity    max abs diff {card.parity['max_abs_diff']:.2e} vs PyTorch "
            f"(limit {card.parity['tolerance']})"
        )
        shipped = card.parity.get("shipped")
        if shipped:
            lines.append(f"parity    {shipped['graph']} on {shipped['provider']}: lowest frame cosine "
                         f"{shipped['min_cosine']:.5f} vs PyTorch (gate {shipped['gate_min_cosine']})"
                         if shipped.get("checked") else f"parity    {shipped['graph']}: {shipped['why']}")
    lines += [f"check     {check_line(c)}" for c in card.checks or []]
    if card.openvino is not None:
        o = card.openvino
        lines.append(f"openvino  {o['version']}, precision hint {o['precision_hint']} ({o.get('why', '')})")
    if card.latency is not None:
        pred, meas = card.latency["predicted"], card.latency["measured"] or {"why": "not measured"}
        pred_s = (
            f"{pred['ms']:.2f} ms ({pred['table']})"
            if pred.get("ms") is not None
            else f"n/a ({pred.get('why', 'no table')})"
        )
        meas_s = (
            f"{meas['median_ms']:.2f} ms median (p10 {meas['p10_ms']:.2f}, p90 {meas['p90_ms']:.2f})"
            if "median_ms" in meas
            else f"n/a ({meas['why']})"
        )
        lines += [f"latency   predicted {pred_s}", f"latency   measured {meas_s} per clip"]
        if pred.get("note"):
            lines.append(f"note      {pred['note']}")
    o = card.ood
    if o is not None:
        lines.append(f"ood       training features of {o['clips']} clips, {o.get('classes', '?')} actions "
                     f"({o.get('data')}): the check of clips unlike the training data" if "file" in o
                     else f"ood       no training features ({o.get('why')}): no check of clips unlike them")
    h, hs = card.head, card.head_source or {}
    lines.append(f"head      {h.kind}, tau {h.tau}, window {h.window}"
                 + (f"  (from {hs['source']})" if hs.get("source") else ""))
    lines += [f"note      {n}" for n in hs.get("notes", [])]
    q = card.quantization
    if q:
        acc = q.get("accuracy", {})
        acc_s = acc.get("why", "")
        if "fp32" in acc:
            acc_s = (f"accuracy fp32 {acc['fp32']:.1%} -> int8 {acc['int8']:.1%} "
                     f"({acc['change_points']:+.1f} points, {acc['episodes']} {acc['split']} episodes)")
        sp = q.get("latency", {})
        sp_s = f"speed x{sp['speedup']:.2f} vs fp32" if sp else ""
        lines.append(f"int8      {q['mode']}: {acc_s}; {sp_s}".rstrip("; "))
    if card.tensorrt is not None:
        t = card.tensorrt
        status = "passed" if t["ok"] else "FAILED: " + "; ".join(t.get("unsupported", []))
        lines.append(
            f"tensorrt  static check {status}" + (f"; engine {t['engine']}" if t.get("engine") else "")
        )
        if card.target.get("execution_providers", [""])[0] == "TensorrtExecutionProvider" or not t["ok"]:
            lines.append(f"trtexec   {t.get('trtexec')}")
    return lines
