"""The audio quality bar: how close a candidate's audio is to a reference's, and whether that passes.

The one place the pass/fail numbers are computed and judged: the fp16 precision search
(export/precision.py) and validate (compare, report, bench) both call it, so a mixed model the
search accepts is one validate accepts. numpy only; comparisons are exact (values are rounded for
display, never before judging).
"""
from __future__ import annotations

import numpy as np


def paired(reference, candidate) -> tuple[np.ndarray, np.ndarray]:
    """Both signals flattened to float64, or ValueError when their lengths differ."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(-1)
    if ref.shape != cand.shape:
        raise ValueError(f"reference has {ref.size} samples, candidate {cand.size}")
    return ref, cand


def cosine_similarity(reference, candidate) -> float:
    """Cosine of the angle between the two signals, flattened; 1.0 for the same shape of sound."""
    ref, cand = paired(reference, candidate)
    if not np.isfinite(cand).all():
        return 0.0
    denominator = np.linalg.norm(ref) * np.linalg.norm(cand)
    if denominator == 0:
        return 1.0 if not ref.any() and not cand.any() else 0.0
    return float(np.dot(ref, cand) / denominator)


def snr_db(reference, candidate) -> float:
    """Signal-to-noise ratio in dB, the difference counted as noise; inf when the two are equal."""
    ref, cand = paired(reference, candidate)
    if not np.isfinite(cand).all():
        return float("-inf")
    noise = float(np.sum((ref - cand) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return float(10 * np.log10(signal / noise))


def max_error_over_peak(reference, candidate) -> float:
    """Largest absolute difference relative to the reference's peak (parity checks of float32 graphs)."""
    ref, cand = paired(reference, candidate)
    return float(np.abs(cand - ref).max() / max(np.abs(ref).max(), 1e-12))


def within_float32_noise(error: float, float32_error: float, tolerance: float, margin: float) -> bool:
    """The parity rule of export and clean: a float32 graph `error` (max error over peak) from the
    float64 truth passes within `tolerance`, or when it is at most `margin` times as far as a trusted
    float32 evaluation of the same function (`float32_error`), i.e. within float32's own noise there."""
    return error <= tolerance or error <= margin * float32_error


def audio_errors(reference, candidate) -> dict:
    """Cosine, SNR and finiteness of `candidate` against `reference`, unrounded."""
    finite = bool(np.isfinite(np.asarray(candidate)).all())
    return {"cosine": cosine_similarity(reference, candidate), "snr_db": snr_db(reference, candidate), "finite": finite}


def worst(errors: list) -> dict:
    """The lowest cosine and SNR over several measurements, finite only if all were."""
    return {"cosine": min(e["cosine"] for e in errors), "snr_db": min(e["snr_db"] for e in errors),
            "finite": all(e["finite"] for e in errors)}


def bar_for(settings: dict, precision: str) -> dict:
    """The precision's pass thresholds; precisions that set none (fp32) get [validate]'s strict ones."""
    own = settings["precisions"].get(precision, {})
    fallback = settings["validate"]
    return {"cosine_min": float(own.get("cosine_min", fallback["cosine_min"])),
            "snr_min_db": float(own.get("snr_min_db", fallback["snr_min_db"]))}


def failures(errors: dict, bar: dict, margin_db: float = 0.0) -> list:
    """One phrase per threshold missed (empty: it passes); `margin_db` raises the SNR bar."""
    missed = []
    if not errors.get("finite", True):
        missed.append("audio has NaN or Inf samples")
    if not errors["cosine"] >= bar["cosine_min"]:
        missed.append(f"cosine {errors['cosine']:.6f} < {bar['cosine_min']}")
    if not errors["snr_db"] >= bar["snr_min_db"] + margin_db:
        missed.append(f"SNR {errors['snr_db']:.3f} dB < {bar['snr_min_db'] + margin_db} dB")
    return missed


def meets_bar(errors: dict, bar: dict, margin_db: float = 0.0) -> bool:
    return not failures(errors, bar, margin_db)


def rounded(errors: dict) -> dict:
    """For reports and precision files only: fewer digits to read, after the verdict was made."""
    return {key: (round(value, 8 if key == "cosine" else 3) if isinstance(value, float) else value)
            for key, value in errors.items()}
