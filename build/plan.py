"""One plan from one ONNX model: check the inputs, build with the Python builder or trtexec, then
put the plan and its manifest in place so that a manifest never describes another plan than the
one beside it (see `build_plan` for the order and what a crash leaves)."""
from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path
from typing import Any

from build.backend import LoadedBackend, full_tensorrt_targets, load_backend
from build.config import BUILDERS, BuildConfig, build_config
from build.manifest import BuildRecord, make_manifest
from build.network import ProfileShapes, build_serialized
from build.onnx_model import OnnxFacts, inspect_onnx
from build.trtexec import require_trtexec, run_trtexec, trtexec_command
from pipeline.errors import UserError
from pipeline.files import atomic_output
from pipeline.settings import check_precision, profiles_for
from runtime.manifest import manifest_path, manifest_text
from runtime.runnable import rtx_cuda_major

log = logging.getLogger("build")


def build_plan(onnx_path: str | Path, vocoder: str, precision: str, output: str | Path, *,
               builder: str = "python", backend: str | None = None,
               settings: dict[str, Any]) -> Path:
    """Build `output` (a .plan) and its manifest (.json beside it) from `onnx_path`.

    Both are written to temporary files first. Then the old manifest is deleted, the new plan
    renamed into place and the new manifest last, so the manifest (which carries the plan's size
    and sha256) is the mark of a finished build: a crash before the deletion leaves the old pair, a
    crash after it a plan without a manifest, which every reader refuses (runtime.read_manifest) and
    `make engines`, whose target is the manifest, rebuilds. An error before the deletion (a build
    that fails, bad input) leaves the old pair as it was and no partial file.

    `backend` overrides [build] backend; `settings` is pipeline.toml's, as the command loaded it (tests
    pass small profiles).
    """
    onnx_type = check_precision(settings, precision)["onnx_type"]
    config = build_config(settings)
    output = Path(output)
    if output.suffix != ".plan":
        raise UserError(f"output {output} must end in .plan (the manifest is written beside it as .json)")
    if builder not in BUILDERS:
        raise UserError(f"unknown builder {builder!r}; use {' or '.join(BUILDERS)}")
    facts = inspect_onnx(onnx_path, vocoder, onnx_type, settings["tensors"])
    n_mels = facts.metadata["n_mels"]
    profiles = [ProfileShapes(p.name, *p.shapes(n_mels)) for p in profiles_for(settings, vocoder)]
    loaded_backend = None  # the inputs are checked first: their problems show without any TensorRT
    if builder == "python":
        loaded_backend = load_backend(backend or config.backend)
    else:
        require_trtexec(config.trtexec)
    _announce(vocoder, precision, facts, onnx_path)
    trtexec_line = trtexec_command(config.trtexec, onnx_path, output, profiles, facts.input.name, config)

    with atomic_output(manifest_path(output), (onnx_path,)) as tmp_manifest, atomic_output(output, (onnx_path,)) as tmp_plan:
        started = time.perf_counter()
        if loaded_backend is not None:
            how = _build_with_python(loaded_backend, onnx_path, tmp_plan, profiles, facts, config)
        else:
            how = _build_with_trtexec(onnx_path, tmp_plan, profiles, facts, config)
        record = BuildRecord(builder=builder, seconds=time.perf_counter() - started,
                             trtexec=shlex.join(trtexec_line), **how)
        manifest = make_manifest(vocoder, precision, facts, profiles, config, record, onnx_path,
                                 tmp_plan, output.name)
        tmp_manifest.write_text(manifest_text(manifest), encoding="utf-8")
        manifest_path(output).unlink(missing_ok=True)
        # leaving the block renames the plan, then the manifest (context managers exit in reverse order)
    log.info("%s %s: wrote %s (%.1f MB, %s %s, %.1f s) and %s", vocoder, precision, output,
             manifest["plan"]["size"] / 1e6, record.backend, record.backend_version, record.seconds,
             manifest_path(output).name)
    return output


def _build_with_python(backend: LoadedBackend, onnx_path, tmp_plan: Path, profiles, facts: OnnxFacts,
                       config: BuildConfig) -> dict:
    built = build_serialized(backend, onnx_path, profiles, facts.input.name, config)
    with open(tmp_plan, "wb") as stream:
        stream.write(memoryview(built.serialized))
    return {"backend": backend.name, "backend_version": backend.version,
            "cuda_major": rtx_cuda_major() if backend.name == "tensorrt_rtx" else None,
            "compute_capabilities": built.compute_capabilities,
            "hardware_compatibility": built.hardware_compatibility, "version_compatible": built.version_compatible}


def _build_with_trtexec(onnx_path, tmp_plan: Path, profiles, facts: OnnxFacts, config: BuildConfig) -> dict:
    version = run_trtexec(trtexec_command(config.trtexec, onnx_path, tmp_plan, profiles, facts.input.name, config))
    if tmp_plan.stat().st_size == 0:
        raise UserError(f"trtexec reported success but wrote no plan to {tmp_plan}; run the trtexec line by hand")
    return {"backend": "tensorrt", "backend_version": version,
            "compute_capabilities": full_tensorrt_targets(config.hardware_compatibility),
            "hardware_compatibility": config.hardware_compatibility, "version_compatible": config.version_compatible}


def _announce(vocoder: str, precision: str, facts: OnnxFacts, onnx_path) -> None:
    if facts.synthetic:
        log.warning("%s %s: BUILDING FROM SYNTHETIC WEIGHTS (checkpoint %r): this engine makes noise, not speech; "
                    "pass CHECKPOINT_%s=... to make engines for a real checkpoint", vocoder, precision,
                    facts.metadata["checkpoint"], vocoder.upper())
    else:
        log.info("%s %s: building from %s (checkpoint %s, sha256 %s)", vocoder, precision, onnx_path,
                 facts.metadata["checkpoint"], facts.metadata["checkpoint_sha256"][:12])
