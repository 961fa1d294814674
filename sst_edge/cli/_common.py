"""What every verb module shares: argument types, the --json flag and printing a result, and the head
options. Torch-free and light: `sst-edge --help` imports only this package, the settings dataclasses and
numpy."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from typing import Any

from ..device.settings import FROM_RUN
from ..result import Result, render


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends with the option's default (taken from the dataclass that owns it), unless the
    default is None or False or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.default in (None, False, argparse.SUPPRESS)
            or "default" in text
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)".lstrip()


def default(cls: type, name: str) -> Any:
    """The default of dataclass field `name`: the dataclasses own the defaults, argparse shows them."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def positive_float(text: str) -> float:
    """A finite number > 0 (argparse's float takes 'nan' and 'inf')."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
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


def head_window(text: str, allow_run: bool = True) -> int | None | str:
    """--window: an integer >= 0, 'none' (or 'all': every support frame), or 'run' (the run's)."""
    if text.lower() in ("none", "all"):
        return None
    if allow_run and text.lower() == FROM_RUN:
        return FROM_RUN
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"window must be an integer >= 0, 'none' or 'run', got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"window must be >= 0 or 'none', got {text}")
    return value


def fixed_window(text: str) -> int | None:
    """--window of a new run: an integer >= 0 or 'none' (there is no earlier run to take it from)."""
    return head_window(text, allow_run=False)  # type: ignore[return-value]


def add_run_head_options(p: argparse._ActionsContainer, owner: str = "the run's") -> None:
    """--tau / --window that default to the head the weights were trained with (run.json beside them,
    or a model's card): a value given overrides it, is recorded, and a difference is reported."""
    p.add_argument(
        "--tau",
        type=positive_float,
        default=None,
        help=f"temperature of the head's softmax and logits (default: {owner}; a different "
        "value is reported)",
    )
    p.add_argument(
        "--window",
        type=head_window,
        default=FROM_RUN,
        metavar="W",
        help="alignment: a query frame looks at support frames at most W segments away, or "
        f"'none' for all (default: {owner}; a different value is reported)",
    )


def add_device_option(p: argparse._ActionsContainer, what: str = "the model runs") -> None:
    """--device of the host half (train/device.py): one argument, the same everywhere."""
    p.add_argument(
        "--device",
        default="auto",
        help=f"where {what}: auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda (under "
        "torchrun: cuda:LOCAL_RANK), or cuda:N",
    )


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def emit(result: Result, args: argparse.Namespace) -> int:
    """Print the result (its lines, or JSON with --json, to the stdout `main` set aside); exit status 0."""
    out = getattr(args, "result_stream", None) or sys.stdout
    print(render(result, getattr(args, "json", False)), file=out)
    return 0
