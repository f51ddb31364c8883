"""Mel lengths to fixed-length windows (buckets), exact to the vocoder's reach. torch-free.

A CUDA graph replays one shape, so a call of any length runs on windows of a few fixed lengths.
The vocoders are convolutional: audio frame t depends on mel frames t - context .. t + lookahead
(the reach) and, near an end, on where that end is. A window therefore gives frame t exactly when
it holds those frames and, where it reaches an end of the mel, has its own edge there.

Where the window can carry its edge inside it (masking.py: every layer sees the mel end where it
ends, whatever follows), `padded_windows_for` applies: a mel up to the largest bucket runs in one window
of the next bucket's length, its padding masked; a longer one in largest-bucket chunks as below.
Otherwise (`windows_for`):
- a length that is a bucket runs as it is;
- a shorter one is padded on the right to the next bucket (`main`): the padding is only within
  reach of the last `lookahead` frames, which it discards;
- those last frames come from a `tail` window of the smallest bucket holding `context +
  lookahead` frames, cut from the mel so that it ends where the mel ends;
- a length beyond the largest bucket is cut into largest-bucket windows by overlap-and-discard
  (runtime/chunks.py), the first at frame 0 and the last ending at the last frame;
- a mel shorter than the tail bucket has no exact window: it runs without a graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

from runtime.chunks import chunk_starts, handovers
from runtime.streaming import DEFAULT_STEPS


@dataclass(frozen=True)
class Window:
    """Mel frames [start, start + frames) (past the mel's end: padding) giving the audio of [keep_from, keep_to)."""

    start: int
    frames: int
    keep_from: int
    keep_to: int


@dataclass(frozen=True)
class CallWindows:
    """How one call runs: its windows (none: no exact window, the call runs without a graph)."""

    windows: Tuple[Window, ...]

    @property
    def eager(self) -> bool:
        """No exact window exists (a mel shorter than the tail bucket): run without a graph."""
        return not self.windows


def stream_windows(context: int, lookahead: int, steps: Sequence[int] = DEFAULT_STEPS) -> Tuple[int, ...]:
    """The window lengths runtime.streaming.Stream runs with these settings: context + step + lookahead."""
    return tuple(sorted({context + step + lookahead for step in steps}))


def default_buckets(context: int, lookahead: int) -> Tuple[int, ...]:
    """The stream's windows (so a stream replays graphs only) and lengths about 1.25x apart up to 2048."""
    offline = (96, 128, 160, 192, 256, 320, 384, 512, 640, 768, 1024, 1280, 1536, 2048)
    return tuple(sorted(set(offline) | set(stream_windows(context, lookahead))))


# padding to the next bucket may cost about 5 % of the time (measured: fast-tier.md, "Buckets")
PADDED_RATIO, PADDED_OFFSET = 1.05, 10


def padded_buckets(context: int, lookahead: int) -> Tuple[int, ...]:
    """Buckets for windows whose edge is emulated: close enough that padding costs little, and the
    stream's windows (so a stream runs unpadded)."""
    spaced = spaced_buckets(16, 2048, PADDED_RATIO, PADDED_OFFSET)
    return tuple(sorted(set(spaced) | set(stream_windows(context, lookahead))))


def tail_bucket(buckets: Sequence[int], context: int, lookahead: int) -> int:
    """The smallest bucket that holds a kept frame's context and lookahead."""
    fitting = [b for b in sorted(buckets) if b >= context + lookahead + 1]
    if not fitting:
        raise ValueError(f"no bucket holds context {context} + lookahead {lookahead} + 1 frames; add one of at least "
                         f"{context + lookahead + 1}")
    return fitting[0]


def windows_for(frames: int, buckets: Sequence[int], context: int, lookahead: int) -> CallWindows:
    """The windows that give the audio of a `frames`-long mel exactly (see the module's docstring)."""
    buckets = sorted(buckets)
    tail = tail_bucket(buckets, context, lookahead)
    if frames in buckets:
        return CallWindows((Window(0, frames, 0, frames),))
    if frames < tail:
        return CallWindows(())
    if frames <= buckets[-1]:
        main = next(b for b in buckets if b >= frames)
        return CallWindows((Window(0, main, 0, frames - lookahead), Window(frames - tail, tail, frames - lookahead, frames)))
    largest = buckets[-1]
    starts = chunk_starts(frames, largest, context + lookahead)
    cuts = handovers(starts, largest, frames, context, lookahead)
    return CallWindows(tuple(Window(s, largest, a, b) for s, a, b in zip(starts, cuts, cuts[1:])))


def padded_windows_for(frames: int, buckets: Sequence[int], context: int, lookahead: int) -> CallWindows:
    """One window of the next bucket's length whose edge is emulated at `frames` (see the module's
    docstring); past the largest bucket, largest-bucket chunks, each whole inside the mel."""
    buckets = sorted(buckets)
    if frames <= buckets[-1]:
        return CallWindows((Window(0, next(b for b in buckets if b >= frames), 0, frames),))
    return windows_for(frames, buckets, context, lookahead)


def valid_frames(window: Window, total: int) -> int:
    """The window's mel frames that are the mel's (the rest is padding past its end)."""
    return min(window.frames, total - window.start)


def spaced_buckets(smallest: int, largest: int, ratio: float, offset: int, multiple: int = 8) -> Tuple[int, ...]:
    """Lengths from `smallest` to `largest`, each next one `ratio` times the last plus `offset`
    (rounded up to a `multiple`): padding a length to the next bucket then costs about the same
    fraction of its time at every size, where time is a fixed part plus a part per frame (offset =
    (ratio - 1) * fixed part / time per frame)."""
    lengths = [smallest]
    while lengths[-1] < largest:
        step = math.ceil((lengths[-1] * ratio + offset) / multiple) * multiple
        lengths.append(min(max(step, lengths[-1] + multiple), largest))
    return tuple(lengths)


def run_windows(mel, windows: Sequence[Window], run: Callable[[List], List], hop: int, pad: Callable) -> List:
    """Audio pieces of `mel` (batch, n_mels, frames) along `windows`: `run` takes the window mels
    and returns their audio (batch, 1, frames * hop); `pad(mel_piece, frames)` pads on the right."""
    total = mel.shape[2]
    pieces = [mel[:, :, w.start:min(w.start + w.frames, total)] for w in windows]
    inputs = [p if p.shape[2] == w.frames else pad(p, w.frames) for p, w in zip(pieces, windows)]
    audio = run(inputs)
    return [a[:, :, (w.keep_from - w.start) * hop:(w.keep_to - w.start) * hop] for a, w in zip(audio, windows)]

