"""Contract doubles of TensorRT 10, TensorRT 11 and TensorRT-RTX 1.x, built from the API surfaces in
tests/trt_api/ (extracted from NVIDIA's pybind sources and the installed module). Product code never
imports this file; tests put a double in sys.modules under the real module's name.

A double is no looser than the API it stands for:
- members: each class has exactly its surface's members; anything else raises AttributeError, a
  member the double does not model raises NotImplementedError, and only settable properties can
  be assigned;
- return values: every call that returns a bool in TensorRT returns False on misuse, as TensorRT
  does, and logs the error through the user's ILogger;
- contracts the runtime relies on: tensor addresses 256-byte aligned; `set_input_shape` inside the
  active profile before shapes are read; every I/O address set before `execute_async_v3`; a CUDA
  context current for device work; version-compatible plans load only with
  `engine_host_code_allowed`; full TensorRT captures an enqueue only after a real run of that shape
  (deferred shape work), and TensorRT-RTX refuses capture by hand unless the plan was built with
  REQUIRE_USER_ALLOCATION (its built-in whole-graph strategy needs nothing);
- where the binding raises, the double raises the same (`set_optimization_profile_async`:
  RuntimeError; a null `Runtime` or `Builder`: pybind11's TypeError); two contexts sharing a profile
  while one still has work queued are refused (undefined behaviour in TensorRT); the TensorRT-RTX
  runtime cache needs a current context; deserialization checks the GPU against the plan's targets
  or build GPU and hardware compatibility, and version-compatible plans against the runtime's
  version; network creation flags must be known bits; enum values are the real ones;
- failure paths can be produced: `world.failures` ("Runtime", "Builder", "create_execution_context",
  "set_optimization_profile_async") and `world.validity` (what get_engine_validity answers).
Execution runs the plan's ONNX model through ONNX Runtime on the CUDA double's host memory, so
tests compare real audio; a `device_executor` replaces that on a GPU (host work cannot be captured).
"""
from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import sys
import types
import weakref
from pathlib import Path

import numpy as np

API = Path(__file__).resolve().parent / "trt_api"
SURFACES = {"tensorrt-10": ("tensorrt", "tensorrt-10.json"), "tensorrt-11": ("tensorrt", "tensorrt-11.json"),
            "tensorrt_rtx-1": ("tensorrt_rtx", "tensorrt_rtx-1.json")}
ALIGNMENT = 256


def load_surface(name: str) -> dict:
    return json.loads((API / SURFACES[name][1]).read_text(encoding="utf-8"))


def member_names(surface: dict, cls: str) -> set:
    return set(surface["classes"].get(cls, {}))


# --- strictness --------------------------------------------------------------------------------


def _defined_by_user(cls, name: str) -> bool:
    """A Python subclass of a double (a user's ILogger) may add members of its own, as pybind allows."""
    for klass in cls.__mro__:
        if "_members" in klass.__dict__:  # reached the double itself
            return False
        if name in klass.__dict__:
            return True
    return False


class _StrictMeta(type):
    """Class-level attribute access (trt.ILogger.ERROR) is held to the surface too."""

    def __getattribute__(cls, name):
        if not name.startswith("_"):
            surface = type.__getattribute__(cls, "_members")
            if surface is not None and name not in surface and not _defined_by_user(cls, name):
                raise AttributeError(f"{type.__getattribute__(cls, '_surface_name')}: {cls.__name__} has no attribute {name!r}")
        return type.__getattribute__(cls, name)


class Strict(metaclass=_StrictMeta):
    """Base of every double class: members exactly the surface's."""

    _members: set | None = None
    _settable: set = set()
    _surface_name = ""

    def __getattribute__(self, name):
        if name.startswith("_"):
            return object.__getattribute__(self, name)
        cls = type(self)
        own = object.__getattribute__(self, "__dict__")
        if cls._members is not None and name not in cls._members and name not in own and not _defined_by_user(cls, name):
            raise AttributeError(f"{cls._surface_name}: {cls.__name__} has no attribute {name!r}")
        try:
            return object.__getattribute__(self, name)
        except AttributeError:
            raise NotImplementedError(f"the contract double does not model {cls.__name__}.{name}") from None

    def __setattr__(self, name, value):
        cls = type(self)
        user_subclass = "_members" not in cls.__dict__
        if not name.startswith("_") and name not in cls._settable and not user_subclass:
            raise AttributeError(f"{cls._surface_name}: {cls.__name__}.{name} cannot be set")
        object.__setattr__(self, name, value)


def _bind(cls, surface: dict, surface_name: str, public_name: str):
    """A subclass of `cls` held to `public_name`'s members in `surface`."""
    members = surface["classes"][public_name]
    settable = {name for name, info in members.items() if info.get("kind") == "property"}
    return _StrictMeta(public_name, (cls, Strict), {"_members": set(members), "_settable": settable,
                                             "_surface_name": surface_name, "__module__": __name__})


def _optional(cls, surface: dict, surface_name: str, public_name: str):
    """The bound class where the surface has it, else None (e.g. IRuntimeCache outside TensorRT-RTX)."""
    return _bind(cls, surface, surface_name, public_name) if public_name in surface["classes"] else None


# --- shared state ------------------------------------------------------------------------------


class World:
    """What the double module knows beyond the API: the CUDA layer (the host double on CPU, a real
    one on a GPU), how an enqueue executes, and counters the tests read."""

    def __init__(self, cuda, executor=None):
        self.cuda = cuda
        self.executor = executor or host_onnxruntime_executor
        self.whole_graph_replays = 0
        self.enqueues = 0
        self.refusals: list[str] = []  # every False TensorRT returned, with its message
        self.failures: set[str] = set()  # calls made to fail as the real ones can: "Runtime", "Builder",
        # "create_execution_context" (None), "set_optimization_profile_async" (raises)
        self.validity: tuple | None = None  # (EngineValidity name, diagnostics) get_engine_validity reports
        self.reserved = 0  # device memory the live contexts hold (the double's model, per profile)

    def current_cc(self) -> tuple:
        """The compute capability of the GPU whose context is current (the one a plan is loaded on)."""
        return tuple(self.cuda.device_properties(self.cuda.current_device() or 0)[1])

    def mark(self, stream_handle: int):
        """A marker of what is queued on the stream now: `.done()` once the stream got past it."""
        event = self.cuda.event()
        event.record(self.cuda.foreign_stream(int(stream_handle)))
        return event

    def require_context(self) -> None:
        self.cuda.require_context()

    def is_capturing(self, stream_handle: int) -> bool:
        stream = self.cuda.streams.get(int(stream_handle))
        return stream is not None and stream.captured is not None


class DeviceWorld(World):
    """The same double over a real CUDA layer on a GPU: the driver itself says whether a context is
    current and whether a stream is capturing; enqueues copy on the device."""

    def __init__(self, cuda):
        super().__init__(cuda, device_copy_executor)
        from runtime.cuda import driver_library
        self.driver = driver_library()

    def require_context(self) -> None:
        context = ctypes.c_void_p()
        if self.driver.cuCtxGetCurrent(ctypes.byref(context)) != 0 or not context.value:
            raise RuntimeError("CUDA_ERROR_INVALID_CONTEXT: no current context on this thread")

    def current_cc(self) -> tuple:
        return tuple(self.cuda.device_properties(0)[1])

    def mark(self, stream_handle: int):
        event = self.cuda.event()
        event.record(self.cuda.foreign_stream(int(stream_handle)))
        driver = self.driver
        event.query = lambda: driver.cuEventQuery(ctypes.c_void_p(event.handle)) == 0
        return event

    def is_capturing(self, stream_handle: int) -> bool:
        status = ctypes.c_int()
        if self.driver.cuStreamIsCapturing(ctypes.c_void_p(int(stream_handle)), ctypes.byref(status)) != 0:
            raise RuntimeError(f"cuStreamIsCapturing failed on stream 0x{int(stream_handle):x}")
        return status.value == 1  # CU_STREAM_CAPTURE_STATUS_ACTIVE


def host_onnxruntime_executor(world: World, plan: dict, shape, source: int, target: int, stream_handle: int) -> None:
    """CPU execution: the plan's ONNX model in ONNX Runtime, on the host double's memory, queued on the stream."""
    stream = world.cuda.streams.get(int(stream_handle))
    if stream is None:
        raise ValueError(f"stream 0x{int(stream_handle):x} is not a live stream")
    out_shape = (shape[0], 1, shape[2] * plan["hop"])

    def run():
        world.cuda.check_live((source, 1), (target, 1))
        mel = _view(source, shape, plan["dtypes"][0]).copy()
        (audio,) = _session(plan["onnx"]).run(None, {plan["inputs"][0]: mel})
        _view(target, out_shape, plan["dtypes"][1])[...] = audio.reshape(out_shape)
    stream.run(run)


def device_copy_executor(world: World, plan: dict, shape, source: int, target: int, stream_handle: int) -> None:
    """GPU execution for plans of one band and hop 1: the mel copied to the audio on the device, on the
    given stream, so CUDA graph capture records it (host work would break a capture)."""
    nbytes = int(np.prod(shape)) * np.dtype(plan["dtypes"][0]).itemsize
    world.cuda.copy_on_device(target, source, nbytes, world.cuda.foreign_stream(int(stream_handle)))


def _session(onnx_path: str):
    from pipeline.onnx_tools import cpu_session
    if onnx_path not in _sessions:
        _sessions[onnx_path] = cpu_session(Path(onnx_path))
    return _sessions[onnx_path]


_sessions: dict = {}


def _view(address: int, shape, dtype) -> np.ndarray:
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.ctypeslib.as_array((ctypes.c_uint8 * count).from_address(address))
    return raw.view(dtype).reshape(shape)


# --- the module ----------------------------------------------------------------------------------


def make_module(surface_name: str, world: World, version: str | None = None) -> types.ModuleType:
    """A module standing for the surface's TensorRT, bound to `world` (CUDA double, executor)."""
    surface = load_surface(surface_name)
    module_name = SURFACES[surface_name][0]
    module = types.ModuleType(module_name)
    module.__spec__ = importlib.machinery.ModuleSpec(module_name, None)  # importlib.util.find_spec sees it
    module.__version__ = version or surface["version"]
    module._world, module._surface = world, surface
    is_rtx = module_name == "tensorrt_rtx"

    def enum_of(name):
        """The surface's enum with the real integer values (from the headers or the installed module)."""
        values = {v: info["value"] for v, info in surface["classes"].get(name, {}).items() if info.get("kind") == "enum_value"}
        return enum.IntEnum(name, values) if values else None

    for name in surface["classes"]:
        made = enum_of(name)
        if made is not None and "." not in name:
            setattr(module, name, made)

    def log(logger, message):
        logger.log(module.ILogger.Severity.ERROR if hasattr(module.ILogger, "Severity") else 1, message)

    # ---- logging and progress ----
    class _ILogger:
        def __init__(self, *args):
            pass

    ILogger = _bind(_ILogger, surface, surface_name, "ILogger")
    severity = enum_of("ILogger.Severity")
    if severity is not None:
        type.__setattr__(ILogger, "Severity", severity)
        for value in severity:
            if value.name in ILogger._members:
                type.__setattr__(ILogger, value.name, value)
    module.ILogger = ILogger
    module.IProgressMonitor = _bind(type("_IProgressMonitor", (), {"__init__": lambda self, *a: None}), surface,
                                    surface_name, "IProgressMonitor")

    # ---- plans ----
    class _IHostMemory(bytes):
        pass

    IHostMemory = _bind(_IHostMemory, surface, surface_name, "IHostMemory")

    class _IOptimizationProfile:
        def __init__(self):
            self._shapes = {}

        def set_shape(self, name, min, opt, max):
            self._shapes[name] = [list(min), list(opt), list(max)]

    IOptimizationProfile = _bind(_IOptimizationProfile, surface, surface_name, "IOptimizationProfile")

    class _ITimingCache:
        def __init__(self, data=b""):
            self._data = bytes(data)

        def serialize(self):
            return IHostMemory(self._data or b"timing-cache")

    ITimingCache = _bind(_ITimingCache, surface, surface_name, "ITimingCache")

    class _IBuilderConfig:
        def __init__(self):
            object.__setattr__(self, "_profiles", [])
            object.__setattr__(self, "_flags", set())
            object.__setattr__(self, "_targets", {})
            object.__setattr__(self, "_pools", {})
            object.__setattr__(self, "_timing", None)
            for name in self._settable:
                object.__setattr__(self, name, 0 if name == "num_compute_capabilities" else None)

        def set_memory_pool_limit(self, pool, size):
            self._pools[pool] = size

        def add_optimization_profile(self, profile):
            for low, opt, high in profile._shapes.values():
                if not all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)):
                    return -1
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def set_flag(self, flag):
            self._flags.add(flag)

        def set_compute_capability(self, capability, index):
            if not 0 <= index < (self.num_compute_capabilities or 0):
                return False
            self._targets[index] = capability
            return True

        def create_timing_cache(self, data):
            return ITimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            object.__setattr__(self, "_timing", cache)
            return True

        def get_timing_cache(self):
            return self._timing

    module.IBuilderConfig = IBuilderConfig = _bind(_IBuilderConfig, surface, surface_name, "IBuilderConfig")

    class _INetworkDefinition:
        def __init__(self, flags):
            self._flags, self._onnx = flags, None

    INetworkDefinition = _bind(_INetworkDefinition, surface, surface_name, "INetworkDefinition")

    class _ParserError:
        def __init__(self, text):
            self._text = text

        def desc(self):
            return self._text

        def node(self):
            return -1

    ParserError = _optional(_ParserError, surface, surface_name, "ParserError") or _ParserError

    class _OnnxParser:
        def __init__(self, network, logger):
            self._network, self._logger, self._errors = network, logger, []

        def parse_from_file(self, path):
            import onnx
            try:
                model = onnx.load(str(path), load_external_data=False)
            except Exception as error:  # noqa: BLE001 - the parser reports any unreadable file as False
                self._errors.append(ParserError(f"could not parse {path}: {error}"))
                return False
            metadata = {entry.key: entry.value for entry in model.metadata_props}
            self._network._onnx = {"path": str(Path(path).resolve()), "hop": int(metadata.get("hop", 1)),
                                   "inputs": [i.name for i in model.graph.input],
                                   "outputs": [o.name for o in model.graph.output],
                                   "dtypes": [onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
                                              for v in (model.graph.input[0], model.graph.output[0])]}
            return True

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, index):
            return self._errors[index]

    module.OnnxParser = _bind(_OnnxParser, surface, surface_name, "OnnxParser")

    class _Builder:
        def __init__(self, logger):
            if "Builder" in world.failures:  # createInferBuilder returned null
                raise TypeError("pybind11::init(): factory function returned nullptr")
            self._logger = logger

        def create_network(self, flags=0):
            known = sum(1 << int(v) for v in module.NetworkDefinitionCreationFlag)
            if int(flags) & ~known:
                log(self._logger, f"network creation flags 0x{int(flags):x} hold bits no NetworkDefinitionCreationFlag has")
                return None
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            problem = _build_problem(network, config)
            if problem:
                log(self._logger, problem)
                return None
            flags = {flag.name for flag in config._flags}
            plan = {"double": module_name, "version": module.__version__, "onnx": network._onnx["path"],
                    "inputs": network._onnx["inputs"], "outputs": network._onnx["outputs"],
                    "hop": network._onnx["hop"], "dtypes": network._onnx["dtypes"],
                    "profiles": [p._shapes[network._onnx["inputs"][0]] for p in config._profiles],
                    "version_compatible": "VERSION_COMPATIBLE" in flags,
                    "require_user_allocation": "REQUIRE_USER_ALLOCATION" in flags,
                    "targets": [c.name for _, c in sorted(config._targets.items())],
                    "build_cc": list(world.current_cc()),
                    "hardware": getattr(config.hardware_compatibility_level, "name", None) or "NONE"}
            return IHostMemory(json.dumps(plan).encode())

    def _build_problem(network, config):
        if network._onnx is None:
            return "the network is empty (the ONNX parser did not run)"
        if not config._profiles:
            return "a network with dynamic inputs needs at least one optimization profile"
        if any(network._onnx["inputs"][0] not in p._shapes for p in config._profiles):
            return "an optimization profile lacks the shape of an input"
        if is_rtx and len(config._targets) != (config.num_compute_capabilities or 0):
            return "set_compute_capability was not called for every announced compute capability"
        return None

    module.Builder = _bind(_Builder, surface, surface_name, "Builder")

    # ---- running ----
    class _IRuntimeCache:
        def __init__(self):
            self._blob = b""

        def serialize(self):
            world.require_context()  # "a current CUDA context must be present" (the binding's docstring)
            return IHostMemory(b"runtime-cache:" + self._blob)

        def deserialize(self, blob):
            world.require_context()
            data = bytes(blob)
            if not data.startswith(b"runtime-cache:"):
                return False
            self._blob = data[len(b"runtime-cache:"):]
            return True

    IRuntimeCache = _optional(_IRuntimeCache, surface, surface_name, "IRuntimeCache")

    class _IRuntimeConfig:
        def __init__(self):
            object.__setattr__(self, "_cache", None)
            object.__setattr__(self, "_strategy", module.ExecutionContextAllocationStrategy.STATIC)
            for name in self._settable:
                object.__setattr__(self, name, None)
            if "cuda_graph_strategy" in self._settable:
                object.__setattr__(self, "cuda_graph_strategy", module.CudaGraphStrategy.DISABLED)

        def create_runtime_cache(self):
            return IRuntimeCache()

        def set_runtime_cache(self, cache):
            object.__setattr__(self, "_cache", cache)
            return True

        def get_runtime_cache(self):
            return self._cache

        def set_execution_context_allocation_strategy(self, strategy=None):
            object.__setattr__(self, "_strategy", strategy or module.ExecutionContextAllocationStrategy.STATIC)

        def get_execution_context_allocation_strategy(self):
            return self._strategy

    IRuntimeConfig = _optional(_IRuntimeConfig, surface, surface_name, "IRuntimeConfig")

    class _IExecutionContext:
        def __init__(self, engine, config, strategy):
            self._engine, self._config = engine, config
            self._profile, self._shape, self._addresses = 0, None, {}
            self._last_run_shape, self._shapes_seen = None, {}
            self._on_profile_change = strategy == module.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE
            self._reserved, self._in_flight = 0, None
            self._reserve(engine._profile_memory(0) if self._on_profile_change else engine.device_memory_size_v2)
            engine._contexts.add(self)

        def _error(self, message):
            world.refusals.append(message)
            log(self._engine._logger, message)
            return False

        def set_optimization_profile_async(self, profile_index, stream_handle):
            """Returns True or raises, as the binding does (PY_ASSERT_RUNTIME_ERROR in pyCore.cpp)."""
            world.require_context()
            if "set_optimization_profile_async" in world.failures or \
                    not 0 <= int(profile_index) < len(self._engine._plan["profiles"]):
                self._error(f"profile index {profile_index} out of range or refused")
                raise RuntimeError("Error in set optimization profile async.")
            self._profile, self._shape = int(profile_index), None
            self._reserve(self._engine._profile_memory(self._profile) if self._on_profile_change
                          else self._engine.device_memory_size_v2)
            return True

        def _reserve(self, nbytes):
            world.reserved += nbytes - self._reserved
            self._reserved = nbytes

        def __del__(self):
            world.reserved -= getattr(self, "_reserved", 0)

        @property
        def active_optimization_profile(self):
            return self._profile

        def set_input_shape(self, name, shape):
            shape = [int(d) for d in shape]
            if name != self._engine._plan["inputs"][0]:
                return self._error(f"{name} is not an input tensor")
            low, _, high = self._engine._plan["profiles"][self._profile]
            if len(shape) != len(low) or not all(a <= d <= b for a, d, b in zip(low, shape, high, strict=True)):
                return self._error(f"shape {shape} is outside profile {self._profile} ({low} .. {high})")
            self._shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name == self._engine._plan["inputs"][0]:
                return self._shape or (-1, -1, -1)
            if self._shape is None:
                return (-1, 1, -1)
            return (self._shape[0], 1, self._shape[2] * self._engine._hop)

        def set_tensor_address(self, name, memory):
            if name not in self._engine._io_names():
                return self._error(f"{name} is not an I/O tensor")
            if int(memory) % ALIGNMENT:
                return self._error(f"address 0x{int(memory):x} of {name} is not {ALIGNMENT}-byte aligned")
            self._addresses[name] = int(memory)
            return True

        def get_tensor_address(self, name):
            return self._addresses.get(name, 0)

        def execute_async_v3(self, stream_handle):
            world.require_context()
            if self._shape is None:
                return self._error("execute_async_v3 before set_input_shape")
            missing = [n for n in self._engine._io_names() if n not in self._addresses]
            if missing:
                return self._error(f"execute_async_v3 without addresses for {missing}")
            capturing = world.is_capturing(stream_handle)
            if capturing and not self._may_capture():
                return False
            sharing = [c for c in self._engine._contexts if c is not self and c._profile == self._profile
                       and c._in_flight is not None and not c._in_flight.query()]
            if sharing:  # undefined behaviour in TensorRT (NvInferRuntime.h): the double makes it loud
                return self._error(f"two execution contexts in concurrent use share optimization profile {self._profile}; "
                                   "each needs its own")
            world.enqueues += 1
            if not capturing:
                self._last_run_shape = self._shape
                self._count_whole_graph()
            names = self._engine._io_names()
            world.executor(world, self._engine._plan, self._shape, self._addresses[names[0]], self._addresses[names[1]],
                           stream_handle)
            if not capturing:
                if self._in_flight is not None:
                    self._in_flight.free()
                self._in_flight = world.mark(stream_handle)
            return True

        def _may_capture(self):
            if is_rtx and not self._engine._plan["require_user_allocation"]:
                return self._error("stream capture needs a plan built with BuilderFlag.REQUIRE_USER_ALLOCATION")
            if not is_rtx and self._shape != self._last_run_shape:
                return self._error("capture of a shape that has not run yet: deferred shape work cannot be captured")
            return True

        def _count_whole_graph(self):
            """TensorRT-RTX's built-in strategy: runs 1 plain, 2 captured, 3 on replayed, per shape."""
            strategy = getattr(self._config, "_whole", None) if self._config is not None else None
            if strategy:
                seen = self._shapes_seen[self._shape] = self._shapes_seen.get(self._shape, 0) + 1
                if seen >= 3:
                    world.whole_graph_replays += 1

        def is_stream_capturable(self, stream):
            return bool(self._engine._plan["require_user_allocation"])

    IExecutionContext = _bind(_IExecutionContext, surface, surface_name, "IExecutionContext")

    class _ICudaEngine:
        def __init__(self, plan, logger):
            self._plan, self._logger, self._hop = plan, logger, plan["hop"]
            self._contexts = weakref.WeakSet()

        def _profile_memory(self, index):
            """The double's scratch model: 4 KiB per (batch x frame) of the profile's largest shape."""
            high = self._plan["profiles"][index][2]
            return 4096 * high[0] * high[-1]

        def _io_names(self):
            return self._plan["inputs"] + self._plan["outputs"]

        @property
        def num_io_tensors(self):
            return len(self._io_names())

        def get_tensor_name(self, index):
            return self._io_names()[index]

        @property
        def num_optimization_profiles(self):
            return len(self._plan["profiles"])

        def get_tensor_profile_shape(self, name, profile_index):
            return [tuple(shape) for shape in self._plan["profiles"][profile_index]]

        @property
        def device_memory_size_v2(self):
            return max(self._profile_memory(i) for i in range(len(self._plan["profiles"])))

        @property
        def device_memory_size(self):
            return self.device_memory_size_v2

        def get_device_memory_size_for_profile_v2(self, profile_index):
            return self._profile_memory(int(profile_index))

        def create_runtime_config(self):
            return IRuntimeConfig()

        def create_execution_context(self, strategy=None, runtime_config=None):
            world.require_context()
            if "create_execution_context" in world.failures:
                log(self._logger, "could not allocate the execution context's device memory")
                return None  # what the binding returns when createExecutionContext fails
            if runtime_config is not None:
                object.__setattr__(runtime_config, "_whole",
                                   is_rtx and runtime_config.cuda_graph_strategy == module.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE)
                strategy = runtime_config._strategy
            return IExecutionContext(self, runtime_config,
                                     strategy or module.ExecutionContextAllocationStrategy.STATIC)

    ICudaEngine = _bind(_ICudaEngine, surface, surface_name, "ICudaEngine")

    class _Runtime:
        def __init__(self, logger):
            if "Runtime" in world.failures:  # createInferRuntime returned null
                raise TypeError("pybind11::init(): factory function returned nullptr")
            self._logger = logger
            for name in self._settable:
                object.__setattr__(self, name, False if name == "engine_host_code_allowed" else None)

        def deserialize_cuda_engine(self, serialized_engine):
            world.require_context()
            try:
                plan = json.loads(bytes(serialized_engine))
            except (ValueError, UnicodeDecodeError):
                log(self._logger, "the serialized engine is not a plan (magic tag mismatch)")
                return None
            if plan.get("double") != module_name:
                log(self._logger, f"the plan was built by {plan.get('double')}, not {module_name}")
                return None
            problem = _gpu_problem(plan) or _version_problem(plan)
            if problem:
                log(self._logger, problem)
                return None
            if plan["version_compatible"] and not is_rtx:
                if not self.engine_host_code_allowed:
                    log(self._logger, "a version-compatible plan needs engine_host_code_allowed to run its lean runtime")
                    return None
            elif plan["version"] != module.__version__:
                log(self._logger, f"the plan was built with version {plan['version']}, this is {module.__version__}")
                return None
            return ICudaEngine(plan, self._logger)

        def get_engine_validity(self, buffer):
            """What world.validity says (a name and diagnostics bits), else VALID: on CPU the real call
            answers INVALID with diagnostics 0 ("Error reading CUDA GPU properties")."""
            if world.validity is None:
                return module.EngineValidity.VALID, 0
            name, diagnostics = world.validity
            return module.EngineValidity.__members__[name], int(diagnostics)

    def _gpu_problem(plan):
        """The GPU rules of deserialization: TensorRT-RTX needs a kernel target for this GPU; full
        TensorRT the build GPU's compute capability, Ampere or later for AMPERE_PLUS."""
        cc = world.current_cc()
        if is_rtx:
            wanted = f"SM{cc[0]}{cc[1]}"
            if plan["targets"] and wanted not in plan["targets"]:
                return f"the plan has no kernels for compute capability {wanted} (targets {plan['targets']})"
            return None
        if plan.get("hardware") == "AMPERE_PLUS":
            return None if cc >= (8, 0) else f"a hardware-compatible plan needs Ampere or later, not SM{cc[0]}{cc[1]}"
        if cc != tuple(plan.get("build_cc", cc)):
            return f"the plan was built for compute capability {plan['build_cc']}, this GPU is {list(cc)}"
        return None

    def _version_problem(plan):
        """A version-compatible plan runs on the same or a later runtime, one major up at most (10 on 11)."""
        if not plan["version_compatible"] or is_rtx:
            return None
        built = tuple(int(p) for p in plan["version"].split("."))
        running = tuple(int(p) for p in module.__version__.split("."))
        if built > running or running[0] - built[0] > 1:
            return f"a version-compatible plan of {plan['version']} cannot run on {module.__version__}"
        return None

    module.Runtime = _bind(_Runtime, surface, surface_name, "Runtime")
    for name, value in (("IRuntimeConfig", IRuntimeConfig), ("IRuntimeCache", IRuntimeCache), ("ICudaEngine", ICudaEngine),
                        ("IExecutionContext", IExecutionContext), ("IOptimizationProfile", IOptimizationProfile),
                        ("INetworkDefinition", INetworkDefinition), ("IHostMemory", IHostMemory),
                        ("ITimingCache", ITimingCache)):
        if value is not None:
            setattr(module, name, value)
    return module


def install(monkeypatch, surface_name: str, world: World, version: str | None = None) -> types.ModuleType:
    """Put the double in sys.modules under the real module's name for this test."""
    module = make_module(surface_name, world, version)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


RTX_4090 = ("NVIDIA GeForce RTX 4090 (host double)", (8, 9))


def install_on_cpu(monkeypatch, surface_name: str, devices=(RTX_4090,) * 2) -> World:
    """A whole machine of doubles for one test: the surface's TensorRT, the host CUDA layer with
    `devices`, and the driver probe seeing those GPUs (full TensorRT records the build GPU)."""
    from cuda_double import HostCudaLayer
    from runtime import cuda as cuda_module

    layer = HostCudaLayer(devices)
    world = World(layer)
    world.surface = surface_name
    world.trt = install(monkeypatch, surface_name, world)
    monkeypatch.setattr(cuda_module, "cuda_layer", lambda binding=None: layer)
    gpus = [cuda_module.DriverGpu(i, name, cc) for i, (name, cc) in enumerate(devices)]
    monkeypatch.setattr(cuda_module, "driver_state", lambda: cuda_module.DriverState("13.0", gpus, ""))
    return world
