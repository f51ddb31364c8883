"""Half-precision models: the accuracy bar against float32 PyTorch on the default checkpoints, float32
regions that really are float32, clean Cast placement, and a precision search that always ends.
(The stress checkpoints are tests/test_stress.py.)"""
from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import onnx
import pytest

from export.clean import clean, clean_graph, load_model
from export.precision import PrecisionSearch, _is_dense, candidate_order, layerwise_errors, ranked_units, to_half
from half_checks import FLOAT, HALF, assert_meets_bar_against_pytorch, assert_precision_types_hold, declared_types
from pipeline.onnx_metadata import read_metadata
from pipeline.onnx_tools import cpu_session, run_audio
from pipeline.quality import audio_errors
from pipeline.settings import load_settings
from vocoder_models.mels import sample_mel


@pytest.fixture(scope="module")
def fp16_v4(onnx_v4, tmp_path_factory):
    """The fp16 model and precision record of the default v4 checkpoint, made by the CLI's function."""
    folder = tmp_path_factory.mktemp("fp16")
    output = clean(onnx_v4, "fp16", folder / "v4.fp16.onnx", settings=load_settings())
    return output, json.loads((folder / "v4.fp16.precision.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cleaned_v4(onnx_v4) -> onnx.ModelProto:
    return clean_graph(load_model(onnx_v4, load_settings()["tensors"]))


def test_fp16_v4_meets_the_bar_against_pytorch(fp16_v4, vocoder_v4):
    path, record = fp16_v4
    assert_meets_bar_against_pytorch(vocoder_v4, path, "v4", load_settings()["clean"]["verify_frames"]["v4"])
    assert 0.0 < record["fp16_mac_share"] <= 1.0
    assert read_metadata(path)["fp16_mac_share"] == record["fp16_mac_share"]


def test_chosen_float32_nodes_are_float32_in_the_graph(fp16_v4):
    assert_precision_types_hold(*fp16_v4)


def test_to_half_casts_only_at_region_edges(cleaned_v4):
    """Two adjacent float32 nodes exchange float32 directly; no Cast feeds a Cast."""
    model = cleaned_v4
    names = [node.name for node in model.graph.node if node.op_type == "LeakyRelu"][:1]
    conv = next(node for node in model.graph.node if node.input[0] == model.graph.node[
        [n.name for n in model.graph.node].index(names[0])].output[0])
    typed = to_half(model, {names[0], conv.name})
    producer = {out: node for node in typed.graph.node for out in node.output}
    for node in typed.graph.node:
        if node.op_type == "Cast":
            assert producer.get(node.input[0]) is None or producer[node.input[0]].op_type != "Cast", node.name
    by_name = {node.name: node for node in typed.graph.node}
    assert by_name[conv.name].input[0] == by_name[names[0]].output[0]
    weights = {t.name: t.data_type for t in typed.graph.initializer}
    assert weights[by_name[conv.name].input[1]] == FLOAT
    assert sum(t == HALF for t in weights.values()) > 0.9 * len(weights)


@pytest.mark.parametrize("io_dtype", ["float32", "half"])
def test_to_half_computes_what_onnxconverter_common_computes(cleaned_v4, io_dtype):
    """The converter follows onnxconverter-common's float16 rules: for the all-half model and for
    scattered float32 nodes, both give the same audio bit for bit, ours through no more Casts. (The
    library rounds to half between two adjacent float32 nodes and casts a float32 last node's audio
    to half, so the regions here have neither; larger regions are the tests above and below.)"""
    from onnxconverter_common import float16

    mel = sample_mel("v4", 7, seed=3)
    for region in (set(), isolated_nodes(cleaned_v4, every=3), isolated_nodes(cleaned_v4, every=7)):
        work = onnx.ModelProto()
        work.CopyFrom(cleaned_v4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            library = float16.convert_float_to_float16(work, keep_io_types=io_dtype == "float32", node_block_list=sorted(region),
                                                       disable_shape_infer=True, max_finite_val=65504.0)
        ours = to_half(cleaned_v4, region, io_dtype)
        onnx.checker.check_model(ours)
        expected, got = run_audio(cpu_session(library), mel), run_audio(cpu_session(ours), mel)
        assert np.array_equal(expected, got, equal_nan=True), (len(region), np.abs(expected - got).max())
        assert cast_count(ours) <= cast_count(library), len(region)


def isolated_nodes(model: onnx.ModelProto, every: int) -> set[str]:
    """Every `every`-th node that reads no other chosen node's output, nor the mel, nor writes the audio."""
    edges = {value.name for value in (*model.graph.input, *model.graph.output)}
    chosen, outputs = set(), set()
    for index, node in enumerate(model.graph.node):
        if index % every == 1 and not (set(node.input) | set(node.output)) & (outputs | edges):
            chosen.add(node.name)
            outputs.update(node.output)
    return chosen


def cast_count(model: onnx.ModelProto) -> int:
    return sum(node.op_type == "Cast" for node in model.graph.node)


def test_every_node_float32_is_the_float32_model(cleaned_v4):
    """The end of every search: no Cast left, audio float32 (the converter alone would cast the
    output of a float32 last node to half), output identical to the float32 model's."""
    typed = to_half(cleaned_v4, {node.name for node in cleaned_v4.graph.node})
    assert not [node for node in typed.graph.node if node.op_type == "Cast"]
    assert declared_types(typed)["audio"] == FLOAT
    mel = sample_mel("v4", 7)
    assert (run_audio(cpu_session(typed), mel) == run_audio(cpu_session(cleaned_v4), mel)).all()


def test_half_io_option_keeps_mel_and_audio_half(cleaned_v4):
    typed = to_half(cleaned_v4, set(), io_dtype="half")
    types = declared_types(typed)
    assert types["mel"] == HALF and types["audio"] == HALF
    mel = sample_mel("v4", 7)
    reference = run_audio(cpu_session(cleaned_v4), mel)
    assert audio_errors(reference, run_audio(cpu_session(typed), mel))["finite"]


def test_candidate_order_holds_every_node_once_growth_first_dense_last_from_the_input(cleaned_v4):
    study = layerwise_errors(cleaned_v4, to_half(cleaned_v4, set()), sample_mel("v4", 16, seed=5))
    order = candidate_order(cleaned_v4, study)
    names = [name for unit in order for name in unit["nodes"]]
    assert sorted(set(names)) == sorted(node.name for node in cleaned_v4.graph.node)
    growth = ranked_units(cleaned_v4, study)
    assert [unit["node"] for unit in order[:len(growth)]] == [unit["node"] for unit in growth]
    stages = [unit["stage"] for unit in order]
    assert stages == sorted(stages, key=["error growth", "contribution", "dense"].index)
    by_name = {node.name: node for node in cleaned_v4.graph.node}
    tail = [unit for unit in order if unit["stage"] == "dense"]
    assert tail and all(_is_dense(by_name[unit["node"]]) for unit in tail)
    position = {node.name: index for index, node in enumerate(cleaned_v4.graph.node)}
    assert [position[unit["node"]] for unit in tail] == sorted(position[unit["node"]] for unit in tail)
    middle = [unit["absolute_error"] for unit in order if unit["stage"] == "contribution"]
    assert middle and middle == sorted(middle, reverse=True)


def test_search_ends_at_float32_when_nothing_less_meets_the_bar(cleaned_v4, caplog):
    """A bar only exact float32 meets (SNR 1000 dB): the search still converges, on every node
    float32, and the command warns that fp16 buys nothing here."""
    bar = {"cosine_min": 0.9995, "snr_min_db": 1000.0}
    with caplog.at_level(logging.WARNING, logger="clean"):
        typed, record = PrecisionSearch(cleaned_v4, bar, "float32", load_settings()["clean"], verify_frames=[7]).run()
    assert set(record["float32_nodes"]) == {node.name for node in cleaned_v4.graph.node}
    assert record["fp16_mac_share"] == 0.0 and record["errors_chosen"]["7"]["snr_db"] == float("inf")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "fp16 buys little" in warnings[0], warnings


def test_fp16_v3_default_meets_the_bar_against_pytorch(onnx_v3, vocoder_v3, tmp_path):
    path = clean(onnx_v3, "fp16", tmp_path / "v3.fp16.onnx", settings=load_settings())
    assert_meets_bar_against_pytorch(vocoder_v3, path, "v3", (1, 2, 7, 64))
