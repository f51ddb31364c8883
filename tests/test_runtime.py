"""The runtime's CPU-side behaviour: manifest checks, profile choice, chunking and cross-fade, input
checks, WAV writing, CLI errors and its import boundaries. GPU paths are in test_runtime_gpu.py."""
from __future__ import annotations

import ast
import dataclasses
import errno
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

import runtime
from factories import write_plan
from pipeline.onnx_tools import cpu_session
from pipeline.quality import snr_db
from runtime.__main__ import main as runtime_main
from runtime.batching import batch_pieces, choose_profile
from runtime.chunks import chunk_starts, handovers
from runtime.errors import EngineError, PlanNotRunnable, RuntimeUserError, run_main
from runtime.files import atomic_output
from runtime.manifest import profiles_of
from runtime.runnable import BackendInfo, Gpu, check_runnable
from runtime.wav import to_pcm16, write_wav

REPO = Path(__file__).resolve().parent.parent
PROFILES = [{"name": "short", "min": [1, 1], "opt": [1, 500], "max": [4, 1000]},
            {"name": "long", "min": [1, 1], "opt": [1, 2000], "max": [2, 4000]}]
RTX = BackendInfo("tensorrt_rtx", "1.7.1.116", ("SM75", "SM80", "SM86", "SM89", "SM120", "SM121"))


def run_cli(argv) -> int:
    return run_main(runtime_main, argv)


def make_plan(tmp_path: Path, **options) -> Path:
    """A v4 fp16 plan (placeholder bytes) with two profiles and its manifest, from the test factory."""
    options.setdefault("profiles", PROFILES)
    return write_plan(tmp_path, **options)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


# ---- manifest -------------------------------------------------------------------------------------

def test_read_manifest_returns_the_manifest_beside_the_plan(tmp_path):
    plan = make_plan(tmp_path)
    manifest = runtime.read_manifest(plan)
    assert manifest["hop"] == 480 and manifest["plan"]["file"] == plan.name


@pytest.mark.parametrize("damage, expected", [
    (lambda plan: plan.unlink(), "not found"),
    (lambda plan: plan.with_suffix(".json").unlink(), "manifest"),
    (lambda plan: plan.with_suffix(".json").write_text("{not json", encoding="utf-8"), "not valid JSON"),
    (lambda plan: plan.with_suffix(".json").write_text(json.dumps({"format": 2}), encoding="utf-8"), "format"),
])
def test_unreadable_manifest_is_one_line_naming_the_fix(tmp_path, damage, expected):
    plan = make_plan(tmp_path)
    damage(plan)
    with pytest.raises(RuntimeUserError) as excinfo:
        runtime.read_manifest(plan)
    message = one_line_error(excinfo)
    assert expected in message and "make engines" in message


def test_manifest_without_profiles_is_refused(tmp_path):
    with pytest.raises(RuntimeUserError, match="profiles"):
        runtime.read_manifest(make_plan(tmp_path, profiles=[]))


def test_tensorrt_rtx_plan_on_compute_capability_9_is_refused_with_the_fix(tmp_path):
    manifest = runtime.read_manifest(make_plan(tmp_path))
    with pytest.raises(PlanNotRunnable) as excinfo:
        check_runnable(manifest, Gpu("NVIDIA H100 80GB HBM3", (9, 0)), RTX)
    message = one_line_error(excinfo)
    for part in ("TensorRT-RTX", "compute capability 9.0", "full TensorRT", "make engines", "tensorrt extra",
                 "compute capability 7.5, 8.0, 8.6, 8.9, 12.0, 12.1"):
        assert part in message
    assert "RTX card" not in message  # SM80 (A100) and SM121 (GB10) are no RTX cards


def test_a_gpu_tensorrt_rtx_cannot_run_is_refused_whatever_the_manifest_lists(tmp_path):
    """A manifest may name SM90 (hand-edited, or from a future release); TensorRT-RTX 1.7 still cannot run there."""
    manifest = runtime.read_manifest(make_plan(tmp_path, targets=["SM90"]))
    reason = runtime.why_not_runnable(manifest, Gpu("NVIDIA H200", (9, 0)), RTX)
    assert reason and reason.startswith("TensorRT-RTX plans do not run on NVIDIA H200")


def test_tensorrt_rtx_plan_runs_on_a_targeted_rtx_card(tmp_path):
    manifest = runtime.read_manifest(make_plan(tmp_path))
    check_runnable(manifest, Gpu("NVIDIA GeForce RTX 4090", (8, 9)), RTX)


def test_tensorrt_rtx_plan_of_another_cuda_major_names_the_wheel_to_install(tmp_path):
    manifest = runtime.read_manifest(make_plan(tmp_path, cuda_major="cu13"))
    card = Gpu("NVIDIA GeForce RTX 3060", (8, 6))
    reason = runtime.why_not_runnable(manifest, card, dataclasses.replace(RTX, cuda_major="cu12"))
    assert "tensorrt-rtx-cu13" in reason and "tensorrt-rtx-cu12 is installed" in reason
    assert runtime.why_not_runnable(manifest, card, dataclasses.replace(RTX, cuda_major="cu13")) is None
    del manifest["cuda_major"]  # manifests written before the CUDA major was recorded
    assert runtime.why_not_runnable(manifest, card, dataclasses.replace(RTX, cuda_major="cu12")) is None


def test_untargeted_rtx_card_names_the_missing_target(tmp_path):
    manifest = runtime.read_manifest(make_plan(tmp_path, targets=["SM86", "SM89"]))
    with pytest.raises(PlanNotRunnable) as excinfo:
        check_runnable(manifest, Gpu("NVIDIA GeForce RTX 2080 Ti", (7, 5)), RTX)
    assert "SM75" in one_line_error(excinfo) and "rtx_compute_capabilities" in str(excinfo.value)


def test_other_backend_installed_names_the_package_to_install(tmp_path):
    manifest = runtime.read_manifest(make_plan(tmp_path))
    with pytest.raises(PlanNotRunnable) as excinfo:
        check_runnable(manifest, Gpu("NVIDIA GeForce RTX 4090", (8, 9)), BackendInfo("tensorrt", "10.13.0.35"))
    assert "pip install tensorrt-rtx==1.7.1.116" in one_line_error(excinfo)
    assert "pip install tensorrt-rtx==1.7.1.116" in runtime.why_not_runnable(manifest, Gpu("RTX 4090", (8, 9)), None)
    assert "no usable CUDA GPU" in runtime.why_not_runnable(manifest, None, RTX)


@pytest.mark.parametrize("version_compatible, running, ok", [
    (False, "10.13.0.35", True), (False, "10.13.0.36", False), (False, "10.13.2.6", False),
    (True, "10.14.1.48", True), (True, "10.12.0.36", False), (True, "11.0.0.1", True),
])
def test_version_rules_follow_version_compatibility(tmp_path, version_compatible, running, ok):
    """Plans are tied to all four parts of their version; version-compatible ones load in any later
    version, TensorRT 11 included (NVIDIA documents 10.x version-compatible plans running on 11)."""
    manifest = runtime.read_manifest(make_plan(tmp_path, backend="tensorrt", version="10.13.0.35", targets=["SM90"],
                                               version_compatible=version_compatible))
    reason = runtime.why_not_runnable(manifest, Gpu("NVIDIA H100", (9, 0)), BackendInfo("tensorrt", running))
    assert (reason is None) == ok, reason
    if not ok:
        assert "10.13.0.35" in reason and "make engines" in reason


@pytest.mark.parametrize("built, running, ok", [
    ("8.6.1.6", "8.6.1.6", True), ("8.6.1.6", "10.0.1.6", True), ("10.13.0.35", "11.0.0.1", True),
    ("8.6.1.6", "11.0.0.1", False), ("10.13.0.35", "12.0.0.1", False), ("8.5.3.1", "10.0.1.6", False),
])
def test_version_compatible_plans_cross_one_major_only(tmp_path, built, running, ok):
    """NVIDIA's support matrix: 8.6+ version-compatible plans load in 10, 10.x plans in 11; a
    TensorRT 8 plan does not load in 11."""
    manifest = runtime.read_manifest(make_plan(tmp_path, backend="tensorrt", version=built, targets=["SM90"],
                                               version_compatible=True))
    reason = runtime.why_not_runnable(manifest, Gpu("NVIDIA H100", (9, 0)), BackendInfo("tensorrt", running))
    assert (reason is None) == ok, reason
    if not ok:
        assert built in reason and "make engines" in reason


@pytest.mark.parametrize("version, ok", [("10.4.0.26", True), ("8.6.1.6", True), ("10.5.0.18", False),
                                         ("11.0.0.1", False)])
def test_volta_runs_full_tensorrt_up_to_10_4(tmp_path, version, ok):
    """TensorRT 10.5 removed Volta (compute capability 7.0); 10.4 and older run there."""
    manifest = runtime.read_manifest(make_plan(tmp_path, backend="tensorrt", version=version, targets=["SM70"]))
    reason = runtime.why_not_runnable(manifest, Gpu("Tesla V100-SXM2-16GB", (7, 0)), BackendInfo("tensorrt", version))
    assert (reason is None) == ok, reason
    if not ok:
        assert "7.5 or newer" in reason and "10.4 or older" in reason


def test_compute_capability_names_round_trip_and_sort():
    from types import SimpleNamespace

    from runtime.targets import parse_sm, rtx_supported, sm_name
    assert [sm_name(c) for c in ((7, 5), (8, 6), (12, 0), (12, 1))] == ["SM75", "SM86", "SM120", "SM121"]
    assert [parse_sm(n) for n in ("SM75", "SM120", "sm86", "SM8", "SM1234", "CURRENT", 86)] == \
        [(7, 5), (12, 0), None, None, None, None, None]
    fake = SimpleNamespace(ComputeCapability=SimpleNamespace(__members__=dict.fromkeys(["NONE", "SM120", "SM75", "SM89"])))
    assert rtx_supported(fake) == ["SM75", "SM89", "SM120"]


def test_manifest_without_a_kernel_specialization_is_refused(tmp_path):
    """The runtime applies the manifest's setting and keeps no default of its own."""
    for bad in ("sometimes", None):
        with pytest.raises(RuntimeUserError, match="rtx_kernel_specialization"):
            runtime.read_manifest(make_plan(tmp_path, rtx_kernel_specialization=bad))


def test_the_build_cannot_write_a_manifest_the_runtime_would_refuse(tmp_path):
    from runtime.manifest import manifest_text
    manifest = runtime.read_manifest(make_plan(tmp_path))
    assert json.loads(manifest_text(manifest)) == manifest
    with pytest.raises(EngineError, match="hardware_compatibility"):
        manifest_text({**manifest, "hardware_compatibility": "everything"})


def test_one_logger_keeps_the_first_and_last_tensorrt_error_on_one_line(caplog):
    """The builder and the runtime log TensorRT through the same class (runtime/tensorrt_log.py)."""
    import logging

    trt = pytest.importorskip("tensorrt_rtx")
    from runtime.tensorrt_log import tensorrt_logger
    logger = tensorrt_logger(trt, logging.getLogger("runtime"))
    with caplog.at_level(logging.DEBUG, logger="runtime"):
        logger.log(trt.ILogger.Severity.WARNING, "slow path")
        logger.log(trt.ILogger.Severity.ERROR, "first\n  failure")
        logger.log(trt.ILogger.Severity.INTERNAL_ERROR, "second")
    assert (logger.first_error, logger.last_error) == ("first failure", "second")
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.ERROR, logging.ERROR]


def test_ampere_plus_plan_is_refused_on_turing(tmp_path):
    manifest = runtime.read_manifest(make_plan(tmp_path, backend="tensorrt", version="10.13.0.35", targets=None,
                                               hardware_compatibility="ampere_plus"))
    with pytest.raises(PlanNotRunnable, match="Ampere"):
        check_runnable(manifest, Gpu("Tesla T4", (7, 5)), BackendInfo("tensorrt", "10.13.0.35"))


def test_plan_that_does_not_match_its_manifest_is_refused(tmp_path):
    plan = make_plan(tmp_path)
    manifest = runtime.read_manifest(plan)
    runtime.check_plan_bytes(manifest, plan.read_bytes(), plan)
    damaged = bytearray(plan.read_bytes())
    damaged[3] ^= 1
    with pytest.raises(EngineError) as excinfo:
        runtime.check_plan_bytes(manifest, bytes(damaged), plan)
    assert "does not match its manifest" in one_line_error(excinfo)


# ---- profiles -------------------------------------------------------------------------------------

def test_profile_choice_prefers_fewest_splits_then_the_tightest_profile(tmp_path):
    profiles = profiles_of(runtime.read_manifest(make_plan(tmp_path)))
    assert choose_profile(profiles, 1, 800).name == "short"
    assert choose_profile(profiles, 4, 800).name == "short"
    assert choose_profile(profiles, 1, 1001).name == "long"
    assert choose_profile(profiles, 1, 4001) is None
    assert [(s.start, s.stop) for s in batch_pieces(5, 2)] == [(0, 2), (2, 4), (4, 5)]


# ---- chunks of long mels: overlap-and-discard ---------------------------------------------------

@pytest.mark.parametrize("frames, chunk, context, lookahead", [(300, 64, 9, 9), (65, 64, 9, 9), (1000, 100, 0, 0),
                                                               (1234, 97, 19, 13)])
def test_chunks_cover_the_mel_and_hand_over_with_context_and_lookahead(frames, chunk, context, lookahead):
    starts = chunk_starts(frames, chunk, context + lookahead)
    assert starts[0] == 0 and starts[-1] + chunk == frames
    cuts = handovers(starts, chunk, frames, context, lookahead)
    assert cuts[0] == 0 and cuts[-1] == frames and cuts == sorted(cuts)
    for i, (start, begin, end) in enumerate(zip(starts, cuts, cuts[1:], strict=False)):
        assert start <= begin < end <= start + chunk
        assert i == 0 or begin - start >= context                        # every frame has its context ...
        assert i == len(starts) - 1 or start + chunk - end >= lookahead  # ... and its lookahead in its chunk


def test_chunks_too_short_for_context_and_lookahead_are_refused():
    with pytest.raises(RuntimeUserError, match="larger profile"):
        chunk_starts(500, 64, 64)


def moving_average(mel, hop=5, reach=3):
    """A vocoder with a reach of `reach` frames each side: each frame's mean band value, averaged
    over its neighbours (zero beyond the edges), held for `hop` samples."""
    level = np.pad(mel.mean(axis=1, keepdims=True), ((0, 0), (0, 0), (reach, reach)))
    frames = mel.shape[2]
    smooth = sum(level[:, :, shift:shift + frames] for shift in range(2 * reach + 1)) / (2 * reach + 1)
    return np.repeat(smooth, hop, axis=2)


def test_chunked_synthesis_with_the_reach_as_context_is_exact():
    mel = np.random.default_rng(0).standard_normal((2, 100, 333)).astype(np.float32)
    calls = []
    infer = lambda m: calls.append(m.shape) or moving_average(m)  # noqa: E731
    audio = runtime.synthesize(infer, mel, max_frames=50, hop=5, context_frames=3, lookahead_frames=3)
    assert calls == [(2 * len(chunk_starts(333, 50, 6)), 100, 50)]  # one batched call, equal chunks
    np.testing.assert_allclose(audio, moving_average(mel), atol=1e-6)


def test_chunked_synthesis_works_on_torch_tensors_too():
    torch = pytest.importorskip("torch")
    mel = np.random.default_rng(1).standard_normal((1, 100, 200)).astype(np.float32)
    audio = runtime.synthesize(lambda m: torch.from_numpy(moving_average(m.numpy())), torch.from_numpy(mel),
                               max_frames=64, hop=5, context_frames=3, lookahead_frames=3)
    np.testing.assert_allclose(audio.numpy(), moving_average(mel), atol=1e-6)


def test_infer_returning_the_wrong_length_is_an_engine_error():
    mel = np.zeros((1, 100, 10), np.float32)
    with pytest.raises(EngineError, match="hop"):
        runtime.synthesize(lambda m: moving_average(m, hop=4), mel, max_frames=64, hop=5, context_frames=3,
                           lookahead_frames=3)


def test_chunked_v4_under_onnx_runtime_matches_one_pass(onnx_v4):
    from pipeline.onnx_metadata import read_metadata
    from vocoder_models.mels import sample_mel

    session = cpu_session(onnx_v4)
    infer = lambda m: session.run(["audio"], {"mel": m})[0]  # noqa: E731
    metadata = read_metadata(onnx_v4)
    frames, hop = 300, 480
    mel = runtime.check_mel(sample_mel("v4", frames, batch=1, seed=3), 100)
    whole = infer(mel)
    chunked = runtime.synthesize(infer, mel, max_frames=64, hop=hop, context_frames=metadata["stream_context_frames"],
                                 lookahead_frames=metadata["stream_lookahead_frames"])
    assert chunked.shape == whole.shape == (1, 1, frames * hop)
    snr = snr_db(whole, chunked)
    print(f"chunked (64-frame chunks, the export's measured context and lookahead) vs one pass, v4 at {frames} frames: "
          f"SNR {snr:.1f} dB")
    assert snr >= 100.0


# ---- input checks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mel, expected", [
    (np.zeros((100, 50), np.float32), "(batch, n_mels, frames)"),
    (np.zeros((1, 80, 50), np.float32), "80 bands"),
    (np.zeros((1, 50, 100), np.float32), "transposed"),
    (np.zeros((1, 100, 50), np.int64), "floating point"),
    (np.zeros((1, 100, 0), np.float32), "empty"),
    (np.zeros((0, 100, 5), np.float32), "empty"),
    (np.full((1, 100, 5), np.nan, np.float32), "NaN or Inf"),
    (np.array([[[np.inf] * 5] * 100]), "NaN or Inf"),
])
def test_bad_mels_are_one_line_errors(mel, expected):
    with pytest.raises(RuntimeUserError) as excinfo:
        runtime.check_mel(mel, 100)
    assert expected in one_line_error(excinfo)


def test_good_mel_becomes_contiguous_float32():
    mel = np.asfortranarray(np.random.default_rng(0).standard_normal((2, 100, 7)))
    checked = runtime.check_mel(mel, 100)
    assert checked.dtype == np.float32 and checked.flags.c_contiguous
    np.testing.assert_allclose(checked, mel, rtol=1e-6)


def test_torch_mel_is_checked_with_torch():
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeUserError, match="NaN"):
        runtime.check_mel(torch.full((1, 100, 3), float("nan")), 100)
    checked = runtime.check_mel(torch.zeros((1, 100, 3), dtype=torch.float64), 100)
    assert checked.dtype == torch.float32


# ---- WAV ------------------------------------------------------------------------------------------

def test_pcm16_is_peak_normalised_only_above_one():
    quiet = np.array([0.5, -0.25, 0.0], np.float32)
    assert to_pcm16(quiet).tolist() == [16384, -8192, 0]
    loud = np.array([2.0, -1.0, 0.5], np.float32)
    assert to_pcm16(loud).tolist() == [32767, -16384, 8192]


def test_pcm16_wav_reads_back(tmp_path):
    audio = np.sin(np.linspace(0, 100, 4800)).astype(np.float32) * 0.9
    path = write_wav(tmp_path / "out.wav", audio, 48000)
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (1, 2, 48000, 4800)
        samples = np.frombuffer(wav.readframes(4800), "<i2")
    np.testing.assert_array_equal(samples, to_pcm16(audio))
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


def test_float_wav_reads_back_bit_exact(tmp_path):
    wavfile = pytest.importorskip("scipy.io.wavfile")
    audio = (np.random.default_rng(0).standard_normal(1001) * 1.5).astype(np.float32)
    path = write_wav(tmp_path / "out.wav", audio, 24000, float32=True)
    rate, samples = wavfile.read(path)
    assert rate == 24000 and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, audio)


def test_failed_write_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(RuntimeUserError, match="cannot write"):
        write_wav(blocker / "out.wav", np.zeros(10, np.float32), 48000)
    with pytest.raises(ValueError), atomic_output(tmp_path / "out.wav") as tmp:
        tmp.write_bytes(b"half")
        raise ValueError("boom")
    with pytest.raises(RuntimeUserError, match="is full .*free disk space"), atomic_output(tmp_path / "out.wav"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


# ---- CLI ------------------------------------------------------------------------------------------

def cli_error(capsys, *argv) -> str:
    code = run_cli([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("mel, expected", [
    (np.zeros((1, 80, 20), np.float32), "80 bands"),
    (np.full((100, 20), np.nan, np.float32), "NaN"),
    (np.zeros((100, 0), np.float32), "empty"),
    (np.zeros((1, 1, 100, 20), np.float32), "(batch, n_mels, frames)"),
])
def test_cli_bad_mel_is_one_line_and_writes_nothing(tmp_path, capsys, mel, expected):
    plan = make_plan(tmp_path)
    np.save(tmp_path / "mel.npy", mel)
    assert expected in cli_error(capsys, plan, "--mel", tmp_path / "mel.npy", "--output", tmp_path / "out.wav")
    assert not (tmp_path / "out.wav").exists()


def test_cli_missing_files_and_mismatched_plan(tmp_path, capsys):
    plan = make_plan(tmp_path)
    mel = tmp_path / "mel.npy"
    out = tmp_path / "out.wav"
    assert "not found" in cli_error(capsys, tmp_path / "none.plan", "--mel", mel, "--output", out)
    assert "mel file" in cli_error(capsys, plan, "--mel", mel, "--output", out)
    mel.write_text("text, not numpy", encoding="utf-8")
    assert ".npy" in cli_error(capsys, plan, "--mel", mel, "--output", out)
    np.save(mel, np.zeros((100, 20), np.float32))
    plan.write_bytes(b"another plan")
    assert "does not match its manifest" in cli_error(capsys, plan, "--mel", mel, "--output", out)
    assert not out.exists()


def test_cli_entry_point_without_a_gpu_stack_fails_in_one_line(tmp_path):
    """`python -m runtime` end to end; on a machine where the plan cannot run it says why in one line."""
    plan = make_plan(tmp_path)
    np.save(tmp_path / "mel.npy", np.zeros((100, 20), np.float32))
    result = subprocess.run([sys.executable, "-m", "runtime", str(plan), "--mel", str(tmp_path / "mel.npy"),
                             "--output", str(tmp_path / "out.wav")], cwd=REPO, capture_output=True, text=True, encoding="utf-8")
    if result.returncode == 0:
        pytest.skip("this machine ran the plan")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not (tmp_path / "out.wav").exists()


def test_a_long_user_error_keeps_its_fix(capsys):
    """A message made long by its paths (a deep temporary folder, say) is printed whole: its end is
    the fix. Foreign text inside such messages is cut where it is quoted (`reason_of`)."""
    fix = "compare its cleaned ONNX instead: python -m validate compare a.onnx b.onnx --layerwise"

    def fails(_argv):
        raise PlanNotRunnable(f"{'/deep' * 100}/v4.fp16.plan cannot run here; {fix}")
    assert run_main(fails, []) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert len(line) > 500 and line.endswith(fix)


# ---- boundaries -----------------------------------------------------------------------------------

def test_import_runtime_loads_neither_torch_nor_onnx():
    code = ("import sys, json, runtime; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'onnx', 'onnxruntime', 'pycuda', 'tensorrt', 'tensorrt_rtx', 'export', 'pipeline'})))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, encoding="utf-8")
    assert json.loads(result.stdout) == []


def test_runtime_imports_only_stdlib_numpy_and_itself_at_module_level():
    """Scan runtime/*.py: module-level imports are stdlib, numpy or runtime; function-level ones may
    add torch, pycuda and TensorRT; no file imports another stage or onnx."""
    stages = {"export", "build", "validate", "pipeline", "serving", "onnx", "onnxruntime"}
    for path in sorted((REPO / "runtime").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            else:
                continue
            assert not stages & set(names), f"{path.name} imports {names}"
            if node.col_offset == 0:
                allowed = set(sys.stdlib_module_names) | {"numpy", "runtime", "__future__"}
                assert set(names) <= allowed, f"{path.name} imports {names} at module level"
