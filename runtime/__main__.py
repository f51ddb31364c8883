"""python -m runtime ENGINE.plan --mel MEL.npy --output OUT.wav [--float] [--cuda-graphs]"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.engine import load_engine
from runtime.errors import RuntimeUserError, run_main
from runtime.manifest import read_manifest
from runtime.mel import check_mel
from runtime.wav import to_pcm16, write_wav

log = logging.getLogger("runtime")


def load_mel(path: str | Path, n_mels: int) -> np.ndarray:
    """A checked (batch, n_mels, frames) mel from a .npy file; (n_mels, frames) gets a batch axis."""
    path = Path(path)
    try:
        mel = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise RuntimeUserError(f"mel file {path} not found; pass a .npy file of shape (n_mels, frames) or (batch, n_mels, frames)") from None
    except (ValueError, OSError) as error:
        raise RuntimeUserError(f"{path} is not a numeric .npy array ({error}); save the mel with numpy.save") from None
    return check_mel(mel[None] if mel.ndim == 2 else mel, n_mels)


def audio_for_file(audio: np.ndarray, float32: bool) -> np.ndarray:
    """Batch items one after another; for PCM each is peak-normalised on its own, as GPT-SoVITS
    does per fragment."""
    items = [item.reshape(-1) for item in audio]
    return np.concatenate(items if float32 else [to_pcm16(item) for item in items])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime", description="Turn a log-mel (.npy) into a WAV with a vocoder plan.")
    parser.add_argument("plan", help="ENGINE.plan, with its manifest ENGINE.json beside it")
    parser.add_argument("--mel", required=True, help="(n_mels, frames) or (batch, n_mels, frames) natural-log mel, .npy")
    parser.add_argument("--output", required=True, help="WAV to write (batch items one after another)")
    parser.add_argument("--float", action="store_true", help="32-bit float samples instead of 16-bit PCM")
    parser.add_argument("--cuda-graphs", action="store_true", help="capture and replay the enqueue per shape")
    args = parser.parse_args(argv)
    manifest = read_manifest(args.plan)
    mel = load_mel(args.mel, manifest["n_mels"])
    with load_engine(args.plan, cuda_graphs=args.cuda_graphs) as engine:
        audio = engine(mel)
    samples = audio_for_file(audio, args.float)
    write_wav(args.output, samples, manifest["sampling_rate"], float32=args.float)
    log.info("wrote %s: %d samples, %.2f s at %d Hz (%s)", args.output, samples.size, samples.size / manifest["sampling_rate"],
             manifest["sampling_rate"], "float32" if args.float else "16-bit PCM")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
