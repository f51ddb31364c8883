"""The PyTorch fast tier on a GPU, in one run: exactness of the fused activation, then timings
beside the plain rows (CUDA events, median), the stream on the tier, and the activation alone
against the bytes it must move.

    python tests/device/fast_tier_gpu.py --output fast_tier.json    # on the GPU machine

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
    """The kernel alone on two of v3's activations (768 channels at 4x, 24 channels at 256x the frames)."""
    rows = []
    for name in ("resblocks.0.activations.0", "activation_post"):
        module = copy.deepcopy(v3.get_submodule(name)).to(CUDA).float()
        fused = FusedAntiAliasedSnake(module)
        factor = 4 if name.startswith("resblocks.0") else 256
        for frames in (1, 7, 500, 2000):
            for batch in (1, 4):
                torch.manual_seed(frames + batch)
                x = torch.randn(batch, fused.channels, frames * factor, device=CUDA) * 3
                with torch.inference_mode():
                    truth = module.double()(x.double()).cpu().numpy()
                    plain = module.float()(x).double().cpu().numpy()
                    out = antialiased_snake(x, *fused.constants(CUDA)).double().cpu().numpy()
                    out16 = antialiased_snake(x.half(), *fused.constants(CUDA)).double().cpu().numpy()
                    truth16 = module.double()(x.half().double()).cpu().numpy()
                e16 = audio_errors(truth16, out16)
                rows.append({"what": f"kernel {name}", "frames": frames, "batch": batch, "samples": frames * factor,
                             "fp32_snr_db": snr_db(truth, out), "fp32_max_err": max_error_over_peak(truth, out),
                             "torch_fp32_max_err": max_error_over_peak(truth, plain),
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


def bucketed_exactness(v3: torch.nn.Module, v4: torch.nn.Module) -> list:
    """The tier's bucketed graphs (fp32, TF32 off) against the exact-length plain module."""
    rows = []
    for vocoder, module in (("v3", v3), ("v4", v4)):
        window = architecture_window(vocoder)
        fast = FastVocoder(copy.deepcopy(module).float().to(CUDA), HOP[vocoder], context=window.context,
                           lookahead=window.lookahead, fuse=vocoder == "v3")
        plain = copy.deepcopy(module).float().to(CUDA)
        for frames in (100, 500, 2000, 2500):
            mel = mel_of(vocoder, 1, frames)
            with torch.inference_mode():
                ref = plain(mel).double().cpu().numpy()
                out = fast(mel).double().cpu().numpy()
            rows.append({"what": f"{vocoder} bucketed fp32 vs plain fp32", "frames": frames, "snr_db": snr_db(ref, out),
                         "max_err": max_error_over_peak(ref, out), "stats": fast.stats()})
            log({k: v for k, v in rows[-1].items() if k != "stats"})
        del fast, plain
        torch.cuda.empty_cache()
    return rows


# --- timings -----------------------------------------------------------------------------------


def timings(v3: torch.nn.Module, v4: torch.nn.Module) -> tuple[list, dict]:
    rows, tier_stats = [], {}
    for vocoder, source in (("v3", v3), ("v4", v4)):
        window = architecture_window(vocoder)
        plain32 = copy.deepcopy(source).to(CUDA).float()
        plain16 = copy.deepcopy(source).to(CUDA).half()
        variants = {"torch-eager-fp32": (plain32, torch.float32),
                    "torch-cudagraph-fp16": (GraphedVocoder(plain16, torch.half), torch.half)}
        if vocoder == "v3":
            fused32 = copy.deepcopy(source).float()
            fuse_activations(fused32)
            fused32 = fused32.to(CUDA)
            fused16 = copy.deepcopy(source).float()
            fuse_activations(fused16)
            fused16 = fused16.to(CUDA).half()
            variants.update({"torch-fused-fp32": (fused32, torch.float32), "torch-fused-fp16": (fused16, torch.half),
                             "torch-fused-cudagraph-fp16": (GraphedVocoder(fused16, torch.half), torch.half)})
        fast = FastVocoder(copy.deepcopy(source).float().to(CUDA), HOP[vocoder], context=window.context,
                           lookahead=window.lookahead, precision=torch.half, fuse=vocoder == "v3")
        if fast.device.type != "cuda":
            raise RuntimeError(f"the tier's module is on {fast.device}, not the GPU")
        variants["torch-bucketed-cudagraph-fp16" if vocoder == "v4" else "torch-fast-fp16"] = (fast, torch.half)
        for frames in (100, 500, 2000):
            mel = mel_of(vocoder, 1, frames)
            for name, (run, dtype) in variants.items():
                x = mel.to(dtype)
                with torch.inference_mode():
                    ms = median_ms(lambda run=run, x=x: run(x), repeats=20 if frames < 2000 else 10)
                rows.append({"vocoder": vocoder, "backend": name, "frames": frames, "median_ms": ms})
                log(rows[-1])
        tier_stats[vocoder] = fast.stats()
        if vocoder == "v3":
            rows += stream_rows(fast, window)
        del variants, plain32, plain16, fast
        torch.cuda.empty_cache()
    return rows, tier_stats


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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="fast_tier.json")
    parser.add_argument("--skip-exactness", action="store_true")
    args = parser.parse_args()
    import triton
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "triton": triton.__version__, "tier": choose_tier(CUDA)}
    log(report)
    report["copy_tb_per_s"] = copy_bandwidth()
    log("copy bandwidth", report["copy_tb_per_s"], "TB/s")
    began = time.time()
    v3, v4 = (load_vocoder(v, settings=load_settings()).eval() for v in VOCODERS)
    log(f"loaded in {time.time() - began:.1f} s")
    if not args.skip_exactness:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        section(report, "kernel_exactness", kernel_exactness, v3)
        section(report, "model_exactness", model_exactness, v3)
        section(report, "bucketed_exactness", bucketed_exactness, v3, v4)
        torch.backends.cudnn.allow_tf32 = True
    section(report, "activation_alone", activation_alone, v3)
    section(report, "timings", timings, v3, v4)
    if "timings" not in report:
        return 1
    report["timings"], report["tier_stats"] = report["timings"]
    Path(args.output).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    log("\n| vocoder | backend | frames | median ms |\n| --- | --- | --- | --- |")
    for r in report["timings"]:
        log(f"| {r['vocoder']} | {r['backend']} | {r.get('frames', r.get('what'))} | {r['median_ms']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
