"""The float64 truths the parity oracles measure float32's own error against, and the reach is
measured on: a PyTorch module computing in float64 (`float64_evaluation`, for export) and an
ONNX graph evaluated in float64 (`evaluate_float64`, for clean, where no module travels with the file).

The graph is evaluated by ONNX's own reference evaluator (`onnx.reference`) on a float64 copy of
it. Its numpy Conv and ConvTranspose would take minutes on a vocoder, so those two run as torch's
float64 kernels (`new_ops`); every other op is ONNX's reference. The weights stay the float32 values
the graph stores (folded constants included), widened exactly, so the result is the exact value of
the function the float32 graph approximates.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from torch import nn

from pipeline.errors import UserError


def evaluate_float64(model: onnx.ModelProto, mel: np.ndarray) -> np.ndarray:
    """The graph's single output for `mel`, every operation computed in float64.

    The reference evaluator's own `run` keeps every intermediate tensor (about 7 GB for v3 at 64
    frames), so its nodes are run here in the same order, each tensor freed after its last reader."""
    widened = in_float64(model)
    graph = widened.graph
    try:
        evaluator = ReferenceEvaluator(widened, new_ops=[Conv, ConvTranspose])
        values = {**evaluator.rt_inits_, graph.input[0].name: np.asarray(mel, dtype=np.float64)}
        last_use = _last_uses(graph)
        with torch.inference_mode():
            for index, node in enumerate(evaluator.rt_nodes_):
                values.update(zip(node.output, node.run(*(values[name] if name else None for name in node.input)), strict=False))
                for name in node.input:
                    if last_use.get(name) == index:
                        values.pop(name, None)
    except UserError:
        raise
    except Exception as error:  # an op or attribute the reference cannot evaluate: one line, not a traceback
        raise UserError(f"the cleaned graph has no float64 evaluation ({type(error).__name__}: {str(error)[:200]}), "
                        "so its parity cannot be judged; report this model") from None
    return values[graph.output[0].name]


def _last_uses(graph: onnx.GraphProto) -> dict[str, int]:
    """Index of the last node reading each computed tensor, so it can be freed after it."""
    keep = {graph.output[0].name} | {t.name for t in graph.initializer}
    return {name: index for index, node in enumerate(graph.node) for name in node.input if name and name not in keep}


def in_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose float32 weights, input and output are float64 (exact: float32 widens
    without rounding); shape annotations of the float32 tensors are dropped with their type."""
    widened = onnx.ModelProto()
    widened.CopyFrom(model)
    graph = widened.graph
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == onnx.TensorProto.FLOAT:
            graph.initializer[index].CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(tensor).astype(np.float64), tensor.name))
    for value in (*graph.input, *graph.output):
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            value.type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    del graph.value_info[:]
    return widened


def _one_dimensional(x: np.ndarray, auto_pad, op: str) -> None:
    if x.ndim != 3 or auto_pad not in (None, b"NOTSET", "NOTSET"):
        raise UserError(f"{op}: only 1-D convolutions with explicit pads have a float64 evaluation; report this model")


def _tensors(*arrays) -> list:
    return [None if a is None else torch.from_numpy(np.require(a, np.float64, ["C", "W"])) for a in arrays]


class Conv(OpRun):
    """ONNX Conv on 1-D signals through torch's float64 kernel (ONNX's pads may differ per side)."""

    def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None, pads=None,
             strides=None):
        _one_dimensional(X, auto_pad, "Conv")
        x, weight, bias = _tensors(X, W, B)
        begin, end = pads or (0, 0)
        out = F.conv1d(F.pad(x, (begin, end)), weight, bias, stride=(strides or [1])[0],
                       dilation=(dilations or [1])[0], groups=group or 1)
        return (out.numpy(),)


class ConvTranspose(OpRun):
    """ONNX ConvTranspose on 1-D signals through torch's float64 kernel: ONNX's pads crop the full
    transposed output on each side, where torch's `padding` is symmetric only."""

    def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None, output_padding=None,
             output_shape=None, pads=None, strides=None):
        _one_dimensional(X, auto_pad, "ConvTranspose")
        if output_shape:
            raise UserError("ConvTranspose with output_shape has no float64 evaluation; report this model")
        x, weight, bias = _tensors(X, W, B)
        full = F.conv_transpose1d(x, weight, bias, stride=(strides or [1])[0], output_padding=(output_padding or [0])[0],
                                  groups=group or 1, dilation=(dilations or [1])[0])
        begin, end = pads or (0, 0)
        return (full[..., begin:full.shape[-1] - end].numpy(),)


@contextlib.contextmanager
def float64_evaluation(module: nn.Module) -> Iterator[None]:
    """Within the block, `module` computes in float64, fast on the CPU, without autograd: the truth
    export's parity oracle (export/to_onnx.py) and the reach measurement (export/reach.py) compare against."""
    with _in_float64(module), _one_filter_convolutions_batched(), torch.inference_mode():
        yield


@contextlib.contextmanager
def _in_float64(module: nn.Module) -> Iterator[None]:
    """The module in float64 for the block, back in its own dtype afterwards (float32 round-trips
    exactly through float64, so the export that follows sees the same weights)."""
    dtype = next(module.parameters()).dtype
    module.double()
    try:
        yield
    finally:
        module.to(dtype)


@contextlib.contextmanager
def _one_filter_convolutions_batched() -> Iterator[None]:
    """Within the block, a depthwise convolution whose weight is one filter expanded over every
    channel (BigVGAN's anti-aliasing) runs as a one-channel convolution over batch x channels: the
    same products and sums, but PyTorch's float64 CPU path otherwise loops over the channels one
    call at a time (measured 10x slower for v3). Every other convolution is passed through."""
    conv, transposed = F.conv1d, F.conv_transpose1d

    def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        if not _one_filter(x, weight, bias, groups):
            return conv(x, weight, bias, stride, padding, dilation, groups)
        return _per_channel(lambda flat: conv(flat, weight[:1], None, stride, padding, dilation), x)

    def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        if not _one_filter(x, weight, bias, groups):
            return transposed(x, weight, bias, stride, padding, output_padding, groups, dilation)
        return _per_channel(lambda flat: transposed(flat, weight[:1], None, stride, padding, output_padding, 1, dilation), x)

    F.conv1d, F.conv_transpose1d = conv1d, conv_transpose1d
    try:
        yield
    finally:
        F.conv1d, F.conv_transpose1d = conv, transposed


def _one_filter(x: torch.Tensor, weight: torch.Tensor, bias, groups: int) -> bool:
    """A depthwise convolution whose channels all use the same filter."""
    return (bias is None and groups > 1 and groups == x.shape[1] == weight.shape[0]
            and torch.equal(weight, weight[:1].expand_as(weight)))


def _per_channel(convolve, x: torch.Tensor) -> torch.Tensor:
    batch, channels, length = x.shape
    out = convolve(x.reshape(batch * channels, 1, length))
    return out.reshape(batch, channels, out.shape[-1])
