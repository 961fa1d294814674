"""`sst-edge`: one thin module per stage of the pipeline (space, data, train, eval, profile, search,
export, runtime, and the demo that runs them all). Each verb parses its arguments, makes one library call
and prints its result: the result's `lines()`, or its `to_dict()` as JSON with --json.

This package imports only argparse, the settings dataclasses and numpy, so `sst-edge --help` and every
verb's --help are instant and need no torch."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from .. import __version__
from ..errors import PROBLEM_SEP, SSTEdgeError
from ..fileio import os_reason
from ..text import brief, printable
from . import data, demo, eval, export, profile, runtime, search, space, train

STAGES = (space, data, train, eval, profile, search, export, runtime, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sst-edge",
        description="Find, ship and run few-shot action-recognition video transformers (SST) on edge "
        "hardware: search space, supernet training with shrinking, latency tables, "
        "hardware-aware search, export to ONNX/TensorRT, and an on-device few-shot runtime.",
    )
    parser.add_argument("--version", action="version", version=f"sst-edge {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of any failure (for bug reports)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES:  # pipeline order: the order `sst-edge --help` lists them in
        stage.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb. The one boundary for failure: bad input of any kind (an SSTEdgeError, an OSError, a
    document nested too deeply) is printed as one named error and exits 2; anything else is a bug, printed
    as such and exiting 1 (with --debug, every failure shows its traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _sigint_restored(argv is not None):
        return _run(args)


@contextlib.contextmanager
def _sigint_restored(restore: bool) -> Iterator[None]:
    """A verb may ignore Ctrl-C once its work is committed (export). As the program, that lasts until
    the process ends; called in-process (`main([...])`, tests, scripts), the caller's handler returns."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if restore and previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)


def _run(args: argparse.Namespace) -> int:
    try:
        if not getattr(args, "json", False):
            return int(args.func(args) or 0)
        # --json: stdout holds the result alone, whatever a library prints (NNI logs to stdout)
        args.result_stream = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("sst-edge: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        code, text = describe_failure(e)
        print(f"sst-edge: {text}", file=sys.stderr)
        return code


def describe_failure(e: BaseException) -> tuple[int, str]:
    """(exit status, message) of a failure; every character of the message is printable."""
    if isinstance(e, SSTEdgeError):  # split only where SSTEdgeError lists its problems: a newline in a
        parts = str(e).split(PROBLEM_SEP)  # path or a label is escaped, never a line of its own
        return 2, "error: " + PROBLEM_SEP.join(printable(part) for part in parts)
    if isinstance(e, OSError):
        where = f"{printable(e.filename)}: " if e.filename is not None else ""
        return 2, f"error: {where}{os_reason(e)}"
    if isinstance(e, RecursionError):
        return 2, "error: the input is nested too deeply"
    return 1, (
        f"internal error ({type(e).__name__}: {brief(e, 300)}); this is a bug in sst-edge: run the "
        "command again as `sst-edge --debug ...` and report the traceback"
    )


if __name__ == "__main__":
    sys.exit(main())
