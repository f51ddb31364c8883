"""The `tensorrt:` switches (vocoder, precision, workspace, batch, what serves without an engine):
where they are read from, and `install()`'s keywords.

They live in a `tensorrt:` section of this project's own file, GPT_SoVITS/configs/vocoder_tensorrt.yaml
(OWN_FILE), beside GPT-SoVITS' tts_infer.yaml, because GPT-SoVITS rewrites tts_infer.yaml on every
start (TTS_Config.save_configs, called by TTS.init_vits_weights) and, before its rework of
2025-07-18 (b921165: 20250228v3, 20250422v4, 20250606v2pro), writes back and keeps in
`configs.default_configs` only sections of its own: a `tensorrt:` section there is lost at the first
start. Since b921165 (48b1a01) TTS_Config keeps every top-level section, so a `tensorrt:` section of
tts_infer.yaml still serves where the own file has none (`switches` holds the rule: the own file's
section wins, with one line saying tts_infer.yaml's is ignored). No keys go in `custom:`, which
every revision rewrites with its own seven.

A section is checked whole before anything is attached (`checked_options`, with the spec types of
pipeline/schema.py). A bad section, or an unreadable own file, is one warning line and GPT-SoVITS
starts with its own vocoder; a bad keyword given to `install()` is the caller's code, and raises.
"""
from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

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
OWN_FILE = "vocoder_tensorrt.yaml"  # this project's settings, in GPT_SoVITS/configs/ beside tts_infer.yaml
MAX_YAML_BYTES = 1 << 20  # GPT-SoVITS' own tts_infer.yaml is about 3 KB
RESTORE_TTS_INFER = "restore GPT-SoVITS' own tts_infer.yaml"
FIX_OWN_FILE = f"make {OWN_FILE} a small YAML text file, or delete it"
ABSENT = object()  # a file without a `tensorrt:` section, or no file
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
    """The `tensorrt:` section of the tts_infer.yaml that built `tts`, as GPT-SoVITS kept it (empty
    when there is none; GPT-SoVITS before 2025-07-18 keeps none); `checked_options` checks it."""
    found = kept_section(tts)
    return {} if found is ABSENT else found


def kept_section(tts) -> Any:
    """tts_infer.yaml's `tensorrt:` section as TTS_Config kept it (ABSENT: none kept)."""
    kept = getattr(tts.configs, "default_configs", None) or {}
    return (kept[YAML_SECTION] or {}) if YAML_SECTION in kept else ABSENT


def configs_path(tts) -> Optional[Path]:
    """The tts_infer.yaml that built `tts` (TTS_Config.configs_path; a relative one from the working
    directory, as GPT-SoVITS reads it; a TTS built from a dict has GPT-SoVITS' default path there).
    None where the configs name no file."""
    path = getattr(tts.configs, "configs_path", None)
    return Path(path) if isinstance(path, (str, os.PathLike)) and str(path) else None


def switches(own: Optional[Path], tts_infer: Callable[[], Any], tts_infer_name: str) -> tuple[Any, str]:
    """The `tensorrt:` section that serves, and the file it comes from: the own file's where it has
    one (and one line where tts_infer.yaml has one too, which is then ignored), else tts_infer.yaml's
    (empty without one). A bad own file raises UserError; tts_infer.yaml is not read when the own
    file's section serves, except to say that its own is ignored."""
    section = ABSENT if own is None else file_section(own, FIX_OWN_FILE)
    if section is ABSENT:
        found = tts_infer()
        return ({} if found is ABSENT else found), tts_infer_name
    try:
        ignored = tts_infer() is not ABSENT
    except UserError:  # unreadable: nothing of it serves either way
        ignored = False
    if ignored:
        log.info("the `%s:` section of %s is ignored: %s has one, and it serves", YAML_SECTION, tts_infer_name, own)
    return section, str(own)


def install_options(tts, options: Optional[Mapping[str, Any]], fallback: Optional[str],
                    settings: dict[str, Any]) -> Optional[dict[str, Any]]:
    """`install()`'s options, checked: its keywords (a bad one raises), else the `tensorrt:` section
    that `switches` chooses for `tts` (a bad one, or a bad own file, is one warning, and None:
    GPT-SoVITS keeps its own vocoder). `fallback` overrides the section's tensorrt_fallback."""
    if options is None:
        try:
            path = configs_path(tts)
            section, source = switches(None if path is None else path.parent / OWN_FILE, lambda: kept_section(tts),
                                       str(path or "tts_infer.yaml"))
            options = checked_options(section, source, settings)
        except UserError as error:
            log.warning(KEEPS_OWN, error)
            return None
    if fallback is not None:
        options = {**options, FALLBACK_KEY: fallback}
    return checked_options(options, "install()", settings)


def launcher_options(path: Path) -> dict[str, Any]:
    """The `tensorrt:` section that `switches` chooses beside the tts_infer.yaml at `path`, checked,
    for the default UI (it reads no yaml itself). Where it is refused: one warning naming the
    problem and the fix, and the section reads as `use_tensorrt: false`, so GPT-SoVITS starts with
    its own vocoder."""
    from pipeline.settings import load_settings

    try:
        section, source = switches(path.parent / OWN_FILE, lambda: file_section(path, RESTORE_TTS_INFER), str(path))
        return checked_options(section, source, load_settings())
    except UserError as error:
        log.warning(KEEPS_OWN, error)
        return {"use_tensorrt": False}


def file_section(path: Path, fix: str) -> Any:
    """The `tensorrt:` section of the yaml file at `path` (ABSENT without file or section; an empty
    `tensorrt:`, its keys all commented out, is an empty section), building nothing else: the
    document is composed into nodes (an alias is the node it names, however often used, so an alias
    bomb costs its size in bytes) and only the section's scalars are constructed; a list or table
    where a value belongs stands as an empty one of its length, for the message."""
    import yaml  # GPT-SoVITS' own dependency

    text = _yaml_text(path, fix)
    if text is None:
        return ABSENT
    loader = yaml.SafeLoader(text)
    try:
        node = _section_node(loader.get_single_node(), yaml)
        if node is None:
            return ABSENT
        values = _section_values(loader, node, yaml)
        return {} if values is None else values
    except yaml.YAMLError as error:
        raise UserError(f"{path} cannot be read as YAML ({one_line(error, 200)}); fix that line") from None
    finally:
        loader.dispose()


def _yaml_text(path: Path, fix: str) -> Optional[str]:
    """The file's text (None: no file): a regular file of at most MAX_YAML_BYTES, UTF-8."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror or error})") from None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path} is not a regular file (a folder or a device); {fix}")
    if info.st_size > MAX_YAML_BYTES:
        raise UserError(f"{path} is {info.st_size} bytes, more than a settings file holds ({MAX_YAML_BYTES}); {fix}")
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
