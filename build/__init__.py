"""Build stage: a cleaned ONNX model becomes a serialized TensorRT plan and the manifest beside it.

`python -m build ONNX --vocoder v3|v4 --precision fp32|fp16 --output PLAN` and `python -m build doctor`.
Works with full TensorRT (module `tensorrt`) and TensorRT-RTX (module `tensorrt_rtx`), whichever is
installed, or with a `trtexec` found on the PATH.
"""
