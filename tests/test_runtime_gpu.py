"""The runtime on a real CUDA GPU, where no double stands in. Each test skips with its reason where a
CUDA binding, a CUDA GPU, torch's CUDA build or an engine-capable TensorRT is missing.

- the CUDA layer with each binding (pycuda, cuda-bindings): pinned and device memory round trips,
  and the primary context shared with torch;
- TensorRT-RTX's refusal of a GPU it does not support, in one line (the H100);
- a tiny plan executed for real, only where TensorRT can execute engines.
The engine's contracts with TensorRT (build, load, paths, graphs, close) on a GPU are in
test_trt_contract.py, over a device-side copy in TensorRT's place.
"""
from __future__ import annotations

import ctypes
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime import cuda as cuda_module
from runtime.engine import IOBuffers, load_engine
from runtime.errors import EngineError, RuntimeUserError
from runtime.runnable import Gpu, backend_of, why_not_runnable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "device"))
pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", params=cuda_module.BINDINGS)
def layer(request):
    try:
        layer = cuda_module.cuda_layer(request.param)
        count = layer.device_count()
    except RuntimeUserError as error:
        pytest.skip(f"{request.param}: {error}")
    if count == 0:
        pytest.skip("no CUDA GPU")
    name, cc = layer.device_properties(0)
    print(f"\nGPU: {name}, compute capability {cc[0]}.{cc[1]}, CUDA binding {layer.name}")
    return layer


@pytest.fixture(scope="module")
def torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    return torch


def current_context_handle() -> int:
    handle = ctypes.c_void_p()
    assert cuda_module.driver_library().cuCtxGetCurrent(ctypes.byref(handle)) == 0
    return handle.value or 0


def context_of_pointer(address: int) -> int:
    handle = ctypes.c_void_p()
    assert cuda_module.driver_library().cuPointerGetAttribute(ctypes.byref(handle), 1, ctypes.c_uint64(address)) == 0
    return handle.value or 0


def test_io_buffers_round_trip_through_pinned_and_device_memory(layer):
    with layer.activate(0):
        io = IOBuffers(layer, 2 * 100 * 1000, 2 * 100 * 1000, np.float32, np.float32)
        addresses = (io.device_input.address, io.device_output.address)
        for shape in ((2, 100, 1000), (1, 100, 37)):
            mel = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
            io.upload(mel)
            layer.copy_on_device(io.device_output.address, io.device_input.address, mel.nbytes, io.cuda_stream)
            np.testing.assert_array_equal(io.download(shape), mel)
        assert (io.device_input.address, io.device_output.address) == addresses  # allocated once, reused
        assert all(cuda_module.aligned(a) for a in addresses)
        flags = ctypes.c_uint()
        pinned = [cuda_module.driver_library().cuMemHostGetFlags(ctypes.byref(flags), ctypes.c_void_p(a.ctypes.data)) == 0
                  for a in (io.host_input.array, io.host_output.array, np.empty(16, np.float32))]
        io.free()
    print(f"{layer.name}: host->device->host round trip exact; pinned (input, output, plain numpy): {pinned}")
    assert pinned == [True, True, False]


def test_primary_context_is_torchs_context(layer, torch_cuda):
    torch = torch_cuda
    tensor = torch.arange(4096, dtype=torch.float32, device="cuda") * 0.5
    torch.cuda.synchronize()
    torchs = current_context_handle()
    with layer.activate(0):
        ours = current_context_handle()
        owner = context_of_pointer(tensor.data_ptr())
        io = IOBuffers(layer, 4096, 4096, np.float32, np.float32)
        layer.copy_on_device(io.device_output.address, tensor.data_ptr(), tensor.numel() * 4, io.cuda_stream)
        copied = io.download((4096,))
        io.free()
    print(f"{layer.name}: torch's current context 0x{torchs:x}, runtime's 0x{ours:x}, owner of torch's tensor 0x{owner:x}")
    assert ours == torchs == owner != 0
    np.testing.assert_array_equal(copied, tensor.cpu().numpy())


def rtx_runs_here(layer) -> bool:
    trt = pytest.importorskip("tensorrt_rtx")
    name, cc = layer.device_properties(0)
    manifest = {"backend": "tensorrt_rtx", "backend_version": trt.__version__, "compute_capabilities": [f"SM{cc[0]}{cc[1]}"]}
    return why_not_runnable(manifest, Gpu(name, cc), backend_of(trt)) is None


# ---- TensorRT-RTX on a GPU it does not support ----------------------------------------------------

OWN_VERDICT = """
import json, sys
import pycuda.driver as cuda
import tensorrt_rtx as trt
cuda.init(); ctx = cuda.Device(0).retain_primary_context(); ctx.push()  # pycuda: this check predates the layer
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


def test_tensorrt_rtx_plan_is_refused_on_an_unsupported_gpu(layer, tmp_path):
    trt = pytest.importorskip("tensorrt_rtx")
    name, cc = layer.device_properties(0)
    if rtx_runs_here(layer):
        pytest.skip(f"{name} (compute capability {cc[0]}.{cc[1]}) runs TensorRT-RTX plans")
    plan = Path(os.environ.get("RUNTIME_RTX_PLAN") or _build_tiny(tmp_path, "tensorrt_rtx"))
    built_with = json.loads(plan.with_suffix(".json").read_text(encoding="utf-8"))["backend_version"]
    print(f"\nplan {plan} built with TensorRT-RTX {built_with}, "
          f"this process has {trt.__version__}")
    with pytest.raises(EngineError) as excinfo:
        load_engine(plan, cuda_binding=layer.name)
    message = str(excinfo.value)
    print(f"runtime says: error: {message}")
    assert "\n" not in message and f"compute capability {cc[0]}.{cc[1]}" in message and "make engines" in message
    cli = subprocess.run([sys.executable, "-m", "runtime", str(plan), "--mel", str(_mel_file(tmp_path)), "--output",
                          str(tmp_path / "out.wav")], cwd=REPO, capture_output=True, text=True, encoding="utf-8")
    print(f"python -m runtime: exit {cli.returncode}, stderr: {cli.stderr.strip()}")
    assert cli.returncode == 2 and cli.stderr.strip().startswith("error: ") and not (tmp_path / "out.wav").exists()
    own = subprocess.run([sys.executable, "-c", OWN_VERDICT, str(plan)], capture_output=True, text=True, encoding="utf-8",
                         timeout=300)
    print(f"TensorRT-RTX itself (runtime check bypassed): exit {own.returncode}")
    print(f"{own.stdout.strip()}\n{own.stderr.strip()[-3000:]}")


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
def runnable_tiny_plan(layer, tmp_path_factory):
    name, cc = layer.device_properties(0)
    for backend in ("tensorrt", "tensorrt_rtx"):
        try:
            importlib.import_module(backend)
        except ImportError:
            continue
        if backend == "tensorrt_rtx" and not rtx_runs_here(layer):
            continue
        targets = [f"SM{cc[0]}{cc[1]}"] if backend == "tensorrt_rtx" else None
        return _build_tiny(tmp_path_factory.mktemp("tiny"), backend, targets)
    pytest.skip(f"TensorRT cannot execute engines on {name} (compute capability {cc[0]}.{cc[1]}): full TensorRT is not "
                "installed and TensorRT-RTX does not run on this GPU")


def test_tiny_plan_runs_for_real(runnable_tiny_plan, layer, torch_cuda):
    from tiny_plan import reference_audio
    torch = torch_cuda
    with load_engine(runnable_tiny_plan, contexts_per_profile=2, cuda_graphs=True, cuda_binding=layer.name) as engine:
        assert engine.device_memory["per_context"] >= 0 and engine.hop == 480
        for shape in ((1, 100, 64), (3, 100, 100), (1, 100, 300), (1, 100, 1500), (1, 100, 64)):
            mel = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
            expected = reference_audio(mel)
            np.testing.assert_allclose(engine(mel), expected, atol=1e-3 * np.abs(expected).max())
            on_gpu = engine(torch.from_numpy(mel).cuda())
            np.testing.assert_allclose(on_gpu.cpu().numpy(), expected, atol=1e-3 * np.abs(expected).max())
    if engine.manifest["backend"] == "tensorrt_rtx":
        assert runnable_tiny_plan.with_suffix(".runtime-cache").is_file()
