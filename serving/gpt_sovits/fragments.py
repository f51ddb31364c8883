"""TTS.run's streaming mode for v3/v4, switched on at run time by the launcher (no patch to TTS.py).

Upstream's `TTS.run` refuses streaming for v3/v4 and falls back to fragment mode (streaming_mode off,
return_fragment on), yielding each batch's audio once the batch is vocoded. `streaming_run` runs that
same upstream fragment mode, unchanged, in a worker thread, with the two methods it vocodes through
(`using_vocoder_synthesis`, `using_vocoder_synthesis_batched_infer`) replaced for that call by ones
that stream each fragment (serving.gpt_sovits.stream_vocoder_synthesis) and hand every piece to
the caller as it becomes final. Upstream's own yields (the same audio, whole) are dropped.

Which requests stream this way: streaming asked for (api_v2's streaming_mode 2/3 since 2025-11-28,
streaming_mode=true before) with `parallel_infer` off. With parallel_infer on (api_v2's default),
upstream renders v3/v4 through its batched path (all CFM chunks of a batch in one call, joined with
a SOLA cross-fade), whose audio differs from the chunk-by-chunk rendering; that request goes to
upstream's `run` untouched, so it gets upstream's own audio, a fragment at a time. Chunk-by-chunk
streaming is thus the explicit choice `parallel_infer=false`, never the default.

How a streamed request compares with upstream's fragment mode for the same request:
- the semantic tokens, the batches and the T2S decoding are upstream's own (run unchanged);
- the silence after each fragment is upstream's: `configs.sampling_rate x fragment_interval`
  samples (its audio_postprocess), after every fragment of a batch, not once per batch;
- each fragment is what `using_vocoder_synthesis` computes (>= 100 dB), which is what fragment
  mode computes with parallel_infer off;
- each piece goes through upstream's audio_postprocess on its own, as upstream's own streaming
  branch does (peak division per piece: the vocoders end in clamp/tanh, so it never divides).
"""
from __future__ import annotations

import queue
import threading

import numpy as np
import torch

STREAMED_METHODS = ("using_vocoder_synthesis", "using_vocoder_synthesis_batched_infer")


def wants_vocoder_streaming(tts, inputs: dict) -> bool:
    """TTS.run asked to stream a v3/v4 model with parallel_infer off (TTS.run's default is on)."""
    return (bool(inputs.get("streaming_mode", False)) and not inputs.get("parallel_infer", True)
            and bool(getattr(tts.configs, "use_vocoder", False)))


def streaming_run(tts, inputs: dict, original_run):
    """TTS.run(inputs): upstream's own, except that v3/v4 in streaming mode with parallel_infer off
    stream their audio chunk by chunk."""
    if not wants_vocoder_streaming(tts, inputs):
        return original_run(tts, inputs)
    return _streamed(tts, inputs, original_run)


def _streamed(tts, inputs: dict, original_run):
    """Yields (sampling rate, int16 audio) pieces, and upstream's silence after each fragment."""
    out: queue.Queue = queue.Queue()
    request = dict(inputs, streaming_mode=False, return_fragment=True)
    worker = threading.Thread(target=_fragment_mode, args=(tts, request, original_run, out),
                              name="gpt-sovits-vocoder-stream", daemon=True)
    worker.start()
    finished = False
    try:
        while True:
            kind, item = out.get()
            if kind == "done":
                finished = True
                return
            if kind == "error":
                finished = True
                raise item
            yield item
    finally:
        if not finished:  # the caller stopped listening: upstream stops at its next batch
            tts.stop()


def _fragment_mode(tts, request: dict, original_run, out: queue.Queue) -> None:
    """Upstream's fragment mode with the streaming vocoder methods in place (worker thread)."""
    emitter = _Emitter(tts, request, out)
    tts.using_vocoder_synthesis = emitter.fragment
    tts.using_vocoder_synthesis_batched_infer = emitter.fragments
    try:
        for _ in original_run(tts, request):
            pass  # upstream's yields: the fragments already streamed, whole
        out.put(("done", None))
    except BaseException as error:  # noqa: BLE001 - handed to the caller's thread, raised there
        out.put(("error", error))
    finally:
        for name in STREAMED_METHODS:
            tts.__dict__.pop(name, None)


class _Emitter:
    """The streaming replacements of upstream's two vocoding methods for one run."""

    def __init__(self, tts, request: dict, out: queue.Queue):
        self.tts = tts
        self.out = out
        self.speed = request.get("speed_factor", 1.0)
        self.interval = request.get("fragment_interval", 0.3)
        self.super_sampling = bool(request.get("super_sampling", False)) and tts.configs.version == "v3"

    def fragment(self, semantic_tokens, phones, speed: float = 1.0, sample_steps: int = 32):
        """using_vocoder_synthesis's audio, each piece sent on as it becomes final, then the silence."""
        from serving.gpt_sovits.synthesis import stream_vocoder_synthesis

        pieces = []
        rate = self.tts.vocoder_configs["sr"]
        for piece in stream_vocoder_synthesis(self.tts, semantic_tokens, phones, speed=speed,
                                              sample_steps=sample_steps):
            pieces.append(piece)
            rate = self._send(piece)
        self._silence(rate)
        return torch.cat(pieces) if pieces else torch.zeros(0)

    def fragments(self, idx_list, semantic_tokens_list, batch_phones, speed: float = 1.0, sample_steps: int = 32):
        """using_vocoder_synthesis_batched_infer's signature: one streamed fragment after another."""
        device = self.tts.configs.device
        return [self.fragment(semantic_tokens_list[i][-idx:].unsqueeze(0).unsqueeze(0),
                              batch_phones[i].unsqueeze(0).to(device), speed, sample_steps)
                for i, idx in enumerate(idx_list)]

    def _send(self, piece: torch.Tensor) -> int:
        """One piece through upstream's audio_postprocess (int16, v3 super-sampling when asked)."""
        rate, audio = self.tts.audio_postprocess([[piece.clone()]], self.tts.vocoder_configs["sr"], None,
                                                 self.speed, False, 0.0, self.super_sampling)
        self.out.put(("audio", (rate, audio)))
        return rate

    def _silence(self, rate: int) -> None:
        """Upstream fragment mode's silence after a fragment, at the rate its pieces went out at."""
        samples = int(self.tts.configs.sampling_rate * self.interval)
        samples = samples * rate // self.tts.vocoder_configs["sr"]
        if samples > 0:
            self.out.put(("audio", (rate, np.zeros(samples, dtype=np.int16))))
