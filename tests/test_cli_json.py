"""Every verb follows one convention: `--json` prints its result's `to_dict()` as the only thing on
stdout (parseable), without it the same result's `lines()`; and the CLI's help needs no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sst_edge.cli import STAGES, build_parser, main
from sst_edge.demo import DemoResult, Stage
from sst_edge.result import render
from sst_edge.space.config import load_space
from sst_edge.space.restriction import Restriction


def run_json(capsys: pytest.CaptureFixture[str], *args: object) -> dict:
    """`sst-edge ARGS --json` in this process: its exit status must be 0 and stdout one JSON document."""
    code = main([*map(str, args), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def every_verb() -> set[str]:
    """'space show', 'train', 'gallery list'...: every runnable verb the parser knows."""
    verbs = set()
    for name, p in build_parser()._subparsers._group_actions[0].choices.items():  # type: ignore[union-attr]
        subs = [a for a in p._actions if isinstance(a, type(build_parser()._subparsers._group_actions[0]))]
        verbs |= {f"{name} {v}" for v in subs[0].choices} if subs else {name}
    return verbs


def test_every_verb_takes_json() -> None:
    parser = build_parser()
    top = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    verbs = every_verb()
    assert len(verbs) == 17, sorted(verbs)  # space x3, data x2, train, eval, profile, search, export,
    for verb in verbs:                      # enroll, classify, gallery x3, watch, demo
        name, *rest = verb.split()
        p = top[name]
        if rest:
            sub = next(a for a in p._actions if isinstance(getattr(a, "choices", None), dict))
            p = sub.choices[rest[0]]
        assert any("--json" in a.option_strings for a in p._actions), verb
    assert len(STAGES) == 9  # one module per stage, in pipeline order


def test_json_of_the_host_verbs(trained_run: Path, tiny_subnet: Path, synth_dataset: Path, tmp_path: Path,
                                capsys) -> None:
    tiny = load_space("sst_tiny")
    path = Restriction(tiny.name, tiny.hash, {"s1_l1_op": ["sab"], "s2_l1_heads": [6, 12]}).save(
        tmp_path / "r.json")
    shown = run_json(capsys, "space", "show", "--space", "sst_tiny", "--samples", "1", "--restriction", path)
    assert shown["restricted"] and shown["architectures"] == 6 ** 9 // 2 // 3 * 2  # 1 of 2 ops, 2 of 3 heads
    assert shown["subnets"]["smallest"]["gflops"] <= shown["subnets"]["largest"]["gflops"]
    sampled = run_json(capsys, "space", "sample", "--space", "sst_tiny", "--out", tmp_path / "s.json")
    assert Path(sampled["path"]).is_file()
    checked = run_json(capsys, "space", "check", tiny_subnet)
    assert checked["valid"] and checked["space"] == "sst_tiny"
    data = run_json(capsys, "data", "synth", "--out", tmp_path / "d", "--classes", "4", "--clips", "1",
                    "--frames", "4")
    assert data["classes"] == 4 and sum(data["splits"].values()) == 4
    report = run_json(capsys, "data", "check", tmp_path / "d")
    assert report["ok"] and sum(report["clips"].values()) == 4
    table = run_json(capsys, "profile", "--table", "sst_tiny.cpu-fp32", "--allow-foreign-table")
    assert table["space"] == "sst_tiny"
    ev = run_json(capsys, "eval", "--weights", trained_run, "--space", "sst_tiny", "--data", synth_dataset,
                  "--episodes", "3", "--workers", "0", "--no-progress")
    assert ev["episodes"] == 3 and 0 <= ev["accuracy"]["alignment"] <= 1
    trained = run_json(capsys, "train", "--space", "sst_tiny", "--data", synth_dataset, "--out",
                       tmp_path / "r", "--epochs", "1", "--episodes", "2", "--val-episodes", "0",
                       "--workers", "0", "--threads", "1", "--no-progress")
    assert trained["epochs"] == 1 and trained["steps"] == 2 and trained["space_size"] == 6 ** 9
    found = run_json(capsys, "search", "--space", "sst_tiny", "--weights", trained_run, "--data",
                     synth_dataset, "--out", tmp_path / "search", "--budget-gflops", "10", "--trials", "2",
                     "--population", "2", "--sample-size", "2", "--episodes", "2", "--rescore-top", "1",
                     "--rescore-episodes", "2", "--no-baseline", "--threads", "1")
    assert found["trials"] == 2 and found["best"]["rescore"]["episodes"] == 2
    assert (tmp_path / "search" / "best.json").is_file()
    card = run_json(capsys, "export", "--subnet", tiny_subnet, "--weights", trained_run, "--out",
                    tmp_path / "m", "--no-measure", "--no-progress")
    assert card["format"] == "sst-edge/model-card" and card["version"] == 2


def test_json_of_the_device_verbs(exported_model: Path, synth_dataset: Path, tmp_path: Path, capsys) -> None:
    clips = sorted((synth_dataset / sorted(p.name for p in synth_dataset.iterdir() if p.is_dir()
                                           and p.name != "splits")[0]).glob("*.mp4"))
    g = tmp_path / "g"
    enrolled = run_json(capsys, "enroll", "--model", exported_model, "--gallery", g, "--label", "a",
                        clips[0], "--no-progress")
    run_json(capsys, "enroll", "--model", exported_model, "--gallery", g, "--label", "b", clips[1],
             "--no-progress")
    assert enrolled["label"] == "a"
    ranked = run_json(capsys, "classify", "--model", exported_model, "--gallery", g, clips[2],
                      "--no-progress")
    assert len(ranked["results"]) == 1
    streamed = run_json(capsys, "classify", "--model", exported_model, "--gallery", g, "--stream", clips[2],
                        "--unit", "frames", "--span", "8", "--stride", "8")
    assert [s["start_frame"] for s in streamed["spans"]] == [0, 8]  # 16 frames
    listed = run_json(capsys, "gallery", "list", g)
    assert sorted(listed["labels"]) == ["a", "b"]
    run_json(capsys, "gallery", "rename", g, "b", "c")
    run_json(capsys, "gallery", "remove", g, "--label", "c")
    assert list(run_json(capsys, "gallery", "list", g)["labels"]) == ["a"]
    ev = run_json(capsys, "eval", "--model", exported_model, "--data", synth_dataset, "--episodes", "2",
                  "--no-progress")
    assert ev["episodes"] == 2


def test_demo_result_renders_both_ways(tmp_path: Path) -> None:
    """The demo verb's result (the demo itself runs in `make demo`, minutes long)."""
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "loss.png").write_bytes(b"")
    r = DemoResult([Stage("space", "x.yaml", 1.25, {"architectures": 7, "GFLOPs min": 0.5})], tmp_path)
    doc = json.loads(render(r, as_json=True))
    assert doc["stages"][0] == {"name": "space", "output": "x.yaml", "seconds": 1.25,
                                "figures": {"architectures": 7, "GFLOPs min": 0.5}}
    assert doc["plots"] == [str(tmp_path / "p" / "loss.png")]
    assert any("architectures 7" in line for line in r.lines())


@pytest.mark.parametrize("argv", [["--help"], ["classify", "--help"], ["train", "--help"]])
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    """Help is read on the device install too (no torch), and should come at once: no torch, NNI, ONNX
    Runtime, decoder or numpy is imported to print it. (Its time is measured in bench/import_time.py.)"""
    code = (f"import sys\nfrom sst_edge.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nheavy = {'torch', 'nni', 'onnxruntime', 'av', 'decord', 'numpy'}\n"
            "print(sorted(heavy & set(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_train_help_shows_the_dataclass_defaults() -> None:
    """The defaults live in TrainConfig / SearchSettings; argparse shows theirs."""
    from sst_edge.search.settings import SearchSettings
    from sst_edge.train.config import TrainConfig

    parser = build_parser()
    top = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    train = {a.dest: a.default for a in top["train"]._actions}
    search = {a.dest: a.default for a in top["search"]._actions}
    cfg = TrainConfig(space="sst_tiny", data="d")
    assert (train["episodes"], train["lr"]) == (cfg.episodes, cfg.lr)
    assert train["min_count"] == cfg.shrink.min_count
    assert (search["trials"], search["port"]) == (SearchSettings().trials, SearchSettings().port)
    assert f"(default: {cfg.episodes})" in top["train"].format_help()


def test_json_stdout_holds_the_result_alone(tiny_subnet: Path, monkeypatch, capsys) -> None:
    """A library that prints to stdout (NNI logs there) does not spoil --json: its lines go to stderr."""
    import sst_edge.cost.space_report as report

    real = report.check_subnet

    def noisy(*args, **kwargs):
        print("[nni] WARNING: a library talking on stdout")
        return real(*args, **kwargs)

    monkeypatch.setattr(report, "check_subnet", noisy)
    assert main(["space", "check", str(tiny_subnet), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["valid"] and "a library talking on stdout" in err
    assert main(["space", "check", str(tiny_subnet)]) == 0  # without --json, stdout as usual
    assert "a library talking on stdout" in capsys.readouterr().out
