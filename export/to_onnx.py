"""PyTorch vocoder to ONNX with dynamic batch and frames, checked against PyTorch in ONNX Runtime.

The TorchScript exporter (`dynamo=False`) is used on purpose: it gives the same graph on torch
2.11 and 2.13 and takes plain `dynamic_axes`. It leaves expressions of parameters alone (filter
expansions, Snake's exp terms stay nodes of the graph); `export.clean` folds them with
onnx-graphsurgeon. Facts downstream stages need (vocoder, sample rate, hop, mel bands, where the
weights came from) travel in the model's metadata_props.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnx
import torch
from torch import nn

from export.float64 import float64_evaluation
from export.reach import stream_metadata
from pipeline.errors import UserError
from pipeline.files import atomic_output
from pipeline.onnx_metadata import update_metadata
from pipeline.onnx_tools import cpu_session, run_audio
from pipeline.quality import max_error_over_peak, within_float32_noise
from vocoder_models.mels import sample_mel

log = logging.getLogger("export")


def onnx_from_module(module: nn.Module, vocoder: str, output: str | Path, *, settings: dict[str, Any],
                     measure_stream: bool = True, inputs: Iterable[str | Path] = ()) -> Path:
    """Export `module` to `output`, carrying the pipeline's metadata; the file appears only once
    ONNX Runtime has passed the parity oracle at each of `[export] verify_cases`. `measure_stream`
    adds the reach and stream setting (export/reach.py); only models that never stream skip it.
    `inputs` (the checkpoint's files) are never overwritten."""
    names = settings["tensors"]
    example = torch.from_numpy(sample_mel(vocoder, frames=32, n_mels=module.num_mels))
    output = Path(output)
    with atomic_output(output, inputs) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), str(tmp),
            dynamo=False,
            opset_version=settings["export"]["opset"],
            input_names=[names["input"]], output_names=[names["output"]],
            dynamic_axes={names["input"]: {0: "batch", 2: "frames"},
                          names["output"]: {0: "batch", 2: "samples"}},
            do_constant_folding=True,
        )
        model = onnx.load(str(tmp))
        update_metadata(model, {
            "vocoder": vocoder,
            "sampling_rate": module.sampling_rate,
            "hop": module.hop,
            "n_mels": module.num_mels,
            "checkpoint": module.source["checkpoint"],
            "checkpoint_sha256": module.source["sha256"],
            "torch_version": torch.__version__,
            **(stream_metadata(module, vocoder, settings["stream"]["snr_min_db"]) if measure_stream else {}),
        })
        onnx.save(model, str(tmp))
        verify_export(module, vocoder, tmp, settings)
    log.info("%s: wrote %s (%d nodes)%s", vocoder, output, len(model.graph.node),
             " from SYNTHETIC weights" if module.source["sha256"] == "synthetic" else "")
    return output


def pytorch_audio(module: nn.Module, mel: np.ndarray) -> np.ndarray:
    """The module's audio for `mel`, computed in the module's own dtype (float32 or float64)."""
    dtype = next(module.parameters()).dtype
    with torch.no_grad():
        return module(torch.from_numpy(mel).to(dtype)).numpy()


def verify_export(module: nn.Module, vocoder: str, onnx_path: str | Path,
                  settings: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The parity oracle of export: ONNX Runtime and PyTorch float32 both against float64 PyTorch.

    A float32 vocoder is only as exact as float32 lets it be: on checkpoints with large gains
    (activations in the thousands feeding Snake's sin) PyTorch float32 itself strays past 1e-4 of
    peak from the float64 truth, and ONNX Runtime, rounding in another order, strays as far the
    other way. So each (batch, frames) of `[export] verify_cases` measures both against the module
    evaluated in float64 on the same mel, and the export is refused (one line naming the case) only
    when ONNX Runtime is beyond `parity_rel_tol` AND more than `parity_noise_margin` times as far
    from the truth as PyTorch float32 is: then the graph, not float32, is what differs.
    """
    config = settings["export"]
    session = cpu_session(Path(onnx_path))
    mels = {(batch, frames): sample_mel(vocoder, frames, batch=batch, seed=config["mel_seed"], n_mels=module.num_mels)
            for batch, frames in config["verify_cases"]}
    float32 = {case: pytorch_audio(module, mel) for case, mel in mels.items()}
    onnx_audio = {case: run_audio(session, mel) for case, mel in mels.items()}
    with float64_evaluation(module):
        truths = {case: pytorch_audio(module, mel) for case, mel in mels.items()}
    errors = {}
    for (batch, frames), mel in mels.items():
        truth, candidate = truths[batch, frames], onnx_audio[batch, frames]
        if candidate.shape != truth.shape:
            raise UserError(f"ONNX output shape {candidate.shape} differs from PyTorch's {truth.shape} for a mel of "
                            f"shape {mel.shape}; report this export")
        onnx_error = max_error_over_peak(truth, candidate)
        torch_error = max_error_over_peak(truth, float32[batch, frames])
        errors[f"{batch}x{frames}"] = {"onnx_runtime": onnx_error, "pytorch_float32": torch_error}
        if not within_float32_noise(onnx_error, torch_error, config["parity_rel_tol"], config["parity_noise_margin"]):
            raise UserError(f"{onnx_path}: ONNX Runtime is {onnx_error:.2e} of peak from float64 PyTorch at batch {batch}, "
                            f"{frames} frames, PyTorch float32 only {torch_error:.2e} (allowed: {config['parity_rel_tol']:.0e}, "
                            f"or {config['parity_noise_margin']:g}x PyTorch float32's error); report this export")
    log.info("%s: ONNX Runtime is within %.1e of peak of float64 PyTorch, PyTorch float32 within %.1e (over %s)",
             vocoder, max(e["onnx_runtime"] for e in errors.values()),
             max(e["pytorch_float32"] for e in errors.values()), ", ".join(errors))
    return errors
