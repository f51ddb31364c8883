"""How far one mel frame reaches into the audio, measured on the model being exported.

A vocoder made of convolutions computes each audio frame from a few mel frames around it, so a
stream can vocode a window of mel and keep only its middle (runtime/streaming.py). Two facts
decide how wide that window must be, and both travel in the ONNX metadata and the manifest:

- `receptive_field_frames` [left, right]: a change to mel frame m changes audio frames m - left to
  m + right (float64, any change counted). With `right` frames of context and `left` of lookahead,
  every streamed sample comes from the same mel frames as in one offline pass.
- `stream_context_frames` / `stream_lookahead_frames`: the shortest context and lookahead whose
  streamed audio stays `[stream] snr_min_db` from the offline pass, measured by cutting the mel.

Four passes of the float64 model on short mels (the reach plus a few frames): base and poked mel
for the reach, the mel cut on either side for the error a missing context or lookahead leaves.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from export.float64 import float64_evaluation
from pipeline.errors import UserError
from runtime.streaming import ARCHITECTURE_REACH
from vocoder_models.mels import sample_mel

log = logging.getLogger("export")

POKE = 1.0          # added to every band of one frame: a change of e (2.7x) in that frame's energy
GUESS_MARGIN = 2    # frames beyond the architecture's known reach in the first, shortest mel
MAX_DOUBLINGS = 4   # the reach cannot pass the architecture's: a mel 16 times the first one is far beyond it


def stream_metadata(module: nn.Module, vocoder: str, bar: float) -> dict:
    """The metadata entries above, measured on `module` (left in its own dtype afterwards); `bar`
    is `[stream] snr_min_db`."""
    with float64_evaluation(module):
        mel, audio, (left, right) = _measure_reach(module, vocoder, max(ARCHITECTURE_REACH[vocoder]) + GUESS_MARGIN)
        context_errors = _errors_after_cut(module, mel, audio, keep=right, side="context")
        lookahead_errors = _errors_after_cut(module, mel, audio, keep=left, side="lookahead")
    power = float(np.mean(audio ** 2))
    context, lookahead = shortest_window(power, context_errors, lookahead_errors, bar)
    hop_ms = 1000.0 * module.hop / module.sampling_rate
    log.info("%s: one mel frame reaches %d frames back and %d ahead (float64); %.0f dB needs context %d (%.0f ms) and "
             "lookahead %d (%.0f ms)", vocoder, left, right, bar, context, context * hop_ms, lookahead, lookahead * hop_ms)
    return {"receptive_field_frames": [left, right], "stream_context_frames": context,
            "stream_lookahead_frames": lookahead}


def _measure_reach(module: nn.Module, vocoder: str, guess: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Poke the middle frame of a mel long enough to show where the change stops on both sides
    (doubled until it does, at most MAX_DOUBLINGS times); returns that mel, its audio per frame
    (frames, hop) and [left, right]. Audio that is not finite is refused: NaN differs from itself,
    so every frame would look changed."""
    frames = 2 * guess + 3
    for _ in range(MAX_DOUBLINGS + 1):
        mel = torch.from_numpy(sample_mel(vocoder, frames, n_mels=module.num_mels)).double()
        centre = frames // 2
        poked = mel.clone()
        poked[:, :, centre] += POKE
        audio, moved = _frames_of(module(torch.cat([mel, poked])), module.hop)
        if not (np.isfinite(audio).all() and np.isfinite(moved).all()):
            raise UserError(f"the {vocoder} model makes NaN or Inf audio from a speech-like mel (in float64); its weights "
                            "are broken or far too large: check the checkpoint")
        changed = np.flatnonzero(np.any(audio != moved, axis=-1))
        if changed.size == 0:
            return mel.numpy(), audio, (0, 0)
        if changed[0] > 0 and changed[-1] < frames - 1:
            return mel.numpy(), audio, (int(centre - changed[0]), int(changed[-1] - centre))
        frames = 2 * frames + 1
    raise UserError(f"one mel frame of the {vocoder} model changes audio across a whole mel of {(frames - 1) // 2} frames, far "
                    f"beyond the architecture's reach of {guess - GUESS_MARGIN}; the model is not the {vocoder} vocoder")


def _errors_after_cut(module: nn.Module, mel: np.ndarray, audio: np.ndarray, keep: int, side: str) -> np.ndarray:
    """Mean squared error of each audio frame against the full mel's, by its distance from a cut:
    `context` keeps only the last `keep` frames (the first ones lose their past), `lookahead` only
    the first `keep` (the last ones lose their future). Distances from `keep` on are exact."""
    if keep == 0:
        return np.zeros(0)
    frames = mel.shape[-1]
    kept = slice(frames - keep, frames) if side == "context" else slice(0, keep)
    (cut,) = _frames_of(module(torch.from_numpy(np.ascontiguousarray(mel[:, :, kept]))), module.hop)
    errors = np.mean((cut - audio[kept]) ** 2, axis=-1)
    return errors if side == "context" else errors[::-1]


def shortest_window(power: float, context_errors: np.ndarray, lookahead_errors: np.ndarray, bar_db: float) -> tuple[int, int]:
    """The (context, lookahead) of smallest sum, then smallest lookahead, whose worst frame stays
    `bar_db` below the signal: each error is taken at its worst from that distance on, and the two
    sides' amplitudes add (a frame can sit at the shortest distance from both window edges)."""
    worst_context = _worst_from_each_distance(context_errors)
    worst_lookahead = _worst_from_each_distance(lookahead_errors)
    allowed = power * 10.0 ** (-bar_db / 10.0)
    candidates = [(c + ahead, ahead, c) for c in range(worst_context.size) for ahead in range(worst_lookahead.size)
                  if (np.sqrt(worst_context[c]) + np.sqrt(worst_lookahead[ahead])) ** 2 <= allowed]
    _, lookahead, context = min(candidates)
    return context, lookahead


def _worst_from_each_distance(errors: np.ndarray) -> np.ndarray:
    """Entry d: the largest error at distance d or more; one more entry, 0, for the exact distance."""
    tail_max = np.maximum.accumulate(errors[::-1])[::-1] if errors.size else errors
    return np.append(tail_max, 0.0)


def _frames_of(audio: torch.Tensor, hop: int) -> list[np.ndarray]:
    """(batch, 1, frames * hop) audio as one (frames, hop) float64 array per batch item."""
    return [item.reshape(-1, hop).numpy() for item in audio.double()]
