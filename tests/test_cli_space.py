"""The CLI explains itself, and `space show` prints the figures users look for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sst_edge.cli import build_parser, main
from sst_edge.cost.space_report import describe_space


def test_help_for_every_verb(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"space", "data"} <= set(commands)
    for name, sub in commands.items():
        text = sub.format_help()
        assert len(text) > 100, name
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "few-shot" in capsys.readouterr().out


def test_unknown_space_names_the_known_ones(capsys):
    assert main(["space", "show", "--space", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "sst_tiny" in err and "sst_paper" in err


def test_show_tiny():
    summary = describe_space("sst_tiny", samples=2)
    out = "\n".join(summary.lines())
    assert "s3_l3_heads" in out and "10,077,696 architectures" in out
    assert summary.architectures == 3 ** 9 * 2 ** 9  # 9 layers of 2 ops x 3 head counts, 9 heads labels
    sub = summary.subnets
    assert sub["smallest"]["gflops"] <= sub["random 1"]["gflops"] <= sub["largest"]["gflops"]


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "sst_edge.cli", "space", "show", "--space", "sst_tiny",
                        "--samples", "0"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "range:" in r.stdout
