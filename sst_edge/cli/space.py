"""`sst-edge space show|sample|check`: a search space and its subnets.

Library calls are imported inside each verb: they need torch and NNI (the host install), which `--help`
and the device install must not load."""

from __future__ import annotations

import argparse

from ._common import add_json, emit


def _show(args: argparse.Namespace) -> int:
    from ..cost.space_report import describe_space  # host: torch, NNI, fvcore

    return emit(describe_space(args.space, args.restriction, samples=args.samples, seed=args.seed), args)


def _sample(args: argparse.Namespace) -> int:
    from ..cost.space_report import sample_subnet  # host: torch, NNI

    return emit(
        sample_subnet(args.space, seed=args.seed, out=args.out, restriction_file=args.restriction), args
    )


def _check(args: argparse.Namespace) -> int:
    from ..cost.space_report import check_subnet  # host: torch, NNI

    return emit(check_subnet(args.subnet, space=args.space), args)


def add_restriction_option(p: argparse.ArgumentParser, help: str) -> None:
    """--restriction FILE (--restrict, its earlier name, still works)."""
    p.add_argument("--restriction", "--restrict", dest="restriction", metavar="FILE", help=help)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "space",
        help="inspect a search space and sample subnets",
        description="Inspect an SST search space (search_spaces/NAME.yaml) and its subnets.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    show = verbs.add_parser(
        "show",
        help="labels, size, FLOPs/params of smallest, largest, random subnets",
        description="Print the labels of a space, its number of architectures, and the "
        "FLOPs (multiply-adds, as fvcore counts) and params of the smallest, "
        "the largest and a few random subnets.",
    )
    show.add_argument("--space", required=True, help="space name (search_spaces/NAME.yaml) or path to a YAML")
    add_restriction_option(
        show, "a restriction file written by training (a run's restriction.json): show only what it allows"
    )
    show.add_argument("--samples", type=int, default=3, help="number of random subnets to list (default 3)")
    show.add_argument("--seed", type=int, default=0, help="seed for the random subnets (default 0)")
    add_json(show)
    show.set_defaults(func=_show)

    sample = verbs.add_parser(
        "sample",
        help="write a random valid subnet document",
        description="Draw one subnet uniformly from the space and write it as a subnet "
        "document (the format of best.json).",
    )
    sample.add_argument("--space", required=True, help="space name or path")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--out", required=True, help="where to write the subnet JSON")
    add_restriction_option(sample, "a restriction file: sample only from what it allows")
    add_json(sample)
    sample.set_defaults(func=_sample)

    check = verbs.add_parser(
        "check",
        help="validate a subnet document against its space",
        description="Load a subnet document and check every label and value against the "
        "space and the space's hash; print every problem found.",
    )
    check.add_argument("subnet", help="subnet JSON (best.json)")
    check.add_argument("--space", help="space name or path (default: the one the document names)")
    add_json(check)
    check.set_defaults(func=_check)
