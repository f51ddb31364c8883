"""Which TensorRT plan on disk serves GPT-SoVITS, and why not: the plan's manifest against the
engine GPT-SoVITS asks for (weights, precision, batch, the GPU it runs on), and the command that
builds the right one. Engines are never built inside GPT-SoVITS."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import UserError
from pipeline.files import sha256_of
from pipeline.settings import VOCODERS
from runtime import runnable
from runtime.errors import RuntimeUserError
from runtime.manifest import read_manifest
from runtime.targets import parse_sm, sm_name
from serving.gpt_sovits.options import EngineRequest

# what `python -m serving.gpt_sovits build` needs beyond GPT-SoVITS' own packages (the pipeline extra)
PIPELINE_MODULES = ("onnx", "onnx_graphsurgeon", "onnxruntime", "tensorrt_rtx")


def rebuild_reasons(manifest: dict[str, Any] | None, request: EngineRequest,
                    checkpoint_sha256: str | None = None) -> list[str]:
    """Why the engine on disk does not serve `request` (empty: it does)."""
    if manifest is None:
        return ["no engine built yet"]
    wanted = {"vocoder": request.vocoder, "precision": request.precision, "workspace_bytes": request.workspace_bytes}
    reasons = [f"{key} {manifest.get(key)!r} instead of {value!r}"
               for key, value in wanted.items() if manifest.get(key) != value]
    if request.max_batch is not None:
        batches = sorted({profile["max"][0] for profile in manifest.get("profiles", [])})
        if batches != [request.max_batch]:
            reasons.append(f"profile max batch {batches} instead of {request.max_batch}")
    if checkpoint_sha256 and manifest.get("checkpoint", {}).get("sha256") != checkpoint_sha256:
        reasons.append("built from other vocoder weights than GPT-SoVITS loads")
    if request.gpu_target:  # the runtime's decision, for the GPU GPT-SoVITS runs on
        here = runnable.Gpu("this GPU", parse_sm(request.gpu_target))
        blocker = runnable.why_not_runnable(manifest, here, runnable.installed_backend(manifest["backend"]))
        if blocker:
            reasons.append(blocker)
    return reasons


def gpt_sovits_checkpoint(settings: dict[str, Any], vocoder: str) -> Path:
    """Where GPT-SoVITS loads the vocoder from, relative to its folder (the working directory)."""
    return Path.cwd() / settings["serving"]["gpt_sovits"]["checkpoints"][vocoder]


def checkpoint_sha256(checkpoint: Path) -> str | None:
    """The hash the export stage records for this checkpoint (v3: the .pt in the BigVGAN folder)."""
    from vocoder_models.layouts import V3_WEIGHTS

    weights = checkpoint / V3_WEIGHTS if checkpoint.is_dir() else checkpoint
    return sha256_of(weights) if weights.is_file() else None


def build_command(settings: dict[str, Any]) -> str:
    """The command that builds engines from the vocoder checkpoints this GPT-SoVITS loads: the
    launcher's `build` where this Python can run the pipeline (GPT-SoVITS' 3.11 bundle can, once the
    pipeline extra is installed), else `make engines` on a machine with the pipeline, from these
    checkpoints, with its engines/ copied here afterwards."""
    if sys.version_info >= (3, 11) and all(importlib.util.find_spec(name) for name in PIPELINE_MODULES):
        return f"{Path(sys.executable).name} -m serving.gpt_sovits build"
    v3, v4 = (gpt_sovits_checkpoint(settings, vocoder) for vocoder in VOCODERS)
    return f'make engines CHECKPOINT_V3="{v3}" CHECKPOINT_V4="{v4}"'


def load_runtime_engine(plan: Path, device: int = 0):
    """The standalone runtime's engine for `plan` on CUDA device `device` (imported here: it needs
    TensorRT and a GPU)."""
    from runtime import load_engine

    return load_engine(plan, device=device)


def gpu_target(device) -> str | None:
    """"SM86" for the CUDA device GPT-SoVITS runs on; None when it runs on the CPU."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return sm_name(torch.cuda.get_device_capability(device_index(device)))


def device_index(device) -> int:
    """The CUDA device index GPT-SoVITS runs on (`tts.configs.device`: "cuda", "cuda:1" or a torch.device)."""
    device = torch.device(device)
    if device.type != "cuda":
        return 0
    return device.index if device.index is not None else torch.cuda.current_device()


def readable_manifest(plan: Path) -> dict[str, Any] | None:
    """The plan's manifest, or None when there is no usable one (then the engine is rebuilt)."""
    try:
        return read_manifest(plan)
    except RuntimeUserError:
        return None


def check_engine(engine, version: str, expected: tuple[int, int] | None) -> None:
    """The engine must make the audio GPT-SoVITS expects from this vocoder (rate and hop)."""
    if expected is not None and (engine.sampling_rate, engine.hop) != tuple(expected):
        raise UserError(f"engine makes {engine.sampling_rate} Hz with hop {engine.hop}, GPT-SoVITS {version} "
                        f"expects {expected[0]} Hz with hop {expected[1]}")
