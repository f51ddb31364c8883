"""Swap BigVGAN's anti-aliased activations for the fused Triton kernel, in place.

Two module families have the same shape: this project's `vocoder_models.vocoders.AntiAliasedSnake` and
upstream's `Activation1d` (NVIDIA's `bigvgan` package; GPT-SoVITS vendors the same code). Each has
`act` (SnakeBeta with `alpha`, `beta` and a log-scale flag, or Snake with `alpha` only),
`upsample` (a 12-tap `filter` buffer, ratio 2) and `downsample` (`lowpass.filter`, ratio 2). The
replacement keeps those three children under the same names, so the state dict is unchanged, and
runs them as before on a device the kernel cannot use.
"""
from __future__ import annotations

import os

import torch
from torch import nn

TAPS = 12
SNAKE_EPSILON = 1e-9  # both families divide by (beta + 1e-9)


def is_antialiased_snake(module: nn.Module) -> bool:
    """Whether `module` is a 2x anti-aliased Snake/SnakeBeta with 12-tap filters (either family)."""
    act, up, down = (getattr(module, name, None) for name in ("act", "upsample", "downsample"))
    if act is None or up is None or down is None or not hasattr(act, "alpha"):
        return False
    up_filter = getattr(up, "filter", None)
    down_filter = getattr(getattr(down, "lowpass", None), "filter", None)
    if up_filter is None or down_filter is None or up_filter.numel() != TAPS or down_filter.numel() != TAPS:
        return False
    ratios = (getattr(module, "up_ratio", 2), getattr(module, "down_ratio", 2), getattr(up, "ratio", 2),
              getattr(down, "ratio", 2))
    return all(r == 2 for r in ratios)


def snake_terms(act: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, 1 / (beta + 1e-9)) as the module computes them, in float64, shape (C,)."""
    logscale = getattr(act, "logscale", getattr(act, "alpha_logscale", False))
    alpha = act.alpha.detach().double().reshape(-1)
    beta = act.beta.detach().double().reshape(-1) if hasattr(act, "beta") else alpha
    if logscale:
        alpha, beta = torch.exp(alpha), torch.exp(beta)
    return alpha, 1.0 / (beta + SNAKE_EPSILON)


class FusedAntiAliasedSnake(nn.Module):
    """The same function as the module it replaces, by one Triton kernel on CUDA tensors."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.act, self.upsample, self.downsample = original.act, original.upsample, original.downsample
        alpha, inv_beta = snake_terms(original.act)
        taps = torch.cat([original.upsample.filter.detach().double().reshape(-1),
                          original.downsample.lowpass.filter.detach().double().reshape(-1)])
        # float32 constants, kept off the module's buffers so that .half() cannot round them
        self._constants = {"cpu": torch.cat([taps, alpha, inv_beta]).float()}
        self.channels = alpha.numel()

    def constants(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(up taps, down taps, alpha, 1/beta) as float32 on `device`, copied there once."""
        key = str(device)
        if key not in self._constants:
            self._constants[key] = self._constants["cpu"].to(device)
        packed = self._constants[key]
        return packed[:TAPS], packed[TAPS:2 * TAPS], packed[2 * TAPS:2 * TAPS + self.channels], packed[2 * TAPS + self.channels:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # CUDA tensors, or CPU tensors under Triton's interpreter (TRITON_INTERPRET=1: the CI tests)
        runnable = x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"
        if not runnable or x.dtype not in (torch.float32, torch.float16):
            return self.downsample(self.act(self.upsample(x)))
        from serving.torch_tier.kernel import antialiased_snake
        return antialiased_snake(x, *self.constants(x.device))


def fuse_activations(module: nn.Module) -> int:
    """Replace every anti-aliased Snake inside `module` by its fused form; returns how many."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, FusedAntiAliasedSnake) and is_antialiased_snake(child):
                setattr(parent, name, FusedAntiAliasedSnake(child))
                count += 1
    return count
