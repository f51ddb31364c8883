"""Load GPT-SoVITS vocoder checkpoints in their upstream layouts, strictly, or the synthetic default.

v3 (BigVGAN v2): a folder holding `config.json` and `bigvgan_generator.pt` = {"generator": state},
with weight norm as `weight_g`/`weight_v` pairs or already removed. v4: `vocoder.pth`, a plain state
dict saved after weight-norm removal. The layouts themselves (file names, weight norm, writers) are
models/layouts.py's.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.synthetic import synthetic_vocoder
from models.layouts import V3_CONFIG, V3_WEIGHTS, fold_weight_norm
from models.vocoders import BigVGAN, BigVGANConfig, HiFiGAN
from pipeline.errors import UserError
from pipeline.files import sha256_of
from pipeline.settings import VOCODERS
from runtime.errors import reason_of

log = logging.getLogger("export")

def load_vocoder(vocoder: str, checkpoint: str | Path | None = None, synthetic: str = "default", *,
                 settings: dict[str, Any]) -> nn.Module:
    """The vocoder as an eval-mode float32 module; `module.source` tells where its weights came from.

    Without a checkpoint the weights are the seeded synthetic ones (`synthetic` = "default" or
    "stress", seeded by `settings`' [export]), and every log line and manifest says so.
    """
    if vocoder not in VOCODERS:
        raise UserError(f"unknown vocoder {vocoder!r}; choose v3 (BigVGAN v2) or v4 (HiFi-GAN)")
    if checkpoint is None:
        module = synthetic_vocoder(vocoder, synthetic, settings)
    elif vocoder == "v3":
        module = _load_v3(Path(checkpoint))
    else:
        module = _load_v4(Path(checkpoint))
    return module.eval()


def checkpoint_files(checkpoint: str | Path | None) -> list[Path]:
    """The files a checkpoint argument reads (a v3 folder: its config and weights), so an output
    naming one of them is refused."""
    if checkpoint is None:
        return []
    path = Path(checkpoint)
    return [path / V3_CONFIG, path / V3_WEIGHTS] if path.is_dir() else [path]


def _read_torch_file(path: Path) -> object:
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; pass an existing file with --checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # damaged bytes surface as any error of the unpickler (KeyError, IndexError, ...)
        reason = reason_of(error)
        raise UserError(f"checkpoint {path} is not a readable PyTorch file ({reason}); "
                        "re-download or re-save it") from None


def _load_v3(path: Path) -> nn.Module:
    folder, weights = (path, path / V3_WEIGHTS) if path.is_dir() else (path.parent, path)
    if not weights.exists() and path.is_dir():
        raise UserError(f"{folder} has no {V3_WEIGHTS}; pass the BigVGAN v2 folder with --checkpoint")
    payload = _read_torch_file(weights)
    if isinstance(payload, dict) and "generator" not in payload and "ups.0.weight" in payload:
        raise UserError(f"{weights} is a v4 (HiFi-GAN) vocoder checkpoint; use --vocoder v4")
    if not isinstance(payload, dict) or not isinstance(payload.get("generator"), dict):
        raise UserError(f"{weights} has no 'generator' state dict; expected BigVGAN v2's bigvgan_generator.pt")
    config_path = folder / V3_CONFIG
    if not config_path.is_file():
        raise UserError(f"{config_path} not found; BigVGAN needs its config.json beside {weights.name}")
    try:
        config = BigVGANConfig.from_json(json.loads(config_path.read_text(encoding="utf-8")))
        module = BigVGAN(config)
    except (json.JSONDecodeError, TypeError, ValueError, RuntimeError) as error:
        raise UserError(f"{config_path} is not a usable BigVGAN v2 config ({reason_of(error)}); "
                        "use the config.json published with the weights") from None
    _load_strict(module, fold_weight_norm(payload["generator"]), weights)
    module.source = {"checkpoint": str(weights), "sha256": sha256_of(weights)}
    log.info("v3: loaded %s (%s Hz, hop %d)", weights, config.sampling_rate, module.hop)
    return module


def _load_v4(path: Path) -> nn.Module:
    payload = _read_torch_file(path)
    if isinstance(payload, dict) and "generator" in payload:
        raise UserError(f"{path} is a v3 (BigVGAN) checkpoint; use --vocoder v3")
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise UserError(f"{path} is not a plain state dict; expected GPT-SoVITS' v4 vocoder.pth")
    module = HiFiGAN()
    _load_strict(module, fold_weight_norm(payload), path)
    module.source = {"checkpoint": str(path), "sha256": sha256_of(path)}
    log.info("v4: loaded %s", path)
    return module


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load with exact key and shape matching, naming every mismatch in one line."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = [f"missing keys: {_listing(missing)}"] if missing else []
        parts += [f"unexpected keys: {_listing(unexpected)}"] if unexpected else []
        raise UserError(f"{path} does not match the {type(module).__name__} layout ({'; '.join(parts)}); "
                        "check --vocoder and that the file is the vocoder checkpoint")
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise UserError(f"{path} has tensors of the wrong shape ({_listing(wrong)}); check config.json")
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def _listing(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
