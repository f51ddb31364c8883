"""GPT-SoVITS' vocoder checkpoint layouts: the file names, torch's old weight norm, and writers for
both, so tests and users can produce files exactly as upstream does.

v3 (BigVGAN v2): a folder holding `config.json` and `bigvgan_generator.pt` = {"generator": state},
with weight norm as `weight_g`/`weight_v` pairs or already removed. v4: `vocoder.pth`, a plain state
dict saved after weight-norm removal. Reading them, strictly, is the export stage's
(export/checkpoints.py); the drop-in needs only the names.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.files import atomic_output
from vocoder_models.vocoders import BigVGAN, HiFiGAN

V3_WEIGHTS = "bigvgan_generator.pt"
V3_CONFIG = "config.json"


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace each `weight_g`/`weight_v` pair (torch's old weight_norm, dim 0) by the plain weight."""
    folded = {}
    for key, value in state.items():
        if key.endswith(".weight_g"):
            continue
        if key.endswith(".weight_v"):
            stem = key[: -len("_v")]
            gain = state.get(stem + "_g")
            if gain is None:
                folded[key] = value  # left for the strict check to report
                continue
            norm = value.float().flatten(1).norm(dim=1).view(-1, *([1] * (value.dim() - 1)))
            folded[stem] = gain.float() * value.float() / norm
        else:
            folded[key] = value
    return folded


def add_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of fold_weight_norm for every convolution weight: how BigVGAN v2 saves them."""
    normed = {}
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() == 3:
            normed[key + "_g"] = value.flatten(1).norm(dim=1).view(-1, 1, 1).clone()
            normed[key + "_v"] = value.clone()
        else:
            normed[key] = value
    return normed


def save_v3_checkpoint(folder: str | Path, module: BigVGAN, weight_norm: bool = True) -> Path:
    """Write `config.json` and `bigvgan_generator.pt` as BigVGAN v2 publishes them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    generator = add_weight_norm(state) if weight_norm else state
    config = {name: list(map(list, v)) if name == "resblock_dilation_sizes" else (list(v) if isinstance(v, tuple) else v)
              for name, v in module.config.__dict__.items()}
    config.update(num_mels=module.config.num_mels, hop_size=module.hop, n_fft=1024, win_size=1024, fmin=0, fmax=None)
    with atomic_output(folder / V3_CONFIG) as tmp_config, atomic_output(folder / V3_WEIGHTS) as tmp:
        tmp_config.write_text(json.dumps(config, indent=2), encoding="utf-8")
        torch.save({"generator": generator}, tmp)
    return folder / V3_WEIGHTS


def save_v4_checkpoint(path: str | Path, module: HiFiGAN) -> Path:
    """Write the plain state dict GPT-SoVITS ships as `gsv-v4-pretrained/vocoder.pth`."""
    with atomic_output(path) as tmp:
        torch.save({k: v.detach().clone() for k, v in module.state_dict().items()}, tmp)
    return Path(path)
