"""`python -m build doctor`: what is installed here and whether its plans can run on this machine's GPUs.

The GPU is asked through the CUDA driver library itself (ctypes on libcuda), so the check needs
neither torch nor the CUDA toolkit, and tells the truth on machines without a GPU.
"""
from __future__ import annotations

import ctypes
import importlib
import shutil
import sys
from dataclasses import dataclass

from build.backend import (AUTO_ORDER, TITLES, execution_verdict, installed_backends, load_backend,
                           pip_install_hint, rtx_compute_capabilities, sm_name)
from build.config import build_config
from pipeline.errors import UserError
from pipeline.settings import load_settings

CUDA_LIBRARIES = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    capability: tuple[int, int]


@dataclass(frozen=True)
class CudaState:
    driver: str | None   # CUDA driver API version, e.g. "12.4"; None without a driver
    gpus: list[Gpu]
    note: str            # why there is no driver or no GPU


def cuda_state() -> CudaState:
    """The CUDA driver version and the visible GPUs, read through libcuda."""
    lib = None
    for name in CUDA_LIBRARIES:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return CudaState(None, [], "no CUDA driver (libcuda not found): no NVIDIA GPU usable on this machine")
    version = ctypes.c_int()
    lib.cuDriverGetVersion(ctypes.byref(version))
    driver = f"{version.value // 1000}.{version.value % 1000 // 10}"
    status = lib.cuInit(0)
    if status != 0:
        return CudaState(driver, [], f"the CUDA driver sees no usable GPU (cuInit error {status})")
    count = ctypes.c_int()
    lib.cuDeviceGetCount(ctypes.byref(count))
    return CudaState(driver, [_gpu(lib, index) for index in range(count.value)], "")


def full_tensorrt_targets(hardware_compatibility: str) -> list[str] | None:
    """What a full-TensorRT plan built here runs on: the build GPU's compute capability, unless it
    was built Ampere-plus (then any Ampere or newer GPU; None, and the runtime lets TensorRT judge)."""
    gpus = cuda_state().gpus
    if hardware_compatibility == "ampere_plus" or not gpus:
        return None
    return [sm_name(gpus[0].capability)]


def _gpu(lib, index: int) -> Gpu:
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    lib.cuDeviceGet(ctypes.byref(device), index)
    name = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(name, len(name), device)
    lib.cuDeviceGetAttribute(ctypes.byref(major), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device)
    lib.cuDeviceGetAttribute(ctypes.byref(minor), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)
    return Gpu(index, name.value.decode(errors="replace"), (major.value, minor.value))


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


def doctor_rows() -> list[tuple[str, str]]:
    """(label, finding) rows: backends, the one `make engines` uses, CUDA driver, GPUs, and verdicts."""
    config = build_config(load_settings())
    rows = [("python", f"{sys.version.split()[0]} ({sys.executable})")]
    rows += [(f"{name} ({TITLES[name]})", version) for name, version in _backend_versions().items()]
    rows.append(("trtexec", shutil.which(config.trtexec) or f"{config.trtexec} not on PATH (only for BUILDER=trtexec)"))
    try:
        backend = load_backend(config.backend)
    except UserError as error:
        rows.append(("make engines uses", f"nothing: {error}"))
        return rows + _cuda_rows(cuda_state(), None, None, None)
    supported = targets = None
    if backend.is_rtx:
        supported = rtx_compute_capabilities(backend.trt)
        targets = supported if config.rtx_compute_capabilities == "all" else \
            [t for t in config.rtx_compute_capabilities if t in supported]
        used = f"{backend.name} {backend.version}, plans for {', '.join(targets)} (builds without a GPU)"
    else:
        used = f"{backend.name} {backend.version}, plans for the GPU it builds on (needs a GPU to build)"
    rows.append(("make engines uses", f"{used} ([build] backend = {config.backend})"))
    return rows + _cuda_rows(cuda_state(), backend.name, supported, targets)


def _cuda_rows(state: CudaState, backend_name: str | None, rtx_supported: list[str] | None,
               rtx_targets: list[str] | None) -> list[tuple[str, str]]:
    rows = [("CUDA driver", state.driver or "none")]
    if not state.gpus:
        rows.append(("GPU", f"none: {state.note}"))
        if backend_name == "tensorrt_rtx":
            rows.append(("run plans here", "no (no GPU); TensorRT-RTX still builds plans here ahead of time: "
                         "run them on a machine where `make doctor` says yes"))
        elif backend_name == "tensorrt":
            rows.append(("run plans here", "no (no GPU); full TensorRT cannot build or run without one: use "
                         f"TensorRT-RTX to build here ({pip_install_hint('tensorrt_rtx')}, --backend tensorrt_rtx)"))
        return rows
    for gpu in state.gpus:
        rows.append((f"GPU {gpu.index}", f"{gpu.name}, compute capability {gpu.capability[0]}.{gpu.capability[1]}"))
        if backend_name is not None:
            ok, reason = execution_verdict(backend_name, gpu.capability, rtx_supported, rtx_targets)
            rows.append((f"run plans on GPU {gpu.index}", f"{'yes' if ok else 'NO'}: {reason}"))
        else:  # nothing installed yet: say what full TensorRT, which runs on every supported GPU, would do
            ok, reason = execution_verdict("tensorrt", gpu.capability)
            rows.append((f"run plans on GPU {gpu.index}", f"NO backend installed; {reason}" +
                         (f": install it with {pip_install_hint('tensorrt')}" if ok else "")))
    return rows


def print_report() -> int:
    rows = doctor_rows()
    width = max(len(label) for label, _ in rows)
    for label, finding in rows:
        print(f"{label:<{width}}  {finding}")
    return 0
