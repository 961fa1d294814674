"""Every CPU backend and recipe side by side, chosen on evidence: ONNX Runtime fp32 and its INT8 recipes,
OpenVINO fp32 / bf16 / int8 (NNCF), PyTorch eager.

Speed: the paper-cost subnet (search_spaces/sst_paper.paper_cost.json, 8x224x224, 13.62 G multiply-adds;
freshly initialised supernet weights: speed does not depend on the weights), batch 1, one thread (the cpu
targets' setting). Every variant and two GEMM probes (1024^3 fp32 MatMul, and the same MatMul with
dynamic int8 7-bit weights: this machine's peaks) run in this one process, interleaved round by round in
shuffled order and timed with the calling thread's CPU clock, so ratios hold on a shared host. Each
speed-up over ORT fp32 is the geometric mean of the per-round ratios with its 95% interval (t over
rounds). For each variant: ONNX Runtime's profiler breakdown by op type, the share of the model's
multiply-adds that run in int8, and the GFLOP/s reached against the GEMM peaks.

OpenVINO (the cpu-openvino target's runtime, device/openvino.py, one inference thread on the calling
thread, so the same thread clock holds): the same fp32 ONNX file at the fp32 and bf16 precision hints, and
an int8 IR made by NNCF's post-training quantization (transformer preset, attention MatMuls included,
calibrated on real clips) with bf16 elsewhere. The host's CPU features (VNNI, AMX, AVX512-BF16) are printed
first: the answer depends on them.

Faithfulness: feature cosine vs ORT fp32 on real (synthetic-set) clips. Accuracy (`--run/--subnet/--data`,
a trained sst_tiny run, e.g. the demo's): the fp32 model and every int8 recipe scored on the same
validation episodes; each change is paired, with its 95% interval and significance.

The choice, once among the ONNX Runtime INT8 recipes (what cpu-int8 ships) and once among every CPU
recipe (what a CPU user should deploy): among those whose features agree with fp32 (min cosine >= 0.99,
on the paper-cost model and, with a run, on the trained one too) and, with a run, whose accuracy change
is above -1 point at 95%, the fastest; it is said whether it beats the runner-up beyond the noise (the
95% intervals of their speed-ups do not overlap).

Run: .venv/bin/python bench/export.py [--rounds 6] [--run DIR --subnet JSON --data DIR --episodes 2000]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

from sst_edge.cost.onnx_export import _quiet, agreement, export_onnx, quantize_dynamic_int8
from sst_edge.data.synth import generate_synthetic
from sst_edge.deploy.checks import interleaved_seconds, ratio_interval
from sst_edge.deploy.export import load_export_subnet
from sst_edge.deploy.quantize import calibration_clips, episode_accuracy, quantize_static_int8
from sst_edge.device import openvino as ov_backend
from sst_edge.device.evaluation import confidence_interval, paired_change
from sst_edge.device.fingerprint import cpu_features, cpu_model
from sst_edge.device.session import INPUT_NAME, make_session, ort_features
from sst_edge.device.settings import HeadConfig
from sst_edge.device.targets import load_target
from sst_edge.space.config import SpaceConfig, load_space
from sst_edge.space.supernet import build_supernet
from sst_edge.train.artifacts import SUPERNET_FORMAT
from sst_edge.train.checkpoint import save_tensors

ROOT = Path(__file__).resolve().parents[1]
PAPER_SUBNET = ROOT / "search_spaces" / "sst_paper.paper_cost.json"
FP32 = "ort fp32"
SHIPPED = "int8 fused attention + dynamic 7-bit (cpu-int8)"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One way to build the deployed graph: attention form, and the int8 step (None: fp32)."""

    attention: str = "standard"
    mode: str | None = None          # dynamic | static | None (fp32)
    reduce_range: bool = True
    per_channel: bool = False
    activation_matmuls: bool = False  # dynamic: also the attention's QK^T and AV
    conv: bool = False               # also the patch embedding's convolutions
    method: str = "minmax"           # static: the calibration method

    def int8_macs(self, macs: dict[str, int]) -> int:
        if self.mode is None:
            return 0
        att = self.attention == "standard" and (self.activation_matmuls or self.mode == "static")
        return (macs["weight matmul"] + (macs["attention matmul"] if att else 0)
                + (macs["conv"] if self.conv else 0))


def shipped_recipe() -> Recipe:
    """The recipe export/cpu-int8.yaml ships, read from the file."""
    t = load_target("cpu-int8")
    q = t.quantization
    assert q is not None and q.mode == "dynamic", "bench/export.py expects a dynamic cpu-int8 target"
    return Recipe(attention=t.attention, mode=q.mode, reduce_range=q.reduce_range, per_channel=q.per_channel,
                  conv="Conv" in q.op_types)


RECIPES = {
    FP32: Recipe(),
    "ort fp32, fused attention": Recipe(attention="fused"),
    "int8 dynamic, 8-bit weights": Recipe(mode="dynamic", reduce_range=False),
    "int8 dynamic, 7-bit weights": Recipe(mode="dynamic"),
    "int8 dynamic, 7-bit, attention MatMuls too": Recipe(mode="dynamic", activation_matmuls=True),
    "int8 static QDQ u8/s8, 7-bit, minmax": Recipe(mode="static"),
    SHIPPED: shipped_recipe(),
    "int8 fused attention + dynamic 7-bit, per-channel": Recipe(attention="fused", mode="dynamic",
                                                               per_channel=True),
    "int8 fused attention + dynamic 7-bit + Conv": Recipe(attention="fused", mode="dynamic", conv=True),
}


# OpenVINO variants: (precision hint, int8 step or None); the ONNX file is RECIPES[FP32]'s
OV_FP32, OV_BF16 = "openvino fp32 (cpu-openvino, fp32 hint)", "openvino bf16 (cpu-openvino, bf16 hint)"
OPENVINO = {OV_FP32: ("fp32", None), OV_BF16: ("bf16", None),
            "openvino int8 (NNCF PTQ, bf16 elsewhere)": ("bf16", "nncf")}


def openvino_variants() -> dict[str, tuple[str, str | None]]:
    """The OpenVINO variants this host runs: bf16 only where OpenVINO's CPU plugin has it natively."""
    if not ov_backend.available():
        return {}
    return {k: v for k, v in OPENVINO.items() if v[0] == "fp32" or ov_backend.native_bf16()}


def nncf_int8(fp32: Path, out: Path, cal: list[np.ndarray]) -> Path:
    """NNCF post-training quantization of the fp32 file's OpenVINO model (transformer preset: attention
    MatMuls too, SmoothQuant), calibrated on `cal`; an OpenVINO IR (out.xml + out.bin)."""
    import nncf  # the [bench] extra
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    q = nncf.quantize(model, nncf.Dataset(cal), model_type=nncf.ModelType.TRANSFORMER,
                      subset_size=len(cal))
    xml = out.with_suffix(".xml")
    ov.save_model(q, str(xml))
    return xml


def openvino_sessions(fp32: Path, tmp: Path, cal: list[np.ndarray]) -> dict[str, object]:
    target = load_target("cpu-openvino")
    out = {}
    for i, (key, (hint, step)) in enumerate(openvino_variants().items()):
        print(f"  build openvino {i + 1}: {key}", file=sys.stderr, flush=True)
        path = fp32 if step is None else nncf_int8(fp32, tmp / f"ov{i}", cal)
        out[key] = make_session(path, target, hint=hint)
    return out


def host_line() -> str:
    feats = cpu_features()
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
            if feats.get(f)]
    return (f"host: {cpu_model()}; CPU features {', '.join(have) or 'none of note'}; OpenVINO "
            f"{ov_backend.version() if ov_backend.available() else 'not installed'} (native bf16: "
            f"{ov_backend.native_bf16()})")


# Static calibration methods change the scales, not the graph or its speed: scored for accuracy only.
CALIBRATIONS = {f"int8 static QDQ u8/s8, 7-bit, {m}": Recipe(mode="static", method=m)
                for m in ("percentile", "entropy")}


def build(recipe: Recipe, module: torch.nn.Module, x: torch.Tensor, out: Path,
          cal: list[np.ndarray]) -> Path:
    """The ONNX file of `recipe` for `module`, through the library's export and quantization calls."""
    fp32 = out.with_suffix(".fp32.onnx")
    export_onnx(module, x, fp32, 17, True, recipe.attention == "fused")
    if recipe.mode is None:
        return fp32
    ops = ("MatMul", "Gemm", "Conv") if recipe.conv else ("MatMul", "Gemm")
    if recipe.mode == "static":
        return quantize_static_int8(fp32, out, cal, ops, recipe.per_channel, recipe.reduce_range,
                                    recipe.method)
    return quantize_dynamic_int8(fp32, out, ops, recipe.per_channel, recipe.reduce_range,
                                 recipe.activation_matmuls)


def mac_breakdown(path: Path, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-adds of a standard-attention fp32 graph by kind, from ONNX shape inference at batch 1."""
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, n in zip(dims, input_shape, strict=True):
        d.ClearField("dim_param")
        d.dim_value = n
    model = SymbolicShapeInference.infer_shapes(model, auto_merge=True)  # folds the Reshape arithmetic
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    shapes.update(weights)
    macs = collections.Counter()
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            a, b, y = shapes[node.input[0]], shapes[node.input[1]], shapes[node.output[0]]
            kind = "weight matmul" if node.input[1] in weights else "attention matmul"
            macs[kind] += math.prod(y) * (a[-1] if node.op_type == "MatMul" else b[0])
        elif node.op_type == "Conv":
            w, y = shapes[node.input[1]], shapes[node.output[0]]
            macs["conv"] += math.prod(y) * math.prod(w[1:])
    macs["total"] = sum(macs.values())
    return dict(macs)


def gemm_probes(tmp: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """A 1024^3 MatMul in fp32 and with dynamic int8 7-bit weights: this machine's GEMM rates."""
    from onnx import TensorProto, helper, numpy_helper

    n = 1024
    w = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32) * 0.05
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
                              [numpy_helper.from_array(w, "w")])
    fp32 = tmp / "gemm.fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(fp32))
    with _quiet():
        int8 = quantize_dynamic_int8(fp32, tmp / "gemm.int8.onnx", reduce_range=True)
    x = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    return {"gemm fp32": (fp32, x), "gemm int8": (int8, x)}


def interleaved(runs: dict[str, Callable[[], object]], rounds: int,
                per_round: int = 3) -> dict[str, np.ndarray]:
    """Per-round median thread-CPU seconds of each item, in a fresh shuffled order every round
    (deploy/checks.interleaved_seconds, export's timer), with progress on stderr."""
    return interleaved_seconds(runs, rounds, per_round, on_round=lambda r: print(
        f"  round {r}/{rounds} done", file=sys.stderr, flush=True))




def op_breakdown(path: Path, x: np.ndarray, runs: int = 3) -> list[tuple[str, float, int]]:
    """(op type, ms per run, nodes) from ONNX Runtime's profiler, largest first."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = str(path.with_suffix(""))
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        sess.run(None, {INPUT_NAME: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    us, nodes = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            us[e["args"]["op_name"]] += e["dur"]
            nodes[e["args"]["op_name"]] += 1
    return [(op, t / runs / 1e3, nodes[op] // runs) for op, t in us.most_common()]


def paper_cost_module(tmp: Path) -> tuple[SpaceConfig, torch.nn.Module]:
    config = load_space("sst_paper")
    torch.manual_seed(0)
    weights = tmp / "supernet.safetensors"
    save_tensors(weights, build_supernet(config).state_dict(),
                 {"format": SUPERNET_FORMAT, "space": config.name, "space_hash": config.hash})
    _, _, module, _ = load_export_subnet(PAPER_SUBNET, weights)
    return config, module.eval()


def speed(rounds: int) -> dict[str, dict]:
    fp32_target = load_target("cpu-fp32")
    torch.set_num_threads(fp32_target.threads)
    res: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        config, module = paper_cost_module(tmp)
        data = generate_synthetic(tmp / "synth", clips=3, seed=0, progress=False)
        cal = calibration_clips(data, config, 8, seed=0)
        real = np.concatenate(calibration_clips(data, config, 4, seed=1, split="val"))
        x = torch.from_numpy(real[:1].copy())
        paths = {}
        for i, (key, recipe) in enumerate(RECIPES.items()):
            print(f"  build {i + 1}/{len(RECIPES)}: {key}", file=sys.stderr, flush=True)
            paths[key] = build(recipe, module, x, tmp / f"v{i}.onnx", cal)
        macs = mac_breakdown(paths[FP32], tuple(x.shape))
        sessions = {k: make_session(p, fp32_target) for k, p in paths.items()}
        sessions.update(openvino_sessions(paths[FP32], tmp, cal))
        feeds = {INPUT_NAME: x.numpy()}
        runs: dict[str, Callable[[], object]] = {k: (lambda s=s: s.run(None, feeds))
                                                 for k, s in sessions.items()}

        def eager() -> object:
            with torch.inference_mode():
                return module(x)

        runs["torch eager fp32"] = eager
        gemms = gemm_probes(tmp)
        probes = {k: make_session(p, fp32_target) for k, (p, _) in gemms.items()}
        for k, s in probes.items():
            runs[k] = lambda s=s, x=gemms[k][1]: s.run(None, {"x": x})
        secs = interleaved(runs, rounds)
        ref = ort_features(sessions[FP32], real)
        for key in [*sessions, "torch eager fp32"]:
            r = {"ms": float(np.median(secs[key]) * 1e3), "vs_fp32": ratio_interval(secs[FP32], secs[key]),
                 "gflops": 2 * macs["total"] / np.median(secs[key]) / 1e9}
            if key in sessions:
                r["agreement"] = agreement(ref, ort_features(sessions[key], real))
            if key in RECIPES:
                r["int8_share"] = RECIPES[key].int8_macs(macs) / macs["total"]
                r["ops"] = op_breakdown(paths[key], x.numpy())
            res[key] = r
        for k in probes:
            res[k] = {"gflops": 2 * 1024 ** 3 / np.median(secs[k]) / 1e9}
        res["macs"] = macs
        res["eager_vs_fp32"] = ratio_interval(secs["torch eager fp32"], secs[FP32])
    return res


def accuracy(run: str, subnet: str, data: str, episodes: int) -> dict[str, dict]:
    """Every recipe of the trained run's subnet, scored on the same validation episodes as fp32."""
    config, _, module, _ = load_export_subnet(subnet, run)
    module.eval()
    cal = calibration_clips(data, config, 64, seed=0)
    real = np.concatenate(calibration_clips(data, config, 32, seed=1, split="val"))
    x = torch.from_numpy(real[:1].copy())
    target = load_target("cpu-int8")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        recipes = {**RECIPES, **CALIBRATIONS}
        paths = {k: build(r, module, x, tmp / f"a{i}.onnx", cal) for i, (k, r) in enumerate(recipes.items())}
        models: dict[str, object] = {**paths, **openvino_sessions(paths[FP32], tmp, cal)}
        acc = episode_accuracy(models, target, config, data, HeadConfig(), episodes, progress=True)
        ref = ort_features(make_session(paths[FP32], target), real)
        out = {}
        for key, m in models.items():
            sess = m if hasattr(m, "run") else make_session(m, target)
            out[key] = {"acc": float(acc[key].mean()), "ci95": confidence_interval(acc[key]),
                        "change": paired_change(acc[FP32], acc[key]),
                        "agreement": agreement(ref, ort_features(sess, real))}
    return out


def choose(sp: dict[str, dict], acc: dict[str, dict] | None, candidates: list[str], shipped: str,
           what: str, min_cos: float = 0.99) -> list[str]:
    """The decision, in words: the fastest faithful of `candidates` and whether its lead beats the noise;
    `shipped` is what the project ships for this choice (a change needs evidence)."""
    ok = [k for k in candidates if sp[k]["agreement"]["min_cosine"] >= min_cos
          and (acc is None or (acc[k]["change"]["within_margin"]
                               and acc[k]["agreement"]["min_cosine"] >= min_cos))]
    if not ok:
        return [f"{what}: none is faithful enough"]
    ranked = sorted(ok, key=lambda k: -sp[k]["vs_fp32"][0])
    best = ranked[0]
    lines = [f"{what}: fastest faithful: {best} ({sp[best]['vs_fp32'][0]:.2f}x over ORT fp32)"]
    if len(ranked) > 1:
        lead = sp[best]["vs_fp32"][1] > sp[ranked[1]]["vs_fp32"][2]
        lines.append(f"  runner-up: {ranked[1]} ({sp[ranked[1]]['vs_fp32'][0]:.2f}x); the lead is "
                     + ("beyond the noise (the 95% intervals do not overlap)" if lead else
                        "within the noise (the 95% intervals overlap)"))
    if best != shipped:
        beaten = shipped not in ok or sp[best]["vs_fp32"][1] > sp[shipped]["vs_fp32"][2]
        lines.append(f"  shipped: {shipped}: " + (
            "beaten beyond the noise" if beaten else "within the noise of it: it stays (a change needs "
                                                      "evidence)"))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    ap.add_argument("--run", help="a trained sst_tiny run folder, for the accuracy of each recipe")
    ap.add_argument("--subnet", help="a subnet document of that run's space (best.json)")
    ap.add_argument("--data", help="the dataset the run was trained on")
    ap.add_argument("--episodes", type=int, default=2000, help="validation episodes (default 2000)")
    args = ap.parse_args(argv)

    print(host_line())
    sp = speed(args.rounds)
    macs = sp["macs"]
    peak32, peak8 = sp["gemm fp32"]["gflops"], sp["gemm int8"]["gflops"]
    print(f"\nsst_paper paper-cost subnet: {macs['total'] / 1e9:.2f} G multiply-adds (weight MatMul "
          f"{macs['weight matmul'] / macs['total']:.0%}, attention MatMul "
          f"{macs['attention matmul'] / macs['total']:.0%}, Conv {macs['conv'] / macs['total']:.0%}); "
          f"8x224x224, batch 1, 1 thread, thread-CPU clock, {args.rounds} interleaved rounds")
    print(f"GEMM peaks measured in this run (1024^3): fp32 {peak32:.1f} GFLOP/s, int8 (7-bit weights) "
          f"{peak8:.1f} GOP/s = {peak8 / peak32:.2f}x fp32")
    print(f"\n{'variant':<52}{'ms':>7}{'vs ORT fp32 [95% CI]':>24}{'int8 MACs':>10}{'GFLOP/s':>9}"
          f"{'of fp32 peak':>13}{'min cos':>9}")
    shown = [k for k in sp if k in RECIPES or k in OPENVINO] + ["torch eager fp32"]
    for key in shown:
        r = sp[key]
        ratio = "{:.2f}x [{:.2f}, {:.2f}]".format(*r["vs_fp32"])
        cos = f"{r['agreement']['min_cosine']:.4f}" if "agreement" in r else ""
        share = f"{r['int8_share']:.0%}" if "int8_share" in r else ""
        print(f"{key[:51]:<52}{r['ms']:>7.1f}{ratio:>24}{share:>10}{r['gflops']:>9.1f}"
              f"{r['gflops'] / peak32:>13.0%}{cos:>9}")
    print("\nwhere the time goes (ONNX Runtime profiler, ms per clip, nodes):")
    for key in RECIPES:
        ops = sp[key]["ops"]
        total = sum(t for _, t, _ in ops)
        print(f"  {key}: {total:.0f} ms: " + ", ".join(f"{op} {t:.0f} ({t / total:.0%}, {n})"
                                                      for op, t, n in ops[:7]))
    print("\nORT fp32 vs PyTorch eager: {:.2f}x [{:.2f}, {:.2f}] (>= 1 means ORT is at least as fast)".format(
        *sp["eager_vs_fp32"]))
    acc = None
    if args.run and args.subnet and args.data:
        acc = accuracy(args.run, args.subnet, args.data, args.episodes)
        print(f"\naccuracy, {args.episodes} 5-way 1-shot validation episodes of the trained run (the same "
              "episodes for all; changes paired):")
        for key, a in acc.items():
            c = a["change"]
            sig = "significant" if c["significant"] else "not significant"
            change = "" if key == FP32 else (
                f"  change {c['change_points']:+.2f} +- {c['ci95_points']:.2f} points "
                f"({sig}; within 1 point at 95%: {c['within_margin']})")
            print(f"  {key[:51]:<52}{a['acc']:.2%} +- {a['ci95']:.2%}  "
                  f"min cos {a['agreement']['min_cosine']:.4f}" + change)
        static = {k: a for k, a in acc.items() if k in RECIPES | CALIBRATIONS
                  and (RECIPES | CALIBRATIONS)[k].mode == "static"}
        best = max(static, key=lambda k: static[k]["acc"])
        print(f"most accurate static calibration: {best.rsplit(', ', 1)[1]} ({static[best]['acc']:.2%}; its "
              "paired change vs fp32 is above)")
    else:
        print("\n(pass --run, --subnet and --data of a trained run for each recipe's accuracy)")
    int8 = [k for k in RECIPES if RECIPES[k].mode]
    every = [k for k in sp if k in RECIPES or k in OPENVINO]
    print("\n" + "\n".join(choose(sp, acc, int8, SHIPPED, "ONNX Runtime int8 (cpu-int8)")))
    print("\n".join(choose(sp, acc, every, SHIPPED, "every CPU recipe")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
