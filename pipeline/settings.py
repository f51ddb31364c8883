"""Read and check pipeline.toml, the single home of names, paths, precisions, tolerances and profiles."""
from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pipeline.errors import UserError
from pipeline.schema import VOCODERS as VOCODERS  # defined with the schema; named here, where every stage looks
from pipeline.schema import check_part, check_settings, missing, renamed_keys

try:
    import tomllib  # novermin (guarded: tomli below on Python 3.9 and 3.10)
except ModuleNotFoundError:  # Python 3.9 and 3.10 (GPT-SoVITS' own environment): the tomli backport
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = REPO_ROOT / "pipeline.toml"
MAX_CONFIG_BYTES = 1 << 20  # the repository's pipeline.toml is about 9 KB


class Section(dict):
    """A table of pipeline.toml. The code keeps no defaults of its own for the file's values, so a
    key the code asks for and the file lacks is a one-line UserError naming the key."""

    def __init__(self, values: dict, where: str, path: Path):
        super().__init__(values)
        self.where, self.path = where, path

    def __missing__(self, key: str):
        raise missing(str(self.path), (*filter(None, self.where.split(".")), key))


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


def load_settings(path: Optional[Path] = None) -> dict[str, Any]:
    """Read the config file (default: pipeline.toml) and check all of it against pipeline/schema.py,
    so every stage can trust what it reads and a bad value stops a command before any work."""
    path = Path(CONFIG_PATH if path is None else path)
    raw = renamed_keys(_parsed(_config_text(path), path), str(path))
    check_settings(raw, str(path))
    return _sections(raw, "", path)


def _config_text(path: Path) -> str:
    """The file's text: a regular file of at most MAX_CONFIG_BYTES, UTF-8 (a FIFO or a folder would
    block or fail in open())."""
    restore = "restore pipeline.toml from the repository"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"config file {path} is not a regular file (a folder or a device); {restore}")
        if info.st_size > MAX_CONFIG_BYTES:
            raise UserError(f"config file {path} is {info.st_size} bytes, more than a config holds "
                            f"({MAX_CONFIG_BYTES}); {restore}")
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not TOML
    except FileNotFoundError:
        raise UserError(f"config file {path} not found; {restore}") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text; {restore}") from None
    except OSError as error:
        raise UserError(f"cannot read config file {path} ({error.strerror or error}); {restore}") from None


def _parsed(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"config file {path} is not valid TOML ({error}); fix that line") from None
    except RecursionError:
        raise UserError(f"config file {path} nests arrays or tables deeper than Python can read; "
                        "restore pipeline.toml from the repository") from None
    except ValueError as error:  # an integer of thousands of digits (Python's int-from-text limit)
        raise UserError(f"config file {path} holds a value Python cannot read ({error.args[0][:80]}); "
                        "fix that value") from None


def profiles_for(settings: dict[str, Any], vocoder: str) -> list[Profile]:
    """The vocoder's optimization profiles (checked by pipeline/schema.py: at load, and here for
    settings a caller changed)."""
    check_part(settings, "profiles", vocoder)
    return [Profile(entry["name"], tuple(entry["min"]), tuple(entry["opt"]), tuple(entry["max"]))
            for entry in settings["profiles"][vocoder]]


def check_precision(settings: dict[str, Any], precision: str) -> dict[str, Any]:
    """The settings of a precision the config knows; one line naming the known ones otherwise."""
    known = settings["precisions"]
    if precision not in known:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(known)}")
    return known[precision]


def precision_file_for(model_path: str | Path) -> Path:
    """engines/onnx/v3.fp16.onnx -> engines/onnx/v3.fp16.precision.json: the precision search's
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
