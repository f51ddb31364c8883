"""Streaming vocoding: audio while the mel is still coming, equal to one offline pass.

The vocoders are convolutional: an audio frame depends on a few mel frames on each side of it
(the reach, measured by the export stage). `Stream` runs the vocoder on windows of
`context + step + lookahead` mel frames and keeps the `step` frames between the context and the
lookahead, whose audio no longer depends on what lies outside the window (overlap-and-discard).
The first window starts at frame 0, where the offline pass has no past either, so it keeps its
context frames as well; the last, at finish(), ends at the last frame and reaches back as far as
it must. A window therefore has one of a few fixed shapes, one per step size, whatever the push
sizes: no new TensorRT shape, TensorRT-RTX kernel or CUDA graph per push. Which windows run depends
only on how many frames have arrived, so any split of the same mel into pushes gives the same
audio, sample for sample.

Steps may grow (`DEFAULT_STEPS`): a small first step brings the first audio early, larger ones
keep the extra work of the overlaps small once the stream is long. One stream serves one thread at
a time; memory and work per push do not grow with the stream (it keeps the last largest-window's
frames in a fixed buffer).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from runtime.errors import EngineError, RuntimeUserError
from runtime.limits import MAX_FRAMES, MAX_HOP, MAX_STEP_FRAMES
from runtime.mel import check_mel, is_torch

log = logging.getLogger("runtime")

# Exact reach (left, right) in frames of each architecture: a change to mel frame m changes audio
# frames m - left .. m + right. Measured by export/reach.py (float64, any change counted) on the
# synthetic default weights; used for manifests written before the export stage measured it. v3's
# outermost frame changes by less than one float64 rounding of the sum it joins, so whether it shows
# depends on the CPU's convolution kernels (33 on the 2026-11 CI machine, 34 on this one's, 34/33 on
# the H200 machine's torch 2.11): the constant is the larger, which never gives a stream too little.
ARCHITECTURE_REACH = {"v3": (34, 34), "v4": (12, 12)}

# Step of each window in turn, the last one repeating. Chosen by measurement (the streaming guide, "Step schedule"):
# the first audio after one small window, then steps growing 4x to a cap where the overlaps and
# the H100's fixed cost per call add at most 1.5x to one offline pass of a 40 s stream (CPU ONNX
# Runtime: 1.1x). Four window shapes per vocoder.
DEFAULT_STEPS = (16, 64, 256, 768)

StepFrames = Union[int, Sequence[int]]


@dataclass(frozen=True)
class StreamWindow:
    """How much mel a window needs around the frames it keeps: `context` frames before them and
    `lookahead` after (the manifest's 100 dB setting), and the exact reach (left, right)."""

    context: int
    lookahead: int
    reach: Tuple[int, int]


def stream_window(manifest: dict) -> StreamWindow:
    """The manifest's measured setting, or the architecture's exact reach (logged) for a manifest
    from before the export stage measured it."""
    if "stream_context_frames" in manifest:
        reach = tuple(manifest["receptive_field_frames"])
        return StreamWindow(manifest["stream_context_frames"], manifest["stream_lookahead_frames"], reach)
    window = architecture_window(manifest["vocoder"])
    log.info("manifest of %s %s has no measured stream setting; using the exact reach of the architecture (context %d, "
             "lookahead %d frames); rebuild with `make engines` for the shorter measured one", manifest["vocoder"],
             manifest["precision"], window.context, window.lookahead)
    return window


def architecture_window(vocoder: str) -> StreamWindow:
    """The architecture's exact reach as context and lookahead: exact, where no measurement is at hand."""
    if vocoder not in ARCHITECTURE_REACH:
        raise RuntimeUserError(f"no reach is known for vocoder {vocoder!r}; rebuild its engine with `make engines` "
                               "(the export stage measures it)")
    left, right = ARCHITECTURE_REACH[vocoder]
    return StreamWindow(right, left, (left, right))


def chosen_window(window: StreamWindow, context: Optional[int], lookahead: Optional[int]) -> Tuple[int, int]:
    """The context and lookahead a caller asks for (None: the measured setting); below the setting
    is allowed, with a warning naming the measured figure."""
    context = window.context if context is None else context
    lookahead = window.lookahead if lookahead is None else lookahead
    for name, asked, measured in (("context", context, window.context), ("lookahead", lookahead, window.lookahead)):
        if _count(asked, name, minimum=0) < measured:
            log.warning("%s of %d frames is below the %d the export stage measured for this vocoder (the shortest that keeps "
                        "streamed audio at its SNR bar against the offline pass); expect a larger difference",
                        name, asked, measured)
    return context, lookahead


def fitting_steps(steps: Optional[StepFrames], context: int, lookahead: int, max_frames: int) -> Tuple[int, ...]:
    """The step schedule whose windows fit `max_frames` frames: the default loses the steps that do
    not fit and ends with the largest that does; a schedule the caller gave must fit as it is."""
    room = max_frames - context - lookahead
    if room < 1:
        raise RuntimeUserError(f"windows of context {context} + lookahead {lookahead} frames leave no room for a step in the "
                               f"largest profile ({max_frames} frames); rebuild with a larger profile or stream with "
                               "less context")
    if steps is None:
        return tuple(step for step in DEFAULT_STEPS if step < room) + (min(DEFAULT_STEPS[-1], room),)
    schedule = _schedule(steps)
    if max(schedule) > room:
        raise RuntimeUserError(f"step of {max(schedule)} frames makes windows longer than the largest profile "
                               f"({max_frames} frames); use steps of at most {room}")
    return schedule


class Stream:
    """Mel in as it comes, final audio out: `push(mel)` takes (batch, n_mels, k) frames and returns
    the (batch, 1, n) audio that became final; `finish()` returns the rest. Together they are
    `infer(whole mel)` (to the reach's precision), whatever the push sizes.

    `infer` is any callable (batch, n_mels, frames) -> (batch, 1, frames * hop): an Engine, an ONNX
    Runtime session wrapper, a torch module. The caller's array type passes through (numpy stays
    numpy, CUDA tensors stay on the GPU). `step_frames` is one step or a schedule whose last entry
    repeats. Frame t's audio is final once frame t + lookahead has arrived and a whole step is
    pending; the first window, starting at frame 0, needs context + step + lookahead frames.
    """

    def __init__(self, infer: Callable, *, hop: int, context_frames: int, lookahead_frames: int,
                 step_frames: StepFrames = DEFAULT_STEPS, n_mels: Optional[int] = None):
        self._infer = infer
        self.hop = _count(hop, "hop", minimum=1, maximum=MAX_HOP)
        self.context_frames = _count(context_frames, "context_frames", minimum=0)
        self.lookahead_frames = _count(lookahead_frames, "lookahead_frames", minimum=0)
        self.steps = _schedule(step_frames)
        self.window_frames = tuple(sorted({self.context_frames + step + self.lookahead_frames for step in self.steps}))
        self.n_mels = n_mels
        self.calls = self.frames_in = self.samples_out = 0
        self._state = "open"
        self._buffer = None     # (batch, n_mels, 2 x largest window) float32, numpy or torch
        self._buffer_from = 0   # stream frame held in buffer column 0
        self._buffered = 0      # columns in use
        self._emitted = 0       # frames whose audio has been returned
        self._windows = 0       # windows run so far (picks the step)
        self._audio_dtype = None

    # --- the stream ------------------------------------------------------------------------------

    def push(self, mel_chunk):
        """Take (batch, n_mels, k >= 1) frames; return the audio that became final, (batch, 1, n >= 0)."""
        mel_chunk = self._checked(mel_chunk)
        with self._closing_on_failure():
            if self._buffer is None:
                self._buffer = _empty_like(mel_chunk, (*mel_chunk.shape[:2], 2 * self.window_frames[-1]))
            pieces = []
            for start in range(0, mel_chunk.shape[2], self.window_frames[-1]):
                self._hold(mel_chunk[:, :, start:start + self.window_frames[-1]])
                pieces.extend(self._run_ready_windows())
            return self._joined(pieces)

    def finish(self):
        """The audio of every frame still pending; the stream ends (free to drop or close)."""
        self._require_open("finish()")
        if self._buffer is None:
            raise RuntimeUserError("finish() on a stream that received no frames; push at least one frame first")
        with self._closing_on_failure():
            pieces = [self._run_last_window()] if self._emitted < self._received else []
            audio = self._joined(pieces)
        self._release("finished")
        return audio

    def close(self) -> None:
        """Free the held frames; the stream takes no more pushes (safe twice)."""
        self._release("closed")

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    @property
    def frames_needed(self) -> int:
        """How many more frames the next window waits for (0: finish() would run it now): push that
        many to get audio as early as it can come, one window per push."""
        return max(self._next_window()[1] - self._received, 0)

    @property
    def _received(self) -> int:
        return self._buffer_from + self._buffered

    # --- input checks: nothing changes before they pass ----------------------------------------

    def _checked(self, mel_chunk):
        """The chunk as contiguous float32 of the stream's batch, bands and array kind."""
        self._require_open("push()")
        if not is_torch(mel_chunk) and not isinstance(mel_chunk, np.ndarray):
            mel_chunk = _as_array(mel_chunk)
        shape = tuple(mel_chunk.shape)
        if self._buffer is not None:
            held = tuple(self._buffer.shape[:2])
            if len(shape) == 3 and shape[:2] != held:
                raise RuntimeUserError(f"push of shape {shape} does not continue a stream of batch {held[0]} and {held[1]} "
                                       f"bands; push ({held[0]}, {held[1]}, frames) or start a new stream")
            if _kind(mel_chunk) != _kind(self._buffer):
                raise RuntimeUserError(f"push is {_kind(mel_chunk)} but the stream holds {_kind(self._buffer)}; "
                                       "push one kind of array per stream")
        bands = self.n_mels if self.n_mels is not None else (shape[1] if len(shape) == 3 else 0)
        return check_mel(mel_chunk, bands)

    def _require_open(self, what: str) -> None:
        if self._state == "finished":
            raise RuntimeUserError(f"{what} after finish(): the stream has ended; start a new stream for the next utterance")
        if self._state == "closed":
            raise RuntimeUserError(f"{what} on a closed stream; start a new stream")

    # --- windows -----------------------------------------------------------------------------

    def _hold(self, frames) -> None:
        """Append frames to the buffer, first sliding the last largest-window's frames to its front
        when they would not fit (only those can still be part of a window)."""
        count = frames.shape[2]
        if self._buffered + count > self._buffer.shape[2]:
            keep = min(self._buffered, self.window_frames[-1])
            self._buffer[:, :, :keep] = _copy(self._buffer[:, :, self._buffered - keep:self._buffered])
            self._buffer_from += self._buffered - keep
            self._buffered = keep
        self._buffer[:, :, self._buffered:self._buffered + count] = frames
        self._buffered += count
        self.frames_in += count

    def _run_ready_windows(self) -> list:
        """Every window whose frames have all arrived, in order; each returns its kept audio."""
        pieces = []
        while True:
            start, end = self._next_window()
            if end > self._received:
                return pieces
            pieces.append(self._window_audio(start, end, keep_until=end - self.lookahead_frames))
            self._windows += 1

    def _run_last_window(self):
        """The pending frames from the shortest window shape that ends at the last frame and holds
        their context; a stream shorter than every window is one pass over all of it."""
        received, reach_back = self._received, max(self._emitted - self.context_frames, 0)
        fitting = [w for w in self.window_frames if received - reach_back <= w <= received]
        start = received - fitting[0] if fitting else 0
        return self._window_audio(start, received, keep_until=received)

    def _next_window(self) -> Tuple[int, int]:
        """Frames [start, end) of the next window: the context before the frames it will keep (none
        before frame 0), the next step of the schedule, the lookahead."""
        start = max(self._emitted - self.context_frames, 0)
        step = self.steps[min(self._windows, len(self.steps) - 1)]
        return start, start + self.context_frames + step + self.lookahead_frames

    def _window_audio(self, start: int, end: int, keep_until: int):
        """Run `infer` on frames [start, end) and return the audio of [emitted, keep_until)."""
        window = _copy(self._buffer[:, :, start - self._buffer_from:end - self._buffer_from])
        audio = self._infer(window)
        self.calls += 1
        expected = (window.shape[0], 1, (end - start) * self.hop)
        if tuple(audio.shape) != expected:
            raise EngineError(f"the vocoder returned audio of shape {tuple(audio.shape)} for a {end - start}-frame window, "
                              f"expected {expected}; the stream's hop ({self.hop}) does not match the vocoder's")
        kept = audio[:, :, (self._emitted - start) * self.hop:(keep_until - start) * self.hop]
        self._emitted = keep_until
        self._audio_dtype = audio.dtype
        return kept

    def _joined(self, pieces: list):
        """The pieces as one (batch, 1, n) array of the caller's kind (n may be 0)."""
        if not pieces:
            return _empty_like(self._buffer, (self._buffer.shape[0], 1, 0), self._audio_dtype)
        audio = _concat(pieces) if len(pieces) > 1 else pieces[0]
        self.samples_out += audio.shape[2]
        return audio

    def _release(self, state: str) -> None:
        self._buffer, self._state = None, state if self._state == "open" else self._state

    @contextlib.contextmanager
    def _closing_on_failure(self) -> Iterator[None]:
        """A failure inside the vocoder leaves no half-updated stream behind: it is closed."""
        try:
            yield
        except BaseException:
            self.close()
            raise


def fitted_stream(infer: Callable, manifest: dict, window: StreamWindow, *, context_frames: Optional[int] = None,
                  lookahead_frames: Optional[int] = None, step_frames: Optional[StepFrames] = None) -> Stream:
    """A Stream over `infer` fitted to the plan of `manifest`: `window`'s context and lookahead
    unless given (less warns), and the default step schedule cut to fit the plan's largest profile.
    The one choice of a plan's stream: `Engine.stream()` and the GPT-SoVITS drop-in both make theirs here."""
    context, lookahead = chosen_window(window, context_frames, lookahead_frames)
    largest = max(profile["max"][2] for profile in manifest["profiles"])
    steps = fitting_steps(step_frames, context, lookahead, largest)
    return Stream(infer, hop=manifest["hop"], n_mels=manifest["n_mels"], context_frames=context,
                  lookahead_frames=lookahead, step_frames=steps)


def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise RuntimeUserError(f"{name} must be an integer of at least {minimum}, got {value!r}")
def _count(value, name: str, minimum: int, maximum: int = MAX_FRAMES) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not minimum <= value <= maximum:
        raise RuntimeUserError(f"{name} must be an integer of at least {minimum} and at most {maximum} (runtime/limits.py), "
                               f"got {value!r}")
    return int(value)


def _schedule(steps: StepFrames) -> Tuple[int, ...]:
    """One step or a non-empty sequence of steps, each a whole number of frames in 1..MAX_STEP_FRAMES."""
    if not isinstance(steps, (int, np.integer, list, tuple)):
        raise RuntimeUserError(f"step_frames must be an integer or a list of integers, got {steps!r}; "
                               "give one step (e.g. 32) or a schedule such as (16, 32, 64)")
    schedule = (steps,) if isinstance(steps, (int, np.integer)) else tuple(steps)
    if not schedule:
        raise RuntimeUserError("step_frames is empty; give one step (e.g. 32) or a schedule such as (16, 32, 64)")
    return tuple(_count(step, "each step of step_frames", minimum=1, maximum=MAX_STEP_FRAMES) for step in schedule)


def _as_array(values) -> np.ndarray:
    """A push of nested lists, as numpy (the engine's own call takes them too); ragged or non-numeric
    lists are one line."""
    try:
        return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise RuntimeUserError(f"push takes a (batch, n_mels, frames) numpy array or torch tensor, got {type(values).__name__} "
                               f"that numpy cannot read as one ({error}); pass numpy.asarray(chunk, dtype=numpy.float32)"
                               ) from None


def _kind(array) -> str:
    return f"a torch tensor on {array.device}" if is_torch(array) else "a numpy array"


def _empty_like(like, shape: tuple, dtype=None):
    if is_torch(like):
        import torch
        return torch.zeros(shape, dtype=dtype or torch.float32, device=like.device)
    return np.zeros(shape, dtype=dtype or np.float32)


def _copy(view):
    """A contiguous copy (window views of the buffer are strided; engines want dense input)."""
    if is_torch(view):
        import torch
        return view.clone(memory_format=torch.contiguous_format)
    return np.array(view)


def _concat(pieces: list):
    if is_torch(pieces[0]):
        import torch
        return torch.cat(pieces, dim=2)
    return np.concatenate(pieces, axis=2)
