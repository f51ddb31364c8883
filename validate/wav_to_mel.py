"""python -m validate mel IN.wav --vocoder v3|v4 --output MEL.npy

The mel GPT-SoVITS computes for each vocoder (vocoder_models/mels.py: v3 24 kHz, n_fft 1024, hop 256;
v4 32 kHz, n_fft 1280, hop 320), from a recording, so real speech can be copy-synthesised through
PyTorch and through the engine and listened to. Like GPT-SoVITS, stereo is averaged to mono and
other sample rates are resampled (polyphase, scipy) to the rate the vocoder's mel needs.
"""
from __future__ import annotations

import logging
import struct
import warnings
from math import gcd
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.files import atomic_output, input_file
from pipeline.settings import VOCODERS
from runtime.errors import one_line
from runtime.limits import MAX_SAMPLING_RATE, MAX_WAV_CHANNELS, MIN_SAMPLING_RATE, within
from vocoder_models.mels import MEL_SPECS, log_mel

log = logging.getLogger("validate")


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sample rate, from integer PCM or float WAV."""
    from scipy.io import wavfile

    path = input_file(path, "recording", "pass an existing .wav file")
    try:
        check_wav_header(path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", wavfile.WavFileWarning)
            rate, data = wavfile.read(path)
    except struct.error:  # a header field the file ends inside (our check or scipy's reader)
        raise UserError(f"{path} ends inside its WAV header (the file is cut short); copy or export the recording "
                        "again") from None
    except (ValueError, OSError) as error:
        raise UserError(f"{path} is not a readable WAV file ({error}); convert it to 16-bit PCM WAV") from None
    for warning in caught:  # scipy's warnings (samples cut short, unknown chunks) as log lines, not tracebacks
        log.warning("%s: %s", path, one_line(warning.message))
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        data = (data.astype(np.float64) - (info.max + 1 + info.min) / 2) / ((info.max - info.min + 1) / 2)
    audio = np.asarray(data, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.size == 0:
        raise UserError(f"{path} holds no samples")
    bad = int(audio.size - np.count_nonzero(np.isfinite(audio)))
    if bad:
        raise UserError(f"{path} has {bad} NaN or Inf samples; fix the program that wrote it or re-export the recording")
    return audio, int(rate)


def check_wav_header(path: Path) -> None:
    """The channel count and sample rate the fmt chunk claims, against runtime/limits.py, before
    scipy reads the samples (zero channels divide by zero there; an absurd rate asks the resampler
    for billions of samples)."""
    with open(path, "rb") as stream:
        riff = stream.read(12)
        if riff[:4] != b"RIFF" or riff[8:] != b"WAVE":
            return  # not little-endian RIFF/WAVE: scipy's reader names the problem
        while True:
            head = stream.read(8)
            if len(head) < 8:
                return
            kind, size = head[:4], struct.unpack("<I", head[4:])[0]
            if kind == b"fmt ":
                channels, rate = struct.unpack("<HI", stream.read(8)[2:8])
                break
            stream.seek(size + size % 2, 1)
    within(channels, 1, MAX_WAV_CHANNELS, f"the channel count of {path}", "convert it to mono or stereo PCM WAV")
    within(rate, MIN_SAMPLING_RATE, MAX_SAMPLING_RATE, f"the sample rate of {path} in Hz",
           "convert it to a common rate (e.g. 24000, 32000 or 48000 Hz)")


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return audio
    from scipy.signal import resample_poly
    common = gcd(rate, target)
    log.info("resampling %d Hz to %d Hz", rate, target)
    return resample_poly(audio, target // common, rate // common).astype(np.float32)


def mel_from_wav(path: str | Path, vocoder: str) -> np.ndarray:
    """(1, 100, frames) natural-log mel of the recording, ready to feed the vocoder."""
    spec = MEL_SPECS[vocoder]
    audio, rate = read_wav(path)
    audio = resample(audio, rate, spec.sampling_rate)
    if len(audio) < spec.n_fft:
        raise UserError(f"{path} is shorter than one analysis window ({spec.n_fft} samples at "
                        f"{spec.sampling_rate} Hz); use a longer recording")
    return log_mel(audio, spec)[None]


def add_arguments(parser, settings: dict) -> None:
    parser.add_argument("wav", help="input recording (.wav, PCM or float, any sample rate)")
    parser.add_argument("--vocoder", required=True, choices=VOCODERS)
    parser.add_argument("--output", required=True, help="mel to write (.npy, float32 (1, 100, frames))")


def main(args, settings: dict) -> int:
    mel = mel_from_wav(args.wav, args.vocoder)
    with atomic_output(args.output, inputs=(args.wav,)) as tmp:
        with open(tmp, "wb") as stream:
            np.save(stream, mel)
    log.info("%s: %d frames (range %.1f to %.1f) -> %s", args.vocoder, mel.shape[-1], mel.min(), mel.max(), args.output)
    return 0
