"""PyTorch vocoder to ONNX with dynamic batch and frames, checked against PyTorch in ONNX Runtime.

The TorchScript exporter (`dynamo=False`) is used on purpose: it gives the same graph on torch
2.11 and 2.13, folds parameter-only expressions (filter expansions, Snake's exp terms) into
constants, and takes plain `dynamic_axes`. Facts downstream stages need (vocoder, sample rate,
hop, mel bands, where the weights came from) travel in the model's metadata_props.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from export.mels import sample_mel
from export.reach import stream_metadata
from pipeline.errors import UserError
from pipeline.files import atomic_output
from pipeline.onnx_metadata import update_metadata
from pipeline.settings import load_settings

log = logging.getLogger("export")


def onnx_from_module(module: nn.Module, vocoder: str, output: str | Path,
                     verify_cases: tuple[tuple[int, int], ...] = ((1, 7), (1, 64), (2, 100)),
                     measure_stream: bool = True) -> Path:
    """Export `module` to `output`, carrying the pipeline's metadata; the file appears only once
    ONNX Runtime has matched PyTorch at each (batch, frames) of `verify_cases`. `measure_stream`
    adds the reach and stream setting (export/reach.py); only models that never stream skip it."""
    settings = load_settings()
    names = settings["tensors"]
    example = torch.from_numpy(sample_mel(vocoder, frames=32))
    output = Path(output)
    with atomic_output(output) as tmp, warnings.catch_warnings():
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
            **(stream_metadata(module, vocoder) if measure_stream else {}),
        })
        onnx.save(model, str(tmp))
        verify_export(module, vocoder, tmp, verify_cases)
    log.info("%s: wrote %s (%d nodes)%s", vocoder, output, len(model.graph.node),
             " from SYNTHETIC weights" if module.source["sha256"] == "synthetic" else "")
    return output


def parity_error(module: nn.Module, onnx_path: str | Path, mel: np.ndarray) -> float:
    """Max abs difference between ONNX Runtime (CPU) and PyTorch, relative to PyTorch's peak."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = load_settings()["tensors"]
    (actual,) = session.run([names["output"]], {names["input"]: mel})
    with torch.no_grad():
        expected = module(torch.from_numpy(mel)).numpy()
    if actual.shape != expected.shape:
        raise AssertionError(f"ONNX output shape {actual.shape} != PyTorch {expected.shape}")
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def verify_export(module: nn.Module, vocoder: str, onnx_path: str | Path,
                  cases: tuple[tuple[int, int], ...] = ((1, 64),)) -> dict[str, float]:
    """Check parity at each (batch, frames); raise UserError naming the first case over tolerance."""
    tolerance = load_settings()["export"]["parity_rel_tol"]
    errors = {}
    for batch, frames in cases:
        error = parity_error(module, onnx_path, sample_mel(vocoder, frames, batch=batch, seed=frames))
        errors[f"{batch}x{frames}"] = error
        if not error <= tolerance:
            raise UserError(f"{onnx_path}: ONNX Runtime differs from PyTorch by {error:.2e} of peak at batch "
                            f"{batch}, {frames} frames (tolerance {tolerance:.0e}); report this export")
    log.info("%s: ONNX Runtime matches PyTorch (max error %.1e of peak over %s)", vocoder,
             max(errors.values()), ", ".join(errors))
    return errors
