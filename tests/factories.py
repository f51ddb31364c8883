"""The one way tests make plans and manifests: the build stage's own make_manifest, so a test
manifest can never drift from what `python -m build` writes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from build.config import build_config
from build.manifest import BuildRecord, make_manifest
from build.network import ProfileShapes
from build.onnx_model import OnnxFacts, TensorSpec
from pipeline.settings import load_settings, profiles_for
from runtime.manifest import manifest_path

RTX_VERSION = "1.7.1.116"
TENSORRT_VERSION = "10.16.1.11"
RTX_TARGETS = ["SM75", "SM80", "SM86", "SM89", "SM120"]
RATES = {"v3": (24000, 256), "v4": (48000, 480)}


def profile_shapes(vocoder: str, n_mels: int = 100, profiles: Sequence[dict] | None = None) -> list[ProfileShapes]:
    """pipeline.toml's profiles of `vocoder`, or `profiles` given as {"name", "min", "opt", "max"} of [batch, frames]."""
    if profiles is None:
        return [ProfileShapes(p.name, *p.shapes(n_mels)) for p in profiles_for(load_settings(), vocoder)]
    return [ProfileShapes(p["name"], *((p[k][0], n_mels, p[k][1]) for k in ("min", "opt", "max"))) for p in profiles]


def write_plan(folder: Path, *, vocoder: str = "v4", precision: str = "fp16", backend: str = "tensorrt_rtx",
               version: str | None = None, plan_bytes: bytes = b"placeholder plan: never executed here",
               onnx_path: Path | None = None, profiles: Sequence[dict] | None = None, n_mels: int = 100,
               hop: int | None = None, sampling_rate: int | None = None, dtypes: tuple[str, str] = ("float32", "float32"),
               targets: list[str] | None = None, version_compatible: bool = False, hardware_compatibility: str = "none",
               name: str | None = None, **overrides) -> Path:
    """A plan file (`plan_bytes`) and its manifest beside it, as the build stage writes them; the
    manifest's entries can be replaced through `overrides` (to plant a bad field)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rate, default_hop = RATES.get(vocoder, (16000, 1))
    plan = folder / (name or f"{vocoder}.{precision}.plan")
    plan.write_bytes(plan_bytes)
    if onnx_path is None:
        onnx_path = folder / f"{plan.stem}.onnx"
        onnx_path.write_bytes(b"placeholder model")
    metadata = {"vocoder": vocoder, "sampling_rate": sampling_rate or rate, "hop": hop or default_hop, "n_mels": n_mels,
                "checkpoint": "synthetic-default", "checkpoint_sha256": "synthetic"}
    facts = OnnxFacts(metadata, TensorSpec("mel", dtypes[0], (-1, n_mels, -1)), TensorSpec("audio", dtypes[1], (-1, 1, -1)),
                      frozenset({dtypes[0]}))
    rtx = backend == "tensorrt_rtx"
    record = BuildRecord(builder="python", backend=backend, backend_version=version or (RTX_VERSION if rtx else TENSORRT_VERSION),
                         compute_capabilities=targets if targets is not None or not rtx else RTX_TARGETS,
                         hardware_compatibility=hardware_compatibility, version_compatible=version_compatible,
                         seconds=0.1, trtexec="trtexec --stronglyTyped")
    manifest = make_manifest(vocoder, precision, facts, profile_shapes(vocoder, n_mels, profiles),
                             build_config(load_settings()), record, onnx_path, plan, plan.name)
    manifest.update(overrides)
    # as JSON, not through runtime.manifest.manifest_text: that refuses the bad fields tests plant
    manifest_path(plan).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return plan
