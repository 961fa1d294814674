"""`sst-edge data synth|check`: make the synthetic dataset, or check a dataset.

Library calls are imported inside each verb (PyAV, the encoder): `--help` stays instant."""

from __future__ import annotations

import argparse

from ._common import add_json, emit


def _synth(args: argparse.Namespace) -> int:
    from ..data.synth import generate_synthetic, synth_report  # PyAV, numpy: loaded when the verb runs

    out = generate_synthetic(
        args.out,
        classes=args.classes,
        clips=args.clips,
        frames=args.frames,
        size=args.size,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.json,
    )
    return emit(synth_report(out), args)


def _check(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset  # decoders: loaded when the verb runs

    report = check_dataset(
        args.dir, decoder=args.decoder, frames=args.frames, full=args.full, progress=not args.json,
        split=args.split,
    )
    emit(report, args)
    return 0 if report.ok else 1


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="make and check video datasets",
        description="Generate the synthetic temporal-action dataset, or check a dataset.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    synth = verbs.add_parser(
        "synth",
        help="write the synthetic temporal-action dataset (H.264 mp4)",
        description="Write a procedural temporal-action dataset: OUT/<class>/<clip>.mp4, split files "
        "OUT/splits/{train,val,test}.txt (ARN/OTAM format) and OUT/classes.json. Classes differ "
        "by motion and appearance; some pairs are the same clips played backwards and share a "
        "split, so only temporal order separates them. The same seed gives the same files.",
    )
    synth.add_argument("--out", required=True, help="output folder (new or empty)")
    synth.add_argument(
        "--classes",
        type=int,
        default=24,
        help="number of classes, >= 4 (default 24: 12 train / 6 val / 6 test; 5-way "
        "episodes on val and test need >= 20)",
    )
    synth.add_argument("--clips", type=int, default=10, help="clips per class (default 10)")
    synth.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    synth.add_argument(
        "--size",
        type=int,
        default=64,
        help="frame height in pixels, even (default 64; frames are 4:3, 64x86)",
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier synthetic dataset in OUT (nothing else is ever deleted)",
    )
    add_json(synth)
    synth.set_defaults(func=_synth)

    check = verbs.add_parser(
        "check",
        help="scan a dataset: clips per class and every unreadable clip",
        description="Probe every clip of DIR/<class>/<clip>.<ext> (or frame folder DIR/<class>/<clip>/ of "
        "numbered jpg/png images), decode a few frames of each as evaluation would, and print a "
        "table of clips per class, then every unreadable clip or image with the reason, every "
        "split-file entry (DIR/splits) whose clip is missing, and warnings (empty folders, gaps "
        "in a frame folder's numbering). "
        "Exit status: 0 if every clip is readable and every split entry exists, 1 if not "
        "(the problems are listed), 2 if DIR is not a dataset.",
    )
    check.add_argument("dir", help="dataset folder")
    check.add_argument("--split", help="folder of train/val/test split files, as train and eval take it "
                                       "(default DIR/splits)")
    check.add_argument(
        "--decoder",
        default="auto",
        choices=["auto", "decord", "pyav"],
        help="decoder to test with (default auto: PyAV)",
    )
    check.add_argument("--frames", type=int, default=8, help="frames decoded per clip (default 8)")
    check.add_argument("--full", action="store_true", help="also decode every frame of every clip (slow)")
    add_json(check)
    check.set_defaults(func=_check)
