"""Seeded synthetic weights: the embedded default (no trained checkpoint can be downloaded here)
and a stress variant that makes half precision struggle the way trained BigVGAN weights can.

Both are calibrated on a speech-like mel so the audio peaks at 0.5: neither silent nor clipped,
and shaped by the mel. The stress variant spreads Snake's log alpha/beta over [-1, 1] and raises
convolution gains so intermediate activations reach the hundreds.
"""
from __future__ import annotations

import torch
from torch import nn

from export.mels import sample_mel
from pipeline.settings import load_settings

# (gain of the first convolution, gain of every other convolution, spread of Snake's log alpha/beta);
# stress gains are per vocoder: v3's Snake stages grow activations faster than v4's leaky ReLUs
SYNTHETIC_KINDS = {
    "default": (1.0, 0.6, 0.1),
    "stress": {"v3": (10.0, 0.8, 1.0), "v4": (20.0, 1.5, 1.0)},
}
CALIBRATION_PEAK = 0.5


def synthetic_state_dict(module: nn.Module, vocoder: str, kind: str) -> tuple[dict[str, torch.Tensor], int]:
    """A state dict for `module` drawn from the configured seed, with the output peak calibrated."""
    spec = SYNTHETIC_KINDS[kind]
    first_gain, gain, snake_spread = spec[vocoder] if isinstance(spec, dict) else spec
    seed = load_settings()["export"]["synthetic_seed" if kind == "default" else "stress_seed"]
    generator = torch.Generator().manual_seed(seed + (0 if vocoder == "v3" else 1))
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith((".alpha", ".beta")):
                param.uniform_(-snake_spread, snake_spread, generator=generator)
            elif name.endswith(".bias"):
                param.normal_(0.0, 0.02, generator=generator)
            else:
                fan_in = _fan_in(module.get_submodule(name.rsplit(".", 1)[0]))
                scale = first_gain if name.startswith("conv_pre") else gain
                param.normal_(0.0, scale / fan_in ** 0.5, generator=generator)
        _calibrate_output(module, vocoder)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}, seed


def _fan_in(layer: nn.Module) -> float:
    """Inputs that feed one output sample (a transposed conv spreads its taps over `stride` outputs)."""
    if isinstance(layer, nn.ConvTranspose1d):
        return layer.in_channels * layer.kernel_size[0] / layer.stride[0]
    return layer.in_channels / layer.groups * layer.kernel_size[0]


def _calibrate_output(module: nn.Module, vocoder: str) -> None:
    """Scale the last convolution so the pre-clamp output of a speech-like mel peaks at 0.5."""
    captured = {}
    hook = module.conv_post.register_forward_hook(lambda _m, _i, out: captured.setdefault("out", out))
    try:
        module.eval()(torch.from_numpy(sample_mel(vocoder, frames=48, seed=7)))
    finally:
        hook.remove()
    factor = CALIBRATION_PEAK / float(captured["out"].abs().max())
    module.conv_post.weight.mul_(factor)
    if module.conv_post.bias is not None:
        module.conv_post.bias.mul_(factor)
