"""The manifest beside each plan: the only thing the runtime trusts about it.

The contract between the build stage (its writer) and every reader, kept on the reader's side
because runtime/ stands alone: the format version, the path rule, the schema and the values its
fields take, and the text it is written as (`manifest_text`, which checks the schema first, so
the build cannot write a manifest the runtime would refuse). Every stage that needs one calls
`read_manifest`. Pure functions: reading and checking the manifest against its schema and its
plan file. No CUDA needed, so all of it is tested on machines without a GPU (whether a plan can run
here is runtime/runnable.py's decision; which profile serves a request, runtime/batching.py's).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import EngineError, RuntimeUserError
from runtime.files import input_file
from runtime.limits import (
    MAX_BATCH,
    MAX_FRAMES,
    MAX_HOP,
    MAX_JSON_BYTES,
    MAX_N_MELS,
    MAX_SAMPLING_RATE,
    MIN_SAMPLING_RATE,
    within,
)
from runtime.runnable import BACKENDS, REBUILD
from runtime.targets import parse_sm

FORMAT = 1
SIZES = (("sampling_rate", MIN_SAMPLING_RATE, MAX_SAMPLING_RATE), ("hop", 1, MAX_HOP), ("n_mels", 1, MAX_N_MELS))
# measured by the export stage (export/reach.py); absent from models exported before it measured them
STREAM_KEYS = ("receptive_field_frames", "stream_context_frames", "stream_lookahead_frames")
DTYPES = ("float32", "float16")                                      # of the input and output tensors
HARDWARE_COMPATIBILITY = ("none", "ampere_plus", "same_compute_capability")  # full TensorRT's levels
# how TensorRT-RTX compiles kernels for new shapes at run time (pipeline.toml [build] explains each)
KERNEL_SPECIALIZATIONS = ("lazy", "eager", "none")


@dataclass(frozen=True)
class PlanProfile:
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
    """The manifest's place: beside the plan, the plan's name with .json."""
    return Path(plan_path).with_suffix(".json")


def manifest_text(manifest: dict) -> str:
    """The text of a manifest as the build writes it; a manifest that breaks the schema is a bug of
    its writer (EngineError), never written."""
    problem = _schema_problem(manifest)
    if problem:
        raise EngineError(f"refusing to write a manifest that breaks its schema ({problem}); this is a bug, please report it")
    return json.dumps(manifest, indent=2) + "\n"


def read_manifest(plan_path: str | Path) -> dict:
    """The checked manifest of `plan_path` (the plan's path with .json)."""
    plan_path = Path(plan_path)
    path = manifest_path(plan_path)
    input_file(plan_path, "engine plan", "build it with `make engines` or pass the path of a .plan file")
    input_file(path, "manifest", f"it belongs beside the plan; {REBUILD} (the build stage writes both)")
    within(path.stat().st_size, 0, MAX_JSON_BYTES, f"the size of manifest {path} in bytes", REBUILD)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RuntimeUserError(f"manifest {path} is not valid JSON ({error}); {REBUILD}") from None
    except RecursionError:
        raise RuntimeUserError(f"manifest {path} nests deeper than Python's JSON reader can follow; {REBUILD}") from None
    problem = _schema_problem(manifest)
    if problem:
        raise RuntimeUserError(f"manifest {path}: {problem}; {REBUILD}")
    problem = _plan_file_problem(manifest, plan_path)
    if problem:
        raise EngineError(f"plan {plan_path} does not match its manifest ({problem}); {REBUILD} so both are written together")
    return manifest


def _plan_file_problem(manifest: dict, plan_path: Path) -> str | None:
    """A manifest copied beside another plan, or a plan replaced since: name and size disagree."""
    expected = manifest["plan"]
    if plan_path.name != expected["file"]:
        return f"the manifest describes {expected['file']}, not {plan_path.name}"
    size = plan_path.stat().st_size
    if size != expected["size"]:
        return f"size {size} bytes, manifest says {expected['size']}"
    return None


def _schema_problem(manifest: object) -> str | None:
    """The first way `manifest` breaks the schema of docs/design/architecture.md, or None."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    if manifest.get("format") != FORMAT:
        return f"format {manifest.get('format')!r} is not {FORMAT}"
    if manifest.get("backend") not in BACKENDS:
        return f"backend {manifest.get('backend')!r} is not one of {', '.join(BACKENDS)}"
    for key in ("backend_version", "vocoder", "precision"):
        if not isinstance(manifest.get(key), str):
            return f"{key} missing"
    for key, lowest, highest in SIZES:
        if not _positive_int(manifest.get(key)):
            return f"{key} must be a positive integer"
        if not lowest <= manifest[key] <= highest:
            return f"{key} {manifest[key]} is outside {lowest}..{highest} (runtime/limits.py)"
    for key in ("input", "output"):
        tensor = manifest.get(key)
        named = isinstance(tensor, dict) and isinstance(tensor.get("name"), str)
        if not (named and tensor.get("dtype") in DTYPES):
            return f"{key} needs a name and a dtype ({' or '.join(DTYPES)})"
        shape = tensor.get("shape")
        if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) and not isinstance(d, bool)
                                                                   for d in shape)):
            return f"{key} shape must be [batch, channels, time] of integers (-1 dynamic), got {shape!r}"
    onnx = manifest.get("onnx")
    if not (isinstance(onnx, dict) and isinstance(onnx.get("path"), str) and isinstance(onnx.get("sha256"), str)):
        return "onnx needs path and sha256 (the cleaned model the plan was built from)"
    profiles = manifest.get("profiles")
    if not isinstance(profiles, list) or not profiles:
        return "no profiles"
    for entry in profiles:
        shapes = [entry.get(k) if isinstance(entry, dict) else None for k in ("min", "opt", "max")]
        if not all(isinstance(s, list) and len(s) == 3 and all(_positive_int(v) for v in s) for s in shapes):
            return "each profile needs min, opt and max as [batch, n_mels, frames]"
        if shapes[2][0] > MAX_BATCH or shapes[2][2] > MAX_FRAMES:
            return f"profile {entry.get('name')!r} allows more than {MAX_BATCH} batch items or {MAX_FRAMES} frames"
        if any(s[1] != manifest["n_mels"] for s in shapes) or not all(a <= b for a, b in zip(shapes[0], shapes[2])):
            return f"profile {entry.get('name')!r} does not fit n_mels {manifest['n_mels']} or has min > max"
    targets = manifest.get("compute_capabilities")
    if targets is not None and not (isinstance(targets, list) and all(parse_sm(t) for t in targets)):
        return "compute_capabilities must be null or a list like [\"SM86\", \"SM120\"]"
    for key, values in (("hardware_compatibility", HARDWARE_COMPATIBILITY),
                        ("rtx_kernel_specialization", KERNEL_SPECIALIZATIONS)):
        if manifest.get(key) not in values:
            return f"{key} {manifest.get(key)!r} is not one of {', '.join(values)}"
    if not isinstance(manifest.get("version_compatible"), bool):
        return "version_compatible must be true or false"
    problem = _stream_problem(manifest)
    if problem:
        return problem
    plan = manifest.get("plan")
    if not (isinstance(plan, dict) and isinstance(plan.get("file"), str) and _positive_int(plan.get("size"))
            and isinstance(plan.get("sha256"), str)):
        return "plan needs file, size and sha256"
    return None


def _stream_problem(manifest: dict) -> str | None:
    """The measured reach and stream setting are optional (manifests from before the export stage
    measured them have none); when present they are whole and whole numbers of frames."""
    present = [key for key in STREAM_KEYS if key in manifest]
    if not present:
        return None
    if len(present) < len(STREAM_KEYS):
        return f"has {', '.join(present)} but not {', '.join(k for k in STREAM_KEYS if k not in present)}"
    reach = manifest["receptive_field_frames"]
    if not (isinstance(reach, list) and len(reach) == 2 and all(_frame_count(v) for v in reach)):
        return "receptive_field_frames must be [left, right] in frames"
    for key in STREAM_KEYS[1:]:
        if not _frame_count(manifest[key]):
            return f"{key} must be a whole number of frames"
    return None


def _frame_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_FRAMES


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_plan_bytes(manifest: dict, plan: bytes, plan_path: str | Path) -> None:
    """The plan's bytes, read once to load them, are the ones its manifest describes (sha256);
    `read_manifest` has checked the name and size already."""
    if hashlib.sha256(plan).hexdigest() != manifest["plan"]["sha256"]:
        raise EngineError(f"plan {plan_path} does not match its manifest (sha256 differs from the manifest's); "
                          f"{REBUILD} so both are written together")


def profiles_of(manifest: dict) -> list[PlanProfile]:
    return [PlanProfile(i, p.get("name", str(i)), p["min"][0], p["max"][0], p["min"][2], p["opt"][2], p["max"][2])
            for i, p in enumerate(manifest["profiles"])]
