"""The [build] section of pipeline.toml, checked once so the builder code can trust it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.schema import check_part
from pipeline.settings import REPO_ROOT
from runtime.targets import RTX_TARGET_SETS

BUILDERS = ("python", "trtexec")


@dataclass(frozen=True)
class BuildConfig:
    backend: str
    workspace_bytes: int
    optimization_level: int
    rtx_compute_capabilities: tuple[str, ...] | str  # a tuple of names like "SM86", "portable" or "all"
    rtx_kernel_specialization: str                   # lazy | eager | none, recorded in the manifest for the runtime
    hardware_compatibility: str
    version_compatible: bool
    timing_cache: Path
    trtexec: str


def build_config(settings: dict[str, Any]) -> BuildConfig:
    """[build] as the builder uses it, checked by pipeline/schema.py (at load, and here for settings a
    caller changed): each problem, a missing key too, is one line naming the key and the fix. No value
    has a default here: pipeline.toml is the one place that holds them."""
    check_part(settings, "build")
    section = settings["build"]
    targets = section["rtx_compute_capabilities"]
    return BuildConfig(
        backend=section["backend"],
        workspace_bytes=int(section["workspace_gib"] * (1 << 30)),
        optimization_level=section["optimization_level"],
        rtx_compute_capabilities=targets if targets in RTX_TARGET_SETS else tuple(targets),
        rtx_kernel_specialization=section["rtx_kernel_specialization"],
        hardware_compatibility=section["hardware_compatibility"],
        version_compatible=section["version_compatible"],
        timing_cache=REPO_ROOT / settings["paths"]["timing_cache"],
        trtexec=section["trtexec"],
    )
