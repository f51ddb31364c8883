"""A host-memory double of the runtime's CUDA layer (runtime/cuda.py), for the contract tests on CPU.

"Device" memory is 256-byte aligned host memory, so the TensorRT double can read and write it by
address and run the plan's ONNX model on it. It is no looser than the layer it stands for:
- it offers every member of the layer's interface (a test checks both real layers offer the same
  ones and the double all of them; its extra members serve the tests' inspection only);
- device work needs the primary context of its device current on the thread, as the driver does;
- work is refused on destroyed streams, and copies that overrun one of its buffers fault;
- a capturing stream records work instead of running it, a graph replays what was recorded, and a
  capture is refused on a stream that is not non-blocking (the legacy stream would break it).
"""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import threading

import numpy as np

from runtime.cuda import ALIGNMENT, DeviceBuffer, Graph, PinnedArray
from runtime.errors import EngineError

_handles = itertools.count(0x1000, 0x10)


class HostStream:
    def __init__(self, layer, non_blocking: bool = True):
        self.layer, self.handle, self.non_blocking = layer, next(_handles), non_blocking
        self.captured: list | None = None
        self.freed = False

    def run(self, operation) -> None:
        """Do the work now, or record it while the stream captures."""
        if self.freed:
            raise EngineError("work queued on a destroyed stream")
        self.layer.require_context()
        if self.captured is not None:
            self.captured.append(operation)
        else:
            operation()

    def synchronize(self) -> None:
        if self.captured is not None:
            raise EngineError("cudaErrorStreamCaptureUnsupported: synchronize during capture")

    def free(self) -> None:
        self.layer.require_context()
        self.freed = True
        self.layer.streams.pop(self.handle, None)


class HostEvent:
    def __init__(self, layer):
        self.layer, self.handle, self.recorded = layer, next(_handles), 0

    def record(self, stream) -> None:
        self.layer.streams[stream.handle].run(lambda: None)
        self.recorded += 1

    def synchronize(self) -> None:
        return None

    def free(self) -> None:
        return None


class HostCudaLayer:
    """The CUDA layer's interface over host memory. `devices` lists (name, (major, minor)) per device;
    torch tensors count as device memory of `torch_device` (the test's stand-in for a CUDA tensor)."""

    name = "host-double"

    def __init__(self, devices=(("NVIDIA GeForce RTX 4090 (host double)", (8, 9)),), torch_device: int = 0):
        self.devices, self.torch_device = list(devices), torch_device
        self.buffers: dict[int, np.ndarray] = {}
        self.streams: dict[int, HostStream] = {}
        self.torch_stream = HostStream(self)
        self.streams[self.torch_stream.handle] = self.torch_stream
        self._local = threading.local()
        self.waits: list[tuple[int, int]] = []
        self.launches = 0
        self.pinned = 0

    # --- device and context ---
    def device_count(self) -> int:
        return len(self.devices)

    def device_properties(self, device: int):
        if not 0 <= device < len(self.devices):
            raise EngineError(f"no CUDA device {device} (this machine has {len(self.devices)}); pass a device index below that")
        return self.devices[device]

    @contextlib.contextmanager
    def activate(self, device: int):
        self.device_properties(device)
        stack = self._local.__dict__.setdefault("stack", [])
        stack.append(device)
        try:
            yield
        finally:
            stack.pop()

    def current_device(self):
        stack = getattr(self._local, "stack", [])
        return stack[-1] if stack else None

    def require_context(self) -> None:
        if self.current_device() is None:
            raise EngineError("CUDA_ERROR_INVALID_CONTEXT: no current context on this thread")

    # --- streams and events ---
    def stream(self) -> HostStream:
        self.require_context()
        stream = HostStream(self)
        self.streams[stream.handle] = stream
        return stream

    def foreign_stream(self, handle: int) -> HostStream:
        return self.streams[handle]

    def event(self) -> HostEvent:
        self.require_context()
        return HostEvent(self)

    def wait(self, stream, event) -> None:
        self.streams[stream.handle].run(lambda: None)
        self.waits.append((stream.handle, event.handle))

    # --- memory ---
    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        self.require_context()
        raw = np.zeros(max(1, nbytes) + ALIGNMENT, dtype=np.uint8)
        offset = (-raw.ctypes.data) % ALIGNMENT
        view = raw[offset:offset + max(1, nbytes)]
        address = view.ctypes.data
        self.buffers[address] = view
        return DeviceBuffer(address, nbytes, lambda: self.release(lambda: self.buffers.pop(address)))

    def pinned_array(self, count: int, dtype) -> PinnedArray:
        self.require_context()
        self.pinned += 1
        return PinnedArray(np.zeros(count, dtype=dtype), lambda: self.release(self._unpin))

    def _unpin(self) -> None:
        self.pinned -= 1

    def release(self, free) -> None:
        """Freeing memory needs the context current, as cuMemFree and cuMemFreeHost do."""
        self.require_context()
        free()

    def check_span(self, address: int, nbytes: int) -> None:
        """A span that starts in a buffer of this layer must end in it (what the driver would fault on);
        other addresses are the caller's device memory (torch tensors here), which the layer cannot see."""
        for start, array in self.buffers.items():
            if start <= address < start + array.nbytes:
                if address + nbytes > start + array.nbytes:
                    raise EngineError(f"CUDA_ERROR_ILLEGAL_ADDRESS: {nbytes} bytes at 0x{address:x} overrun a "
                                      f"{array.nbytes}-byte buffer")
                return


    def copy_to_device(self, address: int, host: np.ndarray, stream) -> None:
        self.check_span(address, host.nbytes)
        snapshot = np.ascontiguousarray(host)
        stream.run(lambda: ctypes.memmove(address, snapshot.ctypes.data, snapshot.nbytes))

    def copy_to_host(self, host: np.ndarray, address: int, stream) -> None:
        self.check_span(address, host.nbytes)
        stream.run(lambda: ctypes.memmove(host.ctypes.data, address, host.nbytes))

    def copy_on_device(self, destination: int, source: int, nbytes: int, stream) -> None:
        self.check_span(destination, nbytes)
        self.check_span(source, nbytes)
        stream.run(lambda: ctypes.memmove(destination, source, nbytes))

    # --- graphs ---
    def capture(self, stream, enqueue) -> Graph:
        self.require_context()
        if not stream.non_blocking:
            raise EngineError("cudaErrorStreamCaptureImplicit: capture on a blocking stream")
        stream.captured = []
        try:
            enqueued = enqueue()
        finally:
            recorded, stream.captured = stream.captured, None
        if not enqueued:
            raise EngineError("TensorRT refused to enqueue during CUDA graph capture")

        def launch(target):
            self.launches += 1
            for operation in recorded:
                target.run(operation)
        return Graph(launch, recorded.clear)

    # --- torch interop ---
    def tensor_device(self, tensor):
        return self.torch_device

    def tensor_stream(self, tensor) -> int:
        return self.torch_stream.handle
