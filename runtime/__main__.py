"""python -m runtime ENGINE.plan --mel MEL.npy --output OUT.wav [--float] [--stream STEP_FRAMES] [--cuda-graphs]"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.engine import load_engine
from runtime.errors import CommandParser, RuntimeUserError, run_main
from runtime.files import input_file
from runtime.limits import MAX_ARRAY_BYTES, within
from runtime.manifest import manifest_path, read_manifest
from runtime.mel import check_mel, check_mel_size
from runtime.wav import to_pcm16, write_wav

log = logging.getLogger("runtime")


def load_mel(path: str | Path, n_mels: int) -> np.ndarray:
    """A checked (batch, n_mels, frames) mel from a .npy file; (n_mels, frames) gets a batch axis."""
    path = input_file(path, "mel file", "pass a .npy file of shape (n_mels, frames) or (batch, n_mels, frames)")
    try:
        check_npy_size(path)
        mel = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise RuntimeUserError(f"{path} is not a numeric .npy array ({error}); save the mel with numpy.save") from None
    return check_mel(mel[None] if mel.ndim == 2 else mel, n_mels)


def check_npy_size(path: Path) -> None:
    """Refuse from the .npy header a shape larger than runtime/limits.py allows or than the file
    holds, before numpy allocates it (a crafted header can claim terabytes)."""
    with open(path, "rb") as stream:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
        holds = os.fstat(stream.fileno()).st_size - stream.tell()
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    within(claimed, 0, MAX_ARRAY_BYTES, f"the array {path} claims (shape {shape}, {dtype}) in bytes",
           "pass a smaller mel or cut it into pieces")
    if len(shape) in (2, 3) and all(shape):
        check_mel_size((1,) * (3 - len(shape)) + tuple(shape))  # as float32, before numpy reads (and check_mel converts)
    if claimed > holds and not dtype.hasobject:
        raise RuntimeUserError(f"{path} claims shape {shape} ({claimed} bytes) but holds {holds}; the file is truncated, "
                               "save the mel again with numpy.save")


def audio_for_file(audio: np.ndarray, float32: bool) -> np.ndarray:
    """Batch items one after another; for PCM each is peak-normalised on its own, as GPT-SoVITS
    does per fragment."""
    items = [item.reshape(-1) for item in audio]
    return np.concatenate(items if float32 else [to_pcm16(item) for item in items])


def streamed(engine, mel: np.ndarray, step: int) -> np.ndarray:
    """The mel through a Stream in pushes of `step` frames, one step each, and log the time to the
    first audio and the real-time factor. Context and lookahead are the exact reach, so every
    sample comes from the same mel frames as in the offline pass (the file is the same file)."""
    left, right = engine.window.reach
    pieces, first_audio = [], None
    started = time.perf_counter()
    with engine.stream(context_frames=right, lookahead_frames=left, step_frames=step) as stream:
        for start in range(0, mel.shape[2], step):
            pieces.append(stream.push(mel[:, :, start:start + step]))
            if first_audio is None and pieces[-1].shape[2]:
                first_audio = time.perf_counter() - started
        pieces.append(stream.finish())
        calls = stream.calls
    seconds = time.perf_counter() - started
    audio = np.concatenate(pieces, axis=2)
    log.info("streamed in pushes of %d frames (context %d, lookahead %d): first audio after %.1f ms, real-time factor %.4f, "
             "%d engine calls", step, right, left, 1000 * (seconds if first_audio is None else first_audio),
             seconds / (audio.shape[2] / engine.sampling_rate), calls)
    return audio


def main(argv: Sequence[str] | None = None) -> int:
    parser = CommandParser(prog="python -m runtime",
                                     description="Turn a log-mel (.npy) into a WAV with a vocoder plan.")
    parser.add_argument("plan", help="ENGINE.plan, with its manifest ENGINE.json beside it")
    parser.add_argument("--mel", required=True, help="(n_mels, frames) or (batch, n_mels, frames) natural-log mel, .npy")
    parser.add_argument("--output", required=True, help="WAV to write (batch items one after another)")
    parser.add_argument("--float", action="store_true", help="32-bit float samples instead of 16-bit PCM")
    parser.add_argument("--stream", type=int, metavar="STEP_FRAMES",
                        help="feed the mel through a stream in pushes of STEP_FRAMES frames and print the time to first audio "
                             "and the real-time factor (same audio as without --stream)")
    parser.add_argument("--cuda-graphs", action="store_true", help="capture and replay the enqueue per shape")
    args = parser.parse_args(argv)
    manifest = read_manifest(args.plan)
    mel = load_mel(args.mel, manifest["n_mels"])
    with load_engine(args.plan, cuda_graphs=args.cuda_graphs) as engine:
        audio = engine(mel) if args.stream is None else streamed(engine, mel, args.stream)
    samples = audio_for_file(audio, args.float)
    write_wav(args.output, samples, manifest["sampling_rate"], float32=args.float,
              inputs=(args.plan, manifest_path(args.plan), args.mel))
    log.info("wrote %s: %d samples, %.2f s at %d Hz (%s)", args.output, samples.size, samples.size / manifest["sampling_rate"],
             manifest["sampling_rate"], "float32" if args.float else "16-bit PCM")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
