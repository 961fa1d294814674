"""Per-op table at the stage shapes of sst_plus: params, MACs (NNI vs fvcore), ORT latency, parity, TensorRT.

For every (stage, op, heads) block of a space (default sst_plus, 8 x 224 x 224), built as the latency table
builds it (cost/parts.py, batch 1):
- params and MACs by NNI's profiler (the block's `_count_flops`, the term the space's FLOPs expression sums)
  and by fvcore on the same module;
- ONNX Runtime latency, measured here side by side (cpu-fp32 target: 1 thread, batch 1; median and p10-p90
  of --runs runs after warm-up, blocks interleaved round by round so drift hits them alike), not from a
  profiled table (an sst_plus table at the shipped policy takes far longer than this bench);
- export parity: max |ONNX Runtime - PyTorch| on a random input (opset 17, TorchScript exporter);
- the static TensorRT check (deploy/tensorrt.py: every op in TensorRT's ONNX support list, static shapes
  apart from the batch, no int64 arithmetic).
Plus the whole-space check: NNI's expression vs fvcore on --subnets random subnets.

Writes OUT/operators.json and OUT/operators.md. Run: .venv/bin/python bench/operators.py --out
runs/operators [--space sst_plus --runs 20 --rounds 3 --subnets 2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sst_edge._nni import FlopsParamsProfiler
from sst_edge.cost.flops import fvcore_cost, predicted_cost, subnet_cost
from sst_edge.cost.onnx_export import export_onnx
from sst_edge.cost.parts import space_parts
from sst_edge.deploy.tensorrt import check_graph
from sst_edge.device.session import make_session
from sst_edge.device.targets import load_target
from sst_edge.fileio import atomic_write_json, atomic_write_text
from sst_edge.space.config import load_space
from sst_edge.space.supernet import random_sample


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/operators")
    ap.add_argument("--space", default="sst_plus")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per block per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--subnets", type=int, default=2, help="random subnets for the whole-space check")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_space(args.space)
    target = load_target("cpu-fp32")
    torch.manual_seed(0)
    t0 = time.perf_counter()
    blocks = [p for p in space_parts(config) if p.stage is not None]
    rows, sessions = [], []
    with tempfile.TemporaryDirectory(prefix="sst-ops-") as tmp:
        for p in blocks:
            x = torch.randn(p.input_shape)
            nni_cost = FlopsParamsProfiler(p.module, x).flops_result
            ref = fvcore_cost(p.module, p.input_shape)
            path = export_onnx(p.module, x, Path(tmp) / f"{p.key}.onnx")
            trt = check_graph(path)
            sess = make_session(path, target)
            feed = {"input": x.numpy()}
            with torch.no_grad():
                want = p.module(x).numpy()
            got = sess.run(None, feed)[0]
            rows.append({"stage": p.stage, "op": p.op, "heads": p.heads, "input_shape": list(p.input_shape),
                         "params": int(ref.params), "params_nni": int(nni_cost.params),
                         "macs_nni": float(nni_cost.flops), "macs_fvcore": float(ref.flops),
                         "parity": float(np.abs(got - want).max()), "trt_ok": trt.ok,
                         "trt_problems": trt.problems(), "onnx_ops": sorted(trt.ops)})
            sessions.append((sess, feed))
            print(f"exported {p.key} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        times: list[list[float]] = [[] for _ in rows]
        for _ in range(args.rounds):  # interleaved: every block once per round
            for i, (sess, feed) in enumerate(sessions):
                for _ in range(3):
                    sess.run(None, feed)
                for _ in range(args.runs):
                    s = time.perf_counter()
                    sess.run(None, feed)
                    times[i].append(1e3 * (time.perf_counter() - s))
    for r, ts in zip(rows, times, strict=True):
        q = np.percentile(ts, [10, 90])
        r.update(ms=statistics.median(ts), p10_ms=float(q[0]), p90_ms=float(q[1]))
    whole = []
    rng = random.Random(0)
    for _ in range(args.subnets):
        s = random_sample(config, rng)
        ref, expr = subnet_cost(config, s), predicted_cost(config, s)
        whole.append({"sample": s, "gflops_fvcore": ref.gflops, "gflops_nni": expr.gflops,
                      "params_fvcore": ref.params, "params_nni": expr.params})
    md = [f"{config.name} ({config.hash}), {config.frames} x {config.size} x {config.size}, batch 1; ORT "
          f"cpu-fp32 1 thread, median (p10-p90) of {args.rounds} x {args.runs} runs measured side by side",
          "", "| stage | op | heads | input [B,T,N,C] | params | MMACs NNI | MMACs fvcore "
          "| ORT ms (p10-p90) | parity max abs | TensorRT static |", "|---" * 10 + "|"]
    for r in rows:
        md.append(f"| {r['stage']} | {r['op']} | {r['heads'] or '-'} | {r['input_shape']} "
                  f"| {r['params']:,} | {r['macs_nni'] / 1e6:.2f} | {r['macs_fvcore'] / 1e6:.2f} "
                  f"| {r['ms']:.3f} ({r['p10_ms']:.3f}-{r['p90_ms']:.3f}) | {r['parity']:.1e} | "
                  f"{'ok' if r['trt_ok'] else '; '.join(r['trt_problems'])} |")
    md.append("")
    for w in whole:
        md.append(f"whole subnet: NNI expression {w['gflops_nni']:.4f} GMACs, {w['params_nni']:,} params; "
                  f"fvcore {w['gflops_fvcore']:.4f} GMACs, {w['params_fvcore']:,} params")
    md.append(f"\ntotal {time.perf_counter() - t0:.0f} s")
    text = "\n".join(md) + "\n"
    atomic_write_text(out / "operators.md", text)
    atomic_write_json(out / "operators.json", {"space": config.name, "space_hash": config.hash,
                                               "rows": rows, "whole": whole, "args": vars(args)})
    print(text)
    return 0 if all(r["trt_ok"] and r["parity"] <= 1e-4 and r["macs_nni"] == r["macs_fvcore"]
                    for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
