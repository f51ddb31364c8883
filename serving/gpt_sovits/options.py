"""The `tensorrt:` section of GPT-SoVITS' tts_infer.yaml and `install()`'s keywords: which engine
GPT-SoVITS asks for (vocoder, precision, workspace, batch) and what serves without one.

TTS_Config keeps every top-level section in `configs.default_configs` and writes them back
unchanged, while it rewrites the `custom:` section with its own seven keys on every start
(save_configs), so keys put there vanish: the switches live in a section of their own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from pipeline.errors import UserError
from pipeline.settings import check_precision
from serving.torch_tier.fallback import FALLBACK_KEY, fallback_setting

YAML_SECTION = "tensorrt"
YAML_KEYS = ("use_tensorrt", "tensorrt_precision", "tensorrt_workspace_size", "tensorrt_max_batch_size", FALLBACK_KEY)


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


def yaml_options(tts) -> dict[str, Any]:
    """The `tensorrt:` section of the tts_infer.yaml that built `tts` (empty when there is none)."""
    section = (getattr(tts.configs, "default_configs", None) or {}).get(YAML_SECTION) or {}
    if not isinstance(section, Mapping):
        raise UserError(f"tts_infer.yaml: `{YAML_SECTION}:` must be a section of keys ({', '.join(YAML_KEYS)})")
    return dict(section)


def engine_request(options: Mapping[str, Any], vocoder: str, precision: torch.dtype,
                   settings: dict[str, Any]) -> EngineRequest:
    """Check the yaml keys; unset ones default to GPT-SoVITS' own precision and pipeline.toml."""
    unknown = sorted(set(options) - set(YAML_KEYS))
    if unknown:
        raise UserError(f"tts_infer.yaml `{YAML_SECTION}:` has unknown keys {', '.join(unknown)}; "
                        f"the known ones are {', '.join(YAML_KEYS)}")
    fallback_setting(options)
    name = options.get("tensorrt_precision") or ("fp16" if precision == torch.float16 else "fp32")
    check_precision(settings, name)
    workspace = options.get("tensorrt_workspace_size", settings["build"]["workspace_gib"])
    if isinstance(workspace, bool) or not isinstance(workspace, (int, float)) or workspace <= 0:
        raise UserError(f"tensorrt_workspace_size must be a positive number of GiB, got {workspace!r}")
    max_batch = options.get("tensorrt_max_batch_size")
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise UserError(f"tensorrt_max_batch_size must be a positive integer, got {max_batch!r}")
    return EngineRequest(vocoder, name, float(workspace), max_batch)
