"""python -m export --vocoder v3|v4 [--checkpoint PATH] --output FILE.onnx"""
from __future__ import annotations

from export.checkpoints import checkpoint_files, load_vocoder
from export.to_onnx import onnx_from_module
from pipeline.settings import VOCODERS, load_settings
from runtime.errors import CommandParser, run_main


def main(argv=None) -> int:
    parser = CommandParser(prog="python -m export", description=__doc__)
    parser.add_argument("--vocoder", required=True, choices=VOCODERS)
    parser.add_argument("--checkpoint", help="v3: BigVGAN v2 folder or its .pt; v4: vocoder.pth "
                        "(default: seeded synthetic weights)")
    parser.add_argument("--output", required=True, help="ONNX file to write")
    args = parser.parse_args(argv)
    settings = load_settings()
    module = load_vocoder(args.vocoder, args.checkpoint, settings=settings)
    onnx_from_module(module, args.vocoder, args.output, settings=settings, inputs=checkpoint_files(args.checkpoint))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
