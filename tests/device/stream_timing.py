"""Time to first audio of a streamed GPT-SoVITS v3/v4 segment against vocoding the whole segment.

GPT-SoVITS (48b1a01) makes a v3/v4 segment's mel in CFM chunks of T_chunk - T_ref frames (466 for
v3, 500 for v4 with a reference of at least T_ref frames) and vocodes the whole segment once the
last chunk is done. Streamed, the first chunk goes into a runtime.Stream in the pieces
serving.gpt_sovits pushes (one window each) and the first audio comes back after one small window.
This script measures, for v3 and v4 in fp16 at batch 1 with the default step schedule and the
context and lookahead the export stage measures for these weights:
- first audio: from the first chunk being on the GPU to its first audio being computed;
- whole segment: one vocoder call over all of it (what GPT-SoVITS does after its last chunk);
- the stream's total vocoder time for the segment, against that one call.
The PyTorch vocoder stands in for the engine, replayed through one CUDA graph per window shape
(eager PyTorch is launch-bound: a 64-frame v3 window would cost as much as a whole chunk). Median
of --repeats runs after one warm-up run that captures the graphs.

    python tests/device/stream_timing.py --output stream_timing.json                # GPU machine
    python tests/device/stream_timing.py --device cpu --frames 64 --output t.json   # quick check: fp32, no graphs
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from export.checkpoints import load_vocoder  # noqa: E402
from export.reach import stream_metadata  # noqa: E402
from pipeline.settings import VOCODERS, load_settings  # noqa: E402
from runtime.streaming import DEFAULT_STEPS, Stream  # noqa: E402
from vocoder_models.mels import sample_mel  # noqa: E402

CHUNK_FRAMES = {"v3": 934 - 468, "v4": 1000 - 500}  # T_chunk - T_ref of GPT-SoVITS' init_vocoder


class GraphedVocoder:
    """The vocoder replayed from one CUDA graph per input shape, captured on first use."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype):
        self.module, self.dtype, self.graphs = module, dtype, {}

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.shape not in self.graphs:
            self.graphs[mel.shape] = self._capture(mel.shape, mel.device)
        static_in, static_out, graph = self.graphs[mel.shape]
        static_in.copy_(mel)
        graph.replay()
        return static_out.clone()  # the next replay overwrites static_out

    def _capture(self, shape, device):
        static_in = torch.zeros(shape, dtype=self.dtype, device=device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.module(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.module(static_in)
        return static_in, static_out, graph


def eager(module: torch.nn.Module, dtype: torch.dtype):
    return lambda mel: module(mel.to(dtype))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_audio_seconds(infer, chunk: torch.Tensor, setting: dict, hop: int, device) -> float:
    """A new stream fed the first chunk one window's frames at a time, until audio comes back."""
    stream = Stream(infer, hop=hop, context_frames=setting["stream_context_frames"],
                    lookahead_frames=setting["stream_lookahead_frames"], step_frames=DEFAULT_STEPS)
    synchronize(device)
    started, start = time.perf_counter(), 0
    while True:
        count = stream.frames_needed
        audio = stream.push(chunk[:, :, start:start + count])
        start += count
        if audio.shape[2] or start >= chunk.shape[2]:
            break
    synchronize(device)
    seconds = time.perf_counter() - started
    stream.close()
    return seconds


def streamed_seconds(infer, mel: torch.Tensor, chunk_frames: int, setting: dict, hop: int, device) -> tuple:
    """The whole segment through a stream, chunk by chunk in one-window pieces; (seconds, window shapes)."""
    shapes = []
    stream = Stream(lambda window: shapes.append(window.shape[2]) or infer(window), hop=hop,
                    context_frames=setting["stream_context_frames"], lookahead_frames=setting["stream_lookahead_frames"],
                    step_frames=DEFAULT_STEPS)
    synchronize(device)
    started, start = time.perf_counter(), 0
    while start < mel.shape[2]:
        count = min(stream.frames_needed, chunk_frames - start % chunk_frames, mel.shape[2] - start)
        stream.push(mel[:, :, start:start + count])
        start += count
    stream.finish()
    synchronize(device)
    return time.perf_counter() - started, shapes


def whole_seconds(infer, mel: torch.Tensor, device) -> float:
    synchronize(device)
    started = time.perf_counter()
    infer(mel)
    synchronize(device)
    return time.perf_counter() - started


def measure(vocoder: str, frames: int, device: torch.device, repeats: int) -> dict:
    settings = load_settings()
    module = load_vocoder(vocoder, settings=settings)
    # the export stage's measurement, on the CPU in float64
    setting = stream_metadata(module, vocoder, settings["stream"]["snr_min_db"])
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    module = module.to(device=device, dtype=dtype).eval()
    frames = frames or 3 * CHUNK_FRAMES[vocoder]
    chunk_frames = min(CHUNK_FRAMES[vocoder], frames)
    mel = torch.from_numpy(sample_mel(vocoder, frames)).to(device=device, dtype=dtype)
    infer = GraphedVocoder(module, dtype) if device.type == "cuda" else eager(module, dtype)
    with torch.inference_mode():
        runs = [(first_audio_seconds(infer, mel[:, :, :chunk_frames], setting, module.hop, device),
                 whole_seconds(infer, mel, device), *streamed_seconds(infer, mel, chunk_frames, setting, module.hop, device))
                for _ in range(repeats + 1)][1:]  # the first run captures the graphs
    first, whole, total = (statistics.median(run[i] for run in runs) * 1000 for i in range(3))
    return {"vocoder": vocoder, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "dtype": str(dtype).replace("torch.", ""), "cuda_graphs": device.type == "cuda", "batch": 1,
            "segment_frames": frames, "chunk_frames": chunk_frames, "steps": list(DEFAULT_STEPS),
            "context_frames": setting["stream_context_frames"], "lookahead_frames": setting["stream_lookahead_frames"],
            "windows": runs[0][3], "repeats": repeats, "first_audio_ms": round(first, 3),
            "whole_segment_ms": round(whole, 3), "stream_total_ms": round(total, 3),
            "first_audio_speedup": round(whole / first, 2), "stream_work_ratio": round(total / whole, 2)}


def table(results: list) -> str:
    lines = ["| vocoder | device, dtype | segment (chunk) frames | context/lookahead | first audio | whole segment | "
             "stream total (x whole) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['vocoder']} | {r['device']}, {r['dtype']}{', CUDA graphs' if r['cuda_graphs'] else ''} | "
                     f"{r['segment_frames']} ({r['chunk_frames']}) | {r['context_frames']}/{r['lookahead_frames']} | "
                     f"{r['first_audio_ms']:.2f} ms | {r['whole_segment_ms']:.2f} ms | "
                     f"{r['stream_total_ms']:.2f} ms ({r['stream_work_ratio']:.2f}x) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="JSON file for the results")
    parser.add_argument("--device", default="cuda", help="cuda (fp16, CUDA graphs) or cpu (fp32, eager: a quick check)")
    parser.add_argument("--frames", type=int, default=0, help="segment length in mel frames (default: three CFM chunks)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per vocoder (median reported)")
    parser.add_argument("--vocoders", nargs="+", default=list(VOCODERS), choices=VOCODERS)
    args = parser.parse_args()
    device = torch.device(args.device)
    repeats = args.repeats if device.type == "cuda" else min(args.repeats, 2)
    results = [measure(vocoder, args.frames, device, repeats) for vocoder in args.vocoders]
    print(table(results))
    Path(args.output).write_text(json.dumps({"results": results, "torch": torch.__version__}, indent=2) + "\n",
                                 encoding="utf-8")


if __name__ == "__main__":
    main()
