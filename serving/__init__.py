"""Serving: the engines inside GPT-SoVITS (gpt_sovits/, with the PyTorch fast tier in torch_tier/) and
as a Triton Inference Server model repository (triton_server.py)."""
