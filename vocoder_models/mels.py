"""Log-mel spectrograms as GPT-SoVITS feeds its vocoders, and speech-like test signals.

The vocoders' input contract lives here with the models: 100 Slaney-scaled mel bands of the
magnitude STFT (periodic Hann window, no centering, reflect padding of (n_fft - hop) / 2 each
side, magnitude sqrt(|X|^2 + 1e-8)), natural log clamped at 1e-5; fmax = Nyquist. The
speech-like signal gives sample mels in the real range (roughly -12 to 2) for calibration,
the precision search and tests.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class MelSpec:
    """The analysis that produces a vocoder's input mel."""

    sampling_rate: int
    n_fft: int
    hop: int
    win: int
    n_mels: int = 100
    fmin: float = 0.0
    fmax: float | None = None


# v3 analyses 24 kHz audio; v4 analyses 32 kHz audio (and synthesises 48 kHz, 480 samples a frame)
MEL_SPECS = {
    "v3": MelSpec(sampling_rate=24000, n_fft=1024, hop=256, win=1024),
    "v4": MelSpec(sampling_rate=32000, n_fft=1280, hop=320, win=1280),
}


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_region = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_region, linear)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3)
    log_region = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_region, linear)


def mel_filterbank(spec: MelSpec) -> np.ndarray:
    """Slaney-style, area-normalised triangular filters (librosa's default), (n_mels, n_fft//2+1)."""
    fmax = spec.fmax if spec.fmax is not None else spec.sampling_rate / 2
    fft_freqs = np.linspace(0, spec.sampling_rate / 2, spec.n_fft // 2 + 1)
    edges = _slaney_mel_to_hz(np.linspace(_hz_to_slaney_mel(spec.fmin), _hz_to_slaney_mel(fmax), spec.n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def log_mel(audio: np.ndarray, spec: MelSpec) -> np.ndarray:
    """Natural-log mel of mono float audio in [-1, 1]: (n_mels, frames), frames = len // hop."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    pad = (spec.n_fft - spec.hop) // 2
    padded = np.pad(audio, (pad, pad), mode="reflect")
    count = 1 + (len(padded) - spec.n_fft) // spec.hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, spec.n_fft)[::spec.hop][:count]
    window = np.zeros(spec.n_fft, dtype=np.float64)
    offset = (spec.n_fft - spec.win) // 2
    window[offset:offset + spec.win] = np.hanning(spec.win + 1)[:-1]  # periodic Hann, as torch.hann_window
    spectrum = np.fft.rfft(frames * window, axis=-1)
    # GPT-SoVITS' mel_spectrogram_torch: sqrt(|X|^2 + 1e-8) (older releases: 1e-9; the two differ
    # only in near-silent bins, far below the 1e-5 clamp)
    magnitude = np.sqrt(spectrum.real ** 2 + spectrum.imag ** 2 + 1e-8)
    mel = mel_filterbank(spec) @ magnitude.T.astype(np.float32)
    return np.log(np.maximum(mel, 1e-5)).astype(np.float32)


def speech_like_audio(seconds: float, sampling_rate: int, seed: int = 0) -> np.ndarray:
    """A voiced, gliding harmonic signal with formant-like emphasis, pauses and breath noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    pitch = 140 * (1 + 0.25 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) + 0.03 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sampling_rate
    formants = rng.uniform([500, 1400, 2600], [800, 2000, 3200])
    voiced = np.zeros_like(t)
    for harmonic in range(1, 40):
        frequency = harmonic * pitch
        gain = sum(np.exp(-((frequency - f) / 180.0) ** 2) for f in formants) + 0.05 / harmonic
        voiced += np.where(frequency < sampling_rate / 2, gain, 0.0) * np.sin(harmonic * phase)
    syllables = np.clip(np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)) * 1.5 + 0.4, 0, 1)
    breath = 0.02 * rng.standard_normal(len(t))
    audio = syllables * voiced + breath
    return (0.6 * audio / np.abs(audio).max()).astype(np.float32)


def sample_mel(vocoder: str, frames: int, batch: int = 1, seed: int = 0, n_mels: int | None = None) -> np.ndarray:
    """Realistic log-mels (batch, n_mels, frames) for `vocoder`, each batch item from its own signal;
    `n_mels` for a model of other bands than GPT-SoVITS' 100 (BigVGAN v2's 80- and 128-band variants)."""
    spec = MEL_SPECS[vocoder] if n_mels is None else replace(MEL_SPECS[vocoder], n_mels=n_mels)
    seconds = (frames + 2) * spec.hop / spec.sampling_rate
    mels = [log_mel(speech_like_audio(seconds, spec.sampling_rate, seed + item), spec)[:, :frames]
            for item in range(batch)]
    return np.stack(mels).astype(np.float32)
