"""The runtime's concurrency, failure paths and cleanup (issue 18), against the contract doubles.

The plans here are the one-band, hop-1 identity 'vocoder' (its audio is its mel), so every test is
fast; the doubles run their streams asynchronously, so what is freed too early or reused before a
copy ran shows up as wrong data or CUDA_ERROR_ILLEGAL_ADDRESS, as on a GPU.
"""
from __future__ import annotations

import gc
import threading
import time
import types

import numpy as np
import pytest

import runtime
from build.plan import build_plan
from runtime import cuda as cuda_module
from test_trt_contract import PROFILES, collecting_logger, identity_onnx, small_settings
from trt_double import SURFACES, install_on_cpu


@pytest.fixture(params=list(SURFACES))
def world(request, monkeypatch):
    return install_on_cpu(monkeypatch, request.param)


@pytest.fixture
def tensorrt_10(monkeypatch):
    return install_on_cpu(monkeypatch, "tensorrt-10")


def identity_plan(world, tmp_path, copies: int = 1):
    return build_plan(identity_onnx(tmp_path / "copy.onnx"), "v4", "fp32", tmp_path / "v4.fp32.plan",
                      backend=world.trt.__name__, settings=small_settings(tmp_path, PROFILES * copies))


def mel(frames: int, seed: int = 0, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 1, frames)).astype(np.float32)


def nothing_left(world) -> bool:
    return world.cuda.buffers == {} and world.cuda.pinned == 0 and set(world.cuda.streams) == {world.cuda.torch_stream.handle}


# --- row 1: one profile per context in concurrent use ----------------------------------------------


def test_two_contexts_per_profile_need_two_copies_of_it(tensorrt_10, tmp_path):
    plan = identity_plan(tensorrt_10, tmp_path)
    with pytest.raises(runtime.RuntimeUserError, match="needs 2 copies of each profile") as refused:
        runtime.load_engine(plan, contexts_per_profile=2)
    assert "\n" not in str(refused.value) and nothing_left(tensorrt_10)
    with pytest.raises(runtime.RuntimeUserError, match="at least 1"):
        runtime.load_engine(plan, contexts_per_profile=0)


def test_each_context_takes_its_own_copy_of_the_profile(world, tmp_path):
    plan = identity_plan(world, tmp_path, copies=2)
    with runtime.load_engine(plan, contexts_per_profile=2) as engine:
        assert [p.name for p in engine.profiles] == ["short", "long"]  # copies serve, they are not chosen
        taken = sorted(slot.plan_profile for slot in engine._slots)
        assert taken == [0, 1, 2, 3]
        assert sorted(slot.context.active_optimization_profile for slot in engine._slots) == taken
        errors = []

        def work(seed):
            try:
                for i in range(15):
                    x = mel(10 + (seed + i) % 40, seed * 100 + i)
                    np.testing.assert_array_equal(engine(x), x)
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)
        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors[0]
    assert world.refusals == []


def test_the_double_refuses_two_contexts_sharing_a_profile_at_once(tensorrt_10, tmp_path):
    world, trt, layer = tensorrt_10, tensorrt_10.trt, tensorrt_10.cuda
    plan = identity_plan(world, tmp_path)
    with layer.activate(0):
        engine = trt.Runtime(collecting_logger(trt)).deserialize_cuda_engine(plan.read_bytes())
        buffer = layer.device_buffer(4096)
        contexts, streams = [engine.create_execution_context() for _ in range(2)], [layer.stream(), layer.stream()]
        for context, stream in zip(contexts, streams, strict=True):
            assert context.set_optimization_profile_async(0, stream.handle)
            assert context.set_input_shape("mel", (1, 1, 8))
            assert context.set_tensor_address("mel", buffer.address) and context.set_tensor_address("audio", buffer.address)
        gate = threading.Event()
        streams[0].run(gate.wait)  # the first enqueue stays queued: in concurrent use
        assert contexts[0].execute_async_v3(streams[0].handle)
        assert not contexts[1].execute_async_v3(streams[1].handle)
        assert "share optimization profile 0" in world.refusals[-1]
        gate.set()
        streams[0].synchronize()
        assert contexts[1].execute_async_v3(streams[1].handle)  # the first one finished: no longer concurrent
        streams[1].synchronize()


# --- row 2: close while busy ------------------------------------------------------------------------


def test_close_waits_for_a_borrowed_slot_before_freeing(tensorrt_10, tmp_path):
    world = tensorrt_10
    engine = runtime.load_engine(identity_plan(world, tmp_path))
    borrowed, release = threading.Event(), threading.Event()

    def hold():
        with engine._slot(engine.profiles[0]) as slot:
            borrowed.set()
            release.wait()
            x = mel(12, 3)
            np.testing.assert_array_equal(slot.run_host(x), x)  # its buffers and stream are still there
    holder = threading.Thread(target=hold)
    holder.start()
    borrowed.wait()
    closer = threading.Thread(target=engine.close)
    closer.start()
    time.sleep(0.2)
    assert closer.is_alive() and world.cuda.buffers, "close() freed a slot another thread was using"
    with pytest.raises(runtime.RuntimeUserError, match="closed"):
        engine(mel(12))  # the closed check is seen at once, while close() waits
    release.set()
    holder.join()
    closer.join()
    assert nothing_left(world)


def test_calls_racing_close_either_finish_or_say_closed(world, tmp_path):
    engine = runtime.load_engine(identity_plan(world, tmp_path, copies=2), contexts_per_profile=2)
    unexpected, stop = [], threading.Event()

    def work(seed):
        i = 0
        while not stop.is_set():
            x = mel(10 + i % 50, seed * 1000 + i)
            try:
                np.testing.assert_array_equal(engine(x), x)
            except runtime.RuntimeUserError as error:
                if "closed" not in str(error):
                    unexpected.append(error)
                return
            except Exception as error:  # noqa: BLE001 - a freed buffer or stream shows here
                unexpected.append(error)
                return
            i += 1
    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    closers = [threading.Thread(target=engine.close) for _ in range(2)]  # twice, at once
    for thread in closers:
        thread.start()
    for thread in closers + threads:
        thread.join()
    stop.set()
    assert not unexpected, unexpected[0]
    assert nothing_left(world)


# --- rows 3, 4, 7: failure paths part-way through a load -----------------------------------------


@pytest.mark.parametrize("failing, expected", [
    ("set_optimization_profile_async", "Error in set optimization profile async."),
    ("create_execution_context", "could not create an execution context"),
    ("Runtime", "could not create its runtime"),
])
def test_a_load_that_fails_part_way_is_one_line_and_frees_what_it_made(world, tmp_path, failing, expected):
    plan = identity_plan(world, tmp_path, copies=2)
    world.failures.add(failing)
    with pytest.raises(runtime.EngineError) as refused:
        runtime.load_engine(plan, contexts_per_profile=2)
    assert expected in str(refused.value) and "\n" not in str(refused.value)
    assert nothing_left(world) and world.reserved == 0


def test_an_engine_dropped_without_close_is_freed_when_collected(tensorrt_10, tmp_path):
    engine = runtime.load_engine(identity_plan(tensorrt_10, tmp_path))
    engine(mel(20))
    assert tensorrt_10.cuda.buffers
    del engine
    gc.collect()
    assert nothing_left(tensorrt_10)


def test_graphs_and_driver_events_are_destroyed_when_collected(monkeypatch):
    released = []
    graph = cuda_module.Graph(lambda stream: None, lambda: released.append("graph"))
    del graph
    driver = FakeDriver()
    monkeypatch.setattr(cuda_module, "driver_library", lambda: driver)
    event = cuda_module.DriverEvent()
    del event
    gc.collect()
    assert released == ["graph"] and driver.calls.count("cuEventDestroy_v2") == 1


# --- rows 6, 10, 11: the CUDA layers' own failure paths (fake drivers: no GPU here) ----------------


class FakeDriver:
    """The few libcuda entry points the pycuda layer calls, as status codes; statuses to fail given."""

    def __init__(self, failing=()):
        self.calls, self.failing = [], set(failing)

    def __getattr__(self, name):
        def call(*args):
            self.calls.append(name)
            if name == "cuStreamEndCapture":
                args[1]._obj.value = 0x1234  # a graph was captured
            return 999 if name in self.failing else 0
        return call


def test_only_graph_steps_suggest_turning_graphs_off(monkeypatch):
    monkeypatch.setattr(cuda_module, "driver_library", lambda: FakeDriver({"cuStreamWaitEvent", "cuStreamBeginCapture_v2"}))
    layer = object.__new__(cuda_module.PycudaLayer)
    stream = types.SimpleNamespace(handle=1)
    with pytest.raises(runtime.EngineError) as plain:
        layer.wait(stream, types.SimpleNamespace(handle=2))
    with pytest.raises(runtime.EngineError) as graph:
        layer.capture(stream, lambda: True)
    assert "cuda_graphs" not in str(plain.value) and "driver" in str(plain.value)
    assert "cuda_graphs=False" in str(graph.value)


def test_pycuda_capture_around_an_enqueue_that_raised_destroys_the_graph(monkeypatch):
    driver = FakeDriver()
    monkeypatch.setattr(cuda_module, "driver_library", lambda: driver)
    layer = object.__new__(cuda_module.PycudaLayer)

    def enqueue():
        raise RuntimeError("the binding raised inside the capture")
    with pytest.raises(RuntimeError, match="raised inside"):
        layer.capture(types.SimpleNamespace(handle=1), enqueue)
    assert driver.calls == ["cuStreamBeginCapture_v2", "cuStreamEndCapture", "cuGraphDestroy"]


def fake_bindings(destroyed: list):
    def status(*values):
        return lambda *args: (0, *values)
    return types.SimpleNamespace(
        CUstreamCaptureMode=types.SimpleNamespace(CU_STREAM_CAPTURE_MODE_THREAD_LOCAL=1),
        cuStreamBeginCapture=status(), cuStreamEndCapture=status(0x1234), cuGraphInstantiate=status(0x5678),
        cuGraphDestroy=lambda graph: destroyed.append(graph) or (0,), cuGetErrorName=lambda s: (0, b"CUDA_ERROR_FAKE"))


@pytest.mark.parametrize("enqueue_result", ["raises", False])
def test_cuda_bindings_capture_destroys_the_graph_however_the_enqueue_ends(enqueue_result):
    destroyed = []
    layer = object.__new__(cuda_module.CudaBindingsLayer)
    layer.cu = fake_bindings(destroyed)

    def enqueue():
        if enqueue_result == "raises":
            raise RuntimeError("the binding raised inside the capture")
        return enqueue_result
    with pytest.raises((RuntimeError, runtime.EngineError)):
        layer.capture(types.SimpleNamespace(handle=1), enqueue)
    assert destroyed == [0x1234]


def test_cuda_bindings_without_a_driver_is_one_line(monkeypatch):
    class DynamicLibNotFoundError(RuntimeError):  # what cuda-bindings 13 raises at cuInit with no libcuda
        pass

    def no_driver(flags):
        raise DynamicLibNotFoundError("Failure finding \"libcuda.so\": libcuda.so.1: cannot open shared object file")
    driver = types.SimpleNamespace(cuInit=no_driver)
    bindings = types.ModuleType("cuda.bindings")
    bindings.driver = driver
    package = types.ModuleType("cuda")
    package.bindings = bindings
    monkeypatch.setitem(__import__("sys").modules, "cuda", package)
    monkeypatch.setitem(__import__("sys").modules, "cuda.bindings", bindings)
    monkeypatch.setitem(__import__("sys").modules, "cuda.bindings.driver", driver)
    with pytest.raises(runtime.EngineError, match="CUDA driver is not usable.*install the NVIDIA driver") as refused:
        cuda_module.CudaBindingsLayer()
    assert "\n" not in str(refused.value)


# --- the doubles themselves: asynchronous streams, validity, GPU rules, failure paths -----------------


def test_host_streams_run_later_so_reuse_and_early_free_show(tensorrt_10):
    layer = tensorrt_10.cuda
    with layer.activate(0):
        stream, buffer = layer.stream(), layer.device_buffer(16)
        host = np.arange(4, dtype=np.float32)
        gate = threading.Event()
        stream.run(gate.wait)
        layer.copy_to_device(buffer.address, host, stream)
        host[...] = 7  # reused before the copy ran: the copy reads it when it runs
        gate.set()
        stream.synchronize()
        assert (layer.buffers[buffer.address].view(np.float32) == 7).all()
        stream.run(gate.wait)
        gate.clear()
        layer.copy_to_device(buffer.address, host, stream)
        buffer.free()  # freed with a copy still queued
        gate.set()
        with pytest.raises(runtime.EngineError, match="ILLEGAL_ADDRESS"):
            stream.synchronize()


def test_engine_validity_diagnostics_decode_the_real_bits(monkeypatch, tmp_path):
    world = install_on_cpu(monkeypatch, "tensorrt_rtx-1")
    plan = identity_plan(world, tmp_path)
    bits = world.trt.EngineInvalidityDiagnostics
    assert (int(bits.CUDA_ERROR), int(bits.UNSUPPORTED_CC)) == (64, 2)  # the real values, from the module
    world.validity = ("INVALID", int(bits.CUDA_ERROR) | int(bits.OLD_CUDA_DRIVER))
    with pytest.raises(runtime.EngineError, match="judges .* invalid .*CUDA_ERROR, OLD_CUDA_DRIVER"):
        runtime.load_engine(plan)
    world.validity = ("INVALID", 0)  # what the real call answers on a machine without a GPU
    with pytest.raises(runtime.EngineError, match="no reason given"):
        runtime.load_engine(plan)
    assert nothing_left(world)


def test_deserialize_checks_the_gpu_and_the_runtime_cache_needs_a_context(world, tmp_path):
    trt, layer = world.trt, world.cuda
    plan = identity_plan(world, tmp_path).read_bytes()
    layer.devices.append(("NVIDIA GeForce RTX 2080 (host double)", (7, 5)))
    with layer.activate(len(layer.devices) - 1):  # another GPU than the plan was built for
        assert trt.Runtime(collecting_logger(trt)).deserialize_cuda_engine(plan) is None
    if world.surface != "tensorrt_rtx-1":
        return
    with layer.activate(0):
        cache = trt.Runtime(collecting_logger(trt)).deserialize_cuda_engine(plan).create_runtime_config().create_runtime_cache()
    with pytest.raises(runtime.EngineError, match="INVALID_CONTEXT"):
        cache.serialize()


def test_network_creation_flags_are_checked(world):
    trt = world.trt
    builder = trt.Builder(collecting_logger(trt))
    assert builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) is not None
    assert builder.create_network(1 << 20) is None
    world.failures.add("Builder")
    with pytest.raises(TypeError, match="factory function returned nullptr"):
        trt.Builder(collecting_logger(trt))

