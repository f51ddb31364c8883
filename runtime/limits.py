"""The largest sizes a file or a caller may claim, in one place. Every reader checks a claimed size
against these before it allocates anything, so a hostile header (a .npy shape, a WAV rate, a
manifest's hop, a stream's step) is one line, never a multi-terabyte allocation or a hang. Each
is far beyond what a vocoder meets: raise one here if a real input ever needs it."""
from __future__ import annotations

from runtime.errors import RuntimeUserError

MAX_ARRAY_BYTES = 2 ** 31          # a mel (file or caller) as float32: 2 GiB is (1, 100, 5.3 million), ~16 h of v3 audio
MAX_FRAMES = 10 ** 7               # mel frames of one request, profile or stream window
MAX_BATCH = 4096                   # batch items of a profile
MAX_N_MELS = 1024                  # mel bands (the vocoders take 80 to 128)
MAX_HOP = 4096                     # audio samples per mel frame (BigVGAN's largest is 512)
MAX_DILATION = 1024                # of a convolution in a vocoder's config.json (BigVGAN's largest is 5)
MIN_SAMPLING_RATE = 1000           # Hz, of a WAV or a manifest
MAX_SAMPLING_RATE = 768_000
MAX_WAV_CHANNELS = 64
MAX_STEP_FRAMES = 100_000          # a stream step (a window of 100 bands is then 40 MB per batch item)
MAX_JSON_BYTES = 16 * 2 ** 20      # a manifest (real ones are about 2 KB)


def within(value: int, lowest: int, highest: int, what: str, fix: str) -> int:
    """`value` when lowest <= value <= highest; one line naming the claim and the limit otherwise."""
    if not lowest <= value <= highest:
        raise RuntimeUserError(f"{what} is {value}, outside {lowest}..{highest} (runtime/limits.py); {fix}")
    return value
