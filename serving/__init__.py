"""Serving: the engines inside GPT-SoVITS (gpt_sovits.py) and as a Triton model repository (triton.py)."""
