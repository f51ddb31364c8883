"""What the GPT-SoVITS drop-in serves when no engine can: the fast tier or the plain module.

`fallback_vocoder` is called by the drop-in's one fallback place with GPT-SoVITS' own module and
the reason the engine was not used; it picks the tier (`choose_tier`, and the `tensorrt_fallback`
setting: `fast`, the default, or `plain`), says so in one log line, and returns the module to put
in `tts.vocoder`: a `TierVocoder` around a FastVocoder, or the module itself.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn

from pipeline.errors import UserError
from runtime.streaming import architecture_window
from serving.torch_tier.fast import TIER_FAST, FastVocoder, choose_tier
from vocoder_models.vocoders import BigVGANConfig, HiFiGANConfig

log = logging.getLogger("serving")

FALLBACK_KEY = "tensorrt_fallback"
FALLBACKS = ("fast", "plain")


def fallback_setting(options: Mapping[str, Any]) -> str:
    """The `tensorrt_fallback` of the yaml section (default `fast`), checked."""
    value = options.get(FALLBACK_KEY, "fast")
    if value not in FALLBACKS:
        raise UserError(f"tts_infer.yaml `tensorrt:` {FALLBACK_KEY} must be one of {', '.join(FALLBACKS)}, got {value!r}")
    return value


class TierVocoder(nn.Module):
    """Stands where GPT-SoVITS keeps its vocoder: the same call and tensors, served by the fast tier;
    `.pytorch` is GPT-SoVITS' own module (its anti-aliased activations fused in place, same keys)."""

    def __init__(self, pytorch: nn.Module, fast: FastVocoder, sampling_rate: int, record: Callable[[str, float, float], None]):
        super().__init__()
        self.pytorch = pytorch
        self.fast = fast
        self.sampling_rate = sampling_rate
        self.record = record

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        audio = self.fast(mel)
        if audio.is_cuda:
            torch.cuda.synchronize(audio.device)
        self.record(TIER_FAST, time.perf_counter() - start, audio.shape[-1] / self.sampling_rate)
        return audio

    def tier_stats(self) -> dict:
        """The fast tier's graphs, buckets and pool (FastVocoder.stats)."""
        return self.fast.stats()


def fallback_vocoder(module: nn.Module, vocoder: str, precision: str, reason: Optional[str], options: Mapping[str, Any],
                     record: Callable[[str, float, float], None]) -> nn.Module:
    """The module that serves `vocoder` without an engine; one log line names why the engine was not
    used (`reason`; None: already said, no line) and which tier serves instead, and why."""
    parameter = next(module.parameters())
    tier, why = choose_tier(parameter.device, fallback_setting(options))
    if reason is not None:
        log.warning("TensorRT %s %s vocoder unavailable (%s); GPT-SoVITS keeps its PyTorch vocoder [tier: %s: %s]",
                    vocoder, precision, reason, tier, why)
    if tier != TIER_FAST:
        return module
    window = architecture_window(vocoder)
    config = BigVGANConfig() if vocoder == "v3" else HiFiGANConfig()  # GPT-SoVITS' v3 and v4 generators
    hop = getattr(module, "hop", None) or math.prod(config.upsample_rates)
    rate = getattr(module, "sampling_rate", None) or config.sampling_rate
    fast = FastVocoder(module, hop, context=window.context, lookahead=window.lookahead, fuse=vocoder == "v3")
    return TierVocoder(module, fast, rate, record)
