"""The PyTorch fast tier of the GPT-SoVITS drop-in, for when no engine loads: v3's anti-aliased
activation fused in Triton (kernel.py, derived in polyphase.py, swapped in by fused.py) and CUDA
graphs per mel-length bucket (buckets.py, fast.py). torch and Triton only; runtime/ never imports it."""
