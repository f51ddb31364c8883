"""A tiny plan with a vocoder's interface, built with whichever TensorRT builder is installed.

The network is one transposed convolution, mel (batch, n_mels, frames) -> audio (batch, 1,
frames * hop), so numpy gives its exact output and the plan builds in seconds. The manifest
follows docs/architecture.md, as the build stage writes it. Used by the GPU tests and the device
script; `python tests/device/tiny_plan.py OUT_DIR [--backend tensorrt_rtx] [--targets SM86,SM89]`.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import time
from pathlib import Path

import numpy as np

HOP, N_MELS, SAMPLING_RATE = 480, 100, 48000  # v4's interface
PROFILES = [{"name": "short", "min": [1, N_MELS, 1], "opt": [1, N_MELS, 64], "max": [2, N_MELS, 128]},
            {"name": "long", "min": [1, N_MELS, 1], "opt": [1, N_MELS, 256], "max": [1, N_MELS, 512]}]


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
        profile.set_shape("mel", entry["min"], entry["opt"], entry["max"])
        config.add_optimization_profile(profile)
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"{trt.__name__} could not build the tiny plan")
    plan = bytes(plan)
    plan_path = out_dir / "tiny.plan"
    plan_path.write_bytes(plan)
    manifest = {
        "format": 1, "vocoder": "tiny-v4-interface", "precision": "fp32",
        "backend": trt.__name__, "backend_version": trt.__version__,
        "sampling_rate": SAMPLING_RATE, "hop": HOP, "n_mels": N_MELS,
        # a stride-hop, kernel-hop transposed convolution: no frame reaches a neighbour's audio
        "receptive_field_frames": [0, 0], "stream_context_frames": 0, "stream_lookahead_frames": 0,
        "input": {"name": "mel", "dtype": "float32", "shape": [-1, N_MELS, -1]},
        "output": {"name": "audio", "dtype": "float32", "shape": [-1, 1, -1]},
        "profiles": PROFILES,
        "compute_capabilities": targets if trt.__name__ == "tensorrt_rtx" else None,
        "hardware_compatibility": "none", "version_compatible": False,
        "workspace_bytes": 1 << 30, "optimization_level": 3,
        "onnx": {"path": str(onnx_path), "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest()},
        "checkpoint": {"source": "tests/device/tiny_plan.py", "sha256": "synthetic"}, "synthetic": True,
        "plan": {"file": plan_path.name, "size": len(plan), "sha256": hashlib.sha256(plan).hexdigest()},
        "build_seconds": round(time.perf_counter() - start, 2), "builder": "python", "trtexec": None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out_dir / "tiny.json").write_text(json.dumps(manifest, indent=2))
    return plan_path


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
