"""The runtime's CUDA layer: the few driver calls an engine needs, over pycuda or NVIDIA's cuda-bindings.

Both bindings sit behind one small interface: the device's primary context (the one torch and
every CUDA library share), non-blocking streams, events, device and pinned host memory, async
copies and graph capture. The installed binding is picked automatically (pycuda first: what users
asked for), `GSV_CUDA_BINDING=pycuda|cuda-bindings` or `load_engine(..., cuda_binding=...)` forces
one. pycuda has no graph API, so its capture calls the driver library directly; cuda-bindings has
one. Nothing here imports torch.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from runtime.errors import EngineError, RuntimeUserError, one_line

BINDINGS = ("pycuda", "cuda-bindings")
BINDING_VARIABLE = "GSV_CUDA_BINDING"
INSTALL = {"pycuda": "pip install pycuda (compiles against the CUDA toolkit)",
           "cuda-bindings": "pip install cuda-bindings (wheels for Linux and Windows)"}
NON_BLOCKING = 1            # CU_STREAM_NON_BLOCKING: no implicit sync with the legacy default stream
CAPTURE_THREAD_LOCAL = 1    # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
EVENT_NO_TIMING = 2         # CU_EVENT_DISABLE_TIMING
ALIGNMENT = 256             # TensorRT's requirement for every tensor address
COMPUTE_CAPABILITY_MAJOR = 75  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
COMPUTE_CAPABILITY_MINOR = 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
GRAPHS_OFF = "load the engine with cuda_graphs=False if this persists"
REFUSED_IN_CAPTURE = f"TensorRT refused to enqueue during CUDA graph capture; {GRAPHS_OFF}"
_layers: Dict[str, object] = {}
_lock = threading.Lock()


def driver_library() -> ctypes.CDLL:
    """The CUDA driver library itself (the only place that names it per platform)."""
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    return ctypes.WinDLL(name) if sys.platform == "win32" else ctypes.CDLL(name)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DriverGpu:
    """One GPU as the driver lists it."""

    index: int
    name: str
    capability: Tuple[int, int]


@dataclass(frozen=True)
class DriverState:
    driver: Optional[str]   # CUDA driver API version, e.g. "12.4"; None without a driver
    gpus: List[DriverGpu]
    note: str               # why there is no driver or no GPU


def driver_state() -> DriverState:
    """The driver probe: the CUDA driver version and the visible GPUs, asked through the driver
    library itself, so it needs no binding and tells the truth on machines without a GPU."""
    try:
        lib = driver_library()
    except OSError:
        return DriverState(None, [], "no CUDA driver (its library is not found): no NVIDIA GPU usable on this machine")
    version = ctypes.c_int()
    lib.cuDriverGetVersion(ctypes.byref(version))
    driver = f"{version.value // 1000}.{version.value % 1000 // 10}"
    status = lib.cuInit(0)
    if status != 0:
        return DriverState(driver, [], f"the CUDA driver sees no usable GPU (cuInit error {status})")
    count = ctypes.c_int()
    lib.cuDeviceGetCount(ctypes.byref(count))
    return DriverState(driver, [_driver_gpu(lib, index) for index in range(count.value)], "")


def _driver_gpu(lib, index: int) -> DriverGpu:
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    lib.cuDeviceGet(ctypes.byref(device), index)
    name = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(name, len(name), device)
    lib.cuDeviceGetAttribute(ctypes.byref(major), COMPUTE_CAPABILITY_MAJOR, device)
    lib.cuDeviceGetAttribute(ctypes.byref(minor), COMPUTE_CAPABILITY_MINOR, device)
    return DriverGpu(index, name.value.decode(errors="replace"), (major.value, minor.value))


def available_bindings() -> list:
    """Installed CUDA bindings, in the order they are picked."""
    import importlib.util
    found = {"pycuda": importlib.util.find_spec("pycuda") is not None,
             "cuda-bindings": _find_cuda_bindings()}
    return [name for name in BINDINGS if found[name]]


def _find_cuda_bindings() -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec("cuda.bindings") is not None
    except ModuleNotFoundError:
        return False


def chosen_binding(requested: Optional[str] = None) -> str:
    """The binding to use: the argument, else the environment variable, else the first installed."""
    wanted = requested or os.environ.get(BINDING_VARIABLE) or None
    if wanted is not None and wanted not in BINDINGS:
        raise RuntimeUserError(f"unknown CUDA binding {wanted!r} (from {'the argument' if requested else BINDING_VARIABLE}); "
                               f"use {' or '.join(BINDINGS)}")
    installed = available_bindings()
    if wanted is None:
        if not installed:
            raise RuntimeUserError(f"no CUDA binding is installed; {INSTALL['cuda-bindings']}, or {INSTALL['pycuda']}")
        return installed[0]
    if wanted not in installed:
        raise RuntimeUserError(f"the CUDA binding {wanted} is not installed; {INSTALL[wanted]}")
    return wanted


def cuda_layer(binding: Optional[str] = None):
    """The process-wide CUDA layer of `binding` (see chosen_binding), initialised once."""
    name = chosen_binding(binding)
    with _lock:
        if name not in _layers:
            _layers[name] = PycudaLayer() if name == "pycuda" else CudaBindingsLayer()
        return _layers[name]


def aligned(address: int) -> bool:
    return address % ALIGNMENT == 0


class DeviceBuffer:
    def __init__(self, address: int, nbytes: int, release: Callable[[], None]):
        self.address, self.nbytes, self._release = address, nbytes, release

    def free(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


class PinnedArray:
    """A numpy array in page-locked host memory, so async copies really are async."""

    def __init__(self, array: np.ndarray, release: Callable[[], None]):
        self.array, self._release = array, release

    def free(self) -> None:
        if self._release is not None:
            self.array = None
            self._release()
            self._release = None


class TorchInterop:
    """Where a torch tensor lives and which stream its producer queued work on (real CUDA tensors)."""

    @staticmethod
    def tensor_device(tensor) -> Optional[int]:
        """The CUDA device index of `tensor`, or None for a tensor in host memory."""
        if not tensor.is_cuda:
            return None
        import torch
        return tensor.device.index if tensor.device.index is not None else torch.cuda.current_device()

    @staticmethod
    def tensor_stream(tensor) -> int:
        """The handle of torch's current stream on the tensor's device: the caller's stream."""
        import torch
        return int(torch.cuda.current_stream(tensor.device).cuda_stream)


# --- pycuda --------------------------------------------------------------------------------------


class PycudaLayer(TorchInterop):
    name = "pycuda"

    def __init__(self):
        try:
            import pycuda.driver as cuda
            cuda.init()
        except ImportError as error:
            raise EngineError(f"pycuda is not importable ({one_line(error)}); {INSTALL['cuda-bindings']} instead") from None
        except Exception as error:  # noqa: BLE001 - pycuda raises its own error types for a missing driver
            raise EngineError(f"the CUDA driver is not usable ({one_line(error)}); install the NVIDIA driver") from None
        self.cuda, self._contexts = cuda, {}

    def device_count(self) -> int:
        return self.cuda.Device.count()

    def device_properties(self, device: int) -> Tuple[str, Tuple[int, int]]:
        self._check_device(device)
        handle = self.cuda.Device(device)
        return handle.name(), tuple(handle.compute_capability())

    def _check_device(self, device: int) -> None:
        if not 0 <= device < self.device_count():
            raise EngineError(f"no CUDA device {device} (this machine has {self.device_count()}); pass a device index below that")

    @contextlib.contextmanager
    def activate(self, device: int) -> Iterator[None]:
        """The device's primary context is current on this thread for the block (nests with torch's)."""
        with _lock:
            if device not in self._contexts:
                self._check_device(device)
                self._contexts[device] = self.cuda.Device(device).retain_primary_context()
        self._contexts[device].push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def stream(self) -> "PycudaStream":
        return PycudaStream(self.cuda.Stream(flags=NON_BLOCKING))

    def foreign_stream(self, handle: int) -> "RawStream":
        return RawStream(handle, self)

    def event(self) -> "DriverEvent":
        """pycuda's Event has no handle to wait on from another stream, so events come from the driver."""
        return DriverEvent()

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        allocation = self.cuda.mem_alloc(max(1, nbytes))
        return DeviceBuffer(int(allocation), nbytes, allocation.free)

    def pinned_array(self, count: int, dtype) -> PinnedArray:
        array = self.cuda.pagelocked_empty(count, dtype)
        return PinnedArray(array, array.base.free)

    def copy_to_device(self, address: int, host: np.ndarray, stream) -> None:
        self.cuda.memcpy_htod_async(address, host, stream.native)

    def copy_to_host(self, host: np.ndarray, address: int, stream) -> None:
        self.cuda.memcpy_dtoh_async(host, address, stream.native)

    def copy_on_device(self, destination: int, source: int, nbytes: int, stream) -> None:
        """By handle, so it also runs on a stream pycuda does not own (the caller's torch stream)."""
        _driver_call(driver_library().cuMemcpyDtoDAsync_v2, "copy on the device", ctypes.c_uint64(destination),
                     ctypes.c_uint64(source), ctypes.c_size_t(nbytes), ctypes.c_void_p(stream.handle))

    def wait(self, stream, event) -> None:
        _driver_call(driver_library().cuStreamWaitEvent, "wait for an event", ctypes.c_void_p(stream.handle),
                     ctypes.c_void_p(event.handle), ctypes.c_uint(0))

    def capture(self, stream, enqueue: Callable[[], bool]) -> "Graph":
        """pycuda has no graph API: begin/end capture and instantiate through the driver library. The
        capture is ended and the captured graph destroyed however the enqueue ends (False, or raising)."""
        lib, native = driver_library(), ctypes.c_void_p(stream.handle)
        _driver_call(lib.cuStreamBeginCapture_v2, "begin capture", native, ctypes.c_int(CAPTURE_THREAD_LOCAL), capture=True)
        graph, executable = ctypes.c_void_p(), ctypes.c_void_p()
        try:
            try:
                enqueued = enqueue()
            finally:
                ended = lib.cuStreamEndCapture(native, ctypes.byref(graph))
            _driver_call(lambda: ended, "end capture", capture=True)
            if not enqueued:
                raise EngineError(REFUSED_IN_CAPTURE)
            _driver_call(lib.cuGraphInstantiateWithFlags, "instantiate the graph", ctypes.byref(executable), graph,
                         ctypes.c_ulonglong(0), capture=True)
        finally:
            if graph.value:
                lib.cuGraphDestroy(graph)
        return Graph(lambda s: _driver_call(lib.cuGraphLaunch, "launch the graph", executable, ctypes.c_void_p(s.handle),
                                            capture=True),
                     functools.partial(lib.cuGraphExecDestroy, executable))


class PycudaStream:
    def __init__(self, native):
        self.native, self.handle = native, int(native.handle)

    def synchronize(self) -> None:
        self.native.synchronize()

    def free(self) -> None:
        self.native = None  # pycuda destroys the stream with its last reference


class DriverEvent:
    """A timing-free CUDA event made through the driver library (pycuda's layer)."""

    def __init__(self):
        native = ctypes.c_void_p()
        _driver_call(driver_library().cuEventCreate, "create an event", ctypes.byref(native), ctypes.c_uint(EVENT_NO_TIMING))
        self.native, self.handle = native, native.value
        self._finalizer = released_on_collection(self, driver_library().cuEventDestroy_v2, native)

    def record(self, stream) -> None:
        _driver_call(driver_library().cuEventRecord, "record an event", self.native, ctypes.c_void_p(stream.handle))

    def synchronize(self) -> None:
        _driver_call(driver_library().cuEventSynchronize, "wait for an event", self.native)

    def free(self) -> None:
        if self.native is not None:
            self._finalizer.detach()
            _driver_call(driver_library().cuEventDestroy_v2, "destroy an event", self.native)
            self.native = None


def released_on_collection(owner, destroy: Callable, *args) -> weakref.finalize:
    """A raw driver handle (ctypes or cuda-bindings: neither frees on collection) destroyed when its
    owner is collected without free(); not at interpreter exit, when the process frees it anyway."""
    finalizer = weakref.finalize(owner, destroy, *args)
    finalizer.atexit = False
    return finalizer


def _driver_call(function, step: str, *args, capture: bool = False) -> None:
    """Call the driver library; a failed status is one EngineError, whose fix names cuda_graphs=False
    only for the steps of a CUDA graph (other failures are the GPU's or the driver's)."""
    status = function(*args)
    if status != 0:
        name = ctypes.c_char_p()
        driver_library().cuGetErrorName(status, ctypes.byref(name))
        raise EngineError(failure(step, (name.value or b"?").decode(), capture))


def failure(step: str, error_name: str, capture: bool) -> str:
    """The one line for a failed CUDA step, with the fix that fits it."""
    return f"CUDA {step} failed ({error_name}); {GRAPHS_OFF if capture else 'check the GPU and its driver (nvidia-smi)'}"


# --- cuda-bindings -------------------------------------------------------------------------------


class CudaBindingsLayer(TorchInterop):
    name = "cuda-bindings"

    def __init__(self):
        try:
            from cuda.bindings import driver
        except ImportError as error:
            raise EngineError(f"cuda-bindings is not importable ({one_line(error)}); {INSTALL['cuda-bindings']}") from None
        self.cu, self._contexts = driver, {}
        try:
            initialised = driver.cuInit(0)
        except RuntimeError as error:  # DynamicLibNotFoundError: no driver library to load on this machine
            raise EngineError(f"the CUDA driver is not usable ({one_line(error)}); install the NVIDIA driver") from None
        self.check(initialised, "initialise the driver")

    def check(self, result, step: str, capture: bool = False):
        """cuda-bindings returns (status, value...); raise on a failed status, return the value."""
        status, *values = result
        if int(status) != 0:
            _, name = self.cu.cuGetErrorName(status)
            raise EngineError(failure(step, (name or b"?").decode(), capture))
        return values[0] if len(values) == 1 else tuple(values) or None

    def device_count(self) -> int:
        return self.check(self.cu.cuDeviceGetCount(), "count devices")

    def device_properties(self, device: int) -> Tuple[str, Tuple[int, int]]:
        if not 0 <= device < self.device_count():
            raise EngineError(f"no CUDA device {device} (this machine has {self.device_count()}); pass a device index below that")
        handle = self.check(self.cu.cuDeviceGet(device), "open the device")
        name = self.check(self.cu.cuDeviceGetName(256, handle), "read the device name")
        attribute = self.cu.CUdevice_attribute
        major = self.check(self.cu.cuDeviceGetAttribute(attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, handle), "read")
        minor = self.check(self.cu.cuDeviceGetAttribute(attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, handle), "read")
        return name.split(b"\0", 1)[0].decode(errors="replace"), (int(major), int(minor))

    @contextlib.contextmanager
    def activate(self, device: int) -> Iterator[None]:
        with _lock:
            if device not in self._contexts:
                self.device_properties(device)
                handle = self.check(self.cu.cuDeviceGet(device), "open the device")
                self._contexts[device] = self.check(self.cu.cuDevicePrimaryCtxRetain(handle), "retain the primary context")
        self.check(self.cu.cuCtxPushCurrent(self._contexts[device]), "make the context current")
        try:
            yield
        finally:
            self.check(self.cu.cuCtxPopCurrent(), "pop the context")

    def stream(self) -> "BindingsStream":
        native = self.check(self.cu.cuStreamCreate(NON_BLOCKING), "create a stream")
        return BindingsStream(native, self)

    def foreign_stream(self, handle: int) -> "RawStream":
        return RawStream(handle, self)

    def event(self) -> "BindingsEvent":
        flags = self.cu.CUevent_flags.CU_EVENT_DISABLE_TIMING
        return BindingsEvent(self.check(self.cu.cuEventCreate(flags), "create an event"), self)

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        pointer = self.check(self.cu.cuMemAlloc(max(1, nbytes)), "allocate device memory")
        return DeviceBuffer(int(pointer), nbytes, lambda: self.check(self.cu.cuMemFree(pointer), "free device memory"))

    def pinned_array(self, count: int, dtype) -> PinnedArray:
        nbytes = max(1, count * np.dtype(dtype).itemsize)
        address = int(self.check(self.cu.cuMemHostAlloc(nbytes, 0), "allocate pinned memory"))
        raw = (ctypes.c_byte * nbytes).from_address(address)
        array = np.frombuffer(raw, dtype=np.uint8)[:count * np.dtype(dtype).itemsize].view(dtype)
        return PinnedArray(array, lambda: self.check(self.cu.cuMemFreeHost(address), "free pinned memory"))

    def copy_to_device(self, address: int, host: np.ndarray, stream) -> None:
        self.check(self.cu.cuMemcpyHtoDAsync(address, host.ctypes.data, host.nbytes, stream.handle), "copy to the device")

    def copy_to_host(self, host: np.ndarray, address: int, stream) -> None:
        self.check(self.cu.cuMemcpyDtoHAsync(host.ctypes.data, address, host.nbytes, stream.handle), "copy to the host")

    def copy_on_device(self, destination: int, source: int, nbytes: int, stream) -> None:
        self.check(self.cu.cuMemcpyDtoDAsync(destination, source, nbytes, stream.handle), "copy on the device")

    def wait(self, stream, event) -> None:
        self.check(self.cu.cuStreamWaitEvent(stream.handle, event.native, 0), "wait for an event")

    def capture(self, stream, enqueue: Callable[[], bool]) -> "Graph":
        """Capture through the binding's own graph API (thread-local mode: other threads' work is left alone)."""
        mode = self.cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
        self.check(self.cu.cuStreamBeginCapture(stream.handle, mode), "begin capture", capture=True)
        ended = None
        try:
            try:
                enqueued = enqueue()
            finally:
                ended = self.cu.cuStreamEndCapture(stream.handle)
            self.check(ended, "end capture", capture=True)
            if not enqueued:
                raise EngineError(REFUSED_IN_CAPTURE)
            executable = self.check(self.cu.cuGraphInstantiate(ended[1], 0), "instantiate the graph", capture=True)
        finally:
            if ended is not None and int(ended[0]) == 0 and ended[1] is not None and int(ended[1]):
                self.cu.cuGraphDestroy(ended[1])
        return Graph(lambda s: self.check(self.cu.cuGraphLaunch(executable, s.handle), "launch the graph", capture=True),
                     functools.partial(self.cu.cuGraphExecDestroy, executable))


class BindingsObject:
    """A stream or event of cuda-bindings: its native handle, one call that waits for it, one that frees it."""

    WAIT, DESTROY, NOUN = "", "", ""

    def __init__(self, native, layer: CudaBindingsLayer):
        self.native, self.handle, self._layer = native, int(native), layer
        self._finalizer = released_on_collection(self, getattr(layer.cu, self.DESTROY), native)

    def synchronize(self) -> None:
        self._layer.check(getattr(self._layer.cu, self.WAIT)(self.native), f"wait for a {self.NOUN}")

    def free(self) -> None:
        if self.native is not None:
            self._finalizer.detach()
            self._layer.check(getattr(self._layer.cu, self.DESTROY)(self.native), f"destroy a {self.NOUN}")
            self.native = None


class BindingsStream(BindingsObject):
    WAIT, DESTROY, NOUN = "cuStreamSynchronize", "cuStreamDestroy", "stream"


class BindingsEvent(BindingsObject):
    WAIT, DESTROY, NOUN = "cuEventSynchronize", "cuEventDestroy", "event"

    def record(self, stream) -> None:
        self._layer.check(self._layer.cu.cuEventRecord(self.native, stream.handle), "record an event")


class RawStream:
    """A stream someone else owns (torch's current stream), by handle: never synchronised or freed here."""

    def __init__(self, handle: int, layer):
        self.handle, self._layer = int(handle), layer

    def free(self) -> None:
        return None


class Graph:
    """One instantiated capture: `launch(stream)` replays it with one call."""

    def __init__(self, launch: Callable, release: Callable[[], None]):
        self._launch = launch
        self._finalizer = released_on_collection(self, release)

    def launch(self, stream) -> None:
        self._launch(stream)

    def free(self) -> None:
        self._finalizer()  # runs release once, now; nothing later
