"""Fine-tuning a found subnet alone (`train --subnet --init`), from the session's trained supernet run.

The subnet inherits its weights exactly; the run writes what a supernet run writes (single-path
restriction.json, checkpoints), evaluation picks the fine-tuned subnet up, bad documents are refused with
the file named, and a resumed fine-tuning run ends where an uninterrupted one does (without the init run).
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch

from sst_edge.cli import main
from sst_edge.errors import SSTEdgeError
from sst_edge.space.config import load_space
from sst_edge.space.restriction import Restriction
from sst_edge.space.subnet import make_subnet
from sst_edge.space.supernet import activate, build_supernet, random_sample, supernet_choices
from sst_edge.train.artifacts import load_supernet, run_restriction, single_path
from sst_edge.train.checkpoint import checkpoint_paths, load_tensors
from sst_edge.train.config import TrainConfig
from sst_edge.train.evaluate import evaluate
from sst_edge.train.finetune import load_finetune, load_init
from sst_edge.train.loop import TrainResult, train_supernet

TINY = load_space("sst_tiny")
SHORT = {"way": 3, "shot": 1, "query": 2, "episodes": 10, "epochs": 2, "val_episodes": 3, "lr_warmup": 5,
         "workers": 0, "threads": 1, "log_every": 5}


@pytest.fixture(scope="module")
def init_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's supernet run, copied: the resume test takes it away."""
    out = tmp_path_factory.mktemp("init") / "supernet"
    out.mkdir()
    for name in ("supernet.safetensors", "restriction.json", "run.json"):
        shutil.copy(trained_run / name, out / name)
    return out


@pytest.fixture(scope="module")
def subnet_doc(init_run: Path) -> Path:
    sample = random_sample(TINY, random.Random(1), run_restriction(init_run, TINY))
    return make_subnet(TINY, sample).save(init_run.parent / "best.json")


@pytest.fixture(scope="module")
def finetuned(init_run: Path, subnet_doc: Path, synth_dataset: Path) -> tuple[Path, TrainConfig, TrainResult]:
    cfg = TrainConfig(space="sst_tiny", data=str(synth_dataset), subnet=str(subnet_doc), init=str(init_run),
                      **SHORT)
    out = init_run.parent / "ft"
    return out, cfg, train_supernet(cfg, out, progress=False)


def doc_sample(path: Path) -> dict:
    return json.loads(path.read_text())["sample"]


def test_the_subnet_inherits_the_supernets_weights_exactly(init_run: Path, subnet_doc: Path,
                                                           synth_dataset: Path) -> None:
    cfg = TrainConfig(space="sst_tiny", data=str(synth_dataset), subnet=str(subnet_doc), init=str(init_run))
    tune = load_finetune(cfg, TINY)
    model = build_supernet(TINY, tune.restriction).eval()
    load_init(model, tune)
    supernet, meta = load_supernet(init_run, TINY)
    assert meta["subnet"] is None and supernet_choices(supernet) == TINY.choices()
    assert supernet_choices(model) == single_path(tune.sample) == tune.restriction
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in supernet.parameters())
    activate(supernet.eval(), TINY, tune.sample)
    activate(model, TINY, tune.sample)
    x = torch.randn(2, *TINY.input_shape(1)[1:])
    with torch.no_grad():
        torch.testing.assert_close(model(x), supernet(x), rtol=0, atol=1e-6)


def test_the_training_loop_starts_from_the_inherited_weights(init_run: Path, subnet_doc: Path,
                                                             synth_dataset: Path, tmp_path: Path) -> None:
    """One step at a negligible learning rate: the parameters are still the supernet's slices."""
    cfg = TrainConfig(space="sst_tiny", data=str(synth_dataset), subnet=str(subnet_doc), init=str(init_run),
                      **{**SHORT, "episodes": 1, "epochs": 1, "val_episodes": 0, "lr": 1e-12})
    train_supernet(cfg, tmp_path / "ft", progress=False)
    after, _ = load_tensors(tmp_path / "ft" / "supernet.safetensors")
    model = build_supernet(TINY, single_path(doc_sample(subnet_doc)))
    load_init(model, load_finetune(cfg, TINY))
    for name, p in model.named_parameters():
        torch.testing.assert_close(after[name], p.detach(), rtol=0, atol=1e-6)


def test_a_finetuning_run_writes_what_a_supernet_run_writes(finetuned: tuple[Path, TrainConfig, TrainResult],
                                                            subnet_doc: Path, init_run: Path) -> None:
    out, _, result = finetuned
    sample = doc_sample(subnet_doc)
    assert result.subnet == sample and result.space_size == 1 and result.dropped == []
    assert math.isfinite(result.first_epoch_loss) and math.isfinite(result.last_epoch_loss)
    assert (out / "supernet.safetensors").is_file() and not (out / "scores.png").exists()
    assert all(p.is_file() for e in (1, 2) for p in checkpoint_paths(out, e))
    assert run_restriction(out, TINY) == single_path(sample)  # what search and eval read
    _, meta = load_tensors(out / "supernet.safetensors")
    assert meta["subnet"] == sample and meta["space"] == "sst_tiny" and meta["step"] == 20
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["config"]["subnet"] == str(subnet_doc)
    ft = record["finetune"]
    assert ft["sample"] == sample and ft["init"] == str(init_run) and ft["warnings"] == []
    assert ft["init_weights"] == str(init_run / "supernet.safetensors")
    kinds = {json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert kinds == {"step", "epoch"}  # no shrink event


def test_eval_scores_the_finetuned_subnet(finetuned: tuple[Path, TrainConfig, TrainResult],
                                          subnet_doc: Path, synth_dataset: Path, tmp_path: Path) -> None:
    out = finetuned[0]
    kw = {"way": 3, "episodes": 4, "workers": 0, "threads": 1, "progress": False}
    r = evaluate("sst_tiny", out, synth_dataset, **kw)
    assert r.sample == doc_sample(subnet_doc) and r.subnet_source == "fine-tuned subnet"
    assert 0 <= r.accuracy["alignment"] <= 1
    assert evaluate("sst_tiny", out, synth_dataset, subnet=subnet_doc, **kw).accuracy == r.accuracy
    other = {**r.sample, "s1_l1_op": {"tab": "sab", "sab": "tab"}[r.sample["s1_l1_op"]]}
    other_doc = make_subnet(TINY, other).save(tmp_path / "other.json")
    with pytest.raises(SSTEdgeError, match="other.json: is not the subnet") as e:
        evaluate("sst_tiny", out, synth_dataset, subnet=other_doc, **kw)
    assert "'s1_l1_op'" in str(e.value)
    supernet, _ = load_supernet(out / "checkpoint-e0001.safetensors", TINY)  # a checkpoint alone, too
    with pytest.raises(SSTEdgeError, match="cannot activate"):  # never NNI's KeyError
        activate(supernet, TINY, other)


def test_bad_subnets_are_refused_with_the_file_named(init_run: Path, subnet_doc: Path, synth_dataset: Path,
                                                     finetuned: tuple[Path, TrainConfig, TrainResult],
                                                     tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "never"
    base = ["train", "--data", str(synth_dataset), "--out", str(out), "--no-progress"]
    paper = load_space("sst_paper")
    docs = {"paper.json": make_subnet(paper, random_sample(paper, random.Random(0))).to_dict(),
            "label.json": json.loads(subnet_doc.read_text())}
    docs["label.json"]["sample"]["s1_l1_op"] = "conv"
    for name, doc in docs.items():
        (tmp_path / name).write_text(json.dumps(doc))
    (tmp_path / "cut.json").write_text('{"format": ')
    expect = {"paper.json": "space 'sst_paper', but the --init weights are not",
              "label.json": "'s1_l1_op' = 'conv' is not one of", "cut.json": "not a valid subnet document"}
    for name, message in expect.items():
        assert main([*base, "--subnet", str(tmp_path / name), "--init", str(init_run)]) == 2
        err = capsys.readouterr().err
        assert str(tmp_path / name) in err and message in err, err
    assert main([*base, "--subnet", str(subnet_doc)]) == 2
    assert "needs both a subnet document (--subnet) and the run" in capsys.readouterr().err
    sample = doc_sample(subnet_doc)
    other = {**sample, "s3_l3_heads": 16 if sample["s3_l3_heads"] != 16 else 6}
    make_subnet(TINY, other).save(tmp_path / "other.json")
    assert main([*base, "--subnet", str(tmp_path / "other.json"), "--init", str(finetuned[0])]) == 2
    err = capsys.readouterr().err
    assert "holds the weights of one fine-tuned subnet" in err and "s3_l3_heads" in err
    assert not out.exists()


def test_a_subnet_outside_the_shrunk_space_is_allowed_with_a_warning(init_run: Path, synth_dataset: Path,
                                                                     tmp_path: Path) -> None:
    run = tmp_path / "run"  # the run, with a shrunk space that dropped one candidate (written here: a short
    shutil.copytree(init_run, run)  # run drops nothing unless the losses show it is worse)
    label = next(k for k in TINY.choices() if k.endswith("_heads"))
    value = TINY.choices()[label][0]
    restriction = {k: [x for x in v if (k, x) != (label, value)] for k, v in TINY.choices().items()}
    Restriction(TINY.name, TINY.hash, restriction).save(run / "restriction.json")
    assert value not in run_restriction(run, TINY)[label]
    sample = {**random_sample(TINY, random.Random(0), restriction), label: value}
    doc = make_subnet(TINY, sample).save(tmp_path / "outside.json")
    cfg = TrainConfig(space="sst_tiny", data=str(synth_dataset), subnet=str(doc), init=str(run))
    tune = load_finetune(cfg, TINY)
    assert len(tune.warnings) == 1 and f"{label}={value}" in tune.warnings[0] and str(doc) in tune.warnings[0]
    load_init(build_supernet(TINY, tune.restriction), tune)  # the full supernet state holds every candidate


def test_resume_continues_a_finetuning_run_without_the_init_run(finetuned: tuple[Path, TrainConfig,
                                                                                 TrainResult], init_run: Path,
                                                                tmp_path: Path) -> None:
    out, cfg, _ = finetuned
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    for p in [*checkpoint_paths(cut, 2), cut / "supernet.safetensors"]:
        p.unlink()
    away = init_run.with_name("away")
    init_run.rename(away)  # resumption reads the checkpoint, never the init weights
    try:
        r = train_supernet(cfg, cut, resume=True, progress=False)
    finally:
        away.rename(init_run)
    assert r.epochs == 2 and r.steps == 20
    assert (cut / "supernet.safetensors").read_bytes() == (out / "supernet.safetensors").read_bytes()
    record = json.loads((cut / "run.json").read_text())
    assert len(record["resumed"]) == 1 and record["finetune"]["init_weights"]  # the fresh start's record


def test_finetuning_trains_through_the_init_runs_head_and_records_an_override(
        init_run: Path, subnet_doc: Path, synth_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "tau02"  # the run, as if trained with --tau 0.2 --window none (its record counts)
    shutil.copytree(init_run, run)
    doc = json.loads((run / "run.json").read_text())
    doc["config"]["head"] = {"kind": "alignment", "tau": 0.2, "window": None}
    (run / "run.json").write_text(json.dumps(doc))
    base = ["train", "--data", str(synth_dataset), "--subnet", str(subnet_doc), "--init", str(run),
            "--way", "3", "--shot", "1", "--query", "1", "--episodes", "2", "--epochs", "1",
            "--val-episodes", "0", "--workers", "0", "--threads", "1", "--no-progress"]
    with pytest.warns(UserWarning, match="tau"):  # the override is reported at the start, too
        assert main([*base, "--out", str(tmp_path / "given"), "--tau", "0.3"]) == 0
    assert main([*base, "--out", str(tmp_path / "inherited")]) == 0
    inherited = json.loads((tmp_path / "inherited" / "run.json").read_text())
    assert inherited["config"]["head"] == {"kind": "alignment", "tau": 0.2, "window": None}
    assert inherited["finetune"]["head"]["init_head"]["tau"] == 0.2
    assert inherited["finetune"]["head"]["overrides"] == {}
    given = json.loads((tmp_path / "given" / "run.json").read_text())
    assert given["config"]["head"] == {"kind": "alignment", "tau": 0.3, "window": None}
    assert given["finetune"]["head"]["overrides"] == {"tau": {"init": 0.2, "used": 0.3}}
    # a supernet run (no --init) still takes the defaults
    from sst_edge.cli import build_parser
    from sst_edge.cli.train import _head

    args = build_parser().parse_args(["train", "--space", "sst_tiny", "--data", "d", "--out", "o"])
    assert _head(args).to_dict() == {"kind": "alignment", "tau": 0.1, "window": 1}
