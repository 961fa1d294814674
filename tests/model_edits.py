"""ONNX models that differ from their card, made from an exported model (tests of the card check and of
external data): each `change(proto, folder)` saves the edited model and returns the files, besides
model.onnx, that the card must list."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sst_edge.device.card import CARD_FILE, MODEL_FILE, file_record


def variant(src: Path, dest: Path, change) -> Path:
    import onnx

    shutil.copytree(src, dest)
    listed = change(onnx.load(str(dest / MODEL_FILE)), dest) or []  # the files the card must list too
    card = json.loads((dest / CARD_FILE).read_text())
    for name in [MODEL_FILE, *listed]:
        card["files"][name] = file_record(dest / name)
    (dest / CARD_FILE).write_text(json.dumps(card))
    return dest


def save(proto, dest: Path, **kw) -> None:
    import onnx

    onnx.save_model(proto, str(dest / MODEL_FILE), **kw)


def extra_input(proto, dest: Path) -> None:
    from onnx import helper

    proto.graph.input.append(helper.make_tensor_value_info("mask", 1, ["batch", 4]))
    save(proto, dest)


def renamed_input(proto, dest: Path) -> None:
    old = proto.graph.input[0].name
    proto.graph.input[0].name = "clips"
    for node in proto.graph.node:
        node.input[:] = ["clips" if i == old else i for i in node.input]
    save(proto, dest)


def flat_output(proto, dest: Path) -> None:
    from onnx import helper

    y = proto.graph.output[0]
    name, c = y.name, y.type.tensor_type.shape.dim[2].dim_value
    for node in proto.graph.node:
        node.output[:] = [f"{o}_t" if o == name else o for o in node.output]
    proto.graph.node.append(helper.make_node("ReduceMean", [f"{name}_t"], [name], axes=[1], keepdims=0))
    proto.graph.output.pop()
    proto.graph.output.append(helper.make_tensor_value_info(name, 1, ["batch", c]))
    save(proto, dest)


def external_data(listed: bool):
    def change(proto, dest: Path) -> list[str]:
        save(proto, dest, save_as_external_data=True, location="weights.bin", size_threshold=0)
        return ["weights.bin"] if listed else []
    return change
