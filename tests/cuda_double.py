"""A host-memory double of the runtime's CUDA layer (runtime/cuda.py), for the contract tests on CPU.

"Device" memory is 256-byte aligned host memory, so the TensorRT double can read and write it by
address and run the plan's ONNX model on it. It is no looser than the layer it stands for:
- it offers every member of the layer's interface (a test checks both real layers offer the same
  ones and the double all of them; its extra members serve the tests' inspection only);
- device work needs the primary context of its device current on the thread, as the driver does;
- work is refused on destroyed streams, and copies that overrun one of its buffers fault;
- a capturing stream records work instead of running it, a graph replays what was recorded, and a
  capture is refused on a stream that is not non-blocking (the legacy stream would break it);
- work is asynchronous: each stream runs its queue on a worker thread of its own, events complete
  when their stream reaches them, copies read host memory when they run (not when queued), and
  queued work that touches freed memory fails (CUDA_ERROR_ILLEGAL_ADDRESS at the next synchronize),
  so reuse before a copy completed and frees racing an enqueue show; torch's stream, which on CPU is
  the host itself, runs in program order and blocks where the runtime makes it wait on an event.
"""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import queue
import threading

import numpy as np

from runtime.cuda import ALIGNMENT, DeviceBuffer, Graph, PinnedArray
from runtime.errors import EngineError

_handles = itertools.count(0x1000, 0x10)


class HostStream:
    """A stream whose work runs later, in order, on a worker thread of its own (as the GPU runs it
    while the host goes on): a copy reads host memory when it runs, not when it was queued, and a
    failure inside queued work surfaces at the next synchronize, as CUDA's errors do."""

    def __init__(self, layer, non_blocking: bool = True, host_ordered: bool = False):
        self.layer, self.handle, self.non_blocking = layer, next(_handles), non_blocking
        self.host_ordered = host_ordered  # torch's stream on CPU: torch runs its work on the host, in program order
        self.captured: list | None = None
        self.freed = False
        self.error: BaseException | None = None
        self._work: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None

    def run(self, operation) -> None:
        """Queue the work, or record it while the stream captures."""
        if self.freed:
            raise EngineError("work queued on a destroyed stream")
        self.layer.require_context()
        if self.captured is not None:
            self.captured.append(operation)
        elif self.host_ordered:
            operation()
        else:
            if self._worker is None:
                self._worker = threading.Thread(target=self._drain, daemon=True, name=f"stream-0x{self.handle:x}")
                self._worker.start()
            self._work.put(operation)

    def _drain(self) -> None:
        while True:
            operation = self._work.get()
            try:
                if operation is None:
                    return
                if self.error is None:
                    operation()
            except BaseException as error:  # noqa: BLE001 - kept, raised at the next synchronize
                self.error = error
            finally:
                self._work.task_done()

    def idle(self) -> bool:
        return self._work.unfinished_tasks == 0

    def synchronize(self) -> None:
        if self.captured is not None:
            raise EngineError("cudaErrorStreamCaptureUnsupported: synchronize during capture")
        self._work.join()
        if self.error is not None:
            raise EngineError(f"queued work failed on stream 0x{self.handle:x}: {self.error}")

    def free(self) -> None:
        """cuStreamDestroy returns at once; work already queued still runs, then the worker ends."""
        self.layer.require_context()
        self.freed = True
        self.layer.streams.pop(self.handle, None)
        self._work.put(None)


class HostEvent:
    """Completes when the stream it was recorded on reaches it (never recorded: complete, as in CUDA)."""

    def __init__(self, layer):
        self.layer, self.handle, self.recorded = layer, next(_handles), 0
        self.reached = threading.Event()
        self.reached.set()

    def record(self, stream) -> None:
        reached = threading.Event()
        self.reached = reached
        self.layer.streams[stream.handle].run(reached.set)
        self.recorded += 1

    def query(self) -> bool:
        return self.reached.is_set()

    def synchronize(self) -> None:
        self.reached.wait()

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
        self.torch_stream = HostStream(self, host_ordered=True)
        self.streams[self.torch_stream.handle] = self.torch_stream
        self._local = threading.local()
        self.waits: list[tuple[int, int]] = []
        self.launches = 0
        self.pinned = 0
        self.freed_spans: list[tuple[int, int]] = []  # (address, nbytes) of freed device and pinned memory
        self._keep: list = []  # freed memory stays allocated here, so late work faults in the double, not the process

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
        """Later work on `stream` waits for the event; torch's CPU stream is the host itself, so it blocks."""
        reached = event.reached
        target = self.streams[stream.handle]
        if target.host_ordered:
            reached.wait()
        target.run(reached.wait)
        self.waits.append((stream.handle, event.handle))

    # --- memory ---
    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        self.require_context()
        raw = np.zeros(max(1, nbytes) + ALIGNMENT, dtype=np.uint8)
        offset = (-raw.ctypes.data) % ALIGNMENT
        view = raw[offset:offset + max(1, nbytes)]
        address = view.ctypes.data
        self.buffers[address] = view
        return DeviceBuffer(address, nbytes, lambda: self.release(lambda: self._retire(self.buffers.pop(address))))

    def pinned_array(self, count: int, dtype) -> PinnedArray:
        self.require_context()
        self.pinned += 1
        array = np.zeros(count, dtype=dtype)
        return PinnedArray(array, lambda: self.release(lambda: self._unpin(array)))

    def _unpin(self, array) -> None:
        self.pinned -= 1
        self._retire(array)

    def _retire(self, array) -> None:
        self.freed_spans.append((array.ctypes.data, max(1, array.nbytes)))
        self._keep.append(array)

    def check_live(self, *spans) -> None:
        """At the time work runs: no (address, nbytes) touches freed memory (the driver faults there)."""
        for address, nbytes in spans:
            for start, size in self.freed_spans:
                if address < start + size and start < address + max(1, nbytes):
                    raise EngineError(f"CUDA_ERROR_ILLEGAL_ADDRESS: queued work touched freed memory at 0x{address:x}")

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
        """Reads `host` when the copy runs, not now (as an async copy from pinned memory does)."""
        self.check_span(address, host.nbytes)
        if not host.flags.c_contiguous:
            raise EngineError("cuMemcpyHtoDAsync needs contiguous host memory")
        self._queue_move(stream, address, host.ctypes.data, host.nbytes, host)

    def copy_to_host(self, host: np.ndarray, address: int, stream) -> None:
        self.check_span(address, host.nbytes)
        self._queue_move(stream, host.ctypes.data, address, host.nbytes, host)

    def copy_on_device(self, destination: int, source: int, nbytes: int, stream) -> None:
        self.check_span(destination, nbytes)
        self.check_span(source, nbytes)
        self._queue_move(stream, destination, source, nbytes)

    def _queue_move(self, stream, destination: int, source: int, nbytes: int, keep=None) -> None:
        def move(keep=keep):
            self.check_live((destination, nbytes), (source, nbytes))
            ctypes.memmove(destination, source, nbytes)
        stream.run(move)

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
