"""The runtime on a CUDA GPU. Each test skips with its reason where pycuda, a CUDA GPU, torch's
CUDA build or an engine-capable TensorRT is missing.

Two kinds of tests:
- CUDA plumbing (buffers, streams, primary context, CUDA graphs, the slot pool, zero-copy torch
  tensors) runs the runtime's real code with `CopyEngine` in place of a TensorRT engine: a
  stand-in that copies the bound mel buffer to the bound audio buffer with cuMemcpyDtoDAsync on the
  stream TensorRT would get. It runs on any CUDA GPU, including those TensorRT-RTX refuses.
- Engine execution builds a tiny plan (tests/device/tiny_plan.py) and runs it for real; it runs
  only where TensorRT can execute engines and skips elsewhere.
"""
from __future__ import annotations

import ctypes
import importlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from runtime.engine import Engine, IOBuffers, Slot, current, gpu_of, load_engine, primary_context
from runtime.errors import EngineError
from runtime.manifest import profiles_of, rtx_supports

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "device"))
pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda():
    try:
        import pycuda.driver as cuda
    except ImportError as error:
        pytest.skip(f"pycuda is not importable ({error})")
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as error:
        pytest.skip(f"no CUDA driver or GPU ({error})")
    if count == 0:
        pytest.skip("no CUDA GPU")
    name, cc = gpu_of(0)
    print(f"\nGPU: {name}, compute capability {cc[0]}.{cc[1]}, CUDA driver {cuda.get_driver_version()}, "
          f"pycuda {importlib.import_module('pycuda').VERSION_TEXT}")
    return cuda


@pytest.fixture(scope="module")
def torch_cuda(cuda):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    return torch


def libcuda():
    return ctypes.CDLL("libcuda.so.1")


def current_context_handle() -> int:
    handle = ctypes.c_void_p()
    assert libcuda().cuCtxGetCurrent(ctypes.byref(handle)) == 0
    return handle.value or 0


def context_of_pointer(address: int) -> int:
    handle = ctypes.c_void_p()
    assert libcuda().cuPointerGetAttribute(ctypes.byref(handle), 1, ctypes.c_uint64(address)) == 0  # 1: CONTEXT
    return handle.value or 0


# ---- a stand-in for the TensorRT engine, for the CUDA plumbing -------------------------------------

STANDIN_MANIFEST = {  # n_mels 1 and hop 1: the copy maps frame t of the mel to sample t of the audio
    "format": 1, "vocoder": "copy", "precision": "fp32", "backend": "tensorrt", "backend_version": "0",
    "sampling_rate": 16000, "hop": 1, "n_mels": 1,
    "input": {"name": "mel", "dtype": "float32"}, "output": {"name": "audio", "dtype": "float32"},
    "profiles": [{"name": "short", "min": [1, 1, 1], "opt": [1, 1, 32], "max": [2, 1, 64]},
                 {"name": "long", "min": [1, 1, 1], "opt": [1, 1, 128], "max": [1, 1, 256]}],
}


class CopyContext:
    """The execution-context calls the runtime makes, served by a device-to-device copy."""

    def __init__(self):
        self.shape, self.addresses, self.streams, self.profile = None, {}, [], None

    def set_optimization_profile_async(self, index, stream):
        self.profile = index
        return True

    def is_stream_capturable(self, stream):
        return True

    def set_input_shape(self, name, shape):
        self.shape = tuple(shape)
        return True

    def set_tensor_address(self, name, address):
        self.addresses[name] = int(address)

    def get_tensor_shape(self, name):
        return self.shape if name == "mel" else (self.shape[0], 1, self.shape[2])

    def execute_async_v3(self, stream):
        self.streams.append(int(stream))
        nbytes = int(np.prod(self.shape)) * 4
        return libcuda().cuMemcpyDtoDAsync_v2(ctypes.c_uint64(self.addresses["audio"]), ctypes.c_uint64(self.addresses["mel"]),
                                              ctypes.c_size_t(nbytes), ctypes.c_void_p(stream)) == 0


class CopyEngine:
    def create_execution_context(self, runtime_config=None):
        return CopyContext()


def standin_engine(contexts_per_profile=1, cuda_graphs=False, overlap=12) -> Engine:
    context = primary_context(0)
    with current(context):
        slots = [Slot(CopyEngine(), p, STANDIN_MANIFEST, None, cuda_graphs)
                 for p in profiles_of(STANDIN_MANIFEST) for _ in range(contexts_per_profile)]
    return Engine(STANDIN_MANIFEST, context, None, slots, None, overlap, 0)


# ---- CUDA plumbing --------------------------------------------------------------------------------

def test_io_buffers_round_trip_through_pinned_and_device_memory(cuda):
    with current(primary_context(0)):
        io = IOBuffers(2 * 100 * 1000, 2 * 100 * 1000)
        addresses = (int(io.device_input), int(io.device_output))
        for shape in ((2, 100, 1000), (1, 100, 37)):
            mel = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
            io.upload(mel)
            cuda.memcpy_dtod_async(io.device_output, io.device_input, mel.nbytes, io.stream)
            np.testing.assert_array_equal(io.download(shape), mel)
        assert (int(io.device_input), int(io.device_output)) == addresses  # allocated once, reused
        flags = ctypes.c_uint()
        pinned = [libcuda().cuMemHostGetFlags(ctypes.byref(flags), ctypes.c_void_p(a.ctypes.data)) == 0
                  for a in (io.host_input, io.host_output, np.empty(16, np.float32))]
        io.free()
    print(f"host->device->host round trip exact for (2,100,1000) and (1,100,37); pinned (input, output, plain numpy): {pinned}")
    assert pinned == [True, True, False]


def test_primary_context_is_torchs_context(torch_cuda):
    torch = torch_cuda
    tensor = torch.arange(4096, dtype=torch.float32, device="cuda") * 0.5
    torch.cuda.synchronize()
    torchs = current_context_handle()
    with current(primary_context(0)):
        ours = current_context_handle()
        owner = context_of_pointer(tensor.data_ptr())
        io = IOBuffers(4096, 4096)
        import pycuda.driver as cuda
        cuda.memcpy_dtod_async(io.device_output, tensor.data_ptr(), tensor.numel() * 4, io.stream)
        copied = io.download((4096,))
        io.free()
    print(f"torch's current context 0x{torchs:x}, runtime's 0x{ours:x}, owner of torch's tensor 0x{owner:x}")
    assert ours == torchs == owner != 0
    np.testing.assert_array_equal(copied, tensor.cpu().numpy())


def test_host_path_splits_batches_and_picks_profiles(cuda):
    engine = standin_engine()
    mel = np.random.default_rng(0).standard_normal((5, 1, 50)).astype(np.float32)
    np.testing.assert_array_equal(engine(mel), mel)  # short profile, batch 5 in pieces of 2
    short, long = (engine._pools[i].queue[0].context for i in (0, 1))
    assert len(short.streams) == 3 and short.shape == (1, 1, 50) and not long.streams
    mel = np.random.default_rng(1).standard_normal((1, 1, 200)).astype(np.float32)
    np.testing.assert_array_equal(engine(mel), mel)  # long profile
    assert long.shape == (1, 1, 200)
    engine.close()


def test_long_mel_is_chunked_and_cross_faded_to_the_same_length(cuda):
    engine = standin_engine()
    mel = np.random.default_rng(2).standard_normal((1, 1, 1000)).astype(np.float32)
    audio = engine(mel)
    assert audio.shape == (1, 1, 1000)
    np.testing.assert_allclose(audio, mel, atol=1e-6)
    engine.close()


def test_cuda_graphs_capture_once_per_shape_and_replay(cuda):
    engine = standin_engine(cuda_graphs=True)
    slot = engine._pools[0].queue[0]
    for seed in range(3):
        mel = np.random.default_rng(seed).standard_normal((2, 1, 64)).astype(np.float32)
        np.testing.assert_array_equal(engine(mel), mel)
    # one real enqueue then capture (the capture records, it does not run), then two graph launches
    assert list(slot.graphs) == [(2, 1, 64)] and len(slot.context.streams) == 2
    engine.close()


def test_torch_tensor_runs_zero_copy_on_the_callers_stream(torch_cuda):
    torch = torch_cuda
    engine = standin_engine()
    slot = engine._pools[0].queue[0]
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        mel = torch.randn((2, 1, 60), device="cuda")
        audio = engine(mel)
    stream.synchronize()
    assert audio.is_cuda and torch.equal(audio, mel)
    assert slot.context.streams == [stream.cuda_stream]
    assert slot.context.addresses["mel"] == mel.data_ptr() and slot.context.addresses["audio"] == audio.data_ptr()
    print(f"torch tensor: engine bound to the tensor's own memory 0x{mel.data_ptr():x} "
          f"and ran on torch's stream 0x{stream.cuda_stream:x}")
    engine.close()


def test_threads_share_the_pool_without_sharing_a_context(cuda):
    engine = standin_engine(contexts_per_profile=3)
    errors = []

    def work(seed):
        try:
            for i in range(20):
                mel = np.random.default_rng(seed * 100 + i).standard_normal((1, 1, 40 + i)).astype(np.float32)
                np.testing.assert_array_equal(engine(mel), mel)
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runs = [len(slot.context.streams) for slot in engine._pools[0].queue]
    engine.close()
    assert not errors, errors[0]
    assert sum(runs) == 8 * 20 and len(runs) == 3 and min(runs) > 0


# ---- TensorRT-RTX on a GPU it does not support ----------------------------------------------------

OWN_VERDICT = """
import json, sys
import pycuda.driver as cuda
import tensorrt_rtx as trt
cuda.init(); ctx = cuda.Device(0).retain_primary_context(); ctx.push()
messages = []
class Logger(trt.ILogger):
    def __init__(self):
        trt.ILogger.__init__(self)
    def log(self, severity, message):
        messages.append(f"{severity}: {message}")
plan = open(sys.argv[1], "rb").read()
runtime = trt.Runtime(Logger())
validity, diagnostics = runtime.get_engine_validity(plan)
reasons = [n for n, v in trt.EngineInvalidityDiagnostics.__members__.items() if int(diagnostics) & int(v)]
engine = runtime.deserialize_cuda_engine(plan)
ctx.pop()
print(json.dumps({"validity": str(validity), "diagnostics": reasons, "engine_loaded": engine is not None, "messages": messages}))
"""


def test_tensorrt_rtx_plan_is_refused_on_an_unsupported_gpu(cuda, tmp_path):
    trt = pytest.importorskip("tensorrt_rtx")
    name, cc = gpu_of(0)
    if rtx_supports(cc):
        pytest.skip(f"{name} (compute capability {cc[0]}.{cc[1]}) runs TensorRT-RTX plans")
    plan = Path(os.environ.get("RUNTIME_RTX_PLAN") or _build_tiny(tmp_path, "tensorrt_rtx"))
    print(f"\nplan {plan} built with TensorRT-RTX {json.loads(plan.with_suffix('.json').read_text())['backend_version']}, "
          f"this process has {trt.__version__}")
    with pytest.raises(EngineError) as excinfo:
        load_engine(plan)
    message = str(excinfo.value)
    print(f"runtime says: error: {message}")
    assert "\n" not in message and f"compute capability {cc[0]}.{cc[1]}" in message and "make engines" in message
    cli = subprocess.run([sys.executable, "-m", "runtime", str(plan), "--mel", str(_mel_file(tmp_path)), "--output",
                          str(tmp_path / "out.wav")], cwd=REPO, capture_output=True, text=True)
    print(f"python -m runtime: exit {cli.returncode}, stderr: {cli.stderr.strip()}")
    assert cli.returncode == 2 and cli.stderr.strip().startswith("error: ") and not (tmp_path / "out.wav").exists()
    own = subprocess.run([sys.executable, "-c", OWN_VERDICT, str(plan)], capture_output=True, text=True, timeout=300)
    print(f"TensorRT-RTX itself (runtime check bypassed): exit {own.returncode}\n{own.stdout.strip()}\n"
          f"{own.stderr.strip()[-3000:]}")


def _mel_file(tmp_path: Path) -> Path:
    path = tmp_path / "mel.npy"
    np.save(path, np.zeros((100, 20), np.float32))
    return path


def _build_tiny(tmp_path: Path, backend: str, targets: list[str] | None = None) -> Path:
    from tiny_plan import build_tiny_plan
    try:
        return build_tiny_plan(tmp_path / "plan", backend, targets)
    except RuntimeError as error:
        pytest.skip(f"could not build the tiny plan with {backend}: {error}")


# ---- real engine execution, wherever TensorRT can run engines -------------------------------------

@pytest.fixture(scope="module")
def runnable_tiny_plan(cuda, tmp_path_factory):
    name, cc = gpu_of(0)
    for backend in ("tensorrt", "tensorrt_rtx"):
        try:
            importlib.import_module(backend)
        except ImportError:
            continue
        if backend == "tensorrt_rtx" and not rtx_supports(cc):
            continue
        targets = [f"SM{cc[0]}{cc[1]}"] if backend == "tensorrt_rtx" else None
        return _build_tiny(tmp_path_factory.mktemp("tiny"), backend, targets)
    pytest.skip(f"TensorRT cannot execute engines on {name} (compute capability {cc[0]}.{cc[1]}): full TensorRT is not "
                "installed and TensorRT-RTX does not run on this GPU")


def test_tiny_plan_runs_for_real(runnable_tiny_plan, torch_cuda):
    from tiny_plan import reference_audio
    torch = torch_cuda
    with load_engine(runnable_tiny_plan, contexts_per_profile=2, cuda_graphs=True) as engine:
        assert engine.device_memory["per_context"] >= 0 and engine.hop == 480
        for shape in ((1, 100, 64), (3, 100, 100), (1, 100, 300), (1, 100, 1500), (1, 100, 64)):
            mel = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
            expected = reference_audio(mel)
            np.testing.assert_allclose(engine(mel), expected, atol=1e-3 * np.abs(expected).max())
            on_gpu = engine(torch.from_numpy(mel).cuda())
            np.testing.assert_allclose(on_gpu.cpu().numpy(), expected, atol=1e-3 * np.abs(expected).max())
    if engine.manifest["backend"] == "tensorrt_rtx":
        assert runnable_tiny_plan.with_suffix(".runtime-cache").is_file()
