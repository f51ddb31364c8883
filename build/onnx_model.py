"""What the build needs to know about its ONNX input, checked before any TensorRT work starts:
the pipeline metadata (vocoder, sample rate, hop, mel bands, checkpoint), the input and output
tensors, and whether the weights carry the precision the plan will be named after."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from pipeline.errors import UserError
from pipeline.files import input_file
from pipeline.onnx_metadata import missing_metadata, read_metadata
from pipeline.onnx_tools import external_data_inside

REDUCED_TYPES = ("float16",)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str               # numpy name, e.g. "float32"
    shape: tuple[int, ...]   # -1 for dynamic axes

    def as_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class OnnxFacts:
    metadata: dict
    input: TensorSpec
    output: TensorSpec
    weight_types: frozenset[str]   # numpy names of the initializers' types

    @property
    def synthetic(self) -> bool:
        return self.metadata["checkpoint_sha256"] == "synthetic"


def inspect_onnx(path: str | Path, vocoder: str, onnx_type: str, tensors: dict[str, str]) -> OnnxFacts:
    """Check `path` is a readable exported model of `vocoder` whose weights match `onnx_type`."""
    path = input_file(path, "ONNX file", "make it with `make onnx` or `python -m export`")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is not a readable ONNX model (the file is empty); delete it and re-run `make engines`")
    external_data_inside(path)
    try:
        metadata = read_metadata(path)
        graph = onnx.load(str(path), load_external_data=False).graph
    except (DecodeError, ValueError) as error:
        raise UserError(f"{path} is not a readable ONNX model ({error}; truncated or corrupt?); "
                        "delete it and re-run `make engines`") from None
    missing = missing_metadata(metadata)
    if missing:
        raise UserError(f"{path} lacks the pipeline metadata {', '.join(missing)}; "
                        "export it with `python -m export` (and clean it with `python -m export.clean`)")
    if metadata["vocoder"] != vocoder:
        raise UserError(f"{path} holds the {metadata['vocoder']} vocoder, not {vocoder}; "
                        f"pass --vocoder {metadata['vocoder']} or the {vocoder} model")
    facts = OnnxFacts(metadata, _single(graph.input, tensors["input"], "input", path),
                      _single(graph.output, tensors["output"], "output", path),
                      frozenset(_numpy_name(t.data_type) for t in graph.initializer))
    if facts.input.shape[1] != metadata["n_mels"]:
        raise UserError(f"{path}: input {facts.input.name} has {facts.input.shape[1]} mel bands but the metadata "
                        f"says {metadata['n_mels']}; re-export the model")
    _check_precision(facts, onnx_type, path)
    return facts


def _single(values, expected_name: str, role: str, path: Path) -> TensorSpec:
    names = [value.name for value in values]
    if names != [expected_name]:
        raise UserError(f"{path} has {role}s {names}, expected exactly [{expected_name!r}] ([tensors] in "
                        "pipeline.toml); re-export the model with `python -m export`")
    tensor_type = values[0].type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
    if len(shape) != 3:
        raise UserError(f"{path}: {role} {expected_name} has shape {shape}, expected (batch, channels, time)")
    return TensorSpec(expected_name, _numpy_name(tensor_type.elem_type), shape)


def _numpy_name(onnx_elem_type: int) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(onnx_elem_type).name


def _check_precision(facts: OnnxFacts, onnx_type: str, path: Path) -> None:
    """A strongly typed plan has the ONNX's types: refuse to name a float32 graph fp16, or the reverse."""
    reduced = facts.weight_types & set(REDUCED_TYPES)
    if onnx_type == "float32" and reduced:
        raise UserError(f"{path} has {', '.join(sorted(reduced))} weights but the precision asks for float32; "
                        "build fp32 plans from the float32 ONNX")
    if onnx_type != "float32" and onnx_type not in facts.weight_types:
        raise UserError(f"{path} has no {onnx_type} weights, so a strongly typed plan would not be {onnx_type}; "
                        f"build from the cleaned model (`python -m export.clean ... --precision ...`)")
