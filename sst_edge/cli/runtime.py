"""`sst-edge enroll|classify|gallery`: the on-device few-shot runtime. Device install only: ONNX Runtime,
numpy and a video decoder, never torch (tests/test_device_half.py runs these where torch cannot be
imported). The runtime (ONNX Runtime, decoders) is imported when a verb runs, so `--help` stays
instant."""

from __future__ import annotations

import argparse

from ..device.settings import EVENT_MARGIN
from ..errors import SSTEdgeError
from ._common import count, emit, nonnegative_float, positive_float, unit_interval


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


def _watch(args: argparse.Namespace) -> int:
    from ..runtime.live import cli as live  # ONNX Runtime, PyAV: loaded when the verb runs

    return live.watch(args)


def _runtime_options(p: argparse.ArgumentParser, decoder: bool = True) -> None:
    """The options of the verbs that run a model on a gallery; `watch` decodes its sources with PyAV
    itself (frames as they arrive), so it takes no --decoder."""
    p.add_argument("--model", required=True, help="a model directory from `sst-edge export` (models/NAME)")
    p.add_argument("--gallery", required=True, help="the gallery directory (created by the first enroll)")
    p.add_argument("--threads", type=count(0), help="ONNX Runtime threads (default: the model card's target)")
    if decoder:
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
        choices=["alignment", "prototype", "cca"],
        help="few-shot head (default: the one the model was trained and exported with; alignment is "
        "frame-level and order-aware, cca needs the model's head weights)",
    )
    c.add_argument(
        "--threshold",
        type=unit_interval,
        help="calibrated confidence below which the answer is 'unknown'; replaces the gallery's "
        "calibrated distance rule (default: that rule, see docs/device.md)",
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

    w = sub.add_parser(
        "watch",
        help="watch cameras and streams live: action events out, in real time",
        description="Decode each --source as frames arrive (RTSP/UDP/TCP/HTTP streams, /dev/videoN, or a "
        "file), classify spans over their time with one shared model, and emit events (label, start, end, "
        "peak and mean confidence) as JSON lines on stdout, to --events FILE and/or --mqtt. When the model "
        "falls behind, spans are skipped and counted, never queued. Sources that drop are reconnected with "
        "backoff. SIGINT/SIGTERM close the open events and exit 0. A gallery changed by enroll is picked "
        "up at the next span. MQTT credentials, client id and TLS files come from the environment "
        "(SST_EDGE_MQTT_*; docs/live.md).",
    )
    # --json: the final summary on stderr as JSON (stdout holds the events)
    _runtime_options(w, decoder=False)
    w.add_argument("--source", action="append", required=True, metavar="SRC",
                   help="rtsp(s)://, udp://, tcp://, http(s):// URL, /dev/videoN or a video file; repeat for "
                   "several sources")
    w.add_argument("--realtime", action="store_true",
                   help="play files at their own frame rate (live sources always are); without it a file is "
                   "read as fast as inference takes it, every span scored")
    w.add_argument("--span", type=positive_float, default=2.0, help="seconds each classification sees")
    w.add_argument("--stride", type=positive_float, default=1.0, help="seconds between spans")
    w.add_argument("--smooth", type=count(1), default=1, help="average this many consecutive spans")
    w.add_argument("--head", choices=["alignment", "prototype", "cca"],
                   help="few-shot head (default: the model's; cca: the model must ship its weights)")
    w.add_argument("--threshold", type=unit_interval,
                   help="confidence below which a span is 'unknown' (replaces the calibrated rule)")
    w.add_argument("--margin", type=unit_interval, default=EVENT_MARGIN,
                   help="hysteresis: an open event goes on while its label's score stays above the "
                   "calibrated threshold minus this fraction of it")
    w.add_argument("--enter", type=unit_interval, default=0.0,
                   help="a confidence a span also needs to open an event")
    w.add_argument("--leave", type=unit_interval, default=0.0,
                   help="a confidence below which an open event ends (<= --enter)")
    w.add_argument("--min-duration", type=nonnegative_float, default=0.0,
                   help="seconds an event must last to be emitted")
    w.add_argument("--max-fps", type=positive_float, help="keep at most this many frames a second per source")
    w.add_argument("--events", metavar="FILE", help="append events to FILE (fsync'd per event)")
    w.add_argument("--mqtt", metavar="URL", help="publish events to mqtt(s)://host:port/topic with QoS 1 "
                   "(needs the [mqtt] extra)")
    w.add_argument("--no-stdout", action="store_true", help="do not print events on stdout")
    w.add_argument("--status-every", type=positive_float, metavar="S",
                   help="print a status line (JSON, stderr) every S seconds")
    w.add_argument("--exit-on-error", action="store_true",
                   help="end at the first problem of a source (exit 3) or of a sink (exit 4)")
    w.add_argument("--max-reconnects", type=count(0), help="give a source up after this many reconnects")
    w.add_argument("--duration", type=positive_float, help="stop after this many seconds")
    w.add_argument("--summary", metavar="FILE", help="write the final summary (JSON) to FILE")
    w.set_defaults(func=_watch)
