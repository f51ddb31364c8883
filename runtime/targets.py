"""GPU targets: the one place that names, parses and compares compute capabilities ("SM86" is 8.6)
and reads which ones TensorRT-RTX can build for.

The build stage chooses targets with it, the manifest's schema checks them, the runtime's
runnability decision and the GPT-SoVITS drop-in compare against them. Pure functions of strings,
tuples and an imported TensorRT-RTX module; no CUDA needed.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

Capability = Tuple[int, int]

TURING = "SM75"
AMPERE = (8, 0)
RTX_TARGET_SETS = ("portable", "all")  # the named sets of [build] rtx_compute_capabilities


def sm_name(capability: Sequence[int]) -> str:
    """(8, 6) -> 'SM86', (12, 0) -> 'SM120'."""
    return f"SM{capability[0]}{capability[1]}"


def parse_sm(target: object) -> Optional[Capability]:
    """'SM86' -> (8, 6), 'SM120' -> (12, 0); None for anything else (lower case too)."""
    if isinstance(target, str) and target.startswith("SM") and target[2:].isdigit() and 4 <= len(target) <= 5:
        return int(target[2:-1]), int(target[-1])
    return None


def described(capability: Sequence[int]) -> str:
    """(8, 6) -> '8.6', as NVIDIA's tables write it."""
    return f"{capability[0]}.{capability[1]}"


def rtx_supported(trt) -> list[str]:
    """Every compute capability this TensorRT-RTX module can build for, oldest first, e.g.
    ["SM75", "SM80", "SM86", "SM89", "SM120", "SM121"] for 1.7 (its enum, less NONE and CURRENT)."""
    return sorted((name for name in trt.ComputeCapability.__members__ if parse_sm(name)), key=parse_sm)


def chosen_rtx_targets(supported: Sequence[str], setting) -> list[str]:
    """The targets of a TensorRT-RTX build for [build] rtx_compute_capabilities.

    "portable" is this project's default: every target the installed TensorRT-RTX supports but
    Turing (SM75), whose kernel caching NVIDIA limits and which it gives an engine of its own. It is
    not NVIDIA's list: NVIDIA's page on CPU-only ahead-of-time builds names 8.0, 8.6, 8.9 and 12.0.
    "all" adds Turing; a list is taken as written (the builder checks it against `supported`)."""
    if setting == "all":
        return list(supported)
    if setting == "portable":
        return [target for target in supported if target != TURING]
    return list(setting)
