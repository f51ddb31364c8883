"""NVIDIA's own BigVGAN (the `bigvgan` package) with its fused CUDA activation kernel, as a peer row
of `validate bench` for v3.

The package builds its kernel on first use with torch.utils.cpp_extension and asks nvcc for
`compute_70` (Volta), which CUDA 13's nvcc no longer accepts; the build here asks for the GPU's own
architecture instead, and nothing else of the package changes. Its training-only imports
(matplotlib, librosa, scipy's wav writer) are given empty stand-ins where they are not installed:
the generator never calls them. The weights are the project's v3 weights (the state dict is
key-for-key upstream's).
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Optional

VOLTA = "arch=compute_70,code=sm_70"


def unavailable() -> Optional[str]:
    """Why the row cannot run here (None: it can try): no package, no CUDA, or no nvcc."""
    try:
        importlib.util.find_spec("bigvgan")
    except Exception:  # a broken install may raise anything
        return "the bigvgan package cannot be found (pip install --no-deps bigvgan)"
    if importlib.util.find_spec("bigvgan") is None:
        return "the bigvgan package is not installed (pip install --no-deps bigvgan)"
    import torch
    from torch.utils import cpp_extension
    if not torch.cuda.is_available():
        return "no CUDA device"
    if cpp_extension.CUDA_HOME is None:
        return "no CUDA toolkit (nvcc) to build NVIDIA's kernel with"
    return None


def own_arch_flags(flags: list, capability: tuple) -> list:
    """The nvcc flags with the Volta target replaced by the GPU's own (sm_XY)."""
    own = "arch=compute_{0}{1},code=sm_{0}{1}".format(*capability)
    return [own if flag == VOLTA else flag for flag in flags]


def _stand_ins() -> None:
    """Empty modules for the package's training-only imports that are not installed."""
    def missing(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True
    if missing("matplotlib"):
        matplotlib = types.ModuleType("matplotlib")
        matplotlib.use = lambda *a, **k: None
        sys.modules["matplotlib"] = matplotlib
        sys.modules["matplotlib.pylab"] = types.ModuleType("matplotlib.pylab")
    if missing("librosa"):
        librosa = types.ModuleType("librosa")
        librosa.filters = types.ModuleType("librosa.filters")
        librosa.filters.mel = None
        sys.modules["librosa"], sys.modules["librosa.filters"] = librosa, librosa.filters
    if missing("scipy"):
        for name in ("scipy", "scipy.io", "scipy.io.wavfile"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["scipy.io.wavfile"].write = None


def build(state_dict: dict, device: str = "cuda"):
    """NVIDIA's BigVGAN (v3's config) with its CUDA kernel, the given weights, eval mode, on `device`.
    The kernel is compiled on the first call (a minute or so)."""
    import torch
    from torch.utils import cpp_extension

    from vocoder_models.vocoders import BigVGANConfig
    _stand_ins()
    capability = torch.cuda.get_device_capability()
    original = cpp_extension.load

    def load(*args, **kwargs):
        kwargs["extra_cuda_cflags"] = own_arch_flags(list(kwargs.get("extra_cuda_cflags", [])), capability)
        return original(*args, **kwargs)
    cpp_extension.load = load
    try:
        import bigvgan
        from bigvgan.env import AttrDict
        config = BigVGANConfig()
        h = AttrDict(num_mels=config.num_mels, upsample_rates=list(config.upsample_rates),
                     upsample_kernel_sizes=list(config.upsample_kernel_sizes),
                     upsample_initial_channel=config.upsample_initial_channel, resblock="1",
                     resblock_kernel_sizes=list(config.resblock_kernel_sizes),
                     resblock_dilation_sizes=[list(d) for d in config.resblock_dilation_sizes],
                     activation="snakebeta", snake_logscale=True, use_tanh_at_final=False, use_bias_at_final=False)
        model = bigvgan.BigVGAN(h, use_cuda_kernel=True)
    finally:
        cpp_extension.load = original
    model.remove_weight_norm()
    model.load_state_dict(state_dict, strict=True)
    return model.eval().to(device)
