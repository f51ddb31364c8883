"""Can this plan run here, and if not, why and what to do: the one place that decides.

The runtime asks before it loads a plan; validate (compare, bench, report) asks before it tries
one and falls back when the answer is no; `make doctor` asks about the plans the installed builder
would make. The decision itself is a pure function of the manifest, the GPU and the TensorRT
module in use, so it is tested without a GPU; `plan_blocker` adds the look at this machine.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional, Tuple

from runtime.errors import PlanNotRunnable, reason_of
from runtime.targets import AMPERE, Capability, described, parse_sm, rtx_supported, sm_name

BACKENDS = ("tensorrt", "tensorrt_rtx")
PIP_NAMES = {"tensorrt": "tensorrt", "tensorrt_rtx": "tensorrt-rtx"}
DISPLAY = {"tensorrt": "TensorRT", "tensorrt_rtx": "TensorRT-RTX"}
REBUILD = "rebuild it with `make engines`"
# full TensorRT's oldest GPU: Volta (7.0) up to 10.4, Turing (7.5) from 10.5 on (10.5 release notes)
VOLTA, TURING = (7, 0), (7, 5)
LAST_VOLTA_RELEASE = (10, 4)
# version-compatible plans across majors (TensorRT 11.4 support matrix): 8.6 and later 8.x load in
# 10, 10.x in 11; never two majors on (a TensorRT 8 plan does not load in 11)
NEXT_MAJOR = {8: 10, 10: 11}
FIRST_VERSION_COMPATIBLE = (8, 6)


@dataclass(frozen=True)
class Gpu:
    name: str
    capability: Capability

    @property
    def described(self) -> str:
        return f"{self.name} (compute capability {described(self.capability)})"


@dataclass(frozen=True)
class BackendInfo:
    """The TensorRT module of this process: its name, version and, for TensorRT-RTX, the compute
    capabilities it can build for (the GPUs it runs on at all)."""

    module: str
    version: str
    rtx_targets: Optional[Tuple[str, ...]] = None
    cuda_major: Optional[str] = None  # TensorRT-RTX: "cu12" or "cu13", the CUDA its wheel was built for


def parse_version(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in str(text).split(".") if part.isdigit())


def full_tensorrt_min_capability(version: str) -> Capability:
    """The oldest compute capability full TensorRT `version` runs on."""
    return VOLTA if parse_version(version)[:2] <= LAST_VOLTA_RELEASE else TURING


def why_not_runnable(manifest: dict, gpu: Optional[Gpu], backend: Optional[BackendInfo]) -> Optional[str]:
    """The reason (with its fix) that the plan of `manifest` cannot run on `gpu` with `backend`, or
    None when it can. `gpu` None: no usable GPU; `backend` None: the plan's module is not installed."""
    built_with, built_version = manifest["backend"], manifest["backend_version"]
    if backend is None:
        return (f"{DISPLAY[built_with]} is not installed here; pip install {PIP_NAMES[built_with]}=={built_version} "
                f"(the version the plan was built with)")
    if gpu is None:
        return "no usable CUDA GPU here; run on a machine with an NVIDIA GPU and its driver"
    if backend.module != built_with:
        return (f"the plan was built with {DISPLAY[built_with]} {built_version} but this process uses "
                f"{DISPLAY.get(backend.module, backend.module)} {backend.version}; pip install "
                f"{PIP_NAMES[built_with]}=={built_version}, or {REBUILD} with that backend")
    reason = (_rtx_gpu_problem if built_with == "tensorrt_rtx" else _full_gpu_problem)(manifest, gpu, backend)
    reason = reason or _cuda_major_problem(manifest, backend)
    return reason or _version_problem(built_with, built_version, backend.version, bool(manifest.get("version_compatible")))


def _rtx_gpu_problem(manifest: dict, gpu: Gpu, backend: BackendInfo) -> Optional[str]:
    """TensorRT-RTX runs a plan only on the compute capabilities it was built for, and only on those
    it can target at all (1.7: 7.5 to 12.1, A100 and GB10 included; not Hopper or SM100)."""
    here = sm_name(gpu.capability)
    supported = backend.rtx_targets
    if supported is not None and here not in supported:
        capabilities = ", ".join(described(parse_sm(target)) for target in supported)
        return (f"TensorRT-RTX plans do not run on {gpu.described}; rebuild with full TensorRT (`make engines` with "
                f"the tensorrt extra and build.backend = \"tensorrt\") or run on a GPU TensorRT-RTX "
                f"{backend.version} supports (compute capability {capabilities})")
    targets = manifest.get("compute_capabilities") or []
    if here in targets:
        return None
    return (f"the plan targets {', '.join(targets) or 'no GPU'}, not {gpu.described}; add {here} to "
            f"build.rtx_compute_capabilities in pipeline.toml and {REBUILD}")


def _full_gpu_problem(manifest: dict, gpu: Gpu, backend: BackendInfo) -> Optional[str]:
    """Full TensorRT plans run on the GPU model they were built on, or with `ampere_plus` on any
    Ampere or newer GPU."""
    oldest = full_tensorrt_min_capability(backend.version)
    if tuple(gpu.capability) < oldest:
        return (f"TensorRT {backend.version} does not run on {gpu.described}; use a GPU of compute capability "
                f"{described(oldest)} or newer"
                + (", or TensorRT 10.4 or older" if oldest > VOLTA and tuple(gpu.capability) >= VOLTA else ""))
    if manifest.get("hardware_compatibility") == "ampere_plus":
        if tuple(gpu.capability) < AMPERE:
            return f"the plan was built for Ampere and newer, not {gpu.described}; {REBUILD} on this machine"
        return None
    targets = manifest.get("compute_capabilities")
    if targets is not None and sm_name(gpu.capability) not in targets:
        return (f"the plan was built on a GPU of {', '.join(targets)}, not {gpu.described}; {REBUILD} on this "
                "machine, or set build.hardware_compatibility = \"ampere_plus\" for a plan that moves")
    return None


def _cuda_major_problem(manifest: dict, backend: BackendInfo) -> Optional[str]:
    """A TensorRT-RTX plan runs only under the CUDA major (cu12/cu13) of the wheel that built it;
    manifests written before this was recorded pass."""
    built, running = manifest.get("cuda_major"), backend.cuda_major
    if manifest["backend"] != "tensorrt_rtx" or not built or not running or built == running:
        return None
    return (f"the plan was built with tensorrt-rtx-{built} but tensorrt-rtx-{running} is installed here; "
            f"pip install tensorrt-rtx-{built}=={manifest['backend_version']}, or {REBUILD} with tensorrt-rtx-{running}")


def rtx_cuda_major() -> Optional[str]:
    """"cu13" or "cu12": the CUDA build of the installed TensorRT-RTX, told by its wheel's distribution
    (tensorrt_rtx_cu13_libs, tensorrt-rtx-cu12, ...); None when no such distribution is installed."""
    from importlib import metadata

    for major in ("cu13", "cu12"):
        for suffix in ("_libs", ""):
            try:
                metadata.version(f"tensorrt_rtx_{major}{suffix}")
            except metadata.PackageNotFoundError:
                continue
            return major
    return None


def _version_problem(backend: str, built: str, running: str, version_compatible: bool) -> Optional[str]:
    """Plans are tied to the exact version that built them (all four parts), except full-TensorRT
    version-compatible plans, which load in the same or a later version of their major, and in the
    next major where NVIDIA supports it (NEXT_MAJOR)."""
    built_v, running_v = parse_version(built), parse_version(running)
    fix = f"pip install {PIP_NAMES[backend]}=={built}, or {REBUILD} with the installed version"
    if version_compatible and backend == "tensorrt":
        if running_v < built_v:
            return (f"the version-compatible plan needs {DISPLAY[backend]} {built} or newer, this process has "
                    f"{running}; {fix}")
        if not _loads_across(built_v, running_v):
            return (f"the version-compatible plan was built with {DISPLAY[backend]} {built}; {DISPLAY[backend]} "
                    f"{running} does not load plans of that major (only 8.6+ plans in 10, 10.x plans in 11); {fix}")
        return None
    if built_v != running_v:
        return (f"the plan was built with {DISPLAY[backend]} {built}, this process has {running} "
                f"(plans are tied to their exact version); {fix}")
    return None


def _loads_across(built: Tuple[int, ...], running: Tuple[int, ...]) -> bool:
    """A version-compatible plan of `built` in the same or a later `running` version."""
    if running[:1] == built[:1]:
        return True
    return NEXT_MAJOR.get(built[0]) == running[0] and built[:2] >= FIRST_VERSION_COMPATIBLE


def check_runnable(manifest: dict, gpu: Optional[Gpu], backend: Optional[BackendInfo]) -> None:
    """Raise PlanNotRunnable with the reason unless the plan can run."""
    reason = why_not_runnable(manifest, gpu, backend)
    if reason:
        raise PlanNotRunnable(reason)


# --- this machine --------------------------------------------------------------------------------


def import_backend(module: str):
    """The TensorRT module a plan needs, or None when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def backend_of(trt) -> BackendInfo:
    """Describe an imported TensorRT module."""
    targets = tuple(rtx_supported(trt)) if trt.__name__ == "tensorrt_rtx" else None
    cuda_major = rtx_cuda_major() if trt.__name__ == "tensorrt_rtx" else None
    return BackendInfo(trt.__name__, trt.__version__, targets, cuda_major)


def installed_backend(module: str) -> Optional[BackendInfo]:
    """The TensorRT module a plan needs, described, or None when it is not installed."""
    trt = import_backend(module)
    return None if trt is None else backend_of(trt)


def gpu_here(device: int = 0) -> Gpu:
    """This process's GPU `device`, asked through the runtime's CUDA layer (EngineError if none)."""
    from runtime.cuda import cuda_layer

    name, capability = cuda_layer().device_properties(device)
    return Gpu(name, capability)


def plan_blocker(manifest: dict, device: int = 0) -> Optional[str]:
    """Why the plan of `manifest` cannot run on this machine's GPU `device`, or None."""
    trt = import_backend(manifest["backend"])
    if trt is None:
        return why_not_runnable(manifest, None, None)
    try:
        gpu = gpu_here(device)
    except Exception as error:  # noqa: BLE001 - no binding, no driver, no device: all mean "no GPU here"
        return f"no usable CUDA GPU {device} here ({reason_of(error)}); run on a machine with an NVIDIA GPU and its driver"
    return why_not_runnable(manifest, gpu, backend_of(trt))
