"""python -m validate compare-all: every engine in engines/ against the ONNX it was exported as.

Where TensorRT cannot execute a plan here, the line says why and the plan's cleaned ONNX (the
graph the plan was built from) is compared in ONNX Runtime instead, so every engine still gets
a measured verdict on its precision. The exit code is non-zero if any comparison fails or any
plan could not be executed.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.errors import UserError
from pipeline.settings import REPO_ROOT
from runtime import PlanNotRunnable, read_manifest
from validate.compare import compare, summary


def engine_manifests(settings: dict) -> list[Path]:
    """The manifests in engines/ that sit beside a plan."""
    engines = REPO_ROOT / settings["paths"]["engines"]
    return sorted(path for path in engines.glob("*.json") if path.with_suffix(".plan").is_file())


def compare_engine(manifest_path: Path, layerwise: bool, settings: dict) -> tuple[str, bool]:
    """(printable result, passed) for one engine."""
    plan = manifest_path.with_suffix(".plan")
    manifest = read_manifest(plan)
    reference = REPO_ROOT / settings["paths"]["onnx"] / f"{manifest['vocoder']}.onnx"
    worst = settings["validate"]["worst_layers"]
    try:
        outcome = compare(reference, plan, layerwise, settings=settings)
        return summary(outcome, worst), outcome.passed
    except PlanNotRunnable as error:
        fallback = compare(reference, REPO_ROOT / manifest["onnx"]["path"], layerwise, settings=settings)
        return f"NOT RUN: {error}\n{summary(fallback, worst)}", False


def add_arguments(parser, settings: dict) -> None:
    parser.add_argument("--layerwise", action="store_true", help="compare every tensor of every engine")


def main(args, settings: dict) -> int:
    manifests = engine_manifests(settings)
    if not manifests:
        raise UserError(f"no plans with manifests in {settings['paths']['engines']}/; run make engines")
    verdicts = []
    for manifest_path in manifests:
        text, passed = compare_engine(manifest_path, args.layerwise, settings)
        print(text + "\n")
        verdicts.append((manifest_path.with_suffix(".plan").name, passed))
    print("compare-all: " + ", ".join(f"{name} {'PASS' if ok else 'FAIL/NOT RUN'}" for name, ok in verdicts))
    return 0 if all(ok for _, ok in verdicts) else 1
