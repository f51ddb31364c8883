"""build/ and runtime/ held to the real TensorRT 10, TensorRT 11 and TensorRT-RTX Python APIs.

Every test runs against the three contract doubles of tests/trt_double.py, built from the API
surfaces in tests/trt_api/. On CPU (CI) the CUDA layer is the host-memory double and engines run
the plan's ONNX model in ONNX Runtime, so the audio is compared for real. On a GPU the same tests
run over the real CUDA layer with each binding (pycuda, cuda-bindings) and a device-side copy in
place of the engine. What this proves is conformance to the API contracts, not a TensorRT run:
see test_runtime_gpu.py for the real engine runs where TensorRT can execute.
"""
from __future__ import annotations

import copy
import functools
import gc
import logging
import threading
import weakref

import numpy as np
import onnx
import pytest

import runtime
from build.plan import build_plan
from pipeline.onnx_metadata import update_metadata
from pipeline.onnx_tools import cpu_session, run_audio
from pipeline.settings import VOCODERS, load_settings
from runtime import cuda as cuda_module
from runtime.errors import PlanNotRunnable
from trt_double import SURFACES, install, install_on_cpu, load_surface

SURFACE_NAMES = list(SURFACES)
PROFILES = [{"name": "short", "min": [1, 1], "opt": [1, 32], "max": [2, 64]},
            {"name": "long", "min": [1, 1], "opt": [1, 64], "max": [1, 128]}]


def small_settings(tmp_path, profiles=PROFILES, **build) -> dict:
    """`profiles` listed twice: two copies of each, for two contexts per profile."""
    settings = copy.deepcopy(load_settings())
    for vocoder in VOCODERS:
        settings["profiles"][vocoder] = [dict(p, name=f"{p['name']}-{i}" if i >= len(PROFILES) else p["name"])
                                         for i, p in enumerate(copy.deepcopy(profiles))]
    settings["paths"]["timing_cache"] = str(tmp_path / "timing.cache")
    settings["build"].update(build)
    return settings


@pytest.fixture(scope="module")
def half_io_v4(onnx_v4, tmp_path_factory):
    """The v4 export converted to float16 throughout, mel and audio included (a half-I/O plan's graph)."""
    import warnings

    from onnxconverter_common import float16
    model = onnx.load(str(onnx_v4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = float16.convert_float_to_float16(model, keep_io_types=False)
    update_metadata(half, {"precision": "fp16", "io_dtype": "half"})
    path = tmp_path_factory.mktemp("half") / "v4.fp16.onnx"
    onnx.save(half, str(path))
    return path


@pytest.fixture(params=SURFACE_NAMES)
def world(request, monkeypatch):
    """One surface's double in sys.modules, over the host CUDA double (two RTX-class GPUs)."""
    return install_on_cpu(monkeypatch, request.param)


def built(world, onnx_path, tmp_path, precision="fp32", profiles=PROFILES, **build) -> runtime.Engine:
    plan = build_plan(onnx_path, "v4", precision, tmp_path / f"v4.{precision}.plan", backend=world.trt.__name__,
                      settings=small_settings(tmp_path, profiles, **build))
    return plan


@functools.lru_cache(maxsize=None)
def session_of(onnx_path):
    return cpu_session(onnx_path)


def reference(onnx_path, mel) -> np.ndarray:
    return run_audio(session_of(onnx_path), mel)


def speech(frames, batch=1, seed=0) -> np.ndarray:
    from vocoder_models.mels import sample_mel
    return sample_mel("v4", frames, batch=batch, seed=seed)


# --- the doubles themselves ---------------------------------------------------------------------


def test_doubles_have_exactly_the_surface_members(world):
    trt, surface = world.trt, load_surface(world.surface)
    runtime_object = trt.Runtime(collecting_logger(trt))
    for name in ("Runtime", "Builder", "IBuilderConfig", "ICudaEngine", "IExecutionContext", "IHostMemory", "ILogger"):
        assert getattr(trt, name)._members == set(surface["classes"][name]), name
    with pytest.raises(AttributeError):
        runtime_object.no_such_member  # noqa: B018
    with pytest.raises(AttributeError):
        runtime_object.engine_host_code_allowed_typo = True
    capturable = "is_stream_capturable" in surface["classes"]["IExecutionContext"]
    assert capturable == (world.surface == "tensorrt_rtx-1")
    assert ("device_memory_size" in surface["classes"]["ICudaEngine"]) == (world.surface == "tensorrt-10")
    assert hasattr(trt, "CudaGraphStrategy") == (world.surface == "tensorrt_rtx-1")


def collecting_logger(trt):
    class Collecting(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages = []

        def log(self, severity, message):
            self.messages.append(message)
    return Collecting()


def test_contexts_refuse_unaligned_addresses_and_unset_state(world, onnx_v4, tmp_path):
    plan = built(world, onnx_v4, tmp_path)
    trt, layer = world.trt, world.cuda
    logger = collecting_logger(trt)
    with layer.activate(0):
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
        context = engine.create_execution_context()
        stream = layer.stream()
        assert context.set_optimization_profile_async(0, stream.handle)
        assert not context.execute_async_v3(stream.handle)  # no shape, no addresses
        assert not context.set_input_shape("mel", (3, 100, 10))  # batch above the profile
        assert context.set_input_shape("mel", (1, 100, 10))
        buffer = layer.device_buffer(4096)
        assert not context.set_tensor_address("mel", buffer.address + 128)
        assert context.set_tensor_address("mel", buffer.address)
        assert not context.execute_async_v3(stream.handle)  # the output has no address yet
    assert len(world.refusals) == len(logger.messages) == 4


def public_methods(cls) -> set:
    return {name for name, value in vars(cls).items() if callable(value) and not name.startswith("_")}


def test_cuda_layers_offer_the_same_interface_and_the_host_double_all_of_it():
    from cuda_double import HostCudaLayer
    from runtime.cuda import CudaBindingsLayer, PycudaLayer, TorchInterop
    interface = public_methods(PycudaLayer) | public_methods(TorchInterop)
    assert interface == public_methods(CudaBindingsLayer) - {"check"} | public_methods(TorchInterop)
    assert interface <= public_methods(HostCudaLayer), interface - public_methods(HostCudaLayer)


# --- builder, load, host path ------------------------------------------------------------------


def test_build_load_and_host_path_give_onnx_runtimes_audio(world, onnx_v4, tmp_path):
    plan = built(world, onnx_v4, tmp_path)
    manifest = runtime.read_manifest(plan)
    assert (manifest["backend"], manifest["backend_version"]) == (world.trt.__name__, world.trt.__version__)
    with runtime.load_engine(plan) as engine:
        trt_engine = engine._trt_objects[2]
        assert engine.device_memory["per_context"] == trt_engine.device_memory_size_v2
        # ON_PROFILE_CHANGE: each context holds its own profile's scratch, not the largest one's twice
        assert engine.device_memory["reserved"] == world.reserved == sum(
            trt_engine.get_device_memory_size_for_profile_v2(i) for i in range(2))
        strategy = world.trt.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE
        assert all(s.runtime_config.get_execution_context_allocation_strategy() == strategy for s in engine._slots)
        for batch, frames, seed in ((1, 7, 0), (3, 40, 1), (1, 100, 2)):  # batch 3 splits on the short profile
            mel = speech(frames, batch, seed)
            np.testing.assert_array_equal(engine(mel), reference(onnx_v4, mel))
    assert world.refusals == []


def test_half_io_plan_is_fed_its_own_type(world, half_io_v4, tmp_path):
    plan = built(world, half_io_v4, tmp_path, precision="fp16")
    assert runtime.read_manifest(plan)["input"]["dtype"] == "float16"
    with runtime.load_engine(plan) as engine:
        mel = speech(20, 2, 3)
        audio = engine(mel)
    assert audio.dtype == np.float32
    np.testing.assert_array_equal(audio, reference(half_io_v4, mel.astype(np.float16)))


# --- zero-copy ---------------------------------------------------------------------------------


def test_zero_copy_splits_batches_without_binding_unaligned_addresses(world, onnx_v4, tmp_path):
    """Batch 3 on a max-batch-2 profile puts piece 1 at 128 mod 256 bytes: it must go through aligned
    staging, never be bound (TensorRT refuses it) or run with the previous piece's pointer."""
    torch = pytest.importorskip("torch")
    plan = built(world, onnx_v4, tmp_path)
    mel = speech(40, 3, 4)
    with runtime.load_engine(plan) as engine:
        audio = engine(torch.from_numpy(mel))
    assert isinstance(audio, torch.Tensor) and audio.dtype == torch.float32
    np.testing.assert_array_equal(audio.numpy(), reference(onnx_v4, mel))
    assert world.refusals == []
    torch_stream = world.cuda.torch_stream.handle
    assert any(waiter == torch_stream for waiter, _ in world.cuda.waits), "the caller's stream never waited for the engine"
    assert any(waiter != torch_stream for waiter, _ in world.cuda.waits), "the engine's stream never waited for the caller"


def test_tensor_on_another_device_is_refused_in_one_line(world, onnx_v4, tmp_path):
    torch = pytest.importorskip("torch")
    plan = built(world, onnx_v4, tmp_path)
    world.cuda.torch_device = 1
    with runtime.load_engine(plan, device=0) as engine, pytest.raises(runtime.EngineError, match="device=1"):
        engine(torch.from_numpy(speech(8)))


# --- CUDA graphs -------------------------------------------------------------------------------


def test_cuda_graphs_follow_each_backends_rules(world, onnx_v4, tmp_path, caplog):
    plan = built(world, onnx_v4, tmp_path)
    a, b = speech(12, 1, 5), speech(20, 1, 6)
    with runtime.load_engine(plan, cuda_graphs=True) as engine:
        for mel in (a, a, a, b, b, a):
            np.testing.assert_array_equal(engine(mel), reference(onnx_v4, mel))
    if world.surface == "tensorrt_rtx-1":
        # its own whole-graph strategy: nothing captured by hand (that would need REQUIRE_USER_ALLOCATION)
        assert world.cuda.launches == 0 and world.whole_graph_replays == 2  # a's third and fourth run
    else:
        # one graph per context: a captures after its first run, replays twice; b recaptures, replays; a again
        assert world.cuda.launches == 2 + 1
    assert world.refusals == []


def test_a_failed_capture_is_remembered(world, onnx_v4, tmp_path, caplog, monkeypatch):
    if world.surface == "tensorrt_rtx-1":
        pytest.skip("TensorRT-RTX captures with its own strategy, not by hand")
    plan = built(world, onnx_v4, tmp_path)
    attempts = []

    def refuse(stream, enqueue):
        attempts.append(stream.handle)
        raise runtime.EngineError("CUDA begin capture failed (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)")
    monkeypatch.setattr(world.cuda, "capture", refuse)
    mel = speech(16)
    with caplog.at_level(logging.WARNING, "runtime"), runtime.load_engine(plan, cuda_graphs=True) as engine:
        for _ in range(3):
            np.testing.assert_array_equal(engine(mel), reference(onnx_v4, mel))
    assert len(attempts) == 1
    assert sum("capture failed" in r.message for r in caplog.records) == 1


# --- versions ----------------------------------------------------------------------------------


def test_version_compatible_tensorrt_10_plan_loads_on_tensorrt_11(world, onnx_v4, tmp_path, monkeypatch):
    if world.surface != "tensorrt-10":
        pytest.skip("built with TensorRT 10, loaded with 11")
    plan = built(world, onnx_v4, tmp_path, version_compatible=True)
    assert runtime.read_manifest(plan)["version_compatible"] is True
    newer = install(monkeypatch, "tensorrt-11", world)
    assert newer.__version__.startswith("11.")
    with runtime.load_engine(plan) as engine:  # needs engine_host_code_allowed: the plan carries its runtime
        np.testing.assert_array_equal(engine(speech(9)), reference(onnx_v4, speech(9)))


def test_plain_plan_needs_its_exact_version(world, onnx_v4, tmp_path, monkeypatch):
    plan = built(world, onnx_v4, tmp_path)
    version = world.trt.__version__.split(".")
    version[-1] = str(int(version[-1]) + 1)
    install(monkeypatch, world.surface, world, ".".join(version))
    with pytest.raises(PlanNotRunnable, match="exact version"):
        runtime.load_engine(plan)


# --- close -------------------------------------------------------------------------------------


def test_close_frees_everything_with_the_context_current_from_any_thread(world, onnx_v4, tmp_path):
    plan = built(world, onnx_v4, tmp_path, profiles=PROFILES * 2)
    engine = runtime.load_engine(plan, contexts_per_profile=2)
    engine(speech(10))
    trt_engine = weakref.ref(engine._trt_objects[2])
    closer = threading.Thread(target=engine.close)
    closer.start()
    closer.join()
    engine.close()  # twice is fine
    assert world.cuda.buffers == {} and world.cuda.pinned == 0
    assert set(world.cuda.streams) == {world.cuda.torch_stream.handle}
    with pytest.raises(runtime.RuntimeUserError, match="closed"):
        engine(speech(10))
    del engine
    gc.collect()
    assert trt_engine() is None, "something (the runtime cache?) keeps the TensorRT engine alive after close"
    if world.surface == "tensorrt_rtx-1":
        assert plan.with_suffix(".runtime-cache").read_bytes().startswith(b"runtime-cache:")


# --- validate bench and the GPT-SoVITS drop-in -------------------------------------------------


def test_bench_tensorrt_rows_run_the_projects_runtime(world, onnx_v4, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from validate import bench

    settings = small_settings(tmp_path)
    settings["paths"]["engines"] = str(tmp_path)
    build_plan(onnx_v4, "v4", "fp32", tmp_path / "v4.fp32.plan", backend=world.trt.__name__, settings=settings)
    monkeypatch.setattr(bench, "to_device", lambda array: torch.from_numpy(array))  # the host double is the device
    monkeypatch.setattr(bench, "gpu_bytes_in_use", lambda: 0)  # torch's CUDA memory counter: no CUDA here
    models = bench.Models(settings, tmp_path)
    mel = speech(100, 1, 7)  # above the short profile: the runtime picks the long one
    for zero_copy in (False, True):
        run, notes = bench.TensorRT("tensorrt-fp32", "fp32", zero_copy).prepare(models, "v4", mel, 1, 100)
        np.testing.assert_array_equal(np.asarray(run()), reference(onnx_v4, mel))
    models.close()


def test_drop_in_loads_the_engine_on_the_models_device(world, onnx_v4, tmp_path, vocoder_v4):
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from serving.gpt_sovits import install as install_drop_in

    settings = small_settings(tmp_path)
    settings["paths"]["engines"] = str(tmp_path)
    build_plan(onnx_v4, "v4", "fp32", tmp_path / "v4.fp32.plan", backend=world.trt.__name__, settings=settings)
    tts = SimpleNamespace(configs=SimpleNamespace(version="v4", device="cuda:1", default_configs={}),
                          precision=torch.float32, vocoder=vocoder_v4,
                          vocoder_configs={"sr": 48000, "upsample_rate": 480}, init_vocoder=lambda version: None)
    world.cuda.torch_device = 1
    install_drop_in(tts, {"use_tensorrt": True}, settings=settings)  # the drop-in never builds: it loads
    assert tts.vocoder.engine.device == 1
    mel = torch.from_numpy(speech(12))
    np.testing.assert_array_equal(tts.vocoder(mel).numpy(), reference(onnx_v4, mel.numpy()))
    tts.vocoder.engine.close()


# --- the same contracts on a GPU, with each CUDA binding ------------------------------------------

BINDINGS = ("pycuda", "cuda-bindings")


def identity_onnx(path) -> str:
    """A one-band, hop-1 'vocoder' whose audio is its mel: what the device-side copy computes."""
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["mel"], ["audio"])], "copy",
                              [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", 1, "frames"])],
                              [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", 1, "samples"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    update_metadata(model, {"vocoder": "v4", "sampling_rate": 16000, "hop": 1, "n_mels": 1,
                            "checkpoint": "identity", "checkpoint_sha256": "synthetic"})
    onnx.save(model, str(path))
    return path


class PretendRtxCard:
    """A real CUDA layer reporting an RTX card, so TensorRT-RTX's runnability rules let the double run
    on a GPU they refuse (the H100); everything else is the real layer."""

    def __init__(self, layer):
        self._layer = layer

    def __getattr__(self, name):
        return getattr(self._layer, name)

    def device_properties(self, device):
        name, _ = self._layer.device_properties(device)
        return f"{name} (reported as compute capability 8.9)", (8, 9)


@pytest.fixture(params=[(b, s) for b in BINDINGS for s in SURFACE_NAMES], ids=lambda p: f"{p[0]}-{p[1]}")
def gpu_world(request, monkeypatch, tmp_path):
    from trt_double import DeviceWorld
    binding, surface = request.param
    try:
        layer = cuda_module.cuda_layer(binding)
        count = layer.device_count()
    except runtime.RuntimeUserError as error:
        pytest.skip(f"{binding}: {error}")
    if count == 0:
        pytest.skip("no CUDA GPU")
    if surface == "tensorrt_rtx-1":
        layer = PretendRtxCard(layer)
    world = DeviceWorld(layer)
    world.surface, world.binding = surface, binding
    world.trt = install(monkeypatch, surface, world)
    monkeypatch.setattr(cuda_module, "cuda_layer", lambda binding=None: layer)
    name, cc = layer.device_properties(0)
    gpus = [cuda_module.DriverGpu(0, name, cc)]
    monkeypatch.setattr(cuda_module, "driver_state", lambda: cuda_module.DriverState("-", gpus, ""))
    settings = small_settings(tmp_path, PROFILES * 3)  # three copies of each profile: up to three contexts each
    world.plan = build_plan(identity_onnx(tmp_path / "copy.onnx"), "v4", "fp32", tmp_path / "v4.fp32.plan",
                            backend=world.trt.__name__, settings=settings)
    return world


def stream_flags(handle: int) -> int:
    import ctypes
    flags = ctypes.c_uint()
    assert cuda_module.driver_library().cuStreamGetFlags(ctypes.c_void_p(handle), ctypes.byref(flags)) == 0
    return flags.value


@pytest.mark.gpu
def test_gpu_host_and_zero_copy_paths(gpu_world):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    with runtime.load_engine(gpu_world.plan) as engine:
        for shape in ((1, 1, 7), (3, 1, 40), (1, 1, 100), (1, 1, 300)):  # 300: chunked beyond the long profile
            mel = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
            np.testing.assert_allclose(engine(mel), mel, atol=1e-6)
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            mel = torch.randn((3, 1, 40), device="cuda")  # piece 1 starts 160 bytes in: not 256-aligned
            audio = engine(mel)
        side.synchronize()
        assert torch.equal(audio, mel)
        flags = [stream_flags(slot.io.cuda_stream.handle) for slot in engine._slots]
    assert gpu_world.refusals == [] and flags == [1] * len(flags)  # CU_STREAM_NON_BLOCKING
    print(f"\n{gpu_world.binding} / {gpu_world.surface}: host and zero-copy paths exact; slot streams non-blocking")


@pytest.mark.gpu
def test_gpu_graph_capture_and_replay(gpu_world):
    a = np.random.default_rng(1).standard_normal((1, 1, 32)).astype(np.float32)
    b = np.random.default_rng(2).standard_normal((1, 1, 48)).astype(np.float32)
    with runtime.load_engine(gpu_world.plan, cuda_graphs=True) as engine:
        for mel in (a, a, a, b, b, a):
            np.testing.assert_array_equal(engine(mel), mel)
        slot = engine._pools[0].queue[0]
        captured = slot.graph_shape
    manual = gpu_world.surface != "tensorrt_rtx-1"
    assert captured == ((1, 1, 32) if manual else None) and gpu_world.refusals == []
    how = "one graph per context, recaptured per shape" if manual else "built-in strategy"
    print(f"\n{gpu_world.binding} / {gpu_world.surface}: {how}; exact")


@pytest.mark.gpu
def test_gpu_threads_share_the_pool_and_close_from_another_thread(gpu_world):
    engine = runtime.load_engine(gpu_world.plan, contexts_per_profile=3)
    errors = []

    def work(seed):
        try:
            for i in range(10):
                mel = np.random.default_rng(seed * 100 + i).standard_normal((1, 1, 20 + i)).astype(np.float32)
                np.testing.assert_array_equal(engine(mel), mel)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    closer = threading.Thread(target=engine.close)
    closer.start()
    closer.join()
    assert not errors, errors[0]
    assert engine._slots is None
