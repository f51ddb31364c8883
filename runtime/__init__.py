"""Thin standalone runtime for the vocoder plans: numpy, TensorRT (or TensorRT-RTX) and a CUDA binding
(pycuda or cuda-bindings) only.

Copy this folder into a service. `import runtime` loads neither torch nor onnx (nor the CUDA
binding or TensorRT, which load with the first plan):

    engine = runtime.load_engine("engines/v4.fp16.plan")   # checks the manifest, GPU and backend first
    audio = engine(mel)    # (batch, 100, frames) natural-log mel -> (batch, 1, frames * engine.hop) float32
    with engine.stream() as stream:      # audio while the mel is still coming (runtime/streaming.py)
        audio = stream.push(mel_chunk)   # ... and stream.finish() for the rest
"""
from runtime.batching import choose_profile
from runtime.chunks import chunk_starts, synthesize
from runtime.engine import Engine, load_engine
from runtime.errors import EngineError, PlanNotRunnable, RuntimeUserError
from runtime.manifest import check_plan_bytes, read_manifest
from runtime.mel import check_mel
from runtime.runnable import check_runnable, plan_blocker, why_not_runnable
from runtime.streaming import Stream
from runtime.wav import to_pcm16, write_wav

__all__ = ["Engine", "EngineError", "PlanNotRunnable", "RuntimeUserError", "check_mel", "check_plan_bytes",
           "check_runnable", "choose_profile", "chunk_starts", "load_engine", "plan_blocker", "read_manifest",
           "Stream", "synthesize", "to_pcm16", "why_not_runnable", "write_wav"]
