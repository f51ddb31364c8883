"""The `trtexec` command that builds the same plan, for the manifest and for `--builder trtexec`."""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from build.config import BuildConfig
from build.network import ProfileShapes
from pipeline.errors import UserError

log = logging.getLogger("build")

HARDWARE_FLAGS = {"ampere_plus": "ampere+", "same_compute_capability": "sameComputeCapability"}


def trtexec_command(tool: str, onnx_path: str | Path, plan_path: str | Path, profiles: Sequence[ProfileShapes],
                    input_name: str, config: BuildConfig) -> list[str]:
    """trtexec arguments equivalent to the Python build: strongly typed, same profiles and settings."""
    command = [tool, f"--onnx={onnx_path}", f"--saveEngine={plan_path}", "--stronglyTyped", "--skipInference"]
    for index, profile in enumerate(profiles):
        if len(profiles) > 1:
            command.append(f"--profile={index}")
        for flag, shape in (("min", profile.min), ("opt", profile.opt), ("max", profile.max)):
            command.append(f"--{flag}Shapes={input_name}:{'x'.join(map(str, shape))}")
    command += [f"--memPoolSize=workspace:{config.workspace_bytes / (1 << 20):g}",
                f"--builderOptimizationLevel={config.optimization_level}"]
    if config.hardware_compatibility != "none":
        command.append(f"--hardwareCompatibilityLevel={HARDWARE_FLAGS[config.hardware_compatibility]}")
    if config.version_compatible:
        command.append("--versionCompatible")
    command.append(f"--timingCacheFile={os.path.relpath(config.timing_cache)}")
    return command


def require_trtexec(tool: str) -> str:
    """The path of the trtexec executable, or a one-line UserError saying how to get one."""
    found = shutil.which(tool)
    if found is None:
        raise UserError(f"{tool} not found on the PATH; install full TensorRT and add its bin/ folder to "
                        "PATH (or set [build] trtexec in pipeline.toml), or build with --builder python")
    return found


def run_trtexec(command: list[str]) -> str:
    """Run trtexec; return the TensorRT version it reports. One-line UserError if absent or failing."""
    require_trtexec(command[0])
    log.info("running %s", " ".join(command))
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8")
    for line in result.stdout.splitlines():
        log.debug("trtexec: %s", line)
    if result.returncode != 0:
        errors = [line for line in result.stdout.splitlines() if "[E]" in line or "error" in line.lower()]
        for line in result.stdout.splitlines()[-20:]:
            log.error("trtexec: %s", line)
        reason = " ".join((errors[-1] if errors else f"exit code {result.returncode}").split())
        raise UserError(f"trtexec failed: {reason}; see its output above")
    return trtexec_version(result.stdout)


def trtexec_version(output: str) -> str:
    """The full version in trtexec's banner, '[TensorRT v101600] [b72]' -> '10.16.0.72', as
    `tensorrt.__version__` spells it: the runtime compares all four parts ("unknown" without one)."""
    match = re.search(r"\[TensorRT v(\d+)\]\s*\[b(\d+)\]", output)
    if not match:
        return "unknown"
    number, build = int(match.group(1)), int(match.group(2))
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}.{build}"
