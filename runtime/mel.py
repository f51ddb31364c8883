"""Checks on the mel where it enters the runtime, for numpy arrays and torch tensors alike.

torch is never imported here: a tensor is recognised by its type's module, and its own methods
do the checks, so a process without torch never loads it.
"""
from __future__ import annotations

import numpy as np

from runtime.errors import RuntimeUserError
from runtime.limits import MAX_ARRAY_BYTES, MAX_FRAMES, within

FLOAT32_BYTES = 4


def is_torch(x: object) -> bool:
    return type(x).__module__.startswith("torch")


def check_mel_size(shape) -> None:
    """The frames and the float32 bytes a mel of `shape` claims, against runtime/limits.py, before
    anything is converted or copied (a broadcast view of a few bytes can claim gigabytes)."""
    within(int(shape[-1]), 1, MAX_FRAMES, f"the mel's frame count (shape {tuple(shape)})",
           "cut the mel into pieces or stream it (engine.stream)")
    claimed = FLOAT32_BYTES
    for size in shape:
        claimed *= int(size)
    within(claimed, 1, MAX_ARRAY_BYTES, f"the mel's size as float32 in bytes (shape {tuple(shape)})",
           "cut the mel into pieces or stream it (engine.stream)")


def check_mel(mel, n_mels: int):
    """Return `mel` as contiguous float32 (batch, n_mels, frames), same kind (numpy or torch, same
    device); raise RuntimeUserError naming the problem otherwise."""
    if is_torch(mel):
        shape, floating = tuple(mel.shape), mel.is_floating_point()
        dtype = str(mel.dtype).replace("torch.", "")
    else:
        mel = np.asarray(mel)
        shape, floating, dtype = mel.shape, np.issubdtype(mel.dtype, np.floating), str(mel.dtype)
    if len(shape) != 3:
        raise RuntimeUserError(f"mel must be (batch, n_mels, frames), got shape {shape}; "
                               "add a batch axis (mel[None]) or pass one mel per batch item")
    if shape[1] != n_mels:
        hint = " (it looks transposed: use mel.transpose(0, 2, 1))" if shape[2] == n_mels else ""
        raise RuntimeUserError(f"mel has {shape[1]} bands, this engine takes {n_mels}{hint}; "
                               f"pass the vocoder's {n_mels}-band log-mel")
    if shape[0] == 0 or shape[2] == 0:
        raise RuntimeUserError(f"mel is empty (shape {shape}); pass at least one frame of one batch item")
    check_mel_size(shape)
    if not floating:
        raise RuntimeUserError(f"mel must be floating point (a natural-log mel), got {dtype}; convert it to float32")
    if is_torch(mel):
        mel = mel.float().contiguous()
        bad = int((~mel.isfinite()).sum().item())
    else:
        mel = np.ascontiguousarray(mel, dtype=np.float32)
        bad = int(mel.size - np.count_nonzero(np.isfinite(mel)))
    if bad:
        raise RuntimeUserError(f"mel has {bad} NaN or Inf values; fix the model that produced it (a log of zero?) "
                               "or clamp it before the vocoder")
    return mel
