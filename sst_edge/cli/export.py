"""`sst-edge export`: a found subnet with its weights, exported, checked and measured for a deployment
target, as a model directory (model.onnx, card.json).

The exporter (torch, onnx) is imported inside the verb: `--help` and the device install must not load it."""

from __future__ import annotations

import argparse
import signal

from ._common import add_device_option, add_json, add_run_head_options, emit


def _model_complete() -> None:
    """Once the new model is in place, Ctrl-C is ignored: only the report is left, and an interrupt
    then (or in the interpreter's teardown) would turn a complete export into a failure."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _export(args: argparse.Namespace) -> int:
    from ..deploy.export import ExportReport, export_model  # host: torch, onnx

    card = export_model(
        args.subnet,
        args.weights,
        args.target,
        args.out,
        data=args.data,
        quantization=args.quantization,
        episodes=args.episodes,
        latency_table=args.latency_table,
        measure=not args.no_measure,
        overwrite=args.overwrite,
        progress=not (args.no_progress or args.json),
        head_kind=args.head,
        tau=args.tau,
        window=args.window,
        device=args.device,
        on_commit=_model_complete,
        ood_clips=args.ood_clips,
    )
    return emit(ExportReport(card), args)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="freeze a subnet with its weights and export it for a target (ONNX, int8, TensorRT)",
        description="Freeze the subnet of a subnet document (best.json) with trained supernet or fine-tuned "
        "weights, export it to ONNX for a deployment target (export/NAME.yaml), check it "
        "(onnx.checker full check, parity with PyTorch <= 1e-4, TensorRT's needs), quantize "
        "or convert it as the target says, measure its latency, and write a model directory "
        "(model.onnx, card.json). Nothing is left at --out when a step fails.",
    )
    p.add_argument("--subnet", required=True, help="a subnet document (best.json from `sst-edge search`)")
    p.add_argument(
        "--weights",
        required=True,
        help="a training run folder (supernet or fine-tuned) or a .safetensors file",
    )
    p.add_argument(
        "--target",
        default="cpu-fp32",
        help="deployment target: cpu-fp32 (default), cpu-int8, cpu-openvino, cuda-fp16, jetson-trt-fp16, "
        "or a path to a target YAML",
    )
    p.add_argument("--out", required=True, help="the model directory to write (models/NAME)")
    p.add_argument(
        "--data",
        help="a dataset directory: calibration clips for static int8 (training split) "
        "and the int8 accuracy change on validation episodes",
    )
    p.add_argument(
        "--quantization",
        choices=["dynamic", "static"],
        help="int8 targets: override the target's quantization mode",
    )
    p.add_argument(
        "--episodes",
        type=int,
        default=100,
        help="validation episodes for the int8 accuracy check (default 100)",
    )
    p.add_argument(
        "--latency-table",
        help="the table that predicts the latency in the card (default: "
        "latency_tables/SPACE.TARGET.json, if there is one)",
    )
    p.add_argument(
        "--head",
        choices=["alignment", "prototype", "cca"],
        help="the runtime's few-shot head (default: the one the run trained through, from "
        "run.json beside the weights; a different one is reported and recorded in the card)",
    )
    add_run_head_options(p, "the run's, from run.json beside the weights")
    p.add_argument(
        "--ood-clips",
        type=int,
        default=256,
        help="training clips (of the run's dataset, from run.json, else --data's training split) whose "
        "feature distribution is stored with the model for the device's check of clips unlike the "
        "training data (default 256; 0: none)",
    )
    add_device_option(p, "PyTorch computes the reference features of the parity check")
    p.add_argument("--no-measure", action="store_true", help="skip the latency measurement")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    add_json(p)
    p.set_defaults(func=_export)
