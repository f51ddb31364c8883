"""The graphsurgeon cleanup: same outputs, far fewer nodes, metadata kept, bad files named in one line."""
from __future__ import annotations

import copy
import logging
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import export.clean
from export.clean import check_parity, clean, clean_graph, load_model, op_counts
from export.clean import main as clean_main
from export.float64 import evaluate_float64
from export.precision import read_precision_file
from export.to_onnx import pytorch_audio
from pipeline.errors import UserError
from pipeline.onnx_metadata import read_metadata
from pipeline.onnx_tools import cpu_session, run_audio
from pipeline.quality import max_error_over_peak
from pipeline.settings import VOCODERS, load_settings
from runtime.errors import run_main
from vocoder_models.mels import sample_mel

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent
NODE_LIMITS = {"v3": 1500, "v4": 260}
NAMES = load_settings()["tensors"]
FOLDABLE_OPS = {"Constant", "ConstantOfShape", "Identity", "Reshape", "Expand", "Exp", "Reciprocal", "Where", "Equal"}


@pytest.fixture(scope="module")
def cleaned_graph(request):
    """The cleaned graph of the default v3 or v4 export, made once for this file's tests."""
    made = {}

    def of(vocoder: str) -> onnx.ModelProto:
        if vocoder not in made:
            made[vocoder] = clean_graph(load_model(request.getfixturevalue(f"onnx_{vocoder}"), NAMES))
        return made[vocoder]
    return of


@pytest.mark.parametrize("vocoder", VOCODERS)
def test_cleanup_keeps_outputs_and_shrinks_the_graph(vocoder, request, cleaned_graph):
    exported = load_model(request.getfixturevalue(f"onnx_{vocoder}"), NAMES)
    cleaned = cleaned_graph(vocoder)
    counts = op_counts(cleaned)
    assert len(cleaned.graph.node) <= NODE_LIMITS[vocoder], counts
    assert not FOLDABLE_OPS & set(counts), counts
    tolerance = load_settings()["clean"]["parity_rel_tol"]
    sessions = [cpu_session(model) for model in (exported, cleaned)]  # made once: v3's take seconds each
    for batch, frames in ((1, 1), (2, 7), (1, 64)):
        mel = sample_mel(vocoder, frames, batch=batch, seed=frames)
        expected, actual = (run_audio(session, mel) for session in sessions)
        assert actual.shape == expected.shape
        assert np.abs(actual - expected).max() <= tolerance * np.abs(expected).max()


def test_cleaned_pads_are_constant_edge_pads(cleaned_graph):
    """TensorRT takes edge padding only with constant pad amounts."""
    cleaned = cleaned_graph("v3")
    constants = {t.name for t in cleaned.graph.initializer}
    pads = [node for node in cleaned.graph.node if node.op_type == "Pad"]
    assert pads
    for node in pads:
        assert node.input[1] in constants, node.name
        assert {a.name: a.s for a in node.attribute}.get("mode") == b"edge", node.name


def test_fp32_output_keeps_metadata_and_types(onnx_v4, tmp_path):
    legacy = tmp_path / "v4.fp32.plan.json"  # the precision file's name before the rename
    legacy.write_text('{"fp16_mac_share": 0.0}', encoding="utf-8")
    output = clean(onnx_v4, "fp32", tmp_path / "v4.fp32.onnx", settings=load_settings())
    assert not legacy.exists()
    metadata = read_metadata(output)
    original = read_metadata(onnx_v4)
    assert {k: metadata[k] for k in original} == original
    assert metadata["precision"] == "fp32" and metadata["precision_file"] == "v4.fp32.precision.json"
    assert (tmp_path / "v4.fp32.precision.json").is_file()
    model = onnx.load(str(output))
    assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.FLOAT}


def test_a_precision_file_under_its_old_name_is_read_with_a_warning(tmp_path, caplog):
    model = tmp_path / "v4.fp16.onnx"
    assert read_precision_file(model) is None
    (tmp_path / "v4.fp16.plan.json").write_text('{"fp16_mac_share": 0.9}', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="clean"):
        assert read_precision_file(model) == {"fp16_mac_share": 0.9}
    assert "old name" in caplog.text and "v4.fp16.precision.json" in caplog.text
    (tmp_path / "v4.fp16.precision.json").write_text('{"fp16_mac_share": 0.5}', encoding="utf-8")
    assert read_precision_file(model) == {"fp16_mac_share": 0.5}


def _run_clean_cli(*args):
    return subprocess.run([sys.executable, "-m", "export.clean", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, encoding="utf-8", timeout=300)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_bad_onnx_file_gives_one_line_error(damage, onnx_v4, tmp_path, capsys):
    """The command's main in this process (the real command line is test_unknown_precision_gives_one_line_error)."""
    broken = tmp_path / "broken.onnx"
    if damage == "truncated":
        data = onnx_v4.read_bytes()
        broken.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        broken.write_bytes(b"this is not a protobuf" * 100)
    output = tmp_path / "out.onnx"
    assert run_main(clean_main, [str(broken), "--precision", "fp16", "--output", str(output)]) == 2
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.onnx" in lines[0], stderr
    assert not output.exists() and not list(tmp_path.glob(".out.onnx.*"))


def test_unknown_precision_gives_one_line_error(onnx_v4, tmp_path):
    result = _run_clean_cli(onnx_v4, "--precision", "int3", "--output", tmp_path / "out.onnx")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown precision 'int3'")


# --- the parity oracle: float64 truth for the cleaned graph ----------------------------------

@pytest.mark.parametrize("vocoder", VOCODERS)
def test_float64_evaluation_of_the_cleaned_graph_is_the_module_in_float64(vocoder, request, cleaned_graph):
    """The clean oracle's truth: the cleaned graph computed in float64 agrees with the PyTorch module
    in float64 several times more closely than ONNX Runtime's float32 does (not exactly: the constants
    cleaning folded, such as Snake's exp terms, are stored in float32)."""
    module = request.getfixturevalue(f"vocoder_{vocoder}")
    cleaned = cleaned_graph(vocoder)
    mel = sample_mel(vocoder, 8, batch=2, seed=3)
    truth = pytorch_audio(copy.deepcopy(module).double(), mel)
    float64_error = max_error_over_peak(truth, evaluate_float64(cleaned, mel))
    float32_error = max_error_over_peak(truth, run_audio(cpu_session(cleaned), mel))
    assert float64_error < float32_error / 4, (float64_error, float32_error)


def with_weight_scaled(model: onnx.ModelProto, op: str, factor: float) -> onnx.ModelProto:
    """A copy whose first `op` node's weight is multiplied by `factor`."""
    planted = copy.deepcopy(model)
    weight_name = next(node.input[1] for node in planted.graph.node if node.op_type == op)
    weight = next(t for t in planted.graph.initializer if t.name == weight_name)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(factor), weight_name))
    return planted


def with_divisions_as_products(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same function rounded differently: every x / c becomes x * (1 / c), as a compiler might."""
    reordered = copy.deepcopy(model)
    constants = {t.name: t for t in reordered.graph.initializer}
    for node in reordered.graph.node:
        if node.op_type == "Div" and node.input[1] in constants:
            reciprocal = np.float32(1.0) / numpy_helper.to_array(constants[node.input[1]])
            name = node.input[1] + "_reciprocal"
            if name not in constants:
                constants[name] = numpy_helper.from_array(reciprocal.astype(np.float32), name)
                reordered.graph.initializer.append(constants[name])
            node.op_type, node.input[1] = "Mul", name
    used = {name for node in reordered.graph.node for name in node.input}
    kept = [t for t in reordered.graph.initializer if t.name in used]
    del reordered.graph.initializer[:]
    reordered.graph.initializer.extend(kept)
    return reordered


def test_planted_wrong_weight_in_the_cleaned_graph_is_refused(onnx_v4, cleaned_graph):
    exported = load_model(onnx_v4, NAMES)
    planted = with_weight_scaled(cleaned_graph("v4"), "ConvTranspose", 1.01)
    with pytest.raises(UserError) as refused:
        check_parity(exported, planted, 64, load_settings())
    message = str(refused.value)
    assert "\n" not in message and "from the float64 evaluation" in message and "report this model" in message


def test_a_reordered_graph_passes_on_float32_noise_alone(onnx_v4, cleaned_graph):
    """With the absolute tolerance at zero only the oracle can pass it: rounding in another order
    leaves the exported graph as close to the float64 truth as the cleaned one (no more than the
    margin apart), while the planted weight above does not."""
    settings = copy.deepcopy(load_settings())
    settings["clean"]["parity_rel_tol"] = 0.0
    exported = load_model(onnx_v4, NAMES)
    errors = check_parity(exported, with_divisions_as_products(cleaned_graph("v4")), 64, settings)
    print(f"\nreordered v4 graph: {export.clean.parity_summary(errors)}")
    assert errors["cleaned_vs_exported"] > 0.0 and "cleaned_vs_float64" in errors, errors
