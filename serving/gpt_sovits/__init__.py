"""GPT-SoVITS drop-in: its v3/v4 vocoder call served by a TensorRT engine, PyTorch kept as the fallback.

In GPT-SoVITS (TTS_infer_pack/TTS.py), `TTS.init_vocoder(version)` puts the PyTorch vocoder in
`tts.vocoder` and fills `tts.vocoder_configs` (sr, upsample_rate, ...); synthesis calls
`tts.vocoder(mel)` with a (1, 100, frames) mel in `tts.precision` on `tts.configs.device` (the
batched path: the CFM's chunks joined in time in one such mel). `install(tts)` replaces that module
with an `EngineVocoder` taking and returning the same tensors, and does so again after every
`init_vocoder` (a v3 or v4 model loaded), `enable_half_precision` and `set_device`. Engines are
never built here: a plan that does not serve is refused with the command that builds one.
GPT-SoVITS' default UI has no TTS object; the launcher (launcher.py) serves its module-level
vocoders through the same `_DropIn.serve`.

The switches live in a top-level `tensorrt:` section of tts_infer.yaml. TTS_Config keeps every
top-level section in `configs.default_configs` and writes them back unchanged, while it rewrites the
`custom:` section with its own seven keys on every start (save_configs), so keys put there vanish.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from export.mels import MEL_SPECS
from pipeline.errors import UserError
from pipeline.files import sha256_of
from pipeline.settings import VOCODERS, check_precision, load_settings, output_paths
from runtime import runnable
from runtime.errors import RuntimeUserError, reason_of
from runtime.manifest import read_manifest
from runtime.streaming import DEFAULT_STEPS, Stream, architecture_window, fitted_stream, stream_window
from runtime.targets import parse_sm, sm_name
from serving.torch_tier.dropin import FALLBACK_KEY, TierVocoder, fallback_setting, fallback_vocoder

log = logging.getLogger("serving")

YAML_SECTION = "tensorrt"
YAML_KEYS = ("use_tensorrt", "tensorrt_precision", "tensorrt_workspace_size", "tensorrt_max_batch_size", FALLBACK_KEY)
# what `python -m serving.gpt_sovits build` needs beyond GPT-SoVITS' own packages (the pipeline extra)
PIPELINE_MODULES = ("onnx", "onnx_graphsurgeon", "onnxruntime", "tensorrt_rtx")
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class EngineRequest:
    """The engine GPT-SoVITS asks for: vocoder, precision and the builder settings that shape it."""

    vocoder: str
    precision: str
    workspace_gib: float
    max_batch: int | None  # None: the batch sizes of pipeline.toml's profiles
    gpu_target: str | None = None  # the compute capability GPT-SoVITS runs on ("SM86"); None on CPU

    @property
    def workspace_bytes(self) -> int:
        return int(self.workspace_gib * (1 << 30))


class VocoderStats:
    """Running counts a service can read (thread-safe): calls per backend, latency median and 95th
    percentile over the last `window` calls, and the overall real-time factor."""

    def __init__(self, window: int):
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=window)
        self._calls: Counter[str] = Counter()
        self._busy_seconds = 0.0
        self._audio_seconds = 0.0

    def record(self, backend: str, seconds: float, audio_seconds: float) -> None:
        with self._lock:
            self._calls[backend] += 1
            self._latencies.append(seconds)
            self._busy_seconds += seconds
            self._audio_seconds += audio_seconds

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            latencies = np.asarray(self._latencies) * 1000.0
            return {
                "calls": sum(self._calls.values()),
                "tensorrt_calls": self._calls["tensorrt"],
                "pytorch_calls": self._calls["pytorch"],
                "pytorch_fast_calls": self._calls["pytorch-fast"],
                "median_ms": float(np.median(latencies)) if latencies.size else None,
                "p95_ms": float(np.percentile(latencies, 95)) if latencies.size else None,
                "real_time_factor": self._busy_seconds / self._audio_seconds if self._audio_seconds else None,
            }


def yaml_options(tts) -> dict[str, Any]:
    """The `tensorrt:` section of the tts_infer.yaml that built `tts` (empty when there is none)."""
    section = (getattr(tts.configs, "default_configs", None) or {}).get(YAML_SECTION) or {}
    if not isinstance(section, Mapping):
        raise UserError(f"tts_infer.yaml: `{YAML_SECTION}:` must be a section of keys ({', '.join(YAML_KEYS)})")
    return dict(section)


def engine_request(options: Mapping[str, Any], vocoder: str, precision: torch.dtype,
                   settings: dict[str, Any]) -> EngineRequest:
    """Check the yaml keys; unset ones default to GPT-SoVITS' own precision and pipeline.toml."""
    unknown = sorted(set(options) - set(YAML_KEYS))
    if unknown:
        raise UserError(f"tts_infer.yaml `{YAML_SECTION}:` has unknown keys {', '.join(unknown)}; "
                        f"the known ones are {', '.join(YAML_KEYS)}")
    fallback_setting(options)
    name = options.get("tensorrt_precision") or ("fp16" if precision == torch.float16 else "fp32")
    check_precision(settings, name)
    workspace = options.get("tensorrt_workspace_size", settings["build"]["workspace_gib"])
    if isinstance(workspace, bool) or not isinstance(workspace, (int, float)) or workspace <= 0:
        raise UserError(f"tensorrt_workspace_size must be a positive number of GiB, got {workspace!r}")
    max_batch = options.get("tensorrt_max_batch_size")
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise UserError(f"tensorrt_max_batch_size must be a positive integer, got {max_batch!r}")
    return EngineRequest(vocoder, name, float(workspace), max_batch)


def rebuild_reasons(manifest: dict[str, Any] | None, request: EngineRequest,
                    checkpoint_sha256: str | None = None) -> list[str]:
    """Why the engine on disk does not serve `request` (empty: it does)."""
    if manifest is None:
        return ["no engine built yet"]
    wanted = {"vocoder": request.vocoder, "precision": request.precision, "workspace_bytes": request.workspace_bytes}
    reasons = [f"{key} {manifest.get(key)!r} instead of {value!r}"
               for key, value in wanted.items() if manifest.get(key) != value]
    if request.max_batch is not None:
        batches = sorted({profile["max"][0] for profile in manifest.get("profiles", [])})
        if batches != [request.max_batch]:
            reasons.append(f"profile max batch {batches} instead of {request.max_batch}")
    if checkpoint_sha256 and manifest.get("checkpoint", {}).get("sha256") != checkpoint_sha256:
        reasons.append("built from other vocoder weights than GPT-SoVITS loads")
    if request.gpu_target:  # the runtime's decision, for the GPU GPT-SoVITS runs on
        here = runnable.Gpu("this GPU", parse_sm(request.gpu_target))
        blocker = runnable.why_not_runnable(manifest, here, runnable.installed_backend(manifest["backend"]))
        if blocker:
            reasons.append(blocker)
    return reasons


def gpt_sovits_checkpoint(settings: dict[str, Any], vocoder: str) -> Path:
    """Where GPT-SoVITS loads the vocoder from, relative to its folder (the working directory)."""
    return Path.cwd() / settings["serving"]["gpt_sovits"]["checkpoints"][vocoder]


def checkpoint_sha256(checkpoint: Path) -> str | None:
    """The hash the export stage records for this checkpoint (v3: the .pt in the BigVGAN folder)."""
    from export.checkpoints import V3_WEIGHTS

    weights = checkpoint / V3_WEIGHTS if checkpoint.is_dir() else checkpoint
    return sha256_of(weights) if weights.is_file() else None


def build_command(settings: dict[str, Any]) -> str:
    """The command that builds engines from the vocoder checkpoints this GPT-SoVITS loads: the
    launcher's `build` where this Python can run the pipeline (GPT-SoVITS' 3.11 bundle can, once the
    pipeline extra is installed), else `make engines` on a machine with the pipeline, from these
    checkpoints, with its engines/ copied here afterwards."""
    if sys.version_info >= (3, 11) and all(importlib.util.find_spec(name) for name in PIPELINE_MODULES):
        return f"{Path(sys.executable).name} -m serving.gpt_sovits build"
    v3, v4 = (gpt_sovits_checkpoint(settings, vocoder) for vocoder in VOCODERS)
    return f'make engines CHECKPOINT_V3="{v3}" CHECKPOINT_V4="{v4}"'


def load_runtime_engine(plan: Path, device: int = 0):
    """The standalone runtime's engine for `plan` on CUDA device `device` (imported here: it needs
    TensorRT and a GPU)."""
    from runtime import load_engine

    return load_engine(plan, device=device)


def gpu_target(device) -> str | None:
    """"SM86" for the CUDA device GPT-SoVITS runs on; None when it runs on the CPU."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return sm_name(torch.cuda.get_device_capability(device_index(device)))


def device_index(device) -> int:
    """The CUDA device index GPT-SoVITS runs on (`tts.configs.device`: "cuda", "cuda:1" or a torch.device)."""
    device = torch.device(device)
    if device.type != "cuda":
        return 0
    return device.index if device.index is not None else torch.cuda.current_device()


def readable_manifest(plan: Path) -> dict[str, Any] | None:
    """The plan's manifest, or None when there is no usable one (then the engine is rebuilt)."""
    try:
        return read_manifest(plan)
    except RuntimeUserError:
        return None


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


class _DropIn:
    """Serves GPT-SoVITS' v3/v4 vocoders from engines: options and settings (loaded once, by
    `install` or the launcher), the engine loader, the stats, and the engines already refused."""

    def __init__(self, options: dict[str, Any], settings: dict[str, Any], load_engine: Callable[[Path, int], Any]):
        self.options = options
        self.settings = settings
        self.load_engine = load_engine
        self.stats = VocoderStats(settings["serving"]["gpt_sovits"]["stats_window"])
        self.failed: set[tuple[str, str]] = set()

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
        if key in self.failed:
            return self.pytorch_fallback(module, request, None)
        try:
            plan = self.servable_plan(request)
            engine = self.load_engine(plan, device_index(device))
            check_engine(engine, version, expected)
        except Exception as error:  # noqa: BLE001 - whatever stops the engine, GPT-SoVITS keeps working
            self.failed.add(key)
            return self.pytorch_fallback(module, request, reason_of(error))
        log.info("GPT-SoVITS %s vocoder: TensorRT engine %s (%s %s, %s) [tier: tensorrt]", version, plan,
                 engine.manifest["backend"], engine.manifest["backend_version"], request.precision)
        return EngineVocoder(module, engine, plan, self.stats)

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


def check_engine(engine, version: str, expected: tuple[int, int] | None) -> None:
    """The engine must make the audio GPT-SoVITS expects from this vocoder (rate and hop)."""
    if expected is not None and (engine.sampling_rate, engine.hop) != tuple(expected):
        raise UserError(f"engine makes {engine.sampling_rate} Hz with hop {engine.hop}, GPT-SoVITS {version} "
                        f"expects {expected[0]} Hz with hop {expected[1]}")


class _TTSHooks:
    """What `install` leaves on a TTS object: the TTS methods that replace or move its vocoder
    (init_vocoder on a model switch, enable_half_precision, set_device) run on GPT-SoVITS' own
    module (so its same-class check, .half() and .to() see it), then the engine is attached again
    for the new version, precision and device."""

    METHODS = ("init_vocoder", "enable_half_precision", "set_device")

    def __init__(self, tts, dropin: _DropIn):
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
    dropin = _DropIn(options, settings, load_engine)
    hooks = _TTSHooks(tts, dropin)
    tts.vocoder_stats = dropin.stats
    hooks.attach()
    return dropin.stats


# --- streaming v3/v4 synthesis -------------------------------------------------------------------
# GPT-SoVITS makes the v3/v4 mel in CFM chunks (TTS.using_vocoder_synthesis), concatenates them and
# vocodes once at the end. Here the same chunk loop feeds a Stream, so audio comes out while the
# CFM is still working; docs/serving.md shows how TTS.run uses it for api_v2's streaming_mode 2/3.


@torch.inference_mode()
def stream_vocoder_synthesis(tts, semantic_tokens: torch.Tensor, phones: torch.Tensor, speed: float = 1.0,
                             sample_steps: int = 32):
    """TTS.using_vocoder_synthesis (GPT-SoVITS 48b1a01) with the vocoder streamed: yields 1-D audio
    pieces (upstream's wav_gen[0][0], in pieces) as they become final. Joined, they are the audio of
    using_vocoder_synthesis to the stream's precision (>= 100 dB at the engine's measured setting)."""
    upstream = upstream_module(tts)
    with vocoder_stream(tts) as stream:
        for mel in cfm_chunks(tts, upstream, semantic_tokens, phones, speed, sample_steps):
            yield from _pushed(stream, upstream.denorm_spec(mel))
        rest = stream.finish()
        if rest.shape[-1]:
            yield rest[0, 0]


UPSTREAM_HELPERS = ("mel_fn", "mel_fn_v4", "resample", "norm_spec", "denorm_spec")


def upstream_module(tts):
    """The module of TTS_infer_pack/TTS.py that `tts` comes from: synthesis uses its module-level
    helpers (UPSTREAM_HELPERS), as using_vocoder_synthesis does. Found along the class's bases, so a
    TTS subclass defined elsewhere still finds them."""
    for cls in type(tts).__mro__:
        module = sys.modules.get(cls.__module__)
        if module is not None and all(hasattr(module, name) for name in UPSTREAM_HELPERS):
            return module
    raise UserError(f"{type(tts).__name__} does not come from GPT-SoVITS' TTS_infer_pack/TTS.py "
                    f"(no module along its bases defines {', '.join(UPSTREAM_HELPERS)})")


def vocoder_stream(tts) -> Stream:
    """A Stream over `tts.vocoder`, fitted to the engine's plan as `Engine.stream()` fits it when the
    drop-in serves it (runtime.streaming.fitted_stream); the architecture's exact reach for PyTorch's
    vocoder. It calls the vocoder module, so a failing engine still hands over to PyTorch."""
    vocoder = tts.vocoder

    def infer(mel):
        return vocoder(mel.to(tts.precision))

    if isinstance(vocoder, EngineVocoder):
        return fitted_stream(infer, vocoder.manifest, stream_window(vocoder.manifest))
    window = architecture_window(tts.configs.version)
    return Stream(infer, hop=tts.vocoder_configs["upsample_rate"], context_frames=window.context,
                  lookahead_frames=window.lookahead, step_frames=DEFAULT_STEPS)


def cfm_chunks(tts, upstream, semantic_tokens: torch.Tensor, phones: torch.Tensor, speed: float, sample_steps: int):
    """The CFM's normalised mel, chunk by chunk as it makes them: each chunk of features is
    conditioned on the previous chunk's last T_min frames of features and mel (the carry)."""
    refer_spec, fea_ref, ge, mel2 = reference_prompt(tts, upstream)
    t_min = mel2.shape[2]
    chunk_len = tts.vocoder_configs["T_chunk"] - t_min
    fea_todo, ge = tts.vits_model.decode_encp(semantic_tokens, phones, refer_spec, ge, speed)
    for start in range(0, fea_todo.shape[2], chunk_len):
        fea_chunk = fea_todo[:, :, start:start + chunk_len]
        fea = torch.cat([fea_ref, fea_chunk], 2).transpose(2, 1)
        lengths = torch.LongTensor([fea.size(1)]).to(fea.device)
        mel = tts.vits_model.cfm.inference(fea, lengths, mel2, sample_steps, inference_cfg_rate=0)[:, :, mel2.shape[2]:]
        mel2, fea_ref = mel[:, :, -t_min:], fea_chunk[:, :, -t_min:]
        yield mel


def reference_prompt(tts, upstream):
    """The reference as the CFM's prompt: its spectrogram for decode_encp, its features and speaker
    embedding, and its normalised mel, the last two cut to their common length and then to the
    last T_ref frames; the mel in the model's precision."""
    device = tts.configs.device
    prompt_tokens = tts.prompt_cache["prompt_semantic"].unsqueeze(0).unsqueeze(0).to(device)
    prompt_phones = torch.LongTensor(tts.prompt_cache["phones"]).unsqueeze(0).to(device)
    spec = tts.prompt_cache["refer_spec"][0]
    refer_spec = (spec[0] if isinstance(spec, tuple) else spec).to(dtype=tts.precision, device=device)
    fea_ref, ge = tts.vits_model.decode_encp(prompt_tokens, prompt_phones, refer_spec)
    mel2 = upstream.norm_spec(reference_mel(tts, upstream))
    common = min(mel2.shape[2], fea_ref.shape[2])
    kept = slice(max(common - tts.vocoder_configs["T_ref"], 0), common)
    return refer_spec, fea_ref[:, :, kept], ge, mel2[:, :, kept].to(tts.precision)


def reference_mel(tts, upstream) -> torch.Tensor:
    """The reference audio's log-mel at the rate the v3 (24 kHz) or v4 (32 kHz) CFM works at, mono."""
    audio = tts.prompt_cache["raw_audio"].to(tts.configs.device).float()
    if audio.shape[0] == 2:
        audio = audio.mean(0).unsqueeze(0)
    rate, wanted = tts.prompt_cache["raw_sr"], MEL_SPECS[tts.configs.version].sampling_rate
    if rate != wanted:
        audio = upstream.resample(audio, rate, wanted, tts.configs.device)
    return (upstream.mel_fn if tts.configs.version == "v3" else upstream.mel_fn_v4)(audio)


def _pushed(stream, mel: torch.Tensor):
    """Push `mel` in pieces that each complete the next window, yielding each window's audio at once."""
    start = 0
    while start < mel.shape[2]:
        count = stream.frames_needed
        audio = stream.push(mel[:, :, start:start + count])
        start += count
        if audio.shape[-1]:
            yield audio[0, 0]
