"""Mels longer than the engine's largest profile: equal windows, one batched call, overlap-and-discard.

Works on any `infer(mel) -> audio` callable (a TensorRT engine, an ONNX Runtime session in tests)
and on numpy arrays or torch tensors. All windows have the same length, the first starting at
frame 0 and the last ending at the last frame, so they run as one batch with no padding and the
mel's edges are where the offline pass has them. Neighbours overlap by at least
`context + lookahead` frames and hand over in the middle of their overlap, so every frame comes
from a window holding at least `context` frames before it and `lookahead` after it: the rule of
runtime/streaming.py, which gives the single-pass audio to the stream's precision.
"""
from __future__ import annotations

import math
from typing import Callable, List

import numpy as np

from runtime.errors import EngineError, RuntimeUserError
from runtime.mel import is_torch


def chunk_starts(frames: int, chunk_frames: int, overlap_frames: int) -> List[int]:
    """Start frames of equal chunks of `chunk_frames` covering `frames`, evenly spaced so that
    neighbours overlap by at least `overlap_frames`."""
    if overlap_frames < 0 or chunk_frames <= overlap_frames:
        raise RuntimeUserError(f"chunks of {chunk_frames} frames cannot overlap by {overlap_frames} (the context plus "
                               "lookahead of long mels); rebuild with a larger profile")
    if frames <= chunk_frames:
        return [0]
    gaps = math.ceil((frames - chunk_frames) / (chunk_frames - overlap_frames))
    return [round(i * (frames - chunk_frames) / gaps) for i in range(gaps + 1)]


def handovers(starts: List[int], chunk_frames: int, frames: int, context_frames: int, lookahead_frames: int) -> List[int]:
    """The frame where each chunk's audio begins (0 for the first) and, last, `frames`: each
    neighbour takes over midway between where it has its context and where the previous chunk
    runs out of lookahead."""
    middles = [(start + context_frames + previous + chunk_frames - lookahead_frames) // 2
               for previous, start in zip(starts, starts[1:])]
    return [0, *middles, frames]


def synthesize(infer: Callable, mel, max_frames: int, *, hop: int, context_frames: int, lookahead_frames: int):
    """Audio (batch, 1, frames * hop) for a checked mel (batch, n_mels, frames) of any length, calling
    `infer` on at most `max_frames` frames at a time."""
    batch, _, frames = mel.shape
    if frames <= max_frames:
        return _checked(infer(mel), (batch, 1, frames * hop))
    starts = chunk_starts(frames, max_frames, context_frames + lookahead_frames)
    cuts = handovers(starts, max_frames, frames, context_frames, lookahead_frames)
    stacked = _concat([mel[:, :, s:s + max_frames] for s in starts], mel, axis=0)
    audio = _checked(infer(stacked), (len(starts) * batch, 1, max_frames * hop))
    pieces = [audio[i * batch:(i + 1) * batch, :, (begin - start) * hop:(end - start) * hop]
              for i, (start, begin, end) in enumerate(zip(starts, cuts, cuts[1:]))]
    return _concat(pieces, audio, axis=2)


def _checked(audio, expected: tuple):
    if tuple(audio.shape) != expected:
        raise EngineError(f"the vocoder returned audio of shape {tuple(audio.shape)}, expected {expected}; "
                          "the engine does not match its manifest's hop, rebuild it with `make engines`")
    return audio


def _concat(pieces: list, like, axis: int):
    if is_torch(like):
        import torch
        return torch.cat(pieces, dim=axis).contiguous()
    return np.ascontiguousarray(np.concatenate(pieces, axis=axis))
