"""Engine execution: a TensorRT or TensorRT-RTX plan on the device's primary CUDA context.

A Slot is one execution context bound to one optimization profile, with its own CUDA stream,
device buffers sized once for that profile's largest shape and pinned host buffers. The engine
keeps a small pool of slots per profile, so threads infer at once without sharing a context.
pycuda and TensorRT are imported when a plan is loaded, never by `import runtime`; torch only when
the caller passes a torch tensor, which then runs zero-copy on the caller's stream.
"""
from __future__ import annotations

import atexit
import ctypes
import importlib
import logging
import math
import queue
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from runtime.chunks import check_overlap, synthesize
from runtime.errors import EngineError, RuntimeUserError, one_line
from runtime.manifest import (BACKENDS, DISPLAY, PIP_NAMES, batch_pieces, check_compatibility, check_plan_bytes,
                              choose_profile, profiles_of, read_manifest)
from runtime.mel import check_mel, is_torch
from runtime.wav import atomic_write

log = logging.getLogger("runtime")
RUNTIME_CACHE_SUFFIX = ".runtime-cache"
_primary_contexts: dict[int, object] = {}
_primary_lock = threading.Lock()


def cuda_driver():
    try:
        import pycuda.driver as cuda
    except ImportError as error:
        raise EngineError(f"pycuda is not importable ({error}); pip install pycuda where the NVIDIA driver is installed") from None
    return cuda


def import_backend(preferred: str):
    """The plan's TensorRT module, else the other one (so a mismatch is reported as one)."""
    for name in (preferred, *(b for b in BACKENDS if b != preferred)):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise EngineError(f"neither tensorrt nor tensorrt_rtx is importable; pip install {PIP_NAMES[preferred]} (the plan's backend)")


def primary_context(device: int = 0):
    """The device's primary context, retained once per process: the context torch and every CUDA
    runtime library use, so memory, pointers and streams are shared with them."""
    cuda = cuda_driver()
    with _primary_lock:
        if device not in _primary_contexts:
            try:
                cuda.init()
                _primary_contexts[device] = cuda.Device(device).retain_primary_context()
            except cuda.Error as error:
                raise EngineError(f"no usable CUDA device {device} ({one_line(error)}); run on a machine with an NVIDIA GPU and driver") from None
        return _primary_contexts[device]


@contextmanager
def current(context):
    """`context` is current on this thread for the block (a pushed primary context nests with torch's)."""
    context.push()
    try:
        yield
    finally:
        context.pop()


def gpu_of(device: int = 0) -> tuple[str, tuple[int, int]]:
    dev = cuda_driver().Device(device)
    return dev.name(), tuple(dev.compute_capability())


class IOBuffers:
    """Device buffers for one input and one output, sized once for the largest shape served, pinned
    host buffers as large, and the stream copies and execution are queued on."""

    def __init__(self, input_elements: int, output_elements: int, input_dtype=np.float32, output_dtype=np.float32):
        cuda = cuda_driver()
        self.stream = cuda.Stream()
        self.host_input = cuda.pagelocked_empty(input_elements, input_dtype)
        self.host_output = cuda.pagelocked_empty(output_elements, output_dtype)
        self.device_input = cuda.mem_alloc(self.host_input.nbytes)
        self.device_output = cuda.mem_alloc(self.host_output.nbytes)
        self.nbytes = self.host_input.nbytes + self.host_output.nbytes

    def upload(self, array: np.ndarray) -> None:
        """Queue `array` host -> device through the pinned buffer (cast to the input dtype)."""
        staged = self.host_input[:array.size]
        staged[...] = array.reshape(-1)
        cuda_driver().memcpy_htod_async(self.device_input, staged, self.stream)

    def download(self, shape: tuple[int, ...]) -> np.ndarray:
        """Queue device -> host of `shape`, wait for the stream, return a float32 copy."""
        staged = self.host_output[:math.prod(shape)]
        cuda_driver().memcpy_dtoh_async(staged, self.device_output, self.stream)
        self.stream.synchronize()
        return staged.astype(np.float32).reshape(shape)

    def free(self) -> None:
        self.stream.synchronize()
        self.device_input.free()
        self.device_output.free()


class CudaGraph:
    """One captured enqueue, replayed with one launch. pycuda has no graph API, so this calls the
    driver library directly: begin/end capture, instantiate, launch."""

    _driver = None

    def __init__(self, executable: ctypes.c_void_p):
        self.executable = executable

    @classmethod
    def driver(cls):
        if cls._driver is None:
            cls._driver = ctypes.CDLL("libcuda.so.1")
        return cls._driver

    @classmethod
    def capture(cls, stream_handle: int, enqueue) -> "CudaGraph":
        lib, stream, graph, executable = cls.driver(), ctypes.c_void_p(stream_handle), ctypes.c_void_p(), ctypes.c_void_p()
        _cuda_check(lib.cuStreamBeginCapture_v2(stream, 1), "begin capture")  # 1: thread-local capture mode
        try:
            enqueue()
        finally:
            ended = lib.cuStreamEndCapture(stream, ctypes.byref(graph))
        _cuda_check(ended, "end capture")
        try:
            _cuda_check(lib.cuGraphInstantiateWithFlags(ctypes.byref(executable), graph, ctypes.c_ulonglong(0)), "instantiate")
        finally:
            lib.cuGraphDestroy(graph)
        return cls(executable)

    def launch(self, stream_handle: int) -> None:
        _cuda_check(self.driver().cuGraphLaunch(self.executable, ctypes.c_void_p(stream_handle)), "launch")

    def free(self) -> None:
        self.driver().cuGraphExecDestroy(self.executable)


def _cuda_check(status: int, step: str) -> None:
    if status != 0:
        name = ctypes.c_char_p()
        CudaGraph.driver().cuGetErrorName(status, ctypes.byref(name))
        raise EngineError(f"CUDA graph {step} failed ({(name.value or b'?').decode()}); load the engine with cuda_graphs=False")


class Slot:
    """One execution context bound to one profile, its stream and buffers: one request at a time."""

    def __init__(self, trt_engine, profile, manifest: dict, runtime_config=None, cuda_graphs: bool = False):
        self.profile, self.hop = profile, manifest["hop"]
        self.input_name, self.output_name = manifest["input"]["name"], manifest["output"]["name"]
        self.io = IOBuffers(profile.max_batch * manifest["n_mels"] * profile.max_frames,
                            profile.max_batch * profile.max_frames * self.hop,
                            np.dtype(manifest["input"]["dtype"]), np.dtype(manifest["output"]["dtype"]))
        self.runtime_config = runtime_config  # must live as long as the context
        self.context = (trt_engine.create_execution_context() if runtime_config is None
                        else trt_engine.create_execution_context(runtime_config=runtime_config))
        if self.context is None:
            raise EngineError("TensorRT could not create an execution context (GPU memory full?); free GPU memory or use fewer contexts")
        if not self.context.set_optimization_profile_async(profile.index, self.io.stream.handle):
            raise EngineError(f"TensorRT refused profile {profile.name!r}; rebuild the plan with `make engines`")
        self.io.stream.synchronize()
        self.graphs = {} if cuda_graphs and self.context.is_stream_capturable(self.io.stream.handle) else None
        self.pending = None  # torch event: work of a caller's stream that still uses this context

    def run_host(self, mel: np.ndarray) -> np.ndarray:
        """numpy in, numpy out, through the pinned and device buffers on the slot's own stream."""
        if self.pending is not None:
            self.pending.synchronize()
            self.pending = None
        self.io.upload(mel)
        out_shape = self._bind(mel.shape, int(self.io.device_input), int(self.io.device_output))
        self._execute(self.io.stream.handle, mel.shape if self.graphs is not None else None)
        return self.io.download(out_shape)

    def run_device(self, mel, out, torch) -> None:
        """Zero-copy: the engine reads the caller's CUDA tensor and writes `out` on the caller's stream."""
        stream = torch.cuda.current_stream(mel.device)
        if self.pending is not None:
            stream.wait_event(self.pending)
        self._bind(tuple(mel.shape), mel.data_ptr(), out.data_ptr())
        self._execute(stream.cuda_stream, None)
        self.pending = torch.cuda.Event()
        self.pending.record(stream)

    def _bind(self, shape: tuple[int, ...], input_address: int, output_address: int) -> tuple[int, ...]:
        expected = (shape[0], 1, shape[2] * self.hop)
        if not self.context.set_input_shape(self.input_name, shape):
            raise EngineError(f"TensorRT rejected mel shape {shape} for profile {self.profile.name!r}; rebuild with `make engines`")
        self.context.set_tensor_address(self.input_name, input_address)
        self.context.set_tensor_address(self.output_name, output_address)
        produced = tuple(self.context.get_tensor_shape(self.output_name))
        if produced != expected:
            raise EngineError(f"the plan makes audio {produced} from mel {shape} but its manifest's hop {self.hop} says "
                              f"{expected}; rebuild with `make engines` so plan and manifest match")
        return expected

    def _execute(self, stream_handle: int, graph_key) -> None:
        """Enqueue the engine; with CUDA graphs, a shape's first run is captured and later runs replay it."""
        if graph_key is not None and graph_key in self.graphs:
            return self.graphs[graph_key].launch(stream_handle)
        if not self.context.execute_async_v3(stream_handle):
            raise EngineError("TensorRT failed to execute the engine (its message is logged above); check free GPU memory")
        if graph_key is not None:  # the run above flushed TensorRT's deferred shape updates, so capture is clean
            self.graphs[graph_key] = CudaGraph.capture(stream_handle, lambda: self.context.execute_async_v3(stream_handle))

    def free(self) -> None:
        for graph in (self.graphs or {}).values():
            graph.free()
        self.io.free()
        self.context = None


class RuntimeCache:
    """TensorRT-RTX's cache of kernels compiled at run time, kept beside the plan and reused, so they
    compile once rather than at every process start."""

    def __init__(self, trt_engine, plan_path: Path):
        self.path, self._engine = plan_path.with_suffix(RUNTIME_CACHE_SUFFIX), trt_engine
        self._configs = [trt_engine.create_runtime_config()]
        self.cache = self._configs[0].create_runtime_cache()
        if self.path.is_file():
            loaded = self.cache.deserialize(self.path.read_bytes())
            log.info("runtime cache %s %s", self.path, "loaded" if loaded else "not usable here (GPU, driver or version differ); rewriting it")

    def config(self):
        config = self._engine.create_runtime_config()
        config.set_runtime_cache(self.cache)
        return config

    def save(self) -> None:
        blob = self.cache.serialize()
        try:
            atomic_write(self.path, lambda tmp: tmp.write_bytes(memoryview(blob)))
        except (OSError, RuntimeUserError) as error:
            log.warning("runtime cache not saved to %s: %s", self.path, error)


class Engine:
    """A loaded plan: `engine(mel)` turns a (batch, n_mels, frames) mel into (batch, 1, frames * hop)
    float32 audio (numpy in, numpy out; a CUDA tensor in, a CUDA tensor out)."""

    def __init__(self, manifest, cuda_context, keep_alive, slots, runtime_cache, overlap_frames: int, device: int):
        self.manifest, self._context, self._keep_alive = manifest, cuda_context, keep_alive
        self.profiles = profiles_of(manifest)
        self.sampling_rate, self.hop, self.n_mels = manifest["sampling_rate"], manifest["hop"], manifest["n_mels"]
        self.max_frames = max(p.max_frames for p in self.profiles)
        self.overlap_frames, self.device, self._runtime_cache = overlap_frames, device, runtime_cache
        self._slots = slots
        self._pools = {p.index: queue.Queue() for p in self.profiles}
        for slot in slots:
            self._pools[slot.profile.index].put(slot)

    def __call__(self, mel):
        if is_torch(mel) and mel.device.type != "cuda":
            import torch
            return torch.from_numpy(self(mel.detach().numpy()))
        if is_torch(mel) and (mel.device.index or 0) != self.device:
            raise EngineError(f"mel is on {mel.device}, the engine on cuda:{self.device}; move it with mel.to('cuda:{self.device}')")
        return synthesize(self._infer, check_mel(mel, self.n_mels), self.max_frames, self.overlap_frames, hop=self.hop)

    def _infer(self, mel):
        """One pass over a mel that fits a profile's frames; batches above its maximum are split."""
        batch, _, frames = mel.shape
        profile = choose_profile(self.profiles, batch, frames)
        on_device = is_torch(mel)
        if on_device:
            import torch
            dtype = getattr(torch, self.manifest["input"]["dtype"])
            mel = mel.to(dtype).contiguous()
            out = torch.empty((batch, 1, frames * self.hop), dtype=getattr(torch, self.manifest["output"]["dtype"]), device=mel.device)
        parts = []
        for piece in batch_pieces(batch, profile.max_batch):
            slot = self._pools[profile.index].get()
            try:
                with current(self._context):
                    if on_device:
                        slot.run_device(mel[piece], out[piece], torch)
                    else:
                        parts.append(slot.run_host(mel[piece]))
            finally:
                self._pools[profile.index].put(slot)
        return out.float() if on_device else np.concatenate(parts, axis=0)

    def close(self) -> None:
        """Save the runtime cache and free contexts, graphs and buffers (also done at exit)."""
        if self._slots is None:
            return
        with current(self._context):
            if self._runtime_cache is not None:
                self._runtime_cache.save()
            for slot in self._slots:
                slot.free()
        self._slots = self._pools = self._keep_alive = None

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


def _logger(trt):
    class Logger(trt.ILogger):
        """TensorRT's messages into logging; the last error is kept for one-line reports."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.last_error = ""

        def log(self, severity, message):
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.last_error = one_line(message)
            level = {trt.ILogger.WARNING: logging.WARNING, trt.ILogger.INFO: logging.DEBUG, trt.ILogger.VERBOSE: logging.DEBUG}
            log.log(level.get(severity, logging.ERROR), "%s: %s", trt.__name__, message)

    return Logger()


def _check_engine_matches(trt_engine, manifest: dict, plan_path: Path) -> None:
    """The deserialized engine has the manifest's tensors and profiles."""
    names = sorted(trt_engine.get_tensor_name(i) for i in range(trt_engine.num_io_tensors))
    wanted = sorted((manifest["input"]["name"], manifest["output"]["name"]))
    profiles = [tuple(tuple(p[k]) for k in ("min", "opt", "max")) for p in manifest["profiles"]]
    built = [tuple(tuple(d) for d in trt_engine.get_tensor_profile_shape(manifest["input"]["name"], i))
             for i in range(trt_engine.num_optimization_profiles)] if names == wanted else []
    if names != wanted or built != profiles:
        raise EngineError(f"plan {plan_path} does not match its manifest (tensors {names}, profiles {built}; manifest says "
                          f"{wanted}, {profiles}); rebuild with `make engines` so both are written together")


def _refuse_invalid(runtime, trt, logger, plan: bytes, plan_path: Path, gpu) -> None:
    """TensorRT-RTX judges a plan from its header before loading it; say what it found."""
    if not hasattr(runtime, "get_engine_validity"):
        return
    validity, diagnostics = runtime.get_engine_validity(plan)
    if validity == trt.EngineValidity.INVALID:
        reasons = [n for n, v in trt.EngineInvalidityDiagnostics.__members__.items() if int(diagnostics) & int(v)]
        detail = "; ".join(filter(None, [", ".join(reasons), logger.last_error])) or "no reason given"
        raise EngineError(f"{DISPLAY[trt.__name__]} judges {plan_path} invalid on {gpu[0]} ({detail}); "
                          "update the NVIDIA driver or rebuild the plan with `make engines` for this GPU")


def load_engine(plan_path, *, device: int = 0, contexts_per_profile: int = 1, cuda_graphs: bool = False,
                overlap_frames: int = 12, runtime_cache: bool = True) -> Engine:
    """Check the plan against its manifest, this GPU and the installed TensorRT, then load it with
    `contexts_per_profile` slots per profile. CUDA graphs (off by default) replay repeat shapes."""
    plan_path = Path(plan_path)
    manifest = read_manifest(plan_path)
    check_overlap(max(p["max"][2] for p in manifest["profiles"]), overlap_frames)
    plan = plan_path.read_bytes()
    check_plan_bytes(manifest, plan, plan_path)
    trt = import_backend(manifest["backend"])
    context = primary_context(device)
    gpu = gpu_of(device)
    check_compatibility(manifest, gpu=gpu, backend=(trt.__name__, trt.__version__))
    with current(context):
        logger = _logger(trt)
        runtime = trt.Runtime(logger)
        _refuse_invalid(runtime, trt, logger, plan, plan_path, gpu)
        trt_engine = runtime.deserialize_cuda_engine(plan)
        if trt_engine is None:
            raise EngineError(f"{DISPLAY[trt.__name__]} could not load {plan_path} on {gpu[0]}: {logger.last_error or 'no message'}; "
                              "rebuild it with `make engines` for this GPU")
        _check_engine_matches(trt_engine, manifest, plan_path)
        cache = RuntimeCache(trt_engine, plan_path) if runtime_cache and trt.__name__ == "tensorrt_rtx" else None
        slots = [Slot(trt_engine, profile, manifest, cache.config() if cache else None, cuda_graphs)
                 for profile in profiles_of(manifest) for _ in range(contexts_per_profile)]
    engine = Engine(manifest, context, (logger, runtime, trt_engine), slots, cache, overlap_frames, device)
    per_context = getattr(trt_engine, "device_memory_size_v2", None) or trt_engine.device_memory_size
    engine.device_memory = {"per_context": per_context, "contexts": len(slots), "io_buffers": sum(s.io.nbytes for s in slots)}
    log.info("%s on %s via %s %s: engine device memory %.1f MiB per context x %d, I/O buffers %.1f MiB", plan_path.name,
             gpu[0], trt.__name__, trt.__version__, per_context / 2**20, len(slots), engine.device_memory["io_buffers"] / 2**20)
    atexit.register(_close_at_exit, weakref.ref(engine))
    return engine


def _close_at_exit(ref) -> None:
    engine = ref()
    if engine is not None:
        engine.close()
