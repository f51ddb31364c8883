"""The proof at start: a tier serves in GPT-SoVITS' place only once it has made the audio GPT-SoVITS'
own vocoder makes.

The first time a vocoder is served (per vocoder, precision, device and tier), GPT-SoVITS' PyTorch
module and the tier about to serve (the TensorRT engine or the fast tier) vocode one short fixed
speech-like mel ([serving.gpt_sovits] proof_frames: beyond twice the vocoder's reach, so the middle
of the audio is computed away from both edges, and past the fast tier's smallest window, so its
padded window and its tail window both run). The tier serves when the two agree within the
precision's quality bar (pipeline/quality.py `bar_for`, thresholds in pipeline.toml); otherwise
GPT-SoVITS keeps its own module. One log line either way, with the figures.

The tier is called without its safety net (an engine that fails mid-call hands over to PyTorch in
`EngineVocoder.forward`: that would prove PyTorch against itself) and without counting in the stats.
A tier may change GPT-SoVITS' module in place (the fast tier fuses its activations): the module's
tree is put back for the reference and, when the proof fails, for good.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import time
from typing import Callable, Dict, Iterator, List, Tuple

import numpy as np
import torch
from torch import nn

from pipeline.quality import audio_errors, bar_for, failures
from runtime.errors import reason_of
from serving.torch_tier.fallback import TierVocoder
from serving.torch_tier.fast import TIER_FAST, TIER_PLAIN
from vocoder_models.mels import sample_mel

log = logging.getLogger("serving")

TIER_ENGINE = "tensorrt"
Tree = List[Tuple[nn.Module, str, nn.Module]]


class StartProof:
    """The verdicts so far (vocoder, precision, device, tier -> served or not) and the settings
    that give the mel and the bars."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.verdicts: Dict[Tuple[str, str, str, str], bool] = {}

    def served(self, module: nn.Module, build: Callable[[], nn.Module], vocoder: str, precision: str) -> nn.Module:
        """What serves `vocoder`: the tier `build()` makes around GPT-SoVITS' `module` when it is
        proven (now, or before for the same key), else `module` as it was before `build`."""
        upstream = module_tree(module)
        tier = build()
        if tier is module:  # GPT-SoVITS' own module serves: nothing to prove
            return module
        key = (vocoder, precision, str(next(module.parameters()).device), tier_name(tier))
        if key not in self.verdicts:
            self.verdicts[key] = self.prove(module, upstream, tier, vocoder, precision)
        if self.verdicts[key]:
            return tier
        put_back(upstream)
        return module

    def prove(self, module: nn.Module, upstream: Tree, tier: nn.Module, vocoder: str, precision: str) -> bool:
        """Vocode the proof's mel both ways, judge against the bar, say so in one line."""
        start = time.perf_counter()
        parameter = next(module.parameters())
        frames = int(self.settings["serving"]["gpt_sovits"]["proof_frames"][vocoder])
        mel = torch.from_numpy(proof_mel(vocoder, frames, int(self.settings["serving"]["gpt_sovits"]["proof_seed"])))
        mel = mel.to(parameter.device, parameter.dtype)
        bar = bar_for(self.settings, precision)
        said = f"GPT-SoVITS {vocoder} vocoder: {tier_name(tier)} {precision}"
        try:
            with torch.no_grad():  # not inference_mode: the fast tier's graphs keep static inputs for later calls
                with swapped_to(module, upstream):
                    reference = host_audio(reference_audio(module, mel))
                errors = audio_errors(reference, host_audio(tier_audio(tier, mel)))
        except Exception as error:  # noqa: BLE001 - what cannot vocode the mel is not proven
            log.warning("%s could not vocode the %d-frame proof mel (%s); GPT-SoVITS keeps its own vocoder [tier: %s]",
                        said, frames, reason_of(error), TIER_PLAIN)
            return False
        figures = (f"SNR {errors['snr_db']:.1f} dB, cosine {errors['cosine']:.6f}; "
                   f"bar {bar['snr_min_db']:g} dB, {bar['cosine_min']:g}")
        if failures(errors, bar):
            log.warning("%s differs from GPT-SoVITS' own on a %d-frame mel (%s); GPT-SoVITS keeps its own vocoder "
                        "[tier: %s]", said, frames, figures, TIER_PLAIN)
            return False
        log.info("%s proven against GPT-SoVITS' own on a %d-frame mel (%s) in %.0f ms [tier: %s]", said, frames,
                 figures, (time.perf_counter() - start) * 1000, tier_name(tier))
        return True


def proof_mel(vocoder: str, frames: int, seed: int) -> np.ndarray:
    """The fixed mel of the proof: (1, 100, frames), speech-like, in GPT-SoVITS' log-mel range."""
    return sample_mel(vocoder, frames, seed=seed)


def reference_audio(module: nn.Module, mel: torch.Tensor) -> torch.Tensor:
    """GPT-SoVITS' own audio for `mel`: its module as it is, except that a half-precision module on
    the CPU runs as a float32 copy. GPT-SoVITS never runs half on the CPU (TTS_Config turns is_half
    off there), and torch's CPU half convolutions take minutes for a v4 proof mel."""
    if mel.device.type == "cpu" and mel.dtype != torch.float32:
        return copy.deepcopy(module).float()(mel.float())
    return module(mel)


def tier_name(tier: nn.Module) -> str:
    return TIER_FAST if isinstance(tier, TierVocoder) else TIER_ENGINE


def tier_audio(tier: nn.Module, mel: torch.Tensor) -> torch.Tensor:
    """What the tier itself makes of `mel`: no hand-over to PyTorch on failure, no stats."""
    if isinstance(tier, TierVocoder):
        return tier.fast(mel)
    return tier._engine_audio(mel)  # EngineVocoder (dropin.py): its forward would fall back to PyTorch


def host_audio(audio: torch.Tensor) -> np.ndarray:
    return audio.detach().float().cpu().numpy()


def module_tree(module: nn.Module) -> Tree:
    """Every (parent, name, child) of `module` as it is now."""
    return [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()]


def put_back(tree: Tree) -> None:
    """Each parent's children as `tree` recorded them (what a tier replaced in place comes back)."""
    for parent, name, child in tree:
        setattr(parent, name, child)


@contextlib.contextmanager
def swapped_to(module: nn.Module, tree: Tree) -> Iterator[None]:
    """`module` with the children of `tree` for the duration, its current ones after."""
    current = module_tree(module)
    put_back(tree)
    try:
        yield
    finally:
        put_back(current)
