"""Serving: the GPT-SoVITS drop-in on a stand-in TTS object, and the Triton model repository.

No engine can execute on this CPU-only machine, so where the drop-in needs a running engine the
exported v4 ONNX model runs under ONNX Runtime in its place (real computation, with the runtime
Engine's interface). Triton config generation never reads plan contents, so its tests use
manifests with placeholder plan files.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from factories import write_plan
from pipeline.errors import UserError
from pipeline.files import sha256_of
from pipeline.settings import VOCODERS, load_settings, profiles_for
from serving.gpt_sovits import EngineRequest, EngineVocoder, install, rebuild_reasons, yaml_options
from serving.triton_server import write_repository
from vocoder_models.mels import sample_mel
from vocoder_models.vocoders import BigVGAN, BigVGANConfig

REPO = Path(__file__).resolve().parent.parent
SETTINGS = load_settings()


# --- helpers -----------------------------------------------------------------------------------

class OnnxRuntimeEngine:
    """The exported ONNX model under ONNX Runtime in a TensorRT engine's place, with the runtime
    Engine's interface (manifest, sampling_rate, hop; host float32 mel in, host audio out)."""

    def __init__(self, plan: Path, device: int = 0):
        self.device = device
        self.manifest = json.loads(Path(plan).with_suffix(".json").read_text(encoding="utf-8"))
        self.session = ort.InferenceSession(self.manifest["onnx"]["path"], providers=["CPUExecutionProvider"])
        self.sampling_rate, self.hop = self.manifest["sampling_rate"], self.manifest["hop"]

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        if not (isinstance(mel, np.ndarray) and mel.dtype == np.float32):
            raise TypeError(f"the engine takes host float32 mels, got {type(mel).__name__} {getattr(mel, 'dtype', '')}")
        (audio,) = self.session.run(["audio"], {"mel": mel})
        return audio

    def close(self) -> None:
        self.session = None  # as runtime.Engine.close frees its contexts: later calls fail


class StandInTTS:
    """The attributes of GPT-SoVITS' TTS the drop-in relies on, set as TTS sets them; init_vocoder
    keeps GPT-SoVITS' rule of returning early when a vocoder of the same class is loaded."""

    def __init__(self, version: str, is_half: bool, vocoders: dict):
        self.configs = SimpleNamespace(version=version, is_half=is_half, device=torch.device("cpu"))
        self.precision = torch.float16 if is_half else torch.float32
        self.vocoder_configs = {"sr": None, "T_ref": None, "T_chunk": None, "upsample_rate": None, "overlapped_len": None}
        self.vocoder = None
        self._vocoders = vocoders
        self.init_vocoder(version)

    def init_vocoder(self, version: str) -> None:
        module = self._vocoders[version]
        if self.vocoder is not None and type(self.vocoder).__name__ == type(module).__name__:
            return
        self.vocoder = copy.deepcopy(module).half() if self.configs.is_half else module
        self.vocoder_configs.update(sr=module.sampling_rate, upsample_rate=module.hop, overlapped_len=12)

    def enable_half_precision(self, enable: bool = True, save: bool = True) -> None:
        """As TTS's: precision and is_half follow, and every model (the vocoder too) is cast."""
        self.configs.is_half = enable
        self.precision = torch.float16 if enable else torch.float32
        self.vocoder = self.vocoder.half() if enable else self.vocoder.float()

    def set_device(self, device, save: bool = True) -> None:
        self.configs.device = device
        self.vocoder = self.vocoder.to(device)


def settings_with_engines(engines: Path) -> dict:
    settings = copy.deepcopy(SETTINGS)
    settings["paths"]["engines"] = str(engines)  # absolute: pipeline paths join it to the repo root unchanged
    return settings


@pytest.fixture()
def v4_engines(tmp_path, onnx_v4) -> Path:
    """v4 at fp32 and fp16, runnable through the stand-in (the v4 model's own function: the proof at
    start passes), and a v3 fp16 plan beside them that is never served (its ONNX is v4's)."""
    engines = tmp_path / "engines"
    for vocoder, precision in (("v4", "fp32"), ("v4", "fp16"), ("v3", "fp16")):
        write_plan(engines, vocoder=vocoder, precision=precision, onnx_path=onnx_v4)
    return engines


def install_on(tts, engines: Path, **options):
    return install(tts, {"use_tensorrt": True, **options}, settings=settings_with_engines(engines),
                   load_engine=OnnxRuntimeEngine)


def peak_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.float() - expected.float()).abs().max() / expected.float().abs().max())


# --- GPT-SoVITS drop-in --------------------------------------------------------------------------

def test_drop_in_chooses_the_engine_of_version_and_precision(v4_engines, vocoder_v4):
    half = StandInTTS("v4", is_half=True, vocoders={"v4": vocoder_v4})
    install_on(half, v4_engines)
    assert isinstance(half.vocoder, EngineVocoder)
    assert half.vocoder.plan == v4_engines / "v4.fp16.plan"  # is_half, no tensorrt_precision: fp16

    full = StandInTTS("v4", is_half=False, vocoders={"v4": vocoder_v4})
    install_on(full, v4_engines)
    assert full.vocoder.plan == v4_engines / "v4.fp32.plan"

    install_on(full, v4_engines, tensorrt_precision="fp16")  # the yaml key wins over is_half
    assert full.vocoder.plan == v4_engines / "v4.fp16.plan"
    assert full.vocoder.pytorch is vocoder_v4  # installing again wraps GPT-SoVITS' module, not the wrapper


def test_engine_call_keeps_dtype_device_and_shape_of_the_pytorch_vocoder(v4_engines, vocoder_v4):
    tts = StandInTTS("v4", is_half=True, vocoders={"v4": vocoder_v4})
    install_on(tts, v4_engines)
    mel = torch.from_numpy(sample_mel("v4", frames=40, seed=3))
    with torch.inference_mode():
        expected = vocoder_v4(mel)
        audio16 = tts.vocoder(mel.half())
        audio32 = tts.vocoder(mel)
    assert audio16.dtype == torch.float16 and audio16.device == mel.device
    assert audio32.dtype == torch.float32
    assert audio16.shape == audio32.shape == expected.shape == (1, 1, 40 * 480)
    assert peak_error(audio32, expected) < 1e-4  # the float32 engine path is the vocoder itself
    assert peak_error(audio16, expected) < 5e-3  # fp16 mel in, fp16 audio out: rounding only


def test_drop_in_reattaches_after_init_vocoder_and_warns_once(v4_engines, vocoder_v4, caplog):
    tiny_v3 = BigVGAN(BigVGANConfig(upsample_initial_channel=64)).eval()  # a real BigVGAN, small
    tts = StandInTTS("v4", is_half=False, vocoders={"v4": vocoder_v4, "v3": tiny_v3})
    install_on(tts, v4_engines)
    tts.init_vocoder("v4")  # GPT-SoVITS returns early for the same class: the engine stays
    assert isinstance(tts.vocoder, EngineVocoder) and tts.vocoder.pytorch is vocoder_v4

    with caplog.at_level(logging.WARNING, logger="serving"):
        tts.init_vocoder("v3")  # no v3 fp32 engine, no GPT-SoVITS checkpoint here to build one from
        assert tts.vocoder is tiny_v3
        tts.init_vocoder("v4")
        assert isinstance(tts.vocoder, EngineVocoder) and tts.vocoder.plan.name == "v4.fp32.plan"
        tts.init_vocoder("v3")
        assert tts.vocoder is tiny_v3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "v3 fp32" in warnings[0] and "no engine built yet" in warnings[0]
    assert "build it with `make engines CHECKPOINT_V3=" in warnings[0] or "-m serving.gpt_sovits build`" in warnings[0]
    with torch.inference_mode():
        assert tts.vocoder(torch.from_numpy(sample_mel("v3", frames=8))).shape == (1, 1, 8 * 256)


def test_half_precision_and_device_changes_reattach_the_matching_engine(v4_engines, vocoder_v4):
    tts = StandInTTS("v4", is_half=False, vocoders={"v4": copy.deepcopy(vocoder_v4)})
    install_on(tts, v4_engines)
    assert tts.vocoder.plan.name == "v4.fp32.plan"
    tts.enable_half_precision(True)  # GPT-SoVITS casts its vocoder; the engine's precision follows
    assert isinstance(tts.vocoder, EngineVocoder) and tts.vocoder.plan.name == "v4.fp16.plan"
    assert next(tts.vocoder.pytorch.parameters()).dtype == torch.float16
    tts.enable_half_precision(False)
    assert tts.vocoder.plan.name == "v4.fp32.plan" and next(tts.vocoder.pytorch.parameters()).dtype == torch.float32
    first_engine = tts.vocoder.engine
    tts.set_device(torch.device("cpu"))  # the engine is loaded again for the new device, not left behind
    assert isinstance(tts.vocoder, EngineVocoder) and tts.vocoder.engine is not first_engine


def test_plan_for_other_weights_is_refused_naming_the_build_command(tmp_path, v4_engines, vocoder_v4, caplog,
                                                                    monkeypatch):
    checkpoint = tmp_path / "GPT_SoVITS" / "pretrained_models" / "gsv-v4-pretrained" / "vocoder.pth"
    checkpoint.parent.mkdir(parents=True)
    torch.save(vocoder_v4.state_dict(), checkpoint)  # the user's own weights; the plans are synthetic
    monkeypatch.chdir(tmp_path)  # GPT-SoVITS' folder
    before = sorted(p.name for p in v4_engines.iterdir())
    tts = StandInTTS("v4", is_half=False, vocoders={"v4": vocoder_v4})
    with caplog.at_level(logging.WARNING, logger="serving"):
        install_on(tts, v4_engines)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "\n" not in warning and "other vocoder weights" in warning and "build it with `" in warning
    assert tts.vocoder is vocoder_v4 and sorted(p.name for p in v4_engines.iterdir()) == before  # nothing built


def test_streaming_finds_upstream_helpers_for_a_tts_subclass_defined_elsewhere():
    import gpt_sovits_standin as upstream
    from serving.gpt_sovits import upstream_module

    subclass = type("MyTTS", (upstream.StandInTTS,), {"__module__": "my_service"})  # as a service would subclass TTS
    tts = subclass.__new__(subclass)
    assert upstream_module(tts) is upstream
    with pytest.raises(UserError, match="TTS_infer_pack"):
        upstream_module(SimpleNamespace())


def test_unloadable_engine_leaves_the_pytorch_vocoder_with_one_warning(rtx_engines, vocoder_v4, caplog):
    engines = rtx_engines  # a real TensorRT-RTX plan: this machine has no GPU to load it on
    tts = StandInTTS("v4", is_half=False, vocoders={"v4": vocoder_v4})
    with caplog.at_level(logging.WARNING, logger="serving"):
        stats = install(tts, {"use_tensorrt": True}, settings=settings_with_engines(engines))  # the real runtime
        tts.init_vocoder("v4")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "keeps its PyTorch vocoder" in warnings[0].getMessage()
    assert tts.vocoder is vocoder_v4
    mel = torch.from_numpy(sample_mel("v4", frames=16))
    with torch.inference_mode():
        assert torch.equal(tts.vocoder(mel), vocoder_v4(mel))
    assert stats.snapshot()["calls"] == 0


def test_stats_count_calls_latency_and_real_time_factor(v4_engines, vocoder_v4):
    tts = StandInTTS("v4", is_half=False, vocoders={"v4": vocoder_v4})
    stats = install_on(tts, v4_engines)
    assert tts.vocoder_stats is stats and stats.snapshot()["calls"] == 0
    with torch.inference_mode():
        for frames in (8, 16, 24, 32, 40):
            tts.vocoder(torch.from_numpy(sample_mel("v4", frames=frames)))
    snapshot = stats.snapshot()
    assert snapshot["calls"] == snapshot["tensorrt_calls"] == 5 and snapshot["pytorch_calls"] == 0
    assert 0 < snapshot["median_ms"] <= snapshot["p95_ms"]
    assert snapshot["real_time_factor"] > 0


def test_engine_failure_during_a_call_hands_over_to_pytorch(v4_engines, vocoder_v4, caplog):
    tts = StandInTTS("v4", is_half=False, vocoders={"v4": vocoder_v4})
    stats = install_on(tts, v4_engines)
    tts.vocoder.engine.close()
    mel = torch.from_numpy(sample_mel("v4", frames=16))
    with caplog.at_level(logging.WARNING, logger="serving"), torch.inference_mode():
        first, second = tts.vocoder(mel), tts.vocoder(mel)
        expected = vocoder_v4(mel)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert stats.snapshot()["pytorch_calls"] == 2 and stats.snapshot()["tensorrt_calls"] == 0


def test_rebuild_reasons_name_each_setting_that_differs(tmp_path, onnx_v4):
    manifest = json.loads(write_plan(tmp_path, vocoder="v4", precision="fp16", onnx_path=onnx_v4).with_suffix(".json")
                          .read_text(encoding="utf-8"))
    request = EngineRequest("v4", "fp16", SETTINGS["build"]["workspace_gib"], None)
    assert rebuild_reasons(manifest, request) == []
    assert rebuild_reasons(None, request) == ["no engine built yet"]
    assert "precision" in " ".join(rebuild_reasons(manifest, EngineRequest("v4", "fp32", request.workspace_gib, None)))
    assert "workspace" in " ".join(rebuild_reasons(manifest, EngineRequest("v4", "fp16", 2.5, None)))
    assert "max batch" in " ".join(rebuild_reasons(manifest, EngineRequest("v4", "fp16", request.workspace_gib, 1)))
    assert "weights" in " ".join(rebuild_reasons(manifest, request, checkpoint_sha256="0" * 64))
    spark = dataclasses.replace(request, gpu_target="SM121")
    reasons = " ".join(rebuild_reasons(manifest, spark))  # the runtime's runnability verdict, for this GPU
    assert "not this GPU (compute capability 12.1)" in reasons and "add SM121" in reasons


def test_yaml_section_and_bad_values(vocoder_v4):
    configs = SimpleNamespace(default_configs={"custom": {"version": "v4"},
                                               "tensorrt": {"use_tensorrt": True, "tensorrt_precision": "fp16"}})
    assert yaml_options(SimpleNamespace(configs=configs)) == {"use_tensorrt": True, "tensorrt_precision": "fp16"}
    tts = StandInTTS("v4", is_half=False, vocoders={"v4": vocoder_v4})
    for options, word in (({"use_tensorrt": "yes"}, "use_tensorrt"),
                          ({"use_tensorrt": True, "tensorrt_precision": "int3"}, "precision"),
                          ({"use_tensorrt": True, "tensorrt_workspace_size": 0}, "workspace"),
                          ({"use_tensorrt": True, "tensorrt_max_batch": 2}, "unknown")):
        with pytest.raises(UserError, match=word):
            install(tts, options)
    assert install(tts, {"use_tensorrt": False}) is None and tts.vocoder is vocoder_v4


def write_configs(folder: Path, tts_infer: dict | None, own: dict | None) -> Path:
    """GPT_SoVITS/configs/ with a tts_infer.yaml (and its `tensorrt:` section where given) and, where
    given, vocoder_tensorrt.yaml's section; returns tts_infer.yaml's path."""
    import yaml

    configs = folder / "GPT_SoVITS" / "configs"
    configs.mkdir(parents=True)
    document = {"custom": {"version": "v4"}, **({"tensorrt": tts_infer} if tts_infer is not None else {})}
    (configs / "tts_infer.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    if own is not None:
        (configs / "vocoder_tensorrt.yaml").write_text(yaml.safe_dump({"tensorrt": own}), encoding="utf-8")
    return configs / "tts_infer.yaml"


@pytest.mark.parametrize("keeps_sections", [False, True], ids=["TTS_Config before 2025-07-18", "TTS_Config since"])
def test_switches_in_vocoder_tensorrt_yaml_survive_gpt_sovits_rewriting_tts_infer_yaml(tmp_path, vocoder_v4, caplog,
                                                                                       keeps_sections):
    """A TTS_Config that drops sections not its own (20250422v4, 20250606v2pro) loses tts_infer.yaml's
    `tensorrt:` at the first save_configs; vocoder_tensorrt.yaml is never rewritten and serves. Where
    both have a section the own file's serves, with one line."""
    from gpt_sovits_standin import StandInConfig
    from gpt_sovits_standin import StandInTTS as UpstreamTTS
    from serving.gpt_sovits.options import install_options

    own = {"use_tensorrt": False, "tensorrt_precision": "fp32"}
    path = write_configs(tmp_path, {"use_tensorrt": True, "tensorrt_precision": "fp16"}, own)
    own_bytes = (path.parent / "vocoder_tensorrt.yaml").read_bytes()
    with caplog.at_level(logging.INFO, logger="serving"):
        tts = UpstreamTTS("v4", vocoder_v4, todo_frames=20, configs=StandInConfig("v4", path, keeps_sections))
        assert ("tensorrt" in path.read_text(encoding="utf-8")) == keeps_sections  # save_configs ran at start
        assert yaml_options(tts) == ({"use_tensorrt": True, "tensorrt_precision": "fp16"} if keeps_sections else {})
        assert install(tts, settings=SETTINGS) is None and tts.vocoder is vocoder_v4  # the own file: use_tensorrt off
    ignored = [r.getMessage() for r in caplog.records if "is ignored" in r.getMessage()]
    assert len(ignored) == (1 if keeps_sections else 0), ignored
    assert all(str(path) in line and "vocoder_tensorrt.yaml has one, and it serves" in line for line in ignored)
    assert (path.parent / "vocoder_tensorrt.yaml").read_bytes() == own_bytes
    (path.parent / "vocoder_tensorrt.yaml").write_text("# no section here\nother: 1\n", encoding="utf-8")
    left = {"use_tensorrt": True, "tensorrt_precision": "fp16"} if keeps_sections else {}
    assert install_options(tts, None, None, SETTINGS) == left  # without its section: tts_infer.yaml's, as kept


def test_launcher_reads_vocoder_tensorrt_yaml_first(tmp_path, caplog):
    from serving.gpt_sovits.launcher import webui_options

    path = write_configs(tmp_path, {"use_tensorrt": True, "tensorrt_precision": "fp16"}, {"tensorrt_precision": "fp32"})
    with caplog.at_level(logging.INFO, logger="serving"):
        assert webui_options(tmp_path) == {"tensorrt_precision": "fp32"}
    (line,) = [r.getMessage() for r in caplog.records]
    assert "section of" in line and str(path) in line and "is ignored" in line, line
    caplog.clear()
    (path.parent / "vocoder_tensorrt.yaml").write_text("tensorrt:\n  # use_tensorrt: false\n", encoding="utf-8")
    assert webui_options(tmp_path) == {}  # a section whose keys are all commented out: the defaults
    (path.parent / "vocoder_tensorrt.yaml").unlink()
    with caplog.at_level(logging.INFO, logger="serving"):
        assert webui_options(tmp_path) == {"use_tensorrt": True, "tensorrt_precision": "fp16"}
    assert not caplog.records


# --- Triton model repository ---------------------------------------------------------------------

def parse_config(path: Path):
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def test_triton_configs_parse_and_match_their_manifests(tmp_path):
    engines = tmp_path / "engines"
    plans = [write_plan(engines, vocoder="v4", precision="fp16", backend="tensorrt"),
             write_plan(engines, vocoder="v3", precision="fp32", backend="tensorrt", plan_bytes=b"v3 plan")]
    smallest = min(p.max[0] for vocoder in VOCODERS for p in profiles_for(SETTINGS, vocoder))
    serving = {**SETTINGS["serving"], "preferred_batch_sizes": [smallest], "instance_count": 2}
    folders = write_repository(engines, tmp_path / "triton", serving)
    assert sorted(f.name for f in folders) == ["v3_fp32", "v4_fp16"]
    pb = model_config_pb2
    for plan in plans:
        manifest = json.loads(plan.with_suffix(".json").read_text(encoding="utf-8"))
        folder = tmp_path / "triton" / f"{manifest['vocoder']}_{manifest['precision']}"
        config = parse_config(folder / "config.pbtxt")
        assert config.name == folder.name and config.platform == "tensorrt_plan"
        assert config.max_batch_size == min(p["max"][0] for p in manifest["profiles"])
        for tensors, spec in ((config.input, manifest["input"]), (config.output, manifest["output"])):
            assert len(tensors) == 1 and tensors[0].name == spec["name"]
            assert tensors[0].data_type == pb.TYPE_FP32 and list(tensors[0].dims) == spec["shape"][1:]
        assert list(config.dynamic_batching.preferred_batch_size) == [smallest]
        assert config.dynamic_batching.max_queue_delay_microseconds == serving["max_queue_delay_microseconds"]
        (group,) = config.instance_group
        assert group.count == 2 and group.kind == pb.ModelInstanceGroup.KIND_GPU
        assert list(group.profile) == [str(i) for i in range(len(manifest["profiles"]))]
        assert (folder / "1" / "model.plan").read_bytes() == plan.read_bytes()


@pytest.fixture(scope="module")
def rtx_engines(tmp_path_factory, onnx_v4) -> Path:
    """A real v4 plan and manifest from the build stage (TensorRT-RTX, small profiles, one target)."""
    pytest.importorskip("tensorrt_rtx")
    from build.plan import build_plan

    settings = copy.deepcopy(SETTINGS)
    settings["profiles"]["v4"] = [{"name": "short", "min": [1, 1], "opt": [1, 16], "max": [2, 32]},
                                  {"name": "long", "min": [1, 1], "opt": [1, 64], "max": [1, 128]}]
    settings["build"].update(rtx_compute_capabilities=["SM86"], optimization_level=0)
    engines = tmp_path_factory.mktemp("rtx") / "engines"
    settings["paths"]["timing_cache"] = str(engines / "timing.cache")
    build_plan(onnx_v4, "v4", "fp32", engines / "v4.fp32.plan", backend="tensorrt_rtx", settings=settings)
    return engines


def test_triton_refuses_tensorrt_rtx_plans_unless_forced(tmp_path, rtx_engines):
    engines, repository = rtx_engines, tmp_path / "triton"
    manifest = json.loads((engines / "v4.fp32.json").read_text(encoding="utf-8"))
    command = [sys.executable, "-m", "serving.triton_server", "--engines", str(engines), "--output", str(repository)]
    refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True, encoding="utf-8")
    assert refused.returncode == 2 and not repository.exists()
    assert refused.stderr.count("\n") == 1 and "full TensorRT only" in refused.stderr and "--force-rtx" in refused.stderr
    forced = subprocess.run(command + ["--force-rtx"], cwd=REPO, capture_output=True, text=True, encoding="utf-8")
    assert forced.returncode == 0, forced.stderr
    config = parse_config(repository / "v4_fp32" / "config.pbtxt")  # from the build stage's own manifest
    assert config.max_batch_size == 1 and list(config.instance_group[0].profile) == ["0", "1"]
    assert [(t.name, list(t.dims)) for t in (*config.input, *config.output)] == \
        [(manifest[side]["name"], manifest[side]["shape"][1:]) for side in ("input", "output")]
    assert sha256_of(repository / "v4_fp32" / "1" / "model.plan") == manifest["plan"]["sha256"]


def test_triton_rejects_bad_inputs_in_one_line(tmp_path):
    engines = tmp_path / "engines"
    plan = write_plan(engines, vocoder="v4", precision="fp32", backend="tensorrt")
    with pytest.raises(UserError, match="preferred_batch_sizes"):
        write_repository(engines, tmp_path / "triton", {**SETTINGS["serving"], "preferred_batch_sizes": [8]})
    with pytest.raises(UserError, match=r"\[serving\] instance_kind is the text .GPU.; use one of KIND_AUTO"):
        write_repository(engines, tmp_path / "triton", {**SETTINGS["serving"], "instance_kind": "GPU"})
    plan.write_bytes(b"changed after the build")
    with pytest.raises(UserError, match="does not match its manifest"):
        write_repository(engines, tmp_path / "triton", SETTINGS["serving"])
    assert not (tmp_path / "triton" / "v4_fp32" / "config.pbtxt").exists()


def test_the_former_triton_command_runs_the_server_writer_and_names_it(tmp_path, caplog, capsys):
    """`python -m serving.triton` (the name before serving/triton_server.py) still works, with one line."""
    from runtime.errors import run_main
    from serving import triton
    with caplog.at_level(logging.WARNING, "serving"):
        code = run_main(triton.main, ["--engines", str(tmp_path / "none"), "--output", str(tmp_path / "triton")])
    assert code == 2 and "no .plan files" in capsys.readouterr().err
    assert [r.getMessage() for r in caplog.records] == [
        "python -m serving.triton is now python -m serving.triton_server; the old name will be removed"]


def test_the_schema_names_exactly_tritons_instance_kinds():
    from pipeline.schema import TRITON_INSTANCE_KINDS
    assert set(TRITON_INSTANCE_KINDS) == set(model_config_pb2.ModelInstanceGroup.Kind.keys())


def test_triton_writes_nothing_when_a_later_model_refuses_the_preferred_batch_sizes(tmp_path):
    """preferred_batch_sizes is checked against every model before the first one is written."""
    engines = tmp_path / "engines"
    wide = [{"name": "short", "min": [1, 1], "opt": [1, 64], "max": [8, 128]}]
    narrow = [{"name": "short", "min": [1, 1], "opt": [1, 64], "max": [2, 128]}]
    write_plan(engines, vocoder="v3", precision="fp32", backend="tensorrt", profiles=wide)  # sorted first
    write_plan(engines, vocoder="v4", precision="fp32", backend="tensorrt", profiles=narrow, plan_bytes=b"v4 plan")
    with pytest.raises(UserError, match="preferred_batch_sizes .* v4_fp32"):
        write_repository(engines, tmp_path / "triton", {**SETTINGS["serving"], "preferred_batch_sizes": [4]})
    assert not (tmp_path / "triton").exists()
def test_standin_batched_path_calls_the_vocoder_as_upstream_does():
    """As the real run at 48b1a01 showed (tests/test_gpt_sovits_real.py): the batched path's CFM chunks,
    T_chunk - T_min frames each, reach the vocoder joined in time as one (1, 100, chunks x chunk_len) mel."""
    from gpt_sovits_standin import StandInTTS

    class RecordingVocoder(torch.nn.Module):
        sampling_rate, hop = 48000, 480

        def __init__(self):
            super().__init__()
            self.calls = []

        def forward(self, mel):
            self.calls.append(tuple(mel.shape))
            return mel.mean(1, keepdim=True).repeat_interleave(self.hop, -1)

    vocoder = RecordingVocoder()
    tts = StandInTTS("v4", vocoder, todo_frames=200)  # T_ref 24, T_chunk 64: chunks of 40 frames
    tokens = [torch.zeros(30, dtype=torch.long), torch.zeros(20, dtype=torch.long)]
    fragments = tts.using_vocoder_synthesis_batched_infer([30, 20], tokens, [torch.zeros(5, dtype=torch.long)] * 2)
    assert vocoder.calls == [(1, 100, 8 * 40)]  # 12 padding + 200 frames in chunks overlapping by 12
    assert [f.shape[0] for f in fragments] == [120 * 480, 80 * 480]


def test_launcher_build_runs_the_stage_commands_make_engines_runs(tmp_path):
    from serving.gpt_sovits.bundle_build import stage_commands

    steps = stage_commands(SETTINGS, "v4", tmp_path / "vocoder.pth", ["fp16", "fp32"])
    modules = [command[2] for _, command in steps]
    assert modules == ["export", "export.clean", "build", "export.clean", "build"]
    assert all(command[:2] == [sys.executable, "-m"] for _, command in steps)
    assert steps[0][1][3:] == ["--vocoder", "v4", "--checkpoint", str(tmp_path / "vocoder.pth"), "--output",
                               str(REPO / "engines" / "onnx" / "v4.onnx")]
    assert steps[2][1][-2:] == ["--output", str(REPO / "engines" / "v4.fp16.plan")]


def test_launcher_refuses_in_one_line_outside_a_gpt_sovits_folder(tmp_path):
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    for argv, words in ((["api"], "is not a GPT-SoVITS folder"), (["build"], "vocoder checkpoint"),
                        (["serve"], "unknown entry point")):
        done = subprocess.run([sys.executable, "-m", "serving.gpt_sovits", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, encoding="utf-8")
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and words in done.stderr, done.stderr


def test_launcher_takes_webui_fast_as_webui_parallel_with_one_line(monkeypatch, capsys):
    """The parallel-inference UI's former name here still starts it, and says the new one."""
    from serving.gpt_sovits import __main__ as command
    from serving.gpt_sovits import launcher

    started = []
    monkeypatch.setattr(launcher, "launch", lambda name, argv: started.append((name, argv)))
    assert command.run(["webui-fast", "zh_CN"]) == 0
    assert started == [("webui-parallel", ["zh_CN"])]
    assert capsys.readouterr().err == "webui-fast is now webui-parallel; the old name will be removed\n"


FAKE_WEBUI = '''
import torch
device, is_half = "cpu", False
def clean_hifigan_model():
    global hifigan_model
    hifigan_model = None
def init_bigvgan():
    global bigvgan_model
    clean_hifigan_model()
    bigvgan_model = torch.nn.Identity()
def init_hifigan():
    global hifigan_model
    hifigan_model = torch.nn.Identity()
bigvgan_model = hifigan_model = None
init_hifigan()  # at import, before any hook could run after the module
def get_tts_wav():
    if bigvgan_model is None:
        init_bigvgan()
    return bigvgan_model
'''


def test_webui_vocoders_are_wrapped_between_definition_and_first_call(tmp_path):
    """inference_webui.py's pattern (module-level models put in place by init_bigvgan/init_hifigan, the
    first call at import): the launcher serves both, at import and at the lazy load after a switch."""
    from serving.gpt_sovits.launcher import WEBUI_VOCODERS, run_script, wrap_webui_vocoders

    script = tmp_path / "inference_webui.py"
    script.write_text(FAKE_WEBUI, encoding="utf-8")
    served = []

    class Recording:
        def serve(self, module, version, dtype, device, expected=None):
            served.append((version, dtype, device))
            return SimpleNamespace(pytorch=module, version=version)

    names = tuple(loader for _, loader, _ in WEBUI_VOCODERS)
    saved_main, saved_argv, saved_path = sys.modules["__main__"], sys.argv, list(sys.path)
    try:
        namespace = run_script(script, ["en_US"], (names, lambda ns: wrap_webui_vocoders(ns, Recording())))
    finally:
        sys.modules["__main__"], sys.argv, sys.path[:] = saved_main, saved_argv, saved_path
    assert namespace["hifigan_model"].version == "v4" and served == [("v4", torch.float32, "cpu")]
    assert namespace["get_tts_wav"]().version == "v3" and namespace["hifigan_model"] is None
    assert [s[0] for s in served] == list(reversed(VOCODERS))  # init_hifigan (v4) at import, then v3 after the switch


# A TTS.py with exactly what the drop-in relies on (serving/gpt_sovits/revision.py), in upstream's shapes
FAKE_TTS = '''
mel_fn = mel_fn_v4 = None
def resample(audio, sr0, sr1, device): pass
def norm_spec(x): pass
def denorm_spec(x): pass
class TTS_Config:
    def __init__(self, configs=None):
        self.version, self.device, self.is_half, self.use_vocoder = "v2", "cpu", False, False
        self.sampling_rate, self.default_configs = 32000, {}
class TTS:
    def __init__(self, configs):
        self.configs, self.precision, self.vocoder, self.vits_model = configs, None, None, None
        self.vocoder_configs = {}
        self.prompt_cache = {"prompt_semantic": None, "refer_spec": [], "phones": None}
    def init_vocoder(self, version: str):
        self.vocoder_configs["sr"] = self.vocoder_configs["T_ref"] = self.vocoder_configs["T_chunk"] = 1
        self.vocoder_configs["upsample_rate"] = 1
    def set_ref_audio(self, path):
        self.prompt_cache["raw_audio"], self.prompt_cache["raw_sr"] = None, None
    def enable_half_precision(self, enable: bool = True, save: bool = True): pass
    def set_device(self, device, save: bool = True): pass
    def stop(self): pass
    def run(self, inputs: dict): pass
    def audio_postprocess(self, audio, sr, batch_index_list=None, speed_factor=1.0, split_bucket=True,
                          fragment_interval=0.3, super_sampling=False): pass
    def using_vocoder_synthesis(self, semantic_tokens, phones, speed=1.0, sample_steps=32): pass
    def using_vocoder_synthesis_batched_infer(self, idx_list, semantic_tokens_list, batch_phones, speed=1.0,
                                              sample_steps=32): pass
'''
FAKE_MODELS = '''
class CFM:
    def inference(self, mu, x_lens, prompt, n_timesteps, temperature=1.0, inference_cfg_rate=0): pass
class SynthesizerTrnV3:
    def decode_encp(self, codes, text, refer, ge=None, speed=1): pass
'''
FAKE_API = '''
import sys
from GPT_SoVITS.TTS_infer_pack.TTS import TTS, TTS_Config
RAN = sys.argv[1:]
def tts_handle(req: dict):
    streaming_mode = req.get("streaming_mode", False)
'''


def fake_gpt_sovits(root: Path, tts: str = FAKE_TTS, api: str = FAKE_API, newline: str = "\n") -> Path:
    for name, text in (("GPT_SoVITS/TTS_infer_pack/TTS.py", tts), ("GPT_SoVITS/module/models.py", FAKE_MODELS),
                       ("api_v2.py", api), ("GPT_SoVITS/inference_webui.py", FAKE_WEBUI)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(text.replace("\n", newline).encode("utf-8"))
    return root


def test_revision_check_reads_what_the_drop_in_relies_on_not_the_bytes(tmp_path):
    from serving.gpt_sovits.revision import check

    plain = check(fake_gpt_sovits(tmp_path / "plain"), "api")
    assert plain.missing == () and plain.streaming == "bool" and plain.vocoders == VOCODERS
    edited = FAKE_TTS.replace("sample_steps=32): pass", "sample_steps=8):  # a local edit\n        pass")
    assert check(fake_gpt_sovits(tmp_path / "edited", edited, newline="\r\n"), "api").missing == ()
    modes = FAKE_API + "    if streaming_mode == 2:\n        pass\n"
    assert check(fake_gpt_sovits(tmp_path / "modes", api=modes), "api").streaming == "modes"
    webui = check(tmp_path / "plain", "webui")
    assert webui.missing == () and webui.vocoders == VOCODERS


@pytest.mark.parametrize(("edit", "named"), [
    (("    def init_vocoder(self, version: str):", "    def load_vocoder(self, version: str):"),
     "TTS.init_vocoder(version) (GPT_SoVITS/TTS_infer_pack/TTS.py)"),
    (("def set_device(self, device, save", "def set_device(self, *, device, save"),
     "TTS.set_device(device, save) (GPT_SoVITS/TTS_infer_pack/TTS.py)"),
    (('self.vocoder_configs["upsample_rate"] = 1', "pass"),
     "TTS.vocoder_configs['upsample_rate'] (GPT_SoVITS/TTS_infer_pack/TTS.py)"),
    (("def denorm_spec(x): pass", ""), "denorm_spec (GPT_SoVITS/TTS_infer_pack/TTS.py)"),
])
def test_revision_check_names_what_is_missing_and_where(tmp_path, edit, named):
    from serving.gpt_sovits.revision import check

    assert edit[0] in FAKE_TTS
    revision = check(fake_gpt_sovits(tmp_path, FAKE_TTS.replace(*edit)), "api")
    assert named in revision.missing and len(revision.missing) == 1, revision.missing


def test_launcher_starts_gpt_sovits_unchanged_with_one_line_where_the_drop_in_cannot_attach(tmp_path, caplog):
    """A TTS.py without init_vocoder (as at 20250228v3): api_v2.py runs as GPT-SoVITS alone runs it,
    no import hook in place, one line naming what is missing and where."""
    from serving.gpt_sovits.launcher import TTSImportHook, launch

    root = fake_gpt_sovits(tmp_path, FAKE_TTS.replace("def init_vocoder(", "def other("))
    saved_main, saved_argv, saved_path = sys.modules["__main__"], sys.argv, list(sys.path)
    hooks_before = [f for f in sys.meta_path if isinstance(f, TTSImportHook)]
    stream = __import__("io").StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger("serving").addHandler(handler)
    try:
        namespace = launch("api", ["-a", "127.0.0.1"], root=root)
    finally:
        sys.modules["__main__"], sys.argv, sys.path[:] = saved_main, saved_argv, saved_path
        logging.getLogger("serving").removeHandler(handler)
        for name in [n for n in sys.modules if n.startswith("GPT_SoVITS")]:
            del sys.modules[name]
    lines = stream.getvalue().splitlines()
    assert namespace["RAN"] == ["-a", "127.0.0.1"] and not hasattr(namespace["TTS"], "_gsv_vocoder_trt")
    assert [f for f in sys.meta_path if isinstance(f, TTSImportHook)] == hooks_before
    assert len(lines) == 1 and "unchanged" in lines[0] and "PyTorch" in lines[0]
    assert "GPT_SoVITS/TTS_infer_pack/TTS.py has no TTS.init_vocoder(version)" in lines[0]


def test_streaming_with_parallel_infer_on_is_left_to_upstream():
    """api_v2's default (parallel_infer on) renders v3/v4 through upstream's batched path: that request
    keeps upstream's own run; chunk-by-chunk streaming only with parallel_infer off."""
    from serving.gpt_sovits.fragments import wants_vocoder_streaming

    tts = SimpleNamespace(configs=SimpleNamespace(use_vocoder=True))
    assert not wants_vocoder_streaming(tts, {"streaming_mode": True})
    assert not wants_vocoder_streaming(tts, {"streaming_mode": True, "parallel_infer": True})
    assert wants_vocoder_streaming(tts, {"streaming_mode": True, "parallel_infer": False})
    assert not wants_vocoder_streaming(SimpleNamespace(configs=SimpleNamespace(use_vocoder=False)),
                                       {"streaming_mode": True, "parallel_infer": False})


def test_install_on_a_tts_without_a_v3_v4_vocoder_leaves_it_alone():
    """20250228v3's TTS has no init_vocoder: install() serves nothing and raises nothing."""
    tts = SimpleNamespace(precision=torch.float32, configs=SimpleNamespace(default_configs={}, version="v2", device="cpu"))
    assert install(tts, settings=SETTINGS) is None and not hasattr(tts, "vocoder_stats")
