"""`sst-edge`: a thin command-line layer. Each verb parses its arguments and calls one library function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import SSTEdgeError


# --------------------------------------------------------------------------------------------- space
def _cmd_space_show(args: argparse.Namespace) -> int:
    from .space.report import show_space

    show_space(args.space, restrict=args.restrict, samples=args.samples, seed=args.seed)
    return 0


def _cmd_space_sample(args: argparse.Namespace) -> int:
    from .space.report import sample_subnet

    path = sample_subnet(args.space, seed=args.seed, out=args.out, restrict=args.restrict)
    print(f"wrote {path}")
    return 0


def _cmd_space_check(args: argparse.Namespace) -> int:
    from .space.report import check_subnet

    check_subnet(args.subnet, space=args.space)
    return 0


def _add_space(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help="inspect a search space and sample subnets",
                       description="Inspect an SST search space (search_spaces/NAME.yaml) and its subnets.")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    show = verbs.add_parser("show", help="labels, size, FLOPs/params of smallest, largest, random subnets",
                            description="Print the labels of a space, its number of architectures, and the "
                                        "FLOPs (multiply-adds, as fvcore counts) and params of the smallest, "
                                        "the largest and a few random subnets.")
    show.add_argument("--space", required=True, help="space name (search_spaces/NAME.yaml) or path to a YAML")
    show.add_argument("--restrict", help="a shrunk-space JSON written by training; show only what it keeps")
    show.add_argument("--samples", type=int, default=3, help="number of random subnets to list (default 3)")
    show.add_argument("--seed", type=int, default=0, help="seed for the random subnets (default 0)")
    show.set_defaults(func=_cmd_space_show)

    sample = verbs.add_parser("sample", help="write a random valid subnet document",
                              description="Draw one subnet uniformly from the space and write it as a subnet "
                                          "document (the format of best.json).")
    sample.add_argument("--space", required=True, help="space name or path")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--out", required=True, help="where to write the subnet JSON")
    sample.add_argument("--restrict", help="a shrunk-space JSON: sample only from what it keeps")
    sample.set_defaults(func=_cmd_space_sample)

    check = verbs.add_parser("check", help="validate a subnet document against its space",
                             description="Load a subnet document and check every label and value against the "
                                         "space and the space's hash; print every problem found.")
    check.add_argument("subnet", help="subnet JSON (best.json)")
    check.add_argument("--space", help="space name or path (default: the one the document names)")
    check.set_defaults(func=_cmd_space_check)


# ---------------------------------------------------------------------------------------------- data
# (the data verbs are added by _add_data below)
def _cmd_data_synth(args: argparse.Namespace) -> int:
    from .data.synth import generate_synthetic

    out = generate_synthetic(args.out, classes=args.classes, clips=args.clips, frames=args.frames,
                             size=args.size, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {args.classes} classes x {args.clips} clips to {out} (splits in {out / 'splits'}, "
          f"classes in {out / 'classes.json'})")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from .data.check import check_dataset, print_report

    report = check_dataset(args.dir, decoder=args.decoder, frames=args.frames, full=args.full)
    print_report(report)
    return 0 if report.ok else 1


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="make and check video datasets",
                       description="Generate the synthetic temporal-action dataset, or check a dataset.")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    synth = verbs.add_parser(
        "synth", help="write the synthetic temporal-action dataset (H.264 mp4)",
        description="Write a procedural temporal-action dataset: OUT/<class>/<clip>.mp4, split files "
                    "OUT/splits/{train,val,test}.txt (ARN/OTAM format) and OUT/classes.json. Classes differ "
                    "by motion and appearance; some pairs are the same clips played backwards and share a "
                    "split, so only temporal order separates them. The same seed gives the same files.")
    synth.add_argument("--out", required=True, help="output folder (new or empty)")
    synth.add_argument("--classes", type=int, default=24,
                       help="number of classes, >= 4 (default 24: 12 train / 6 val / 6 test; 5-way "
                            "episodes on val and test need >= 20)")
    synth.add_argument("--clips", type=int, default=10, help="clips per class (default 10)")
    synth.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    synth.add_argument("--size", type=int, default=64,
                       help="frame height in pixels, even (default 64; frames are 4:3, 64x86)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--overwrite", action="store_true",
                       help="replace an earlier synthetic dataset in OUT (nothing else is ever deleted)")
    synth.set_defaults(func=_cmd_data_synth)

    check = verbs.add_parser(
        "check", help="scan a dataset: clips per class and every unreadable clip",
        description="Probe every clip of DIR/<class>/<clip>.<ext>, decode a few frames of each as "
                    "evaluation would, and print a table of clips per class, then every unreadable clip "
                    "with the reason and every split-file entry (DIR/splits) whose clip is missing. "
                    "Exit status: 0 if every clip is readable and every split entry exists, 1 if not "
                    "(the problems are listed), 2 if DIR is not a dataset.")
    check.add_argument("dir", help="dataset folder")
    check.add_argument("--decoder", default="auto", choices=["auto", "decord", "pyav"],
                       help="decoder to test with (default auto: decord if installed, else PyAV)")
    check.add_argument("--frames", type=int, default=8, help="frames decoded per clip (default 8)")
    check.add_argument("--full", action="store_true", help="also decode every frame of every clip (slow)")
    check.set_defaults(func=_cmd_data_check)


# ---------------------------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, space=args.space, seed=args.seed)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole path on the synthetic dataset and sst_tiny",
                       description="Generate the synthetic dataset, then run every stage of the path "
                                   "(space, data, training with shrinking, latency table, search, export, "
                                   "enrollment, classification) and print a summary table of each stage's "
                                   "output, time and figures.")
    p.add_argument("--out", default="demo_out",
                   help="folder for everything the demo writes (default demo_out)")
    p.add_argument("--space", default="sst_tiny", help="search space (default sst_tiny)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random choice (default 0)")
    p.set_defaults(func=_cmd_demo)


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sst-edge",
        description="Find, ship and run few-shot action-recognition video transformers (SST) on edge "
                    "hardware: search space, supernet training with shrinking, latency tables, "
                    "hardware-aware search, export to ONNX/TensorRT, and an on-device few-shot runtime.",
    )
    parser.add_argument("--version", action="version", version=f"sst-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_space(sub)
    _add_data(sub)
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SSTEdgeError as e:
        print(f"sst-edge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sst-edge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
