"""Read and check pipeline.toml, the single home of names, paths, precisions, tolerances and profiles."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

try:
    import tomllib  # novermin (guarded: tomli below on Python 3.9 and 3.10)
except ModuleNotFoundError:  # Python 3.9 and 3.10 (GPT-SoVITS' own environment): the tomli backport
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = REPO_ROOT / "pipeline.toml"
# The vocoders the code is written for (export/vocoders.py builds exactly these two): architecture,
# not configuration, so not a key of pipeline.toml. Every --vocoder choice and v3/v4 loop uses this.
VOCODERS = ("v3", "v4")


class Section(dict):
    """A table of pipeline.toml. The code keeps no defaults of its own for the file's values, so a
    key the code asks for and the file lacks is a one-line UserError naming the key."""

    def __init__(self, values: dict, where: str, path: Path):
        super().__init__(values)
        self.where, self.path = where, path

    def __missing__(self, key: str):
        name = f"{self.where}.{key}" if self.where else str(key)
        raise UserError(f"{self.path} has no {name}; add it back (the repository's pipeline.toml has every key)")


def _sections(value: Any, where: str, path: Path) -> Any:
    """The parsed TOML with every table (nested, inline or in an array) as a Section."""
    if isinstance(value, dict):
        children = {key: _sections(child, f"{where}.{key}" if where else key, path) for key, child in value.items()}
        return Section(children, where, path)
    if isinstance(value, list):
        return [_sections(item, where, path) for item in value]
    return value


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
        settings = _sections(tomllib.loads(path.read_text(encoding="utf-8")), "", path)
    except FileNotFoundError:
        raise UserError(f"config file {path} not found; restore pipeline.toml from the repository") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text; restore pipeline.toml from the repository") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"config file {path} is not valid TOML ({error}); fix that line") from None
    for vocoder in VOCODERS:
        profiles_for(settings, vocoder)
    for name, precision in settings["precisions"].items():
        if precision.get("onnx_type") not in ("float32", "float16"):
            raise UserError(f"precision {name!r} in {path} has unknown onnx_type {precision.get('onnx_type')!r}; "
                            "use float32 or float16")
    return settings


def profiles_for(settings: dict[str, Any], vocoder: str) -> list[Profile]:
    """The vocoder's optimization profiles, checked: positive sizes and min <= opt <= max."""
    raw = settings["profiles"].get(vocoder)
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
    known = settings["precisions"]
    if precision not in known:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(known)}")
    return known[precision]


def precision_file_for(model_path: str | Path) -> Path:
    """engines/onnx/v3.fp16.onnx -> engines/onnx/v3.fp16.precision.json: the precision planner's
    record (float32 regions, measured errors, fp16 MAC share), beside the model it describes."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name.removesuffix(".onnx") + ".precision.json")


def output_paths(settings: dict[str, Any], vocoder: str, precision: str) -> dict[str, Path]:
    """Where each stage writes for one vocoder and precision, relative to the repository root."""
    onnx_dir = REPO_ROOT / settings["paths"]["onnx"]
    engines = REPO_ROOT / settings["paths"]["engines"]
    return {
        "onnx": onnx_dir / f"{vocoder}.onnx",
        "cleaned": onnx_dir / f"{vocoder}.{precision}.onnx",
        "precision_file": precision_file_for(onnx_dir / f"{vocoder}.{precision}.onnx"),
        "plan": engines / f"{vocoder}.{precision}.plan",
        "manifest": engines / f"{vocoder}.{precision}.json",
    }
