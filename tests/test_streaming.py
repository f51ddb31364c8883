"""Streaming vocoding (runtime/streaming.py) on a small numpy vocoder whose reach is known exactly:
push-size invariance, fixed window shapes, bounded memory and bad input.
"""
from __future__ import annotations

import logging
import re
import tracemalloc

import numpy as np
import pytest
import torch

import runtime
from factories import write_plan
from runtime.streaming import ARCHITECTURE_REACH, DEFAULT_STEPS, Stream, stream_window

TOY_HOP, TOY_BACK, TOY_AHEAD = 5, 3, 2  # the toy's audio frame t comes from mel frames t - 3 .. t + 2


def toy_vocoder(mel):
    """A vocoder of known reach: each frame's mean band value, weighted over mel frames t - 3 .. t + 2
    (zero beyond the edges), held for TOY_HOP samples. Same arithmetic at every position, so a window
    holding a frame's whole reach gives that frame bit for bit."""
    is_tensor = isinstance(mel, torch.Tensor)
    level = np.asarray(mel, dtype=np.float64).mean(axis=1, keepdims=True)
    frames = level.shape[2]
    padded = np.pad(level, ((0, 0), (0, 0), (TOY_BACK, TOY_AHEAD)))
    weights = np.arange(1.0, TOY_BACK + TOY_AHEAD + 2)
    smooth = sum(w * padded[:, :, j:j + frames] for j, w in enumerate(weights))
    audio = np.repeat(smooth, TOY_HOP, axis=2).astype(np.float32)
    return torch.from_numpy(audio) if is_tensor else audio


def toy_stream(steps=DEFAULT_STEPS, infer=toy_vocoder) -> Stream:
    return Stream(infer, hop=TOY_HOP, context_frames=TOY_BACK, lookahead_frames=TOY_AHEAD, step_frames=steps)


def push_sizes(frames: int, kind: str, seed: int = 0) -> list:
    """Sizes that add up to `frames`: one frame each, random, or one push."""
    if kind == "one frame":
        return [1] * frames
    if kind == "one push":
        return [frames]
    sizes, rng = [], np.random.default_rng(seed)
    while sum(sizes) < frames:
        sizes.append(int(min(rng.integers(1, 60), frames - sum(sizes))))
    return sizes


def streamed(stream: Stream, mel, sizes) -> np.ndarray:
    """The stream's whole output for `mel` pushed in `sizes`, finish() included."""
    pieces, start = [], 0
    for size in sizes:
        pieces.append(stream.push(mel[:, :, start:start + size]))
        start += size
    pieces.append(stream.finish())
    return torch.cat(pieces, dim=2) if isinstance(pieces[0], torch.Tensor) else np.concatenate(pieces, axis=2)


# --- the stream's contract, on a vocoder of known reach ----------------------------------------------

@pytest.mark.parametrize("steps", [DEFAULT_STEPS, 1, 7, (4, 9, 2)])
@pytest.mark.parametrize("frames", [1, 20, 57, 400])
def test_stream_with_the_exact_reach_is_bit_identical_for_any_pushes(steps, frames):
    mel = np.random.default_rng(frames).standard_normal((2, 6, frames)).astype(np.float32)
    offline = toy_vocoder(mel)
    for kind, seed in (("one frame", 0), ("one push", 0), ("random", 1), ("random", 2)):
        stream = toy_stream(steps)
        audio = streamed(stream, mel, push_sizes(frames, kind, seed))
        assert audio.shape == (2, 1, frames * TOY_HOP) and np.array_equal(audio, offline), (kind, seed)
        assert (stream.frames_in, stream.samples_out) == (frames, frames * TOY_HOP)


def test_windows_have_the_schedules_few_shapes_and_arrive_as_promised():
    shapes = []
    stream = toy_stream(DEFAULT_STEPS, infer=lambda mel: shapes.append(mel.shape[2]) or toy_vocoder(mel))
    mel = np.random.default_rng(5).standard_normal((1, 4, 3000)).astype(np.float32)
    out = 0
    for start in range(3000):
        needed = stream.frames_needed
        got = stream.push(mel[:, :, start:start + 1]).shape[2] // TOY_HOP
        assert (got > 0) == (needed == 1)  # frames_needed says when the next window runs
        out += got
        assert out <= max(start + 1 - TOY_AHEAD, 0)  # never a frame before its lookahead has arrived
    out += stream.finish().shape[2] // TOY_HOP
    assert out == 3000 and set(shapes) <= set(stream.window_frames) and len(stream.window_frames) == len(DEFAULT_STEPS)
    assert stream.calls == len(shapes)
    assert shapes[:3] == [TOY_BACK + step + TOY_AHEAD for step in DEFAULT_STEPS[:3]]


def test_first_audio_needs_context_step_and_lookahead_then_one_step_each():
    stream = toy_stream(8)
    mel = np.zeros((1, 4, 100), np.float32)
    got = [stream.push(mel[:, :, t:t + 1]).shape[2] // TOY_HOP for t in range(100)]
    arrivals = [t + 1 for t, frames in enumerate(got) if frames]
    assert arrivals[0] == TOY_BACK + 8 + TOY_AHEAD and got[arrivals[0] - 1] == TOY_BACK + 8
    assert all(b - a == 8 for a, b in zip(arrivals, arrivals[1:])) and set(got) == {0, 8, TOY_BACK + 8}


def test_memory_does_not_grow_with_the_stream():
    def peak(frames: int) -> int:
        mel = np.random.default_rng(0).standard_normal((1, 8, frames)).astype(np.float32)
        stream = toy_stream()
        tracemalloc.start()
        for start in range(0, frames, 5):
            stream.push(mel[:, :, start:start + 5])
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top
    short, long = peak(2_000), peak(20_000)
    assert long < 1.5 * short, (short, long)


def test_torch_tensors_pass_through_as_torch_tensors():
    mel = torch.from_numpy(np.random.default_rng(6).standard_normal((1, 6, 90)).astype(np.float32))
    audio = streamed(toy_stream((4, 16)), mel, push_sizes(90, "random"))
    assert isinstance(audio, torch.Tensor) and torch.equal(audio, toy_vocoder(mel))


# --- bad input: one line, and the stream usable or closed, never half-updated -------------------------

def test_bad_pushes_are_refused_and_the_stream_goes_on():
    mel = np.random.default_rng(7).standard_normal((2, 6, 60)).astype(np.float32)
    stream = toy_stream((4, 16))
    pieces = [stream.push(mel[:, :, :25])]
    bad_chunks = {"does not continue a stream of batch 2": mel[:1, :, 25:30],
                  "bands": mel[:, :5, 25:30],
                  "NaN or Inf": np.where(np.arange(5) == 2, np.nan, mel[:, :, 25:30]),
                  "one kind of array": torch.from_numpy(mel[:, :, 25:30]),
                  "(batch, n_mels, frames)": mel[0, :, 25:30]}
    for message, chunk in bad_chunks.items():
        before = (stream.frames_in, stream.samples_out, stream.frames_needed)
        with pytest.raises(runtime.RuntimeUserError, match=re.escape(message)) as excinfo:
            stream.push(chunk)
        assert "\n" not in str(excinfo.value) and (stream.frames_in, stream.samples_out, stream.frames_needed) == before
    pieces += [stream.push(mel[:, :, 25:]), stream.finish()]
    assert np.array_equal(np.concatenate(pieces, axis=2), toy_vocoder(mel))
    for call in (lambda: stream.push(mel[:, :, :1]), stream.finish):
        with pytest.raises(runtime.RuntimeUserError, match="after finish"):
            call()


def test_a_failing_vocoder_closes_the_stream():
    def broken(mel):
        raise runtime.EngineError("TensorRT failed to execute the engine")
    stream = toy_stream(4, infer=broken)
    with pytest.raises(runtime.EngineError):
        stream.push(np.zeros((1, 4, 20), np.float32))
    with pytest.raises(runtime.RuntimeUserError, match="closed"):
        stream.push(np.zeros((1, 4, 1), np.float32))


@pytest.mark.parametrize("arguments, message", [
    ({"context_frames": -1}, "context_frames"), ({"step_frames": ()}, "empty"), ({"step_frames": (8, 0)}, "step"),
    ({"hop": 0}, "hop"), ({"lookahead_frames": 2.5}, "lookahead_frames")])
def test_bad_stream_settings_are_one_line_errors(arguments, message):
    settings = {"hop": 5, "context_frames": 3, "lookahead_frames": 2, "step_frames": 8, **arguments}
    with pytest.raises(runtime.RuntimeUserError, match=message):
        Stream(toy_vocoder, **settings)


def test_finish_without_frames_and_a_closed_stream_say_so():
    with toy_stream() as stream:
        with pytest.raises(runtime.RuntimeUserError, match="no frames"):
            stream.finish()
    with pytest.raises(runtime.RuntimeUserError, match="closed"):
        stream.push(np.zeros((1, 4, 3), np.float32))


# --- manifests -------------------------------------------------------------------------------------

def test_manifest_without_the_measurement_falls_back_to_the_architectures_reach(tmp_path, caplog):
    manifest = runtime.read_manifest(write_plan(tmp_path, vocoder="v3"))
    with caplog.at_level(logging.INFO, "runtime"):
        window = stream_window(manifest)
    left, right = ARCHITECTURE_REACH["v3"]
    assert (window.context, window.lookahead, window.reach) == (right, left, (left, right))
    assert "exact reach" in caplog.text and "make engines" in caplog.text


@pytest.mark.parametrize("fields, message", [
    ({"stream_context_frames": 9}, "but not"),
    ({"receptive_field_frames": [12], "stream_context_frames": 9, "stream_lookahead_frames": 9}, "left, right"),
    ({"receptive_field_frames": [12, 12], "stream_context_frames": -1, "stream_lookahead_frames": 9}, "whole number")])
def test_malformed_stream_fields_are_refused(tmp_path, fields, message):
    with pytest.raises(runtime.RuntimeUserError, match=message):
        runtime.read_manifest(write_plan(tmp_path, **fields))
