"""Typed models for TensorRT's strongly typed networks, with the float32 regions chosen by measurement.

TensorRT 11 and TensorRT-RTX take each layer's precision from the ONNX types, so the half model is
decided here. onnxconverter-common's float16 converter does the mechanics (weights stored in half,
Cast nodes at the model's edges and around every node kept in float32); this module decides which
nodes stay float32, per checkpoint, in three measured steps:

1. a per-layer error study (Polygraphy marks every tensor as an output, ONNX Runtime runs the
   float32 and the all-half model): each node gets the error growth from its inputs to its output;
2. nodes ranked by that growth, each taking along the chain of one-input nodes that feeds it, are
   kept float32 in a bisection over how many are needed, like `polygraphy debug precision`, on
   short mels against the float32 model;
3. the chosen plan is checked once at every verification length, and widened until it holds.

The reference is the float32 ONNX model in ONNX Runtime (no PyTorch module travels with an ONNX
file); the tests also compare against PyTorch.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from tqdm import tqdm

from export.mels import sample_mel
from pipeline.errors import UserError
from pipeline.onnx_metadata import metadata_of
from pipeline.onnx_tools import cpu_session, reroute, run_audio
from pipeline.quality import audio_errors, bar_for, meets_bar, rounded, worst
from pipeline.settings import check_precision, load_settings

log = logging.getLogger("clean")
DENSE_OPS = ("Conv", "ConvTranspose")
HALF_ROUNDOFF = 2.0 ** -11  # float16's unit roundoff: the least relative error a half tensor has


def plan_path_for(model_path: str | Path) -> Path:
    """engines/onnx/v3.fp16.onnx -> engines/onnx/v3.fp16.plan.json"""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name.removesuffix(".onnx") + ".plan.json")


# --- mechanics ---------------------------------------------------------------------------------


def to_half(model: onnx.ModelProto, float32_nodes: set[str] | list[str], io_dtype: str = "float32") -> onnx.ModelProto:
    """float16 copy of `model` with `float32_nodes` left in float32, Casts between, no cast chains."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny weights clamped to float16's range, one warning each
        half = _converter().convert_float_to_float16(
            work, keep_io_types=io_dtype == "float32", node_block_list=sorted(float32_nodes),
            disable_shape_infer=True, max_finite_val=65504.0)
    return merge_casts(half)


def _converter():
    from onnxconverter_common import float16
    return float16


def merge_casts(model: onnx.ModelProto) -> onnx.ModelProto:
    """Cast(a->b) then Cast(b->a) reads the original; two Casts of one tensor to one type become one."""
    graph = gs.import_onnx(model)
    outputs = {id(tensor) for tensor in graph.outputs}
    for node in graph.nodes:
        if node.op != "Cast" or id(node.outputs[0]) in outputs:
            continue
        source = node.inputs[0]
        producer = source.inputs[0] if source.inputs else None
        if producer is not None and producer.op == "Cast" and _np_type(node.attrs["to"]) == producer.inputs[0].dtype:
            reroute(node.outputs[0], producer.inputs[0])
            continue
        twins = [c for c in source.outputs if c is not node and c.op == "Cast" and c.attrs["to"] == node.attrs["to"]
                 and c.outputs and id(c.outputs[0]) not in outputs]
        for twin in twins:
            reroute(twin.outputs[0], node.outputs[0])
    graph.cleanup().toposort()
    merged = gs.export_onnx(graph)
    merged.metadata_props.extend(model.metadata_props)
    return merged


def _np_type(onnx_type: int) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type))


# --- measuring ---------------------------------------------------------------------------------


def errors_by_frames(session, references: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict]:
    """Errors of `session` at each length of `references` ({frames: (mel, reference audio)})."""
    return {str(frames): audio_errors(expected, run_audio(session, mel))
            for frames, (mel, expected) in references.items()}


def references_for(model32: onnx.ModelProto, vocoder: str, frames: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Sample mels and the float32 model's audio for them: what every candidate is measured against."""
    session = cpu_session(model32)
    mels = {f: sample_mel(vocoder, f, seed=100 + f) for f in frames}
    return {f: (mel, run_audio(session, mel)) for f, mel in mels.items()}


def layerwise_errors(model32: onnx.ModelProto, model16: onnx.ModelProto, mel: np.ndarray) -> dict[str, float]:
    """Relative RMS error of every tensor the two models share, all marked as outputs (Polygraphy)."""
    from polygraphy import constants
    from polygraphy.backend.onnx import modify_outputs
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    results = []
    for model in (model32, model16):
        marked = modify_outputs(model, outputs=constants.MARK_ALL, copy=True)
        feed_type = np.float16 if marked.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 else np.float32
        with OnnxrtRunner(SessionFromOnnx(marked.SerializeToString(), providers=["CPUExecutionProvider"])) as runner:
            results.append(dict(runner.infer({marked.graph.input[0].name: mel.astype(feed_type)})))
        del marked
    reference, half = results
    errors = {}
    for name, expected in reference.items():
        if name in half and expected.dtype == np.float32 and half[name].shape == expected.shape:
            scale = float(np.sqrt(np.mean(expected.astype(np.float64) ** 2))) or 1.0
            diff = half[name].astype(np.float64) - expected
            errors[name] = float(np.sqrt(np.mean(diff ** 2)) / scale)
    return errors


def mac_counts(model: onnx.ModelProto, frames: int) -> dict[str, int]:
    """Multiply-accumulates of every Conv/ConvTranspose node for a batch-1 mel of `frames` frames."""
    static = onnx.ModelProto()
    static.CopyFrom(model)
    dims = static.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value, dims[2].dim_value = 1, frames
    del static.graph.value_info[:]
    static = onnx.shape_inference.infer_shapes(static, data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(static.graph.value_info) + list(static.graph.output) + list(static.graph.input)}
    weights = {t.name: list(t.dims) for t in static.graph.initializer}
    macs = {}
    for node in static.graph.node:
        if node.op_type in DENSE_OPS:
            per_point = int(np.prod(weights[node.input[1]][1:]))
            points = shapes[node.output[0]] if node.op_type == "Conv" else shapes[node.input[0]]
            macs[node.name] = int(np.prod(points)) * per_point
    return macs


def half_mac_share(macs: dict[str, int], float32_nodes: set[str]) -> float:
    total = sum(macs.values())
    return round(sum(v for k, v in macs.items() if k not in float32_nodes) / total, 5) if total else 1.0


# --- planning ----------------------------------------------------------------------------------


def ranked_units(model: onnx.ModelProto, errors: dict[str, float]) -> list[dict]:
    """Nodes whose half output is worse than their inputs, worst growth first, each with its feeders.

    A node's feeders are the chain of nodes with one computed input that leads to it (for Snake's
    Sin: the Mul, crop, upsampling and Pad before it), so a float32 node also gets float32 input.
    """
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    units = []
    for node in graph.node:
        if not node.output or node.output[0] not in errors:
            continue
        computed = [name for name in node.input if name and name not in constants]
        growth = errors[node.output[0]] / max([errors.get(name, 0.0) for name in computed] + [HALF_ROUNDOFF])
        if growth > 1.0:
            units.append({"node": node.name, "op": node.op_type, "error": errors[node.output[0]],
                          "growth": growth, "nodes": _with_feeders(node, producer, constants)})
    return sorted(units, key=lambda unit: -unit["growth"])


def _with_feeders(node: onnx.NodeProto, producer: dict, constants: set[str]) -> list[str]:
    chain = [node.name]
    current = node
    while True:
        computed = [name for name in current.input if name and name not in constants]
        feeder = producer.get(computed[0]) if len(computed) == 1 else None
        if feeder is None or _is_dense(feeder):
            return chain
        feeder_computed = [name for name in feeder.input if name and name not in constants]
        chain.append(feeder.name)
        if len(feeder_computed) != 1:
            return chain
        current = feeder


def _is_dense(node: onnx.NodeProto) -> bool:
    """A full convolution (the MACs worth running in half), not a depthwise resampling filter."""
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return node.op_type in DENSE_OPS and group == 1


def float32_set(units: list[dict], count: int) -> set[str]:
    return {name for unit in units[:count] for name in unit["nodes"]}


class Planner:
    """Finds, for one model and checkpoint, the fewest top-ranked units that keep the bar."""

    def __init__(self, model32: onnx.ModelProto, bar: dict, io_dtype: str):
        self.model32, self.bar, self.io_dtype = model32, bar, io_dtype
        self.config = load_settings()["clean"]
        self.vocoder = metadata_of(model32)["vocoder"]
        self.trials: list[dict] = []

    def measure(self, float32_nodes: set[str], references: dict) -> tuple[onnx.ModelProto, dict[str, dict]]:
        typed = to_half(self.model32, float32_nodes, self.io_dtype)
        return typed, errors_by_frames(cpu_session(typed), references)

    def plan(self) -> tuple[onnx.ModelProto, dict]:
        plan_refs = references_for(self.model32, self.vocoder, self.config["plan_frames"])
        plain, plain_errors = self.measure(set(), plan_refs)
        margin = self.config["plan_margin_db"]
        units: list[dict] = []
        count = 0
        if not meets_bar(worst(list(plain_errors.values())), self.bar, margin):
            study_mel = sample_mel(self.vocoder, self.config["study_frames"], seed=5)
            units = ranked_units(self.model32, layerwise_errors(self.model32, plain, study_mel))
            count = self._bisect(units, plan_refs, margin)
        del plain
        verify_refs = references_for(self.model32, self.vocoder, self.config["verify_frames"][self.vocoder])
        typed, verified = self.measure(float32_set(units, count), verify_refs)
        while not meets_bar(worst(list(verified.values())), self.bar) and count < len(units):
            count = min(len(units), max(1, 2 * count))
            log.info("plan misses the bar at full length; widening to %d units", count)
            typed, verified = self.measure(float32_set(units, count), verify_refs)
        if not meets_bar(worst(list(verified.values())), self.bar):
            raise UserError(f"{self.vocoder}: even with every measured node in float32 the half model misses the bar "
                            f"({worst(list(verified.values()))}); use --precision fp32 for this checkpoint")
        plain_full = verified if count == 0 else errors_by_frames(
            cpu_session(to_half(self.model32, set(), self.io_dtype)), verify_refs)
        return typed, self._report(units, count, plain_full, verified)

    def _bisect(self, units: list[dict], references: dict, margin: float) -> int:
        """Smallest count of top units in float32 that meets the bar plus margin (assumed monotone)."""
        low, high = 0, len(units)
        progress = tqdm(total=max(1, int(np.ceil(np.log2(max(2, len(units)))))), desc=f"{self.vocoder} precision plan",
                        leave=False)
        while high - low > 1:
            middle = (low + high) // 2
            _, errors = self.measure(float32_set(units, middle), references)
            passed = meets_bar(worst(list(errors.values())), self.bar, margin)
            self.trials.append({"units": middle, "float32_nodes": len(float32_set(units, middle)),
                                **rounded(worst(list(errors.values()))), "pass": passed})
            low, high = (low, middle) if passed else (middle, high)
            progress.update(1)
        progress.close()
        return high

    def _report(self, units: list[dict], count: int, plain: dict, verified: dict) -> dict:
        kept = float32_set(units, count)
        macs = mac_counts(self.model32, self.config["plan_frames"][0])
        frames = self.config["plan_frames"][0]
        return {
            "float32_nodes": sorted(kept),
            "fp16_mac_share": half_mac_share(macs, kept),
            "macs_per_frame": round(sum(macs.values()) / frames),
            "bar": self.bar, "plan_margin_db": self.config["plan_margin_db"],
            "reference": "float32 ONNX model in ONNX Runtime (CPU provider)",
            "errors_all_half": {k: rounded(v) for k, v in plain.items()},
            "errors_planned": {k: rounded(v) for k, v in verified.items()},
            "bisection": self.trials,
            "units_kept": [{k: unit[k] for k in ("node", "op", "error", "growth")} for unit in units[:count]],
            "layerwise_worst": [{k: unit[k] for k in ("node", "op", "error", "growth")}
                                for unit in units[:self.config["report_layers"]]],
        }


def apply_precision(model: onnx.ModelProto, precision: str, io_dtype: str = "float32") -> tuple[onnx.ModelProto, dict]:
    """The typed model for `precision` and its plan (what stays float32, measured errors, half MAC share)."""
    spec = check_precision(load_settings(), precision)
    metadata = metadata_of(model)
    header = {"format": 1, "vocoder": metadata["vocoder"], "checkpoint": metadata.get("checkpoint"),
              "precision": precision, "onnx_type": spec["onnx_type"], "io_dtype": io_dtype}
    if spec["onnx_type"] == "float32":
        return model, {**header, "float32_nodes": "all", "fp16_mac_share": 0.0}
    if spec["onnx_type"] == "bfloat16":
        raise UserError(f"precision {precision}: ONNX Runtime here cannot run bfloat16 convolutions, so no plan can be "
                        "measured; use fp16 (or fp32)")
    bar = bar_for(load_settings(), precision)
    typed, plan = Planner(model, bar, io_dtype).plan()
    return typed, {**header, **plan}
