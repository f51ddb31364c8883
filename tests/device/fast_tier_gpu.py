"""The PyTorch fast tier on a GPU, in one run: exactness of the fused activation and of the masked
windows, then timings beside the plain rows and the peers (CUDA events, median), the served path
(first calls at lengths that are not buckets, a run of 40 varied lengths), the stream on the tier,
the activation alone against the bytes it must move, and where v3's time goes (torch profiler).

    python tests/device/fast_tier_gpu.py --part all --output run.json     # everything, most valuable first
    python tests/device/fast_tier_gpu.py --part core --output core.json   # exactness, first calls, 40 lengths
    (--part first: exactness, curves, profile, NVIDIA's build; --part final: served path and peers)

Exactness (TF32 off, so float32 means float32): the fused kernel alone and the whole v3 model
with it, fp32 and fp16, at 1, 7, 500 and 2000 mel frames and batch 1 and 4, against the module in
float64 on the GPU; PyTorch float32 against the same truth gives the float32 noise level.
Timings (TF32 as torch leaves it): batch 1 at 100, 500, 2000 frames.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from export.checkpoints import load_vocoder  # noqa: E402
from pipeline.quality import audio_errors, bar_for, failures, max_error_over_peak, snr_db  # noqa: E402
from pipeline.settings import VOCODERS, load_settings  # noqa: E402
from runtime.streaming import DEFAULT_STEPS, Stream, architecture_window  # noqa: E402
from serving.torch_tier.fast import FastVocoder, choose_tier  # noqa: E402
from serving.torch_tier.fused import FusedAntiAliasedSnake, fuse_activations  # noqa: E402
from serving.torch_tier.kernel import antialiased_snake  # noqa: E402
from stream_timing import GraphedVocoder  # noqa: E402
from vocoder_models.mels import sample_mel  # noqa: E402

CUDA = torch.device("cuda")
FP16_BAR = bar_for(load_settings(), "fp16")
HOP = {"v3": 256, "v4": 480}
RATE = {"v3": 24000, "v4": 48000}
GOALS_MS = {100: 6.0, 500: 12.0, 2000: 40.0}


def log(*parts) -> None:
    print(*parts, flush=True)


def median_ms(run, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def mel_of(vocoder: str, batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(sample_mel(vocoder, frames, batch=batch, seed=seed)).to(CUDA)


def copy_bandwidth() -> float:
    a = torch.empty(1 << 30, dtype=torch.uint8, device=CUDA)
    b = torch.empty_like(a)
    ms = median_ms(lambda: b.copy_(a), 20)
    return 2 * a.numel() / ms / 1e9  # TB/s, bytes read plus written


# --- exactness ---------------------------------------------------------------------------------


def kernel_exactness(v3: torch.nn.Module) -> list:
    """The kernel alone on two of v3's activations (768 channels at 4x, 24 channels at 256x the frames):
    the one-gather form and the per-tap form, fp32 and fp16, and with a valid length (the rest NaN)."""
    rows = []
    for name in ("resblocks.0.activations.0", "activation_post"):
        module = copy.deepcopy(v3.get_submodule(name)).to(CUDA).float()
        fused = FusedAntiAliasedSnake(module)
        constants = fused.constants(CUDA)
        factor = 4 if name.startswith("resblocks.0") else 256
        for frames in (7, 500):
            for batch in (1, 4):
                torch.manual_seed(frames + batch)
                x = torch.randn(batch, fused.channels, frames * factor, device=CUDA) * 3
                valid = max(1, frames * factor - 5)
                poisoned = x.clone()
                poisoned[:, :, valid:] = float("nan")
                with torch.inference_mode():
                    truth = module.double()(x.double()).cpu().numpy()
                    truth_valid = module.double()(x[:, :, :valid].double()).cpu().numpy()
                    plain = module.float()(x).double().cpu().numpy()
                    out = antialiased_snake(x, *constants).double().cpu().numpy()
                    per_tap = antialiased_snake(x, *constants, one_gather=False).double().cpu().numpy()
                    masked = antialiased_snake(poisoned, *constants, valid=torch.tensor(valid, dtype=torch.int32, device=CUDA))
                    out16 = antialiased_snake(x.half(), *constants).double().cpu().numpy()
                    truth16 = module.double()(x.half().double()).cpu().numpy()
                e16 = audio_errors(truth16, out16)
                rows.append({"what": f"kernel {name}", "frames": frames, "batch": batch, "samples": frames * factor,
                             "fp32_snr_db": snr_db(truth, out), "fp32_max_err": max_error_over_peak(truth, out),
                             "per_tap_fp32_max_err": max_error_over_peak(truth, per_tap),
                             "torch_fp32_max_err": max_error_over_peak(truth, plain),
                             "masked_fp32_snr_db": snr_db(truth_valid, masked[:, :, :valid].double().cpu().numpy()),
                             "masked_zeros_after": bool((masked[:, :, valid:] == 0).all()),
                             "fp16_snr_db": e16["snr_db"], "fp16_cosine": e16["cosine"],
                             "fp16_pass": not failures(e16, FP16_BAR)})
                log(rows[-1])
    return rows


def model_exactness(v3: torch.nn.Module) -> list:
    """The whole v3 model with fused activations, fp32 and fp16, against the module in float64."""
    rows = []
    truth_model = copy.deepcopy(v3).to(CUDA).double()
    plain32 = copy.deepcopy(v3).to(CUDA).float()
    fused32 = copy.deepcopy(v3).to(CUDA).float()
    fuse_activations(fused32)
    fused16 = copy.deepcopy(v3).float()
    fuse_activations(fused16)
    fused16 = fused16.to(CUDA).half()
    for frames in (1, 7, 500, 2000):
        for batch in (1, 4):
            mel = mel_of("v3", batch, frames)
            with torch.inference_mode():
                truth = truth_model(mel.double()).cpu().numpy()
                plain = plain32(mel).double().cpu().numpy()
                out = fused32(mel).double().cpu().numpy()
                out16 = fused16(mel.half()).double().cpu().numpy()
            e16 = audio_errors(truth, out16)
            rows.append({"what": "v3 model", "frames": frames, "batch": batch,
                         "fused_fp32_snr_db": snr_db(truth, out), "fused_fp32_max_err": max_error_over_peak(truth, out),
                         "torch_fp32_snr_db": snr_db(truth, plain), "torch_fp32_max_err": max_error_over_peak(truth, plain),
                         "fused_fp16_snr_db": e16["snr_db"], "fused_fp16_cosine": e16["cosine"],
                         "fused_fp16_pass": not failures(e16, FP16_BAR)})
            log(rows[-1])
    del truth_model, plain32, fused32, fused16
    torch.cuda.empty_cache()
    return rows


def masked_exactness(v3: torch.nn.Module, v4: torch.nn.Module) -> list:
    """The tier's masked windows (fp32, TF32 off) against the module on the unpadded mel: fp32 (two
    different convolution shapes: float32 noise) and float64 (the truth, with PyTorch fp32's noise)."""
    rows = []
    for vocoder, module in (("v3", v3), ("v4", v4)):
        window = architecture_window(vocoder)
        fast = FastVocoder(copy.deepcopy(module).float().to(CUDA), HOP[vocoder], context=window.context,
                           lookahead=window.lookahead, fuse=vocoder == "v3", exact_after=None)
        plain = copy.deepcopy(module).float().to(CUDA)
        truth_model = copy.deepcopy(module).double().to(CUDA)
        for frames in (1, 97, 500, 2049):
            mel = mel_of(vocoder, 1, frames, seed=frames)
            with torch.inference_mode():
                truth = truth_model(mel.double()).cpu().numpy()
                ref = plain(mel).double().cpu().numpy()
                out = fast(mel).double().cpu().numpy()
            windows = [w.frames for w in fast.windows_for(frames).windows]
            rows.append({"what": f"{vocoder} masked fp32", "frames": frames, "windows": windows,
                         "snr_vs_plain_fp32": snr_db(ref, out), "max_err_vs_plain": max_error_over_peak(ref, out),
                         "snr_vs_float64": snr_db(truth, out), "plain_fp32_snr_vs_float64": snr_db(truth, ref),
                         "max_err_vs_float64": max_error_over_peak(truth, out),
                         "plain_max_err_vs_float64": max_error_over_peak(truth, ref)})
            log(rows[-1])
        rows.append({"what": f"{vocoder} stats", "stats": fast.stats()})
        del fast, plain, truth_model
        torch.cuda.empty_cache()
    return rows


def random_state(v3: torch.nn.Module, v4: torch.nn.Module) -> list:
    """A call that captures a graph (and one that replays it) leaves torch's CPU and CUDA random
    state as it was: GPT-SoVITS seeds a request and draws its CFM noise between vocoder calls."""
    rows = []
    for vocoder, module in (("v3", v3), ("v4", v4)):
        fast = tier(module, vocoder)
        mel = mel_of(vocoder, 1, 123).half()
        for call in ("capture", "replay"):
            torch.manual_seed(1234)
            before = (torch.get_rng_state(), torch.cuda.get_rng_state())
            with torch.no_grad():
                fast(mel)
            torch.cuda.synchronize()
            after = (torch.get_rng_state(), torch.cuda.get_rng_state())
            rows.append({"vocoder": vocoder, "call": call, "captures": fast.stats()["captures"],
                         "cpu_state_unchanged": bool(torch.equal(before[0], after[0])),
                         "cuda_state_unchanged": bool(torch.equal(before[1], after[1]))})
            log(rows[-1])
        del fast
        torch.cuda.empty_cache()
    return rows


# --- timings -----------------------------------------------------------------------------------


def fused_half(source: torch.nn.Module) -> torch.nn.Module:
    module = copy.deepcopy(source).float()
    fuse_activations(module)  # before .half(): the kernel's constants stay float32
    return module.to(CUDA).half()


def tier(source: torch.nn.Module, vocoder: str, **options) -> FastVocoder:
    window = architecture_window(vocoder)
    return FastVocoder(copy.deepcopy(source).float().to(CUDA), HOP[vocoder], context=window.context,
                       lookahead=window.lookahead, precision=torch.half, fuse=vocoder == "v3", **options)


def exact_module(source: torch.nn.Module, vocoder: str) -> torch.nn.Module:
    return fused_half(source) if vocoder == "v3" else copy.deepcopy(source).to(CUDA).half()


def curves(v3: torch.nn.Module, v4: torch.nn.Module) -> list:
    """Exact-length graphs and the tier's masked windows (first calls: exact_after=None) at lengths
    that are buckets and lengths that are not: the time per length the bucket spacing comes from."""
    rows = []
    for vocoder, source in (("v3", v3), ("v4", v4)):
        exact = GraphedVocoder(exact_module(source, vocoder), torch.half)
        fast = tier(source, vocoder, exact_after=None)
        for frames in (64, 100, 128, 256, 500, 1000, 2000):
            mel = mel_of(vocoder, 1, frames).half()
            with torch.inference_mode():
                exact_ms = median_ms(partial(exact, mel), 15 if frames < 1000 else 8)
                fast_ms = median_ms(partial(fast, mel), 15 if frames < 1000 else 8)
            rows.append({"vocoder": vocoder, "frames": frames, "exact_graph_ms": exact_ms, "tier_ms": fast_ms,
                         "bucket": fast.windows_for(frames).windows[0].frames, "ratio": fast_ms / exact_ms})
            log(rows[-1])
        rows.append({"vocoder": vocoder, "stats": fast.stats()})
        del exact, fast
        torch.cuda.empty_cache()
    return rows


def profile_v3(v3: torch.nn.Module, frames: int = 500) -> list:
    """Where v3's time goes (fused, fp16, eager, torch profiler): kernels by device time per forward."""
    from torch.profiler import ProfilerActivity, profile
    module = fused_half(v3)
    mel = mel_of("v3", 1, frames).half()
    with torch.inference_mode():
        for _ in range(3):
            module(mel)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                module(mel)
            torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        device_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if device_us:
            rows.append({"kernel": event.key[:140], "calls": event.count // 3, "ms_per_forward": device_us / 3e3})
    rows.sort(key=lambda r: -r["ms_per_forward"])
    total = sum(r["ms_per_forward"] for r in rows)

    def kind(name: str) -> str:
        lowered = name.lower()
        if "antialiased" in lowered:
            return "fused activation"
        if any(k in lowered for k in ("conv", "cudnn", "xmma", "gemm", "implicit", "winograd", "fft", "sm90", "cutlass")):
            return "convolution"
        return "other"
    kinds: dict = {}
    for r in rows:
        kinds[kind(r["kernel"])] = kinds.get(kind(r["kernel"]), 0.0) + r["ms_per_forward"]
    log({"frames": frames, "total_ms": total, "by_kind": kinds})
    for r in rows[:25]:
        log(r)
    return [{"frames": frames, "total_ms": total, "by_kind": kinds}] + rows[:40]


def cudnn_choice(v3: torch.nn.Module) -> list:
    """v3's exact-length fused graph with cuDNN's default algorithm choice and with benchmark mode."""
    rows = []
    for benchmark in (False, True):
        torch.backends.cudnn.benchmark = benchmark
        exact = GraphedVocoder(fused_half(v3), torch.half)
        for frames in (500, 2000):
            mel = mel_of("v3", 1, frames).half()
            with torch.inference_mode():
                ms = median_ms(partial(exact, mel), 10)
            rows.append({"cudnn_benchmark": benchmark, "frames": frames, "exact_graph_ms": ms})
            log(rows[-1])
        del exact
    torch.backends.cudnn.benchmark = False
    return rows


def nvidia_check(v3: torch.nn.Module) -> dict:
    """NVIDIA's BigVGAN with its CUDA kernel builds here and computes v3 (fp32 against the module)."""
    from validate import nvidia_bigvgan
    began = time.time()
    module = nvidia_bigvgan.build(v3.state_dict())
    result = {"build_s": time.time() - began, "why_not": nvidia_bigvgan.unavailable()}
    plain = copy.deepcopy(v3).to(CUDA).float()
    mel = mel_of("v3", 1, 100)
    torch.backends.cudnn.allow_tf32 = False
    with torch.inference_mode():
        ref, out = plain(mel).double().cpu().numpy(), module.float()(mel).double().cpu().numpy()
    torch.backends.cudnn.allow_tf32 = True
    result.update({"fp32_snr_vs_module": snr_db(ref, out), "fp32_max_err": max_error_over_peak(ref, out)})
    graph = GraphedVocoder(module.half(), torch.half)
    with torch.inference_mode():
        result["graph_fp16_ms_500"] = median_ms(partial(graph, mel_of("v3", 1, 500).half()), 15)
    log(result)
    return result


PEERS = ["torch-cudagraph-fp16", "torch-fused-cudagraph-fp16", "torch-fast-fp16",
         "nvidia-bigvgan-cuda-fp16", "torch-compile-cudagraph-fp16"]


def peer_rows(v3: torch.nn.Module, v4: torch.nn.Module) -> list:
    """The rows of `validate bench` (its own code), on this card in this run, at batch 1 fp16
    (`--peers` names a subset, e.g. to finish a run that ran out of time)."""
    import tempfile

    from validate import bench
    settings = load_settings()
    settings["validate"]["bench_row_seconds"] = 1.0  # five runs at least, then at most a second a row
    rows = []
    backends = PEERS
    with tempfile.TemporaryDirectory() as work:
        models = bench.Models(settings, Path(work))
        for vocoder in VOCODERS:
            models._cache[("metadata", vocoder)] = {"hop": HOP[vocoder], "sampling_rate": RATE[vocoder]}
        for vocoder in VOCODERS:
            for backend in backends:
                if vocoder == "v4" and backend.startswith("torch-compile"):
                    continue  # its minute of compiling is spent on v3, the model the goals compare
                for frames in (100, 500, 2000):
                    began = time.time()
                    row = bench._measure(models, vocoder, backend, 1, frames, {}, settings, None)
                    rows.append({"vocoder": vocoder, "backend": backend, "frames": frames, "median_ms": row.median_ms,
                                 "p10_ms": row.p10_ms, "p90_ms": row.p90_ms, "status": row.status, "reason": row.reason,
                                 "notes": row.notes, "row_s": time.time() - began})
                    log(rows[-1])
            models.release_torch()
        models.close()
    return rows


def varied_lengths(v3: torch.nn.Module, v4: torch.nn.Module, count: int = 40) -> list:
    """40 distinct lengths between 60 and 900 frames, each a first call on the tier (its buckets'
    graphs captured beforehand, the capture timed), against each length's own exact graph."""
    import random
    rows = []
    lengths = random.Random(28).sample(range(60, 901), count)
    for vocoder, source in (("v3", v3), ("v4", v4)):
        fast = tier(source, vocoder, exact_after=None)
        torch.cuda.synchronize()
        began = time.perf_counter()
        with torch.inference_mode():
            for bucket in sorted({fast.windows_for(n).windows[0].frames for n in lengths}):
                fast(mel_of(vocoder, 1, bucket).half())
        torch.cuda.synchronize()
        capture_s = time.perf_counter() - began
        exact = GraphedVocoder(exact_module(source, vocoder), torch.half)
        served, own = [], []
        with torch.inference_mode():
            for n in lengths:
                mel = mel_of(vocoder, 1, n, seed=n).half()
                served.append(median_ms(partial(fast, mel), 1, warmup=0))  # the length's first call
                own.append(median_ms(partial(exact, mel), 3))
        ratios = [a / b for a, b in zip(served, own, strict=True)]
        rows.append({"vocoder": vocoder, "lengths": lengths, "served_ms": served, "exact_graph_ms": own,
                     "sum_served_ms": sum(served), "sum_exact_ms": sum(own), "ratio_of_sums": sum(served) / sum(own),
                     "max_ratio": max(ratios), "median_ratio": statistics.median(ratios),
                     "bucket_capture_s": capture_s, "stats": fast.stats()})
        log({k: v for k, v in rows[-1].items() if k not in ("lengths", "served_ms", "exact_graph_ms")})
        del fast, exact
        torch.cuda.empty_cache()
    return rows


def first_calls(v3: torch.nn.Module, v4: torch.nn.Module) -> list:
    """The served path at 100 / 500 / 2000 frames (not buckets), each timed as a first call at that
    length (exact_after=None), beside the exact-length graph, in the same process."""
    rows = []
    for vocoder, source in (("v3", v3), ("v4", v4)):
        fast = tier(source, vocoder, exact_after=None)
        exact = GraphedVocoder(exact_module(source, vocoder), torch.half)
        for frames in (100, 500, 2000):
            mel = mel_of(vocoder, 1, frames).half()
            with torch.inference_mode():
                exact_ms = median_ms(partial(exact, mel), 20 if frames < 2000 else 10)
                served_ms = median_ms(partial(fast, mel), 20 if frames < 2000 else 10)
            rows.append({"vocoder": vocoder, "frames": frames, "bucket": fast.windows_for(frames).windows[0].frames,
                         "exact_graph_ms": exact_ms, "served_ms": served_ms, "ratio": served_ms / exact_ms})
            log(rows[-1])
        if vocoder == "v3":
            rows += stream_rows(fast, architecture_window("v3"))
        rows.append({"vocoder": vocoder, "stats": fast.stats()})
        del fast, exact
        torch.cuda.empty_cache()
    return rows


def stream_rows(fast: FastVocoder, window) -> list:
    """v3 streamed through the tier's graphs: first audio after the first CFM chunk, and the whole
    segment (four CFM chunks of 466 frames) streamed against one pass over it."""
    chunk, segment = 466, 4 * 466
    mel = mel_of("v3", 1, segment).half()

    def new_stream():
        return Stream(fast, hop=256, context_frames=window.context, lookahead_frames=window.lookahead,
                      step_frames=DEFAULT_STEPS)

    def first_audio():
        stream, start = new_stream(), 0
        torch.cuda.synchronize()
        began = time.perf_counter()
        while True:
            count = stream.frames_needed
            audio = stream.push(mel[:, :, start:start + count])
            start += count
            if audio.shape[2]:
                break
        torch.cuda.synchronize()
        stream.close()
        return (time.perf_counter() - began) * 1e3

    def whole_stream():
        stream, start = new_stream(), 0
        torch.cuda.synchronize()
        began = time.perf_counter()
        while start < segment:
            count = min(max(stream.frames_needed, 1), chunk - start % chunk, segment - start)
            stream.push(mel[:, :, start:start + count])
            start += count
        stream.finish()
        torch.cuda.synchronize()
        return (time.perf_counter() - began) * 1e3

    def one_pass():
        torch.cuda.synchronize()
        began = time.perf_counter()
        fast(mel)
        torch.cuda.synchronize()
        return (time.perf_counter() - began) * 1e3

    for _ in range(2):  # capture every window's graph
        first_audio(), whole_stream(), one_pass()
    rows = [{"vocoder": "v3", "backend": "stream on torch-fast-fp16", "what": what,
             "median_ms": statistics.median(fn() for _ in range(10))}
            for what, fn in (("first audio after the first chunk", first_audio), ("whole segment streamed", whole_stream),
                             (f"one pass over the segment ({segment} frames)", one_pass))]
    for r in rows:
        log(r)
    return rows


def activation_alone(v3: torch.nn.Module, frames: int = 500) -> dict:
    """Every fused activation of v3 at `frames`, replayed as one graph, against the bytes they move."""
    shapes = []

    def hook(module, args, output):
        shapes.append((module, tuple(args[0].shape)))
    probe = copy.deepcopy(v3).float()
    fuse_activations(probe)
    probe = probe.to(CUDA).half()
    handles = [m.register_forward_hook(hook) for m in probe.modules() if isinstance(m, FusedAntiAliasedSnake)]
    with torch.inference_mode():
        probe(mel_of("v3", 1, frames).half())
    for h in handles:
        h.remove()
    inputs = [(m, torch.randn(s, device=CUDA).half()) for m, s in shapes]
    constants = [m.constants(CUDA) for m, _ in inputs]
    result = {"frames": frames, "activations": len(inputs)}
    for label, call in (("fused", lambda m, x, c: antialiased_snake(x, *c)),
                        ("fused_per_tap", lambda m, x, c: antialiased_snake(x, *c, one_gather=False)),
                        ("plain", lambda m, x, c: m.downsample(m.act(m.upsample(x))))):
        def run_all(call=call):
            for (m, x), c in zip(inputs, constants, strict=True):
                call(m, x, c)
        with torch.inference_mode():
            run_all()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                run_all()
            result[f"{label}_ms"] = median_ms(graph.replay, 20)
    moved = sum(2 * x.numel() * x.element_size() for _, x in inputs)
    result["bytes_moved"] = moved
    result["fused_tb_per_s"] = moved / result["fused_ms"] / 1e9
    samples = sum(x.numel() for _, x in inputs)
    result["fused_gsamples_per_s"] = samples / result["fused_ms"] / 1e6
    result["per_tap_tb_per_s"] = moved / result["fused_per_tap_ms"] / 1e9
    log(result)
    return result


def section(report: dict, name: str, fn, *args) -> None:
    """Run one part; a failure is logged with its traceback and the next part still runs."""
    began = time.time()
    try:
        report[name] = fn(*args)
    except Exception:
        import traceback
        traceback.print_exc()
        report[name + "_error"] = traceback.format_exc()
    log(f"## {name}: {time.time() - began:.1f} s")


# (section, function, the vocoders it takes), in the order of what matters most when time runs out
FIRST = [("masked_exactness", masked_exactness, "v3", "v4"), ("random_state", random_state, "v3", "v4"),
         ("kernel_exactness", kernel_exactness, "v3"),
         ("activation_alone", activation_alone, "v3"), ("model_exactness", model_exactness, "v3"),
         ("curves", curves, "v3", "v4"), ("profile_v3", profile_v3, "v3"), ("cudnn_choice", cudnn_choice, "v3"),
         ("nvidia_check", nvidia_check, "v3")]
FINAL = [("first_calls", first_calls, "v3", "v4"), ("varied_lengths", varied_lengths, "v3", "v4"),
         ("peers", peer_rows, "v3", "v4")]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="fast_tier.json")
    parser.add_argument("--part", choices=("first", "final", "all", "core", "peers", "convolutions"), default="all")
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=PEERS, help="the peer rows to run")
    args = parser.parse_args()
    PEERS[:] = args.peers
    import triton
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "triton": triton.__version__, "tier": choose_tier(CUDA), "part": args.part}
    log(report)
    report["copy_tb_per_s"] = copy_bandwidth()
    log("copy bandwidth", report["copy_tb_per_s"], "TB/s")
    began = time.time()
    v3, v4 = (load_vocoder(v, settings=load_settings()).eval() for v in VOCODERS)
    log(f"loaded in {time.time() - began:.1f} s")

    def save():
        Path(args.output).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    everything = FIRST[:3] + FINAL[:2] + [FIRST[3], FIRST[6]] + FINAL[2:] + [FIRST[7], FIRST[5]]
    parts = {"first": FIRST, "final": FINAL, "all": everything, "core": FIRST[:2] + FINAL[:2] + [FIRST[2]],
             "peers": FINAL[2:], "convolutions": [FIRST[7], FIRST[5]]}[args.part]
    for name, fn, *needs in parts:
        exact = name.endswith("exactness")
        torch.backends.cudnn.allow_tf32 = not exact  # exactness: float32 means float32
        torch.backends.cuda.matmul.allow_tf32 = not exact
        section(report, name, fn, *(v3 if need == "v3" else v4 for need in needs))
        save()
    if "peers" in report:
        log("\n| vocoder | backend | frames | median ms | notes |\n| --- | --- | --- | --- | --- |")
        for r in report["peers"]:
            value = f"{r['median_ms']:.2f}" if r["median_ms"] is not None else r["reason"][:90]
            log(f"| {r['vocoder']} | {r['backend']} | {r['frames']} | {value} | {'; '.join(r['notes'])[:90]} |")
    save()
    return 0 if not any(k.endswith("_error") for k in report) else 1


if __name__ == "__main__":
    sys.exit(main())
