"""Streaming v3/v4 synthesis: GPT-SoVITS makes the v3/v4 mel in CFM chunks
(TTS.using_vocoder_synthesis), concatenates them and vocodes once at the end. Here the same chunk
loop feeds a Stream, so audio comes out while the CFM is still working; fragments.py uses it for
TTS.run's streaming modes (docs/guides/serving.md)."""
from __future__ import annotations

import sys

import torch

from pipeline.errors import UserError
from runtime.streaming import DEFAULT_STEPS, Stream, architecture_window, fitted_stream, stream_window
from serving.gpt_sovits.dropin import EngineVocoder
from vocoder_models.mels import MEL_SPECS


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
