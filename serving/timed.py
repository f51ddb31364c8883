"""The drop-in's vocoder call: what stands where GPT-SoVITS keeps its vocoder module, whichever
backend serves it (the engine: serving/gpt_sovits/dropin.py `EngineVocoder`; the fast tier:
serving/torch_tier/fallback.py `TierVocoder`).

Each call's mel is checked first, by the runtime's own mel check (runtime/mel.py). A mel that no
vocoder can turn into audio (NaN or Inf values, no frames, the wrong shape) is refused for that call
only: one line to the caller, and the next call is served as before. Passing such a call to
GPT-SoVITS' PyTorch vocoder would buy nothing: from NaN it makes NaN audio, and from an empty mel it
raises. Only a failure of the backend itself may hand the process to the fallback.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Tuple

import torch
from torch import nn

from pipeline.errors import UserError
from runtime.errors import RuntimeUserError
from runtime.mel import check_mel

log = logging.getLogger("serving")


class TimedVocoder(nn.Module):
    """Same call, same tensors in and out as GPT-SoVITS' vocoder (`.pytorch`, its own module); each
    call checked, timed (to the audio on the host or synchronised on the GPU) and recorded with
    `record(backend, seconds, audio_seconds)`. Subclasses say what serves: `vocode(mel)`."""

    def __init__(self, pytorch: nn.Module, sampling_rate: int, n_mels: int, record: Callable[[str, float, float], None]):
        super().__init__()
        self.pytorch = pytorch
        self.sampling_rate = int(sampling_rate)
        self.n_mels = int(n_mels)
        self.record = record

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        self.refuse_unusable(mel)
        start = time.perf_counter()
        backend, audio = self.vocode(mel)
        if audio.is_cuda:
            torch.cuda.synchronize(audio.device)
        seconds = time.perf_counter() - start
        audio_seconds = audio.shape[-1] / self.sampling_rate
        self.record(backend, seconds, audio_seconds)
        log.debug("vocoder %s: %s mel in %.1f ms, %.3f s of audio", backend, tuple(mel.shape), seconds * 1000, audio_seconds)
        return audio

    def vocode(self, mel: torch.Tensor) -> Tuple[str, torch.Tensor]:
        """(backend that served, audio) for a checked mel."""
        raise NotImplementedError

    def refuse_unusable(self, mel) -> None:
        """One line to this call's caller when its mel cannot be vocoded; nothing changes for the next."""
        try:
            check_mel(mel, self.n_mels)
        except RuntimeUserError as error:
            log.warning("one vocoder call refused, the next ones are served as before: %s", error)
            raise UserError(f"the vocoder was given a mel it cannot turn into audio ({error})") from None
