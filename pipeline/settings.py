"""Read and check pipeline.toml, the single home of names, paths, precisions, tolerances and profiles."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = REPO_ROOT / "pipeline.toml"
VOCODERS = ("v3", "v4")


@dataclass(frozen=True)
class Profile:
    """One optimization profile: (batch, frames) at its minimum, optimum and maximum."""

    name: str
    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def shapes(self, n_mels: int) -> tuple[tuple[int, int, int], ...]:
        """The mel input's (batch, n_mels, frames) at min, opt and max."""
        return tuple((b, n_mels, f) for b, f in (self.min, self.opt, self.max))


def load_settings(path: str | Path = CONFIG_PATH) -> dict[str, Any]:
    """Parse the config file and check it, so every stage can trust what it reads."""
    path = Path(path)
    try:
        settings = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} not found; restore pipeline.toml from the repository") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"config file {path} is not valid TOML ({error}); fix that line") from None
    for vocoder in VOCODERS:
        profiles_for(settings, vocoder)
    for name, precision in settings.get("precisions", {}).items():
        if precision.get("onnx_type") not in ("float32", "float16", "bfloat16"):
            raise UserError(f"precision {name!r} in {path} has unknown onnx_type {precision.get('onnx_type')!r}; "
                            "use float32, float16 or bfloat16")
    return settings


def profiles_for(settings: dict[str, Any], vocoder: str) -> list[Profile]:
    """The vocoder's optimization profiles, checked: positive sizes and min <= opt <= max."""
    raw = settings.get("profiles", {}).get(vocoder)
    if not raw:
        raise UserError(f"no [[profiles.{vocoder}]] in the config; add at least one profile")
    profiles = []
    for entry in raw:
        name = entry.get("name", "?")
        try:
            dims = {key: tuple(int(v) for v in entry[key]) for key in ("min", "opt", "max")}
        except (KeyError, TypeError, ValueError):
            raise UserError(f"profile {vocoder}/{name} needs min, opt and max as [batch, frames]") from None
        if any(len(d) != 2 or min(d) < 1 for d in dims.values()):
            raise UserError(f"profile {vocoder}/{name}: min, opt and max must each be [batch, frames] of positive integers")
        for axis, label in enumerate(("batch", "frames")):
            low, opt, high = (dims[key][axis] for key in ("min", "opt", "max"))
            if not low <= opt <= high:
                raise UserError(f"profile {vocoder}/{name}: {label} must satisfy min <= opt <= max, "
                                f"got {low}, {opt}, {high}; fix pipeline.toml")
        if any(profile.name == name for profile in profiles):
            raise UserError(f"profile {vocoder}/{name} is defined twice; give each [[profiles.{vocoder}]] its own name")
        profiles.append(Profile(name, dims["min"], dims["opt"], dims["max"]))
    return profiles


def check_precision(settings: dict[str, Any], precision: str) -> dict[str, Any]:
    """The settings of a precision the config knows; one line naming the known ones otherwise."""
    known = settings.get("precisions", {})
    if precision not in known:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(known)}")
    return known[precision]


def output_paths(settings: dict[str, Any], vocoder: str, precision: str) -> dict[str, Path]:
    """Where each stage writes for one vocoder and precision, relative to the repository root."""
    onnx_dir = REPO_ROOT / settings["paths"]["onnx"]
    engines = REPO_ROOT / settings["paths"]["engines"]
    return {
        "onnx": onnx_dir / f"{vocoder}.onnx",
        "cleaned": onnx_dir / f"{vocoder}.{precision}.onnx",
        "precision_plan": onnx_dir / f"{vocoder}.{precision}.plan.json",
        "plan": engines / f"{vocoder}.{precision}.plan",
        "manifest": engines / f"{vocoder}.{precision}.json",
    }
