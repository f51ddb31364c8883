"""python -m export.clean INPUT.onnx --precision fp32|fp16 --output OUTPUT.onnx

The exported graph still computes everything that depends on weights alone (Snake's exp terms,
filter expansions, pad amounts) and carries thousands of Constant/Reshape/ConstantOfShape nodes;
TensorRT turns each into layers. onnx-graphsurgeon folds them (with ONNX Runtime), drops dead and
no-op nodes, sorts and infers shapes; the result must match the input in ONNX Runtime. Then the
precision stage (export/precision.py) writes the typed model TensorRT's strongly typed networks
take their precision from, with its precision file (`*.precision.json`: what stays float32 and the
measured errors) beside it.
"""
from __future__ import annotations

import collections
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError

from export.float64 import evaluate_float64
from pipeline.errors import UserError
from pipeline.files import atomic_output, input_file
from pipeline.onnx_metadata import metadata_of, missing_metadata, update_metadata
from pipeline.onnx_tools import cpu_session, external_data_inside, reroute, run_audio
from pipeline.quality import max_error_over_peak, within_float32_noise
from pipeline.settings import check_precision, load_settings, precision_file_for
from runtime.errors import CommandParser, reason_of, run_main
from vocoder_models.mels import sample_mel

log = logging.getLogger("clean")


def load_model(path: str | Path, names: dict[str, str]) -> onnx.ModelProto:
    """The exported model, checked against the pipeline's tensor `names` ([tensors]); a missing,
    truncated or foreign file is a one-line UserError."""
    path = input_file(path, "ONNX file", "run `python -m export` first")
    external_data_inside(path)
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError, ValueError, RuntimeError, OSError) as error:
        reason = reason_of(error)
        raise UserError(f"{path} is not a valid ONNX model ({reason[:200]}); re-export it with python -m export") from None
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [names["input"]] or outputs != [names["output"]]:
        raise UserError(f"{path} has inputs {inputs} and outputs {outputs}, expected [{names['input']!r}] and "
                        f"[{names['output']!r}]; pass a vocoder exported by python -m export")
    metadata = metadata_of(model)
    missing = missing_metadata(metadata)
    if missing:
        raise UserError(f"{path} lacks metadata {', '.join(missing)}; re-export it with python -m export")
    if "precision" in metadata:  # cleaning it again would keep its weights' types whatever --precision says
        raise UserError(f"{path} is already cleaned for {metadata['precision']}; clean the exported model "
                        f"(engines/onnx/{metadata['vocoder']}.onnx) instead")
    return model


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type, most frequent first."""
    return dict(collections.Counter(node.op_type for node in model.graph.node).most_common())


def clean_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants, drop no-op nodes and dead ends, sort, infer shapes; metadata is kept."""
    graph = gs.import_onnx(model)
    graph.fold_constants()
    drop_noop_nodes(graph)
    graph.cleanup().toposort()
    cleaned = gs.export_onnx(graph)
    cleaned = onnx.shape_inference.infer_shapes(cleaned, data_prop=True)
    update_metadata(cleaned, metadata_of(model))
    return cleaned


def drop_noop_nodes(graph: gs.Graph) -> None:
    """Bypass Identity nodes and Casts to the type their input already has."""
    outputs = {id(tensor) for tensor in graph.outputs}
    for node in graph.nodes:
        if not (node.inputs and node.outputs) or (
                node.op != "Identity" and not (node.op == "Cast" and _casts_to_own_type(node))):
            continue
        if id(node.outputs[0]) in outputs:
            continue  # a graph output keeps its name; the no-op stays
        reroute(node.outputs[0], node.inputs[0])
        node.outputs.clear()


def _casts_to_own_type(node: gs.Node) -> bool:
    dtype = node.inputs[0].dtype
    return dtype is not None and onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"]) == np.dtype(dtype)


def check_parity(original: onnx.ModelProto, cleaned: onnx.ModelProto, frames: int,
                 settings: dict[str, Any]) -> dict[str, float]:
    """The parity oracle of clean: the cleaned graph must compute the exported graph's function.

    Within `[clean] parity_rel_tol` of each other in ONNX Runtime, the two float32 graphs agree and
    nothing more is measured. Beyond it, float32's own noise on this checkpoint decides: no PyTorch
    module travels with an ONNX file, so the truth is the cleaned graph evaluated in float64
    (export/float64.py). The cleaned graph's ONNX Runtime output is then float32's own error on that
    function (as PyTorch float32 is in export), and the exported graph's output is the candidate:
    when cleaning kept the function, both stray by float32 noise alone; when it changed it, the
    exported graph strays far from a truth the cleaned graph sits next to. The clean is refused when
    the exported graph is beyond the tolerance AND more than `[export] parity_noise_margin` times as
    far as the cleaned graph. (A truth taken from the cleaned graph and judged the other way round
    would pass a cleaning mistake, since the mistake would be in the truth too.)
    """
    metadata = metadata_of(original)
    vocoder = metadata["vocoder"]
    mel = sample_mel(vocoder, frames, seed=settings["clean"]["mel_seed"], n_mels=metadata["n_mels"])
    exported_audio, cleaned_audio = (run_audio(cpu_session(model), mel) for model in (original, cleaned))
    tolerance = settings["clean"]["parity_rel_tol"]
    errors = {"cleaned_vs_exported": max_error_over_peak(exported_audio, cleaned_audio)}
    if errors["cleaned_vs_exported"] <= tolerance:
        return errors
    truth = evaluate_float64(cleaned, mel)
    errors.update(exported_vs_float64=max_error_over_peak(truth, exported_audio),
                  cleaned_vs_float64=max_error_over_peak(truth, cleaned_audio))
    margin = settings["export"]["parity_noise_margin"]
    if not within_float32_noise(errors["exported_vs_float64"], errors["cleaned_vs_float64"], tolerance, margin):
        raise UserError(f"cleaned {vocoder} graph differs from its input by {errors['cleaned_vs_exported']:.2e} of peak at "
                        f"{frames} frames: the input is {errors['exported_vs_float64']:.2e} from the float64 evaluation, "
                        f"the cleaned graph {errors['cleaned_vs_float64']:.2e} (allowed: {tolerance:.0e}, or {margin:g}x "
                        f"float32's own error); report this model")
    return errors


def parity_summary(errors: dict[str, float]) -> str:
    """The log line's account of the parity check, with both float64 errors when they were measured."""
    summary = f"output matches to {errors['cleaned_vs_exported']:.1e} of peak"
    if "cleaned_vs_float64" in errors:
        summary += (f", within float32's own noise (from float64: exported {errors['exported_vs_float64']:.1e}, "
                    f"cleaned {errors['cleaned_vs_float64']:.1e})")
    return summary


def clean(source: str | Path, precision: str, output: str | Path, *, settings: dict[str, Any], io_dtype: str = "float32",
          verify_frames: list[int] | None = None) -> Path:
    """Clean `source`, convert it to `precision` by its measured float32 regions, write `output` and its precision file;
    `verify_frames` replaces `[clean] verify_frames` (the tests verify one short length)."""
    from export import precision as precisions

    check_precision(settings, precision)
    started = time.perf_counter()
    output = Path(output)
    record_path = precision_file_for(output)
    with atomic_output(output, (source,)) as tmp_model, atomic_output(record_path, (source,)) as tmp_record:
        typed, record = _cleaned_and_typed(source, precision, io_dtype, verify_frames, settings, record_path.name)
        record["seconds"] = round(time.perf_counter() - started, 1)
        onnx.save(typed, str(tmp_model))
        tmp_record.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    precisions.legacy_precision_file_for(output).unlink(missing_ok=True)  # its old name (*.plan.json)
    log.info("wrote %s (%d nodes, %.0f%% of MACs in half precision) and %s in %.0f s", output,
             len(typed.graph.node), 100 * record["fp16_mac_share"], record_path.name, record["seconds"])
    return output


def _cleaned_and_typed(source, precision: str, io_dtype: str, verify_frames, settings: dict, record_name: str):
    """The cleaned, typed model and its precision record (inside the outputs' locks, so a second
    clean of the same output waits for this one)."""
    from export import precision as precisions

    original = load_model(source, settings["tensors"])
    cleaned = clean_graph(original)
    parity = check_parity(original, cleaned, settings["clean"]["parity_frames"], settings)
    counts = {"exported": op_counts(original), "cleaned": op_counts(cleaned)}
    log.info("cleaned %s: %d -> %d nodes, %s", source, len(original.graph.node), len(cleaned.graph.node),
             parity_summary(parity))
    del original
    typed, record = precisions.apply_precision(cleaned, precision, settings, io_dtype, verify_frames)
    record.update(source=str(source), op_counts=counts)
    update_metadata(typed, {"precision": precision, "io_dtype": io_dtype,
                         "fp16_mac_share": record["fp16_mac_share"], "precision_file": record_name,
                         "clean_parity_rel_error": parity["cleaned_vs_exported"]})
    return typed, record


def main(argv=None) -> int:
    parser = CommandParser(prog="python -m export.clean", description=__doc__.splitlines()[0])
    parser.add_argument("input", help="ONNX file written by python -m export")
    parser.add_argument("--precision", required=True, help="a precision of pipeline.toml's [precisions]: fp32, fp16")
    parser.add_argument("--output", required=True, help="cleaned ONNX file to write; its precision file goes beside it")
    parser.add_argument("--io-dtype", choices=["float32", "half"], default="float32",
                        help="type of the mel input and audio output (default float32; half keeps them in "
                             "the precision's half type)")
    args = parser.parse_args(argv)
    clean(args.input, args.precision, args.output, settings=load_settings(), io_dtype=args.io_dtype)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
