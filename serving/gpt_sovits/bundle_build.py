"""`python -m serving.gpt_sovits build`: engines from the vocoder checkpoints this GPT-SoVITS loads.

It runs the stage commands `make engines` runs (python -m export, export.clean, build), one after
another in subprocesses of this Python, for each vocoder whose checkpoint is in the GPT-SoVITS
folder, with a progress bar over the steps. Why commands and not calls: they are the one contract
the Makefile uses too, so the bundle builds exactly what `make engines` builds; each loads
pipeline.toml once at its own entry point; the memory of the v3 export (a few GB) goes back between
stages; and the offline pipeline stays outside what runs inside GPT-SoVITS (Python 3.9, see
tests/test_desktop.py). It needs Python 3.11+ and the `pipeline` and `rtx` extras in this Python
(GPT-SoVITS' 3.11 bundle: `runtime\\python.exe -m pip install ".[pipeline,rtx]"`).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

from pipeline.errors import UserError
from pipeline.settings import REPO_ROOT, VOCODERS, check_precision, load_settings, output_paths
from runtime.errors import CommandParser
from runtime.files import output_target


def stage_commands(settings: dict, vocoder: str, checkpoint: Path, precisions: list[str]) -> list[tuple[str, list[str]]]:
    """(what it makes, the command) for one vocoder: export once, then clean and build per precision."""
    python = [sys.executable, "-m"]
    onnx = output_paths(settings, vocoder, precisions[0])["onnx"]
    steps = [(f"{vocoder} ONNX", [*python, "export", "--vocoder", vocoder, "--checkpoint", str(checkpoint),
                                  "--output", str(onnx)])]
    for precision in precisions:
        paths = output_paths(settings, vocoder, precision)
        steps.append((f"{vocoder} {precision} clean", [*python, "export.clean", str(onnx), "--precision", precision,
                                                        "--output", str(paths["cleaned"])]))
        steps.append((f"{vocoder} {precision} plan", [*python, "build", str(paths["cleaned"]), "--vocoder", vocoder,
                                                       "--precision", precision, "--output", str(paths["plan"])]))
    return steps


def run_step(command: list[str]) -> None:
    """One stage command from the repository root; its last error line when it fails."""
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8", errors="replace")
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise UserError(f"python -m {command[2]} failed: {lines[-1]}")


def check_arguments(settings: dict, vocoders: list[str], precisions: list[str]) -> None:
    """Every argument and output before the first stage runs, so a bad one costs no export and
    replaces no file: known, distinct precisions and outputs that are files or missing."""
    for precision in precisions:
        check_precision(settings, precision)
    repeated = sorted({p for p in precisions if precisions.count(p) > 1})
    if repeated:
        raise UserError(f"--precisions names {', '.join(repeated)} twice; name each precision once")
    for vocoder in vocoders:
        for precision in precisions:
            for path in output_paths(settings, vocoder, precision).values():
                output_target(path)


def main(argv=None) -> int:
    parser = CommandParser(prog="python -m serving.gpt_sovits build",
                           description="Engines from the vocoder checkpoints of the GPT-SoVITS here.")
    parser.add_argument("--vocoders", nargs="+", choices=VOCODERS, default=list(VOCODERS))
    parser.add_argument("--precisions", nargs="+", default=["fp16", "fp32"])
    args = parser.parse_args(argv)
    if sys.version_info < (3, 11):
        raise UserError(f"the pipeline needs Python 3.11+, this is {sys.version.split()[0]}; run "
                        "`make engines CHECKPOINT_V3=... CHECKPOINT_V4=...` on a machine with 3.11 and copy engines/ here")
    settings = load_settings()
    check_arguments(settings, args.vocoders, args.precisions)
    checkpoints = {v: Path.cwd() / settings["serving"]["gpt_sovits"]["checkpoints"][v] for v in args.vocoders}
    missing = [str(path) for path in checkpoints.values() if not path.exists()]
    if missing:
        raise UserError(f"vocoder checkpoint {missing[0]} not found; run this from the GPT-SoVITS folder, or pass "
                        "--vocoders with only the versions you have")
    steps = [step for v in args.vocoders for step in stage_commands(settings, v, checkpoints[v], args.precisions)]
    with tqdm(steps, desc="engines", unit="step") as bar:
        for made, command in bar:
            bar.set_postfix_str(made)
            run_step(command)
    for vocoder in args.vocoders:
        for precision in args.precisions:
            print(f"wrote {output_paths(settings, vocoder, precision)['plan']}")
    return 0
