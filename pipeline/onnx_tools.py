"""The two ONNX mechanics several stages share: an ONNX Runtime session that turns a mel into
audio, and rewiring a graphsurgeon graph so one tensor's consumers read another."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def cpu_session(model):
    """An ONNX Runtime CPU session for a ModelProto, serialized bytes or a path."""
    return onnx_session(model, ["CPUExecutionProvider"])


def onnx_session(model, providers: list):
    """An ONNX Runtime session on `providers` (names or (name, options) pairs) for a ModelProto,
    serialized bytes or a path."""
    import onnx
    import onnxruntime as ort

    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, providers=providers)


def external_data_inside(path: str | Path) -> None:
    """Every external-data file `path` names is a plain name whose real path (symlinks followed)
    stays in the model's folder (runtime/files.py `inside`) and is a regular file (`input_file`):
    TensorRT's parser and ONNX Runtime would otherwise read whatever a crafted location or link
    points at, or wait forever on a FIFO."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx.external_data_helper import _get_all_tensors

    from runtime.files import input_file, inside

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError):
        return  # not readable at all: the caller's own reader names that
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        data = inside(path.parent, location, f"{path}: external data file of {tensor.name}")
        input_file(data, f"{path}: external data file of {tensor.name},", "keep it beside the model as the export wrote it")


def run_audio(session, mel: np.ndarray) -> np.ndarray:
    """The session's audio for `mel` as float32, the mel cast to the model's input type (half models too)."""
    feed = session.get_inputs()[0]
    dtype = np.float16 if feed.type == "tensor(float16)" else np.float32
    (audio,) = session.run([session.get_outputs()[0].name], {feed.name: np.asarray(mel).astype(dtype)})
    return audio.astype(np.float32)


def reroute(old, new) -> None:
    """Every node that reads graphsurgeon tensor `old` reads `new` instead (the producer of `old`
    is left without consumers, for graph.cleanup() to drop)."""
    for consumer in list(old.outputs):
        for index, tensor in enumerate(list(consumer.inputs)):
            if tensor is old:
                consumer.inputs[index] = new
