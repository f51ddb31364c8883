"""GPT-SoVITS drop-in: its v3/v4 vocoder call served by a TensorRT engine, PyTorch kept as the fallback.

In GPT-SoVITS (TTS_infer_pack/TTS.py), `TTS.init_vocoder(version)` puts the PyTorch vocoder in
`tts.vocoder` and fills `tts.vocoder_configs` (sr, upsample_rate, ...); synthesis calls
`tts.vocoder(mel)` with a (1, 100, frames) mel in `tts.precision` on `tts.configs.device` (the
batched path: the CFM's chunks joined in time in one such mel). `install(tts)` replaces that module
with an `EngineVocoder` taking and returning the same tensors, and does so again after every
`init_vocoder` (a v3 or v4 model loaded), `enable_half_precision` and `set_device`. GPT-SoVITS'
default UI has no TTS object; the launcher (launcher.py) serves its module-level vocoders through
the same `DropIn.serve`.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.settings import VOCODERS, load_settings, output_paths
from runtime.errors import reason_of
from serving.gpt_sovits.options import EngineRequest, engine_request, yaml_options
from serving.gpt_sovits.plans import (
    build_command,
    check_engine,
    checkpoint_sha256,
    device_index,
    gpt_sovits_checkpoint,
    gpu_target,
    load_runtime_engine,
    readable_manifest,
    rebuild_reasons,
)
from serving.gpt_sovits.proof import StartProof
from serving.gpt_sovits.stats import VocoderStats
from serving.torch_tier.dropin import FALLBACK_KEY, TierVocoder, fallback_vocoder

log = logging.getLogger("serving")

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class EngineVocoder(nn.Module):
    """Stands where GPT-SoVITS keeps its vocoder module: same call, same tensors in and out (dtype
    and device of the mel), an engine inside. `.half()`, `.to()` and `.cpu()` reach the PyTorch
    vocoder it keeps, which serves from the first engine failure on."""

    def __init__(self, pytorch: nn.Module, engine, plan: Path, stats: VocoderStats):
        super().__init__()
        self.pytorch = pytorch
        self.engine = engine
        self.plan = plan
        self.stats = stats
        self.manifest = engine.manifest
        self.sampling_rate = int(engine.sampling_rate)
        self.io_dtype = TORCH_DTYPES[engine.manifest["input"]["dtype"]]

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        backend = "tensorrt" if self.engine is not None else "pytorch"
        if self.engine is not None:
            try:
                audio = self._engine_audio(mel)
            except Exception as error:  # noqa: BLE001 - any engine failure hands over to PyTorch
                log.warning("%s failed (%s); the PyTorch vocoder serves from now on", self.plan.name, reason_of(error))
                self.engine, backend = None, "pytorch"
        if self.engine is None:
            audio = self.pytorch(mel)
        if audio.is_cuda:
            torch.cuda.synchronize(audio.device)
        seconds = time.perf_counter() - start
        audio_seconds = audio.shape[-1] / self.sampling_rate
        self.stats.record(backend, seconds, audio_seconds)
        log.debug("vocoder %s: %s mel in %.1f ms, real-time factor %.4f",
                  backend, tuple(mel.shape), seconds * 1000, seconds / audio_seconds)
        return audio

    def _engine_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """The engine's audio as the PyTorch vocoder would return it: mel's dtype, mel's device.
        CUDA tensors stay on the GPU; the engine splits mels longer than its profiles into chunks."""
        source = mel.to(self.io_dtype).contiguous()
        audio = self.engine(source if source.is_cuda else source.numpy())
        return torch.as_tensor(audio).to(device=mel.device, dtype=mel.dtype)


def unwrapped(vocoder):
    """GPT-SoVITS' own PyTorch vocoder, whether or not the drop-in wraps it."""
    return vocoder.pytorch if isinstance(vocoder, (EngineVocoder, TierVocoder)) else vocoder


class DropIn:
    """Serves GPT-SoVITS' v3/v4 vocoders from engines: options and settings (loaded once, by
    `install` or the launcher), the engine loader, the stats, and the engines already refused."""

    def __init__(self, options: dict[str, Any], settings: dict[str, Any], load_engine: Callable[[Path, int], Any]):
        self.options = options
        self.settings = settings
        self.load_engine = load_engine
        self.stats = VocoderStats(settings["serving"]["gpt_sovits"]["stats_window"])
        self.failed: set[tuple[str, str]] = set()
        self.proof = StartProof(settings)

    def serve(self, module, version: str, dtype: torch.dtype, device, expected: tuple[int, int] | None = None):
        """`module`, GPT-SoVITS' PyTorch vocoder for `version` on `device`, wrapped around the engine
        that serves it; where none can, what `pytorch_fallback` gives. `expected`: the (rate, hop)
        GPT-SoVITS expects from it, when it says."""
        module = unwrapped(module)
        if version not in VOCODERS or module is None:  # GPT-SoVITS v1/v2 synthesise without a vocoder
            return module
        request = dataclasses.replace(engine_request(self.options, version, dtype, self.settings),
                                      gpu_target=gpu_target(device))
        key = (request.vocoder, request.precision)
        if key in self.failed:  # every tier serves only once proven against `module` (proof.py)
            return self.proof.served(module, lambda: self.pytorch_fallback(module, request, None), *key)
        try:
            plan = self.servable_plan(request)
            engine = self.load_engine(plan, device_index(device))
            check_engine(engine, version, expected)
        except Exception as error:  # noqa: BLE001 - whatever stops the engine, GPT-SoVITS keeps working
            self.failed.add(key)
            reason = reason_of(error)
            return self.proof.served(module, lambda: self.pytorch_fallback(module, request, reason), *key)
        served = self.proof.served(module, lambda: EngineVocoder(module, engine, plan, self.stats), *key)
        if served is module:  # not proven: the engine's memory goes back now
            getattr(engine, "close", lambda: None)()
            return module
        log.info("GPT-SoVITS %s vocoder: TensorRT engine %s (%s %s, %s) [tier: tensorrt]", version, plan,
                 engine.manifest["backend"], engine.manifest["backend_version"], request.precision)
        return served

    def pytorch_fallback(self, module: nn.Module, request: EngineRequest, reason: str | None) -> nn.Module:
        """The one place that chooses what serves when no engine can (`reason`; None: already said):
        the fast tier where it can run, else GPT-SoVITS' module as it is (serving/torch_tier/dropin.py)."""
        return fallback_vocoder(module, request.vocoder, request.precision, reason, self.options, self.stats.record)

    def servable_plan(self, request: EngineRequest) -> Path:
        """The plan on disk that serves `request`. Nothing is built here: a plan made for other weights,
        another precision or another GPU is refused with the command that builds the right one."""
        paths = output_paths(self.settings, request.vocoder, request.precision)
        checkpoint = gpt_sovits_checkpoint(self.settings, request.vocoder)
        reasons = rebuild_reasons(readable_manifest(paths["plan"]), request, checkpoint_sha256(checkpoint))
        if reasons:
            raise UserError(f"{paths['plan']} does not serve it ({'; '.join(reasons)}); "
                            f"build it with `{build_command(self.settings)}`")
        return paths["plan"]


class TTSHooks:
    """What `install` leaves on a TTS object: the TTS methods that replace or move its vocoder
    (init_vocoder on a model switch, enable_half_precision, set_device) run on GPT-SoVITS' own
    module (so its same-class check, .half() and .to() see it), then the engine is attached again
    for the new version, precision and device."""

    METHODS = ("init_vocoder", "enable_half_precision", "set_device")

    def __init__(self, tts, dropin: DropIn):
        self.tts = tts
        self.dropin = dropin
        self.originals = {name: getattr(tts, name) for name in self.METHODS if hasattr(tts, name)}
        for name, original in self.originals.items():
            setattr(tts, name, self._reattaching(name, original))

    def _reattaching(self, name: str, original):
        @functools.wraps(original)
        def method(*args, **kwargs):
            self.tts.vocoder = unwrapped(self.tts.vocoder)
            result = original(*args, **kwargs)
            loaded = (args[0] if args else kwargs.get("version")) if name == "init_vocoder" else None
            self.attach(loaded)
            return result

        method.dropin_hooks = self
        return method

    def attach(self, version: str | None = None) -> None:
        """The engine for `version` (default: GPT-SoVITS' configured one) around the current vocoder."""
        tts = self.tts
        expected = (tts.vocoder_configs["sr"], tts.vocoder_configs["upsample_rate"])
        tts.vocoder = self.dropin.serve(tts.vocoder, version or tts.configs.version, tts.precision,
                                        tts.configs.device, expected)

    def remove(self) -> None:
        """GPT-SoVITS' own methods and module back."""
        for name, original in self.originals.items():
            setattr(self.tts, name, original)
        self.tts.vocoder = unwrapped(self.tts.vocoder)


def install(tts, options: Mapping[str, Any] | None = None, *, settings: dict[str, Any] | None = None,
            load_engine: Callable[[Path, int], Any] = load_runtime_engine, fallback: str | None = None) -> VocoderStats | None:
    """Serve `tts.vocoder` from a TensorRT engine, now and after each `init_vocoder`,
    `enable_half_precision` and `set_device`.

    `options` are the tts_infer.yaml keys (default: its `tensorrt:` section; without one, the engine
    of GPT-SoVITS' version and precision). `settings` are pipeline.toml's, loaded here once when not
    given. Returns the running stats, also left at `tts.vocoder_stats`; None when use_tensorrt is off.
    `load_engine` provides the engine (default: runtime.load_engine). `fallback` ("fast" or "plain")
    overrides the yaml's tensorrt_fallback: what serves where no engine can.
    """
    settings = settings if settings is not None else load_settings()
    options = yaml_options(tts) if options is None else dict(options)
    if fallback is not None:
        options[FALLBACK_KEY] = fallback
    use = options.get("use_tensorrt", True)
    if not isinstance(use, bool):
        raise UserError(f"use_tensorrt must be true or false, got {use!r}")
    engine_request(options, "v4", tts.precision, settings)  # bad keys fail now, not at the first model switch
    previous = getattr(tts.init_vocoder, "dropin_hooks", None)
    if previous is not None:  # installed before: start again from GPT-SoVITS' own methods
        previous.remove()
        del tts.vocoder_stats
    if not use:
        log.info("use_tensorrt is off; GPT-SoVITS keeps its PyTorch vocoder [tier: pytorch]")
        return None
    dropin = DropIn(options, settings, load_engine)
    hooks = TTSHooks(tts, dropin)
    tts.vocoder_stats = dropin.stats
    hooks.attach()
    return dropin.stats
