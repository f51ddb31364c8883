"""Mels longer than the engine's largest profile: overlapping chunks, one batched call, cross-fade.

Works on any `infer(mel) -> audio` callable (a TensorRT engine, an ONNX Runtime session in tests)
and on numpy arrays or torch tensors. All chunks have the same length, the last one aligned to the
end of the mel, so they run as one batch with no padding. Neighbours hand over with a raised-cosine
cross-fade of `overlap_frames` centred in their overlap, where both are furthest from their edges.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from runtime.errors import EngineError, RuntimeUserError
from runtime.mel import is_torch


def plan_chunks(frames: int, chunk_frames: int, overlap_frames: int) -> list[int]:
    """Start frames of equal chunks of `chunk_frames` covering `frames`, evenly spaced so that
    neighbours overlap by at least `overlap_frames`."""
    check_overlap(chunk_frames, overlap_frames)
    if frames <= chunk_frames:
        return [0]
    gaps = math.ceil((frames - chunk_frames) / (chunk_frames - overlap_frames))
    return [round(i * (frames - chunk_frames) / gaps) for i in range(gaps + 1)]


def check_overlap(chunk_frames: int, overlap_frames: int) -> None:
    """Cross-fades of neighbouring hand-overs must not meet: chunks of more than 3 overlaps."""
    if not isinstance(overlap_frames, int) or overlap_frames < 0 or chunk_frames < 3 * overlap_frames + 1:
        raise RuntimeUserError(f"overlap of {overlap_frames} frames does not fit chunks of {chunk_frames} frames; "
                               f"use an overlap between 0 and {(chunk_frames - 1) // 3}")


def chunk_weights(starts: list[int], chunk_frames: int, overlap_frames: int, hop: int) -> list[np.ndarray]:
    """Per chunk, the weight of each of its samples in the output; weights sum to 1 everywhere."""
    length, fade = chunk_frames * hop, overlap_frames * hop
    rise = np.sin(0.5 * np.pi * (np.arange(fade) + 0.5) / max(fade, 1)) ** 2
    weights = [np.ones(length, dtype=np.float32) for _ in starts]
    for i in range(len(starts) - 1):
        middle = round((starts[i + 1] + starts[i] + chunk_frames) * hop / 2)
        begin = middle - fade // 2  # in output samples
        out_from, in_from = begin - starts[i] * hop, begin - starts[i + 1] * hop
        weights[i][out_from:out_from + fade] *= 1.0 - rise
        weights[i][out_from + fade:] = 0.0
        weights[i + 1][in_from:in_from + fade] *= rise
        weights[i + 1][:in_from] = 0.0
    return weights


def synthesize(infer: Callable, mel, max_frames: int, overlap_frames: int = 12, *, hop: int):
    """Audio (batch, 1, frames * hop) for a checked mel (batch, n_mels, frames) of any length, calling
    `infer` on at most `max_frames` frames at a time."""
    batch, _, frames = mel.shape
    if frames <= max_frames:
        return _checked(infer(mel), (batch, 1, frames * hop))
    starts = plan_chunks(frames, max_frames, overlap_frames)
    pieces = [mel[:, :, s:s + max_frames] for s in starts]
    stacked = _concat(pieces, mel)
    audio = _checked(infer(stacked), (len(starts) * batch, 1, max_frames * hop))
    out = _zeros(mel, (batch, 1, frames * hop))
    for i, (start, weight) in enumerate(zip(starts, chunk_weights(starts, max_frames, overlap_frames, hop))):
        span = slice(start * hop, (start + max_frames) * hop)
        out[:, :, span] += audio[i * batch:(i + 1) * batch] * _like(weight, mel)
    return out


def _checked(audio, expected: tuple[int, ...]):
    if tuple(audio.shape) != expected:
        raise EngineError(f"the vocoder returned audio of shape {tuple(audio.shape)}, expected {expected}; "
                          "the engine does not match its manifest's hop, rebuild it with `make engines`")
    return audio


def _concat(pieces: list, like):
    if is_torch(like):
        import torch
        return torch.cat(pieces, dim=0).contiguous()
    return np.ascontiguousarray(np.concatenate(pieces, axis=0))


def _zeros(like, shape: tuple[int, ...]):
    if is_torch(like):
        import torch
        return torch.zeros(shape, dtype=torch.float32, device=like.device)
    return np.zeros(shape, dtype=np.float32)


def _like(array: np.ndarray, like):
    if is_torch(like):
        import torch
        return torch.from_numpy(array).to(like.device)
    return array
