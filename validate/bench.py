"""Time every way of running a vocoder on the same GPU and input, or say why a way cannot run here.

Each row is one backend at one (batch, frames): warm-up, then many timed runs (CUDA events on GPU
rows, the host clock on CPU rows), reported as median with the 10th-90th percentile spread, the
real-time factor (seconds of audio per second of compute), peak GPU memory and how close the
audio is to PyTorch fp32 on the same input. Rows stop after `bench_row_seconds` once they have
`bench_min_runs` runs, so the slow backends at large sizes fit in one invocation.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import json
import logging
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

import runtime
from pipeline.files import atomic_output
from pipeline.onnx_metadata import read_metadata
from pipeline.onnx_tools import cpu_session, onnx_session, run_audio
from pipeline.quality import cosine_similarity, snr_db
from pipeline.settings import REPO_ROOT, VOCODERS, output_paths
from runtime.errors import reason_of
from validate.plan_engine import PlanEngine
from vocoder_models.mels import sample_mel

log = logging.getLogger("validate")

REFERENCE = {"cuda": "torch-eager-fp32", "cpu": "torch-cpu-fp32"}
MEMORY_METHOD = ("PyTorch rows (NVIDIA's BigVGAN included): torch.cuda.max_memory_allocated (weights included); onnxruntime and "
                 "TensorRT rows: device memory in use above the level before their session or engine (cudaMemGetInfo)")


@dataclass
class Row:
    vocoder: str
    backend: str
    device: str
    precision: str
    batch: int
    frames: int
    audio_seconds: float
    status: str = "ok"              # ok | skipped
    reason: str = ""
    runs: int = 0
    median_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    rtf: float | None = None        # audio seconds per compute second (above 1: faster than real time)
    peak_mib: float | None = None
    cosine: float | None = None     # against the reference row's audio on the same input
    snr_db: float | None = None
    notes: list[str] = field(default_factory=list)


class Skip(Exception):
    """A backend cannot run here; the message says why."""


# --- environment ------------------------------------------------------------------------------


def cuda_reason() -> str | None:
    """Why CUDA rows cannot run, or None."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__} sees none)"
    return None


def onnxruntime_cuda_reason() -> str | None:
    reason = cuda_reason()
    if reason:
        return reason
    import onnxruntime as ort
    import torch  # noqa: F401  (loads the CUDA libraries onnxruntime-gpu links against)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider; "
                "install onnxruntime-gpu (pip install '.[gpu]')")
    return None


def tensorrt_reason(vocoder: str, precision: str, settings: dict) -> str | None:
    """Why the built plan cannot execute here (the runtime's verdict), or None."""
    plan = output_paths(settings, vocoder, precision)["plan"]
    if not plan.is_file():
        return f"no {plan.relative_to(REPO_ROOT)}; run make engines"
    try:
        return runtime.plan_blocker(runtime.read_manifest(plan))
    except runtime.RuntimeUserError as error:
        return str(error)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    try:
        import torch
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}",
                        gpu_memory_gib=round(props.total_memory / 2 ** 30, 1), cuda=torch.version.cuda)
    except ImportError:
        pass
    try:
        import onnxruntime as ort
        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    return info


# --- models ------------------------------------------------------------------------------------


class Models:
    """Builds each vocoder's PyTorch modules and ONNX files once, on first use."""

    def __init__(self, settings: dict, workdir: Path):
        self.settings = settings
        self.workdir = workdir
        self._cache: dict[tuple, Any] = {}
        self.device_baseline: dict[tuple[str, str], int] = {}  # GPU bytes in use before a session

    def session(self, vocoder: str, name: str, make: Callable[[], Any], *, on_gpu: bool) -> Any:
        """A cached ONNX Runtime session or engine, noting the GPU memory in use before one on the GPU."""
        key = (vocoder, name)
        if key not in self._cache and on_gpu:
            self.device_baseline[key] = gpu_bytes_in_use()
        return self.cached(key, make)

    def close(self) -> None:
        """Close what holds GPU state of its own (the runtime's engines)."""
        for value in self._cache.values():
            if hasattr(value, "close"):
                value.close()
        self._cache.clear()

    def cached(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def torch_module(self, vocoder: str, device: str, half: bool):
        def make():
            from export.checkpoints import load_vocoder
            module = load_vocoder(vocoder, settings=self.settings).to(device)
            return module.half() if half else module
        return self.cached(("torch", vocoder, device, half), make)

    def release_torch(self) -> None:
        """Drop the modules before the ONNX Runtime rows, so their memory is not counted twice."""
        import torch
        for key in [k for k in self._cache if k[0] == "torch"]:
            del self._cache[key]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def hop_and_rate(self, vocoder: str) -> tuple[int, int]:
        """Output samples per mel frame and output sample rate, as the exported model's metadata says."""
        metadata = self.cached(("metadata", vocoder), lambda: read_metadata(self.exported(vocoder)))
        return metadata["hop"], metadata["sampling_rate"]

    def exported(self, vocoder: str) -> Path:
        """The pipeline's exported ONNX, or the default checkpoint exported into workdir when it is missing."""
        def make() -> Path:
            path = output_paths(self.settings, vocoder, "fp32")["onnx"]
            if path.is_file():
                return path
            from export.to_onnx import onnx_from_module
            log.info("%s: no %s; exporting into a temporary folder", vocoder, path)
            module = self.torch_module(vocoder, "cpu", False)
            return onnx_from_module(module, vocoder, self.workdir / path.name, settings=self.settings)
        return self.cached(("exported", vocoder), make)

    def onnx_path(self, vocoder: str, precision: str) -> tuple[Path, str]:
        """The cleaned ONNX of this precision, the model its engine is built from (fp16: the precision
        search's mixed model), and a note when it had to be made for this run."""
        return self.cached(("onnx", vocoder, precision), lambda: self._make_onnx(vocoder, precision))

    def _make_onnx(self, vocoder: str, precision: str) -> tuple[Path, str]:
        cleaned = output_paths(self.settings, vocoder, precision)["cleaned"]
        if cleaned.is_file():
            return cleaned, ""
        from export.clean import clean
        log.info("%s: no %s; cleaning (and searching the precision) into a temporary folder", vocoder, cleaned)
        made = clean(self.exported(vocoder), precision, self.workdir / cleaned.name, settings=self.settings)
        return made, "cleaned for this run (python -m export.clean)"


# --- runners: one class per backend (Polygraphy's runner shape) ---------------------------------


class BenchRunner:
    """One row's backend: its name, where and at what precision it runs, why it cannot run here
    (`unavailable`, asked before anything is loaded; None: it can), `prepare` (load what the backend
    needs, cached in Models, and return the call the timer repeats on one input, with the row's
    notes) and `deactivate` (free what the backend's rows share, once its family's rows are done).
    A runner may still raise Skip from `prepare`, with the reason."""

    family = ""        # rows of one family follow each other; deactivate runs when the family ends
    memory = "device"  # how the row's GPU memory is read: "torch"'s allocator, or device memory in use (MEMORY_METHOD)

    def __init__(self, name: str, device: str, precision: str):
        self.name, self.device, self.precision = name, device, precision

    @property
    def session_name(self) -> str:
        """The name its session (ONNX Runtime) or engine is cached and its memory baseline kept under."""
        return self.name

    @property
    def half(self) -> bool:
        return self.precision == "fp16"

    def unavailable(self, vocoder: str, settings: dict) -> str | None:
        return cuda_reason() if self.device == "cuda" else None

    def prepare(self, models: Models, vocoder: str, mel: np.ndarray, batch: int,
                frames: int) -> tuple[Callable[[], Any], list[str]]:
        raise NotImplementedError

    def deactivate(self, models: Models) -> None:
        """What the family's rows share stays loaded until the end (Models.close)."""

    def input(self, mel: np.ndarray):
        """The mel as a CUDA tensor of the row's precision."""
        import torch
        x = torch.from_numpy(mel).cuda()
        return x.half() if self.half else x


class TorchRunner(BenchRunner):
    """A backend that runs a PyTorch module, its memory read from torch's allocator."""

    family = "torch"
    memory = "torch"

    def deactivate(self, models: Models) -> None:
        """Drop the PyTorch modules before the next family's rows, so their memory is not counted twice."""
        models.release_torch()


def eager(module, x) -> Callable[[], Any]:
    """`module(x)` without autograd, as the timer repeats it."""
    import torch

    def run():
        with torch.inference_mode():
            return module(x)
    return run


def graph_replay(module, static_in) -> Callable[[], Any]:
    """`module` on `static_in` captured in one CUDA graph (serving/torch_tier/graphs.py: three warm-up
    runs on a side stream, as torch asks); the returned function replays it and gives the graph's output."""
    import torch

    from serving.torch_tier.graphs import capture
    captured = capture(lambda: [module(static_in)], [static_in], warmup=3, around=torch.inference_mode)
    return lambda: captured.replay()[0]


class TorchEager(TorchRunner):
    """The vocoder's PyTorch module as it is, on the GPU or the CPU."""

    def prepare(self, models, vocoder, mel, batch, frames):
        import torch
        module = models.torch_module(vocoder, self.device, self.half)
        x = torch.from_numpy(mel).to(self.device)
        return eager(module, x.half() if self.half else x), []


class TorchCudaGraph(TorchRunner):
    """The PyTorch module in one CUDA graph per shape."""

    def prepare(self, models, vocoder, mel, batch, frames):
        module = models.torch_module(vocoder, "cuda", True)
        return graph_replay(module, self.input(mel)), ["one captured graph per shape"]


def fast_tier_reason() -> str | None:
    """Why the fast tier's rows cannot run: no CUDA or Triton (the tier's own verdict)."""
    reason = cuda_reason()
    if reason:
        return reason
    from serving.torch_tier.fast import TIER_FAST, choose_tier
    tier, why = choose_tier("cuda")
    return None if tier == TIER_FAST else why


class TorchFused(TorchRunner):
    """v3's module with the fast tier's fused anti-aliased activation, eager or in one graph per shape."""

    def __init__(self, name: str, precision: str, graphs: bool = False):
        super().__init__(name, "cuda", precision)
        self.graphs = graphs

    def unavailable(self, vocoder, settings):
        reason = fast_tier_reason()
        if reason is None and vocoder != "v3":
            return f"{vocoder} has no anti-aliased activation to fuse (its bucketed graphs are the torch-fast-fp16 row)"
        return reason

    def prepare(self, models, vocoder, mel, batch, frames):
        from serving.torch_tier.fused import fuse_activations

        def fused_module():
            from export.checkpoints import load_vocoder
            module = load_vocoder(vocoder, settings=models.settings)
            fuse_activations(module)  # before .half(): the kernel's constants stay float32
            module = module.to("cuda")
            return module.half() if self.half else module
        module = models.cached(("torch", "fused", vocoder, self.half), fused_module)
        notes = ["fused anti-aliased activation (Triton)"]
        if not self.graphs:
            return eager(module, self.input(mel)), notes
        return graph_replay(module, self.input(mel)), notes + ["one captured graph per shape"]


class TorchFast(TorchRunner):
    """The GPT-SoVITS drop-in's fast tier as served (serving/torch_tier FastVocoder): fused
    activations (v3) and CUDA graphs per mel-length bucket."""

    def unavailable(self, vocoder, settings):
        return fast_tier_reason()

    def prepare(self, models, vocoder, mel, batch, frames):
        import torch

        from runtime.streaming import architecture_window
        from serving.torch_tier.fast import FastVocoder
        hop, _ = models.hop_and_rate(vocoder)

        def fast_vocoder():
            from export.checkpoints import load_vocoder
            window = architecture_window(vocoder)
            # exact_after=None: every call in bucket windows, as a length's first call is (the timed runs repeat one length)
            module = load_vocoder(vocoder, settings=models.settings).to("cuda")
            return FastVocoder(module, hop, context=window.context, lookahead=window.lookahead,
                               precision=torch.half, fuse=vocoder == "v3", exact_after=None)
        fast = models.cached(("torch", "fast", vocoder), fast_vocoder)
        x = self.input(mel)
        return (lambda: fast(x)), ["fused activations (v3), CUDA graphs per mel-length bucket (serving/torch_tier), "
                                   "the edge masked"]


class NvidiaBigVGAN(BenchRunner):
    """NVIDIA's BigVGAN with its fused CUDA activation (validate/nvidia_bigvgan.py), fp16, one graph."""

    family = "nvidia"
    memory = "torch"

    def unavailable(self, vocoder, settings):
        from validate import nvidia_bigvgan
        return "NVIDIA's BigVGAN is v3's architecture only" if vocoder != "v3" else nvidia_bigvgan.unavailable()

    def prepare(self, models, vocoder, mel, batch, frames):
        import torch

        from validate import nvidia_bigvgan

        def make():
            weights = models.torch_module("v3", "cpu", False).state_dict()
            started = time.perf_counter()
            try:
                module = nvidia_bigvgan.build(weights).half()
            except Exception as exc:  # the package's own JIT build: say why it failed, in one line
                raise Skip(f"NVIDIA's kernel did not build: {type(exc).__name__}: "
                           f"{str(exc).strip().splitlines()[-1:]}") from exc
            return module, time.perf_counter() - started
        module, build_s = models.cached(("nvidia-bigvgan",), make)
        arch = "".join(map(str, torch.cuda.get_device_capability()))
        return graph_replay(module, self.input(mel)), [f"NVIDIA's fused CUDA kernel, built for sm_{arch} in {build_s:.0f} s",
                                                       "one captured graph per shape"]


class TorchCompile(TorchRunner):
    """torch.compile of the fp16 module, in `[validate] bench_compile_mode` or the mode given."""

    def __init__(self, name: str, mode: str | None = None):
        super().__init__(name, "cuda", "fp16")
        self.mode = mode

    def prepare(self, models, vocoder, mel, batch, frames):
        import torch
        sizes = [list(s) for s in models.settings["validate"]["bench_compile_sizes"]]
        if [batch, frames] not in sizes:
            raise Skip(f"timed only at [batch, frames] {sizes} (bench_compile_sizes): each shape recompiles")
        mode = self.mode or models.settings["validate"]["bench_compile_mode"]
        module = models.cached(("torch", "compiled", vocoder, mode),
                                lambda: torch.compile(models.torch_module(vocoder, "cuda", True), mode=mode, dynamic=False))
        x = self.input(mel)
        started = time.perf_counter()
        with torch.inference_mode():
            module(x)
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - started
        return eager(module, x), [f"mode {mode}, first call {compile_s:.0f} s (compilation)"]


class OnnxRuntimeCpu(BenchRunner):
    """The cleaned float32 model (what the fp32 engine is built from) in ONNX Runtime on the CPU."""

    family = "onnxruntime"

    def __init__(self, name: str):
        super().__init__(name, "cpu", "fp32")

    def prepare(self, models, vocoder, mel, batch, frames):
        path, note = models.onnx_path(vocoder, self.precision)
        session = models.session(vocoder, self.session_name, lambda: cpu_session(path), on_gpu=False)
        return (lambda: run_audio(session, mel)), [note] if note else []


class OnnxRuntimeCuda(BenchRunner):
    """The cleaned model of this precision (what its engine is built from) in ONNX Runtime's CUDA
    provider, input and output bound on the GPU."""

    family = "onnxruntime"

    def unavailable(self, vocoder, settings):
        return onnxruntime_cuda_reason()

    def prepare(self, models, vocoder, mel, batch, frames):
        import torch
        path, note = models.onnx_path(vocoder, self.precision)
        names = models.settings["tensors"]
        hop, _ = models.hop_and_rate(vocoder)
        options = {"device_id": 0, "cudnn_conv_algo_search": models.settings["validate"]["ort_cudnn_conv_algo_search"]}
        session = models.session(vocoder, self.session_name, lambda: onnx_session(path, [("CUDAExecutionProvider", options)]),
                                 on_gpu=True)
        if session.get_providers()[0] != "CUDAExecutionProvider":
            raise Skip(f"onnxruntime fell back to {session.get_providers()[0]}")
        x = torch.from_numpy(mel).cuda()
        y = torch.empty((mel.shape[0], 1, mel.shape[2] * hop), device="cuda")
        binding = session.io_binding()
        binding.bind_input(names["input"], "cuda", 0, np.float32, list(x.shape), x.data_ptr())
        binding.bind_output(names["output"], "cuda", 0, np.float32, list(y.shape), y.data_ptr())

        def run():
            session.run_with_iobinding(binding)
            return y
        # Run returns once its GPU work is done, so the events around it bracket that work
        notes = ["I/O binding", f"cuDNN search {options['cudnn_conv_algo_search']}"]
        return run, notes + ([note] if note else [])


class TensorRT(BenchRunner):
    """The project's own runtime on the built plan, as users run it (validate/plan_engine.py): numpy
    through pinned buffers, or CUDA tensors zero-copy. Both rows of a precision share one engine."""

    family = "tensorrt"

    def __init__(self, name: str, precision: str, zero_copy: bool = False):
        super().__init__(name, "cuda", precision)
        self.zero_copy = zero_copy

    @property
    def session_name(self) -> str:
        return f"tensorrt-{self.precision}"

    def unavailable(self, vocoder, settings):
        return tensorrt_reason(vocoder, self.precision, settings)

    def prepare(self, models, vocoder, mel, batch, frames):
        plan = output_paths(models.settings, vocoder, self.precision)["plan"]
        engine = models.session(vocoder, self.session_name, lambda: PlanEngine(plan).open(), on_gpu=True)
        if not self.zero_copy:
            return (lambda: engine(mel)), ["runtime host path: pinned copies in and out included"]
        x = to_device(mel)
        return (lambda: engine(x)), ["runtime zero-copy path: CUDA tensor in and out"]


def to_device(array: np.ndarray):
    """The CUDA tensor a zero-copy row feeds the engine."""
    import torch
    return torch.from_numpy(array).cuda()


def registry(*runners: BenchRunner) -> dict[str, BenchRunner]:
    return {runner.name: runner for runner in runners}


# every row's backend; the order is the order rows are measured and printed
RUNNERS = registry(
    TorchEager("torch-eager-fp32", "cuda", "fp32"),
    TorchEager("torch-eager-fp16", "cuda", "fp16"),
    TorchCudaGraph("torch-cudagraph-fp16", "cuda", "fp16"),
    # the GPT-SoVITS drop-in's fast tier (serving/torch_tier): v3's fused anti-aliased activation
    # (eager, then one graph per shape) and the tier as served: fused plus bucketed CUDA graphs
    TorchFused("torch-fused-fp32", "fp32"),
    TorchFused("torch-fused-fp16", "fp16"),
    TorchFused("torch-fused-cudagraph-fp16", "fp16", graphs=True),
    TorchFast("torch-fast-fp16", "cuda", "fp16"),
    OnnxRuntimeCuda("onnxruntime-cuda-fp32", "cuda", "fp32"),
    OnnxRuntimeCuda("onnxruntime-cuda-fp16", "cuda", "fp16"),
    TensorRT("tensorrt-fp32", "fp32"),
    TensorRT("tensorrt-fp16", "fp16"),
    TensorRT("tensorrt-fp32-zero-copy", "fp32", zero_copy=True),
    TensorRT("tensorrt-fp16-zero-copy", "fp16", zero_copy=True),
    TorchCompile("torch-compile-fp16"),   # last GPU rows: compiling takes a minute or more
    TorchCompile("torch-compile-cudagraph-fp16", mode="reduce-overhead"),  # torch.compile's CUDA graphs
    NvidiaBigVGAN("nvidia-bigvgan-cuda-fp16", "cuda", "fp16"),  # v3 only: NVIDIA's bigvgan package, its CUDA kernel, one graph
    TorchEager("torch-cpu-fp32", "cpu", "fp32"),
    OnnxRuntimeCpu("onnxruntime-cpu-fp32"),
)
# backend name -> (device, precision), for reading
BACKENDS = {name: (runner.device, runner.precision) for name, runner in RUNNERS.items()}


# --- timing -------------------------------------------------------------------------------------


def time_runs(run: Callable[[], Any], device: str, settings: dict) -> tuple[list[float], Any]:
    """Warm up, then time runs in milliseconds; returns the times and the first timed output."""
    cfg = settings["validate"]
    budget = float(cfg["bench_row_seconds"])
    sync = _synchronizer(device)
    started = time.perf_counter()
    for _ in range(int(cfg["bench_warmup"])):
        run()
        sync()
        if time.perf_counter() - started > budget / 3:
            break
    times: list[float] = []
    first = None
    started = time.perf_counter()
    while len(times) < int(cfg["bench_runs"]):
        if len(times) >= int(cfg["bench_min_runs"]) and time.perf_counter() - started > budget:
            break
        elapsed, output = _timed(run, device)
        times.append(elapsed)
        if first is None:
            first = _to_numpy(output)
    return times, first


def _timed(run: Callable[[], Any], device: str) -> tuple[float, Any]:
    if device == "cuda":
        import torch
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        output = run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end), output
    started = time.perf_counter()
    output = run()
    return (time.perf_counter() - started) * 1000, output


def _synchronizer(device: str) -> Callable[[], None]:
    if device == "cuda":
        import torch
        return torch.cuda.synchronize
    return lambda: None


def _to_numpy(output: Any) -> np.ndarray:
    if hasattr(output, "detach"):
        return output.detach().float().cpu().numpy()
    return np.asarray(output, dtype=np.float32)


def gpu_bytes_in_use() -> int:
    import torch
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return total - free


@contextlib.contextmanager
def _memory_probe(models: Models, vocoder: str, runner: BenchRunner):
    """Yields a dict that holds the row's GPU memory in MiB once the block ends (see MEMORY_METHOD)."""
    result: dict[str, float | None] = {"peak_mib": None}
    if runner.device != "cuda":
        yield result
        return
    import torch
    if runner.memory == "torch":
        torch.cuda.reset_peak_memory_stats()
        yield result
        result["peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        yield result
        baseline = models.device_baseline.get((vocoder, runner.session_name), 0)
        result["peak_mib"] = max(0, gpu_bytes_in_use() - baseline) / 2 ** 20


# --- the benchmark ----------------------------------------------------------------------------


def rows_to_measure(vocoders: list[str], frames: list[int], batches: list[int], settings: dict,
                    backends: list[str] | None = None) -> list[tuple[str, str, int, int]]:
    """(vocoder, backend, batch, frames) in measuring order; CPU rows at the configured small sizes."""
    cfg = settings["validate"]
    rows = []
    for vocoder in vocoders:
        for backend in backends or RUNNERS:
            on_gpu = RUNNERS[backend].device == "cuda"
            sizes_f = frames if on_gpu else [f for f in cfg["bench_cpu_frames"]]
            sizes_b = batches if on_gpu else [b for b in cfg["bench_cpu_batches"]]
            rows += [(vocoder, backend, b, f) for f in sizes_f for b in sizes_b]
    return rows


def run_benchmark(vocoders: list[str], frames: list[int], batches: list[int], backends: list[str] | None = None,
                  budget_s: float | None = None, on_row: Callable[[dict], None] | None = None,
                  *, settings: dict) -> dict[str, Any]:
    """Measure every row; rows that cannot run carry the reason instead of numbers."""
    from tqdm import tqdm
    rows = rows_to_measure(vocoders, frames, batches, settings, backends)
    results: dict[str, Any] = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                               "machine": machine_info(), "memory_method": MEMORY_METHOD,
                               "settings": {k: v for k, v in settings["validate"].items() if k.startswith(("bench", "ort"))},
                               "rows": []}
    references: dict[tuple, np.ndarray] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        models = Models(settings, Path(workdir))
        previous = None
        for vocoder, backend, batch, frames_ in tqdm(rows, desc="bench", unit="row"):
            runner = RUNNERS[backend]
            if previous is not None and previous.family != runner.family:
                previous.deactivate(models)
            previous = runner
            row = _measure(models, vocoder, backend, batch, frames_, references, settings,
                           None if budget_s is None else budget_s - (time.perf_counter() - started))
            results["rows"].append(asdict(row))
            if on_row:
                on_row(results)
        models.close()
    return results


def _measure(models: Models, vocoder: str, backend: str, batch: int, frames: int,
             references: dict, settings: dict, time_left: float | None) -> Row:
    runner = RUNNERS[backend]
    hop, rate = models.hop_and_rate(vocoder)
    row = Row(vocoder, backend, runner.device, runner.precision, batch, frames, audio_seconds=batch * frames * hop / rate)
    if time_left is not None and time_left <= 0:
        return _skipped(row, "the run's time budget (--budget-s) was spent before this row")
    reason = runner.unavailable(vocoder, settings)
    if reason:
        return _skipped(row, reason)
    mel = sample_mel(vocoder, frames, batch=batch, seed=frames)
    try:
        with _memory_probe(models, vocoder, runner) as memory:
            run, row.notes = runner.prepare(models, vocoder, mel, batch, frames)
            times, output = time_runs(run, runner.device, settings)
    except Skip as reason:
        return _skipped(row, str(reason))
    except Exception as error:  # a backend that breaks must not end the benchmark: record why
        log.warning("%s %s %dx%d failed: %s", vocoder, backend, batch, frames, error)
        return _skipped(row, f"failed: {type(error).__name__}: {reason_of(error)}")
    row.runs = len(times)
    row.median_ms = float(np.median(times))
    row.p10_ms, row.p90_ms = (float(v) for v in np.percentile(times, [10, 90]))
    row.rtf = row.audio_seconds / (row.median_ms / 1000)
    row.peak_mib = memory["peak_mib"]
    key = (vocoder, runner.device, batch, frames)
    if backend == REFERENCE[runner.device]:
        references[key] = output
    if key in references and output is not None and output.size == references[key].size:
        row.cosine = cosine_similarity(references[key], output)
        row.snr_db = snr_db(references[key], output)
    return row


def _skipped(row: Row, reason: str) -> Row:
    row.status, row.reason = "skipped", reason
    return row


# --- output -------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return "inf"
    return format(value, spec)


def markdown_table(results: dict[str, Any]) -> str:
    """The rows as a markdown table; a skipped backend appears once per vocoder with its reason."""
    lines = ["| vocoder | backend | batch | frames | median ms | p10-p90 ms | runs | RTF | peak MiB | cosine vs fp32 | SNR dB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    reasons: dict[tuple[str, str], set[str]] = {}
    for r in results["rows"]:
        if r["status"] != "ok":
            reasons.setdefault((r["vocoder"], r["backend"]), set()).add(r["reason"])
            continue
        lines.append(f"| {r['vocoder']} | {r['backend']} | {r['batch']} | {r['frames']} | {_fmt(r['median_ms'], '.2f')} | "
                     f"{_fmt(r['p10_ms'], '.2f')}-{_fmt(r['p90_ms'], '.2f')} | {r['runs']} | {_fmt(r['rtf'], '.3g')} | "
                     f"{_fmt(r['peak_mib'], '.0f')} | {_fmt(r['cosine'], '.6f')} | {_fmt(r['snr_db'], '.1f')} |")
    if reasons:
        lines += ["", "Not measured:", ""]
        lines += [f"- {vocoder} {backend}: {'; '.join(sorted(why))}" for (vocoder, backend), why in reasons.items()]
    return "\n".join(lines)


def terminal_table(results: dict[str, Any]) -> str:
    """A fixed-width version of the same table for the terminal."""
    header = (f"{'vocoder':7} {'backend':24} {'batch':>5} {'frames':>6} {'median ms':>10} {'p10-p90 ms':>17} {'RTF':>7} "
              f"{'peak MiB':>9} {'cosine':>9} {'SNR dB':>7}")
    lines = [header, "-" * len(header)]
    reasons: dict[tuple[str, str], set[str]] = {}
    for r in results["rows"]:
        if r["status"] != "ok":
            reasons.setdefault((r["vocoder"], r["backend"]), set()).add(r["reason"])
            continue
        spread = f"{_fmt(r['p10_ms'], '.2f')}-{_fmt(r['p90_ms'], '.2f')}"
        lines.append(f"{r['vocoder']:7} {r['backend']:24} {r['batch']:>5} {r['frames']:>6} {_fmt(r['median_ms'], '.2f'):>10} "
                     f"{spread:>17} {_fmt(r['rtf'], '.3g'):>7} {_fmt(r['peak_mib'], '.0f'):>9} "
                     f"{_fmt(r['cosine'], '.6f'):>9} {_fmt(r['snr_db'], '.1f'):>7}")
    for (vocoder, backend), why in reasons.items():
        lines.append(f"{vocoder:7} {backend:24} not measured: {'; '.join(sorted(why))}")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: str | Path) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(results, indent=1, default=_json_default) + "\n", encoding="utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def add_arguments(parser, settings: dict) -> None:
    defaults = settings["validate"]
    parser.add_argument("--vocoders", nargs="+", choices=VOCODERS, default=list(VOCODERS))
    parser.add_argument("--frames", nargs="+", type=int, default=defaults["bench_frames"])
    parser.add_argument("--batches", nargs="+", type=int, default=defaults["bench_batches"])
    parser.add_argument("--backends", nargs="+", choices=list(RUNNERS), help="default: all")
    parser.add_argument("--budget-s", type=float, help="skip the rows left after this many seconds (the reason is recorded)")
    parser.add_argument("--json", help="write the raw results here (rewritten after every row)")
    parser.add_argument("--markdown", help="write the table as markdown here")


def main(args, settings: dict) -> int:
    if min(args.frames) < 1 or min(args.batches) < 1:
        from pipeline.errors import UserError
        raise UserError("--frames and --batches take positive integers")
    on_row = (lambda results: write_json(copy.deepcopy(results), args.json)) if args.json else None
    results = run_benchmark(args.vocoders, args.frames, args.batches, args.backends, args.budget_s, on_row,
                            settings=settings)
    print(terminal_table(results))
    if args.markdown:
        with atomic_output(args.markdown) as tmp:
            tmp.write_text(markdown_table(results) + "\n", encoding="utf-8")
    return 0
