"""Checks the half-precision tests share: the bar against float32 PyTorch, and that a precision record's float32
nodes really are float32 in the written graph (and every other node half)."""
from __future__ import annotations

from pathlib import Path

import onnx

from export.to_onnx import pytorch_audio
from pipeline.onnx_tools import cpu_session, run_audio
from pipeline.quality import audio_errors, bar_for, meets_bar
from pipeline.settings import load_settings
from vocoder_models.mels import sample_mel

HALF = onnx.TensorProto.FLOAT16
FLOAT = onnx.TensorProto.FLOAT


def fp16_bar() -> dict:
    return bar_for(load_settings(), "fp16")


def errors_against_pytorch(module, path: Path, vocoder: str, lengths) -> dict[int, dict]:
    """The half model at `path` against float32 PyTorch on a speech-like mel of each length."""
    session = cpu_session(onnx.load(str(path)))
    errors = {}
    for frames in lengths:
        mel = sample_mel(vocoder, frames, seed=frames + 1)
        errors[frames] = audio_errors(pytorch_audio(module, mel), run_audio(session, mel))
    return errors


def assert_meets_bar_against_pytorch(module, path: Path, vocoder: str, lengths) -> dict[int, dict]:
    errors = errors_against_pytorch(module, path, vocoder, lengths)
    for frames, error in errors.items():
        assert meets_bar(error, fp16_bar()), (vocoder, frames, error)
    return errors


def declared_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor the graph declares."""
    declared = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    types = {v.name: v.type.tensor_type.elem_type for v in declared}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return types


def assert_precision_types_hold(path: Path, record: dict) -> None:
    """Nodes the record keeps float32 read and write float32, all others half; mel and audio float32."""
    model = onnx.load(str(path))
    types = declared_types(model)
    kept = set(record["float32_nodes"])
    for node in model.graph.node:
        if node.op_type == "Cast":
            continue
        declared = {types[name] for name in list(node.input) + list(node.output) if name in types} - {onnx.TensorProto.INT64}
        assert declared == ({FLOAT} if node.name in kept else {HALF}), (node.name, declared)
    assert types["mel"] == FLOAT and types["audio"] == FLOAT
