"""Validate's audio metrics: the quality bar's cosine, SNR and finiteness as pipeline/quality.py
measures them (it also judges pass/fail), plus two that only inform: MSE and the multi-resolution log-mel distance, which weighs
errors the way a listener hears them (a quiet hiss that SNR forgives still shows in silent bands)."""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.quality import audio_errors, paired
from vocoder_models.mels import MelSpec, log_mel


def mean_squared_error(reference, candidate) -> float:
    ref, cand = paired(reference, candidate)
    return float(np.mean((ref - cand) ** 2))


def log_mel_distance(reference, candidate, sampling_rate: int, resolutions: list[list[int]], n_mels: int) -> float:
    """Mean absolute difference of natural-log mels, averaged over the STFT (n_fft, hop) resolutions."""
    ref, cand = paired(reference, candidate)
    distances = []
    for n_fft, hop in resolutions:
        if len(ref) < n_fft:
            continue
        spec = MelSpec(sampling_rate=sampling_rate, n_fft=n_fft, hop=hop, win=n_fft, n_mels=n_mels)
        distances.append(float(np.mean(np.abs(log_mel(ref, spec) - log_mel(cand, spec)))))
    return float(np.mean(distances)) if distances else float("nan")


def audio_metrics(reference, candidate, sampling_rate: int, settings: dict[str, Any]) -> dict[str, float]:
    """The quality bar's errors (pipeline/quality.py) and the two informing metrics for one pair of
    signals; the STFT resolutions come from [validate]."""
    validate = settings["validate"]
    return {
        **audio_errors(reference, candidate),
        "mse": mean_squared_error(reference, candidate),
        "log_mel_distance": log_mel_distance(reference, candidate, sampling_rate,
                                             validate["stft_resolutions"], validate["stft_mels"]),
    }
