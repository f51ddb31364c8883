"""The TensorRT Python builder: ONNX -> strongly typed network -> profiles and config -> serialized plan.

One code path for both backends. What differs: TensorRT-RTX builds ahead of time for a list of
compute capabilities (no GPU needed, no timing cache: a timing cache would make it query a GPU);
full TensorRT builds for the GPU it runs on, reuses a timing cache, and can be asked for hardware-
and version-compatible plans.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from build.backend import LoadedBackend, full_tensorrt_targets, progress_bars
from build.config import BuildConfig
from pipeline.errors import UserError
from pipeline.files import atomic_output
from runtime.errors import interrupts_held
from runtime.targets import chosen_rtx_targets, rtx_supported
from runtime.tensorrt_log import tensorrt_logger

log = logging.getLogger("build")

HARDWARE_LEVELS = {"none": "NONE", "ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}


@dataclass(frozen=True)
class ProfileShapes:
    """One optimization profile of the mel input, as full (batch, n_mels, frames) shapes."""

    name: str
    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]


@dataclass(frozen=True)
class BuiltPlan:
    serialized: object                         # the backend's IHostMemory (buffer protocol)
    compute_capabilities: list[str] | None     # GPUs the plan runs on (full TensorRT: the build GPU; None: any Ampere+)
    hardware_compatibility: str
    version_compatible: bool


def parse_network(backend: LoadedBackend, onnx_path: str | Path):
    """Parse the ONNX into a strongly typed network; a parser error names the failing node.

    Returns (builder, network, parser, logger); the parser owns weights the network refers to,
    so keep it alive while the network is used.
    """
    trt = backend.trt
    logger = tensorrt_logger(trt, log, error_level=logging.DEBUG)  # the first error becomes the UserError
    try:
        builder = trt.Builder(logger)
    except TypeError:  # pybind reports a builder the library could not create as a TypeError
        builder = None
    if builder is None:
        raise UserError(f"{backend.title} could not create a builder ({logger.first_error or 'no usable GPU?'}); "
                        + ("full TensorRT needs an NVIDIA GPU to build: run on the GPU machine or pass "
                           "--backend tensorrt_rtx" if not backend.is_rtx else "reinstall tensorrt-rtx"))
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        raise UserError(parser_error_message(parser, onnx_path))
    return builder, network, parser, logger


def parser_error_message(parser, onnx_path: str | Path) -> str:
    """One line: the first error the ONNX parser recorded, with the node it failed on."""
    if parser.num_errors == 0:
        return f"TensorRT's ONNX parser could not read {onnx_path}; check the file with `polygraphy inspect model`"
    error = parser.get_error(0)
    where = (f"node {error.node_name() or '#' + str(error.node())!r} (op {error.node_operator()}, "
             f"index {error.node()})" if error.node() >= 0 else "the model")
    # desc() stacks "Invalid Node - <name>" over the reasons; the first reason is the one to read.
    reasons = [line.strip() for line in error.desc().splitlines()
               if line.strip() and not line.startswith("Invalid Node")] or [error.desc().strip()]
    return (f"TensorRT's ONNX parser failed on {where} of {onnx_path}: {reasons[0]}; "
            "re-export or clean the model so every node is supported by the installed TensorRT")


def build_serialized(backend: LoadedBackend, onnx_path: str | Path, profiles: Sequence[ProfileShapes],
                     input_name: str, config: BuildConfig) -> BuiltPlan:
    """Parse, configure and build; raise UserError on any failure (nothing is written here except
    full TensorRT's timing cache). Ctrl-C and SIGTERM are held while TensorRT works, since it
    swallows what its Python callbacks raise: the progress monitor stops the build and
    KeyboardInterrupt is raised once TensorRT returns."""
    with interrupts_held() as interrupted:
        serialized, targets, hardware, version_compatible, logger = _build(backend, onnx_path, profiles, input_name,
                                                                           config, interrupted)
    if serialized is None:
        fix = ("raise [build] workspace_gib (TensorRT-RTX counts the largest profile's activations in it) or lower "
               "the profiles' max batch x frames" if "OutOfMemory" in logger.first_error
               else "fix the model or the [build] settings in pipeline.toml")
        raise UserError(f"{backend.title} could not build {onnx_path}: {logger.first_error or 'no reason given'}; "
                        f"{fix}")
    return BuiltPlan(serialized, targets, hardware, version_compatible)


def _build(backend: LoadedBackend, onnx_path, profiles: Sequence[ProfileShapes], input_name: str, config: BuildConfig,
           interrupted: Callable[[], bool]):
    trt = backend.trt
    builder, network, parser, logger = parse_network(backend, onnx_path)
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_bytes)
    builder_config.builder_optimization_level = config.optimization_level
    _add_profiles(builder, builder_config, profiles, input_name)
    if backend.is_rtx:
        targets = _set_rtx_targets(backend, builder_config, config)
        hardware, version_compatible = "none", False
        if config.hardware_compatibility != "none" or config.version_compatible:
            log.warning("[build] hardware_compatibility and version_compatible apply to full TensorRT only; "
                        "TensorRT-RTX plans target the compute capabilities %s", ", ".join(targets))
    else:
        hardware, version_compatible = _set_compatibility(trt, builder_config, config)
        targets = full_tensorrt_targets(hardware)
        _load_timing_cache(builder_config, config.timing_cache)
    monitor = progress_bars(trt, interrupted)  # must outlive the build
    builder_config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is not None and not backend.is_rtx and not interrupted():
        _save_timing_cache(builder_config, config.timing_cache)
    return serialized, targets, hardware, version_compatible, logger


def _add_profiles(builder, builder_config, profiles: Sequence[ProfileShapes], input_name: str) -> None:
    for shapes in profiles:
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, shapes.min, shapes.opt, shapes.max)
        if builder_config.add_optimization_profile(profile) < 0:
            raise UserError(f"TensorRT rejected profile {shapes.name!r} (min {shapes.min}, opt {shapes.opt}, "
                            f"max {shapes.max}); fix it in pipeline.toml")


def _set_rtx_targets(backend: LoadedBackend, builder_config, config: BuildConfig) -> list[str]:
    """Point TensorRT-RTX's ahead-of-time build at the configured compute capabilities."""
    trt = backend.trt
    supported = rtx_supported(trt)
    targets = chosen_rtx_targets(supported, config.rtx_compute_capabilities)
    unknown = [t for t in targets if t not in supported]
    if unknown:
        raise UserError(f"[build] rtx_compute_capabilities: TensorRT-RTX {backend.version} cannot target "
                        f"{', '.join(unknown)}; choose from {', '.join(supported)}, \"portable\" or \"all\"")
    builder_config.num_compute_capabilities = len(targets)
    for index, name in enumerate(targets):
        if not builder_config.set_compute_capability(trt.ComputeCapability.__members__[name], index):
            raise UserError(f"TensorRT-RTX refused compute capability {name}; remove it from "
                            "[build] rtx_compute_capabilities")
    return targets


def _set_compatibility(trt, builder_config, config: BuildConfig) -> tuple[str, bool]:
    """Full TensorRT's portability options: plans for several GPU models and/or later TensorRT versions."""
    level = getattr(trt.HardwareCompatibilityLevel, HARDWARE_LEVELS[config.hardware_compatibility], None)
    if level is None:
        raise UserError(f"TensorRT {trt.__version__} has no hardware compatibility level "
                        f"{config.hardware_compatibility!r}; upgrade TensorRT or set [build] hardware_compatibility")
    builder_config.hardware_compatibility_level = level
    if config.version_compatible:
        builder_config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    return config.hardware_compatibility, config.version_compatible


def _load_timing_cache(builder_config, path: Path) -> None:
    """Reuse earlier kernel timings (full TensorRT); a cache from another TensorRT/GPU is started anew."""
    data = path.read_bytes() if path.is_file() else b""
    if not builder_config.set_timing_cache(builder_config.create_timing_cache(data), ignore_mismatch=False):
        log.warning("timing cache %s does not match this TensorRT or GPU; starting a new one", path)
        builder_config.set_timing_cache(builder_config.create_timing_cache(b""), ignore_mismatch=False)


def _save_timing_cache(builder_config, path: Path) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(memoryview(builder_config.get_timing_cache().serialize()))
    log.info("timing cache saved to %s", path)
