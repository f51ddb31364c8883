"""WAV output: 16-bit PCM the way GPT-SoVITS writes it, or 32-bit float; written atomically."""
from __future__ import annotations

import struct
import wave
from pathlib import Path
from typing import Iterable

import numpy as np

from runtime.files import atomic_output

WAVE_FORMAT_IEEE_FLOAT = 3


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """GPT-SoVITS' conversion: divide by the peak only when it exceeds 1, then scale by 32768
    (clipped to the int16 range, where upstream would wrap a sample of exactly +1.0)."""
    audio = np.asarray(audio, dtype=np.float32)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 1.0:
        audio = audio / peak
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype("<i2")


def write_wav(path: str | Path, audio: np.ndarray, sampling_rate: int, float32: bool = False,
              inputs: Iterable[str | Path] = ()) -> Path:
    """Mono `audio` (samples,) to `path`: 16-bit PCM (int16 samples as they are, float ones through
    to_pcm16), or with `float32` IEEE float samples as they are; `inputs` are never overwritten."""
    audio = np.asarray(audio).reshape(-1)
    if float32:
        data, write = audio.astype("<f4").tobytes(), _write_float_wav
    else:
        data, write = (audio.astype("<i2") if audio.dtype == np.int16 else to_pcm16(audio)).tobytes(), _write_pcm16_wav
    with atomic_output(path, inputs) as tmp:
        write(tmp, data, sampling_rate)
    return Path(path)


def _write_pcm16_wav(path: Path, data: bytes, sampling_rate: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sampling_rate)
        out.writeframes(data)


def _write_float_wav(path: Path, data: bytes, sampling_rate: int) -> None:
    """RIFF/WAVE with an 18-byte fmt chunk (format 3) and the fact chunk non-PCM formats need."""
    fmt = struct.pack("<HHIIHHH", WAVE_FORMAT_IEEE_FLOAT, 1, sampling_rate, sampling_rate * 4, 4, 32, 0)
    fact = struct.pack("<I", len(data) // 4)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", len(fact)) + fact
            + b"data" + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b""))
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
