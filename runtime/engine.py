"""Engine execution: a TensorRT or TensorRT-RTX plan on the device's primary CUDA context.

A Slot is one execution context bound to one optimization profile, with its own non-blocking
CUDA stream, device buffers sized once for that profile's largest shape and pinned host buffers. The
engine keeps a small pool of slots per profile, so threads infer at once without sharing a
context. TensorRT requires every execution context in concurrent use to have its own optimization
profile, so N slots for one profile need N copies of it in the plan (the same shapes listed N
times in pipeline.toml): each slot's context takes a different copy. Contexts allocate their
scratch memory for their own profile (ON_PROFILE_CHANGE), not the plan's largest.

CUDA goes through runtime/cuda.py (pycuda or cuda-bindings); TensorRT is imported when a plan is
loaded, never by `import runtime`; torch only when the caller passes a torch tensor, which then
runs zero-copy, ordered against the caller's CUDA stream with events.

Every bool TensorRT returns is checked: a refused shape, address, profile or enqueue is an
EngineError, never a silent run with stale state.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import math
import queue
import threading
import weakref
from pathlib import Path
from typing import Optional

import numpy as np

from runtime import cuda
from runtime.batching import batch_pieces, choose_profile
from runtime.chunks import synthesize
from runtime.errors import EngineError, RuntimeUserError, one_line
from runtime.files import atomic_output
from runtime.manifest import KERNEL_SPECIALIZATIONS, check_plan_bytes, profiles_of, read_manifest
from runtime.mel import check_mel, is_torch
from runtime.runnable import DISPLAY, Gpu, backend_of, check_runnable, import_backend
from runtime.streaming import StepFrames, Stream, fitted_stream, stream_window
from runtime.tensorrt_log import tensorrt_logger

log = logging.getLogger("runtime")
RUNTIME_CACHE_SUFFIX = ".runtime-cache"
CLOSED = "the engine was closed; load it again with runtime.load_engine"
_CLOSED = object()  # put in each pool once an engine is closed, so a thread waiting for a slot wakes up


class IOBuffers:
    """Device buffers for one input and one output, sized once for the largest shape served, pinned
    host buffers as large, and the non-blocking CUDA stream copies and execution are queued on."""

    def __init__(self, layer, input_elements: int, output_elements: int, input_dtype, output_dtype):
        self.layer, made = layer, []
        try:
            self.cuda_stream = made_by(made, layer.stream)
            self.host_input = made_by(made, layer.pinned_array, input_elements, np.dtype(input_dtype))
            self.host_output = made_by(made, layer.pinned_array, output_elements, np.dtype(output_dtype))
            self.device_input = made_by(made, layer.device_buffer, self.host_input.array.nbytes)
            self.device_output = made_by(made, layer.device_buffer, self.host_output.array.nbytes)
        except BaseException:
            for thing in reversed(made):
                thing.free()
            raise
        self.nbytes = self.device_input.nbytes + self.device_output.nbytes

    def upload(self, array: np.ndarray) -> None:
        """Queue `array` host -> device through the pinned buffer (cast to the input dtype)."""
        staged = self.host_input.array[:array.size]
        staged[...] = array.reshape(-1)
        self.layer.copy_to_device(self.device_input.address, staged, self.cuda_stream)

    def download(self, shape: tuple) -> np.ndarray:
        """Queue device -> host of `shape`, wait for the CUDA stream, return a float32 copy."""
        staged = self.host_output.array[:math.prod(shape)]
        self.layer.copy_to_host(staged, self.device_output.address, self.cuda_stream)
        self.cuda_stream.synchronize()
        return staged.astype(np.float32).reshape(shape)

    def free(self) -> None:
        self.cuda_stream.synchronize()
        for buffer in (self.device_input, self.device_output, self.host_input, self.host_output, self.cuda_stream):
            buffer.free()


def made_by(made: list, make, *args):
    """make(*args), remembered in `made` so a later failure frees it."""
    thing = make(*args)
    made.append(thing)
    return thing


class Slot:
    """One execution context bound to one profile, its CUDA stream and buffers: one request at a time.

    With `manual_graphs` (full TensorRT) the host path's enqueue is captured into one CUDA graph
    per context, as trtexec keeps it: a new shape replaces the graph after a real run, and a capture
    that fails turns graphs off for this slot for good (logged once)."""

    def __init__(self, layer, make_context, profile, plan_profile: int, manifest: dict, manual_graphs: bool = False):
        """`profile` gives the shapes served; `plan_profile` the plan's profile index the context takes
        (a copy of `profile` no other slot uses). Whatever was made is freed if a later step fails."""
        self.layer, self.profile, self.plan_profile, self.hop = layer, profile, plan_profile, manifest["hop"]
        self.input_name, self.output_name = manifest["input"]["name"], manifest["output"]["name"]
        self.io = self.context = self.runtime_config = self.graph = self.graph_shape = None
        self.events = ()
        self.manual_graphs = manual_graphs
        try:
            self._make(make_context, manifest)
        except BaseException:
            self.free()
            raise

    def _make(self, make_context, manifest: dict) -> None:
        profile = self.profile
        self.io = IOBuffers(self.layer, profile.max_batch * manifest["n_mels"] * profile.max_frames,
                            profile.max_batch * profile.max_frames * self.hop,
                            manifest["input"]["dtype"], manifest["output"]["dtype"])
        self.events = (self.layer.event(), self.layer.event())  # caller's work done, our work done
        self.context, self.runtime_config = make_context()  # the config must live as long as the context
        if self.context is None:
            raise EngineError("TensorRT could not create an execution context (GPU memory full?); "
                              "free GPU memory or use fewer contexts")
        try:  # the binding raises rather than return False (pyCore.cpp: PY_ASSERT_RUNTIME_ERROR)
            accepted = self.context.set_optimization_profile_async(self.plan_profile, self.io.cuda_stream.handle)
        except RuntimeError as error:
            accepted, refusal = False, one_line(error)
        else:
            refusal = "it returned False"
        if not accepted:
            raise EngineError(f"TensorRT refused profile {profile.name!r} (index {self.plan_profile}: {refusal}); "
                              "rebuild the plan with `make engines`")
        self.io.cuda_stream.synchronize()

    def run_host(self, mel: np.ndarray) -> np.ndarray:
        """numpy in, numpy out, through the pinned and device buffers on the slot's own CUDA stream."""
        self.io.upload(mel)
        out_shape = self._bind(mel.shape, self.io.device_input.address, self.io.device_output.address)
        self._execute(tuple(mel.shape), replayable=True)
        return self.io.download(out_shape)

    def run_device(self, mel_address: int, out_address: int, shape: tuple, caller_cuda_stream, itemsizes: tuple) -> None:
        """Zero-copy: the engine reads the caller's device memory and writes `out_address`, on the
        slot's CUDA stream, after the caller's queued work and before the caller's later work. An address
        TensorRT cannot take (not 256-byte aligned) goes through the slot's own buffers."""
        cuda_stream = self.io.cuda_stream
        caller_done, ours_done = self.events
        self._drop_graph()  # this run changes the context's shape and addresses: the host graph is not replayed after it
        caller_done.record(caller_cuda_stream)
        self.layer.wait(cuda_stream, caller_done)
        in_bytes, out_bytes = math.prod(shape) * itemsizes[0], shape[0] * shape[2] * self.hop * itemsizes[1]
        bound_in, bound_out = mel_address, out_address
        if not cuda.aligned(mel_address):
            self.layer.copy_on_device(self.io.device_input.address, mel_address, in_bytes, cuda_stream)
            bound_in = self.io.device_input.address
        if not cuda.aligned(out_address):
            bound_out = self.io.device_output.address
        self._bind(shape, bound_in, bound_out)
        self._execute(shape, replayable=False)
        if bound_out != out_address:
            self.layer.copy_on_device(out_address, bound_out, out_bytes, cuda_stream)
        ours_done.record(cuda_stream)
        self.layer.wait(caller_cuda_stream, ours_done)

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
        cuda_stream = self.io.cuda_stream
        if replayable and self.manual_graphs and self.graph is not None and self.graph_shape == shape:
            self.graph.launch(cuda_stream)
            return
        self._enqueue()
        if replayable and self.manual_graphs:
            self._capture(shape)

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.io.cuda_stream.handle):
            raise EngineError("TensorRT failed to execute the engine (its message is logged above); check free GPU memory")

    def _capture(self, shape: tuple) -> None:
        """After a real run of `shape` (which flushed TensorRT's deferred shape work), record its enqueue."""
        self._drop_graph()
        try:
            cuda_stream = self.io.cuda_stream
            self.graph = self.layer.capture(cuda_stream, lambda: self.context.execute_async_v3(cuda_stream.handle))
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
        """Wait for the slot's CUDA stream, then free graph, events, context and buffers (what exists of them)."""
        if self.io is not None:
            self.io.cuda_stream.synchronize()
        self._drop_graph()
        for event in self.events:
            event.free()
        self.context = self.runtime_config = None  # the context before the memory it was bound to
        if self.io is not None:
            self.io.free()
        self.events, self.io = (), None


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
    float32 audio (numpy in, numpy out; a CUDA tensor in, a CUDA tensor out).

    close() (also at exit, and when the engine is collected unclosed) waits for every borrowed slot
    to come back before freeing anything: memory bound to an enqueue outlives it."""

    def __init__(self, manifest: dict, layer, device: int, trt_objects: tuple, slots: list, runtime_cache):
        self.manifest, self.layer, self.device = manifest, layer, device
        self._slots = slots
        self.profiles = served_profiles(manifest)
        self.sampling_rate, self.hop, self.n_mels = manifest["sampling_rate"], manifest["hop"], manifest["n_mels"]
        self.max_frames = max(p.max_frames for p in self.profiles)
        self._pools = {p.index: queue.Queue() for p in self.profiles}
        for slot in slots:
            self._pools[slot.profile.index].put(slot)
        self._lock, self._closed = threading.Lock(), False
        self._trt_objects = trt_objects
        self._release = weakref.finalize(self, _free_engine, layer, device, slots, runtime_cache, trt_objects)
        self._release.atexit = False  # at exit close() runs instead (_close_at_exit), which waits for borrowers
        self.device_memory: dict = {}

    def __call__(self, mel):
        if self._closed:
            raise RuntimeUserError(CLOSED)
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
        caller_cuda_stream = self.layer.foreign_stream(self.layer.tensor_stream(mel))
        itemsizes = (mel.element_size(), out.element_size())
        for piece in batch_pieces(batch, profile.max_batch):
            with self._slot(profile) as slot:
                slot.run_device(mel[piece].data_ptr(), out[piece].data_ptr(), tuple(mel[piece].shape), caller_cuda_stream,
                                itemsizes)
        return out.float()

    @contextlib.contextmanager
    def _slot(self, profile):
        """A slot of `profile` for one piece, with the engine's primary context current. A slot taken
        once close() began goes straight back: close() is waiting for it."""
        pool = self._pools[profile.index]
        slot = pool.get()
        if slot is _CLOSED or self._closed:
            pool.put(slot)
            raise RuntimeUserError(CLOSED)
        try:
            with self.layer.activate(self.device):
                yield slot
        finally:
            pool.put(slot)

    def stats(self) -> dict:
        return dict(self.device_memory)

    def close(self) -> None:
        """Take every slot back (waiting for threads still using one), then save the runtime cache
        and free graphs, contexts, buffers and streams with the primary context current. Safe from
        any thread, and twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        held = {index: [pool.get() for _ in range(sum(s.profile.index == index for s in self._slots))]
                for index, pool in self._pools.items()}
        try:
            self._release()
        finally:
            self._slots = self._trt_objects = None
            for pool in self._pools.values():
                pool.put(_CLOSED)
        del held

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


def _free_engine(layer, device: int, slots: list, runtime_cache, trt_objects: tuple) -> None:
    """Free what an engine made, the primary context current: the runtime cache saved first, every
    slot (each waits for its CUDA stream), then the TensorRT objects, engine last."""
    with layer.activate(device):
        try:
            if runtime_cache is not None:
                runtime_cache.save()
        finally:
            _free_slots(slots)
            if runtime_cache is not None:
                runtime_cache.release()


def _free_slots(slots: list) -> None:
    """Free every slot even when one fails to; the first failure is raised after all were tried."""
    failure = None
    for slot in slots:
        try:
            slot.free()
        except Exception as error:  # noqa: BLE001 - re-raised below, once the others are freed
            failure = failure or error
    if failure is not None:
        raise failure


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


def profile_copies(manifest: dict) -> dict:
    """The plan's profile indices grouped by the profile they copy (equal min, opt and max), keyed by
    the first of each group: the one requests are matched against."""
    groups: dict = {}
    for index, entry in enumerate(manifest["profiles"]):
        groups.setdefault(tuple(tuple(entry[k]) for k in ("min", "opt", "max")), []).append(index)
    return {indices[0]: indices for indices in groups.values()}


def served_profiles(manifest: dict) -> list:
    """One profile per distinct shape range (copies serve the same requests)."""
    copies = profile_copies(manifest)
    return [profile for profile in profiles_of(manifest) if profile.index in copies]


def _check_context_count(contexts_per_profile) -> None:
    """A whole number of at least 1, checked before anything is read or made (0 used to hang)."""
    if isinstance(contexts_per_profile, bool) or not isinstance(contexts_per_profile, int) or contexts_per_profile < 1:
        raise RuntimeUserError(f"contexts_per_profile must be a whole number of at least 1, not {contexts_per_profile!r}; "
                               "pass 1 (or more for concurrent callers)")


def _check_contexts(manifest: dict, contexts_per_profile: int) -> None:
    """N contexts of one profile run at once only on N copies of it: TensorRT requires each execution
    context in concurrent use to have its own optimization profile (NvInferRuntime.h)."""
    names = [p["name"] for p in manifest["profiles"]]
    short = [(names[first], len(indices)) for first, indices in profile_copies(manifest).items()
             if len(indices) < contexts_per_profile]
    if short:
        have = ", ".join(f"{name!r} {count}" for name, count in short)
        raise RuntimeUserError(
            f"contexts_per_profile={contexts_per_profile} needs {contexts_per_profile} copies of each profile in the plan "
            f"(TensorRT gives every context in concurrent use its own profile); the plan has {have}; list each profile "
            f"{contexts_per_profile} times in pipeline.toml and rebuild with `make engines`, or load with fewer contexts")


def _context_maker(trt, trt_engine, cache, cuda_graphs: bool, specialization: str):
    """A function making one (execution context, its runtime config). Scratch memory is allocated
    for the context's own profile (ON_PROFILE_CHANGE; STATIC would reserve the largest profile's in
    every context): through IRuntimeConfig where the surface has it (TensorRT 10.16, 11, RTX), else
    as create_execution_context's strategy argument (older TensorRT 10)."""
    strategy = trt.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE

    def make():
        if not hasattr(trt_engine, "create_runtime_config"):
            return trt_engine.create_execution_context(strategy), None
        if trt.__name__ == "tensorrt_rtx":
            config = _rtx_runtime_config(trt, trt_engine, cache, cuda_graphs, specialization)
        else:
            config = trt_engine.create_runtime_config()
        config.set_execution_context_allocation_strategy(strategy)
        return trt_engine.create_execution_context(runtime_config=config), config
    return make


def _reserved_device_memory(trt_engine, slots: list) -> int:
    """What the contexts reserve: each its own profile's scratch (ON_PROFILE_CHANGE)."""
    return sum(trt_engine.get_device_memory_size_for_profile_v2(slot.plan_profile) for slot in slots)


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
    _check_context_count(contexts_per_profile)
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
    _check_contexts(manifest, contexts_per_profile)
    is_rtx = trt.__name__ == "tensorrt_rtx"
    with layer.activate(device):
        logger = tensorrt_logger(trt, log)
        runtime = _trt_runtime(trt, logger)
        if manifest.get("version_compatible"):
            runtime.engine_host_code_allowed = True  # a version-compatible plan carries its own lean runtime
        _refuse_invalid(runtime, trt, logger, plan, plan_path, gpu)
        trt_engine = runtime.deserialize_cuda_engine(plan)
        if trt_engine is None:
            raise EngineError(f"{DISPLAY[trt.__name__]} could not load {plan_path} on {gpu.name}: "
                              f"{logger.last_error or 'no message'}; rebuild it with `make engines` for this GPU")
        _check_engine_matches(trt_engine, manifest, plan_path)
        cache = RuntimeCache(trt_engine, plan_path) if runtime_cache and is_rtx else None
        make_context = _context_maker(trt, trt_engine, cache, cuda_graphs, specialization)
        slots = _make_slots(layer, make_context, manifest, contexts_per_profile, cuda_graphs and not is_rtx)
    engine = Engine(manifest, layer, device, (logger, runtime, trt_engine), slots, cache)
    per_context = _device_memory_per_context(trt_engine)
    engine.device_memory = {"per_context": per_context, "contexts": len(slots),
                            "reserved": _reserved_device_memory(trt_engine, slots),
                            "io_buffers": sum(s.io.nbytes for s in slots)}
    log.info("%s on %s via %s %s and %s: engine device memory %.1f MiB for %d contexts (%.1f MiB each at most), "
             "I/O buffers %.1f MiB", plan_path.name, gpu.name, trt.__name__, trt.__version__, layer.name,
             engine.device_memory["reserved"] / 2**20, len(slots), per_context / 2**20,
             engine.device_memory["io_buffers"] / 2**20)
    atexit.register(_close_at_exit, weakref.ref(engine))
    return engine


def _trt_runtime(trt, logger):
    """trt.Runtime(logger); a null factory return is pybind11's TypeError, said in one line."""
    try:
        return trt.Runtime(logger)
    except TypeError as error:
        raise EngineError(f"{DISPLAY[trt.__name__]} could not create its runtime ({logger.last_error or one_line(error)}); "
                          "check the GPU, its driver and the TensorRT install (make doctor)") from None


def _make_slots(layer, make_context, manifest: dict, contexts_per_profile: int, manual_graphs: bool) -> list:
    """contexts_per_profile slots per served profile, each on its own copy of it; all freed if one fails."""
    slots: list = []
    profiles = {p.index: p for p in profiles_of(manifest)}
    try:
        for first, copies in profile_copies(manifest).items():
            for copy in copies[:contexts_per_profile]:
                slots.append(Slot(layer, make_context, profiles[first], copy, manifest, manual_graphs))
    except BaseException:
        _free_slots(slots)
        raise
    return slots


def _close_at_exit(ref) -> None:
    engine = ref()
    if engine is not None:
        engine.close()
