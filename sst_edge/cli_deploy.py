"""The deployment verbs of `sst-edge` (export; the runtime's enroll, classify, gallery): argument parsing
only, each calling one library function."""

from __future__ import annotations

import argparse
import math


def positive_float(text: str) -> float:
    """A finite number > 0 (argparse's float takes 'nan' and 'inf')."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def unit_interval(text: str) -> float:
    """A number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def count(minimum: int):
    """An integer >= `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


FROM_RUN = "run"  # --window's default: the run's (None already means "no window")


def head_window(text: str) -> int | None | str:
    """--window: an integer >= 0, 'none' (or 'all': every support frame), or 'run' (the run's)."""
    if text.lower() in ("none", "all"):
        return None
    if text.lower() == FROM_RUN:
        return FROM_RUN
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"window must be an integer >= 0, 'none' or 'run', got {text!r}") \
            from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"window must be >= 0 or 'none', got {text}")
    return value


def add_run_head_options(p: argparse._ActionsContainer, owner: str = "the run's") -> None:
    """--tau / --window that default to the head the weights were trained with (run.json beside them,
    or a model's card): a value given overrides it, is recorded, and a difference is reported."""
    p.add_argument("--tau", type=positive_float, default=None,
                   help=f"temperature of the head's softmax and logits (default: {owner}; a different "
                        "value is reported)")
    p.add_argument("--window", type=head_window, default=FROM_RUN, metavar="W",
                   help="alignment: a query frame looks at support frames at most W segments away, or "
                        f"'none' for all (default: {owner}; a different value is reported)")


def _cmd_export(args: argparse.Namespace) -> int:
    from .deploy.export import card_summary, export_model

    card = export_model(args.subnet, args.weights, args.target, args.out, data=args.data,
                        quantization=args.quantization, episodes=args.episodes,
                        latency_table=args.latency_table, measure=not args.no_measure,
                        overwrite=args.overwrite, progress=not args.no_progress, head_kind=args.head,
                        tau=args.tau, window=args.window)
    print("\n".join(card_summary(card)))
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="freeze a subnet with its weights and export it for a target (ONNX, int8, TensorRT)",
        description="Freeze the subnet of a subnet document (best.json) with trained supernet or fine-tuned "
                    "weights, export it to ONNX for a deployment target (export/NAME.yaml), check it "
                    "(onnx.checker full check, parity with PyTorch <= 1e-4, TensorRT's needs), quantize "
                    "or convert it as the target says, measure its latency, and write a model directory "
                    "(model.onnx, card.json). Nothing is left at --out when a step fails.")
    p.add_argument("--subnet", required=True, help="a subnet document (best.json from `sst-edge search`)")
    p.add_argument("--weights", required=True,
                   help="a training run folder (supernet or fine-tuned) or a .safetensors file")
    p.add_argument("--target", default="cpu-fp32",
                   help="deployment target: cpu-fp32 (default), cpu-int8, cuda-fp16, jetson-trt-fp16, "
                        "or a path to a target YAML")
    p.add_argument("--out", required=True, help="the model directory to write (models/NAME)")
    p.add_argument("--data", help="a dataset directory: calibration clips for static int8 (training split) "
                                  "and the int8 accuracy change on validation episodes")
    p.add_argument("--quantization", choices=["dynamic", "static"],
                   help="int8 targets: override the target's quantization mode")
    p.add_argument("--episodes", type=int, default=100,
                   help="validation episodes for the int8 accuracy check (default 100)")
    p.add_argument("--latency-table", help="the table that predicts the latency in the card (default: "
                                           "latency_tables/SPACE.TARGET.json, if made on this device)")
    p.add_argument("--head", choices=["alignment", "prototype"],
                   help="the runtime's few-shot head (default: the one the run trained through, from "
                        "run.json beside the weights; a different one is reported and recorded in the card)")
    add_run_head_options(p, "the run's, from run.json beside the weights")
    p.add_argument("--no-measure", action="store_true", help="skip the latency measurement")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_export)


# ------------------------------------------------------------------------------------------------ runtime
def _print(result: object, as_json: bool) -> None:
    """JSON (control characters escaped by json), or the result's lines with every non-printable character
    escaped: labels and sources come from galleries that may have been edited or copied from elsewhere."""
    import json

    from .text import printable

    if as_json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))  # type: ignore[attr-defined]
    else:
        print("\n".join(printable(line) for line in result.lines()))  # type: ignore[attr-defined]


def _cmd_enroll(args: argparse.Namespace) -> int:
    from .runtime.verbs import enroll

    _print(enroll(args.model, args.gallery, args.label, args.clips, min_shots=args.min_shots,
                  threads=args.threads, decoder=args.decoder, progress=not args.no_progress), args.json)
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    from .runtime.verbs import classify, stream

    if args.stream:
        if len(args.clips) != 1:
            from .errors import SSTEdgeError

            raise SSTEdgeError(f"--stream takes one video, got {len(args.clips)}")
        result = stream(args.model, args.gallery, args.clips[0], window=args.window, stride=args.stride,
                        unit=args.unit, smooth=args.smooth, head=args.head, threshold=args.threshold,
                        min_shots=args.min_shots, threads=args.threads, decoder=args.decoder)
    else:
        result = classify(args.model, args.gallery, args.clips, head=args.head, threshold=args.threshold,
                          min_shots=args.min_shots, top=args.top, threads=args.threads, decoder=args.decoder,
                          progress=not args.no_progress)
    _print(result, args.json)
    return 0


def _cmd_gallery(args: argparse.Namespace) -> int:
    from .runtime import verbs

    if args.verb == "list":
        result = verbs.gallery_list(args.gallery, args.model)
    elif args.verb == "remove":
        if (args.label is None) == (args.clip is None):
            from .errors import SSTEdgeError

            raise SSTEdgeError("gallery remove takes exactly one of --label or --clip")
        result = verbs.gallery_remove(args.gallery, label=args.label, clip=args.clip, model=args.model)
    else:
        result = verbs.gallery_rename(args.gallery, args.old, args.new, model=args.model)
    _print(result, args.json)
    return 0


def _runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a model directory from `sst-edge export` (models/NAME)")
    p.add_argument("--gallery", required=True, help="the gallery directory (created by the first enroll)")
    p.add_argument("--threads", type=count(0), help="ONNX Runtime threads (default: the model card's target)")
    p.add_argument("--decoder", choices=["auto", "decord", "pyav"],
                   help="video decoder (default: the card's, auto = decord, else PyAV; same frames)")
    p.add_argument("--min-shots", type=count(1), default=1,
                   help="labels with fewer clips are left out of classification (default 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_runtime(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("enroll", help="add example clips of an action to a gallery, on the device",
                       description="Decode each clip as the model card says, embed it with ONNX Runtime and "
                                   "store its per-frame features under LABEL in the gallery. All or nothing: "
                                   "every clip is read and embedded before one atomic commit adds them all, "
                                   "so a failure or a crash leaves the gallery as it was.")
    _runtime_options(e)
    e.add_argument("--label", required=True, help="the action's name")
    e.add_argument("clips", nargs="+",
                   help="video files (or folders of numbered jpg/png frames) of the action")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=_cmd_enroll)

    c = sub.add_parser("classify", help="rank the gallery's actions for clips (or stream a long video)",
                       description="Ranked labels with a calibrated confidence for each clip; 'unknown' "
                                   "below the threshold (open set). With --stream, a sliding window over "
                                   "one long video, printing (start, end, label, confidence).")
    _runtime_options(c)
    c.add_argument("clips", nargs="+",
                   help="video files (or folders of numbered jpg/png frames) to classify")
    c.add_argument("--head", choices=["alignment", "prototype"], default="alignment",
                   help="few-shot head (default alignment: frame-level, order-aware)")
    c.add_argument("--threshold", type=unit_interval,
                   help="calibrated confidence below which the answer is 'unknown'; replaces the gallery's "
                        "calibrated distance rule (default: that rule, see README)")
    c.add_argument("--top", type=count(1), default=5, help="labels to show per clip (default 5)")
    c.add_argument("--stream", action="store_true", help="classify one long video window by window")
    c.add_argument("--window", type=positive_float, default=2.0, help="--stream: window length (default 2.0)")
    c.add_argument("--stride", type=positive_float, default=1.0,
                   help="--stream: step between windows (default 1.0)")
    c.add_argument("--unit", choices=["seconds", "frames"], default="seconds",
                   help="--stream: unit of --window and --stride (default seconds; a frame folder has no "
                        "frame rate: use frames)")
    c.add_argument("--smooth", type=count(1), default=1,
                   help="--stream: average the confidences of this many consecutive windows (default 1)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=_cmd_classify)

    g = sub.add_parser("gallery", help="list, remove or rename what a gallery holds",
                       description="Inspect and edit a gallery. Every change is atomic.")
    verbs = g.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, text in [("list", "labels, clips per label, the model and the calibration"),
                       ("remove", "remove a label (--label) or one clip (--clip ID)"),
                       ("rename", "rename a label")]:
        v = verbs.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        v.add_argument("gallery", help="the gallery directory")
        v.add_argument("--model", help="check the gallery against this model directory")
        v.add_argument("--json", action="store_true", help="print the result as JSON")
        if name == "remove":
            v.add_argument("--label", help="the label to remove with all its clips")
            v.add_argument("--clip", help="the id (or a unique prefix) of one clip to remove")
        if name == "rename":
            v.add_argument("old", help="the current label")
            v.add_argument("new", help="the new label")
        v.set_defaults(func=_cmd_gallery)
