"""`sst-edge profile`: measure a latency table on this device, check or re-validate one, or the three
steps of profiling a device without torch (--bundle on the host, --run-bundle on the device,
--from-bundle on the host).

Library calls are imported inside the verb: --run-bundle runs on the device install (ONNX Runtime and
numpy, no torch), the other steps on the host install."""

from __future__ import annotations

import argparse

from ..errors import SSTEdgeError
from ._common import add_json, emit

# The options each bundle step takes; any other given with it is refused, not silently ignored.
_PROFILE_STEPS = {
    "bundle": {"space", "target", "backend", "validate", "seed", "rounds", "clock", "quick", "overwrite"},
    "run_bundle": {"rounds", "clock", "quick"},
    "from_bundle": {"space", "out", "overwrite"},
}
_PROFILE_OPTIONS = (
    "space",
    "target",
    "out",
    "overwrite",
    "backend",
    "validate",
    "seed",
    "rounds",
    "clock",
    "quick",
    "allow_foreign_table",
)


def _refuse_unused(args: argparse.Namespace) -> None:
    step = next((s for s in _PROFILE_STEPS if getattr(args, s) is not None), None)
    if step is None:
        return
    unused = [
        f"--{k.replace('_', '-')}"
        for k in _PROFILE_OPTIONS
        if k not in _PROFILE_STEPS[step] and getattr(args, k) not in (None, False, 0, "auto")
    ]
    if unused:
        raise SSTEdgeError(f"--{step.replace('_', '-')} does not take {', '.join(unused)}")


def _profile(args: argparse.Namespace) -> int:
    _refuse_unused(args)
    progress = not (args.no_progress or args.json)
    if args.run_bundle is not None:  # the device half: nothing here may import torch
        from ..device.bundle import run_bundle_verb  # ONNX Runtime, numpy: loaded when the verb runs

        return emit(run_bundle_verb(args.run_bundle, args.rounds, args.clock, args.quick, progress), args)
    from ..cost.profile import run_profile, table_report, write_bundle_verb  # host: torch, NNI, onnx

    if args.bundle is not None:
        return emit(
            write_bundle_verb(
                args.space,
                args.target,
                args.bundle,
                args.validate,
                args.seed,
                args.rounds,
                args.clock,
                args.quick,
                args.overwrite,
                args.backend,
                progress,
            ),
            args,
        )
    table = run_profile(
        space=args.space,
        target=args.target,
        table=args.table,
        out=args.out,
        backend=args.backend,
        validate=args.validate,
        seed=args.seed,
        rounds=args.rounds,
        clock=args.clock,
        quick=args.quick,
        overwrite=args.overwrite,
        allow_foreign=args.allow_foreign_table,
        progress=progress,
        from_bundle=args.from_bundle,
    )
    return emit(table_report(table), args)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="measure a latency table on this device, or check / re-validate one",
        description="Measure a latency lookup table: every fixed part and every (stage, op, heads) block of "
        "a space, timed per clip (batch 1) as the target deploys it (ONNX Runtime with its "
        "execution provider, precision and threads; or PyTorch eager with --backend torch). "
        "With --validate N, also time N random whole subnets, fit a correction for what the "
        "sum of parts misses, store the figures (within 5%/10%, RMSPE, Kendall's tau; "
        "raw and leave-one-out corrected) and draw TABLE.validation.png. Parts and subnets "
        "are timed in one interleaved pool; rounds disturbed by other processes are redone "
        "when the machine is quiet, and the table records how loaded it was. With --table, "
        "check a table against its space, target and this device (and re-validate it with "
        "--validate N). A device without torch is profiled in three steps: --bundle DIR "
        "(host: export the parts and subnets as ONNX files with a manifest), --run-bundle DIR "
        "(device: time them with ONNX Runtime and numpy only, writing DIR/timings.json), "
        "--from-bundle DIR (host: build the table, with the device's fingerprint).",
    )
    p.add_argument(
        "--space",
        help="space name (search_spaces/NAME.yaml) or path; with --table or "
        "--from-bundle, the space to check against (default: the one it names)",
    )
    p.add_argument("--target", help="deployment target (export/NAME.yaml) or path, e.g. cpu-fp32")
    step = p.add_mutually_exclusive_group()
    step.add_argument(
        "--table",
        help="an existing table (latency_tables/NAME.json or a path) to check against its space and "
        "target, print, or re-validate on this device (--validate) instead of measuring a new one",
    )
    step.add_argument(
        "--bundle",
        metavar="DIR",
        help="host, with --space and --target: write the parts (and --validate N subnets) as "
        "the target's ONNX files plus DIR/bundle.json, for a device to time",
    )
    step.add_argument(
        "--run-bundle",
        metavar="DIR",
        help="device (ONNX Runtime and numpy, no torch): time the bundle in DIR and write "
        "DIR/timings.json (the manifest's policy unless --rounds, --clock or --quick)",
    )
    step.add_argument(
        "--from-bundle",
        metavar="DIR",
        help="host: build the table from DIR/bundle.json and the timings.json the device "
        "wrote, with that device's fingerprint (--out, --overwrite as for a new table)",
    )
    p.add_argument(
        "--out",
        help="where to write the table (default latency_tables/SPACE.TARGET.json; "
        "with --table, the table itself)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out table (with --bundle, an existing bundle in DIR)",
    )
    p.add_argument(
        "--backend",
        choices=["onnxruntime", "openvino", "torch"],
        help="runtime to time on (default: the target's; torch = PyTorch eager; an openvino target is "
             "timed on openvino only)",
    )
    p.add_argument(
        "--validate",
        type=int,
        default=0,
        metavar="N",
        help="time N random whole subnets end to end and store the accuracy figures (0 = no)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for inputs, round order and subnets (default 0)")
    p.add_argument(
        "--rounds",
        type=int,
        help="interleaved timing rounds per part and subnet, ~10 runs each (default 8, or with "
        "--run-bundle the bundle's; unstable medians get 2 more)",
    )
    p.add_argument(
        "--clock",
        default="auto",
        choices=["auto", "wall", "thread"],
        help="auto (default; with --run-bundle, the bundle's): the calling thread's CPU time "
        "for one-thread CPU targets (time other processes hold the core is not counted), "
        "wall time otherwise",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a handful of runs per part: for smoke tests, not for tables worth keeping",
    )
    p.add_argument(
        "--allow-foreign-table",
        action="store_true",
        help="use a --table made for another space, target or device (mismatches are listed)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_json(p)
    p.set_defaults(func=_profile)
