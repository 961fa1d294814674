"""Hardware-aware search as an NNI experiment: budgets hold, results load, NNI leaves nothing behind."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from sst_edge.cli import main
from sst_edge.cost.flops import extreme_sample, predicted_cost
from sst_edge.errors import SSTEdgeError
from sst_edge.fileio import sha256_file
from sst_edge.search.experiment import NNI_LOG, run_search
from sst_edge.search.settings import SearchSettings
from sst_edge.space.config import load_space
from sst_edge.space.subnet import load_subnet
from sst_edge.train.artifacts import run_restriction

TINY = load_space("sst_tiny")


def _budget(run, share: float) -> float:
    """A FLOPs budget `share` of the way from the cheapest to the dearest subnet of the run's space."""
    keep = run_restriction(run, TINY)
    lo = predicted_cost(TINY, extreme_sample(TINY, keep)).gflops
    hi = predicted_cost(TINY, extreme_sample(TINY, keep, largest=True)).gflops
    return lo + share * (hi - lo)


def _free_port() -> int:
    """A TCP port no one listens on now, from the OS."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _descendants(root: int) -> dict[tuple[int, int], str]:
    """(pid, start time) -> command line of every living (not zombie) descendant of `root`, from /proc."""
    procs: dict[int, tuple[int, int, str]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[0] != "Z":
            procs[int(d.name)] = (int(fields[1]), int(fields[19]), cmd)  # ppid, start time, command
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out[(c, procs[c][1])] = procs[c][2]
            todo.append(c)
    return out


class _OwnProcesses:
    """Every process this test's process starts (directly or not) while inside the block, seen by polling
    /proc: the check is scoped to them, not to whatever else runs on the host."""

    def __init__(self, on_manager=None):
        self.seen: dict[tuple[int, int], str] = {}
        self.manager_keys: set[tuple[int, int]] = set()
        self.on_manager = on_manager
        self._stop = threading.Event()

    def _poll(self) -> None:
        fired = False
        while not self._stop.is_set():
            now = _descendants(os.getpid())
            # a dying process shows an empty command line: keep the first one seen
            self.seen.update({k: v for k, v in now.items() if k not in self.seen or not self.seen[k]})
            self.manager_keys |= {k for k, v in now.items() if "nni_node" in v or "main.js" in v}
            if self.on_manager and not fired and self.manager_keys:
                fired = self.on_manager() is not False  # False: not yet, ask again
            time.sleep(0.05)

    def managers(self) -> list[str]:
        return [self.seen[k] for k in self.manager_keys]

    def alive(self) -> list[str]:
        now = _descendants(os.getpid())
        return [cmd for key, cmd in self.seen.items() if key in now]

    def __enter__(self) -> _OwnProcesses:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def wait_all_gone(self, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.alive()


class _Spy:
    """Records every episode the search draws, per EpisodeDataset built: (seed, index, support and query
    clip paths)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        import sst_edge.data.episodes as episodes
        import sst_edge.search.experiment as experiment

        self.sets: list[tuple[str, list[tuple]]] = []
        spy = self

        class Recording(episodes.EpisodeDataset):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.drawn: list[tuple] = []
                spy.sets.append((self.clips.name, self.drawn))

            def episode(self, index: int):
                ep = super().episode(index)
                self.drawn.append((self.seed, index, tuple(ep.support_paths), tuple(ep.query_paths)))
                return ep

        monkeypatch.setattr(experiment, "EpisodeDataset", Recording)  # where the search builds them


def test_in_process_search_meets_the_budget_and_rescores_on_other_episodes(trained_run, synth_dataset,
                                                                           tmp_path, monkeypatch):
    from sst_edge.search.experiment import top_records
    from sst_edge.search.report import summary_lines

    spy = _Spy(monkeypatch)
    budget = _budget(trained_run, 0.5)
    out = tmp_path / "search"
    settings = SearchSettings(trials=10, population=4, sample_size=2, episodes=8, budget_gflops=budget,
                              seed=1, rescore_top=3, rescore_episodes=10)
    summary = run_search("sst_tiny", trained_run, synth_dataset, out, settings)
    records = list(csv.DictReader((out / "trials.csv").open()))
    assert sum(r["kind"] == "evolution" for r in records) == 10
    assert sum(r["kind"] == "random" for r in records) == 10
    assert all(float(r["gflops"]) <= budget + 1e-12 for r in records)
    assert summary["over_budget"] == 0
    # The search's episodes (decoded once) and the re-scoring's: the same split, disjoint episodes.
    (search_split, search_eps), (rescore_split, rescore_eps) = spy.sets
    assert search_split == rescore_split == "val"
    assert [e[:2] for e in search_eps] == [(1, i) for i in range(8)]
    assert [e[:2] for e in rescore_eps] == [(1, i) for i in range(8, 18)]
    assert not {e[2:] for e in search_eps} & {e[2:] for e in rescore_eps}  # no episode drawn twice
    assert summary["episodes"]["search"]["first"] == 0 and summary["episodes"]["rescore"]["first"] == 8
    # The shortlist: the top 3 of the evolution and the top 3 of the random baseline, by search estimate.
    trials = [json.loads(f.read_text()) for f in (out / "trials").glob("*.json")]
    assert len(trials) == 20
    rescored = summary["rescored"]
    for kind in ("evolution", "random"):
        top = top_records([t for t in trials if t["kind"] == kind], 3, "gflops")
        assert len(top) == 3
        assert [f["sample"] for f in rescored if f["kind"] == kind] == [t["sample"] for t in top]
    assert len(rescored) == 6
    assert all(f["rescore"]["episodes"] == 10 and f["search"]["episodes"] == 8 for f in rescored)
    # best.json: the evolution's best re-scored subnet, with both figures, the cost model and the head.
    sub, config = load_subnet(out / "best.json", restriction=run_restriction(trained_run, TINY))
    assert config.name == "sst_tiny" and predicted_cost(config, sub.sample).gflops <= budget
    m = sub.metrics
    evo = [f for f in rescored if f["kind"] == "evolution"]
    assert m["accuracy"] == m["rescore"]["accuracy"] == max(f["rescore"]["accuracy"] for f in evo)
    winner = next(f for f in evo if f["sample"] == sub.sample)
    assert m["search"]["accuracy"] == winner["search"]["accuracy"]
    assert m["search"]["episodes"] == 8 and m["rescore"]["episodes"] == m["episodes"] == 10
    assert m["search"]["first_episode"] == 0 and m["rescore"]["first_episode"] == 8
    assert 0 < m["rescore"]["ci95"] < 0.5 and 0 < m["search"]["ci95"] < 0.5
    assert m["latency_table"] is None  # a FLOPs budget: no table predicted anything
    assert m["head"] == {"kind": "alignment", "tau": 0.1, "window": 1}  # conftest's run: the defaults
    assert m["accuracy"] > 0.2  # 5-way: well above chance with trained weights
    # The winner against the baseline's best re-scored subnet, paired on the same episodes.
    c = summary["comparison"]
    assert c == m["vs_random"] and c["episodes"] == 10 and isinstance(c["significant"], bool)
    rnd = summary["random_best"]
    assert c["difference"] == pytest.approx(m["accuracy"] - rnd["rescore"]["accuracy"])
    assert any("paired t-test" in line and "random baseline" in line for line in summary_lines(summary))
    shortlisted = [r for r in records if r["rescore_accuracy"]]
    assert 3 <= len(shortlisted) <= 6
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The CLI loads what search wrote.
    assert main(["space", "check", str(out / "best.json")]) == 0


def test_paired_comparison():
    import numpy as np

    from sst_edge.search.experiment import paired_comparison

    a = np.array([0.8, 0.9, 1.0, 0.7, 0.9, 0.8, 1.0, 0.9])
    c = paired_comparison(a, a - np.array([0.2, 0.1, 0.3, 0.2, 0.1, 0.2, 0.3, 0.1]))
    assert c["significant"] and c["p_value"] < 0.001 and c["wins"] == 8
    assert c["difference"] == pytest.approx(0.1875) and 0 < c["difference_ci95"] < 0.1
    same = paired_comparison(a, a)
    assert not same["significant"] and same["p_value"] == 1.0 and same["ties"] == 8
    worse = paired_comparison(a - 0.2, a)
    assert not worse["significant"]  # significantly worse is not "better"
    assert (c["direction"], same["direction"], worse["direction"]) == (
        "better", "no significant difference", "worse")
    from sst_edge.search.report import comparison_verdict

    assert comparison_verdict(worse, "random") == "significantly worse than random"
    assert comparison_verdict(same, "random") == "not significantly different from random"
    noisy = paired_comparison(a, a[::-1])  # differences +-, mean 0: no direction
    assert noisy["direction"] == "no significant difference"
    assert paired_comparison(a[:1], a[:1] - 0.1)["p_value"] is None


def _mp_settings(trained_run, trials: int = 4) -> SearchSettings:
    return SearchSettings(trials=trials, population=2, sample_size=2, episodes=4, concurrency=2,
                          budget_gflops=_budget(trained_run, 0.7), baseline=False, port=_free_port(),
                          rescore_top=1, rescore_episodes=2)


def test_multi_process_engine_completes_and_stops_nni(trained_run, synth_dataset, tmp_path):
    out = tmp_path / "mp"
    with _OwnProcesses() as procs:
        summary = run_search("sst_tiny", trained_run, synth_dataset, out, _mp_settings(trained_run))
    assert summary["trials"] == 4 and summary["over_budget"] == 0
    assert len(list((out / "trials").glob("evolution-*.json"))) == 4
    assert len(procs.managers()) >= 1  # NNI's manager ran, as this test's descendant...
    assert procs.wait_all_gone() == []  # ...and nothing it started outlives the search


@pytest.mark.parametrize("how", ["ctrl-c", "error"])
def test_the_nni_manager_is_stopped_on_ctrl_c_and_on_errors(how, trained_run, synth_dataset, tmp_path):
    """README: the NNI manager is always stopped, also on Ctrl-C and errors. A real SIGINT (or a signal
    whose handler raises) reaches the search while NNI's manager runs; the search ends with it, and every
    process it started is gone."""

    class Boom(RuntimeError):
        pass

    def boom(signum, frame):
        raise Boom("an error in the middle of the search")

    def fire() -> bool:
        # once a trial has run: NNI swallows any Exception raised while it waits for its manager to come
        # up (launcher._check_rest_server: contextlib.suppress(Exception)), so an error sent then is lost
        if not list((tmp_path / how / "trials").glob("*.json")):
            return False
        os.kill(os.getpid(), sig)
        return True

    sig = signal.SIGINT if how == "ctrl-c" else signal.SIGUSR1
    old = signal.signal(sig, signal.default_int_handler if how == "ctrl-c" else boom)
    try:
        with _OwnProcesses(on_manager=fire) as procs, \
                pytest.raises(KeyboardInterrupt if how == "ctrl-c" else Boom):
            run_search("sst_tiny", trained_run, synth_dataset, tmp_path / how, _mp_settings(trained_run, 40))
    finally:
        signal.signal(sig, old)
    assert len(procs.managers()) >= 1
    assert procs.wait_all_gone() == []
    assert len(list((tmp_path / how / "trials").glob("evolution-*.json"))) < 40
    assert not (tmp_path / how / "best.json").exists()


def test_latency_budget_through_the_table(trained_run, synth_dataset, tmp_path):
    """The shipped table as if a Jetson had timed it (another CPU): it drives the search as it is, since a
    table is judged against its target, not this host; for another target it is refused unless allowed."""
    from sst_edge.cost.latency import load_table, load_table_for
    from sst_edge.resources import resolve

    doc = json.loads(resolve("table", "sst_tiny.cpu-fp32").read_text())
    doc["fingerprint"]["cpu_model"] = "ARMv8 Processor rev 1 (v8l)"
    foreign = tmp_path / "jetson.json"
    foreign.write_text(json.dumps(doc))
    table = load_table(foreign, config=TINY)
    assert table.foreign == []
    keep = run_restriction(trained_run, TINY)
    lo = table.predict_ms(extreme_sample(TINY, keep))
    budget = lo * 1.05
    settings = SearchSettings(trials=4, population=2, sample_size=2, episodes=4, budget_ms=budget,
                              table=str(foreign), baseline=False, rescore_top=2, rescore_episodes=3)
    refused = dataclasses.replace(settings, target="cpu-int8")
    with pytest.raises(SSTEdgeError, match="another space, target or device") as e:
        run_search("sst_tiny", trained_run, synth_dataset, tmp_path / "refused", refused)
    assert "made for target 'cpu-fp32', not 'cpu-int8'" in e.value.problems
    assert not (tmp_path / "refused" / "trials").exists()
    with pytest.warns(UserWarning, match="foreign latency table"):  # what the trials load under the flag
        assert load_table_for(foreign, TINY, "cpu-int8", allow_foreign=True).foreign == e.value.problems
    run_search("sst_tiny", trained_run, synth_dataset, tmp_path / "lat", settings)  # no warning, no flag
    files = sorted((tmp_path / "lat" / "trials").glob("*.json"))
    assert len(files) == 4  # every trial left its record (no baseline)
    for f in files:
        rec = json.loads(f.read_text())
        assert rec["latency_ms"] <= budget and table.predict_ms(rec["sample"]) == rec["latency_ms"]
    best = load_subnet(tmp_path / "lat" / "best.json")[0].metrics
    assert best["latency_table"]["name"] == str(foreign)
    assert best["latency_table"]["sha256"] == sha256_file(foreign)
    assert best["vs_random"] is None  # no baseline: nothing to compare with
    assert best["latency_ms"] == table.predict_ms(load_subnet(tmp_path / "lat" / "best.json")[0].sample)


def test_impossible_budget_is_refused(trained_run, synth_dataset, tmp_path):
    settings = SearchSettings(trials=2, budget_gflops=1e-6)
    with pytest.raises(SSTEdgeError, match="below the cheapest subnet"):
        run_search("sst_tiny", trained_run, synth_dataset, tmp_path / "x", settings)
    assert main(["search", "--space", "sst_tiny", "--weights", str(trained_run), "--data", str(synth_dataset),
                 "--out", str(tmp_path / "y"), "--budget-ms", "5"]) == 2  # no table


def test_weights_of_another_space_are_refused(trained_run, synth_dataset, tmp_path):
    with pytest.raises(SSTEdgeError, match="for space 'sst_tiny', not 'sst_paper'"):
        run_search("sst_paper", trained_run, synth_dataset, tmp_path / "z", SearchSettings(budget_gflops=10))


def test_space_with_fewer_subnets_than_trials(trained_run, synth_dataset, tmp_path):
    """A heavily shrunk space: the random baseline scores every subnet under the budget, then stops."""
    from sst_edge.space.restriction import Restriction

    keep = {label: values[:1] for label, values in TINY.choices().items()}
    keep["s3_l1_op"] = ["tab", "sab"]
    keep["s3_l2_op"] = ["tab", "sab"]  # 4 subnets in all
    path = Restriction(TINY.name, TINY.hash, keep).save(tmp_path / "restriction.json")
    settings = SearchSettings(trials=6, population=2, sample_size=2, episodes=2, budget_gflops=10.0,
                              rescore_top=1, rescore_episodes=2)
    run_search("sst_tiny", trained_run, synth_dataset, tmp_path / "s", settings, restriction_file=path)
    randoms = [json.loads(f.read_text()) for f in (tmp_path / "s" / "trials").glob("random-*.json")]
    assert len(randoms) == 4
    assert len({tuple(r["sample"].values()) for r in randoms}) == 4


def test_the_search_verb_prints_no_nni_log_line_and_no_escape_code(trained_run, synth_dataset, tmp_path):
    """`sst-edge search > file`: our progress and results only; NNI's own lines (its config warning, one
    `[Metric]` line per trial) go to OUT/nni/nni.log, colourless; `--verbose` puts them back on stdout."""
    import subprocess
    import sys

    def search(out: Path, *extra: str) -> str:
        log = tmp_path / f"{out.name}.log"
        with log.open("wb") as f:  # a file, not a terminal, as in `make demo > demo.log 2>&1`
            cmd = [sys.executable, "-m", "sst_edge.cli", "search", "--space", "sst_tiny",
                   "--weights", str(trained_run), "--data", str(synth_dataset), "--out", str(out),
                   "--trials", "3", "--population", "2", "--sample-size", "2", "--episodes", "2",
                   "--rescore-top", "1", "--rescore-episodes", "2",
                   "--budget-gflops", str(_budget(trained_run, 0.7)), "--no-baseline", *extra]
            subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True, timeout=600)
        return log.read_text(errors="replace")

    text = search(tmp_path / "quiet")
    assert "[Metric]" not in text and "training_service" not in text, text
    assert "\x1b" not in text  # no colour codes or cursor moves in a file
    assert "best" in text  # our own summary is there
    nni_log = (tmp_path / "quiet" / NNI_LOG).read_text()
    assert nni_log.count("[Metric]") == 3 and "\x1b" not in nni_log
    loud = search(tmp_path / "loud", "--verbose")
    assert loud.count("[Metric]") == 3
