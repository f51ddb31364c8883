"""The drop-in's running counts: calls per backend, latency percentiles, real-time factor."""
from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

import numpy as np


class VocoderStats:
    """Running counts a service can read (thread-safe): calls per backend, latency median and 95th
    percentile over the last `window` calls, and the overall real-time factor."""

    def __init__(self, window: int):
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=window)
        self._calls: Counter[str] = Counter()
        self._busy_seconds = 0.0
        self._audio_seconds = 0.0

    def record(self, backend: str, seconds: float, audio_seconds: float) -> None:
        with self._lock:
            self._calls[backend] += 1
            self._latencies.append(seconds)
            self._busy_seconds += seconds
            self._audio_seconds += audio_seconds

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            latencies = np.asarray(self._latencies) * 1000.0
            return {
                "calls": sum(self._calls.values()),
                "tensorrt_calls": self._calls["tensorrt"],
                "pytorch_calls": self._calls["pytorch"],
                "pytorch_fast_calls": self._calls["pytorch-fast"],
                "median_ms": float(np.median(latencies)) if latencies.size else None,
                "p95_ms": float(np.percentile(latencies, 95)) if latencies.size else None,
                "real_time_factor": self._busy_seconds / self._audio_seconds if self._audio_seconds else None,
            }
