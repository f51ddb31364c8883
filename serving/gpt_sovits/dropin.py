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
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.settings import VOCODERS, load_settings, output_paths
from runtime.errors import reason_of
from serving.gpt_sovits.options import EngineRequest, engine_request, install_options
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
from serving.timed import TimedVocoder
from serving.torch_tier.fallback import fallback_vocoder

log = logging.getLogger("serving")

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}
# what install() uses of any GPT-SoVITS TTS; one without init_vocoder (20250228v3) has no v3/v4 vocoder to serve
TTS_ATTRIBUTES = ("configs", "precision")


class EngineVocoder(TimedVocoder):
    """Stands where GPT-SoVITS keeps its vocoder module (serving/timed.py: same call and tensors, each
    call checked, timed and recorded), an engine inside. `.half()`, `.to()` and `.cpu()` reach the
    PyTorch vocoder it keeps, which serves from the first engine failure on."""

    def __init__(self, pytorch: nn.Module, engine, plan: Path, stats: VocoderStats):
        super().__init__(pytorch, engine.sampling_rate, engine.manifest["n_mels"], stats.record)
        self.engine = engine
        self.plan = plan
        self.manifest = engine.manifest
        self.io_dtype = TORCH_DTYPES[engine.manifest["input"]["dtype"]]

    def vocode(self, mel: torch.Tensor) -> tuple[str, torch.Tensor]:
        if self.engine is not None:
            try:
                return "tensorrt", self._engine_audio(mel)
            except Exception as error:  # noqa: BLE001 - the mel was checked: this is the engine failing
                log.warning("%s failed (%s); the PyTorch vocoder serves from now on", self.plan.name, reason_of(error))
                self.engine = None
        return "pytorch", self.pytorch(mel)

    def _engine_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """The engine's audio as the PyTorch vocoder would return it: mel's dtype, mel's device.
        CUDA tensors stay on the GPU; the engine splits mels longer than its profiles into chunks."""
        source = mel.to(self.io_dtype).contiguous()
        audio = self.engine(source if source.is_cuda else source.numpy())
        return torch.as_tensor(audio).to(device=mel.device, dtype=mel.dtype)


def unwrapped(vocoder):
    """GPT-SoVITS' own PyTorch vocoder, whether or not the drop-in wraps it."""
    return vocoder.pytorch if isinstance(vocoder, TimedVocoder) else vocoder


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
        the fast tier where it can run, else GPT-SoVITS' module as it is (serving/torch_tier/fallback.py)."""
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

    `options` are the `tensorrt:` keys (default: the section of GPT_SoVITS/configs/vocoder_tensorrt.yaml
    beside the tts_infer.yaml `tts` was built from, else tts_infer.yaml's, options.py; without one, the
    engine of GPT-SoVITS' version and precision). `settings` are pipeline.toml's, loaded here once when not
    given. Returns the running stats, also left at `tts.vocoder_stats`; None when use_tensorrt is off
    or the section is refused (one warning says why). `load_engine` provides the engine (default:
    runtime.load_engine). `fallback` ("fast" or "plain") overrides the yaml's tensorrt_fallback: what
    serves where no engine can. A bad keyword, or a `tts` that is not GPT-SoVITS' TTS, raises UserError.
    """
    require_tts(tts)
    settings = settings if settings is not None else load_settings()
    options = install_options(tts, options, fallback, settings)
    if not hasattr(tts, "init_vocoder"):  # a TTS with no v3/v4 vocoder (GPT-SoVITS 20250228v3)
        log.info("this GPT-SoVITS' TTS has no v3/v4 vocoder (no init_vocoder): nothing for the drop-in to serve")
        return None
    previous = getattr(tts.init_vocoder, "dropin_hooks", None)
    if previous is not None:  # installed before: start again from GPT-SoVITS' own methods
        previous.remove()
        del tts.vocoder_stats
    if options is None:
        return None
    if not options.get("use_tensorrt", True):
        log.info("use_tensorrt is off; GPT-SoVITS keeps its PyTorch vocoder [tier: pytorch]")
        return None
    dropin = DropIn(options, settings, load_engine)
    hooks = TTSHooks(tts, dropin)
    tts.vocoder_stats = dropin.stats
    hooks.attach()
    return dropin.stats


def require_tts(tts) -> None:
    """One line when `tts` lacks what the drop-in uses of GPT-SoVITS' TTS (TTS_infer_pack/TTS.py)."""
    lacking = [name for name in TTS_ATTRIBUTES if not hasattr(tts, name)]
    lacking += [f"configs.{name}" for name in ("version", "device") if not lacking and not hasattr(tts.configs, name)]
    if lacking:
        raise UserError(f"install() takes GPT-SoVITS' TTS object (GPT_SoVITS/TTS_infer_pack/TTS.py), got "
                        f"{type(tts).__name__[:40]!r} without {lacking[0]}; pass the TTS your code built")
