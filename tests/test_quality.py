"""The one quality bar (pipeline/quality.py): hand-computed values, exact verdicts at the edge, and the
config's thresholds, shared by the fp16 precision search and validate."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import quality
from pipeline.settings import load_settings


def test_values_match_hand_computation():
    assert quality.cosine_similarity([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert quality.cosine_similarity([1, 0], [0, 1]) == pytest.approx(0.0)
    assert quality.cosine_similarity([1, 1], [1, 0]) == pytest.approx(1 / math.sqrt(2))
    assert quality.snr_db([3, 4], [3, 5]) == pytest.approx(10 * math.log10(25))  # signal 25, noise 1
    assert quality.snr_db([1, 2], [1, 2]) == math.inf
    assert quality.max_error_over_peak([1.0, -4.0], [1.5, -4.0]) == pytest.approx(0.125)
    with pytest.raises(ValueError):
        quality.snr_db([1, 2], [1, 2, 3])


def test_non_finite_audio_never_passes():
    errors = quality.audio_errors([1.0, 2.0], [1.0, np.nan])
    assert errors == {"cosine": 0.0, "snr_db": -math.inf, "finite": False}
    assert "NaN or Inf" in quality.failures(errors, {"cosine_min": 0.0, "snr_min_db": -1e9})[0]


def test_the_verdict_is_exact_at_the_edge():
    """39.996 dB is below a 40 dB bar: nothing is rounded before judging (the precision search once rounded to 0.01 dB)."""
    bar = quality.bar_for(load_settings(), "fp16")
    reference = np.sin(np.linspace(0, 50, 4000))
    noise = np.cos(np.linspace(0, 77, 4000))
    scale = math.sqrt(np.sum(reference ** 2) / np.sum(noise ** 2) / 10 ** (39.996 / 10))
    errors = quality.audio_errors(reference, reference + scale * noise)
    assert errors["snr_db"] == pytest.approx(39.996, abs=1e-9)
    assert not quality.meets_bar(errors, bar) and quality.rounded(errors)["snr_db"] == 39.996
    assert quality.meets_bar(errors, dict(bar, snr_min_db=39.99))


def test_thresholds_follow_the_config():
    settings = load_settings()
    fp16 = quality.bar_for(settings, "fp16")
    assert fp16 == {"cosine_min": settings["precisions"]["fp16"]["cosine_min"],
                    "snr_min_db": settings["precisions"]["fp16"]["snr_min_db"]}
    assert quality.bar_for(settings, "fp32")["snr_min_db"] == settings["validate"]["snr_min_db"]
    assert quality.failures({"cosine": 1.0, "snr_db": 90.0, "finite": True}, fp16) == []
    missed = quality.failures({"cosine": 0.99, "snr_db": 20.0, "finite": True}, fp16)
    assert len(missed) == 2 and "cosine" in missed[0] and "SNR" in missed[1]
    assert quality.failures({"cosine": 1.0, "snr_db": 41.0, "finite": True}, fp16, margin_db=3.0)
