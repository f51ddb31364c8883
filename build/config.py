"""The [build] section of pipeline.toml, checked once so the builder code can trust it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.settings import REPO_ROOT
from runtime.manifest import HARDWARE_COMPATIBILITY, KERNEL_SPECIALIZATIONS
from runtime.runnable import BACKENDS
from runtime.targets import RTX_TARGET_SETS, parse_sm

BACKEND_CHOICES = ("auto", *BACKENDS)
BUILDERS = ("python", "trtexec")
MAX_OPTIMIZATION_LEVEL = 5


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
    """Read and check [build]; each problem (a missing key too) is one line naming the key and the fix.
    No value has a default here: pipeline.toml is the one place that holds them."""
    section = settings["build"]

    def fail(key: str, problem: str) -> UserError:
        return UserError(f"[build] {key} in pipeline.toml {problem}")

    backend = section["backend"]
    if backend not in BACKEND_CHOICES:
        raise fail("backend", f"is {backend!r}; use one of {', '.join(BACKEND_CHOICES)}")
    workspace_gib = section["workspace_gib"]
    if not isinstance(workspace_gib, (int, float)) or isinstance(workspace_gib, bool) or workspace_gib <= 0:
        raise fail("workspace_gib", f"is {workspace_gib!r}; use a positive number of GiB, e.g. 4.0")
    level = section["optimization_level"]
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= MAX_OPTIMIZATION_LEVEL:
        raise fail("optimization_level", f"is {level!r}; use an integer from 0 to {MAX_OPTIMIZATION_LEVEL}")
    targets = section["rtx_compute_capabilities"]
    if targets not in RTX_TARGET_SETS and not (isinstance(targets, list) and targets
                                               and all(parse_sm(t) for t in targets)):
        raise fail("rtx_compute_capabilities", f"is {targets!r}; use \"portable\", \"all\" or a list like [\"SM86\", \"SM89\"]")
    specialization = section["rtx_kernel_specialization"]
    if specialization not in KERNEL_SPECIALIZATIONS:
        raise fail("rtx_kernel_specialization", f"is {specialization!r}; use one of {', '.join(KERNEL_SPECIALIZATIONS)}")
    hardware = section["hardware_compatibility"]
    if hardware not in HARDWARE_COMPATIBILITY:
        raise fail("hardware_compatibility", f"is {hardware!r}; use one of {', '.join(HARDWARE_COMPATIBILITY)}")
    version_compatible = section["version_compatible"]
    if not isinstance(version_compatible, bool):
        raise fail("version_compatible", f"is {version_compatible!r}; use true or false")
    trtexec = section["trtexec"]
    if not isinstance(trtexec, str) or not trtexec:
        raise fail("trtexec", f"is {trtexec!r}; name the trtexec executable, e.g. \"trtexec\"")
    return BuildConfig(
        backend=backend,
        workspace_bytes=int(workspace_gib * (1 << 30)),
        optimization_level=level,
        rtx_compute_capabilities=targets if targets in RTX_TARGET_SETS else tuple(targets),
        rtx_kernel_specialization=specialization,
        hardware_compatibility=hardware,
        version_compatible=version_compatible,
        timing_cache=REPO_ROOT / settings["paths"]["timing_cache"],
        trtexec=trtexec,
    )
