"""The graphsurgeon cleanup: same outputs, far fewer nodes, metadata kept, bad files named in one line."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from export.clean import clean, clean_graph, load_model, op_counts
from export.mels import sample_mel
from pipeline.onnx_metadata import read_metadata
from pipeline.onnx_tools import cpu_session, run_audio
from pipeline.settings import VOCODERS, load_settings

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent
NODE_LIMITS = {"v3": 1500, "v4": 260}
FOLDABLE_OPS = {"Constant", "ConstantOfShape", "Identity", "Reshape", "Expand", "Exp", "Reciprocal", "Where", "Equal"}


@pytest.mark.parametrize("vocoder", VOCODERS)
def test_cleanup_keeps_outputs_and_shrinks_the_graph(vocoder, request):
    exported = load_model(request.getfixturevalue(f"onnx_{vocoder}"))
    cleaned = clean_graph(exported)
    counts = op_counts(cleaned)
    assert len(cleaned.graph.node) <= NODE_LIMITS[vocoder], counts
    assert not FOLDABLE_OPS & set(counts), counts
    tolerance = load_settings()["clean"]["parity_rel_tol"]
    for batch, frames in ((1, 1), (2, 7), (1, 64)):
        mel = sample_mel(vocoder, frames, batch=batch, seed=frames)
        expected, actual = (run_audio(cpu_session(model), mel) for model in (exported, cleaned))
        assert actual.shape == expected.shape
        assert np.abs(actual - expected).max() <= tolerance * np.abs(expected).max()


def test_cleaned_pads_are_constant_edge_pads(onnx_v3):
    """TensorRT takes edge padding only with constant pad amounts."""
    cleaned = clean_graph(load_model(onnx_v3))
    constants = {t.name for t in cleaned.graph.initializer}
    pads = [node for node in cleaned.graph.node if node.op_type == "Pad"]
    assert pads
    for node in pads:
        assert node.input[1] in constants, node.name
        assert {a.name: a.s for a in node.attribute}.get("mode") == b"edge", node.name


def test_fp32_output_keeps_metadata_and_types(onnx_v4, tmp_path):
    output = clean(onnx_v4, "fp32", tmp_path / "v4.fp32.onnx")
    metadata = read_metadata(output)
    original = read_metadata(onnx_v4)
    assert {k: metadata[k] for k in original} == original
    assert metadata["precision"] == "fp32" and metadata["precision_plan"] == "v4.fp32.plan.json"
    assert (tmp_path / "v4.fp32.plan.json").is_file()
    model = onnx.load(str(output))
    assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.FLOAT}


def _run_clean_cli(*args):
    return subprocess.run([sys.executable, "-m", "export.clean", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, encoding="utf-8", timeout=300)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_bad_onnx_file_gives_one_line_error(damage, onnx_v4, tmp_path):
    broken = tmp_path / "broken.onnx"
    if damage == "truncated":
        data = onnx_v4.read_bytes()
        broken.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        broken.write_bytes(b"this is not a protobuf" * 100)
    output = tmp_path / "out.onnx"
    result = _run_clean_cli(broken, "--precision", "fp16", "--output", output)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.onnx" in lines[0], result.stderr
    assert not output.exists() and not list(tmp_path.glob(".out.onnx.*"))


def test_unknown_precision_gives_one_line_error(onnx_v4, tmp_path):
    result = _run_clean_cli(onnx_v4, "--precision", "int3", "--output", tmp_path / "out.onnx")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown precision 'int3'")
