"""Validate stage: layer-by-layer comparison, audio metrics, mels from audio, benchmark and report.

Reads what the other stages wrote (ONNX models, plans, manifests) and never rewrites it; its own
outputs go to [validate] artifacts and engines/report.md.
"""
