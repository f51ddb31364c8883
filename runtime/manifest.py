"""The manifest beside each plan: the only thing the runtime trusts about it.

Pure functions: reading and checking the manifest, deciding whether a plan can run on a given
GPU and TensorRT build, and choosing an optimization profile for a request. No CUDA needed, so
all of it is tested on machines without a GPU.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import EngineError, RuntimeUserError

FORMAT = 1
BACKENDS = ("tensorrt", "tensorrt_rtx")
PIP_NAMES = {"tensorrt": "tensorrt", "tensorrt_rtx": "tensorrt-rtx"}
DISPLAY = {"tensorrt": "TensorRT", "tensorrt_rtx": "TensorRT-RTX"}
REBUILD = "rebuild it with `make engines`"


@dataclass(frozen=True)
class Profile:
    """One optimization profile of the plan as (batch, frames) limits."""

    index: int
    name: str
    min_batch: int
    max_batch: int
    min_frames: int
    opt_frames: int
    max_frames: int

    def fits_frames(self, frames: int) -> bool:
        return self.min_frames <= frames <= self.max_frames


def manifest_path(plan_path: str | Path) -> Path:
    return Path(plan_path).with_suffix(".json")


def read_manifest(plan_path: str | Path) -> dict:
    """The checked manifest of `plan_path` (the plan's path with .json)."""
    plan_path = Path(plan_path)
    path = manifest_path(plan_path)
    if not plan_path.is_file():
        raise RuntimeUserError(f"engine plan {plan_path} not found; build it with `make engines` or pass the path of a .plan file")
    if not path.is_file():
        raise RuntimeUserError(f"manifest {path} not found beside the plan; {REBUILD} (the build stage writes both)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RuntimeUserError(f"manifest {path} is not valid JSON ({error}); {REBUILD}") from None
    problem = _schema_problem(manifest)
    if problem:
        raise RuntimeUserError(f"manifest {path}: {problem}; {REBUILD}")
    return manifest


def _schema_problem(manifest: object) -> str | None:
    """The first way `manifest` breaks the schema of docs/architecture.md, or None."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    if manifest.get("format") != FORMAT:
        return f"format {manifest.get('format')!r} is not {FORMAT}"
    if manifest.get("backend") not in BACKENDS:
        return f"backend {manifest.get('backend')!r} is not one of {', '.join(BACKENDS)}"
    for key in ("backend_version", "vocoder", "precision"):
        if not isinstance(manifest.get(key), str):
            return f"{key} missing"
    for key in ("sampling_rate", "hop", "n_mels"):
        if not _positive_int(manifest.get(key)):
            return f"{key} must be a positive integer"
    for key in ("input", "output"):
        tensor = manifest.get(key)
        if not (isinstance(tensor, dict) and isinstance(tensor.get("name"), str) and tensor.get("dtype") in ("float32", "float16")):
            return f"{key} needs a name and a dtype (float32 or float16)"
    profiles = manifest.get("profiles")
    if not isinstance(profiles, list) or not profiles:
        return "no profiles"
    for entry in profiles:
        shapes = [entry.get(k) if isinstance(entry, dict) else None for k in ("min", "opt", "max")]
        if not all(isinstance(s, list) and len(s) == 3 and all(_positive_int(v) for v in s) for s in shapes):
            return "each profile needs min, opt and max as [batch, n_mels, frames]"
        if any(s[1] != manifest["n_mels"] for s in shapes) or not all(a <= b for a, b in zip(shapes[0], shapes[2])):
            return f"profile {entry.get('name')!r} does not fit n_mels {manifest['n_mels']} or has min > max"
    targets = manifest.get("compute_capabilities")
    if targets is not None and not (isinstance(targets, list) and all(_parse_sm(t) for t in targets)):
        return "compute_capabilities must be null or a list like [\"SM86\", \"SM120\"]"
    plan = manifest.get("plan")
    if not (isinstance(plan, dict) and isinstance(plan.get("file"), str) and _positive_int(plan.get("size"))
            and isinstance(plan.get("sha256"), str)):
        return "plan needs file, size and sha256"
    return None


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _parse_sm(target: object) -> tuple[int, int] | None:
    """'SM86' -> (8, 6), 'SM120' -> (12, 0)."""
    if isinstance(target, str) and target.upper().startswith("SM") and target[2:].isdigit() and len(target) >= 4:
        return int(target[2:-1]), int(target[-1])
    return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def rtx_supports(cc: tuple[int, int]) -> bool:
    """TensorRT-RTX runs on Turing, Ampere, Ada and RTX Blackwell; not on Hopper (9.x) or data-centre Blackwell (10.x)."""
    return cc >= (7, 5) and cc[0] not in (9, 10, 11)


def check_compatibility(manifest: dict, gpu: tuple[str, tuple[int, int]], backend: tuple[str, str]) -> None:
    """Raise EngineError (one line: reason and fix) unless the plan can run on `gpu` = (name,
    (major, minor)) with `backend` = (module name, version)."""
    built_with, built_version = manifest["backend"], manifest["backend_version"]
    name, version = backend
    gpu_name, cc = gpu
    cc = (int(cc[0]), int(cc[1]))
    here = f"{gpu_name} (compute capability {cc[0]}.{cc[1]})"
    if built_with == "tensorrt_rtx" and not rtx_supports(cc):
        raise EngineError(f"TensorRT-RTX plans do not run on {here}; rebuild with full TensorRT (`make engines` with "
                          "the tensorrt extra and build.backend = \"tensorrt\") or run on an RTX card (compute capability 7.5, 8.x, 12.x)")
    if name != built_with:
        raise EngineError(f"the plan was built with {DISPLAY[built_with]} {built_version} but this process uses "
                          f"{DISPLAY.get(name, name)} {version}; pip install {PIP_NAMES[built_with]}=={built_version}, "
                          f"or {REBUILD} with the {DISPLAY.get(name, name)} backend")
    targets = manifest.get("compute_capabilities")
    if targets is not None and cc not in {_parse_sm(t) for t in targets}:
        raise EngineError(f"the plan targets {', '.join(targets)}, not {here}; add SM{cc[0]}{cc[1]} to "
                          f"build.rtx_compute_capabilities in pipeline.toml and {REBUILD}")
    if manifest.get("hardware_compatibility") == "ampere_plus" and cc < (8, 0):
        raise EngineError(f"the plan was built for Ampere and newer, not {here}; {REBUILD} on this machine")
    _check_version(built_with, built_version, version, bool(manifest.get("version_compatible")))


def _check_version(backend: str, built: str, running: str, version_compatible: bool) -> None:
    built_v, running_v = _version(built), _version(running)
    fix = f"pip install {PIP_NAMES[backend]}=={built}, or {REBUILD} with the installed version"
    if version_compatible:
        if built_v[:1] != running_v[:1] or running_v < built_v:
            raise EngineError(f"the version-compatible plan needs {DISPLAY[backend]} {built_v[0]}.x at {built} or newer, "
                              f"this process has {running}; {fix}")
    elif built_v[:3] != running_v[:3]:
        raise EngineError(f"the plan was built with {DISPLAY[backend]} {built}, this process has {running} "
                          f"(plans are tied to their version); {fix}")


def check_plan_bytes(manifest: dict, plan: bytes, plan_path: str | Path) -> None:
    """The plan file is the one its manifest describes (name, size, sha256)."""
    expected = manifest["plan"]
    plan_path = Path(plan_path)
    if plan_path.name != expected["file"]:
        problem = f"the manifest describes {expected['file']}, not {plan_path.name}"
    elif len(plan) != expected["size"]:
        problem = f"size {len(plan)} bytes, manifest says {expected['size']}"
    elif hashlib.sha256(plan).hexdigest() != expected["sha256"]:
        problem = "sha256 differs from the manifest's"
    else:
        return
    raise EngineError(f"plan {plan_path} does not match its manifest ({problem}); {REBUILD} so both are written together")


def profiles_of(manifest: dict) -> list[Profile]:
    return [Profile(i, p.get("name", str(i)), p["min"][0], p["max"][0], p["min"][2], p["opt"][2], p["max"][2])
            for i, p in enumerate(manifest["profiles"])]


def choose_profile(profiles: list[Profile], batch: int, frames: int) -> Profile | None:
    """The profile to serve (batch, frames): among those whose frame range holds `frames`, the one
    needing the fewest batch splits, then the smallest maximum (kernels tuned nearest the request).
    None when `frames` exceeds every profile (the caller chunks the mel)."""
    fitting = [p for p in profiles if p.fits_frames(frames)]
    if not fitting:
        if frames > max(p.max_frames for p in profiles):
            return None
        raise RuntimeUserError(f"mel has {frames} frames, fewer than every profile's minimum "
                               f"({min(p.min_frames for p in profiles)}); pad the mel or rebuild with a smaller profile minimum")
    return min(fitting, key=lambda p: (-(-batch // p.max_batch), p.max_frames, p.index))


def batch_pieces(batch: int, max_batch: int) -> list[slice]:
    """Slices of the batch axis no larger than the profile's maximum batch."""
    return [slice(start, min(start + max_batch, batch)) for start in range(0, batch, max_batch)]
