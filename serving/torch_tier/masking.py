"""Exact edges inside a padded window: a mel of any length runs in a window of a bucket's length
and the module computes, on its first frames, exactly what it computes on the mel alone.

The vocoders are convolutional, and every layer keeps the mel's time axis scaled by a whole factor
(the transposed convolutions multiply it by their stride). On the mel alone, a layer's right edge
is where its input ends; in the padded window the input goes on with padding. Three kinds of layer
see the edge, and each is made to see it where the mel ends (`valid` mel frames, times the layer's
factor), so that by induction every layer's first `valid * factor` frames are the unpadded ones:
- a convolution (Conv1d, stride 1) pads with zeros: output t < valid reads input frames up to
  t + (K - 1) * dilation - padding, so the `band` of input frames just past the edge is zeroed;
- a transposed convolution reads input i for outputs from i * stride - padding on: outputs before
  valid * stride read input frames up to valid + (padding - 1) // stride, zeroed likewise;
- BigVGAN's anti-aliased activation pads by replicating its edge frames (its up-sampler's input
  and its down-sampler's input): the fused activation (fused.py) clamps its reads at the valid
  length, and writes zeros after it, so the convolution that reads it needs no zeroing.
Element-wise steps (Snake, leaky ReLU, residual adds, the stage mean, clamp, tanh) keep frame t at
frame t. The valid length is a device scalar: a CUDA graph captured once per bucket reads it, so
one graph serves every length up to its bucket. The module's other layers must be of these kinds
(`supported`); a module with any other layer keeps the bucket windows with a tail window.
"""
from __future__ import annotations

import contextlib
import os
import weakref
from typing import Iterator, List, Optional

import torch
from torch import nn

from serving.torch_tier.fused import FusedAntiAliasedSnake, is_antialiased_snake

# leaves that keep frame t at frame t (weight norm's parametrization is a child of the convolution)
ELEMENTWISE = (nn.LeakyReLU, nn.ReLU, nn.Tanh, nn.Identity, nn.Dropout, nn.SiLU)


def conv_band(conv: nn.Module) -> Optional[int]:
    """Input frames past the edge that outputs before the edge read (None: not a layer that keeps
    the time axis scaled by a whole factor with zero padding)."""
    if isinstance(conv, nn.Conv1d) and not isinstance(conv, nn.ConvTranspose1d):
        if conv.stride != (1,) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            return None
        reach = conv.dilation[0] * (conv.kernel_size[0] - 1)
        return reach - conv.padding[0] if 2 * conv.padding[0] == reach else None  # the length kept
    if isinstance(conv, nn.ConvTranspose1d):
        (stride,), (padding,), (kernel,), (dilation,), (extra,) = (conv.stride, conv.padding, conv.kernel_size,
                                                                   conv.dilation, conv.output_padding)
        if dilation * (kernel - 1) + extra + 1 - 2 * padding != stride:  # length in * stride exactly
            return None
        return 0 if padding == 0 else (padding - 1) // stride + 1
    return None


def unsupported_layers(module: nn.Module) -> List[str]:
    """The layers masking cannot make exact (empty: the module is supported)."""
    inside = [name + "." for name, child in module.named_modules()
              if isinstance(child, FusedAntiAliasedSnake) or is_antialiased_snake(child)]
    bad = []
    for name, child in module.named_modules():
        if any(name.startswith(prefix) for prefix in inside) or "parametrizations" in name.split("."):
            continue  # inside an anti-aliased activation, or weight norm's parametrization of a weight
        if isinstance(child, (nn.Conv1d, nn.ConvTranspose1d)):
            if conv_band(child) is None:
                bad.append(f"{name} ({type(child).__name__})")
        elif is_antialiased_snake(child) and not isinstance(child, FusedAntiAliasedSnake):
            bad.append(f"{name} ({type(child).__name__}, not fused: fused.py emulates its edge)")
        elif not (list(child.children()) or isinstance(child, ELEMENTWISE + (FusedAntiAliasedSnake,))):
            bad.append(f"{name} ({type(child).__name__})")
    return bad


class EdgeMask:
    """The valid mel frames of the window being run, and the hooks that make each layer's right edge
    fall there. Off (no window): every layer runs as it always does."""

    def __init__(self, module: nn.Module, device: torch.device):
        self.valid = torch.ones((), dtype=torch.int32, device=device)  # read inside graphs: never reallocated
        self.padded: Optional[int] = None   # the window's mel frames while one runs
        self.zeroed: Optional[weakref.ref] = None  # the last output known to be zero past the edge
        self.hooks = []
        for child in module.modules():
            if isinstance(child, FusedAntiAliasedSnake):
                child.edge = self
            elif isinstance(child, (nn.Conv1d, nn.ConvTranspose1d)):
                band = conv_band(child)
                if band:
                    self.hooks.append(child.register_forward_pre_hook(self._hook(band)))

    @contextlib.contextmanager
    def window(self, padded: int) -> Iterator[None]:
        """Run the module on windows of `padded` mel frames with the edge at `valid` (set_valid)."""
        self.padded = padded
        try:
            yield
        finally:
            self.padded, self.zeroed = None, None

    def set_valid(self, frames: int) -> None:
        """The valid mel frames of the next run (a device write, outside any graph)."""
        self.valid.fill_(frames)

    def scale(self, x: torch.Tensor) -> int:
        """This layer's frames per mel frame."""
        return x.shape[-1] // self.padded

    def mark_zeroed(self, x: torch.Tensor) -> None:
        self.zeroed = weakref.ref(x)

    def _hook(self, band: int):
        def zero_past_edge(conv, args):
            x = args[0]
            if self.padded is None or (self.zeroed is not None and self.zeroed() is x):
                return None
            zero_band(x, self.valid, self.scale(x), band)
            return None
        return zero_past_edge

    def remove(self) -> None:
        for handle in self.hooks:
            handle.remove()
        self.hooks = []


def zero_band(x: torch.Tensor, valid: torch.Tensor, scale: int, band: int) -> None:
    """x[..., e:e + band] = 0 in place, e = valid * scale (frames past the tensor's end: none)."""
    use_kernel = (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1") and x.is_contiguous() \
        and x.dtype in (torch.float16, torch.float32) and x.dim() == 3
    if use_kernel:
        from serving.torch_tier.kernel import zero_band as kernel_zero_band
        kernel_zero_band(x, valid, scale, band)
        return
    frame = torch.arange(x.shape[-1], device=x.device)
    edge = valid.to(x.device, torch.int64) * scale
    x.masked_fill_((frame >= edge) & (frame < edge + band), 0)
