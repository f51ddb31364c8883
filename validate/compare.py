"""python -m validate compare REFERENCE.onnx CANDIDATE(.onnx|.plan) [--layerwise]

Runs reference and candidate on the same speech-like mels with Polygraphy's runners and compares
them with Polygraphy's Comparator. The final output must stay within `output_rel_tol` of its peak
and meet the precision's cosine/SNR thresholds. With --layerwise every tensor the reference
names is marked as an output in both models (tensors only the candidate has, such as the casts
the fp16 conversion inserts, are skipped) and the first tensor in the reference's topological
order whose max abs error exceeds `layer_rel_tol` of the reference tensor's peak names the layer
that went wrong. Inputs and reference outputs are saved in Polygraphy's JSON format so
`polygraphy run` can replay the comparison.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.mels import sample_mel
from pipeline.onnx_metadata import read_metadata
from pipeline.errors import UserError
import runtime
from pipeline.settings import REPO_ROOT, VOCODERS, load_settings
from pipeline.quality import bar_for, failures
from validate.metrics import audio_metrics

log = logging.getLogger("validate")


@dataclass
class LayerError:
    tensor: str
    node: str
    op: str
    max_abs: float
    relative: float      # max abs error / the reference tensor's peak
    passed: bool
    tolerance: float     # the max abs error allowed (relative tolerance times the peak)


@dataclass
class Outcome:
    """What a comparison found; `passed` decides the exit code."""

    reference: str
    candidate: str
    precision: str
    passed: bool
    output: LayerError
    metrics: list[dict[str, float]]
    thresholds: dict[str, float]
    metric_failures: list[str]
    layers: list[LayerError] = field(default_factory=list)   # topological order, --layerwise only
    unmatched: int = 0                                        # reference tensors the candidate lacks
    first_failure: LayerError | None = None
    saved: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --- what is being compared --------------------------------------------------------------------


def candidate_precision(candidate: Path, manifest: dict | None) -> str:
    """fp32/fp16/bf16 from the manifest, the model's metadata, its name (v4.fp16.onnx) or its weights."""
    if manifest:
        return manifest["precision"]
    metadata = read_metadata(candidate)
    if isinstance(metadata.get("precision"), str):
        return metadata["precision"]
    match = re.search(r"\.(fp32|fp16|bf16)\.onnx$", candidate.name)
    if match:
        return match.group(1)
    import onnx
    model = onnx.load(str(candidate))
    types = {init.data_type for init in model.graph.initializer}
    return "fp16" if onnx.TensorProto.FLOAT16 in types else "bf16" if onnx.TensorProto.BFLOAT16 in types else "fp32"


def reference_layers(reference: Path) -> list[tuple[str, str, str]]:
    """(tensor, node name, op type) for every node output, in the reference's topological order."""
    import onnx
    graph = onnx.load(str(reference), load_external_data=False).graph
    return [(out, node.name or out, node.op_type) for node in graph.node for out in node.output
            if out and node.op_type != "Constant"]  # constants are weights, not layers


def candidate_tensors(candidate: Path) -> set[str]:
    import onnx
    graph = onnx.load(str(candidate), load_external_data=False).graph
    return {out for node in graph.node for out in node.output}


# --- Polygraphy runners -----------------------------------------------------------------------


def onnx_runner(path: Path, name: str, outputs: list[str] | None):
    """ONNX Runtime (CPU) through Polygraphy; `outputs` marks those tensors as extra outputs."""
    from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    if outputs is None:
        return OnnxrtRunner(SessionFromOnnx(str(path), providers=["cpu"]), name=name)
    model = ModifyOutputs(OnnxFromPath(str(path)), outputs=outputs)
    return OnnxrtRunner(SessionFromOnnx(BytesFromOnnx(model), providers=["cpu"]), name=name)


def trt_runner(plan: Path, manifest: dict, layerwise: bool, frames: int, settings: dict):
    """Polygraphy's TrtRunner on the plan, or on an engine rebuilt from the manifest's cleaned ONNX
    with every tensor marked as an output (a plan keeps no intermediate tensors)."""
    if manifest.get("backend") == "tensorrt_rtx":
        import polygraphy.config
        polygraphy.config.USE_TENSORRT_RTX = True
    from polygraphy.backend.trt import (CreateConfig, EngineFromBytes, EngineFromNetwork, ModifyNetworkOutputs,
                                        NetworkFromOnnxPath, Profile, TrtRunner)
    if not layerwise:
        return TrtRunner(EngineFromBytes(plan.read_bytes()), name="candidate")
    from polygraphy import constants
    onnx_path = REPO_ROOT / manifest["onnx"]["path"]
    if not onnx_path.is_file():
        raise UserError(f"the manifest's ONNX {onnx_path} is missing; run make onnx")
    name, n_mels = settings["tensors"]["input"], manifest["n_mels"]
    profile = Profile().add(name, min=(1, n_mels, 1), opt=(1, n_mels, frames), max=(1, n_mels, frames))
    network = ModifyNetworkOutputs(NetworkFromOnnxPath(str(onnx_path), strongly_typed=True), outputs=constants.MARK_ALL)
    log.warning("layerwise on a plan: rebuilding from %s with every tensor marked as an output; marking "
                "outputs can change which kernels and fusions TensorRT picks", onnx_path)
    return TrtRunner(EngineFromNetwork(network, config=CreateConfig(profiles=[profile])), name="candidate")


def feeds(vocoder: str, frames: int, count: int, settings: dict) -> list[dict[str, np.ndarray]]:
    """Polygraphy's data loader contract: a list of feed dicts, here realistic mels (seeds 0..)."""
    return [{settings["tensors"]["input"]: sample_mel(vocoder, frames, batch=1, seed=seed)} for seed in range(count)]


# --- comparison -----------------------------------------------------------------------------------


def compare(reference: str | Path, candidate: str | Path, layerwise: bool = False, save_dir: str | Path | None = None,
            settings: dict | None = None) -> Outcome:
    """Run both models through Polygraphy and judge the candidate; see the module docstring."""
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.WARNING  # Polygraphy's progress lines would drown the summary
    settings = settings or load_settings()
    cfg = settings["validate"]
    reference, candidate = Path(reference), Path(candidate)
    _check_inputs(reference, candidate)
    vocoder = read_metadata(reference).get("vocoder")
    if vocoder not in VOCODERS:
        raise UserError(f"{reference} carries no vocoder metadata; pass the ONNX written by python -m export")
    manifest = runtime.read_manifest(candidate) if candidate.suffix == ".plan" else None
    precision = candidate_precision(candidate, manifest)
    frames = cfg["layer_frames"] if layerwise else cfg["compare_frames"]
    count = 1 if layerwise else cfg["compare_inputs"]
    output_name = settings["tensors"]["output"]

    layers = reference_layers(reference) if layerwise else []
    marked = None
    if layerwise and manifest is None:
        present = candidate_tensors(candidate)
        marked = [tensor for tensor, _, _ in layers if tensor in present]
    ref_runner = onnx_runner(reference, "reference", [t for t, _, _ in layers] if layerwise else None)
    if manifest is not None:
        blocker = runtime.plan_blocker(manifest)
        if blocker:
            raise runtime.PlanNotRunnable(f"{candidate} cannot run here ({blocker}); compare its cleaned ONNX "
                                          f"instead: python -m validate compare {reference} {manifest['onnx']['path']}"
                                          f"{' --layerwise' if layerwise else ''}")
        cand_runner = trt_runner(candidate, manifest, layerwise, frames, settings)
    else:
        cand_runner = onnx_runner(candidate, "candidate", marked)

    save_dir = Path(save_dir or REPO_ROOT / cfg["artifacts"])
    save_dir.mkdir(parents=True, exist_ok=True)
    stem = candidate.name + (".layerwise" if layerwise else "")
    inputs_path = save_dir / f"{stem}.inputs.json"
    log.info("%s vs %s: %d input(s) of %d frames%s", reference.name, candidate.name, count, frames,
             f", {len(layers)} reference tensors" if layerwise else "")
    results = Comparator.run([ref_runner, cand_runner], data_loader=feeds(vocoder, frames, count, settings),
                             save_inputs_path=str(inputs_path))
    results = _common_float_outputs(results)

    errors = _tensor_errors(results, cfg["layer_rel_tol"] if layerwise else cfg["output_rel_tol"],
                            output_name, cfg["output_rel_tol"])
    by_tensor = {tensor: (node, op) for tensor, node, op in layers}
    layer_list = [LayerError(t, *by_tensor[t], *errors[t]) for t, _, _ in layers if t in errors and t != output_name]
    output = LayerError(output_name, "graph output", "-", *errors[output_name])

    reference_audio = [it[output_name] for it in results["reference"]]
    candidate_audio = [it[output_name] for it in results["candidate"]]
    rate = int(read_metadata(reference).get("sampling_rate", 0)) or (24000 if vocoder == "v3" else 48000)
    metrics = [audio_metrics(r, c, rate, settings) for r, c in zip(reference_audio, candidate_audio)]
    thresholds = bar_for(settings, precision)
    missed = sorted({phrase for m in metrics for phrase in failures(m, thresholds)})
    first = next((layer for layer in layer_list if not layer.passed), None)

    outcome = Outcome(str(reference), str(candidate), precision, passed=output.passed and not missed and first is None,
                      output=output, metrics=metrics, thresholds=thresholds, metric_failures=missed,
                      layers=layer_list, first_failure=first,
                      unmatched=len([t for t, _, _ in layers if t not in errors and t != output_name]))
    outcome.saved = _save(results, save_dir, stem, inputs_path, first, output_name, reference_audio[0],
                          candidate_audio[0], rate, f"{reference.name} vs {candidate.name}")
    outcome.notes.append(replay_command(candidate, outcome, first, output_name))
    if manifest is not None and layerwise:
        outcome.notes.append("engine rebuilt with every tensor marked as an output: kernel choice can differ from the plan")
    return outcome


def _check_inputs(reference: Path, candidate: Path) -> None:
    for path, kinds in ((reference, (".onnx",)), (candidate, (".onnx", ".plan"))):
        if not path.is_file():
            raise UserError(f"{path} not found; run make onnx (or make engines) first")
        if path.suffix not in kinds:
            raise UserError(f"{path} is not a {' or '.join(kinds)} file")


def _common_float_outputs(results):
    """The run results restricted to floating-point tensors both runners produced."""
    from polygraphy.comparator import RunResults
    from polygraphy.comparator.struct import IterationResult
    (ref_name, ref_iters), (cand_name, cand_iters) = list(results.items())
    keep = [name for name, value in ref_iters[0].items()
            if name in cand_iters[0] and np.issubdtype(np.asarray(value).dtype, np.floating)]
    selected = RunResults()
    for name, iterations in ((ref_name, ref_iters), (cand_name, cand_iters)):
        selected.append((name, [IterationResult({k: np.asarray(it[k]) for k in keep}, runtime=it.runtime, runner_name=name)
                                for it in iterations]))
    return selected


def _tensor_errors(results, rel_tol: float, output_name: str, output_rel_tol: float) -> dict[str, tuple]:
    """Per tensor (max abs error, error / reference peak, passed), judged by Polygraphy's simple
    compare function (SimpleCompareFunc) with an absolute tolerance of `rel_tol` times each reference tensor's peak."""
    from polygraphy.comparator import Comparator, SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    reference = results["reference"]
    peaks = {name: max(float(np.abs(np.asarray(it[name], dtype=np.float64)).max()) for it in reference)
             for name in reference[0].keys()}
    atol = {name: max((output_rel_tol if name == output_name else rel_tol) * peak, 1e-12) for name, peak in peaks.items()}
    compare_func = SimpleCompareFunc(atol=atol, rtol=0.0, check_error_stat="max")
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # the per-tensor log lines would drown the report
        accuracy = Comparator.compare_accuracy(results, compare_func=compare_func)
    per_iteration = accuracy[0][("reference", "candidate")]
    errors = {}
    for name, peak in peaks.items():
        max_abs = max(float(iteration[name].max_absdiff) for iteration in per_iteration)
        passed = all(bool(iteration[name]) for iteration in per_iteration)
        relative = max_abs / peak if peak > 0 else (0.0 if max_abs == 0 else float("inf"))
        errors[name] = (max_abs, relative, passed, atol[name])
    return errors


def _save(results, save_dir: Path, stem: str, inputs_path: Path, first: LayerError | None, output_name: str,
          reference_audio: np.ndarray, candidate_audio: np.ndarray, rate: int, title: str) -> dict[str, str]:
    """The reference's outputs (the final one, plus the first failing tensor) in Polygraphy's format,
    and the comparison plot."""
    from polygraphy.comparator import RunResults
    from polygraphy.comparator.struct import IterationResult
    keep = [output_name] + ([first.tensor] if first else [])
    reference = RunResults()
    reference.append(("reference", [IterationResult({k: np.asarray(it[k]) for k in keep}, runtime=it.runtime,
                                                    runner_name="reference") for it in results["reference"]]))
    outputs_path = save_dir / f"{stem}.reference-outputs.json"
    reference.save(str(outputs_path))
    from validate.plots import plot_comparison
    plot = plot_comparison(reference_audio, candidate_audio, rate, save_dir / f"{stem}.png", title)
    return {"inputs": str(inputs_path), "reference_outputs": str(outputs_path), "plot": str(plot)}


def replay_command(candidate: Path, outcome: Outcome, first: LayerError | None, output_name: str) -> str:
    """The polygraphy command that reruns the candidate and checks it against the saved reference."""
    checked = [first, outcome.output] if first else [outcome.output]
    tensors = " ".join(layer.tensor for layer in checked)
    tolerances = " ".join(f"{layer.tensor}:{layer.tolerance:.3g}" for layer in checked)
    runner = "--trt" if candidate.suffix == ".plan" else "--onnxrt"
    return (f"replay: polygraphy run {candidate} {runner} --onnx-outputs {tensors} "
            f"--load-inputs {outcome.saved['inputs']} --load-outputs {outcome.saved['reference_outputs']} "
            f"--atol {tolerances} --rtol 0 --check-error-stat max")


# --- printing -------------------------------------------------------------------------------------


def summary(outcome: Outcome, worst: int) -> str:
    """The verdict, the metrics, and with --layerwise the first failing layer and the worst ones."""
    lines = [f"{Path(outcome.candidate).name} ({outcome.precision}) vs {Path(outcome.reference).name}: "
             f"{'PASS' if outcome.passed else 'FAIL'}"]
    out = outcome.output
    lines.append(f"  output {out.tensor}: max abs error {out.max_abs:.3e} = {out.relative:.2e} of peak "
                 f"({'ok' if out.passed else 'over tolerance'})")
    cosines = [m["cosine"] for m in outcome.metrics]
    snrs = [m["snr_db"] for m in outcome.metrics]
    lines.append(f"  audio over {len(outcome.metrics)} input(s): cosine min {min(cosines):.6f} "
                 f"(>= {outcome.thresholds['cosine_min']}), SNR min {min(snrs):.1f} dB (>= {outcome.thresholds['snr_min_db']}), "
                 f"MSE max {max(m['mse'] for m in outcome.metrics):.2e}, "
                 f"log-mel distance max {max(m['log_mel_distance'] for m in outcome.metrics):.3f}")
    lines += [f"  missed: {phrase}" for phrase in outcome.metric_failures]
    if outcome.layers:
        failed = sum(not layer.passed for layer in outcome.layers)
        lines.append(f"  layers: {len(outcome.layers)} compared, {failed} over tolerance"
                     + (f", {outcome.unmatched} reference tensors without a counterpart (folded or renamed)"
                        if outcome.unmatched else ""))
        if outcome.first_failure:
            f = outcome.first_failure
            lines.append(f"  first failing layer: {f.node} ({f.op}, tensor {f.tensor}): max abs {f.max_abs:.3e} "
                         f"= {f.relative:.2e} of peak")
        lines.append("")
        lines.append(f"  {'worst layers':60} {'op':18} {'max abs':>10} {'of peak':>9}")
        for layer in sorted(outcome.layers, key=lambda l: -l.relative)[:worst]:
            lines.append(f"  {layer.node[:60]:60} {layer.op[:18]:18} {layer.max_abs:>10.3e} {layer.relative:>9.2e}"
                         f"{'' if layer.passed else '  FAIL'}")
    lines += [f"  {note}" for note in outcome.notes]
    lines += [f"  saved {kind}: {path}" for kind, path in outcome.saved.items()]
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("reference", help="the exported float32 ONNX (engines/onnx/<vocoder>.onnx)")
    parser.add_argument("candidate", help="a cleaned .onnx (run with ONNX Runtime) or a .plan (TensorRT)")
    parser.add_argument("--layerwise", action="store_true", help="compare every tensor and name the first bad layer")
    parser.add_argument("--save-dir", help="where inputs, reference outputs and the plot go (default: [validate] artifacts)")


def main(args) -> int:
    outcome = compare(args.reference, args.candidate, args.layerwise, args.save_dir)
    print(summary(outcome, load_settings()["validate"]["worst_layers"]))
    if outcome.first_failure:
        print(f"first failing layer: {outcome.first_failure.node}")
    return 0 if outcome.passed else 1

