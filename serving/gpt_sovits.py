"""GPT-SoVITS drop-in: its v3/v4 vocoder call served by a TensorRT engine, PyTorch kept as the fallback.

In GPT-SoVITS (TTS_infer_pack/TTS.py), `TTS.init_vocoder(version)` puts the PyTorch vocoder in
`tts.vocoder` and fills `tts.vocoder_configs` (sr, upsample_rate, ...); synthesis calls
`tts.vocoder(mel)` with a (1, 100, frames) mel in `tts.precision` on `tts.configs.device`.
`install(tts)` replaces that module with an `EngineVocoder` taking and returning the same tensors,
and does so again after every `init_vocoder` (GPT-SoVITS calls it when a v3 or v4 model is loaded).

The switches live in a top-level `tensorrt:` section of tts_infer.yaml. TTS_Config keeps every
top-level section in `configs.default_configs` and writes them back unchanged, while it rewrites the
`custom:` section with its own seven keys on every start (save_configs), so keys put there vanish.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import subprocess
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
from tqdm import tqdm

from export.mels import MEL_SPECS
from pipeline.errors import UserError
from pipeline.files import sha256_of
from pipeline.settings import REPO_ROOT, VOCODERS, check_precision, load_settings, output_paths
from runtime.errors import RuntimeUserError, reason_of
from runtime.manifest import read_manifest
from runtime.streaming import DEFAULT_STEPS, Stream, architecture_window, fitting_steps, stream_window
from serving.torch_tier.dropin import FALLBACK_KEY, TierVocoder, fallback_setting, fallback_vocoder

log = logging.getLogger("serving")

YAML_SECTION = "tensorrt"
YAML_KEYS = ("use_tensorrt", "tensorrt_precision", "tensorrt_workspace_size", "tensorrt_max_batch_size", FALLBACK_KEY)
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
    try:
        fallback_setting(options)
    except ValueError as error:
        raise UserError(f"tts_infer.yaml `{YAML_SECTION}:` {error}") from None
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
    targets = manifest.get("compute_capabilities")
    if manifest.get("backend") == "tensorrt_rtx" and request.gpu_target and request.gpu_target not in (targets or []):
        reasons.append(f"the plan targets {', '.join(targets or [])}, not this GPU ({request.gpu_target})")
    return reasons


def engine_settings(settings: dict[str, Any], request: EngineRequest) -> dict[str, Any]:
    """pipeline.toml's settings with the workspace and max batch GPT-SoVITS asks for, and TensorRT-RTX
    targets narrowed to the GPU it runs on."""
    tuned = copy.deepcopy(settings)
    tuned["build"]["workspace_gib"] = request.workspace_gib
    if request.gpu_target:  # built on the machine that runs it: for its own GPU (Turing included)
        tuned["build"]["rtx_compute_capabilities"] = [request.gpu_target]
    if request.max_batch is not None:
        for profile in tuned["profiles"][request.vocoder]:
            profile["max"][0] = request.max_batch
            profile["opt"][0] = min(profile["opt"][0], request.max_batch)
            profile["min"][0] = min(profile["min"][0], request.max_batch)
    return tuned


def gpt_sovits_checkpoint(settings: dict[str, Any], vocoder: str) -> Path:
    """Where GPT-SoVITS loads the vocoder from, relative to its folder (the working directory)."""
    return Path.cwd() / settings["serving"]["gpt_sovits"]["checkpoints"][vocoder]


def checkpoint_sha256(checkpoint: Path) -> str | None:
    """The hash the export stage records for this checkpoint (v3: the .pt in the BigVGAN folder)."""
    from export.checkpoints import V3_WEIGHTS

    weights = checkpoint / V3_WEIGHTS if checkpoint.is_dir() else checkpoint
    return sha256_of(weights) if weights.is_file() else None


def build_engine_chain(request: EngineRequest, checkpoint: Path, settings: dict[str, Any]) -> Path:
    """GPT-SoVITS' own checkpoint through export, clean and build, with a progress bar over the stages."""
    if not checkpoint.exists():
        raise UserError(f"vocoder checkpoint {checkpoint} not found; start GPT-SoVITS from its own folder "
                        "([serving.gpt_sovits] checkpoints in pipeline.toml are relative to it)")
    from build.plan import build_plan
    from export.checkpoints import load_vocoder
    from export.to_onnx import onnx_from_module

    paths = output_paths(settings, request.vocoder, request.precision)
    stages = (
        ("export", lambda: onnx_from_module(load_vocoder(request.vocoder, checkpoint), request.vocoder, paths["onnx"])),
        ("clean", lambda: _run_stage("export.clean", paths["onnx"], "--precision", request.precision,
                                     "--output", paths["cleaned"])),
        ("build", lambda: build_plan(paths["cleaned"], request.vocoder, request.precision, paths["plan"],
                                     settings=settings)),
    )
    with tqdm(stages, desc=f"TensorRT {request.vocoder} {request.precision}", unit="stage") as bar:
        for name, run in bar:
            bar.set_postfix_str(name)
            run()
    return paths["plan"]


def _run_stage(module: str, *args) -> None:
    """A stage through its `python -m` command, the contract the Makefile uses too."""
    done = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, encoding="utf-8")
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise UserError(f"python -m {module} failed: {lines[-1]}")


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
    major, minor = torch.cuda.get_device_capability(device_index(device))
    return f"SM{major}{minor}"


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
        log.info("vocoder %s: %d frames in %.1f ms, real-time factor %.4f",
                 backend, mel.shape[-1], seconds * 1000, seconds / audio_seconds)
        return audio

    def _engine_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """The engine's audio as the PyTorch vocoder would return it: mel's dtype, mel's device.
        CUDA tensors stay on the GPU; the engine splits mels longer than its profiles into chunks."""
        source = mel.to(self.io_dtype).contiguous()
        audio = self.engine(source if source.is_cuda else source.numpy())
        return torch.as_tensor(audio).to(device=mel.device, dtype=mel.dtype)


class _DropIn:
    """The state `install` leaves on a TTS object: options, engine providers, stats, failures."""

    def __init__(self, tts, options: dict[str, Any], settings: dict[str, Any],
                 load_engine: Callable[[Path, int], Any], build_engine: Callable[..., Path], original_init_vocoder):
        self.tts = tts
        self.options = options
        self.settings = settings
        self.load_engine = load_engine
        self.build_engine = build_engine
        self.original_init_vocoder = original_init_vocoder
        self.stats = VocoderStats(settings["serving"]["gpt_sovits"]["stats_window"])
        self.failed: set[tuple[str, str]] = set()

    def init_vocoder(self, version: str) -> None:
        """GPT-SoVITS' init_vocoder on its own module (so its same-class check still holds), then the engine."""
        if isinstance(self.tts.vocoder, (EngineVocoder, TierVocoder)):
            self.tts.vocoder = self.tts.vocoder.pytorch
        self.original_init_vocoder(version)
        self.attach(version)

    def attach(self, version: str) -> None:
        """Wrap the current vocoder; where no engine can load, warn once and leave PyTorch in place."""
        if version not in VOCODERS or self.tts.vocoder is None:  # GPT-SoVITS v1/v2 synthesise without a vocoder
            return
        request = dataclasses.replace(engine_request(self.options, version, self.tts.precision, self.settings),
                                      gpu_target=gpu_target(self.tts.configs.device))
        key = (request.vocoder, request.precision)
        if key in self.failed:
            self.tts.vocoder = self.pytorch_fallback(self.tts.vocoder, request, None)
            return
        try:
            engine, plan = self.provide(request)
            self.check_engine(engine, version)
        except Exception as error:  # noqa: BLE001 - whatever stops the engine, GPT-SoVITS keeps working
            self.failed.add(key)
            self.tts.vocoder = self.pytorch_fallback(self.tts.vocoder, request, reason_of(error))
            return
        self.tts.vocoder = EngineVocoder(self.tts.vocoder, engine, plan, self.stats)
        log.info("GPT-SoVITS %s vocoder served by %s", version, plan)

    def pytorch_fallback(self, module: nn.Module, request: EngineRequest, reason: str | None) -> nn.Module:
        """The one place that chooses what serves when no engine can (`reason`; None: already said):
        the fast tier where it can run, else GPT-SoVITS' module as it is (serving/torch_tier/dropin.py)."""
        return fallback_vocoder(module, request.vocoder, request.precision, reason, self.options, self.stats.record)

    def provide(self, request: EngineRequest):
        """The engine for `request`, built first when missing or built with other settings."""
        paths = output_paths(self.settings, request.vocoder, request.precision)
        checkpoint = gpt_sovits_checkpoint(self.settings, request.vocoder)
        manifest = readable_manifest(paths["plan"])
        reasons = rebuild_reasons(manifest, request, checkpoint_sha256(checkpoint))
        if reasons:
            log.info("building %s: %s", paths["plan"].name, "; ".join(reasons))
            self.build_engine(request, checkpoint, engine_settings(self.settings, request))
        return self.load_engine(paths["plan"], device_index(self.tts.configs.device)), paths["plan"]

    def check_engine(self, engine, version: str) -> None:
        """The engine must make the audio GPT-SoVITS expects from this vocoder (rate and hop)."""
        expected = (self.tts.vocoder_configs["sr"], self.tts.vocoder_configs["upsample_rate"])
        if (engine.sampling_rate, engine.hop) != expected:
            raise UserError(f"engine makes {engine.sampling_rate} Hz with hop {engine.hop}, GPT-SoVITS {version} "
                            f"expects {expected[0]} Hz with hop {expected[1]}")


def install(tts, options: Mapping[str, Any] | None = None, *, settings: dict[str, Any] | None = None,
            load_engine: Callable[[Path, int], Any] = load_runtime_engine,
            build_engine: Callable[..., Path] = build_engine_chain, fallback: str | None = None) -> VocoderStats | None:
    """Serve `tts.vocoder` from a TensorRT engine, now and after each `init_vocoder`.

    `options` are the tts_infer.yaml keys (default: its `tensorrt:` section). Returns the running
    stats, also left at `tts.vocoder_stats`; None when use_tensorrt is off. `load_engine` and
    `build_engine` provide the engine (defaults: runtime.load_engine and export -> clean -> build).
    `fallback` ("fast" or "plain") overrides the yaml's tensorrt_fallback: what serves without an engine.
    """
    settings = settings if settings is not None else load_settings()
    options = yaml_options(tts) if options is None else dict(options)
    if fallback is not None:
        options[FALLBACK_KEY] = fallback
    use = options.get("use_tensorrt", False)
    if not isinstance(use, bool):
        raise UserError(f"use_tensorrt must be true or false, got {use!r}")
    engine_request(options, "v4", tts.precision, settings)  # bad keys fail now, not at the first model switch
    previous = getattr(tts.init_vocoder, "__self__", None)
    if isinstance(previous, _DropIn):  # installed before: start again from GPT-SoVITS' own method
        tts.init_vocoder = previous.original_init_vocoder
        if isinstance(tts.vocoder, (EngineVocoder, TierVocoder)):
            tts.vocoder = tts.vocoder.pytorch
        del tts.vocoder_stats
    if not use:
        log.info("use_tensorrt is off; GPT-SoVITS keeps its PyTorch vocoder")
        return None
    dropin = _DropIn(tts, options, settings, load_engine, build_engine, tts.init_vocoder)
    tts.init_vocoder = dropin.init_vocoder
    tts.vocoder_stats = dropin.stats
    dropin.attach(tts.configs.version)
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


def upstream_module(tts):
    """The module TTS is defined in (TTS_infer_pack/TTS.py): synthesis uses its module-level helpers
    mel_fn, mel_fn_v4, resample, norm_spec and denorm_spec, as using_vocoder_synthesis does."""
    return sys.modules[type(tts).__module__]


def vocoder_stream(tts) -> Stream:
    """A Stream over `tts.vocoder`: the engine's measured context and lookahead and steps that fit
    its profiles when the drop-in serves it; the architecture's exact reach for PyTorch's vocoder."""
    vocoder = tts.vocoder
    if isinstance(vocoder, EngineVocoder):
        window = stream_window(vocoder.manifest)
        largest = max(profile["max"][2] for profile in vocoder.manifest["profiles"])
        steps = fitting_steps(None, window.context, window.lookahead, largest)
    else:
        window, steps = architecture_window(tts.configs.version), DEFAULT_STEPS
    return Stream(lambda mel: vocoder(mel.to(tts.precision)), hop=tts.vocoder_configs["upsample_rate"],
                  context_frames=window.context, lookahead_frames=window.lookahead, step_frames=steps)


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
