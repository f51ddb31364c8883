"""One picture of a comparison: both waveforms, their difference, and both spectrograms."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.files import atomic_output


def plot_comparison(reference: np.ndarray, candidate: np.ndarray, sampling_rate: int,
                    path: str | Path, title: str) -> Path:
    """Write a PNG with five panels; the difference panel has its own scale so small errors show."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = np.asarray(reference, dtype=np.float32).reshape(-1)
    cand = np.asarray(candidate, dtype=np.float32).reshape(-1)
    seconds = np.arange(len(ref)) / sampling_rate
    figure, axes = plt.subplots(5, 1, figsize=(11, 12), constrained_layout=True)
    axes[0].plot(seconds, ref, linewidth=0.5)
    axes[0].set_title("reference")
    axes[1].plot(seconds, cand, linewidth=0.5, color="tab:orange")
    axes[1].set_title("candidate")
    axes[2].plot(seconds, cand - ref, linewidth=0.5, color="tab:red")
    axes[2].set_title(f"candidate - reference (max abs {np.abs(cand - ref).max():.2e})")
    for axis in axes[:3]:
        axis.set_xlim(0, seconds[-1] if len(seconds) else 1)
        axis.set_xlabel("seconds")
    for axis, signal, name in ((axes[3], ref, "reference"), (axes[4], cand, "candidate")):
        axis.specgram(signal, NFFT=1024, Fs=sampling_rate, noverlap=768, cmap="magma")
        axis.set_title(f"{name} spectrogram")
        axis.set_ylabel("Hz")
    figure.suptitle(title)
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=80)
    plt.close(figure)
    return Path(path)
