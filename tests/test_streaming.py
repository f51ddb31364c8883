"""Streaming vocoding (runtime/streaming.py) and the reach the export stage measures for it.

The exactness claims run on the real exported models under ONNX Runtime: v4 across push sizes and
small steps, v3 at a short length. Push-size invariance, fixed window shapes, bounded memory and
bad input run on a small numpy vocoder whose reach is known exactly. Engine.stream and the CLI run
on CPU against the TensorRT contract double (tests/trt_double.py over tests/cuda_double.py), the
GPT-SoVITS generator against a stand-in TTS (tests/gpt_sovits_standin.py).
"""
from __future__ import annotations

import copy
import logging
import re
import tracemalloc
import wave

import numpy as np
import pytest
import torch
from scipy.io import wavfile

import runtime
from build.plan import build_plan
from cuda_double import HostCudaLayer
from export.reach import shortest_window
from factories import write_plan
from pipeline.onnx_metadata import read_metadata
from pipeline.onnx_tools import cpu_session, run_audio
from pipeline.quality import snr_db
from pipeline.settings import load_settings
from runtime import cuda as cuda_module
from runtime.__main__ import main as runtime_main
from runtime.errors import run_main
from runtime.streaming import ARCHITECTURE_REACH, DEFAULT_STEPS, Stream, stream_window
from trt_double import World, install
from vocoder_models.mels import sample_mel

BAR_DB = load_settings()["stream"]["snr_min_db"]
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
    assert all(b - a == 8 for a, b in zip(arrivals, arrivals[1:], strict=False)) and set(got) == {0, 8, TOY_BACK + 8}


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


class Recorded:
    """`infer` that remembers each window's shape and answers a window it has seen from memory, so
    several push patterns cost the ONNX Runtime work of one (the same windows give the same audio)."""

    def __init__(self, infer):
        self.infer, self.shapes, self.memory, self.runs = infer, [], {}, 0

    def __call__(self, mel):
        self.shapes.append(mel.shape[2])
        key = (mel.shape, mel.tobytes())
        if key not in self.memory:
            self.memory[key] = self.infer(mel)
            self.runs += 1
        return self.memory[key]


@pytest.fixture(scope="module")
def v4_model(onnx_v4):
    session = cpu_session(onnx_v4)
    return (lambda mel: run_audio(session, mel)), read_metadata(onnx_v4)


# --- the reach the export stage measures ------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["onnx_v4", "onnx_v3"])
def test_export_records_the_reach_and_a_shorter_100_db_setting(request, fixture):
    metadata = read_metadata(request.getfixturevalue(fixture))
    left, right = metadata["receptive_field_frames"]
    known = ARCHITECTURE_REACH[metadata["vocoder"]]
    # the outermost frame may round away on some CPUs (runtime/streaming.py), never more than that
    assert all(k - 1 <= measured <= k for measured, k in zip((left, right), known, strict=True)), \
        f"runtime's fallback constants are stale: measured {left}/{right}, constants {known}"
    assert 0 < metadata["stream_context_frames"] <= right and 0 < metadata["stream_lookahead_frames"] <= left
    print(f"\n{metadata['vocoder']}: reach {left}/{right} frames, 100 dB setting: context "
          f"{metadata['stream_context_frames']}, lookahead {metadata['stream_lookahead_frames']}")


def test_shortest_window_trades_context_for_lookahead_only_when_it_must():
    power = 1.0
    decaying = 10.0 ** (-np.arange(8.0))  # error energy 1, 0.1, ... at distance 0, 1, ... from a cut
    assert shortest_window(power, decaying, decaying, bar_db=30.0) == (4, 4)  # amplitudes add: (2 x 1e-2)^2 < 1e-3
    assert shortest_window(power, decaying, decaying[:2], bar_db=30.0) == (3, 2)  # reach 2 ahead: exact from there
    assert shortest_window(power, np.zeros(0), decaying, bar_db=30.0) == (0, 3)  # nothing reaches back: no context


# --- exactness on the real models ------------------------------------------------------------------

@pytest.mark.parametrize("steps", [DEFAULT_STEPS, 8], ids=["default schedule", "step 8"])
def test_v4_stream_is_the_offline_pass_whatever_the_push_sizes(v4_model, steps):
    infer, metadata = v4_model
    frames = 300 if steps == DEFAULT_STEPS else 160
    mel = sample_mel("v4", frames, seed=3)
    offline = infer(mel)
    recorded = Recorded(infer)
    outputs = {}
    for kind in ("one frame", "random", "one push"):
        stream = Stream(recorded, hop=480, context_frames=metadata["stream_context_frames"],
                        lookahead_frames=metadata["stream_lookahead_frames"], step_frames=steps)
        outputs[kind] = streamed(stream, mel, push_sizes(frames, kind))
    snr = snr_db(offline, outputs["one push"])
    print(f"\nv4, {frames} frames, steps {steps}: {snr:.1f} dB against the offline pass; windows {sorted(set(recorded.shapes))}")
    assert all(audio.shape == offline.shape for audio in outputs.values())
    assert all(np.array_equal(audio, outputs["one push"]) for audio in outputs.values())
    assert recorded.runs == len(recorded.shapes) // 3  # every pattern ran the very same windows
    assert snr >= BAR_DB


def test_v3_stream_matches_the_offline_pass_at_a_short_length(onnx_v3):
    session, metadata = cpu_session(onnx_v3), read_metadata(onnx_v3)
    frames = 140
    mel = sample_mel("v3", frames, seed=4)
    offline = run_audio(session, mel)
    recorded = Recorded(lambda window: run_audio(session, window))
    outputs = [streamed(Stream(recorded, hop=256, context_frames=metadata["stream_context_frames"],
                               lookahead_frames=metadata["stream_lookahead_frames"], step_frames=DEFAULT_STEPS),
                        mel, push_sizes(frames, kind, seed=1)) for kind in ("random", "one frame")]
    snr = snr_db(offline, outputs[0])
    print(f"\nv3, {frames} frames: {snr:.1f} dB against the offline pass; windows {recorded.shapes[:len(recorded.shapes) // 2]}")
    assert np.array_equal(outputs[0], outputs[1]) and snr >= BAR_DB


# H100 costs of one call (fp16, CUDA graphs, batch 1; issue #13) at two window lengths: a fixed cost
# per call plus a cost per frame, the line through them
H100_MS = {"v3": ((80, 10.3), (466, 30.8)), "v4": ((64, 2.0), (500, 4.8))}
CFM_CHUNK = {"v3": 466, "v4": 500}  # frames of mel per GPT-SoVITS CFM chunk (T_chunk - T_ref)


def h100_ms(vocoder: str, frames: int) -> float:
    (f0, t0), (f1, t1) = H100_MS[vocoder]
    return t0 + (t1 - t0) / (f1 - f0) * (frames - f0)


@pytest.mark.parametrize("fixture", ["onnx_v4", "onnx_v3"])
def test_default_schedule_keeps_the_overlap_work_small(request, fixture):
    """Frames the windows process per frame of audio (CPU work is proportional to frames), and the
    same streams priced with the H100 costs above, against one offline pass of the stream."""
    metadata = read_metadata(request.getfixturevalue(fixture))
    vocoder, rows = metadata["vocoder"], []
    for frames in (500, 1000, 2000, 4000, 20000):
        shapes = []
        def silence(mel, shapes=shapes):
            shapes.append(mel.shape[2])
            return np.zeros((1, 1, mel.shape[2]), np.float32)
        stream = Stream(silence, hop=1,
                        context_frames=metadata["stream_context_frames"],
                        lookahead_frames=metadata["stream_lookahead_frames"], step_frames=DEFAULT_STEPS)
        streamed(stream, np.zeros((1, 1, frames), np.float32), [frames])
        work = sum(shapes) / frames
        h100 = sum(h100_ms(vocoder, w) for w in shapes) / h100_ms(vocoder, frames)
        rows.append(f"{frames:6d} frames: {len(shapes):3d} calls, {work:.2f}x the frames, {h100:.2f}x on the H100 costs")
        assert work <= (1.5 if frames >= 1000 else 2.0) and (frames < 20000 or work <= 1.1)
    first = metadata["stream_context_frames"] + DEFAULT_STEPS[0] + metadata["stream_lookahead_frames"]
    print(f"\n{vocoder}, steps {DEFAULT_STEPS}: first audio after a {first}-frame window "
          f"({h100_ms(vocoder, first):.1f} ms on the H100 costs; one {CFM_CHUNK[vocoder]}-frame CFM chunk whole: "
          f"{h100_ms(vocoder, CFM_CHUNK[vocoder]):.1f} ms)\n"
          + "\n".join(rows))


# --- Engine.stream and the CLI on the TensorRT contract double -----------------------------------------

SMALL_PROFILES = [{"name": "short", "min": [1, 1], "opt": [1, 32], "max": [2, 64]},
                  {"name": "long", "min": [1, 1], "opt": [1, 64], "max": [1, 128]}]


@pytest.fixture()
def double_plan(monkeypatch, tmp_path, onnx_v4):
    """A small v4 fp32 plan built through the TensorRT-RTX contract double and loadable on this CPU:
    the runtime runs it on the host CUDA double, ONNX Runtime standing in for the engine."""
    layer = HostCudaLayer()
    trt = install(monkeypatch, "tensorrt_rtx-1", World(layer))
    monkeypatch.setattr(cuda_module, "cuda_layer", lambda binding=None: layer)
    settings = copy.deepcopy(load_settings())
    settings["profiles"]["v4"] = copy.deepcopy(SMALL_PROFILES)
    settings["paths"]["timing_cache"] = str(tmp_path / "timing.cache")
    return build_plan(onnx_v4, "v4", "fp32", tmp_path / "v4.fp32.plan", backend=trt.__name__, settings=settings)


def test_build_records_the_measurement_in_the_manifest(double_plan, onnx_v4):
    manifest, metadata = runtime.read_manifest(double_plan), read_metadata(onnx_v4)
    for key in ("receptive_field_frames", "stream_context_frames", "stream_lookahead_frames"):
        assert manifest[key] == metadata[key]


def test_engine_stream_fits_its_profiles_and_gives_the_engines_audio(double_plan, caplog):
    mel = sample_mel("v4", 120, seed=8)
    manifest = runtime.read_manifest(double_plan)
    context, lookahead = manifest["stream_context_frames"], manifest["stream_lookahead_frames"]
    with runtime.load_engine(double_plan) as engine:
        offline = engine(mel)
        stream = engine.stream()
        room = engine.max_frames - context - lookahead
        assert (stream.context_frames, stream.lookahead_frames) == (context, lookahead)
        assert stream.steps == tuple(s for s in DEFAULT_STEPS if s < room) + (room,)
        audio = streamed(stream, mel, push_sizes(120, "random"))
        tensor_audio = streamed(engine.stream(), torch.from_numpy(mel), push_sizes(120, "one frame"))
        with caplog.at_level(logging.WARNING, "runtime"):
            engine.stream(context_frames=2)
    assert snr_db(offline, audio) >= BAR_DB and isinstance(tensor_audio, torch.Tensor)
    assert np.array_equal(tensor_audio.numpy(), audio)
    assert f"context of 2 frames is below the {context}" in caplog.text


def test_engine_gives_a_mel_longer_than_its_profiles_as_one_pass(double_plan, onnx_v4):
    mel = sample_mel("v4", 300, seed=9)
    with runtime.load_engine(double_plan) as engine:
        audio = engine(mel)  # 300 frames, profiles up to 128: overlap-and-discard chunks
    assert snr_db(run_audio(cpu_session(onnx_v4), mel), audio) >= BAR_DB


def run_cli(*argv) -> int:
    return run_main(runtime_main, [str(a) for a in argv])


def wav_bytes(path) -> bytes:
    with wave.open(str(path)) as wav:
        return wav.readframes(wav.getnframes())


def test_cli_stream_writes_the_same_file_and_reports_first_audio(double_plan, tmp_path, caplog):
    """Pushes of 48 frames: with the exact reach (12 each side) every window is 72 frames, where ONNX
    Runtime's CPU kernels give a frame the same float32 as in the 120-frame offline pass (below
    ~66 frames they round differently in the last bits, which can move a 16-bit sample by one step)."""
    np.save(tmp_path / "mel.npy", sample_mel("v4", 120, seed=10)[0])
    assert run_cli(double_plan, "--mel", tmp_path / "mel.npy", "--output", tmp_path / "offline.wav") == 0
    with caplog.at_level(logging.INFO, "runtime"):
        assert run_cli(double_plan, "--mel", tmp_path / "mel.npy", "--output", tmp_path / "stream.wav", "--stream", 48) == 0
    assert "first audio after" in caplog.text and "real-time factor" in caplog.text
    assert wav_bytes(tmp_path / "stream.wav") == wav_bytes(tmp_path / "offline.wav")
    assert run_cli(double_plan, "--mel", tmp_path / "mel.npy", "--output", tmp_path / "offline.f32.wav", "--float") == 0
    assert run_cli(double_plan, "--mel", tmp_path / "mel.npy", "--output", tmp_path / "stream.f32.wav", "--float",
                   "--stream", 16) == 0
    floats = [wavfile.read(tmp_path / f"{name}.f32.wav")[1] for name in ("offline", "stream")]
    assert snr_db(*floats) >= BAR_DB


@pytest.mark.parametrize("step, message", [(0, "at least 1"), (500, "at most 104")])
def test_cli_bad_stream_step_is_one_line(double_plan, tmp_path, capsys, step, message):
    np.save(tmp_path / "mel.npy", np.zeros((100, 20), np.float32))
    assert run_cli(double_plan, "--mel", tmp_path / "mel.npy", "--output", tmp_path / "out.wav", "--stream", step) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0] and not (tmp_path / "out.wav").exists()


# --- GPT-SoVITS: the CFM chunk loop feeding a stream ------------------------------------------------------

class OnnxRuntimeEngine:
    """The plan's ONNX model under ONNX Runtime with the runtime Engine's interface, for the drop-in."""

    def __init__(self, plan, device=0):
        self.manifest = runtime.read_manifest(plan)
        self.session = cpu_session(self.manifest["onnx"]["path"])
        self.sampling_rate, self.hop = self.manifest["sampling_rate"], self.manifest["hop"]

    def __call__(self, mel):
        return run_audio(self.session, mel)


def test_gpt_sovits_streamed_synthesis_is_the_drop_ins_audio_and_starts_after_one_chunk(tmp_path, onnx_v4, vocoder_v4):
    from gpt_sovits_standin import StandInTTS
    from serving.gpt_sovits import install, stream_vocoder_synthesis

    metadata = read_metadata(onnx_v4)
    engines = tmp_path / "engines"
    write_plan(engines, vocoder="v4", precision="fp32", onnx_path=onnx_v4,
               **{key: metadata[key] for key in ("receptive_field_frames", "stream_context_frames", "stream_lookahead_frames")})
    settings = copy.deepcopy(load_settings())
    settings["paths"]["engines"] = str(engines)
    tokens, phones = torch.zeros((1, 1, 33), dtype=torch.long), torch.zeros((1, 5), dtype=torch.long)
    tts = StandInTTS("v4", vocoder_v4, todo_frames=33 * 4)
    install(tts, {"use_tensorrt": True}, settings=settings, load_engine=OnnxRuntimeEngine)
    offline = tts.using_vocoder_synthesis(tokens, phones, sample_steps=4)
    cfm_calls_per_chunk = tts.vits_model.cfm.calls
    tts.vits_model.cfm.calls = 0
    pieces, cfm_calls_at_piece = [], []
    for piece in stream_vocoder_synthesis(tts, tokens, phones, sample_steps=4):
        pieces.append(piece)
        cfm_calls_at_piece.append(tts.vits_model.cfm.calls)
    audio = torch.cat(pieces)
    assert cfm_calls_per_chunk == tts.vits_model.cfm.calls == 4  # 132 frames in chunks of 40
    assert cfm_calls_at_piece[0] == 1  # audio while the CFM is still working
    assert audio.shape == offline.shape and snr_db(offline.numpy(), audio.numpy()) >= BAR_DB
    print(f"\nGPT-SoVITS v4 stand-in: {len(pieces)} pieces over {cfm_calls_per_chunk} CFM chunks, "
          f"{snr_db(offline.numpy(), audio.numpy()):.1f} dB against the non-streaming drop-in")
