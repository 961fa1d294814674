"""The space tables of docs/space.md are facts of the code, not measurements: each row's labels, size, FLOPs
and params range and hash must be what the space files give (a changed space fails here, not in a reader's
hands). The expected values come from the space's own machinery (the label choices, NNI's expression at
the cheapest and dearest subnets), to the digits the page prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sst_edge.cost.flops import extreme_sample, predicted_cost
from sst_edge.space.config import load_space
from sst_edge.space.restriction import restricted_choices, space_size

PAGE = Path(__file__).resolve().parent.parent / "docs" / "space.md"


def space_rows(text: str) -> list[dict[str, str]]:
    """Every table row whose first cell is a space name in backticks, keyed by its table's header."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif re.fullmatch(r"`\w+`", cells[0]) and len(cells) == len(header):
            rows.append(dict(zip(header, cells, strict=True)) | {"space": cells[0].strip("`")})
    return rows


def significant(shown: str) -> int:
    """How many significant digits a printed number has ("0.0120": 3, "4.7e18": 2)."""
    digits = re.sub(r"[eE].*$", "", shown).replace(".", "").lstrip("0")
    return len(digits)


def agrees(shown: str, true: float) -> bool:
    n = significant(shown)
    return float(f"{true:.{n}g}") == pytest.approx(float(shown), rel=1e-9)


ROWS = space_rows(PAGE.read_text(encoding="utf-8"))


def test_the_page_has_the_space_tables() -> None:
    assert {r["space"] for r in ROWS} >= {"sst_paper", "sst_tiny", "sst_plus_bl", "sst_plus_bl_tiny"}


@pytest.mark.parametrize("row", ROWS, ids=[r["space"] for r in ROWS])
def test_a_space_row_is_what_the_space_gives(row: dict[str, str]) -> None:
    config = load_space(row["space"])
    lo, hi = (predicted_cost(config, extreme_sample(config, largest=big)) for big in (False, True))
    assert agrees(row["architectures"], space_size(config)), row
    gf = [s.strip() for s in row["GFLOPs"].split("..")]
    mp = [s.strip() for s in row["params (M)"].split("..")]
    assert agrees(gf[0], lo.flops / 1e9) and agrees(gf[1], hi.flops / 1e9), (row, lo, hi)
    assert agrees(mp[0], lo.params / 1e6) and agrees(mp[1], hi.params / 1e6), (row, lo, hi)
    if "labels" in row:
        assert int(row["labels"]) == len(restricted_choices(config, None))
    if "hash" in row:
        assert row["hash"] == config.hash


def test_the_digit_rule_catches_a_wrong_figure() -> None:
    assert agrees("0.0120", 0.012) and agrees("4.7e18", 4.71e18) and agrees("15.78", 15.7812)
    assert not agrees("0.0121", 0.012) and not agrees("4.8e18", 4.71e18)
    assert (significant("1"), significant("0.0120"), significant("4.7e18")) == (1, 3, 2)


def test_the_paper_cost_subnet_is_what_the_page_says() -> None:
    from sst_edge.space.subnet import load_subnet

    text = " ".join(PAGE.read_text(encoding="utf-8").split())
    m = re.search(r"`search_spaces/sst_paper\.paper_cost\.json` is a subnet with that FLOPs count and both "
                  r"kinds of block: ([\d.]+) GFLOPs, ([\d.]+)M params", text)
    assert m, "docs/space.md no longer states the paper-cost subnet's cost"
    subnet, config = load_subnet(PAGE.parent.parent / "search_spaces" / "sst_paper.paper_cost.json")
    cost = predicted_cost(config, subnet.sample)
    assert agrees(m.group(1), cost.flops / 1e9) and agrees(m.group(2), cost.params / 1e6), cost
