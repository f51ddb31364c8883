"""python -m build ONNX --vocoder v3|v4 --precision fp32|fp16 --output PLAN [--builder python|trtexec]
                [--backend auto|tensorrt|tensorrt_rtx]
python -m build doctor      what is installed, and whether its plans can run on this machine's GPU"""
from __future__ import annotations

import argparse
import sys

from build.config import BUILDERS
from pipeline.schema import BACKEND_CHOICES
from pipeline.settings import VOCODERS, load_settings
from runtime.errors import CommandParser, run_main


def main(argv=None, settings: dict | None = None) -> int:
    """The command; `settings` replaces pipeline.toml's (tests pass small profiles), else it is read once here."""
    argv = list(sys.argv[1:] if argv is None else argv)
    settings = settings if settings is not None else load_settings()
    if argv[:1] == ["doctor"]:
        from build.doctor import print_report
        return print_report(settings)
    parser = CommandParser(
        prog="python -m build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Writes PLAN atomically and its manifest beside it (PLAN with .json instead of .plan). "
               "Profiles and builder settings come from pipeline.toml.")
    parser.add_argument("onnx", metavar="ONNX", help="cleaned ONNX model (engines/onnx/<vocoder>.<precision>.onnx)")
    parser.add_argument("--vocoder", required=True, choices=VOCODERS)
    parser.add_argument("--precision", required=True, help="a precision of pipeline.toml: fp32, fp16, ...")
    parser.add_argument("--output", required=True, metavar="PLAN", help="plan file to write (*.plan)")
    parser.add_argument("--builder", default="python", choices=BUILDERS,
                        help="TensorRT Python builder (default) or a trtexec found on the PATH")
    parser.add_argument("--backend", choices=BACKEND_CHOICES,
                        help="Python builder backend (default: [build] backend; auto = full TensorRT first)")
    args = parser.parse_args(argv)
    from build.plan import build_plan  # here, so --help and doctor skip the TensorRT and onnx imports
    build_plan(args.onnx, args.vocoder, args.precision, args.output, builder=args.builder, backend=args.backend,
               settings=settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
