"""Load GPT-SoVITS vocoder checkpoints in their upstream layouts, strictly, or the synthetic default.

v3 (BigVGAN v2): a folder holding `config.json` and `bigvgan_generator.pt` = {"generator": state},
with weight norm as `weight_g`/`weight_v` pairs or already removed. v4: `vocoder.pth`, a plain state
dict saved after weight-norm removal. The layouts themselves (file names, weight norm, writers) are
vocoder_models/layouts.py's.

Everything a checkpoint claims is checked before it costs anything: the file is a regular file (not
a folder, a FIFO), config.json's sizes are built on torch's meta device (no memory) and compared with
the checkpoint's tensors before the real module is built, and every weight is finite (one NaN would
make every later measurement meaningless).
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.synthetic import synthetic_vocoder
from pipeline.errors import UserError
from pipeline.files import input_file, sha256_of
from pipeline.settings import VOCODERS
from runtime.errors import reason_of
from vocoder_models.layouts import V3_CONFIG, V3_WEIGHTS, fold_weight_norm
from vocoder_models.vocoders import BigVGAN, BigVGANConfig, HiFiGAN

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
    input_file(path, "checkpoint", "pass an existing file with --checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about a pickle's protocol before refusing it: the refusal is the line
            warnings.simplefilter("ignore")
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
    input_file(config_path, "BigVGAN config", f"BigVGAN needs its config.json beside {weights.name}")
    try:
        config = BigVGANConfig.from_json(json.loads(config_path.read_text(encoding="utf-8")))
        with torch.device("meta"):  # the layout config.json claims, without its memory
            layout = BigVGAN(config).state_dict()
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, RuntimeError) as error:
        raise UserError(f"{config_path} is not a usable BigVGAN v2 config ({reason_of(error)}); "
                        "use the config.json published with the weights") from None
    state = fold_weight_norm(payload["generator"])
    check_state(state, layout, weights, "BigVGAN")
    module = BigVGAN(config)
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    module.source = {"checkpoint": str(weights), "sha256": sha256_of(weights)}
    log.info("v3: loaded %s (%s Hz, hop %d)", weights, config.sampling_rate, module.hop)
    return module


def _load_v4(path: Path) -> nn.Module:
    if path.is_dir():
        raise UserError(_folder_given_for_v4(path))
    payload = _read_torch_file(path)
    if isinstance(payload, dict) and "generator" in payload:
        raise UserError(f"{path} is a v3 (BigVGAN) checkpoint; use --vocoder v3")
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise UserError(f"{path} is not a plain state dict; expected GPT-SoVITS' v4 vocoder.pth")
    module = HiFiGAN()
    state = fold_weight_norm(payload)
    check_state(state, module.state_dict(), path, "HiFiGAN")
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    module.source = {"checkpoint": str(path), "sha256": sha256_of(path)}
    log.info("v4: loaded %s", path)
    return module


def _folder_given_for_v4(path: Path) -> str:
    """What a folder given as the v4 checkpoint is, and the file to pass instead."""
    if (path / V3_WEIGHTS).exists():
        return (f"{path} is a BigVGAN v2 folder (the v3 vocoder: {V3_WEIGHTS} and {V3_CONFIG}); pass it with --vocoder v3 "
                "(CHECKPOINT_V3=...), or give --vocoder v4 GPT-SoVITS' v4 vocoder.pth file")
    inside = path / "vocoder.pth"
    if inside.exists():
        return f"{path} is a folder; pass the v4 checkpoint file inside it: --checkpoint {inside} (CHECKPOINT_V4={inside})"
    return (f"{path} is a folder, not a v4 checkpoint; pass GPT-SoVITS' v4 vocoder.pth file "
            "(gsv-v4-pretrained/vocoder.pth) with --checkpoint (CHECKPOINT_V4=...)")


def check_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path, layout: str) -> None:
    """Exact keys and shapes of `expected` (a module's state dict, real or on the meta device) and
    finite values, each mismatch named in one line."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = [f"missing keys: {_listing(missing)}"] if missing else []
        parts += [f"unexpected keys: {_listing(unexpected)}"] if unexpected else []
        raise UserError(f"{path} does not match the {layout} layout ({'; '.join(parts)}); "
                        "check --vocoder and that the file is the vocoder checkpoint")
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise UserError(f"{path} has tensors of the wrong shape ({_listing(wrong)}); check config.json")
    broken = [f"{k} ({int((~v.isfinite()).sum())} of {v.numel()})" for k, v in state.items()
              if v.is_floating_point() and not bool(v.isfinite().all())]
    if broken:
        raise UserError(f"{path} has NaN or Inf weights in {_listing(broken)}; the checkpoint is damaged "
                        "(or its training diverged): re-download it or use another one")


def _listing(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
