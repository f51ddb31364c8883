"""Export stage: GPT-SoVITS vocoder checkpoint (or the seeded synthetic default) to verified ONNX."""
