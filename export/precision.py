"""Typed models for TensorRT's strongly typed networks, with the float32 regions chosen by measurement.

TensorRT 11 and TensorRT-RTX take each layer's precision from the ONNX types, so the half model is
decided here. `HalfConverter` does the mechanics (weights stored in half, Casts where a tensor
crosses between a float32 and a half region, by onnxconverter-common's rules); this module decides
which nodes stay float32, per checkpoint, in three measured steps:

1. a per-layer error study (Polygraphy marks every tensor as an output, ONNX Runtime runs the
   float32 and the all-half model) scores every node;
2. every node of the graph is put in one candidate order: first the nodes whose error grows (worst
   growth first, each with the chain of one-input nodes that feeds it), then the other non-dense
   nodes by the error they pass on, then the dense convolutions from the input side on. A bisection over how
   long a prefix of that order stays float32, like `polygraphy debug precision`, finds the shortest
   that clears the bar on short mels. The order's full length is the float32 model itself, so the
   search always ends with a choice that clears the bar;
3. the chosen model is checked once at every verification length, and widened along the same order
   until it holds.

The reference is the float32 ONNX model in ONNX Runtime (no PyTorch module travels with an ONNX
file); the tests also compare against PyTorch.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from pipeline.errors import UserError
from pipeline.onnx_metadata import metadata_of
from pipeline.onnx_tools import cpu_session, run_audio
from pipeline.quality import audio_errors, bar_for, meets_bar, rounded, worst
from pipeline.settings import check_precision, precision_file_for
from vocoder_models.mels import sample_mel

log = logging.getLogger("clean")
DENSE_OPS = ("Conv", "ConvTranspose")
HALF_ROUNDOFF = 2.0 ** -11  # float16's unit roundoff: the least relative error a half tensor has


def legacy_precision_file_for(model_path: str | Path) -> Path:
    """The name the precision file had before it was renamed (engines/onnx/v3.fp16.plan.json)."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name.removesuffix(".onnx") + ".plan.json")


def read_precision_file(model_path: str | Path) -> dict | None:
    """The precision record of a cleaned model, None when there is none. One written under the old
    name is read with a warning; the next `make engines` re-cleans (the clean stage's code changed)
    and writes it under the new name."""
    path = precision_file_for(model_path)
    if not path.is_file() and legacy_precision_file_for(model_path).is_file():
        path = legacy_precision_file_for(model_path)
        log.warning("%s has the precision file's old name; run make engines to rewrite it as %s", path,
                    precision_file_for(model_path).name)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# --- mechanics ---------------------------------------------------------------------------------

FLOAT, HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
TYPE_SUFFIX = {FLOAT: "float", HALF: "half"}
HALF_MAX = 65504.0  # float16's largest finite value: larger weights are clamped to it
HALF_TINY = 1e-7    # weights nearer zero than this are moved out to it (onnxconverter-common's rule)


class HalfConverter:
    """Typed copies of one float32 model, each with its own set of nodes left in float32.

    Every node reads and writes the type of its region; a Cast sits only where a tensor crosses
    from one region to the other (one per tensor and direction), so adjacent float32 nodes exchange
    float32 directly. Weights read by half nodes are stored in half, converted once per model: the
    bisection makes a dozen typed copies of the same model. The rules follow onnxconverter-common's
    `convert_float_to_float16` (values clamped the same way, outputs identical in ONNX Runtime, see
    tests/test_precision.py), without its quadratic node sorting. The models are the clean stage's:
    shape-inferred, no subgraphs, no tensor-valued attributes.
    """

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.model = model
        self.weights = {tensor.name: tensor for tensor in graph.initializer}
        self.declared = {v.name: v for v in (*graph.input, *graph.value_info, *graph.output)}
        self.half_weights: dict[str, onnx.TensorProto] = {}

    def typed(self, float32_nodes: set[str] | list[str], io_dtype: str = "float32") -> onnx.ModelProto:
        """The model with `float32_nodes` in float32, every other node in half; `io_dtype` "float32"
        keeps mel and audio float32, "half" makes them half."""
        kept, graph = set(float32_nodes), self.model.graph
        io_type = FLOAT if io_dtype == "float32" else HALF
        types = {name: io_type for name in self._floats(graph.input)}
        types.update({out: FLOAT if node.name in kept else HALF
                      for node in graph.node for out in node.output if self._is_float(out)})
        renamed = {out.name: f"{out.name}_{TYPE_SUFFIX[types[out.name]]}" for out in graph.output
                   if out.name in types and types[out.name] != io_type}
        readers = self._weight_readers(kept)
        nodes, casts, value_info = [], {}, []
        for node in graph.node:
            want = FLOAT if node.name in kept else HALF
            typed_node = onnx.NodeProto()
            typed_node.CopyFrom(node)
            for index, name in enumerate(node.input):
                if name in readers:
                    typed_node.input[index] = self._weight_name(name, want, readers[name])
                elif name in types and types[name] != want:
                    typed_node.input[index] = self._cast(renamed.get(name, name), name, want, casts, nodes, value_info)
                elif name in renamed:
                    typed_node.input[index] = renamed[name]
            typed_node.output[:] = [renamed.get(out, out) for out in node.output]
            nodes.append(typed_node)
        for original, internal in renamed.items():
            self._cast(internal, original, io_type, casts, nodes, value_info, output=original)
        return self._assemble(nodes, value_info, types, readers, renamed, io_type)

    def _floats(self, values) -> list[str]:
        return [v.name for v in values if v.type.tensor_type.elem_type == FLOAT]

    def _is_float(self, name: str) -> bool:
        return name in self.declared and self.declared[name].type.tensor_type.elem_type == FLOAT

    def _weight_readers(self, kept: set[str]) -> dict[str, set[int]]:
        """Each float32 weight and the types of the nodes that read it."""
        readers: dict[str, set[int]] = {}
        for node in self.model.graph.node:
            for name in node.input:
                if name in self.weights and self.weights[name].data_type == FLOAT:
                    readers.setdefault(name, set()).add(FLOAT if node.name in kept else HALF)
        return readers

    @staticmethod
    def _weight_name(name: str, want: int, types: set[int]) -> str:
        """A weight read in both types keeps its name in float32; its half copy gets a suffix."""
        return f"{name}_half" if want == HALF and FLOAT in types else name

    def _cast(self, source: str, original: str, to: int, casts: dict, nodes: list, value_info: list,
              output: str | None = None) -> str:
        """The name of `source` cast to `to`, adding the Cast (and its declaration) the first time."""
        key = (source, to)
        if key not in casts:
            casts[key] = output or f"{original}_as_{TYPE_SUFFIX[to]}"
            nodes.append(onnx.helper.make_node("Cast", [source], [casts[key]], name=f"{casts[key]}_cast", to=to))
            if output is None:
                value_info.append(self._declaration(original, casts[key], to))
        return casts[key]

    def _declaration(self, original: str, name: str, elem_type: int) -> onnx.ValueInfoProto:
        declared = onnx.ValueInfoProto()
        declared.CopyFrom(self.declared[original])
        declared.name = name
        declared.type.tensor_type.elem_type = elem_type
        return declared

    def _half_weight(self, name: str) -> onnx.TensorProto:
        if name not in self.half_weights:
            values = onnx.numpy_helper.to_array(self.weights[name])
            self.half_weights[name] = onnx.numpy_helper.from_array(half_values(values), name)
        return self.half_weights[name]

    def _assemble(self, nodes, value_info, types, readers, renamed, io_type) -> onnx.ModelProto:
        model, graph = self.model, self.model.graph
        typed = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name,
                                producer_version=model.producer_version, domain=model.domain,
                                model_version=model.model_version, doc_string=model.doc_string)
        typed.opset_import.extend(model.opset_import)
        typed.metadata_props.extend(model.metadata_props)
        typed.graph.name = graph.name
        typed.graph.node.extend(nodes)
        for name, tensor in self.weights.items():
            used = readers.get(name, {FLOAT})
            if FLOAT in used:
                typed.graph.initializer.append(tensor)
            if HALF in used:
                half = typed.graph.initializer.add()
                half.CopyFrom(self._half_weight(name))
                half.name = self._weight_name(name, HALF, used)
        typed.graph.value_info.extend(self._retyped(declared, types) for declared in graph.value_info)
        typed.graph.value_info.extend(self._declaration(original, internal, types[original])
                                      for original, internal in renamed.items())
        typed.graph.value_info.extend(value_info)
        typed.graph.input.extend(self._retyped(declared, types) for declared in graph.input)
        io_types = {name: io_type for name in types}
        typed.graph.output.extend(self._retyped(declared, io_types) for declared in graph.output)
        return typed

    @staticmethod
    def _retyped(declared: onnx.ValueInfoProto, types: dict[str, int]) -> onnx.ValueInfoProto:
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(declared)
        if declared.name in types:
            copy.type.tensor_type.elem_type = types[declared.name]
        return copy


def half_values(values: np.ndarray) -> np.ndarray:
    """float32 weights in float16 without changing sign or finiteness: magnitudes past float16's
    range are clamped to its largest value, nonzero ones below HALF_TINY are raised to it."""
    magnitude = np.abs(values)
    clamped = np.where((magnitude > HALF_MAX) & np.isfinite(values), np.sign(values) * HALF_MAX, values)
    clamped = np.where((magnitude > 0) & (magnitude < HALF_TINY), np.sign(values) * HALF_TINY, clamped)
    return clamped.astype(np.float16)


def to_half(model: onnx.ModelProto, float32_nodes: set[str] | list[str], io_dtype: str = "float32") -> onnx.ModelProto:
    """float16 copy of `model` with `float32_nodes` left in float32 (one conversion; a search over many
    choices of one model keeps a HalfConverter)."""
    return HalfConverter(model).typed(float32_nodes, io_dtype)


# --- measuring ---------------------------------------------------------------------------------


def errors_by_frames(session, references: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict]:
    """Errors of `session` at each length of `references` ({frames: (mel, reference audio)})."""
    return {str(frames): audio_errors(expected, run_audio(session, mel))
            for frames, (mel, expected) in references.items()}


def references_for(model32: onnx.ModelProto, vocoder: str, frames: list[int],
                   seed: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Sample mels (`seed`: [clean] mel_seed) and the float32 model's audio for them: what every
    candidate is measured against."""
    session = cpu_session(model32)
    n_mels = metadata_of(model32)["n_mels"]
    mels = {f: sample_mel(vocoder, f, seed=seed, n_mels=n_mels) for f in frames}
    return {f: (mel, run_audio(session, mel)) for f, mel in mels.items()}


def layerwise_errors(model32: onnx.ModelProto, model16: onnx.ModelProto, mel: np.ndarray) -> dict[str, dict[str, float]]:
    """RMS error of every tensor the two models share, all marked as outputs (Polygraphy): relative
    to the tensor's RMS and absolute. A tensor that is NaN or Inf in half has an infinite error."""
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
            with np.errstate(invalid="ignore", over="ignore"):
                absolute = float(np.sqrt(np.mean((half[name].astype(np.float64) - expected) ** 2)))
            absolute = absolute if np.isfinite(absolute) else float("inf")
            errors[name] = {"relative": absolute / scale, "absolute": absolute}
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


# --- the search ----------------------------------------------------------------------------------


def ranked_units(model: onnx.ModelProto, errors: dict[str, dict[str, float]]) -> list[dict]:
    """Nodes whose half output is worse than their inputs, worst growth first, each with its feeders.

    A node's feeders are the chain of nodes with one computed input that leads to it (for Snake's
    Sin: the Mul, crop, upsampling and Pad before it), so a float32 node also gets float32 input.
    """
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    units = []
    for node in graph.node:
        score = _score(node, errors, constants)
        if score is not None and score["growth"] > 1.0:
            units.append({**score, "stage": "error growth", "nodes": _with_feeders(node, producer, constants)})
    return sorted(units, key=lambda unit: -unit["growth"])


def _score(node: onnx.NodeProto, errors: dict[str, dict[str, float]], constants: set[str]) -> dict | None:
    """The node's measured output error and its growth over its inputs' (None: output not measured)."""
    if not node.output or node.output[0] not in errors:
        return None
    error = errors[node.output[0]]
    computed = [name for name in node.input if name and name not in constants]
    worst_input = max([errors[name]["relative"] for name in computed if name in errors] + [HALF_ROUNDOFF])
    with np.errstate(invalid="ignore"):
        growth = float(np.float64(error["relative"]) / worst_input)  # inf / inf: NaN, not growth
    return {"node": node.name, "op": node.op_type, "error": error["relative"],
            "absolute_error": error["absolute"], "growth": growth}


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


def candidate_order(model: onnx.ModelProto, errors: dict[str, dict[str, float]]) -> list[dict]:
    """Every node of the graph, in the order the bisection keeps them float32; the last prefix is all.

    First the units of `ranked_units`. Then the other non-dense nodes by the absolute error of their
    half output: they do not grow the relative error, but on a hard checkpoint half storage of large
    activations passes on errors that Snake's sin turns into whole radians (a relative 2^-11 of 4,000
    is 2), and the absolute error says where. Last the dense convolutions, which hold the
    multiply-accumulates worth running in half, from the input side on: an error a convolution
    stores is amplified by every layer after it, so the earliest matter most (on the v3 stress
    checkpoint, conv_pre alone in half costs 40 dB SNR on a 1-frame mel, conv_post alone 56 dB),
    while the absolute error of the all-half study, which accumulates along the graph, would rank
    them the other way round.
    """
    units = ranked_units(model, errors)
    taken = {name for unit in units for name in unit["nodes"]}
    constants = {t.name for t in model.graph.initializer}
    rest = [node for node in model.graph.node if node.name not in taken]
    scored = {node.name: _score(node, errors, constants) or _unmeasured(node) for node in rest}
    others = [{**scored[node.name], "stage": "contribution", "nodes": [node.name]} for node in rest if not _is_dense(node)]
    dense = [{**scored[node.name], "stage": "dense", "nodes": [node.name]} for node in rest if _is_dense(node)]
    return units + sorted(others, key=lambda unit: -unit["absolute_error"]) + dense


def _unmeasured(node: onnx.NodeProto) -> dict:
    """A node whose output the study could not compare: ranked as if it passed on no error."""
    return {"node": node.name, "op": node.op_type, "error": 0.0, "absolute_error": 0.0, "growth": 0.0}


def float32_set(units: list[dict], count: int) -> set[str]:
    return {name for unit in units[:count] for name in unit["nodes"]}


class PrecisionSearch:
    """Finds, for one model and checkpoint, the shortest prefix of the candidate order that keeps the bar;
    `config` is pipeline.toml's [clean] table."""

    def __init__(self, model32: onnx.ModelProto, bar: dict, io_dtype: str, config: dict[str, Any],
                 verify_frames: list[int] | None = None):
        self.model32, self.bar, self.io_dtype, self.config = model32, bar, io_dtype, config
        self.vocoder = metadata_of(model32)["vocoder"]
        self.verify_frames = verify_frames or self.config["verify_frames"][self.vocoder]
        self.converter = HalfConverter(model32)
        self.trials: list[dict] = []

    def measure(self, float32_nodes: set[str], references: dict) -> tuple[onnx.ModelProto, dict[str, dict]]:
        typed = self.converter.typed(float32_nodes, self.io_dtype)
        return typed, errors_by_frames(cpu_session(typed), references)

    def run(self) -> tuple[onnx.ModelProto, dict]:
        """The typed model and its record (the precision file's body)."""
        search_refs = references_for(self.model32, self.vocoder, self.config["search_frames"], self.config["mel_seed"])
        plain, plain_errors = self.measure(set(), search_refs)
        margin = self.config["search_margin_db"]
        order: list[dict] = []
        count = 0
        if not meets_bar(worst(list(plain_errors.values())), self.bar, margin):
            order = self._candidate_order(plain)
            count = self._bisect(order, search_refs, margin)
        chosen = plain if count == 0 else self.converter.typed(float32_set(order, count), self.io_dtype)
        del plain
        typed, count, verified = self._verified(order, count, chosen)
        report = self._report(order, count, plain_errors, verified)
        self._warn_when_little_is_half(report["fp16_mac_share"])
        return typed, report

    def _candidate_order(self, plain: onnx.ModelProto) -> list[dict]:
        """Every node in the order they are kept float32, from the per-layer study of the all-half model."""
        study_mel = sample_mel(self.vocoder, self.config["study_frames"], seed=self.config["mel_seed"],
                               n_mels=metadata_of(self.model32)["n_mels"])
        return candidate_order(self.model32, layerwise_errors(self.model32, plain, study_mel))

    def _bisect(self, order: list[dict], references: dict, margin: float) -> int:
        """Shortest prefix of `order` in float32 that meets the bar plus margin. The empty prefix (all
        half) was measured to fail and the whole order is the float32 model, which meets any bar, so
        the answer is always in range; prefixes are nested, so keeping more float32 never gives back
        what a shorter prefix kept."""
        low, high = 0, len(order)
        progress = tqdm(total=max(1, int(np.ceil(np.log2(max(2, len(order)))))), desc=f"{self.vocoder} precision search",
                        leave=False)
        while high - low > 1:
            middle = (low + high) // 2
            _, errors = self.measure(float32_set(order, middle), references)
            passed = meets_bar(worst(list(errors.values())), self.bar, margin)
            self.trials.append({"units": middle, "float32_nodes": len(float32_set(order, middle)),
                                **rounded(worst(list(errors.values()))), "pass": passed})
            low, high = (low, middle) if passed else (middle, high)
            progress.update(1)
        progress.close()
        return high

    def _verified(self, order: list[dict], count: int, typed: onnx.ModelProto) -> tuple[onnx.ModelProto, int, dict[str, dict]]:
        """The choice (`typed`, the first `count` of `order` in float32) measured at every verification
        length and widened along the candidate order until it holds there; at worst that is the whole
        order, the float32 model, so it always ends."""
        references = references_for(self.model32, self.vocoder, self.verify_frames, self.config["mel_seed"])
        verified = errors_by_frames(cpu_session(typed), references)
        while not meets_bar(worst(list(verified.values())), self.bar) and (not order or count < len(order)):
            if not order:  # all-half passed the short mels only: the order is needed after all
                order.extend(self._candidate_order(typed))
            count = min(len(order), max(1, 2 * count))
            log.info("the choice misses the bar at full length; widening to %d of %d candidates", count, len(order))
            typed, verified = self.measure(float32_set(order, count), references)
        if not meets_bar(worst(list(verified.values())), self.bar):
            raise UserError(f"{self.vocoder}: with every node float32 the model still differs from the float32 model "
                            f"({worst(list(verified.values()))}); report this model")
        return typed, count, verified

    def _warn_when_little_is_half(self, share: float) -> None:
        floor = self.config["min_fp16_mac_share"]
        if share < floor:
            log.warning("%s: only %.1f%% of the multiply-accumulates run in float16 on this checkpoint (floor %.0f%%), "
                        "so fp16 buys little over fp32; the mixed model is written and meets the bar", self.vocoder,
                        100 * share, 100 * floor)

    def _report(self, order: list[dict], count: int, plain: dict, verified: dict) -> dict:
        kept = float32_set(order, count)
        frames = max(self.config["search_frames"])
        macs = mac_counts(self.model32, frames)
        stages = ("error growth", "contribution", "dense")
        summary = ("node", "op", "stage", "error", "absolute_error", "growth")
        return {
            "float32_nodes": sorted(kept),
            "fp16_mac_share": half_mac_share(macs, kept),
            "macs_per_frame": round(sum(macs.values()) / frames),
            "bar": self.bar, "search_margin_db": self.config["search_margin_db"],
            "reference": "float32 ONNX model in ONNX Runtime (CPU provider)",
            "errors_all_half": {k: rounded(v) for k, v in plain.items()},
            "errors_chosen": {k: rounded(v) for k, v in verified.items()},
            "candidates": {stage: sum(unit["stage"] == stage for unit in order) for stage in stages},
            "candidates_kept": {stage: sum(unit["stage"] == stage for unit in order[:count]) for stage in stages},
            "bisection": self.trials,
            "layerwise_worst": [{k: unit[k] for k in summary} for unit in order[:self.config["report_layers"]]],
        }


def apply_precision(model: onnx.ModelProto, precision: str, settings: dict[str, Any], io_dtype: str = "float32",
                    verify_frames: list[int] | None = None) -> tuple[onnx.ModelProto, dict]:
    """The typed model for `precision` and its record (what stays float32, measured errors, half MAC share);
    `verify_frames` replaces `[clean] verify_frames` (the tests verify one short length)."""
    spec = check_precision(settings, precision)
    metadata = metadata_of(model)
    header = {"format": 1, "vocoder": metadata["vocoder"], "checkpoint": metadata.get("checkpoint"),
              "precision": precision, "onnx_type": spec["onnx_type"], "io_dtype": io_dtype}
    if spec["onnx_type"] == "float32":
        return model, {**header, "float32_nodes": "all", "fp16_mac_share": 0.0}
    bar = bar_for(settings, precision)
    typed, record = PrecisionSearch(model, bar, io_dtype, settings["clean"], verify_frames).run()
    return typed, {**header, **record}
