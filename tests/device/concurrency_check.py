"""The runtime's concurrency and cleanup on a real GPU, with each CUDA binding (issue 18, deliverable 3).

No engine can execute on the GPU machine (TensorRT-RTX refuses its plans there, full TensorRT is
not installable), so TensorRT is the contract double of tests/trt_double.py (the tensorrt-10
surface) over the real CUDA layer: an enqueue is a device-side copy on the slot's stream, and the
double refuses two contexts sharing a profile while one still has work queued (checked with
cuEventQuery). Everything else is real: primary context, streams, events, pinned and device
memory, async copies, graph capture and replay. Checks, per binding:

1. six threads on one engine with contexts_per_profile=3 (three copies of each profile);
2. close() from another thread while four threads are calling: each call is exact or says closed;
3. 10,000 calls (host path, shapes cycling so CUDA graphs are recaptured, every 10th zero-copy from
   a torch tensor) with the device memory in use (cuMemGetInfo) sampled: it must stay flat;
4. a capture that fails inside (a synchronize on the capturing stream): afterwards the stream is
   not capturing and works, and a new capture succeeds (the open question on the error state).

`python3 tests/device/concurrency_check.py --out DIR` from the repository root; writes
DIR/concurrency.json and prints a report; exit status 1 if a check failed.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

CALLS = 10_000
SAMPLE_EVERY = 500


def install_world(binding: str, monkeypatch, tmp: Path):
    """The tensorrt-10 double over the real layer of `binding`, and an identity plan with three copies of each profile."""
    from build import doctor
    from build.plan import build_plan
    from runtime import cuda as cuda_module
    from test_trt_contract import PROFILES, identity_onnx, small_settings
    from trt_double import DeviceWorld, install

    if binding == "host-double":  # a dry run of this script on a machine without a GPU
        from cuda_double import HostCudaLayer
        from trt_double import World
        layer = HostCudaLayer()
        world = World(layer)
    else:
        layer = cuda_module.cuda_layer(binding)
        world = DeviceWorld(layer)
    world.trt = install(monkeypatch, "tensorrt-10", world)
    monkeypatch.setattr(cuda_module, "cuda_layer", lambda binding=None: layer)
    name, cc = layer.device_properties(0)
    monkeypatch.setattr(doctor, "cuda_state", lambda: doctor.CudaState("-", [doctor.Gpu(0, name, cc)], ""))
    world.plan = build_plan(identity_onnx(tmp / "copy.onnx"), "v4", "fp32", tmp / "v4.fp32.plan",
                            backend="tensorrt", settings=small_settings(tmp, PROFILES * 3))
    return world, layer


def used_device_bytes(layer) -> int:
    """Device memory in use on device 0 (total - free), the primary context current."""
    from runtime.cuda import driver_library
    if layer.name == "host-double":
        return 0
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    with layer.activate(0):
        assert driver_library().cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)) == 0
    return total.value - free.value


def mel(frames: int, seed: int, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 1, frames)).astype(np.float32)


def threads_on_one_engine(world) -> dict:
    import runtime
    errors = []
    with runtime.load_engine(world.plan, contexts_per_profile=3) as engine:
        profiles = sorted(slot.context.active_optimization_profile for slot in engine._slots)

        def work(seed):
            try:
                for i in range(200):
                    x = mel(8 + (seed * 7 + i) % 120, seed * 1000 + i, batch=1 + i % 2)
                    np.testing.assert_array_equal(engine(x), x)
            except Exception as error:  # noqa: BLE001 - reported
                errors.append(repr(error))
        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
    assert profiles == list(range(6)), profiles
    assert not errors, errors[:3]
    assert world.refusals == [], world.refusals[:3]
    return {"threads": 6, "calls": 1200, "contexts": 6, "context_profiles": profiles, "seconds": round(seconds, 3)}


def close_while_busy(world) -> dict:
    import runtime
    engine = runtime.load_engine(world.plan, contexts_per_profile=3)
    counts, unexpected = {"exact": 0, "closed": 0}, []
    lock = threading.Lock()

    def work(seed):
        for i in range(100_000):
            x = mel(8 + i % 100, seed * 100_000 + i)
            try:
                np.testing.assert_array_equal(engine(x), x)
                with lock:
                    counts["exact"] += 1
            except runtime.RuntimeUserError as error:
                key = "closed" if "closed" in str(error) else "other"
                with lock:
                    counts[key] = counts.get(key, 0) + 1
                    if key == "other":
                        unexpected.append(repr(error))
                return
            except Exception as error:  # noqa: BLE001 - a freed stream or buffer shows here
                unexpected.append(repr(error))
                return
    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    closers = [threading.Thread(target=engine.close) for _ in range(2)]
    for thread in closers:
        thread.start()
    for thread in closers + threads:
        thread.join()
    assert not unexpected, unexpected[:3]
    assert counts["closed"] == 4 and counts["exact"] > 0, counts
    return counts


def many_calls_flat_memory(world, layer, calls: int = CALLS) -> dict:
    import torch

    import runtime
    samples = []
    on_gpu = layer.name != "host-double"
    if not on_gpu:
        torch.cuda.synchronize = lambda: None
    with runtime.load_engine(world.plan, contexts_per_profile=1, cuda_graphs=True) as engine:
        for i in range(50):  # warm: every shape of the cycle once, torch's CUDA state and allocator too
            engine(mel(8 + i % 25, i))
            if on_gpu:
                engine(torch.randn((1, 1, 8 + i % 25), device="cuda"))
        torch.cuda.synchronize()
        baseline = used_device_bytes(layer)
        start = time.perf_counter()
        for i in range(calls):
            frames = 8 + i % 25
            if i % 10 == 9 and on_gpu:
                x = torch.randn((1, 1, frames), device="cuda")
                assert torch.equal(engine(x), x)
            else:
                x = mel(frames, i)
                np.testing.assert_array_equal(engine(x), x)
            if (i + 1) % SAMPLE_EVERY == 0:
                torch.cuda.synchronize()
                samples.append(used_device_bytes(layer) - baseline)
        seconds = time.perf_counter() - start
        graphs = gpu_graph_launches(engine)
    after_close = used_device_bytes(layer) - baseline
    assert world.refusals == [], world.refusals[:3]
    assert max(abs(s) for s in samples) <= 2 * 2**20, samples  # flat within 2 MiB (driver bookkeeping)
    return {"calls": calls, "seconds": round(seconds, 2), "device_bytes_vs_warm_baseline_every_500": samples,
            "max_growth_bytes": max(samples), "after_close_bytes": after_close, "slots_with_graph": graphs}


def gpu_graph_launches(engine) -> int:
    return sum(slot.graph is not None for slot in engine._slots)


def failed_capture_leaves_the_stream_usable(layer) -> dict:
    from runtime.cuda import driver_library
    from runtime.errors import EngineError
    lib = driver_library()
    with layer.activate(0):
        stream = layer.stream()
        a, b = layer.device_buffer(1024), layer.device_buffer(1024)
        raised = None
        try:
            layer.capture(stream, lambda: stream.synchronize() or True)  # not permitted while capturing
        except Exception as error:  # noqa: BLE001 - the binding's own error type or an EngineError
            raised = f"{type(error).__name__}: {error}"
        status = ctypes.c_int()
        assert lib.cuStreamIsCapturing(ctypes.c_void_p(stream.handle), ctypes.byref(status)) == 0
        host = np.arange(256, dtype=np.float32)
        pinned = layer.pinned_array(256, np.float32)
        pinned.array[...] = host
        layer.copy_to_device(a.address, pinned.array, stream)
        layer.copy_on_device(b.address, a.address, 1024, stream)
        pinned.array[...] = 0
        layer.copy_to_host(pinned.array, b.address, stream)
        stream.synchronize()
        copies_ok = bool(np.array_equal(pinned.array, host))
        graph = layer.capture(stream, lambda: layer.copy_on_device(a.address, b.address, 1024, stream) or True)
        graph.launch(stream)
        stream.synchronize()
        graph.free()
        for thing in (pinned, a, b, stream):
            thing.free()
    assert raised is not None and status.value == 0 and copies_ok
    return {"capture_error": raised.splitlines()[0][:300], "capturing_after": status.value,
            "copies_after_exact": copies_ok, "new_capture_and_replay": "ok", "engine_error": EngineError.__name__}


def run_binding(binding: str, calls: int = CALLS) -> dict:
    from _pytest.monkeypatch import MonkeyPatch
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        monkeypatch = MonkeyPatch()
        try:
            world, layer = install_world(binding, monkeypatch, Path(tmp))
            report["device"] = layer.device_properties(0)[0]
            for name, check in (("threads_on_one_engine", lambda: threads_on_one_engine(world)),
                                ("close_while_busy", lambda: close_while_busy(world)),
                                ("many_calls_flat_memory", lambda: many_calls_flat_memory(world, layer, calls)),
                                ("failed_capture", lambda: failed_capture_leaves_the_stream_usable(layer))):
                if binding == "host-double" and name == "failed_capture":
                    continue
                world.refusals.clear()
                try:
                    report[name] = {"ok": True, **check()}
                except Exception:  # noqa: BLE001 - one check's failure is reported, the others still run
                    report[name] = {"ok": False, "error": traceback.format_exc(limit=6)}
                print(f"{binding} {name}: {json.dumps(report[name])}", flush=True)
        finally:
            monkeypatch.undo()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--host-double", action="store_true", help="dry run on CPU over the host CUDA double")
    args = parser.parse_args()
    import runtime.cuda as cuda_module
    bindings = ["host-double"] if args.host_double else cuda_module.BINDINGS
    results = {binding: run_binding(binding, 1000 if args.host_double else CALLS) for binding in bindings}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "concurrency.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    failed = [f"{b}/{n}" for b, r in results.items() for n, c in r.items() if isinstance(c, dict) and not c["ok"]]
    print("FAILED: " + ", ".join(failed) if failed else "all checks passed with both bindings")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
