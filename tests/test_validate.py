"""Validate stage on CPU: metrics by hand, mels against an independent reference, the layer-by-layer
comparison on a planted fault, plans that cannot execute here, the benchmark's reasons and the report."""
from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import runtime
from factories import write_plan
from pipeline.errors import UserError
from pipeline.settings import REPO_ROOT, VOCODERS, load_settings
from runtime.errors import RuntimeUserError
from validate import metrics
from vocoder_models.mels import MEL_SPECS, MelSpec, log_mel, speech_like_audio


def small_settings(tmp_path: Path) -> dict:
    """The real config with the benchmark and report cut down to CPU-test sizes."""
    settings = copy.deepcopy(load_settings())
    settings["validate"].update(bench_cpu_frames=[8], bench_cpu_batches=[1], bench_warmup=1, bench_runs=3,
                                bench_min_runs=2, bench_row_seconds=0.1, report_inputs=3, report_frames=32,
                                artifacts=str(tmp_path / "artifacts"))
    return settings


def to_fp16(model: onnx.ModelProto, path: Path) -> Path:
    from onnxconverter_common import float16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(float16.convert_float_to_float16(model, keep_io_types=True), str(path))
    return path


@pytest.fixture(scope="module")
def fp16_v4(onnx_v4, tmp_path_factory) -> Path:
    return to_fp16(onnx.load(str(onnx_v4)), tmp_path_factory.mktemp("fp16") / "v4.fp16.onnx")


# --- metrics --------------------------------------------------------------------------------------


def test_metrics_match_hand_computed_values():
    assert metrics.mean_squared_error([1, 2, 3], [1, 2, 5]) == pytest.approx(4 / 3)
    with pytest.raises(ValueError):
        metrics.mean_squared_error([1, 2], [1, 2, 3])
    measured = metrics.audio_metrics([3.0, 4.0] * 600, [3.0, 5.0] * 600, 24000, load_settings())
    assert measured["snr_db"] == pytest.approx(10 * math.log10(25)) and measured["finite"]


def test_log_mel_distance_sees_gain_as_log_of_it():
    audio = speech_like_audio(0.5, 24000, seed=3)
    resolutions = [[512, 128], [1024, 256]]
    assert metrics.log_mel_distance(audio, audio, 24000, resolutions, 80) == 0.0
    doubled = metrics.log_mel_distance(audio, 2 * audio, 24000, resolutions, 80)
    assert 0.5 < doubled <= math.log(2) + 1e-3  # ln 2 in every band above the 1e-5 clamp


# --- mels -----------------------------------------------------------------------------------------


def reference_mel(audio: np.ndarray, spec: MelSpec) -> np.ndarray:
    """GPT-SoVITS' recipe rebuilt on torch.stft and librosa's filterbank, independent of vocoder_models/mels.py."""
    import librosa
    import torch
    y = torch.from_numpy(audio.astype(np.float32))[None, None]
    pad = (spec.n_fft - spec.hop) // 2
    y = torch.nn.functional.pad(y, (pad, pad), mode="reflect")[:, 0]
    stft = torch.stft(y, spec.n_fft, hop_length=spec.hop, win_length=spec.win, window=torch.hann_window(spec.win),
                      center=False, normalized=False, onesided=True, return_complex=True)
    magnitude = torch.sqrt(stft.abs() ** 2 + 1e-8)
    basis = torch.from_numpy(librosa.filters.mel(sr=spec.sampling_rate, n_fft=spec.n_fft, n_mels=spec.n_mels,
                                                 fmin=spec.fmin, fmax=spec.fmax))
    return torch.log(torch.clamp(basis @ magnitude, min=1e-5))[0].numpy()


@pytest.mark.parametrize("vocoder", VOCODERS)
def test_log_mel_matches_torch_stft_and_librosa(vocoder):
    spec = MEL_SPECS[vocoder]
    audio = speech_like_audio(0.6, spec.sampling_rate, seed=11)
    audio[: spec.sampling_rate // 10] = 0.0  # a silent stretch exercises the epsilon and the clamp
    ours, theirs = log_mel(audio, spec), reference_mel(audio, spec)
    assert ours.shape == theirs.shape == (100, len(audio) // spec.hop)
    assert np.abs(ours - theirs).max() < 2e-3


def test_mel_command_reads_wav_and_resamples(tmp_path):
    from scipy.io import wavfile

    from validate.wav_to_mel import mel_from_wav
    spec = MEL_SPECS["v4"]
    audio = speech_like_audio(0.5, spec.sampling_rate, seed=5)
    native, other = tmp_path / "native.wav", tmp_path / "at48k.wav"
    pcm = (audio * 32767).astype(np.int16)
    wavfile.write(native, spec.sampling_rate, pcm)
    wavfile.write(other, 48000, np.interp(np.arange(24000) / 48000, np.arange(len(audio)) / spec.sampling_rate,
                                          audio).astype(np.float32))
    out = tmp_path / "mel.npy"
    result = subprocess.run([sys.executable, "-m", "validate", "mel", str(native), "--vocoder", "v4", "--output", str(out)],
                            cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8")
    assert result.returncode == 0, result.stderr
    mel = np.load(out)
    assert mel.shape == (1, 100, len(audio) // spec.hop)
    assert np.abs(mel[0] - log_mel(pcm / 32768.0, spec)).max() < 1e-4  # PCM16 full scale is 32768
    resampled = mel_from_wav(other, "v4")
    assert resampled.shape == mel.shape
    assert np.median(np.abs(resampled - mel)) < 0.1  # same sound after 48 kHz -> 32 kHz
    with pytest.raises(UserError, match="not a readable WAV"):
        (tmp_path / "bad.wav").write_bytes(b"not audio")
        mel_from_wav(tmp_path / "bad.wav", "v4")


# --- comparison -----------------------------------------------------------------------------------


def test_healthy_fp16_candidate_passes(onnx_v4, fp16_v4, tmp_path):
    from validate.compare import compare
    outcome = compare(onnx_v4, fp16_v4, save_dir=tmp_path, settings=load_settings())
    assert outcome.passed, outcome.metric_failures
    assert outcome.precision == "fp16"
    assert all(m["cosine"] >= 0.9995 and m["snr_db"] >= 40 for m in outcome.metrics)
    for path in outcome.saved.values():
        assert Path(path).stat().st_size > 0
    saved = json.loads(Path(outcome.saved["inputs"]).read_text(encoding="utf-8"))  # Polygraphy's JSON: one feed per input
    feeds = saved["lst"] if isinstance(saved, dict) and "lst" in saved else saved
    assert len(feeds) == load_settings()["validate"]["compare_inputs"]


def test_layerwise_names_the_planted_fault_as_first_failing_layer(onnx_v4, tmp_path):
    model = onnx.load(str(onnx_v4))
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    target = convs[len(convs) // 3]  # a convolution inside the network, not the first layer
    weights = next(init for init in model.graph.initializer if init.name == target.input[1])
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 1.5, weights.name))
    faulty = to_fp16(model, tmp_path / "v4.faulty.fp16.onnx")

    result = subprocess.run([sys.executable, "-m", "validate", "compare", str(onnx_v4), str(faulty), "--layerwise",
                             "--save-dir", str(tmp_path / "artifacts")], cwd=REPO_ROOT, capture_output=True, text=True,
                            encoding="utf-8")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"first failing layer: {target.name}" in result.stdout.splitlines()[-1]
    assert "worst layers" in result.stdout and "polygraphy run" in result.stdout
    assert (tmp_path / "artifacts" / "v4.faulty.fp16.onnx.layerwise.reference-outputs.json").is_file()


@pytest.mark.parametrize("layerwise", [False, True])
def test_plan_that_cannot_run_here_says_why(onnx_v4, tmp_path, layerwise):
    """A plan of a TensorRT-RTX version no machine has: the runtime's reason, in one line, with the
    command that compares the plan's cleaned ONNX instead."""
    plan = write_plan(tmp_path, vocoder="v4", precision="fp16", version="0.0.0.1",
                      onnx={"path": "engines/onnx/v4.fp16.onnx", "sha256": "0" * 64})  # the path `make engines` records
    manifest = runtime.read_manifest(plan)
    reason = runtime.plan_blocker(manifest)
    assert reason  # not installed, or another version: either way the runtime refuses it
    result = subprocess.run([sys.executable, "-m", "validate", "compare", str(onnx_v4), str(plan),
                             *(["--layerwise"] if layerwise else [])], cwd=REPO_ROOT, capture_output=True, text=True,
                            encoding="utf-8")
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"{plan.name} cannot run here ({reason})" in line
    fix = f"python -m validate compare {onnx_v4} engines/onnx/v4.fp16.onnx" + (" --layerwise" if layerwise else "")
    assert line.endswith(fix)


class OnnxRuntimeEngine:
    """runtime.load_engine's Engine in interface (manifest, numpy mel in, audio out, close), running the
    plan's cleaned ONNX in ONNX Runtime: what a plan computes, on a machine where no plan can run."""

    def __init__(self, plan: Path):
        from pipeline.onnx_tools import cpu_session
        self.manifest = runtime.read_manifest(plan)
        self.session = cpu_session(Path(self.manifest["onnx"]["path"]))
        self.closed = False

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        from pipeline.onnx_tools import run_audio
        assert isinstance(mel, np.ndarray) and mel.dtype == np.dtype(self.manifest["input"]["dtype"])
        return run_audio(self.session, mel)

    def close(self) -> None:
        self.closed = True


def test_a_plan_is_compared_through_the_runtime(onnx_v4, fp16_v4, tmp_path, monkeypatch):
    """`compare` runs a .plan with runtime.load_engine (what users run) inside a Polygraphy runner,
    and Polygraphy judges it; the engine is closed afterwards."""
    from validate import compare as compare_module
    plan = write_plan(tmp_path / "engines", vocoder="v4", precision="fp16", onnx_path=fp16_v4)
    engines = []
    monkeypatch.setattr(runtime, "plan_blocker", lambda manifest: None)
    monkeypatch.setattr(runtime, "load_engine", lambda path: engines.append(OnnxRuntimeEngine(path)) or engines[-1])
    outcome = compare_module.compare(onnx_v4, plan, save_dir=tmp_path / "artifacts", settings=load_settings())
    assert outcome.passed and outcome.precision == "fp16", outcome.metric_failures
    assert len(engines) == 1 and engines[0].closed
    assert len(outcome.metrics) == load_settings()["validate"]["compare_inputs"]
    assert "POLYGRAPHY_USE_TENSORRT_RTX=1 polygraphy run" in outcome.notes[-1] and f"{plan} --trt" in outcome.notes[-1]


def test_runners_are_left_through_one_exit_stack_when_one_fails():
    """A runner that fails to activate leaves the ones activated before it deactivated."""
    from polygraphy.backend.base import BaseRunner

    from validate.compare import run_runners

    class Recording(BaseRunner):
        def __init__(self, name, fail=False):
            super().__init__(name=name)
            self.fail, self.events = fail, []

        def activate_impl(self):
            if self.fail:
                raise RuntimeError("cannot activate")
            self.events.append("activated")

        def deactivate_impl(self):
            self.events.append("deactivated")

    first, broken = Recording("first"), Recording("broken", fail=True)
    with pytest.raises(RuntimeError, match="cannot activate"):
        run_runners([first, broken], [{"mel": np.zeros((1, 100, 4), np.float32)}])
    assert first.events == ["activated", "deactivated"] and not first.is_active


def test_compare_rejects_missing_files(onnx_v4, tmp_path):
    from validate.compare import compare
    with pytest.raises(RuntimeUserError, match="not found"):  # UserError's base: runtime.files.input_file
        compare(onnx_v4, tmp_path / "absent.onnx", settings=load_settings())


# --- benchmark and report -------------------------------------------------------------------------


def test_bench_measures_cpu_rows_and_measures_or_explains_each_gpu_row(tmp_path):
    """On any machine: CPU rows are measured; each GPU row is measured or skipped with its reason,
    and the tables list exactly the skipped ones as not measured."""
    from validate.bench import BACKENDS, markdown_table, run_benchmark, terminal_table
    results = run_benchmark(["v4"], [8], [1], settings=small_settings(tmp_path))
    rows = {row["backend"]: row for row in results["rows"]}
    assert set(rows) == set(BACKENDS)
    for backend, row in rows.items():
        if BACKENDS[backend][0] == "cpu" or row["status"] == "ok":
            assert row["status"] == "ok" and row["median_ms"] > 0 and row["runs"] >= 2, row
            assert row["rtf"] == pytest.approx(row["audio_seconds"] / row["median_ms"] * 1000)
        else:
            assert row["status"] == "skipped" and row["reason"], row
    assert rows["onnxruntime-cpu-fp32"]["cosine"] > 0.9999  # against PyTorch on the same mel
    skipped = [row for row in rows.values() if row["status"] == "skipped"]
    table, markdown = terminal_table(results), markdown_table(results)
    assert "torch-cpu-fp32" in table
    for row in skipped:
        assert f"{row['backend']:24} not measured: {row['reason']}" in table
        assert f"- v4 {row['backend']}: {row['reason']}" in markdown
    assert ("Not measured:" in markdown) == bool(skipped)


def test_report_renders_from_a_small_run(onnx_v4, fp16_v4, tmp_path):
    from validate.report import build_report, render_markdown, terminal_summary
    report = build_report(["v4"], "fp16", small_settings(tmp_path), models={"v4": (onnx_v4, fp16_v4)})
    markdown = render_markdown(report)
    for heading in ("## Environment", "### Conversion", "### Performance", "### Quality", "### Saved"):
        assert heading in markdown
    quality = report["vocoders"]["v4"]["quality"]
    assert quality["inputs"] == 3 and quality["cosine_mean"] > 0.9995 and quality["passed"]
    performance = report["vocoders"]["v4"]["performance"]
    if performance["engine_reason"]:  # the engine cannot run here: the report says why and measures ONNX Runtime
        assert f"The TensorRT engine cannot execute here: {performance['engine_reason']}" in markdown
        assert performance["optimized"]["backend"].startswith("onnxruntime")
    else:
        assert performance["optimized"]["backend"] == "tensorrt-fp16"
    assert performance["speedup"] == pytest.approx(performance["original"]["median_ms"] / performance["optimized"]["median_ms"])
    assert f"{performance['speedup']:.2f}x" in markdown
    assert "v4" in terminal_summary(report)
