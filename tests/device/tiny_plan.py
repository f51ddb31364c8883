"""A tiny plan with a vocoder's interface, built with whichever TensorRT builder is installed.

The network is one transposed convolution, mel (batch, n_mels, frames) -> audio (batch, 1,
frames * hop), so numpy gives its exact output and the plan builds in seconds. The manifest is
written by tests/factories.write_plan, i.e. by the build stage's own make_manifest. Used by the GPU
tests and the device script; `python tests/device/tiny_plan.py OUT_DIR [--backend tensorrt_rtx]
[--targets SM86,SM89]` (from the repository root).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent.parent
HOP, N_MELS, SAMPLING_RATE = 480, 100, 48000  # v4's interface
PROFILES = [{"name": "short", "min": [1, 1], "opt": [1, 64], "max": [2, 128]},   # [batch, frames]
            {"name": "long", "min": [1, 1], "opt": [1, 256], "max": [1, 512]}]


def tiny_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N_MELS, 1, HOP)) * 0.01).astype(np.float32), np.array([0.01], np.float32)


def reference_audio(mel: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the tiny network computes: each frame's mel times the kernel, laid end to end."""
    weight, bias = tiny_weights(seed)
    frames = np.einsum("bct,ck->btk", mel.astype(np.float64), weight[:, 0].astype(np.float64)) + bias[0]
    return frames.reshape(mel.shape[0], 1, -1).astype(np.float32)


def tiny_onnx(path: Path, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    weight, bias = tiny_weights(seed)
    node = helper.make_node("ConvTranspose", ["mel", "weight", "bias"], ["audio"], kernel_shape=[HOP], strides=[HOP])
    graph = helper.make_graph([node], "tiny_vocoder",
                              [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", N_MELS, "frames"])],
                              [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", 1, "samples"])],
                              [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def build_tiny_plan(out_dir: str | Path, backend: str | None = None, targets: list[str] | None = None) -> Path:
    """Write tiny.plan and tiny.json into `out_dir`; raise RuntimeError if the builder fails."""
    for folder in (TESTS, TESTS.parent):  # factories and the stages it builds on, when run as a script
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    from factories import write_plan

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trt = importlib.import_module(backend) if backend else _any_backend()
    onnx_path = tiny_onnx(out_dir / "tiny.onnx")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        raise RuntimeError("; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    if trt.__name__ == "tensorrt_rtx":
        targets = targets or ["SM75", "SM80", "SM86", "SM89", "SM120"]
        config.num_compute_capabilities = len(targets)
        for i, target in enumerate(targets):
            config.set_compute_capability(getattr(trt.ComputeCapability, target), i)
    for entry in PROFILES:
        profile = builder.create_optimization_profile()
        profile.set_shape("mel", *((entry[k][0], N_MELS, entry[k][1]) for k in ("min", "opt", "max")))
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"{trt.__name__} could not build the tiny plan")
    # a stride-hop, kernel-hop transposed convolution: no frame reaches a neighbour's audio
    return write_plan(out_dir, vocoder="tiny-v4-interface", precision="fp32", backend=trt.__name__,
                      version=trt.__version__, plan_bytes=bytes(plan), onnx_path=onnx_path, profiles=PROFILES,
                      n_mels=N_MELS, hop=HOP, sampling_rate=SAMPLING_RATE, name="tiny.plan",
                      targets=targets if trt.__name__ == "tensorrt_rtx" else None,
                      receptive_field_frames=[0, 0], stream_context_frames=0, stream_lookahead_frames=0)


def _any_backend():
    for name in ("tensorrt", "tensorrt_rtx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise RuntimeError("neither tensorrt nor tensorrt_rtx is installed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--targets", default=None, help="TensorRT-RTX targets, e.g. SM86,SM89")
    args = parser.parse_args()
    print(build_tiny_plan(args.out_dir, args.backend, args.targets.split(",") if args.targets else None))
