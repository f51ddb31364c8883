"""Seeded synthetic weights: the embedded default (no trained checkpoint can be downloaded here)
and a stress variant that makes half precision, and float32 too, struggle the way trained BigVGAN
weights can.

Both are calibrated on a speech-like mel so the audio peaks at 0.5: neither silent nor clipped,
and shaped by the mel. The stress variant spreads Snake's log alpha/beta over [-1, 1] and raises
convolution gains until intermediate activations reach the thousands (v3; there PyTorch float32
itself strays 1.5e-4 of peak from float64) and overflow float16 (v4).

`python -m export.synthetic --kind stress --vocoder v3 --output DIR` writes such a checkpoint in the
upstream layout (v3: a BigVGAN v2 folder; v4: GPT-SoVITS' vocoder.pth), for `make engines
CHECKPOINT_V3=DIR` or `python -m export --checkpoint`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.settings import VOCODERS, load_settings
from runtime.errors import CommandParser, run_main
from vocoder_models.layouts import save_v3_checkpoint, save_v4_checkpoint
from vocoder_models.mels import sample_mel
from vocoder_models.vocoders import BigVGAN, HiFiGAN

log = logging.getLogger("export")

# (gain of the first convolution, gain of every other convolution, spread of Snake's log alpha/beta);
# stress gains are per vocoder: v3's Snake stages grow activations faster than v4's leaky ReLUs
SYNTHETIC_KINDS = {
    "default": (1.0, 0.6, 0.1),
    "stress": {"v3": (10.0, 1.0, 1.0), "v4": (20.0, 1.6, 1.0)},
}
CALIBRATION_PEAK = 0.5
CALIBRATION_MEL = {"frames": 48, "seed": 7}  # part of the weights' definition: changing it changes them


def synthetic_vocoder(vocoder: str, kind: str, settings: dict[str, Any]) -> nn.Module:
    """The vocoder with seeded synthetic weights of `kind` ("default" or "stress", seeded by
    `settings`' [export]); `module.source` says so, and so does the log line."""
    module = BigVGAN() if vocoder == "v3" else HiFiGAN()
    state, seed = synthetic_state_dict(module, vocoder, kind, settings["export"])
    module.load_state_dict(state, strict=True)
    module.source = {"checkpoint": f"synthetic-{kind}", "sha256": "synthetic", "seed": seed}
    log.info("%s: SYNTHETIC %s weights (seed %d), not a trained vocoder", vocoder, kind, seed)
    return module.eval()


def synthetic_state_dict(module: nn.Module, vocoder: str, kind: str,
                         config: dict[str, Any]) -> tuple[dict[str, torch.Tensor], int]:
    """A state dict for `module` drawn from the seed `config` ([export]) sets for `kind`, with the
    output peak calibrated."""
    spec = SYNTHETIC_KINDS[kind]
    first_gain, gain, snake_spread = spec[vocoder] if isinstance(spec, dict) else spec
    seed = config["synthetic_seed" if kind == "default" else "stress_seed"]
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
        module.eval()(torch.from_numpy(sample_mel(vocoder, **CALIBRATION_MEL)))
    finally:
        hook.remove()
    factor = CALIBRATION_PEAK / float(captured["out"].abs().max())
    module.conv_post.weight.mul_(factor)
    if module.conv_post.bias is not None:
        module.conv_post.bias.mul_(factor)


def activation_peak(module: nn.Module, vocoder: str) -> tuple[float, str]:
    """The largest magnitude any layer outputs on the calibration mel, and that layer's name: how
    far from float16's range (and float32's comfort) a checkpoint drives its activations."""
    peaks: dict[str, float] = {}

    def record(name: str):
        return lambda _m, _i, out: peaks.__setitem__(name, float(out.detach().abs().max()))

    layers = [(name, layer) for name, layer in module.named_modules() if not list(layer.children())]
    hooks = [layer.register_forward_hook(record(name)) for name, layer in layers]
    try:
        with torch.no_grad():
            module(torch.from_numpy(sample_mel(vocoder, **CALIBRATION_MEL)))
    finally:
        for hook in hooks:
            hook.remove()
    layer = max(peaks, key=peaks.get)
    return peaks[layer], layer


def write_checkpoint(kind: str, vocoder: str, output: str | Path, settings: dict[str, Any]) -> dict:
    """Synthetic weights of `kind` saved as upstream publishes them: the checkpoint's path, and the
    activation peak (with its layer) the weights reach on the calibration mel."""
    module = synthetic_vocoder(vocoder, kind, settings)
    peak, layer = activation_peak(module, vocoder)
    path = Path(save_v3_checkpoint(output, module).parent if vocoder == "v3" else save_v4_checkpoint(output, module))
    log.info("%s: wrote the %s checkpoint to %s (upstream layout); activation peak %.0f (%s) on the calibration mel",
             vocoder, kind, path, peak, layer)
    return {"path": path, "activation_peak": peak, "layer": layer}


def main(argv=None) -> int:
    parser = CommandParser(prog="python -m export.synthetic",
                                     description="write seeded synthetic weights as an upstream checkpoint")
    parser.add_argument("--kind", required=True, choices=list(SYNTHETIC_KINDS))
    parser.add_argument("--vocoder", required=True, choices=VOCODERS)
    parser.add_argument("--output", required=True, help="v3: the BigVGAN v2 folder to write; v4: the vocoder.pth file")
    args = parser.parse_args(argv)
    write_checkpoint(args.kind, args.vocoder, args.output, load_settings())
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
