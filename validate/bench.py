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
from vocoder_models.mels import sample_mel

log = logging.getLogger("validate")

# backend name -> (device, precision); the order is the order rows are measured and printed
BACKENDS = {
    "torch-eager-fp32": ("cuda", "fp32"),
    "torch-eager-fp16": ("cuda", "fp16"),
    "torch-cudagraph-fp16": ("cuda", "fp16"),
    # the GPT-SoVITS drop-in's fast tier (serving/torch_tier): v3's fused anti-aliased activation
    # (eager, then one graph per shape) and the tier as served: fused plus bucketed CUDA graphs
    "torch-fused-fp32": ("cuda", "fp32"),
    "torch-fused-fp16": ("cuda", "fp16"),
    "torch-fused-cudagraph-fp16": ("cuda", "fp16"),
    "torch-fast-fp16": ("cuda", "fp16"),
    "onnxruntime-cuda-fp32": ("cuda", "fp32"),
    "onnxruntime-cuda-fp16": ("cuda", "fp16"),
    "tensorrt-fp32": ("cuda", "fp32"),
    "tensorrt-fp16": ("cuda", "fp16"),
    "tensorrt-fp32-zero-copy": ("cuda", "fp32"),
    "tensorrt-fp16-zero-copy": ("cuda", "fp16"),
    "torch-compile-fp16": ("cuda", "fp16"),   # last GPU row: compiling takes a minute or more
    "torch-cpu-fp32": ("cpu", "fp32"),
    "onnxruntime-cpu-fp32": ("cpu", "fp32"),
}
REFERENCE = {"cuda": "torch-eager-fp32", "cpu": "torch-cpu-fp32"}
MEMORY_METHOD = ("torch rows: torch.cuda.max_memory_allocated (weights included); onnxruntime and "
                 "TensorRT rows: device memory in use above the level before the session (cudaMemGetInfo)")


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

    def session(self, vocoder: str, backend: str, make: Callable[[], Any]) -> Any:
        """A cached ONNX Runtime or TensorRT session, noting the GPU memory in use before it."""
        key = (vocoder, backend)
        if key not in self._cache and BACKENDS[backend][0] == "cuda":
            self.device_baseline[key] = gpu_bytes_in_use()
        return self._cached(key, make)

    def close(self) -> None:
        """Close what holds GPU state of its own (the runtime's engines)."""
        for value in self._cache.values():
            if hasattr(value, "close"):
                value.close()
        self._cache.clear()

    def _cached(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def torch_module(self, vocoder: str, device: str, half: bool):
        def make():
            from export.checkpoints import load_vocoder
            module = load_vocoder(vocoder, settings=self.settings).to(device)
            return module.half() if half else module
        return self._cached(("torch", vocoder, device, half), make)

    def release_torch(self) -> None:
        """Drop the modules before the ONNX Runtime rows, so their memory is not counted twice."""
        import torch
        for key in [k for k in self._cache if k[0] == "torch"]:
            del self._cache[key]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def hop_and_rate(self, vocoder: str) -> tuple[int, int]:
        """Output samples per mel frame and output sample rate, as the exported model's metadata says."""
        metadata = self._cached(("metadata", vocoder), lambda: read_metadata(self.exported(vocoder)))
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
        return self._cached(("exported", vocoder), make)

    def onnx_path(self, vocoder: str, precision: str) -> tuple[Path, str]:
        """The cleaned ONNX of this precision, the model its engine is built from (fp16: the precision
        planner's mixed model), and a note when it had to be made for this run."""
        return self._cached(("onnx", vocoder, precision), lambda: self._make_onnx(vocoder, precision))

    def _make_onnx(self, vocoder: str, precision: str) -> tuple[Path, str]:
        cleaned = output_paths(self.settings, vocoder, precision)["cleaned"]
        if cleaned.is_file():
            return cleaned, ""
        from export.clean import clean
        log.info("%s: no %s; cleaning (and planning the precision) into a temporary folder", vocoder, cleaned)
        made = clean(self.exported(vocoder), precision, self.workdir / cleaned.name, settings=self.settings)
        return made, "cleaned for this run (python -m export.clean)"


# --- backends: each returns (run_once, notes) for one input -------------------------------------


def _torch_eager(models: Models, vocoder: str, mel: np.ndarray, half: bool, device: str):
    import torch
    module = models.torch_module(vocoder, device, half)
    x = torch.from_numpy(mel).to(device)
    x = x.half() if half else x

    def run():
        with torch.inference_mode():
            return module(x)
    return run, []


def _torch_cudagraph(models: Models, vocoder: str, mel: np.ndarray):
    import torch
    module = models.torch_module(vocoder, "cuda", True)
    return _graph_replay(module, torch.from_numpy(mel).cuda().half()), ["one captured graph per shape"]


def _graph_replay(module, static_in):
    """`module` on `static_in` captured in one CUDA graph (after three warm-up runs on a side
    stream, as torch asks); the returned function replays it and gives the graph's output."""
    import torch
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(3):
            module(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        static_out = module(static_in)

    def replay():
        graph.replay()
        return static_out
    return replay


def fast_tier_reason(backend: str, vocoder: str) -> str | None:
    """Why a fast-tier row cannot run: no CUDA or Triton (the tier's own verdict), or nothing to fuse."""
    reason = cuda_reason()
    if reason:
        return reason
    from serving.torch_tier.fast import TIER_FAST, choose_tier
    tier, why = choose_tier("cuda")
    if tier != TIER_FAST:
        return why
    if backend.startswith("torch-fused") and vocoder != "v3":
        return f"{vocoder} has no anti-aliased activation to fuse (its bucketed graphs are the torch-fast-fp16 row)"
    return None


def _torch_fast_tier(models: Models, backend: str, vocoder: str, mel: np.ndarray):
    """The fused module eager or in one graph per shape, or the tier as served (FastVocoder)."""
    import torch

    from runtime.streaming import architecture_window
    from serving.torch_tier.fast import FastVocoder
    from serving.torch_tier.fused import fuse_activations
    half = BACKENDS[backend][1] == "fp16"
    hop, _ = models.hop_and_rate(vocoder)

    def fused_module():
        from export.checkpoints import load_vocoder
        module = load_vocoder(vocoder, settings=models.settings)
        fuse_activations(module)  # before .half(): the kernel's constants stay float32
        module = module.to("cuda")
        return module.half() if half else module

    def fast_vocoder():
        from export.checkpoints import load_vocoder
        window = architecture_window(vocoder)
        # exact_after=None: every call planned into buckets, as a length's first call is (the timed runs repeat one length)
        module = load_vocoder(vocoder, settings=models.settings).to("cuda")
        return FastVocoder(module, hop, context=window.context, lookahead=window.lookahead,
                           precision=torch.half, fuse=vocoder == "v3", exact_after=None)

    x = torch.from_numpy(mel).cuda()
    x = x.half() if half else x
    if backend == "torch-fast-fp16":
        fast = models._cached(("torch", "fast", vocoder), fast_vocoder)

        def run():
            return fast(x)
        return run, ["fused activations (v3), CUDA graphs per mel-length bucket (serving/torch_tier): padded main + tail"]
    module = models._cached(("torch", "fused", vocoder, half), fused_module)
    if backend != "torch-fused-cudagraph-fp16":
        def run():
            with torch.inference_mode():
                return module(x)
        return run, ["fused anti-aliased activation (Triton)"]
    return _graph_replay(module, x), ["fused anti-aliased activation (Triton)", "one captured graph per shape"]


def _torch_compile(models: Models, vocoder: str, mel: np.ndarray, batch: int, frames: int):
    import torch
    sizes = [list(s) for s in models.settings["validate"]["bench_compile_sizes"]]
    if [batch, frames] not in sizes:
        raise Skip(f"timed only at [batch, frames] {sizes} (bench_compile_sizes): each shape recompiles")
    mode = models.settings["validate"]["bench_compile_mode"]
    module = models._cached(("torch", "compiled", vocoder, mode),
                            lambda: torch.compile(models.torch_module(vocoder, "cuda", True), mode=mode, dynamic=False))
    x = torch.from_numpy(mel).cuda().half()
    started = time.perf_counter()
    with torch.inference_mode():
        module(x)
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - started

    def run():
        with torch.inference_mode():
            return module(x)
    return run, [f"mode {mode}, first call {compile_s:.0f} s (compilation)"]


def _onnxruntime(models: Models, vocoder: str, mel: np.ndarray, precision: str, device: str):
    """The cleaned model of this precision (what its engine is built from) in ONNX Runtime."""
    path, note = models.onnx_path(vocoder, precision)
    names = models.settings["tensors"]
    hop, _ = models.hop_and_rate(vocoder)
    if device == "cpu":
        session = models.session(vocoder, "onnxruntime-cpu-fp32", lambda: cpu_session(path))
        return (lambda: run_audio(session, mel)), [note] if note else []
    import torch
    options = {"device_id": 0, "cudnn_conv_algo_search": models.settings["validate"]["ort_cudnn_conv_algo_search"]}
    session = models.session(vocoder, f"onnxruntime-cuda-{precision}",
                             lambda: onnx_session(path, [("CUDAExecutionProvider", options)]))
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


def _tensorrt(models: Models, vocoder: str, mel: np.ndarray, precision: str, zero_copy: bool):
    """The project's own runtime, as users run it: numpy through pinned buffers, or CUDA tensors zero-copy."""
    plan = output_paths(models.settings, vocoder, precision)["plan"]
    engine = models.session(vocoder, f"tensorrt-{precision}", lambda: runtime.load_engine(plan))
    if not zero_copy:
        return (lambda: engine(mel)), ["runtime host path: pinned copies in and out included"]
    x = to_device(mel)
    return (lambda: engine(x)), ["runtime zero-copy path: CUDA tensor in and out"]


def to_device(array: np.ndarray):
    """The CUDA tensor a zero-copy row feeds the engine."""
    import torch
    return torch.from_numpy(array).cuda()


def unavailable(backend: str, vocoder: str, settings: dict) -> str | None:
    """Why this backend cannot run here (checked before anything is loaded), or None."""
    device, precision = BACKENDS[backend]
    if backend.startswith(("torch-fused", "torch-fast")):
        return fast_tier_reason(backend, vocoder)
    if backend.startswith("tensorrt"):
        return tensorrt_reason(vocoder, precision, settings)
    if backend.startswith("onnxruntime-cuda"):
        return onnxruntime_cuda_reason()
    return cuda_reason() if device == "cuda" else None


def prepare(models: Models, backend: str, vocoder: str, mel: np.ndarray, batch: int, frames: int):
    """(run_once, notes) for one row of a backend that can run here (Skip if it still cannot)."""
    device, precision = BACKENDS[backend]
    if backend.startswith("tensorrt"):
        return _tensorrt(models, vocoder, mel, precision, backend.endswith("zero-copy"))
    if backend.startswith("torch-eager") or backend == "torch-cpu-fp32":
        return _torch_eager(models, vocoder, mel, precision == "fp16", device)
    if backend == "torch-cudagraph-fp16":
        return _torch_cudagraph(models, vocoder, mel)
    if backend.startswith(("torch-fused", "torch-fast")):
        return _torch_fast_tier(models, backend, vocoder, mel)
    if backend == "torch-compile-fp16":
        return _torch_compile(models, vocoder, mel, batch, frames)
    return _onnxruntime(models, vocoder, mel, precision, device)


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
def _memory_probe(models: Models, vocoder: str, backend: str):
    """Yields a dict that holds the row's GPU memory in MiB once the block ends (see MEMORY_METHOD)."""
    result: dict[str, float | None] = {"peak_mib": None}
    if BACKENDS[backend][0] != "cuda":
        yield result
        return
    import torch
    if backend.startswith("torch"):
        torch.cuda.reset_peak_memory_stats()
        yield result
        result["peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        yield result
        baseline = models.device_baseline.get((vocoder, backend), 0)
        result["peak_mib"] = max(0, gpu_bytes_in_use() - baseline) / 2 ** 20


# --- the benchmark ----------------------------------------------------------------------------


def plan_rows(vocoders: list[str], frames: list[int], batches: list[int], settings: dict,
              backends: list[str] | None = None) -> list[tuple[str, str, int, int]]:
    """(vocoder, backend, batch, frames) in measuring order; CPU rows at the configured small sizes."""
    cfg = settings["validate"]
    rows = []
    for vocoder in vocoders:
        for backend in backends or BACKENDS:
            device = BACKENDS[backend][0]
            sizes_f = frames if device == "cuda" else [f for f in cfg["bench_cpu_frames"]]
            sizes_b = batches if device == "cuda" else [b for b in cfg["bench_cpu_batches"]]
            rows += [(vocoder, backend, b, f) for f in sizes_f for b in sizes_b]
    return rows


def run_benchmark(vocoders: list[str], frames: list[int], batches: list[int], backends: list[str] | None = None,
                  budget_s: float | None = None, on_row: Callable[[dict], None] | None = None,
                  *, settings: dict) -> dict[str, Any]:
    """Measure every planned row; rows that cannot run carry the reason instead of numbers."""
    from tqdm import tqdm
    planned = plan_rows(vocoders, frames, batches, settings, backends)
    results: dict[str, Any] = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                               "machine": machine_info(), "memory_method": MEMORY_METHOD,
                               "settings": {k: v for k, v in settings["validate"].items() if k.startswith(("bench", "ort"))},
                               "rows": []}
    references: dict[tuple, np.ndarray] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        models = Models(settings, Path(workdir))
        previous_family = None
        for vocoder, backend, batch, frames_ in tqdm(planned, desc="bench", unit="row"):
            family = backend.split("-")[0]
            if family != previous_family and previous_family == "torch":
                models.release_torch()
            previous_family = family
            row = _measure(models, vocoder, backend, batch, frames_, references, settings,
                           None if budget_s is None else budget_s - (time.perf_counter() - started))
            results["rows"].append(asdict(row))
            if on_row:
                on_row(results)
        models.close()
    return results


def _measure(models: Models, vocoder: str, backend: str, batch: int, frames: int,
             references: dict, settings: dict, time_left: float | None) -> Row:
    device, precision = BACKENDS[backend]
    hop, rate = models.hop_and_rate(vocoder)
    row = Row(vocoder, backend, device, precision, batch, frames, audio_seconds=batch * frames * hop / rate)
    if time_left is not None and time_left <= 0:
        return _skipped(row, "the run's time budget (--budget-s) was spent before this row")
    reason = unavailable(backend, vocoder, settings)
    if reason:
        return _skipped(row, reason)
    mel = sample_mel(vocoder, frames, batch=batch, seed=frames)
    try:
        with _memory_probe(models, vocoder, backend) as memory:
            run, row.notes = prepare(models, backend, vocoder, mel, batch, frames)
            times, output = time_runs(run, device, settings)
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
    key = (vocoder, device, batch, frames)
    if backend == REFERENCE[device]:
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
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), help="default: all")
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
