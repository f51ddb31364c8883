"""The manifest written beside each plan: everything the runtime may trust about it (docs/design/architecture.md).

Its contract (format, path, schema, text) is runtime/manifest.py's; this module fills it in from
what the build knows.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from build.config import BuildConfig
from build.network import ProfileShapes
from build.onnx_model import OnnxFacts
from pipeline.files import sha256_of
from runtime.manifest import FORMAT, STREAM_KEYS


@dataclass(frozen=True)
class BuildRecord:
    """How a plan was made: by which builder and backend, for which GPUs, in how long."""

    builder: str                               # "python" or "trtexec"
    backend: str
    backend_version: str
    compute_capabilities: list[str] | None
    hardware_compatibility: str
    version_compatible: bool
    seconds: float
    trtexec: str                               # the equivalent trtexec command line
    cuda_major: str | None = None              # TensorRT-RTX: "cu12"/"cu13" of the wheel that built it


def make_manifest(vocoder: str, precision: str, facts: OnnxFacts, profiles: Sequence[ProfileShapes],
                  config: BuildConfig, record: BuildRecord, onnx_path: str | Path, plan_file: Path,
                  plan_name: str) -> dict:
    """The manifest of `plan_file` (its size and sha256 are read from the file itself)."""
    meta = facts.metadata
    return {
        "format": FORMAT,
        "vocoder": vocoder, "precision": precision,
        "backend": record.backend, "backend_version": record.backend_version, "cuda_major": record.cuda_major,
        "sampling_rate": meta["sampling_rate"], "hop": meta["hop"], "n_mels": meta["n_mels"],
        **{key: meta[key] for key in STREAM_KEYS if key in meta},
        "input": facts.input.as_dict(),
        "output": facts.output.as_dict(),
        "profiles": [{"name": p.name, "min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for p in profiles],
        "compute_capabilities": record.compute_capabilities,
        "hardware_compatibility": record.hardware_compatibility,
        "version_compatible": record.version_compatible,
        "rtx_kernel_specialization": config.rtx_kernel_specialization,
        "workspace_bytes": config.workspace_bytes, "optimization_level": config.optimization_level,
        "onnx": {"path": str(onnx_path), "sha256": sha256_of(onnx_path)},
        "checkpoint": {"source": meta["checkpoint"], "sha256": meta["checkpoint_sha256"]},
        "synthetic": facts.synthetic,
        "plan": {"file": plan_name, "size": plan_file.stat().st_size, "sha256": sha256_of(plan_file)},
        "build_seconds": round(record.seconds, 2), "builder": record.builder,
        "trtexec": record.trtexec,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }

