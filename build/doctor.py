"""`python -m build doctor`: what is installed here and whether its plans can run on this machine's GPUs.

The GPU is asked through the runtime's driver probe (runtime.cuda.driver_state), so the check
needs neither torch, a CUDA binding nor the CUDA toolkit, and tells the truth on machines without
a GPU. Whether plans can run is the runtime's decision (runtime/runnable.py): the doctor asks it
about the plans this machine's builder would make.
"""
from __future__ import annotations

import importlib
import shutil
import sys

from build.backend import AUTO_ORDER, TITLES, LoadedBackend, installed_backends, load_backend, pip_install_hint
from build.config import BuildConfig, build_config
from pipeline.errors import UserError
from runtime import cuda, runnable
from runtime.cuda import DriverGpu, DriverState
from runtime.targets import chosen_rtx_targets, described, rtx_supported, sm_name


def _backend_versions() -> dict[str, str]:
    versions = {}
    for name in AUTO_ORDER:
        if name not in installed_backends():
            versions[name] = "not installed"
            continue
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError as error:
            versions[name] = f"installed but does not load ({error})"
    return versions


def doctor_rows(settings: dict) -> list[tuple[str, str]]:
    """(label, finding) rows: backends, the one `make engines` uses, CUDA driver, GPUs, and verdicts."""
    config = build_config(settings)
    rows = [("python", f"{sys.version.split()[0]} ({sys.executable})")]
    rows += [(f"{name} ({TITLES[name]})", version) for name, version in _backend_versions().items()]
    rows.append(("trtexec", shutil.which(config.trtexec) or f"{config.trtexec} not on PATH (only for BUILDER=trtexec)"))
    rows.append(("CUDA binding (runtime)", cuda_binding_finding()))
    try:
        backend = load_backend(config.backend)
    except UserError as error:
        rows.append(("make engines uses", f"nothing: {error}"))
        return rows + _cuda_rows(cuda.driver_state(), None, config)
    if backend.is_rtx:
        used = f"{backend.name} {backend.version}, plans for {', '.join(rtx_targets(backend, config))} (builds without a GPU)"
    else:
        used = f"{backend.name} {backend.version}, plans for the GPU it builds on (needs a GPU to build)"
    rows.append(("make engines uses", f"{used} ([build] backend = {config.backend})"))
    return rows + _cuda_rows(cuda.driver_state(), backend, config)


def cuda_binding_finding() -> str:
    """Which CUDA binding the runtime would use, and how to get the other."""
    installed = cuda.available_bindings()
    missing = [name for name in cuda.BINDINGS if name not in installed]
    if not installed:
        return f"none: {cuda.INSTALL['cuda-bindings']} (or {cuda.INSTALL['pycuda']})"
    other = f"; the other: {cuda.INSTALL[missing[0]]}" if missing else f"; {', '.join(installed)} installed"
    return f"{cuda.chosen_binding()} (set {cuda.BINDING_VARIABLE} to choose){other}"


def rtx_targets(backend: LoadedBackend, config: BuildConfig) -> list[str]:
    supported = rtx_supported(backend.trt)
    return [t for t in chosen_rtx_targets(supported, config.rtx_compute_capabilities) if t in supported]


def planned_manifest(backend_name: str, version: str, targets: list[str] | None, config: BuildConfig) -> dict:
    """The part of a manifest that says where a plan built here with this config would run."""
    return {"backend": backend_name, "backend_version": version, "compute_capabilities": targets,
            "hardware_compatibility": config.hardware_compatibility if backend_name == "tensorrt" else "none",
            "version_compatible": config.version_compatible and backend_name == "tensorrt"}


def plan_verdict(backend: LoadedBackend | None, config: BuildConfig, gpu: DriverGpu) -> str:
    """The runtime's verdict on the plans this machine would build, run on `gpu`."""
    here = runnable.Gpu(gpu.name, gpu.capability)
    if backend is None:  # nothing installed yet: what full TensorRT, which runs on every supported GPU, would do
        manifest = planned_manifest("tensorrt", "10", [sm_name(gpu.capability)], config)
        reason = runnable.why_not_runnable(manifest, here, runnable.BackendInfo("tensorrt", "10"))
        return f"NO backend installed; {reason or 'full TensorRT would run here: ' + pip_install_hint('tensorrt')}"
    if backend.is_rtx:
        targets = rtx_targets(backend, config)
    else:
        targets = None if config.hardware_compatibility == "ampere_plus" else [sm_name(gpu.capability)]
    manifest = planned_manifest(backend.name, backend.version, targets, config)
    reason = runnable.why_not_runnable(manifest, here, runnable.backend_of(backend.trt))
    return f"NO: {reason}" if reason else f"yes: {backend.title} plans built here run on {here.described}"


def _cuda_rows(state: DriverState, backend: LoadedBackend | None, config: BuildConfig) -> list[tuple[str, str]]:
    rows = [("CUDA driver", state.driver or "none")]
    if not state.gpus:
        rows.append(("GPU", f"none: {state.note}"))
        if backend is not None and backend.is_rtx:
            rows.append(("run plans here", "no (no GPU); TensorRT-RTX still builds plans here ahead of time: "
                         "run them on a machine where `make doctor` says yes"))
        elif backend is not None:
            rows.append(("run plans here", "no (no GPU); full TensorRT cannot build or run without one: use "
                         f"TensorRT-RTX to build here ({pip_install_hint('tensorrt_rtx')}, --backend tensorrt_rtx)"))
        return rows
    for gpu in state.gpus:
        rows.append((f"GPU {gpu.index}", f"{gpu.name}, compute capability {described(gpu.capability)}"))
        rows.append((f"run plans on GPU {gpu.index}", plan_verdict(backend, config, gpu)))
    return rows


def print_report(settings: dict) -> int:
    rows = doctor_rows(settings)
    width = max(len(label) for label, _ in rows)
    for label, finding in rows:
        print(f"{label:<{width}}  {finding}")
    return 0
