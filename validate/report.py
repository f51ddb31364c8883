"""python -m validate report: the optimization report, measured on this machine.

The flow users know from the TensorRT quick-start: environment check, conversion (which files
exist, their sizes, the fp16 share), performance (original PyTorch vs the optimized engine:
time, speed-up, throughput gain, time saved, memory), quality (similarity over several inputs)
and where the models were saved. Where the engine cannot execute here the report says why and
shows what was measured instead: ONNX Runtime on the same cleaned graph.
"""
from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any

import numpy as np

from export.precision import read_precision_file
from pipeline.files import atomic_output
from pipeline.settings import REPO_ROOT, VOCODERS, output_paths
from runtime import RuntimeUserError, read_manifest
from validate.bench import machine_info, run_benchmark, tensorrt_reason

log = logging.getLogger("validate")


def environment(settings: dict) -> list[tuple[str, str]]:
    """build's doctor rows where that stage is present, else what validate itself can see."""
    try:
        from build.doctor import doctor_rows
        return doctor_rows(settings)
    except Exception as error:  # the doctor is optional here: the report still has its own facts
        log.info("build doctor unavailable (%s); reporting what validate sees", error)
        return [(key, str(value)) for key, value in machine_info().items()]


def conversion(vocoder: str, precision: str, settings: dict) -> list[dict[str, Any]]:
    """Every file of the chain for one vocoder and precision: present or not, size, fp16 share."""
    rows = []
    paths = output_paths(settings, vocoder, precision)
    for kind, path in paths.items():
        row = {"file": _relative(path), "kind": kind, "exists": path.is_file(),
               "mib": path.stat().st_size / 2 ** 20 if path.is_file() else None, "detail": ""}
        if kind == "precision_file":
            record = read_precision_file(paths["cleaned"])
            row["detail"] = _fp16_share(record) if record is not None else ""
        if kind == "manifest" and path.is_file():
            row["detail"] = _build_detail(paths["plan"])
        rows.append(row)
    return rows


def _fp16_share(record: dict) -> str:
    share = record.get("fp16_mac_share")
    return f"fp16 share of MACs {100 * share:.1f}%" if isinstance(share, (int, float)) else "fp16 share not recorded"


def _build_detail(plan: Path) -> str:
    """Backend and build time from the manifest, or why the manifest cannot be read."""
    try:
        manifest = read_manifest(plan)
    except RuntimeUserError as error:
        return f"unreadable: {error}"
    return f"{manifest['backend']} {manifest['backend_version']}, built in {manifest.get('build_seconds', 0):.0f} s"


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def performance(vocoder: str, precision: str, settings: dict) -> dict[str, Any]:
    """Original (PyTorch fp32) vs the engine at one size; the engine's reason if it cannot run."""
    cfg = settings["validate"]
    engine = f"tensorrt-{precision}"
    gpu = ["torch-eager-fp32", f"onnxruntime-cuda-{precision}", engine]
    cpu = ["torch-cpu-fp32", "onnxruntime-cpu-fp32"]
    results = run_benchmark([vocoder], [cfg["report_frames"]], [1], gpu + cpu, settings=settings)
    rows = {row["backend"]: row for row in results["rows"]}
    original = next((rows[b] for b in ("torch-eager-fp32", "torch-cpu-fp32") if rows[b]["status"] == "ok"), None)
    optimized = rows[engine] if rows[engine]["status"] == "ok" else next(
        (rows[b] for b in (f"onnxruntime-cuda-{precision}", "onnxruntime-cpu-fp32") if rows[b]["status"] == "ok"), None)
    section = {"engine_reason": tensorrt_reason(vocoder, precision, settings), "rows": results["rows"],
               "original": original, "optimized": optimized}
    if original and optimized:
        speedup = original["median_ms"] / optimized["median_ms"]
        section.update(speedup=speedup, throughput_gain_pct=100 * (speedup - 1),
                       saved_ms_per_audio_second=(original["median_ms"] - optimized["median_ms"]) / original["audio_seconds"])
    return section


def quality(reference: Path, candidate: Path, settings: dict) -> dict[str, Any]:
    """Similarity of candidate to reference over `report_inputs` speech-like mels (Polygraphy run)."""
    from validate.compare import compare
    cfg = dict(settings["validate"], compare_inputs=settings["validate"]["report_inputs"],
               compare_frames=settings["validate"]["report_frames"])
    outcome = compare(reference, candidate, settings=dict(settings, validate=cfg))
    cosines = np.array([m["cosine"] for m in outcome.metrics])
    return {"candidate": _relative(candidate), "inputs": len(cosines), "passed": outcome.passed,
            "cosine_mean": float(cosines.mean()), "cosine_std": float(cosines.std()),
            "mse_mean": float(np.mean([m["mse"] for m in outcome.metrics])),
            "snr_db_mean": float(np.mean([m["snr_db"] for m in outcome.metrics])),
            "snr_db_min": float(np.min([m["snr_db"] for m in outcome.metrics])),
            "thresholds": outcome.thresholds, "plot": outcome.saved.get("plot")}


def quality_candidate(vocoder: str, precision: str, settings: dict) -> Path:
    """The plan where TensorRT can execute it, else the cleaned ONNX it was built from."""
    paths = output_paths(settings, vocoder, precision)
    return paths["plan"] if tensorrt_reason(vocoder, precision, settings) is None else paths["cleaned"]


def build_report(vocoders: list[str], precision: str, settings: dict,
                 models: dict[str, tuple[Path, Path]] | None = None) -> dict[str, Any]:
    """All sections for each vocoder; `models` maps vocoder -> (reference ONNX, candidate) when
    the defaults (engines/onnx/<v>.onnx against the plan or cleaned ONNX) are not wanted."""
    report = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "precision": precision, "environment": environment(settings), "vocoders": {}}
    for vocoder in vocoders:
        reference, candidate = (models or {}).get(vocoder) or (
            output_paths(settings, vocoder, precision)["onnx"], quality_candidate(vocoder, precision, settings))
        section: dict[str, Any] = {"conversion": conversion(vocoder, precision, settings),
                                   "performance": performance(vocoder, precision, settings)}
        if reference.is_file() and candidate.is_file():
            section["quality"] = quality(reference, candidate, settings)
        else:
            section["quality"] = {"missing": f"{_relative(reference)} or {_relative(candidate)} is missing; run make onnx"}
        report["vocoders"][vocoder] = section
    return report


# --- rendering ------------------------------------------------------------------------------------


def _ms(row: dict | None) -> str:
    return "-" if not row else f"{row['median_ms']:.2f} ms ({row['backend']}, {row['device']})"


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Optimization report ({report['precision']}, {report['created']})", "",
             "## Environment", "", "| check | finding |", "| --- | --- |"]
    lines += [f"| {label} | {finding} |" for label, finding in report["environment"]]
    for vocoder, section in report["vocoders"].items():
        lines += ["", f"## {vocoder}", "", "### Conversion", "", "| file | stage | present | MiB | detail |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['file']} | {r['kind']} | {'yes' if r['exists'] else 'no'} | "
                  f"{'-' if r['mib'] is None else format(r['mib'], '.1f')} | {r['detail']} |" for r in section["conversion"]]
        perf = section["performance"]
        lines += ["", "### Performance", ""]
        if perf["engine_reason"]:
            lines.append(f"The TensorRT engine cannot execute here: {perf['engine_reason']}. Measured instead:")
            lines.append("")
        original, optimized = perf["original"], perf["optimized"]
        lines += ["| measure | value |", "| --- | --- |",
                  f"| original | {_ms(original)} |", f"| optimized | {_ms(optimized)} |"]
        if "speedup" in perf:
            lines += [f"| speed-up | {perf['speedup']:.2f}x |",
                      f"| throughput gain | {perf['throughput_gain_pct']:+.0f}% |",
                      f"| time saved per second of audio | {perf['saved_ms_per_audio_second']:.1f} ms |"]
        for label, row in (("original", original), ("optimized", optimized)):
            if row and row.get("peak_mib") is not None:
                lines.append(f"| GPU memory, {label} | {row['peak_mib']:.0f} MiB |")
        skipped = [r for r in perf["rows"] if r["status"] != "ok"]
        if skipped:
            lines += ["", "Not measured here:", ""] + [f"- {r['backend']}: {r['reason']}" for r in skipped]
        q = section["quality"]
        lines += ["", "### Quality", ""]
        if "missing" in q:
            lines.append(q["missing"])
        else:
            lines += [f"{q['candidate']} against the float32 ONNX over {q['inputs']} speech-like inputs: "
                      f"**{'PASS' if q['passed'] else 'FAIL'}**", "",
                      "| measure | value | threshold |", "| --- | --- | --- |",
                      f"| cosine similarity | {q['cosine_mean']:.6f} ± {q['cosine_std']:.1e} "
                      f"| >= {q['thresholds']['cosine_min']} |",
                      f"| SNR | mean {q['snr_db_mean']:.1f} dB, min {q['snr_db_min']:.1f} dB "
                      f"| >= {q['thresholds']['snr_min_db']} dB |",
                      f"| MSE | {q['mse_mean']:.2e} | |"]
            if q.get("plot"):
                lines.append(f"\nPlot: {q['plot']}")
        lines += ["", "### Saved", ""] + [f"- {r['kind']}: {r['file']}" for r in section["conversion"] if r["exists"]]
    return "\n".join(lines) + "\n"


def terminal_summary(report: dict[str, Any]) -> str:
    lines = [f"{'vocoder':8} {'original':>12} {'optimized':>12} {'speed-up':>9} {'cosine':>22} {'SNR dB':>7}  engine"]
    for vocoder, section in report["vocoders"].items():
        perf, q = section["performance"], section["quality"]
        original = f"{perf['original']['median_ms']:.1f} ms" if perf["original"] else "-"
        optimized = f"{perf['optimized']['median_ms']:.1f} ms" if perf["optimized"] else "-"
        speedup = f"{perf['speedup']:.2f}x" if "speedup" in perf else "-"
        cosine = f"{q['cosine_mean']:.6f} ± {q['cosine_std']:.0e}" if "cosine_mean" in q else "-"
        snr = f"{q['snr_db_mean']:.1f}" if "snr_db_mean" in q else "-"
        engine = perf["engine_reason"] or "executed"
        lines.append(f"{vocoder:8} {original:>12} {optimized:>12} {speedup:>9} {cosine:>22} {snr:>7}  {engine}")
    return "\n".join(lines)


def add_arguments(parser, settings: dict) -> None:
    parser.add_argument("--vocoders", nargs="+", choices=VOCODERS, default=list(VOCODERS))
    parser.add_argument("--precision", default=settings["validate"]["report_precision"],
                        help="the engines' precision to report (default: [validate] report_precision)")
    parser.add_argument("--output", help="markdown file to write (default: report.md in [paths] engines)")


def main(args, settings: dict) -> int:
    from pipeline.settings import check_precision
    check_precision(settings, args.precision)
    report = build_report(args.vocoders, args.precision, settings)
    markdown = render_markdown(report)
    args.output = args.output or REPO_ROOT / settings["paths"]["engines"] / "report.md"
    with atomic_output(args.output) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    print(markdown)
    print(terminal_summary(report))
    print(f"\nreport written to {args.output}")
    return 0
