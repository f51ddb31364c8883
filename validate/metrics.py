"""How close a candidate's audio is to the reference's: the numbers behind every pass/fail verdict.

Cosine similarity and SNR catch gain and phase errors over the whole signal; the multi-resolution
log-mel distance weighs errors the way a listener hears them (a quiet hiss that SNR forgives
still shows in the silent bands). Thresholds come from pipeline.toml, per precision.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from export.mels import MelSpec, log_mel


def cosine_similarity(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Cosine of the angle between the two signals, flattened; 1.0 for identical shapes of sound."""
    ref, cand = _pair(reference, candidate)
    denominator = np.linalg.norm(ref) * np.linalg.norm(cand)
    if denominator == 0:
        return 1.0 if not ref.any() and not cand.any() else 0.0
    return float(np.dot(ref, cand) / denominator)


def mean_squared_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    ref, cand = _pair(reference, candidate)
    return float(np.mean((ref - cand) ** 2))


def snr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-noise ratio in dB, the difference counted as noise; inf when the two are equal."""
    ref, cand = _pair(reference, candidate)
    noise = float(np.sum((ref - cand) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return float(10 * np.log10(signal / noise))


def log_mel_distance(reference: np.ndarray, candidate: np.ndarray, sampling_rate: int,
                     resolutions: list[list[int]], n_mels: int) -> float:
    """Mean absolute difference of natural-log mels, averaged over the STFT (n_fft, hop) resolutions."""
    ref, cand = _pair(reference, candidate)
    distances = []
    for n_fft, hop in resolutions:
        if len(ref) < n_fft:
            continue
        spec = MelSpec(sampling_rate=sampling_rate, n_fft=n_fft, hop=hop, win=n_fft, n_mels=n_mels)
        distances.append(float(np.mean(np.abs(log_mel(ref, spec) - log_mel(cand, spec)))))
    return float(np.mean(distances)) if distances else float("nan")


def audio_metrics(reference: np.ndarray, candidate: np.ndarray, sampling_rate: int,
                  settings: dict[str, Any]) -> dict[str, float]:
    """All four metrics for one pair of signals; the STFT resolutions come from [validate]."""
    validate = settings["validate"]
    return {
        "cosine": cosine_similarity(reference, candidate),
        "mse": mean_squared_error(reference, candidate),
        "snr_db": snr_db(reference, candidate),
        "log_mel_distance": log_mel_distance(reference, candidate, sampling_rate,
                                             validate["stft_resolutions"], validate["stft_mels"]),
    }


def thresholds_for(settings: dict[str, Any], precision: str) -> dict[str, float]:
    """The precision's pass thresholds; precisions that set none (fp32) get [validate]'s strict ones."""
    own = settings.get("precisions", {}).get(precision, {})
    fallback = settings["validate"]
    return {"cosine_min": float(own.get("cosine_min", fallback["cosine_min"])),
            "snr_min_db": float(own.get("snr_min_db", fallback["snr_min_db"]))}


def failures(metrics: dict[str, float], thresholds: dict[str, float]) -> list[str]:
    """One phrase per threshold the metrics miss; empty when the candidate passes."""
    missed = []
    if not metrics["cosine"] >= thresholds["cosine_min"]:
        missed.append(f"cosine {metrics['cosine']:.6f} < {thresholds['cosine_min']}")
    if not metrics["snr_db"] >= thresholds["snr_min_db"]:
        missed.append(f"SNR {metrics['snr_db']:.1f} dB < {thresholds['snr_min_db']} dB")
    return missed


def _pair(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(-1)
    if ref.shape != cand.shape:
        raise ValueError(f"reference has {ref.size} samples, candidate {cand.size}")
    return ref, cand
