"""What the execution contexts of pipeline.toml's profiles reserve, from the builder's own report.

TensorRT-RTX builds real plans on a CPU machine, and its builder logs "Total Activation Memory: N
bytes" once per optimization profile. With STATIC allocation every context reserves the largest
profile's figure; with ON_PROFILE_CHANGE (what runtime/engine.py asks for) each context reserves its
own profile's. `python tests/measure_profile_memory.py [v4|v3 ...]` exports the embedded synthetic
checkpoint (the activation sizes depend on the architecture and shapes, not the weights), builds it
with the profiles of pipeline.toml and prints both totals, per context count, as a table.
"""
from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.settings import VOCODERS  # noqa: E402

ACTIVATION = re.compile(r"Total Activation Memory: (\d+) bytes")


def activation_per_profile(onnx_path: Path, profiles, n_mels: int) -> list[int]:
    import tensorrt_rtx as trt

    class Collect(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.figures = []

        def log(self, severity, message):
            found = ACTIVATION.search(message)
            if found:
                self.figures.append(int(found.group(1)))

    logger = Collect()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(onnx_path)), parser.get_error(0).desc()
    config = builder.create_builder_config()
    for profile in profiles:
        made = builder.create_optimization_profile()
        made.set_shape(network.get_input(0).name, *profile.shapes(n_mels))
        config.add_optimization_profile(made)
    config.num_compute_capabilities = 1
    assert config.set_compute_capability(trt.ComputeCapability.SM89, 0)
    assert builder.build_serialized_network(network, config) is not None
    assert len(logger.figures) == len(profiles), logger.figures
    return logger.figures


def main(vocoders) -> None:
    from export.checkpoints import load_vocoder
    from export.to_onnx import onnx_from_module
    from pipeline.onnx_metadata import read_metadata
    from pipeline.settings import load_settings, profiles_for

    settings = load_settings()
    print("| vocoder | profile | activation memory (MiB) |\n| --- | --- | --- |")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for vocoder in vocoders:
            module = load_vocoder(vocoder, settings=settings)
            onnx_path = onnx_from_module(module, vocoder, Path(tmp) / f"{vocoder}.onnx", settings=settings, measure_stream=False)
            n_mels = int(read_metadata(onnx_path)["n_mels"])
            profiles = profiles_for(settings, vocoder)
            figures = activation_per_profile(onnx_path, profiles, n_mels)
            for profile, size in zip(profiles, figures, strict=True):
                print(f"| {vocoder} | {profile.name} max {list(profile.max)} | {size / 2**20:.1f} |")
            rows.append((vocoder, figures))
    print("\n| vocoder | contexts per profile | STATIC (MiB) | ON_PROFILE_CHANGE (MiB) |\n| --- | --- | --- | --- |")
    for vocoder, figures in rows:
        for n in (1, 2, 4):
            print(f"| {vocoder} | {n} | {n * len(figures) * max(figures) / 2**20:.1f} | {n * sum(figures) / 2**20:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:] or list(VOCODERS))
