"""What users made before the renames still works: a run's `shrunk.json` (now `restriction.json`), the
`--restrict` flag (now `--restriction`), and version-1 model cards (now version 2, typed sections)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sst_edge.cli import main
from sst_edge.device.card import CARD_FILE, load_card
from sst_edge.errors import SSTEdgeError
from sst_edge.space.config import load_space
from sst_edge.space.restriction import Restriction
from sst_edge.train.artifacts import run_restriction

TINY = load_space("sst_tiny")


def test_an_older_runs_shrunk_json_is_read(tmp_path: Path) -> None:
    old = {"s1_l1_op": ["sab"]}
    Restriction(TINY.name, TINY.hash, old).save(tmp_path / "shrunk.json")
    assert run_restriction(tmp_path, TINY) == old
    new = {"s1_l1_op": ["tab"]}
    Restriction(TINY.name, TINY.hash, new).save(tmp_path / "restriction.json")
    assert run_restriction(tmp_path, TINY) == new  # the current name wins
    (tmp_path / "empty").mkdir()
    assert run_restriction(tmp_path / "empty", TINY) is None


def test_the_old_flag_name_still_parses(tmp_path: Path, capsys) -> None:
    only = {"s1_l1_op": ["sab"], "s1_l1_heads": [6]}
    path = Restriction(TINY.name, TINY.hash, only).save(tmp_path / "r.json")
    assert main(["space", "sample", "--space", "sst_tiny", "--restrict", str(path), "--out",
                 str(tmp_path / "s.json"), "--json"]) == 0
    sample = json.loads(capsys.readouterr().out)["sample"]
    assert (sample["s1_l1_op"], sample["s1_l1_heads"]) == ("sab", 6)


def test_a_version_1_card_is_read_and_a_version_3_card_refused(exported_model: Path, tmp_path: Path) -> None:
    doc = json.loads((exported_model / CARD_FILE).read_text())
    assert doc["version"] == 2
    doc["version"] = 1
    (tmp_path / CARD_FILE).write_text(json.dumps(doc))
    card = load_card(tmp_path)
    assert card.cost is not None and card.cost["gflops"] == doc["cost"]["gflops"]
    doc["version"] = 3
    (tmp_path / CARD_FILE).write_text(json.dumps(doc))
    with pytest.raises(SSTEdgeError, match="version 3 is not supported"):
        load_card(tmp_path)
