"""The `tensorrt:` section of GPT-SoVITS' tts_infer.yaml and `install()`'s keywords: which engine
GPT-SoVITS asks for (vocoder, precision, workspace, batch) and what serves without one.

TTS_Config keeps every top-level section in `configs.default_configs` and writes them back
unchanged, while it rewrites the `custom:` section with its own seven keys on every start
(save_configs), so keys put there vanish: the switches live in a section of their own.

The section is checked whole before anything is attached (`checked_options`, with the spec types
of pipeline/schema.py). A bad section read from tts_infer.yaml is one warning line and GPT-SoVITS
starts with its own vocoder; a bad keyword given to `install()` is the caller's code, and raises.
"""
from __future__ import annotations

import logging
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from pipeline.errors import UserError
from pipeline.schema import BATCH, WORKSPACE_GIB, Choice, Flag, Table, Text, checked, shown
from pipeline.settings import check_precision
from runtime.errors import one_line
from serving.torch_tier.fallback import FALLBACK_KEY, FALLBACKS

log = logging.getLogger("serving")

YAML_SECTION = "tensorrt"
SECTION = Table({
    "use_tensorrt": Flag(),
    "tensorrt_precision": Text(name=True),  # and a precision of pipeline.toml (checked_options)
    "tensorrt_workspace_size": WORKSPACE_GIB,
    "tensorrt_max_batch_size": BATCH,
    FALLBACK_KEY: Choice(FALLBACKS),
}, optional=("use_tensorrt", "tensorrt_precision", "tensorrt_workspace_size", "tensorrt_max_batch_size", FALLBACK_KEY))
YAML_KEYS = tuple(SECTION.keys)
MAX_YAML_BYTES = 1 << 20  # GPT-SoVITS' own tts_infer.yaml is about 3 KB
KEEPS_OWN = "%s; GPT-SoVITS keeps its own vocoder until that is fixed [tier: pytorch]"


@dataclass(frozen=True)
class EngineRequest:
    """The engine GPT-SoVITS asks for: vocoder, precision and the builder settings that shape it."""

    vocoder: str
    precision: str
    workspace_gib: float
    max_batch: int | None  # None: the batch sizes of pipeline.toml's profiles
    gpu_target: str | None = None  # the compute capability GPT-SoVITS runs on ("SM86"); None on CPU

    @property
    def workspace_bytes(self) -> int:
        return int(self.workspace_gib * (1 << 30))


def _key(path: Sequence[Any]) -> str:
    return f"`{YAML_SECTION}:` {'.'.join(map(str, path))}".rstrip()


def checked_options(options: Any, source: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The section's keys, each of the known type and range and the precision one of pipeline.toml's;
    a key with no value (null) is unset. One UserError line naming `source`, the key and the fix."""
    if not isinstance(options, Mapping):
        raise UserError(f"{source}: `{YAML_SECTION}:` is {shown(options)}; make it a section of keys ({', '.join(YAML_KEYS)})")
    present = {key: value for key, value in options.items() if value is not None}
    checked(SECTION, present, source, _key)
    if "tensorrt_precision" in present and present["tensorrt_precision"] not in settings["precisions"]:
        raise UserError(f"{source}: {_key(['tensorrt_precision'])} is {shown(present['tensorrt_precision'])}, not a precision "
                        f"of pipeline.toml; use one of {', '.join(settings['precisions'])}")
    return present


def yaml_options(tts) -> Any:
    """The `tensorrt:` section of the tts_infer.yaml that built `tts`, as GPT-SoVITS read it (empty
    when there is none); `checked_options` checks it."""
    return (getattr(tts.configs, "default_configs", None) or {}).get(YAML_SECTION) or {}


def install_options(tts, options: Optional[Mapping[str, Any]], fallback: Optional[str],
                    settings: dict[str, Any]) -> Optional[dict[str, Any]]:
    """`install()`'s options, checked: its keywords (a bad one raises), else the yaml section of `tts`
    (a bad one is one warning, and None: GPT-SoVITS keeps its own vocoder). `fallback` overrides
    the section's tensorrt_fallback."""
    if options is None:
        try:
            options = checked_options(yaml_options(tts), "tts_infer.yaml", settings)
        except UserError as error:
            log.warning(KEEPS_OWN, error)
            return None
    if fallback is not None:
        options = {**options, FALLBACK_KEY: fallback}
    return checked_options(options, "install()", settings)


def launcher_options(path: Path) -> dict[str, Any]:
    """The `tensorrt:` section of the tts_infer.yaml at `path`, checked, for the default UI (it reads
    no yaml itself). Where it is refused: one warning naming the problem and the fix, and the section
    reads as `use_tensorrt: false`, so GPT-SoVITS starts with its own vocoder."""
    from pipeline.settings import load_settings

    try:
        return checked_options(yaml_file_section(path), str(path), load_settings())
    except UserError as error:
        log.warning(KEEPS_OWN, error)
        return {"use_tensorrt": False}


def yaml_file_section(path: Path) -> Any:
    """The `tensorrt:` section of the yaml file at `path` (empty without file or section), building
    nothing else: the document is composed into nodes (an alias is the node it names, however often
    used, so an alias bomb costs its size in bytes) and only the section's scalars are constructed;
    a list or table where a value belongs stands as an empty one of its length, for the message."""
    import yaml  # GPT-SoVITS' own dependency

    text = _yaml_text(path)
    if text is None:
        return {}
    loader = yaml.SafeLoader(text)
    try:
        node = _section_node(loader.get_single_node(), yaml)
        return {} if node is None else _section_values(loader, node, yaml)
    except yaml.YAMLError as error:
        raise UserError(f"{path} cannot be read as YAML ({one_line(error, 200)}); fix that line") from None
    finally:
        loader.dispose()


def _yaml_text(path: Path) -> Optional[str]:
    """The file's text (None: no file): a regular file of at most MAX_YAML_BYTES, UTF-8."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror or error})") from None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path} is not a regular file (a folder or a device); restore GPT-SoVITS' own tts_infer.yaml")
    if info.st_size > MAX_YAML_BYTES:
        raise UserError(f"{path} is {info.st_size} bytes, more than a tts_infer.yaml holds ({MAX_YAML_BYTES}); "
                        "restore GPT-SoVITS' own")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text (saved as GBK or another code page?); save it as UTF-8") from None


def _section_node(root, yaml):
    """The value node of the document's last `tensorrt:` key (as yaml's own loader keeps the last)."""
    if not isinstance(root, yaml.MappingNode):
        return None
    found = None
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == YAML_SECTION:
            found = value
    return found


def _section_values(loader, node, yaml) -> Any:
    if not isinstance(node, yaml.MappingNode):
        return _stand_in(node, loader, yaml)
    return {(_stand_in(key, loader, yaml) if isinstance(key, yaml.ScalarNode) else "(a key that is not a name)"):
            _stand_in(value, loader, yaml) for key, value in node.value}


def _stand_in(node, loader, yaml) -> Any:
    """A scalar's value; for a list or table, an empty one of its length (never its contents)."""
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_object(node)
    if isinstance(node, yaml.SequenceNode):
        return [None] * len(node.value)
    return dict.fromkeys(range(len(node.value)))


def engine_request(options: Mapping[str, Any], vocoder: str, precision: torch.dtype,
                   settings: dict[str, Any]) -> EngineRequest:
    """The engine `options` (checked by checked_options) ask for; unset keys default to GPT-SoVITS'
    own precision and pipeline.toml."""
    name = options.get("tensorrt_precision") or ("fp16" if precision == torch.float16 else "fp32")
    check_precision(settings, name)
    workspace = options.get("tensorrt_workspace_size", settings["build"]["workspace_gib"])
    return EngineRequest(vocoder, name, float(workspace), options.get("tensorrt_max_batch_size"))
