"""A cleaned vocoder graph evaluated in float64: the truth the clean stage's parity oracle measures
float32's own error against.

ONNX Runtime's CPU provider has no float64 Conv or ConvTranspose, so the few op types a cleaned
vocoder graph holds are evaluated here with torch, node by node, on float64 copies of the weights.
The weights stay the float32 values the graph stores (folded constants included), so the result is
the exact value of the function the float32 graph approximates.
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from pipeline.errors import UserError

PAD_MODES = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}


def evaluate_float64(model: onnx.ModelProto, mel: np.ndarray) -> np.ndarray:
    """The graph's single output for `mel`, every operation computed in float64."""
    graph = model.graph
    values = {t.name: _as_tensor(numpy_helper.to_array(t)) for t in graph.initializer}
    values[graph.input[0].name] = torch.from_numpy(np.asarray(mel, dtype=np.float64))
    last_use = _last_uses(graph)
    with torch.no_grad():
        for index, node in enumerate(graph.node):
            operation = OPERATIONS.get(node.op_type)
            if operation is None:
                raise UserError(f"node {node.name} ({node.op_type}) has no float64 evaluation, so its graph's parity "
                                f"cannot be judged; report this model")
            inputs = [values[name] if name else None for name in node.input]
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            values[node.output[0]] = operation(inputs, attrs)
            for name in node.input:
                if last_use.get(name) == index:
                    values.pop(name, None)
    return values[graph.output[0].name].numpy()


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(array.copy())
    return tensor.double() if tensor.is_floating_point() else tensor


def _last_uses(graph: onnx.GraphProto) -> dict[str, int]:
    """Index of the last node reading each computed tensor, so it can be freed after it (v3 is large)."""
    keep = {graph.output[0].name} | {t.name for t in graph.initializer}
    return {name: index for index, node in enumerate(graph.node) for name in node.input if name and name not in keep}


def _one_dimensional(x: torch.Tensor, attrs: dict, node: str) -> None:
    if x.dim() != 3 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UserError(f"{node}: only 1-D convolutions with explicit pads have a float64 evaluation; report this model")


def _conv(inputs: list, attrs: dict) -> torch.Tensor:
    x, weight, bias = (inputs + [None])[:3]
    _one_dimensional(x, attrs, "Conv")
    begin, end = attrs.get("pads", [0, 0])
    return F.conv1d(F.pad(x, (begin, end)), weight, bias, stride=attrs.get("strides", [1])[0],
                    dilation=attrs.get("dilations", [1])[0], groups=attrs.get("group", 1))


def _conv_transpose(inputs: list, attrs: dict) -> torch.Tensor:
    """ONNX's pads crop the full transposed output on each side; torch's `padding` is symmetric only."""
    x, weight, bias = (inputs + [None])[:3]
    _one_dimensional(x, attrs, "ConvTranspose")
    if "output_shape" in attrs:
        raise UserError("ConvTranspose with output_shape has no float64 evaluation; report this model")
    full = F.conv_transpose1d(x, weight, bias, stride=attrs.get("strides", [1])[0],
                              output_padding=attrs.get("output_padding", [0])[0], groups=attrs.get("group", 1),
                              dilation=attrs.get("dilations", [1])[0])
    begin, end = attrs.get("pads", [0, 0])
    return full[..., begin:full.shape[-1] - end]


def _pad(inputs: list, attrs: dict) -> torch.Tensor:
    x, pads, value, axes = (inputs + [None, None])[:4]
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    axes = list(range(x.dim())) if axes is None else [int(a) % x.dim() for a in axes]
    amounts = dict(zip(axes, zip(pads.tolist()[:len(axes)], pads.tolist()[len(axes):])))
    pairs = [amounts.get(axis, (0, 0)) for axis in reversed(range(x.dim()))]
    while pairs and pairs[-1] == (0, 0):
        pairs.pop()  # torch pads only the trailing dimensions in edge and reflect mode
    flat = [amount for pair in pairs for amount in pair]
    fill = float(value) if value is not None and mode == "constant" else None
    return F.pad(x, flat, mode=PAD_MODES[mode], **({"value": fill} if fill is not None else {}))


def _slice(inputs: list, attrs: dict) -> torch.Tensor:
    x, starts, ends, axes, steps = (inputs + [None, None])[:5]
    axes = range(len(starts)) if axes is None else axes.tolist()
    steps = [1] * len(starts) if steps is None else steps.tolist()
    index = [slice(None)] * x.dim()
    for axis, start, end, step in zip(axes, starts.tolist(), ends.tolist(), steps):
        if step < 1:
            raise UserError("Slice with a negative step has no float64 evaluation; report this model")
        index[axis % x.dim()] = slice(start, end, step)
    return x[tuple(index)]


def _clip(inputs: list, attrs: dict) -> torch.Tensor:
    x, low, high = (inputs + [None, None])[:3]
    return torch.clamp(x, None if low is None else float(low), None if high is None else float(high))


OPERATIONS = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Pad": _pad,
    "Slice": _slice,
    "Clip": _clip,
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: i[0] / i[1],
    "Sin": lambda i, a: torch.sin(i[0]),
    "Tanh": lambda i, a: torch.tanh(i[0]),
    "LeakyRelu": lambda i, a: F.leaky_relu(i[0], a.get("alpha", 0.01)),
    "Identity": lambda i, a: i[0],
}
