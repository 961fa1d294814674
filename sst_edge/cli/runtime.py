"""`sst-edge enroll|classify|gallery`: the on-device few-shot runtime. Device install only: ONNX Runtime,
numpy and a video decoder, never torch (tests/test_device_half.py runs these where torch cannot be
imported). The runtime (ONNX Runtime, decoders) is imported when a verb runs, so `--help` stays
instant."""

from __future__ import annotations

import argparse

from ..errors import SSTEdgeError
from ._common import count, emit, positive_float, unit_interval


def _enroll(args: argparse.Namespace) -> int:
    from ..runtime import verbs  # ONNX Runtime, decoders: loaded when the verb runs

    emit(
        verbs.enroll(
            args.model,
            args.gallery,
            args.label,
            args.clips,
            min_shots=args.min_shots,
            threads=args.threads,
            decoder=args.decoder,
            progress=not args.no_progress,
        ),
        args,
    )
    return 0


def _classify(args: argparse.Namespace) -> int:
    from ..runtime import verbs  # ONNX Runtime, decoders: loaded when the verb runs

    if args.stream:
        if len(args.clips) != 1:
            raise SSTEdgeError(f"--stream takes one video, got {len(args.clips)}")
        result = verbs.stream(
            args.model,
            args.gallery,
            args.clips[0],
            span=args.span,
            stride=args.stride,
            unit=args.unit,
            smooth=args.smooth,
            head=args.head,
            threshold=args.threshold,
            min_shots=args.min_shots,
            threads=args.threads,
            decoder=args.decoder,
        )
    else:
        result = verbs.classify(
            args.model,
            args.gallery,
            args.clips,
            head=args.head,
            threshold=args.threshold,
            min_shots=args.min_shots,
            top=args.top,
            threads=args.threads,
            decoder=args.decoder,
            progress=not args.no_progress,
        )
    emit(result, args)
    return 0


def _gallery(args: argparse.Namespace) -> int:
    from ..runtime import verbs  # ONNX Runtime, decoders: loaded when the verb runs

    if args.verb == "list":
        result = verbs.gallery_list(args.gallery, args.model)
    elif args.verb == "remove":
        if (args.label is None) == (args.clip is None):
            raise SSTEdgeError("gallery remove takes exactly one of --label or --clip")
        result = verbs.gallery_remove(args.gallery, label=args.label, clip=args.clip, model=args.model)
    else:
        result = verbs.gallery_rename(args.gallery, args.old, args.new, model=args.model)
    emit(result, args)
    return 0


def _runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a model directory from `sst-edge export` (models/NAME)")
    p.add_argument("--gallery", required=True, help="the gallery directory (created by the first enroll)")
    p.add_argument("--threads", type=count(0), help="ONNX Runtime threads (default: the model card's target)")
    p.add_argument(
        "--decoder",
        choices=["auto", "decord", "pyav"],
        help="video decoder (default: the card's; auto = PyAV; decord gives the same frames)",
    )
    p.add_argument(
        "--min-shots",
        type=count(1),
        default=1,
        help="labels with fewer clips are left out of classification (default 1)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "enroll",
        help="add example clips of an action to a gallery, on the device",
        description="Decode each clip as the model card says, embed it with ONNX Runtime and "
        "store its per-frame features under LABEL in the gallery. All or nothing: "
        "every clip is read and embedded before one atomic commit adds them all, "
        "so a failure or a crash leaves the gallery as it was.",
    )
    _runtime_options(e)
    e.add_argument("--label", required=True, help="the action's name")
    e.add_argument(
        "clips", nargs="+", help="video files (or folders of numbered jpg/png frames) of the action"
    )
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=_enroll)

    c = sub.add_parser(
        "classify",
        help="rank the gallery's actions for clips (or stream a long video)",
        description="Ranked labels with a calibrated confidence for each clip; 'unknown' "
        "below the threshold (open set). With --stream, a sliding window over "
        "one long video, printing (start, end, label, confidence).",
    )
    _runtime_options(c)
    c.add_argument("clips", nargs="+", help="video files (or folders of numbered jpg/png frames) to classify")
    c.add_argument(
        "--head",
        choices=["alignment", "prototype"],
        default="alignment",
        help="few-shot head (default alignment: frame-level, order-aware)",
    )
    c.add_argument(
        "--threshold",
        type=unit_interval,
        help="calibrated confidence below which the answer is 'unknown'; replaces the gallery's "
        "calibrated distance rule (default: that rule, see README)",
    )
    c.add_argument("--top", type=count(1), default=5, help="labels to show per clip (default 5)")
    c.add_argument("--stream", action="store_true", help="classify one long video span by span")
    c.add_argument(
        "--span",
        type=positive_float,
        default=2.0,
        help="--stream: the stretch of video each classification sees (default 2.0)",
    )
    c.add_argument(
        "--stride", type=positive_float, default=1.0, help="--stream: step between spans (default 1.0)"
    )
    c.add_argument(
        "--unit",
        choices=["seconds", "frames"],
        default="seconds",
        help="--stream: unit of --span and --stride (default seconds; a frame folder has no "
        "frame rate: use frames)",
    )
    c.add_argument(
        "--smooth",
        type=count(1),
        default=1,
        help="--stream: average the confidences of this many consecutive spans (default 1)",
    )
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=_classify)

    g = sub.add_parser(
        "gallery",
        help="list, remove or rename what a gallery holds",
        description="Inspect and edit a gallery. Every change is atomic.",
    )
    verbs = g.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, text in [
        ("list", "labels, clips per label, the model and the calibration"),
        ("remove", "remove a label (--label) or one clip (--clip ID)"),
        ("rename", "rename a label"),
    ]:
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
        v.set_defaults(func=_gallery)
