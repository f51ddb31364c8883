"""Engine execution: a TensorRT or TensorRT-RTX plan on the device's primary CUDA context.

A Slot is one execution context bound to one optimization profile, with its own non-blocking
stream, device buffers sized once for that profile's largest shape and pinned host buffers. The
engine keeps a small pool of slots per profile, so threads infer at once without sharing a
context. CUDA goes through runtime/cuda.py (pycuda or cuda-bindings); TensorRT is imported when a
plan is loaded, never by `import runtime`; torch only when the caller passes a torch tensor, which
then runs zero-copy, ordered against the caller's stream with events.

Every bool TensorRT returns is checked: a refused shape, address, profile or enqueue is an
EngineError, never a silent run with stale state.
"""
from __future__ import annotations

import atexit
import functools
import logging
import math
import queue
import weakref
from pathlib import Path
from typing import Optional

import numpy as np

from runtime import cuda
from runtime.chunks import synthesize
from runtime.errors import EngineError, RuntimeUserError
from runtime.files import atomic_output
from runtime.manifest import KERNEL_SPECIALIZATIONS, batch_pieces, check_plan_bytes, choose_profile, profiles_of, read_manifest
from runtime.mel import check_mel, is_torch
from runtime.runnable import DISPLAY, Gpu, backend_of, check_runnable, import_backend
from runtime.streaming import StepFrames, Stream, fitted_stream, stream_window
from runtime.tensorrt_log import tensorrt_logger

log = logging.getLogger("runtime")
RUNTIME_CACHE_SUFFIX = ".runtime-cache"


class IOBuffers:
    """Device buffers for one input and one output, sized once for the largest shape served, pinned
    host buffers as large, and the non-blocking stream copies and execution are queued on."""

    def __init__(self, layer, input_elements: int, output_elements: int, input_dtype, output_dtype):
        self.layer = layer
        self.stream = layer.stream()
        self.host_input = layer.pinned_array(input_elements, np.dtype(input_dtype))
        self.host_output = layer.pinned_array(output_elements, np.dtype(output_dtype))
        self.device_input = layer.device_buffer(self.host_input.array.nbytes)
        self.device_output = layer.device_buffer(self.host_output.array.nbytes)
        self.nbytes = self.device_input.nbytes + self.device_output.nbytes

    def upload(self, array: np.ndarray) -> None:
        """Queue `array` host -> device through the pinned buffer (cast to the input dtype)."""
        staged = self.host_input.array[:array.size]
        staged[...] = array.reshape(-1)
        self.layer.copy_to_device(self.device_input.address, staged, self.stream)

    def download(self, shape: tuple) -> np.ndarray:
        """Queue device -> host of `shape`, wait for the stream, return a float32 copy."""
        staged = self.host_output.array[:math.prod(shape)]
        self.layer.copy_to_host(staged, self.device_output.address, self.stream)
        self.stream.synchronize()
        return staged.astype(np.float32).reshape(shape)

    def free(self) -> None:
        self.stream.synchronize()
        for buffer in (self.device_input, self.device_output, self.host_input, self.host_output, self.stream):
            buffer.free()


class Slot:
    """One execution context bound to one profile, its stream and buffers: one request at a time.

    With `manual_graphs` (full TensorRT) the host path's enqueue is captured into one CUDA graph
    per context, as trtexec keeps it: a new shape replaces the graph after a real run, and a capture
    that fails turns graphs off for this slot for good (logged once)."""

    def __init__(self, layer, trt_engine, profile, manifest: dict, runtime_config=None, manual_graphs: bool = False):
        self.layer, self.profile, self.hop = layer, profile, manifest["hop"]
        self.input_name, self.output_name = manifest["input"]["name"], manifest["output"]["name"]
        self.io = IOBuffers(layer, profile.max_batch * manifest["n_mels"] * profile.max_frames,
                            profile.max_batch * profile.max_frames * self.hop,
                            manifest["input"]["dtype"], manifest["output"]["dtype"])
        self.runtime_config = runtime_config  # must live as long as the context
        self.context = (trt_engine.create_execution_context() if runtime_config is None
                        else trt_engine.create_execution_context(runtime_config=runtime_config))
        if self.context is None:
            raise EngineError("TensorRT could not create an execution context (GPU memory full?); "
                              "free GPU memory or use fewer contexts")
        if not self.context.set_optimization_profile_async(profile.index, self.io.stream.handle):
            raise EngineError(f"TensorRT refused profile {profile.name!r}; rebuild the plan with `make engines`")
        self.io.stream.synchronize()
        self.manual_graphs = manual_graphs
        self.graph, self.graph_shape = None, None
        self.events = (layer.event(), layer.event())  # caller's work done, our work done

    def run_host(self, mel: np.ndarray) -> np.ndarray:
        """numpy in, numpy out, through the pinned and device buffers on the slot's own stream."""
        self.io.upload(mel)
        out_shape = self._bind(mel.shape, self.io.device_input.address, self.io.device_output.address)
        self._execute(tuple(mel.shape), replayable=True)
        return self.io.download(out_shape)

    def run_device(self, mel_address: int, out_address: int, shape: tuple, caller_stream, itemsizes: tuple) -> None:
        """Zero-copy: the engine reads the caller's device memory and writes `out_address`, on the
        slot's stream, after the caller's queued work and before the caller's later work. An address
        TensorRT cannot take (not 256-byte aligned) goes through the slot's own buffers."""
        stream = self.io.stream
        caller_done, ours_done = self.events
        caller_done.record(caller_stream)
        self.layer.wait(stream, caller_done)
        in_bytes, out_bytes = math.prod(shape) * itemsizes[0], shape[0] * shape[2] * self.hop * itemsizes[1]
        bound_in, bound_out = mel_address, out_address
        if not cuda.aligned(mel_address):
            self.layer.copy_on_device(self.io.device_input.address, mel_address, in_bytes, stream)
            bound_in = self.io.device_input.address
        if not cuda.aligned(out_address):
            bound_out = self.io.device_output.address
        self._bind(shape, bound_in, bound_out)
        self._execute(shape, replayable=False)
        if bound_out != out_address:
            self.layer.copy_on_device(out_address, bound_out, out_bytes, stream)
        ours_done.record(stream)
        self.layer.wait(caller_stream, ours_done)

    def _bind(self, shape: tuple, input_address: int, output_address: int) -> tuple:
        expected = (shape[0], 1, shape[2] * self.hop)
        if not self.context.set_input_shape(self.input_name, tuple(shape)):
            raise EngineError(f"TensorRT rejected mel shape {tuple(shape)} for profile {self.profile.name!r}; "
                              "rebuild with `make engines`")
        for name, address in ((self.input_name, input_address), (self.output_name, output_address)):
            if not self.context.set_tensor_address(name, address):
                raise EngineError(f"TensorRT refused address 0x{address:x} for {name!r}; this is a runtime bug, please report it")
        produced = tuple(self.context.get_tensor_shape(self.output_name))
        if produced != expected:
            raise EngineError(f"the plan makes audio {produced} from mel {tuple(shape)} but its manifest's hop {self.hop} says "
                              f"{expected}; rebuild with `make engines` so plan and manifest match")
        return expected

    def _execute(self, shape: tuple, replayable: bool) -> None:
        """Enqueue the engine, or replay this context's graph when it was captured for this shape."""
        stream = self.io.stream
        if replayable and self.manual_graphs and self.graph is not None and self.graph_shape == shape:
            self.graph.launch(stream)
            return
        self._enqueue()
        if replayable and self.manual_graphs:
            self._capture(shape)

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.io.stream.handle):
            raise EngineError("TensorRT failed to execute the engine (its message is logged above); check free GPU memory")

    def _capture(self, shape: tuple) -> None:
        """After a real run of `shape` (which flushed TensorRT's deferred shape work), record its enqueue."""
        self._drop_graph()
        try:
            self.graph = self.layer.capture(self.io.stream, lambda: self.context.execute_async_v3(self.io.stream.handle))
            self.graph_shape = shape
        except EngineError as error:
            self.manual_graphs = False
            log.warning("CUDA graph capture failed for profile %r (%s); this context runs without graphs from now on",
                        self.profile.name, error)

    def _drop_graph(self) -> None:
        if self.graph is not None:
            self.graph.free()
        self.graph, self.graph_shape = None, None

    def free(self) -> None:
        self._drop_graph()
        for event in self.events:
            event.free()
        self.io.free()
        self.context = self.runtime_config = None


class RuntimeCache:
    """TensorRT-RTX's cache of kernels compiled at run time, kept beside the plan and reused, so they
    compile once rather than at every process start."""

    def __init__(self, trt_engine, plan_path: Path):
        self.path = plan_path.with_suffix(RUNTIME_CACHE_SUFFIX)
        self._config = trt_engine.create_runtime_config()  # owns the cache
        self.cache = self._config.create_runtime_cache()
        if self.path.is_file():
            loaded = self.cache.deserialize(self.path.read_bytes())
            log.info("runtime cache %s %s", self.path,
                     "loaded" if loaded else "not usable here (GPU, driver or version differ); rewriting it")

    def attach(self, config) -> None:
        if not config.set_runtime_cache(self.cache):
            raise EngineError("TensorRT-RTX refused its runtime cache; delete the *.runtime-cache file beside the plan")

    def save(self) -> None:
        blob = self.cache.serialize()
        try:
            with atomic_output(self.path) as tmp:
                tmp.write_bytes(memoryview(blob))
        except RuntimeUserError as error:
            log.warning("runtime cache not saved to %s: %s", self.path, error)

    def release(self) -> None:
        self.cache = self._config = None


class Engine:
    """A loaded plan: `engine(mel)` turns a (batch, n_mels, frames) mel into (batch, 1, frames * hop)
    float32 audio (numpy in, numpy out; a CUDA tensor in, a CUDA tensor out)."""

    def __init__(self, manifest: dict, layer, device: int, trt_objects: tuple, slots: list, runtime_cache):
        self.manifest, self.layer, self.device = manifest, layer, device
        self._trt_objects, self._slots, self._runtime_cache = trt_objects, slots, runtime_cache
        self.profiles = profiles_of(manifest)
        self.sampling_rate, self.hop, self.n_mels = manifest["sampling_rate"], manifest["hop"], manifest["n_mels"]
        self.max_frames = max(p.max_frames for p in self.profiles)
        self._pools = {p.index: queue.Queue() for p in self.profiles}
        for slot in slots:
            self._pools[slot.profile.index].put(slot)
        self.device_memory: dict = {}

    def __call__(self, mel):
        if self._slots is None:
            raise RuntimeUserError("the engine was closed; load it again with runtime.load_engine")
        device_tensor = is_torch(mel) and self.layer.tensor_device(mel) is not None
        if is_torch(mel) and not device_tensor:
            import torch
            return torch.from_numpy(self(mel.detach().cpu().numpy()))
        if device_tensor and self.layer.tensor_device(mel) != self.device:
            raise EngineError(f"mel is on {mel.device}, the engine on device {self.device}; move the mel there "
                              f"or load the engine with device={self.layer.tensor_device(mel)}")
        mel = check_mel(mel, self.n_mels)
        if mel.shape[2] <= self.max_frames:
            return self._infer(mel)
        return synthesize(self._infer, mel, self.max_frames, hop=self.hop, context_frames=self.window.context,
                          lookahead_frames=self.window.lookahead)

    @functools.cached_property
    def window(self):
        """Context and lookahead of streams and of long-mel chunks (runtime/streaming.py), read when
        first needed: a plan that only ever sees mels within its profiles needs no reach."""
        return stream_window(self.manifest)

    def stream(self, *, context_frames: Optional[int] = None, lookahead_frames: Optional[int] = None,
               step_frames: Optional[StepFrames] = None) -> Stream:
        """A Stream over this engine (runtime/streaming.py): the manifest's measured context and
        lookahead unless given (less warns), and the default step schedule cut to fit the profiles."""
        return fitted_stream(self, self.manifest, self.window, context_frames=context_frames,
                             lookahead_frames=lookahead_frames, step_frames=step_frames)

    def _infer(self, mel):
        """One pass over a mel that fits a profile's frames; batches above its maximum are split."""
        batch, _, frames = mel.shape
        profile = choose_profile(self.profiles, batch, frames)
        if is_torch(mel):
            return self._infer_device(mel, profile)
        parts = []
        for piece in batch_pieces(batch, profile.max_batch):
            with self._slot(profile) as slot:
                parts.append(slot.run_host(mel[piece]))
        return np.concatenate(parts, axis=0)

    def _infer_device(self, mel, profile):
        import torch
        mel = mel.to(getattr(torch, self.manifest["input"]["dtype"])).contiguous()
        batch, _, frames = mel.shape
        out_dtype = getattr(torch, self.manifest["output"]["dtype"])
        out = torch.empty((batch, 1, frames * self.hop), dtype=out_dtype, device=mel.device)
        caller = self.layer.foreign_stream(self.layer.tensor_stream(mel))
        itemsizes = (mel.element_size(), out.element_size())
        for piece in batch_pieces(batch, profile.max_batch):
            with self._slot(profile) as slot:
                slot.run_device(mel[piece].data_ptr(), out[piece].data_ptr(), tuple(mel[piece].shape), caller, itemsizes)
        return out.float()

    def _slot(self, profile):
        return _Borrowed(self._pools[profile.index], self.layer, self.device)

    def stats(self) -> dict:
        return dict(self.device_memory)

    def close(self) -> None:
        """Save the runtime cache, then free graphs, contexts, buffers and streams with the primary
        context current (also at exit; safe from any thread, and twice)."""
        if self._slots is None:
            return
        slots, self._slots = self._slots, None
        with self.layer.activate(self.device):
            if self._runtime_cache is not None:
                self._runtime_cache.save()
            for slot in slots:
                slot.free()
            if self._runtime_cache is not None:
                self._runtime_cache.release()
            self._pools = self._trt_objects = self._runtime_cache = None

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


class _Borrowed:
    """A slot taken from its pool for one piece, with the engine's primary context current."""

    def __init__(self, pool: queue.Queue, layer, device: int):
        self.pool, self.layer, self.device = pool, layer, device

    def __enter__(self) -> Slot:
        self.slot = self.pool.get()
        self.active = self.layer.activate(self.device)
        self.active.__enter__()
        return self.slot

    def __exit__(self, *exc) -> None:
        try:
            self.active.__exit__(*exc)
        finally:
            self.pool.put(self.slot)


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


def _refuse_invalid(runtime, trt, logger, plan: bytes, plan_path: Path, gpu: Gpu) -> None:
    """TensorRT-RTX judges a plan from its header before loading it; say what it found."""
    if not hasattr(runtime, "get_engine_validity"):
        return
    validity, diagnostics = runtime.get_engine_validity(plan)
    if validity == trt.EngineValidity.INVALID:
        reasons = [n for n, v in trt.EngineInvalidityDiagnostics.__members__.items() if int(diagnostics) & int(v)]
        detail = "; ".join(filter(None, [", ".join(reasons), logger.last_error])) or "no reason given"
        raise EngineError(f"{DISPLAY[trt.__name__]} judges {plan_path} invalid on {gpu.name} ({detail}); "
                          "update the NVIDIA driver or rebuild the plan with `make engines` for this GPU")


def _device_memory_per_context(trt_engine) -> int:
    """TensorRT 10.1+ and TensorRT-RTX: device_memory_size_v2 (0 is a valid answer); earlier 10.x: the old name."""
    size = getattr(trt_engine, "device_memory_size_v2", None)
    return trt_engine.device_memory_size if size is None else size


def _rtx_runtime_config(trt, trt_engine, cache: Optional[RuntimeCache], cuda_graphs: bool, specialization: str):
    """TensorRT-RTX's per-context settings: the shared runtime cache, its own whole-graph CUDA graph
    strategy (it captures and replays per shape itself), and how kernels for new shapes are compiled."""
    config = trt_engine.create_runtime_config()
    if cache is not None:
        cache.attach(config)
    if cuda_graphs:
        config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
    config.dynamic_shapes_kernel_specialization_strategy = \
        trt.DynamicShapesKernelSpecializationStrategy.__members__[specialization.upper()]
    return config


def load_engine(plan_path, *, device: int = 0, contexts_per_profile: int = 1, cuda_graphs: bool = False,
                runtime_cache: bool = True, cuda_binding: Optional[str] = None,
                kernel_specialization: Optional[str] = None) -> Engine:
    """Check the plan against its manifest, this GPU and the installed TensorRT, then load it on
    `device` with `contexts_per_profile` slots per profile.

    `cuda_graphs`: full TensorRT captures and replays the host path's enqueue per context;
    TensorRT-RTX uses its built-in whole-graph strategy. `kernel_specialization` (TensorRT-RTX:
    lazy, eager or none) defaults to the manifest's. `cuda_binding` forces pycuda or cuda-bindings.
    """
    if isinstance(contexts_per_profile, bool) or not isinstance(contexts_per_profile, int) or contexts_per_profile < 1:
        raise RuntimeUserError(f"contexts_per_profile must be a positive integer, got {contexts_per_profile!r}; "
                               "pass 1 (or more for concurrent callers)")
    plan_path = Path(plan_path)
    manifest = read_manifest(plan_path)
    specialization = kernel_specialization or manifest["rtx_kernel_specialization"]
    if specialization not in KERNEL_SPECIALIZATIONS:
        raise RuntimeUserError(f"kernel specialization {specialization!r} is not one of {', '.join(KERNEL_SPECIALIZATIONS)}")
    plan = plan_path.read_bytes()
    check_plan_bytes(manifest, plan, plan_path)
    trt = import_backend(manifest["backend"])
    layer = cuda.cuda_layer(cuda_binding)
    gpu = Gpu(*layer.device_properties(device))
    check_runnable(manifest, gpu, None if trt is None else backend_of(trt))
    is_rtx = trt.__name__ == "tensorrt_rtx"
    with layer.activate(device):
        logger = tensorrt_logger(trt, log)
        runtime = trt.Runtime(logger)
        if manifest.get("version_compatible"):
            runtime.engine_host_code_allowed = True  # a version-compatible plan carries its own lean runtime
        _refuse_invalid(runtime, trt, logger, plan, plan_path, gpu)
        trt_engine = runtime.deserialize_cuda_engine(plan)
        if trt_engine is None:
            raise EngineError(f"{DISPLAY[trt.__name__]} could not load {plan_path} on {gpu.name}: "
                              f"{logger.last_error or 'no message'}; rebuild it with `make engines` for this GPU")
        _check_engine_matches(trt_engine, manifest, plan_path)
        cache = RuntimeCache(trt_engine, plan_path) if runtime_cache and is_rtx else None
        slots = [Slot(layer, trt_engine, profile, manifest,
                      _rtx_runtime_config(trt, trt_engine, cache, cuda_graphs, specialization) if is_rtx else None,
                      manual_graphs=cuda_graphs and not is_rtx)
                 for profile in profiles_of(manifest) for _ in range(contexts_per_profile)]
    engine = Engine(manifest, layer, device, (logger, runtime, trt_engine), slots, cache)
    per_context = _device_memory_per_context(trt_engine)
    engine.device_memory = {"per_context": per_context, "contexts": len(slots), "io_buffers": sum(s.io.nbytes for s in slots)}
    log.info("%s on %s via %s %s and %s: engine device memory %.1f MiB per context x %d, I/O buffers %.1f MiB", plan_path.name,
             gpu.name, trt.__name__, trt.__version__, layer.name, per_context / 2**20, len(slots),
             engine.device_memory["io_buffers"] / 2**20)
    atexit.register(_close_at_exit, weakref.ref(engine))
    return engine


def _close_at_exit(ref) -> None:
    engine = ref()
    if engine is not None:
        engine.close()
