"""Supernet training: single-path one-shot episodes with search-space shrinking (Algorithm 1).

Each optimizer step: one subnet drawn uniformly from the space's current restriction, validated and
routed (`activate`); `episodes_per_step` episodes on every rank, each the few-shot head's cross-entropy on
its query clips, the gradients accumulated (loss / K) and averaged over ranks once; AdamW with a linear
warm-up then a cosine learning rate over the optimizer steps, gradient clipping. The model runs on
`--device` in `--precision` (autocast; the head and the loss in fp32); a step whose gradients are not finite
is skipped (GradScaler's rule for fp16, the same rule for the others) and counted. Everything random is a
function of the seed and a position: subnet = f(seed, step), episode = f(seed, episode index), so a resumed
run, or a run on any number of workers, takes exactly the path an uninterrupted one does, and one process
with K episodes per step takes the episodes of K ranks with one each.

OUT (written by rank 0 only):
    run.json                 seed, versions, configuration, command, and at the end the results
    metrics.jsonl            one line per --log-every steps ("step"), epoch ("epoch") and shrink event
    checkpoint-eNNNN.*       every epoch (see checkpoint.py); `resume=True` continues from the newest
    restriction.json         the restriction (format of sst_edge.space.restriction), with its history
    supernet.safetensors     final weights (metadata: space, hash, epoch, step)
    loss.png, scores.png     loss curve; at each shrink event, every candidate's score minus its label's best
                             with error bars, the drops marked

Fine-tuning (`config.subnet` and `config.init`, see finetune.py) trains one subnet the same way, without
shrinking: restriction.json is that single path from the start, the weights' metadata name the subnet,
run.json records the subnet document, its sample and the init weights, and there is no scores.png.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .. import __version__
from .._nni import nni
from ..cost.flops import cost_expression, extreme_sample, predicted_cost
from ..cost.latency import load_table_for
from ..data.episodes import EpisodeDataset, EpisodeSubset, episode_loader, to_device
from ..device.datasets import load_splits
from ..device.preprocess import Preprocess
from ..device.settings import HeadConfig
from ..errors import DatasetError, SSTEdgeError
from ..fewshot import head_logits
from ..fewshot_cca import PREFIX as HEAD_PREFIX
from ..fewshot_cca import CCAHead, prefixed
from ..fileio import atomic_write, atomic_write_json, read_json, refuse_foreign, utc_now, written_by_us
from ..space.config import SpaceConfig, load_space
from ..space.restriction import FILE as RESTRICTION_FILE
from ..space.restriction import Restriction, full_restriction
from ..space.subnet import load_subnet
from ..space.supernet import activate, build_supernet, random_sample
from ..text import brief
from . import checkpoint as ckpt
from .artifacts import SUPERNET_FORMAT, WEIGHTS_FILE, single_path
from .config import TrainConfig
from .device import Precision, full_precision, resolve_precision
from .distributed import Dist, average_gradients, configure_threads, in_sync, init_distributed, shutdown, wrap
from .estimate import Estimate
from .evaluate import episode_accuracies, split_features
from .finetune import FineTune, load_finetune, load_init
from .plots import plot_loss, plot_scores
from .shrink import ShrinkRecords, candidate_costs, shrink, space_size

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
ESTIMATE_AFTER = 6      # optimizer steps timed (after the first, which warms up) before the run's estimate
MAX_SKIPPED_STEPS = 20  # consecutive steps with non-finite gradients before the run is called diverged
RUN_FOLDER = written_by_us(  # what a run writes into its folder, and nothing else may be there
    {RUN_FILE, METRICS_FILE, WEIGHTS_FILE, RESTRICTION_FILE, "shrunk.json", "loss.png", "scores.png"},
    pattern=r"checkpoint-e\d{4,}\.(safetensors|json)")

CostFn = Callable[[dict[str, Any]], float]


@dataclass
class TrainResult:
    out: Path
    epochs: int
    steps: int
    first_epoch_loss: float | None  # None: no step of the epoch had a finite loss
    last_epoch_loss: float | None
    val_acc: list[float | None]
    restriction: dict[str, list]
    space_size: int
    full_space_size: int
    dropped: list[str] = field(default_factory=list)  # "label=value@epoch", in order
    in_sync: bool = True
    seconds: float = 0.0
    rank: int = 0
    subnet: dict[str, Any] | None = None  # the fine-tuned subnet (None for a supernet run)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["out"] = str(self.out)
        return d

    def lines(self) -> list[str]:
        val = [v for v in self.val_acc if v is not None]
        out = [
            f"{'fine-tuned' if self.subnet else 'trained'} {self.epochs} epochs ({self.steps} steps) in "
            f"{self.seconds:.0f} s: loss {_num(self.first_epoch_loss)} (epoch 1) -> "
            f"{_num(self.last_epoch_loss)} "
            f"(epoch {self.epochs})" + (f", validation accuracy {val[-1]:.3f}" if val else "")
        ]
        if self.subnet:
            return out + [
                f"wrote {self.out}/: supernet.safetensors (the fine-tuned subnet alone), "
                f"{RESTRICTION_FILE}, metrics.jsonl, run.json, loss.png"
            ]
        return out + [
            f"shrinking dropped {len(self.dropped)} candidates: {self.full_space_size:,} -> "
            f"{self.space_size:,} architectures" + (f" ({', '.join(self.dropped)})" if self.dropped else ""),
            f"wrote {self.out}/: supernet.safetensors, {RESTRICTION_FILE}, metrics.jsonl, run.json, "
            "loss.png, "
            "scores.png",
        ]


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


# ------------------------------------------------------------------------------------ deterministic parts
def subnet_for_step(
    config: SpaceConfig, seed: int, step: int, restriction: dict[str, list]
) -> dict[str, Any]:
    """The subnet of global step `step`: uniform over the restriction, the same on every rank and on
    resumption."""
    return random_sample(config, random.Random(f"sst-edge/subnet/{seed}/{step}"), restriction)


def episode_indices(epoch: int, rank: int, world: int, episodes: int, per_step: int = 1) -> list[int]:
    """The training episodes of rank `rank` in (1-based) `epoch`, in the order it takes them: at optimizer
    step i of the epoch, episodes base + (i * world + rank) * K + m for m < K, base = (epoch - 1) * world *
    episodes. Disjoint across ranks and epochs; each step takes the same episodes however world x K is
    split (one process with K = 2 takes, at each step, what two ranks with K = 1 take)."""
    base = (epoch - 1) * world * episodes
    return [base + (i * world + rank) * per_step + m
            for i in range(episodes // per_step) for m in range(per_step)]


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over `lr_warmup` optimizer steps, then cosine from `lr` to 0 at the last step."""
    total = cfg.total_steps
    if step < cfg.lr_warmup:
        return cfg.lr * (step + 1) / cfg.lr_warmup
    span = max(1, total - cfg.lr_warmup)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, (step - cfg.lr_warmup) / span)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices and convolutions only; not on biases, norms or position embeddings."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "pos_" not in name else plain).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def make_cost(
    config: SpaceConfig, latency_table: str | None, allow_foreign: bool = False
) -> tuple[CostFn, str]:
    """FLOPs from NNI's expression (default), or a latency table's prediction in ms."""
    if latency_table:
        table = load_table_for(latency_table, config, allow_foreign=allow_foreign)
        return table.predict_ms, "ms"

    return (lambda sample: predicted_cost(config, sample).flops), "flops"


def versions() -> dict[str, str]:
    return {"sst-edge": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "nni": getattr(nni, "__version__", "?"), "numpy": np.__version__,
            "safetensors": safetensors.__version__, "platform": platform.platform()}


# ------------------------------------------------------------------------------------------ metrics log
class MetricsLog:
    """metrics.jsonl: appended line by line, flushed; on resumption cut back to the checkpoint's epoch."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a kill: what follows cannot be trusted
        return out

    def truncate(self, epoch: int) -> None:
        if self.enabled:
            kept = [r for r in self.records() if r.get("epoch", 0) <= epoch]
            atomic_write(self.path, lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in kept)))

    def reset(self) -> None:
        if self.enabled:
            self.path.unlink(missing_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------------------------- trainer
class _Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        out: Path,
        d: Dist,
        cost_fn: CostFn | None,
        cost_unit: str | None,
        progress: bool,
        tune: FineTune | None = None,
    ):
        self.cfg, self.out, self.d, self.progress, self.tune = cfg, out, d, progress, tune
        self.space = load_space(cfg.space)
        self.threads = configure_threads(cfg.threads, cfg.workers, d.local_world)
        if cost_fn is None:
            cost_fn, cost_unit = make_cost(self.space, cfg.latency_table, cfg.allow_foreign_table)
        self.cost_fn, self.cost_unit = cost_fn, cost_unit or "cost"
        self._cost_cache: dict[tuple, float] = {}
        self.splits = load_splits(cfg.data, cfg.split)
        s = self.space
        self.pre = Preprocess(frames=s.frames, size=s.size, resize=cfg.resize_for(s.size), hflip=cfg.hflip)
        self.val = self._val_dataset()

        cost_expression(s)  # built once, now: building it draws from torch's RNG (a fresh SSTSpace)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.device = d.device
        self.precision = resolve_precision(cfg.precision, self.device)
        self.scaler = self.precision.scaler(self.device)
        # built on the CPU (the same initial weights on every device), then moved; the optimizer's state
        # lives beside the parameters
        self.supernet = build_supernet(s, tune.restriction if tune else None).to(self.device)
        self.model = wrap(self.supernet, d, find_unused=tune is None)
        # a learned head (cca) trains with the supernet, in param groups of its own after the supernet's
        # two; built after the supernet, so the supernet's initial weights are those of any other run
        self.fewshot = CCAHead(s.out_channels).to(self.device) if cfg.head.kind == "cca" else None
        groups = param_groups(self.supernet, cfg.weight_decay)
        if self.fewshot is not None:
            groups += param_groups(self.fewshot, cfg.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
        self.skipped_steps = 0  # consecutive steps with non-finite gradients
        self.step_times: list[float] = []  # wall seconds of this process's first steps (the estimate)
        self.estimate: Estimate | None = None
        self.restriction = Restriction(s.name, s.hash, tune.restriction) if tune else full_restriction(s)
        self.records = ShrinkRecords()
        self.epoch = 0
        self.step = 0
        self.log = MetricsLog(out / METRICS_FILE, d.is_main)

    def _val_dataset(self) -> EpisodeDataset | None:
        if not self.cfg.val_episodes:
            return None
        try:
            return EpisodeDataset(self.splits.val, self.pre, way=self.cfg.way, shot=self.cfg.shot, query=1,
                                  episodes=self.cfg.val_episodes, seed=self.cfg.seed, train=False)
        except DatasetError as e:
            if self.d.is_main:
                tqdm.write(f"sst-edge: no validation ({e})", file=sys.stderr)
            return None

    def cost(self, sample: dict[str, Any]) -> float:
        key = tuple(sample.values())
        if key not in self._cost_cache:
            with torch.random.fork_rng(devices=[]):  # a cost function must not move training's RNG
                self._cost_cache[key] = float(self.cost_fn(sample))
        return self._cost_cache[key]

    # ----------------------------------------------------------------------------- start or resume
    def start(self, found: tuple[dict[str, Any], dict[str, torch.Tensor]] | None) -> None:
        """A fresh run (found None) or the state of a checkpoint that `check_start` accepted."""
        if found is None:
            if self.tune is not None:
                load_init(self.supernet, self.tune)  # every rank: the same file, the same weights
                if self.fewshot is not None and self.tune.head_state:
                    self.fewshot.load(self.tune.head_state)  # the init run's cca head, when it had one
            if self.d.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                self.log.reset()  # what a run killed before its first checkpoint left
                (self.out / RUN_FILE).unlink(missing_ok=True)
                self._write_run_record(resumed=False)
                if self.tune is not None:
                    self.restriction.save(self.out / RESTRICTION_FILE)  # search reads it, as for any run
                    self._announce_finetune()
            return
        doc, tensors = found
        self.load_position(doc, tensors)
        ckpt.restore_optimizer(self.optimizer, tensors, doc["optimizer"]["param_groups"])
        ckpt.restore_rng(doc, tensors)
        if self.d.is_main:
            for tmp in self.out.glob(".*.tmp"):  # left by a kill during an atomic write
                tmp.unlink(missing_ok=True)
            self.log.truncate(self.epoch)
            self._write_run_record(resumed=True)
            tqdm.write(f"resuming {self.out} after epoch {self.epoch} (step {self.step}, "
                       f"{self.restriction_size():,} architectures left)", file=sys.stderr)
            if self.tune is not None:
                self._announce_finetune()

    def load_position(self, doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Where a checkpoint left the run: its weights (copied onto our device), epoch and step, the
        restriction and shrink records, its precision. The optimizer and the RNGs are `start`'s alone: a
        dry run needs neither."""
        self.supernet.load_state_dict(ckpt.model_state(tensors), strict=True)
        if self.fewshot is not None:
            head = prefixed(tensors)
            if not head:
                where = ckpt.checkpoint_paths(self.out, doc["epoch"])[0]
                raise SSTEdgeError(f"the checkpoint holds no cca head weights ({HEAD_PREFIX}*): it was not "
                                   "trained with --head cca", where)
            self.fewshot.load(head)
        self._resume_precision(doc)
        self.epoch, self.step = doc["epoch"], doc["step"]
        self.restriction = Restriction(self.space.name, self.space.hash,
                                       {k: list(v) for k, v in doc["shrink"]["restriction"]["keep"].items()},
                                       list(doc["shrink"]["restriction"]["history"]))
        self.records = ShrinkRecords.from_list(doc["shrink"]["records"])

    def _resume_precision(self, doc: dict[str, Any]) -> None:
        """`precision: auto` keeps the precision the run used (another device may resolve auto otherwise);
        an explicit other one is allowed, and said. The loss scale of an fp16 run continues."""
        used = (doc.get("precision") or {}).get("used", "fp32")  # runs before --precision were fp32
        if self.cfg.precision == "auto" and used != self.precision.name:
            self.precision = Precision(used, "auto", f"kept from the checkpoint (auto would take "
                                       f"{self.precision.name} on {self.device})")
        elif used != self.precision.name and self.d.is_main:
            tqdm.write(f"sst-edge: warning: the run trained in {used} and continues in "
                       f"{self.precision.name}: from here its trajectory differs from an uninterrupted run",
                       file=sys.stderr)
        self.scaler = self.precision.scaler(self.device)
        if doc.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(doc["scaler"])

    def _announce_finetune(self) -> None:
        tune = self.tune
        assert tune is not None
        start = f" from {tune.init_weights}" if tune.init_weights else ""
        tqdm.write(f"fine-tuning the subnet of {tune.document}{start}; shrinking is off (a single subnet has "
                   "nothing to shrink)", file=sys.stderr)
        for w in tune.warnings:
            tqdm.write(f"sst-edge: warning: {w}", file=sys.stderr)

    def weights_meta(self) -> dict[str, Any]:
        """safetensors metadata of checkpoints and final weights; "subnet" makes them loadable alone."""
        meta: dict[str, Any] = {"space": self.space.name, "space_hash": self.space.hash}
        if self.tune is not None:
            meta["subnet"] = dict(self.tune.sample)
        return meta

    def restriction_size(self) -> int:
        return space_size(self.restriction.choices)

    def head_tensors(self) -> dict[str, torch.Tensor]:
        """The learned head's tensors as the weights files hold them ("fewshot.*"; none without one)."""
        return self.fewshot.tensors() if self.fewshot is not None else {}

    def eval_head(self) -> HeadConfig:
        """The head as evaluation takes it: with the current weights attached (cca)."""
        return self.cfg.head.with_params(self.fewshot.arrays()) if self.fewshot is not None else self.cfg.head

    def head_weights_record(self) -> dict[str, Any] | None:
        """run.json's note of where a learned head's weights are (stages after training read them)."""
        if self.fewshot is None:
            return None
        return {"kind": self.cfg.head.kind, "files": [WEIGHTS_FILE, "checkpoint-eNNNN.safetensors"],
                "prefix": HEAD_PREFIX,
                "shapes": {k: list(v.shape) for k, v in self.fewshot.params().items()}}

    def _write_run_record(self, resumed: bool, result: dict[str, Any] | None = None) -> None:
        path = self.out / RUN_FILE
        now = utc_now()
        old = read_json(path, "run record") if path.is_file() else {}
        rec = {"format": "sst-edge/run", "space": self.space.name, "space_hash": self.space.hash,
               "seed": self.cfg.seed, "config": self.cfg.to_dict(), "cost_unit": self.cost_unit,
               "world_size": self.d.world, "threads_per_process": self.threads, "versions": versions(),
               "device": device_record(self.device, self.d), "precision": self.precision.to_dict(),
               "command": sys.argv, "started": old.get("started", now),
               "resumed": old.get("resumed", []) + ([now] if resumed else []),
               "status": "finished" if result is not None else "running"}
        if self.fewshot is not None:
            rec["head_weights"] = self.head_weights_record()
        if self.tune is not None:  # the record of the fresh start names the init weights; keep it
            rec["finetune"] = {**self.tune.record(), **old.get("finetune", {})}
        if result is not None:
            rec["finished"], rec["result"] = now, result
        atomic_write_json(path, rec)

    # ------------------------------------------------------------------------------------- one epoch
    def train_epoch(self) -> dict[str, Any]:
        cfg, d = self.cfg, self.d
        epoch = self.epoch + 1
        loader = iter(self._loader(epoch))
        bar = tqdm(total=cfg.episodes, desc=f"epoch {epoch}/{cfg.epochs}", unit="ep", leave=True,
                   disable=not (self.progress and d.is_main), dynamic_ncols=True)
        record = epoch > cfg.shrink.warmup and self.tune is None
        logged: list[tuple[float, float, float]] = []  # steps since the last metrics line
        losses, accs, skipped, untaken = [], [], 0, 0
        t0 = time.perf_counter()
        self.model.train()
        for _ in range(cfg.steps_per_epoch):
            t_step = time.perf_counter()
            sample = subnet_for_step(self.space, cfg.seed, self.step, self.restriction.choices)
            activate(self.supernet, self.space, sample, self.restriction.choices)
            lr = learning_rate(cfg, self.step)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            loss_v, acc_v, skipped_clips, taken = self.optimizer_step(loader)
            cost = self.cost(sample)
            self.step += 1
            skipped += skipped_clips
            untaken += not taken
            if math.isfinite(loss_v):  # the subnet's loss is evidence even when fp16 skipped the update
                if record:
                    self.records.add(sample, loss_v)
                losses.append(loss_v)
                accs.append(acc_v)
                logged.append((loss_v, acc_v, cost))
            if len(logged) == cfg.log_every:
                self._log_metrics(logged, epoch, lr)
            self._time_step(time.perf_counter() - t_step)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}" if losses else "nan",
                            acc=f"{np.mean(accs[-50:]):.2f}" if accs else "nan",
                            lr=f"{lr:.1e}", space=f"{self.restriction_size():.2g}", refresh=False)
            bar.update(cfg.episodes_per_step)
        bar.close()
        if logged:
            self._log_metrics(logged, epoch, lr)
        return {"kind": "epoch", "epoch": epoch, "step": self.step,
                "train_loss": float(np.mean(losses)) if losses else None,
                "train_acc": float(np.mean(accs)) if accs else None, "skipped_clips": skipped,
                "untaken_steps": untaken, "seconds": time.perf_counter() - t0}

    def _loader(self, epoch: int) -> Any:
        """This rank's episodes of `epoch` (episode_indices), decoded by the loader workers; pinned memory
        when the model is on a GPU."""
        cfg, d = self.cfg, self.d
        sampler = EpisodeDataset(self.splits.train, self.pre, way=cfg.way, shot=cfg.shot, query=cfg.query,
                                 episodes=cfg.epochs * d.world * cfg.episodes, seed=cfg.seed, train=True)
        share = EpisodeSubset(sampler, episode_indices(epoch, d.rank, d.world, cfg.episodes,
                                                       cfg.episodes_per_step))
        return episode_loader(share, cfg.workers, pin_memory=self.device.type == "cuda")

    def optimizer_step(self, loader: Any) -> tuple[float, float, int, bool]:
        """One optimizer step over `episodes_per_step` episodes on every rank: (mean loss, mean accuracy
        over the step's episodes and ranks, clips skipped as unreadable, whether the step was taken).

        Each episode's loss / K is back-propagated (DDP synchronises the accumulated gradients once, at the
        step's last episode); a step whose gradient norm is not finite (an fp16 overflow while the loss
        scale settles, or a NaN) is not taken, on every rank alike, since every rank sees the same averaged
        gradients."""
        cfg, d, k = self.cfg, self.d, self.cfg.episodes_per_step
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = acc_sum = 0.0
        skipped = 0
        for m in range(k):
            ep = to_device(next(loader), self.device)
            skipped += len(ep.skipped)
            sync = m == k - 1 or not d.active
            with contextlib.nullcontext() if sync else self.model.no_sync():
                loss, acc = self._episode_loss(ep)
                self.scaler.scale(loss / k).backward()
            loss_sum += loss.item()
            acc_sum += acc
        params = list(self.supernet.parameters())
        if self.fewshot is not None:  # not DDP's: averaged over the ranks here
            average_gradients(self.fewshot, d)
            params += list(self.fewshot.parameters())
        self.scaler.unscale_(self.optimizer)  # a no-op unless fp16
        norm = nn.utils.clip_grad_norm_(params, cfg.clip_grad if cfg.clip_grad > 0 else math.inf)
        finite = bool(torch.isfinite(norm))
        if finite:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.skipped_steps = 0 if finite else self.skipped_steps + 1
        if self.skipped_steps >= MAX_SKIPPED_STEPS:
            raise SSTEdgeError(f"training diverged: {self.skipped_steps} steps in a row had non-finite "
                               f"gradients (step {self.step}, {self.precision.name}); lower --lr, or train "
                               "in bf16 or fp32", self.out)
        loss_v, acc_v = d.mean(loss_sum / k, acc_sum / k)
        return loss_v, acc_v, skipped, finite

    def _episode_loss(self, ep: Any) -> tuple[torch.Tensor, float]:
        """The few-shot loss of one episode and its query accuracy: the model in the run's precision, the
        head and the loss in fp32."""
        with self.precision.autocast(self.device):
            features = self.model(torch.cat([ep.support, ep.query]))
        with full_precision(self.device):
            query, support = split_features(features.float(), self.cfg.way, self.cfg.shot)
            logits = head_logits(query, support, self.cfg.head, self.fewshot)
            loss = F.cross_entropy(logits, ep.query_labels)
        return loss, (logits.argmax(1) == ep.query_labels).double().mean().item()

    def _time_step(self, seconds: float) -> None:
        """Keep the first steps' times; after ESTIMATE_AFTER of them, say how long the whole run takes."""
        if len(self.step_times) > ESTIMATE_AFTER:
            return
        self.step_times.append(seconds)
        if len(self.step_times) == ESTIMATE_AFTER + 1:
            self.estimate = self.estimate_from(self.step_times[1:])
            if self.d.is_main:
                for line in self.estimate.lines():
                    tqdm.write(line, file=sys.stderr)

    def estimate_from(self, times: list[float], val_seconds: float | None = None) -> Estimate:
        cfg = self.cfg
        return Estimate.from_times(
            times, steps_left=cfg.total_steps - self.step, steps_total=cfg.total_steps,
            episodes_per_step=cfg.episodes_per_step, world=self.d.world, device=str(self.device),
            precision=self.precision.name, validation_episodes=cfg.val_episodes if self.val else 0,
            epochs_left=cfg.epochs - self.epoch, seconds_per_validation_episode=val_seconds)

    def dry_run(self, steps: int = ESTIMATE_AFTER) -> Estimate:
        """Time `steps` optimizer steps (after one that warms up) and a few validation episodes, write
        nothing, and estimate the whole run: `train --dry-run`."""
        loader = iter(self._loader(1))
        self.model.train()
        times = []
        for i in range(min(steps + 1, self.cfg.steps_per_epoch)):
            t0 = time.perf_counter()
            sample = subnet_for_step(self.space, self.cfg.seed, i, self.restriction.choices)
            activate(self.supernet, self.space, sample, self.restriction.choices)
            self.optimizer_step(loader)
            times.append(time.perf_counter() - t0)
        val_s = None
        if self.val is not None:
            n = min(3, len(self.val))
            t0 = time.perf_counter()
            sample = extreme_sample(self.space, self.restriction.choices, largest=True)
            episode_accuracies(self.supernet, self.space, sample, EpisodeSubset(self.val, range(n)),
                               [self.eval_head()], self.cfg.workers, self.d)
            val_s = (time.perf_counter() - t0) / n
        return self.estimate_from(times[1:] or times, val_s)

    def _log_metrics(self, logged: list[tuple[float, float, float]], epoch: int, lr: float) -> None:
        w = np.array(logged)
        self.log.write(
            {
                "kind": "step",
                "epoch": epoch,
                "step": self.step,
                "loss": w[:, 0].mean(),
                "acc": w[:, 1].mean(),
                "cost": w[:, 2].mean(),
                "lr": lr,
            }
        )
        logged.clear()

    def maybe_shrink(self, epoch: int) -> None:
        if self.tune is not None or not self.cfg.shrink.is_event(epoch):
            return
        costs = candidate_costs(self.restriction.choices, self.cost, self.cost_unit)  # exact, per block
        restriction, event = shrink(
            self.restriction.choices, self.records, self.cfg.shrink, epoch, self.step, costs
        )
        self.restriction = Restriction(
            self.space.name, self.space.hash, restriction, [*self.restriction.history, event]
        )
        self.records.clear()
        self.log.write({"kind": "shrink", **event})
        if self.d.is_main:
            self.restriction.save(self.out / RESTRICTION_FILE)
            gone = ", ".join(f"{c['label']}={c['value']} (S - S[{c['best']}] = {c['diff']:.3f} +- "
                             f"{c['se_diff']:.3f}, loss {c['mean_loss']:.3f}, +{c['cost']:.4g} "
                             f"{self.cost_unit}, n={c['n']}, Holm p={c['p_holm']:.2g})"
                             for c in event["dropped"])
            tqdm.write(f"epoch {epoch}: shrink dropped {len(event['dropped'])} "
                       f"{'candidate' if len(event['dropped']) == 1 else 'candidates'}"
                       f"{': ' + gone if gone else ''}; {event['space_size_before']:,} -> "
                       f"{event['space_size_after']:,} architectures", file=sys.stderr)

    def validate(self) -> float | None:
        if self.val is None:
            return None

        sample = extreme_sample(self.space, self.restriction.choices, largest=True)
        acc = episode_accuracies(self.supernet, self.space, sample, self.val, [self.eval_head()],
                                 self.cfg.workers, self.d)
        self.model.train()
        return float(acc[0].mean())

    def checkpoint(self) -> None:
        if not self.d.is_main:
            return
        sidecar = {
            "step": self.step, "space": self.space.name, "space_hash": self.space.hash, "seed": self.cfg.seed,
            "world_size": self.d.world, "config": self.cfg.to_dict(), "cost_unit": self.cost_unit,
            "sampler": {"next_step": self.step,
                        "next_episode": episode_indices(self.epoch + 1, 0, self.d.world, self.cfg.episodes,
                                                        self.cfg.episodes_per_step)[0],
                        "episode": "(epoch - 1) * world * episodes + (i * world + rank) * K + m",
                        "subnet_seed": f"sst-edge/subnet/{self.cfg.seed}/<step>"},
            "device": device_record(self.device, self.d), "precision": self.precision.to_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "shrink": {"records": self.records.to_list(), "restriction": self.restriction.to_dict()},
            "versions": {k: v for k, v in versions().items() if k != "platform"},
        }
        ckpt.save_checkpoint(self.out, self.epoch, self.supernet, self.optimizer, sidecar,
                             self.weights_meta(), self.head_tensors())

    # ------------------------------------------------------------------------------------------- run
    def run(self) -> TrainResult:
        t0 = time.perf_counter()
        while self.epoch < self.cfg.epochs:
            rec = self.train_epoch()
            self.epoch = rec["epoch"]
            self.maybe_shrink(self.epoch)
            rec["val_acc"] = self.validate()
            rec["space_size"] = self.restriction_size()
            self.log.write(rec)
            self.checkpoint()
            if self.d.is_main:
                val = f", val acc {rec['val_acc']:.3f}" if rec["val_acc"] is not None else ""
                n = rec["untaken_steps"]
                untaken = f", {n} step{'s' if n > 1 else ''} not taken" if n else ""
                tqdm.write(f"epoch {self.epoch}: loss {_num(rec['train_loss'])}, "
                           f"acc {_num(rec['train_acc'], 3)}{untaken}"
                           f"{val} ({rec['seconds']:.0f} s)", file=sys.stderr)
            self.d.barrier()
        synced = in_sync(self.supernet, self.d)
        result = self.finish(synced, time.perf_counter() - t0)
        self.d.barrier()
        return result

    def finish(self, synced: bool, seconds: float) -> TrainResult:
        epochs = [r for r in self.log.records() if r.get("kind") == "epoch"]  # rank 0 wrote, all read
        dropped = [f"{c['label']}={c['value']}@{e['epoch']}" for e in self.restriction.history
                   for c in e["dropped"]]
        result = TrainResult(
            out=self.out,
            epochs=self.epoch,
            steps=self.step,
            first_epoch_loss=epochs[0]["train_loss"] if epochs else None,
            last_epoch_loss=epochs[-1]["train_loss"] if epochs else None,
            val_acc=[r.get("val_acc") for r in epochs],
            restriction=self.restriction.choices,
            space_size=self.restriction_size(),
            full_space_size=space_size(full_restriction(self.space).choices),
            dropped=dropped,
            in_sync=synced,
            seconds=seconds,
            rank=self.d.rank,
            subnet=dict(self.tune.sample) if self.tune is not None else None,
        )
        if self.d.is_main:
            ckpt.save_tensors(self.out / WEIGHTS_FILE, {**self.supernet.state_dict(), **self.head_tensors()},
                              {"format": SUPERNET_FORMAT, **self.weights_meta(), "epoch": self.epoch,
                               "step": self.step})
            self.restriction.save(self.out / RESTRICTION_FILE)
            plot_loss(self.log.records(), self.out / "loss.png")
            if self.tune is None:
                plot_scores(self.restriction.history, self.out / "scores.png")
            self._write_run_record(resumed=False, result=result.to_dict())
        return result


def device_record(device: torch.device, d: Dist) -> dict[str, Any]:
    """Where a run computed: the device, its GPU's name, the process group's backend."""
    rec: dict[str, Any] = {"device": str(device), "backend": d.backend or None}
    if device.type == "cuda":
        rec["gpu"] = torch.cuda.get_device_name(device)
        rec["cuda"] = torch.version.cuda
    return rec


def check_start(
    cfg: TrainConfig, out: Path, resume: bool, world: int
) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """Refuse to overwrite a run, to resume nothing, or to resume with other settings (before any work);
    and to write into a folder holding anything a run does not write."""
    refuse_foreign(out, RUN_FOLDER, "training run folder")
    found = ckpt.load_checkpoint(out)
    if not resume:
        if found is not None:
            raise SSTEdgeError(f"already holds a training run (checkpoint of epoch {found[0]['epoch']}): "
                               "pass --resume to continue it, or choose another --out", out)
        return None
    if found is None:
        raise SSTEdgeError("no checkpoint to resume from (none written yet?)", out)
    doc = found[0]
    space = load_space(cfg.space)
    problems = []
    if doc.get("space_hash") != space.hash:
        problems.append(f"space hash {doc.get('space_hash')} in the checkpoint, {space.hash} now")
    if doc.get("world_size") != world:
        problems.append(f"{doc.get('world_size')} processes in the checkpoint, {world} now "
                        "(each rank's episodes depend on the number of ranks)")
    problems += cfg.differences(TrainConfig.from_dict(doc["config"]))
    if cfg.subnet is not None and not problems:
        sample = load_subnet(cfg.subnet, space)[0].sample
        if single_path(sample) != doc["shrink"]["restriction"]["keep"]:
            problems.append(f"{cfg.subnet} now describes another subnet than the one this run fine-tunes")
    if problems:
        raise SSTEdgeError("cannot resume: the run was started differently", out, problems)
    return found


def agreed_start(
    cfg: TrainConfig, out: Path, resume: bool, d: Dist
) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """`check_start` on rank 0, and its answer on every rank: the checkpoint to resume from (sidecar and
    tensors, as safetensors bytes), or its refusal. A node restarted on a disk without the run folder then
    resumes with the others, and every rank stops with rank 0's reason instead of waiting for it."""
    if not d.active:
        return check_start(cfg, out, resume, d.world)
    header: dict[str, Any] = {}
    payload, failure = b"", None
    if d.is_main:
        try:
            found = check_start(cfg, out, resume, d.world)
        except Exception as e:  # noqa: BLE001 - said to the other ranks, then raised here as it was
            failure = e
            header = ({"error": e.message, "path": str(e.path) if e.path else None, "problems": e.problems}
                      if isinstance(e, SSTEdgeError) else {"error": f"rank 0 could not start: {e}"})
        else:
            if found is not None:
                header, payload = {"doc": found[0]}, safetensors.torch.save(found[1])
    header = json.loads(d.broadcast_bytes(json.dumps(header).encode()))
    if failure is not None:
        raise failure
    if "error" in header:
        raise SSTEdgeError(header["error"], header.get("path"), header.get("problems"))
    payload = d.broadcast_bytes(payload)
    return (header["doc"], safetensors.torch.load(payload)) if "doc" in header else None


def train_supernet(config: TrainConfig, out: str | Path, *, resume: bool = False,
                   cost_fn: CostFn | None = None, cost_unit: str | None = None,
                   progress: bool = True) -> TrainResult:
    """Train a supernet of `config.space` with shrinking; see the module docstring for what OUT holds.

    `cost_fn(sample) -> float` replaces the cost used by shrinking (default: FLOPs, or the latency
    table's `predict_ms` when `config.latency_table` is set). Under torchrun every rank calls this.
    With `config.subnet` and `config.init` it fine-tunes that one subnet instead (finetune.py).
    """
    d = init_distributed(config.device)
    try:
        found = agreed_start(config, Path(out), resume, d)
        tune = (load_finetune(config, load_space(config.space), with_init=found is None)
                if config.subnet is not None else None)
        trainer = _Trainer(config, Path(out), d, cost_fn, cost_unit, progress, tune)
        trainer.start(found)
        try:
            return trainer.run()
        except RuntimeError as e:
            if not d.active or not lost_peer(e):
                raise
            done = ckpt.complete_checkpoints(out) if d.is_main else []
            again = "start every node again with --resume (the other nodes need no copy of it)"
            then = (f"Its newest checkpoint, epoch {done[-1]}, is in --out on rank 0's node: {again}" if done
                    else "It wrote no checkpoint yet: start every node again as before" if d.is_main
                    else f"Its newest checkpoint, if any, is in --out on rank 0's node: {again}")
            raise SSTEdgeError(f"rank {d.rank} lost another rank mid-run ({brief(e, 160)}); this run "
                               f"stops. {then}", out) from None
    finally:
        shutdown(d)


def lost_peer(e: RuntimeError) -> bool:
    """A collective failed because a rank's process or machine went away (gloo, NCCL, the c10d store)."""
    text = str(e)
    return isinstance(e, dist.DistError) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "NCCL communicator",
                            "Broken pipe"))


def estimate_run(config: TrainConfig, out: str | Path, *, resume: bool = False,
                 steps: int = ESTIMATE_AFTER) -> Estimate:
    """`train --dry-run`: check the options as `train` would, time a few steps, write nothing."""
    d = init_distributed(config.device)
    try:
        found = agreed_start(config, Path(out), resume, d)
        tune = (load_finetune(config, load_space(config.space), with_init=True)
                if config.subnet is not None else None)
        trainer = _Trainer(config, Path(out), d, None, None, False, tune)
        trainer.log.enabled = False
        if found is not None:  # a resumed run: time its own state, for the steps it has left
            trainer.load_position(*found)
        return trainer.dry_run(steps)
    finally:
        shutdown(d)
