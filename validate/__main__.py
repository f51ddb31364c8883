"""python -m validate compare | compare-all | mel | bench | report  (each takes --help)"""
from __future__ import annotations

import importlib
import sys

from pipeline.settings import load_settings
from runtime.errors import CommandParser, run_main

# subcommand -> (module, one-line help); each module offers add_arguments(parser, settings) and
# main(args, settings), given the settings this command loaded once
COMMANDS = {
    "compare": ("validate.compare", "compare a candidate (.onnx or .plan) with the reference ONNX, optionally layer by layer"),
    "compare-all": ("validate.compare_all", "compare every engine in engines/ with its exported ONNX"),
    "mel": ("validate.wav_to_mel", "a WAV file to the mel GPT-SoVITS feeds the vocoder (.npy)"),
    "bench": ("validate.bench", "time PyTorch, ONNX Runtime and TensorRT on the same GPU and input"),
    "report": ("validate.report", "the optimization report: environment, conversion, performance, quality"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    settings = load_settings()
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = CommandParser(prog="python -m validate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        if name == chosen:  # only the chosen command's module is imported
            importlib.import_module(module_name).add_arguments(sub, settings)
    args = parser.parse_args(argv)
    return importlib.import_module(COMMANDS[args.command][0]).main(args, settings)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
