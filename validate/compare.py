"""python -m validate compare REFERENCE.onnx CANDIDATE(.onnx|.plan) [--layerwise]

Runs reference and candidate on the same speech-like mels as Polygraphy runners and judges them
with Polygraphy's Comparator.compare_accuracy, in the steps Polygraphy separates: make the runners
(the reference in ONNX Runtime; an .onnx candidate in ONNX Runtime, a .plan through the project's
runtime, which is what users run), run them (entered in one ExitStack), judge, save. Whether a
plan can run here is the runtime's decision (runtime.plan_blocker); where it cannot,
PlanNotRunnable says why and names the command that compares the plan's cleaned ONNX instead.

The final output must stay within `output_rel_tol` of its peak and meet the precision's cosine/SNR
bar (pipeline/quality.py). With --layerwise every tensor the reference names is marked as an
output in both models (tensors only the candidate has, such as the casts the fp16 conversion
inserts, are skipped) and the first tensor in the reference's topological order whose max abs
error exceeds `layer_rel_tol` of the reference tensor's peak names the layer that went wrong. A
plan keeps no intermediate tensors, so there the candidate is an engine rebuilt from the plan's
cleaned ONNX with every tensor marked, through Polygraphy's TensorRT loaders (in their TensorRT-RTX
mode for TensorRT-RTX plans). Inputs and reference outputs are saved in Polygraphy's JSON format
so `polygraphy run` can replay the comparison.
"""
from __future__ import annotations

import contextlib
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from polygraphy.backend.base import BaseRunner

import runtime
from pipeline.errors import UserError
from pipeline.files import atomic_output, input_file
from pipeline.onnx_metadata import missing_metadata, read_metadata
from pipeline.onnx_tools import external_data_inside
from pipeline.quality import bar_for, failures
from pipeline.settings import REPO_ROOT, VOCODERS
from validate.metrics import audio_metrics
from validate.plan_engine import PlanEngine
from vocoder_models.mels import sample_mel

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


# --- what is compared --------------------------------------------------------------------------


def candidate_precision(candidate: Path, manifest: dict | None) -> str:
    """fp32/fp16 from the manifest, the model's metadata, its name (v4.fp16.onnx) or its weights."""
    if manifest:
        return manifest["precision"]
    metadata = read_metadata(candidate)
    if isinstance(metadata.get("precision"), str):
        return metadata["precision"]
    match = re.search(r"\.(fp32|fp16)\.onnx$", candidate.name)
    if match:
        return match.group(1)
    import onnx
    model = onnx.load(str(candidate))
    types = {init.data_type for init in model.graph.initializer}
    return "fp16" if onnx.TensorProto.FLOAT16 in types else "fp32"


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


@dataclass(frozen=True)
class Comparison:
    """What one comparison runs, settled before anything runs."""

    reference: Path
    candidate: Path
    manifest: dict | None                # the candidate plan's manifest; None for an ONNX candidate
    vocoder: str
    sampling_rate: int
    precision: str
    layerwise: bool
    frames: int                          # mel length of every input
    inputs: int                          # how many speech-like mels
    layers: list[tuple[str, str, str]]   # reference (tensor, node, op) in topological order; --layerwise only


def settle_comparison(reference: Path, candidate: Path, layerwise: bool, settings: dict) -> Comparison:
    """Check both files and read what the comparison needs from them (one-line errors)."""
    _check_inputs(reference, candidate)
    metadata = read_metadata(reference)
    if missing_metadata(metadata) or metadata["vocoder"] not in VOCODERS:
        raise UserError(f"{reference} carries no vocoder metadata; pass the ONNX written by python -m export")
    manifest = runtime.read_manifest(candidate) if candidate.suffix == ".plan" else None
    theirs = manifest["vocoder"] if manifest is not None else read_metadata(candidate).get("vocoder")
    if theirs != metadata["vocoder"]:
        raise UserError(f"{candidate} is the {theirs} vocoder and {reference} the {metadata['vocoder']}; "
                        f"compare the {metadata['vocoder']} candidate with its own exported ONNX")
    cfg = settings["validate"]
    return Comparison(reference, candidate, manifest, metadata["vocoder"], metadata["sampling_rate"],
                      candidate_precision(candidate, manifest), layerwise,
                      frames=cfg["layer_frames"] if layerwise else cfg["compare_frames"],
                      inputs=1 if layerwise else cfg["compare_inputs"],
                      layers=reference_layers(reference) if layerwise else [])


def _check_inputs(reference: Path, candidate: Path) -> None:
    for path, kinds in ((reference, (".onnx",)), (candidate, (".onnx", ".plan"))):
        input_file(path, "model", "run make onnx (or make engines) first")
        if path.suffix not in kinds:
            raise UserError(f"{path} is not a {' or '.join(kinds)} file")
        if path.suffix == ".onnx":
            external_data_inside(path)


def feeds(vocoder: str, frames: int, count: int, settings: dict) -> list[dict[str, np.ndarray]]:
    """Polygraphy's data loader contract: a list of feed dicts, here realistic mels (seeds 0..)."""
    return [{settings["tensors"]["input"]: sample_mel(vocoder, frames, batch=1, seed=seed)} for seed in range(count)]


# --- runners: made here, entered and run by `run_runners` --------------------------------------


class RuntimeRunner(BaseRunner):
    """A plan through the project's runtime (validate/plan_engine.py: what users run, chunking and
    profile choice included) as a Polygraphy runner, so Polygraphy judges the plan as users get it."""

    def __init__(self, plan: Path, name: str = "candidate"):
        super().__init__(name=name, prefix="runtime-runner")
        self.engine = PlanEngine(plan)

    def activate_impl(self):
        self.engine.open()

    def get_input_metadata_impl(self):
        from polygraphy.common import TensorMetadata
        spec = self.engine.manifest["input"]
        return TensorMetadata().add(spec["name"], dtype=np.dtype(spec["dtype"]), shape=spec["shape"])

    def infer_impl(self, feed_dict):
        audio = self.engine(feed_dict[self.engine.input_name])
        self.inference_time = self.engine.last_seconds
        return OrderedDict([(self.engine.output_name, audio)])

    def deactivate_impl(self):
        self.engine.close()


def make_runners(comparison: Comparison, settings: dict) -> list:
    """The reference in ONNX Runtime, then the candidate: ONNX Runtime for an .onnx, the runtime for a
    .plan, or with --layerwise on a plan an engine rebuilt with every tensor marked as an output."""
    marked = [tensor for tensor, _, _ in comparison.layers] if comparison.layerwise else None
    reference = onnx_runner(comparison.reference, "reference", marked)
    if comparison.manifest is None:
        if marked is not None:
            present = candidate_tensors(comparison.candidate)
            marked = [tensor for tensor in marked if tensor in present]
        return [reference, onnx_runner(comparison.candidate, "candidate", marked)]
    _require_runnable(comparison)
    if comparison.layerwise:
        return [reference, rebuilt_trt_runner(comparison.manifest, comparison.frames, settings)]
    return [reference, RuntimeRunner(comparison.candidate)]


def _require_runnable(comparison: Comparison) -> None:
    """PlanNotRunnable (the runtime's verdict, runtime/runnable.py) with the command that compares
    the plan's cleaned ONNX instead."""
    blocker = runtime.plan_blocker(comparison.manifest)
    if blocker:
        raise runtime.PlanNotRunnable(  # the plan's name only: the line stays short enough to keep both fixes
            f"{comparison.candidate.name} cannot run here ({blocker}); compare its cleaned ONNX instead: python -m "
            f"validate compare {comparison.reference} {comparison.manifest['onnx']['path']}"
            f"{' --layerwise' if comparison.layerwise else ''}")


def onnx_runner(path: Path, name: str, outputs: list[str] | None):
    """ONNX Runtime (CPU) through Polygraphy; `outputs` marks those tensors as extra outputs."""
    from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    if outputs is None:
        return OnnxrtRunner(SessionFromOnnx(str(path), providers=["cpu"]), name=name)
    model = ModifyOutputs(OnnxFromPath(str(path)), outputs=outputs)
    return OnnxrtRunner(SessionFromOnnx(BytesFromOnnx(model), providers=["cpu"]), name=name)


def rebuilt_trt_runner(manifest: dict, frames: int, settings: dict):
    """Polygraphy's TrtRunner on an engine rebuilt from the manifest's cleaned ONNX with every tensor
    marked as an output (a plan keeps no intermediate tensors), with the backend that built the plan."""
    import polygraphy.config
    polygraphy.config.USE_TENSORRT_RTX = manifest["backend"] == "tensorrt_rtx"  # before Polygraphy's TensorRT import
    from polygraphy import constants
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineFromNetwork,
        ModifyNetworkOutputs,
        NetworkFromOnnxPath,
        Profile,
        TrtRunner,
    )
    onnx_path = REPO_ROOT / manifest["onnx"]["path"]
    if not onnx_path.is_file():
        raise UserError(f"the manifest's ONNX {onnx_path} is missing; run make onnx")
    name, n_mels = settings["tensors"]["input"], manifest["n_mels"]
    profile = Profile().add(name, min=(1, n_mels, 1), opt=(1, n_mels, frames), max=(1, n_mels, frames))
    network = ModifyNetworkOutputs(NetworkFromOnnxPath(str(onnx_path), strongly_typed=True), outputs=constants.MARK_ALL)
    log.warning("layerwise on a plan: rebuilding from %s with every tensor marked as an output; marking "
                "outputs can change which kernels and fusions TensorRT picks", onnx_path)
    return TrtRunner(EngineFromNetwork(network, config=CreateConfig(profiles=[profile])), name="candidate")


def run_runners(runners: list, inputs: list[dict[str, np.ndarray]]):
    """Every runner on every input, as Polygraphy's RunResults. The runners are entered in one
    ExitStack: whichever fails to activate or run, those already active are deactivated (engines
    closed, GPU memory freed) before the error reaches the user."""
    from polygraphy.comparator import RunResults
    results = RunResults()
    with contextlib.ExitStack() as stack:
        active = [stack.enter_context(runner) for runner in runners]
        for runner in active:
            results.append((runner.name, [_infer(runner, feed) for feed in inputs]))
    return results


def _infer(runner, feed: dict[str, np.ndarray]):
    """One inference, the feed cast to the runner's input types (half-I/O models take float16), the
    outputs copied (runners may reuse their buffers)."""
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.datatype import DataType
    metadata = runner.get_input_metadata(use_numpy_dtypes=False)
    cast = {name: np.asarray(value).astype(DataType.to_dtype(metadata[name].dtype, "numpy")) for name, value in feed.items()}
    outputs = runner.infer(cast)
    return IterationResult({name: np.array(value) for name, value in outputs.items()},
                           runtime=runner.last_inference_time(), runner_name=runner.name)


# --- the comparison: make the runners, run them, judge, save -----------------------------------


def compare(reference: str | Path, candidate: str | Path, layerwise: bool = False, save_dir: str | Path | None = None,
            *, settings: dict) -> Outcome:
    """Make the runners, run them, judge the candidate, save what replays it; see the module docstring."""
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.WARNING  # Polygraphy's progress lines would drown the summary
    comparison = settle_comparison(Path(reference), Path(candidate), layerwise, settings)
    runners = make_runners(comparison, settings)
    inputs = feeds(comparison.vocoder, comparison.frames, comparison.inputs, settings)
    log.info("%s vs %s: %d input(s) of %d frames%s", comparison.reference.name, comparison.candidate.name,
             comparison.inputs, comparison.frames, f", {len(comparison.layers)} reference tensors" if layerwise else "")
    results = _common_float_outputs(run_runners(runners, inputs))
    outcome = judge(comparison, results, settings)
    save_dir = Path(save_dir or REPO_ROOT / settings["validate"]["artifacts"])
    save_dir.mkdir(parents=True, exist_ok=True)
    outcome.saved = save(comparison, results, inputs, outcome, save_dir, settings["tensors"]["output"])
    outcome.notes.append(replay_command(comparison, outcome))
    if comparison.manifest is not None and layerwise:
        outcome.notes.append("engine rebuilt with every tensor marked as an output: kernel choice can differ from the plan")
    return outcome


def judge(comparison: Comparison, results, settings: dict) -> Outcome:
    """The verdict: the final output within `output_rel_tol` of its peak, the audio over the
    precision's bar (pipeline/quality.py), and with --layerwise no tensor over `layer_rel_tol`."""
    cfg = settings["validate"]
    output_name = settings["tensors"]["output"]
    errors = _tensor_errors(results, cfg["layer_rel_tol"] if comparison.layerwise else cfg["output_rel_tol"],
                            output_name, cfg["output_rel_tol"])
    layers = [LayerError(tensor, node, op, *errors[tensor]) for tensor, node, op in comparison.layers
              if tensor in errors and tensor != output_name]
    output = LayerError(output_name, "graph output", "-", *errors[output_name])
    metrics = [audio_metrics(ref[output_name], cand[output_name], comparison.sampling_rate, settings)
               for ref, cand in zip(results["reference"], results["candidate"], strict=True)]
    thresholds = bar_for(settings, comparison.precision)
    missed = sorted({phrase for m in metrics for phrase in failures(m, thresholds)})
    first = next((layer for layer in layers if not layer.passed), None)
    return Outcome(str(comparison.reference), str(comparison.candidate), comparison.precision,
                   passed=output.passed and not missed and first is None, output=output, metrics=metrics,
                   thresholds=thresholds, metric_failures=missed, layers=layers, first_failure=first,
                   unmatched=len([t for t, _, _ in comparison.layers if t not in errors and t != output_name]))


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


# --- saving ---------------------------------------------------------------------------------------


def save(comparison: Comparison, results, inputs: list, outcome: Outcome, save_dir: Path, output_name: str) -> dict[str, str]:
    """The inputs and the reference's outputs (the final one, plus the first failing tensor) in
    Polygraphy's JSON format, which `polygraphy run --load-inputs/--load-outputs` replays, and the
    comparison plot; each file is written whole or not at all."""
    from polygraphy.comparator import RunResults
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.json import save_json

    from validate.plots import plot_comparison

    stem = comparison.candidate.name + (".layerwise" if comparison.layerwise else "")
    keep = [output_name] + ([outcome.first_failure.tensor] if outcome.first_failure else [])
    reference = RunResults()
    reference.append(("reference", [IterationResult({k: it[k] for k in keep}, runtime=it.runtime, runner_name="reference")
                                    for it in results["reference"]]))
    paths = {"inputs": save_dir / f"{stem}.inputs.json", "reference_outputs": save_dir / f"{stem}.reference-outputs.json"}
    with atomic_output(paths["inputs"]) as tmp:
        save_json(inputs, str(tmp), description="comparison inputs")
    with atomic_output(paths["reference_outputs"]) as tmp:
        reference.save(str(tmp))
    paths["plot"] = plot_comparison(results["reference"][0][output_name], results["candidate"][0][output_name],
                                    comparison.sampling_rate, save_dir / f"{stem}.png",
                                    f"{comparison.reference.name} vs {comparison.candidate.name}")
    return {kind: str(path) for kind, path in paths.items()}


def replay_command(comparison: Comparison, outcome: Outcome) -> str:
    """The polygraphy command that reruns the candidate with Polygraphy's own runner and checks it
    against the saved reference outputs."""
    checked = [outcome.first_failure, outcome.output] if outcome.first_failure else [outcome.output]
    tensors = " ".join(layer.tensor for layer in checked)
    tolerances = " ".join(f"{layer.tensor}:{layer.tolerance:.3g}" for layer in checked)
    manifest = comparison.manifest
    if manifest is None:
        model = f"{comparison.candidate} --onnxrt --onnx-outputs {tensors}"
    elif comparison.layerwise:  # the tensors exist only in an engine built from the cleaned ONNX
        model = f"{manifest['onnx']['path']} --trt --trt-outputs {tensors}"
    else:
        model = f"{comparison.candidate} --trt"
    rtx = "POLYGRAPHY_USE_TENSORRT_RTX=1 " if manifest is not None and manifest["backend"] == "tensorrt_rtx" else ""
    return (f"replay: {rtx}polygraphy run {model} --load-inputs {outcome.saved['inputs']} "
            f"--load-outputs {outcome.saved['reference_outputs']} --atol {tolerances} --rtol 0 --check-error-stat max")


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
        for layer in sorted(outcome.layers, key=lambda layer: -layer.relative)[:worst]:
            lines.append(f"  {layer.node[:60]:60} {layer.op[:18]:18} {layer.max_abs:>10.3e} {layer.relative:>9.2e}"
                         f"{'' if layer.passed else '  FAIL'}")
    lines += [f"  {note}" for note in outcome.notes]
    lines += [f"  saved {kind}: {path}" for kind, path in outcome.saved.items()]
    return "\n".join(lines)


def add_arguments(parser, settings: dict) -> None:
    parser.add_argument("reference", help="the exported float32 ONNX (engines/onnx/<vocoder>.onnx)")
    parser.add_argument("candidate", help="a cleaned .onnx (run with ONNX Runtime) or a .plan (TensorRT)")
    parser.add_argument("--layerwise", action="store_true", help="compare every tensor and name the first bad layer")
    parser.add_argument("--save-dir", help="where inputs, reference outputs and the plot go (default: [validate] artifacts)")


def main(args, settings: dict) -> int:
    outcome = compare(args.reference, args.candidate, args.layerwise, args.save_dir, settings=settings)
    print(summary(outcome, settings["validate"]["worst_layers"]))
    if outcome.first_failure:
        print(f"first failing layer: {outcome.first_failure.node}")
    return 0 if outcome.passed else 1

